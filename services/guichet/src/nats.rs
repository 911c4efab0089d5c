//! An embedded NATS server for `guichet up` on a laptop or a small town's
//! single machine: when nothing answers at a loopback `bus.url` and a
//! `nats-server` executable is on the PATH, start one with JetStream under
//! `data_dir/nats`, and stop it when guichet exits.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A NATS server this process started; killed when dropped.
pub struct EmbeddedNats {
    child: Child,
}

impl EmbeddedNats {
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn loopback_addr(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("nats://")?;
    let hostport = rest.rsplit('@').next()?.split(',').next()?;
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "4222"));
    let port: u16 = port.parse().ok()?;
    let ip = match host {
        "localhost" | "127.0.0.1" => std::net::Ipv4Addr::LOCALHOST,
        _ => return None,
    };
    Some(SocketAddr::from((ip, port)))
}

async fn answers(addr: SocketAddr) -> bool {
    tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// Start NATS if needed and possible; `None` when one already answers or
/// the URL is not local (then connecting reports the real problem).
pub async fn ensure(url: &str, data_dir: &Path) -> anyhow::Result<Option<EmbeddedNats>> {
    let Some(addr) = loopback_addr(url) else {
        return Ok(None);
    };
    if answers(addr).await {
        return Ok(None);
    }
    let store = data_dir.join("nats");
    std::fs::create_dir_all(&store)?;
    let child = Command::new("nats-server")
        .args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "-sd",
        ])
        .arg(&store)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            anyhow::bail!(
                "no NATS server answers at {url} and `nats-server` could not be started ({e}); install it (Debian: apt-get install nats-server) or set GUICHET__BUS__URL"
            )
        }
    };
    for _ in 0..100 {
        if answers(addr).await {
            tracing::info!(%addr, store = %store.display(), "started an embedded nats-server with jetstream");
            return Ok(Some(EmbeddedNats { child }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("started nats-server but it does not answer at {addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_embeddable() {
        assert_eq!(
            loopback_addr("nats://127.0.0.1:4222"),
            Some("127.0.0.1:4222".parse().unwrap())
        );
        assert_eq!(
            loopback_addr("nats://localhost"),
            Some("127.0.0.1:4222".parse().unwrap())
        );
        assert_eq!(loopback_addr("nats://nats.example:4222"), None);
    }
}
