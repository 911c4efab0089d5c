//! Email channel test peers: a real SMTP/LMTP client (Python's smtplib),
//! a real IMAP server (Dovecot, started on a free port with a generated
//! configuration and a passwd-file user) and the corpus of messages.

use std::path::{Path, PathBuf};

/// `tests/fixtures/email`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(format!(
        "{}/../../tests/fixtures/email",
        env!("CARGO_MANIFEST_DIR")
    ))
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// What the SMTP client saw for one message.
#[derive(Debug, Clone)]
pub struct Sent {
    pub code: u16,
    pub refused: std::collections::HashMap<String, u16>,
    pub message: String,
    pub tls: String,
}

/// Deliver `files` to `addr` with smtplib (LMTP when `lmtp`; STARTTLS
/// trusting `ca` when given), one connection per file.
pub async fn send(
    addr: std::net::SocketAddr,
    lmtp: bool,
    ca: Option<&Path>,
    from: &str,
    to: &[&str],
    files: &[PathBuf],
) -> Vec<Sent> {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(fixtures_dir().join("send.py"))
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string());
    if lmtp {
        cmd.arg("--lmtp");
    }
    if let Some(ca) = ca {
        cmd.arg("--starttls").arg(ca);
    }
    cmd.arg("--from").arg(from);
    for t in to {
        cmd.arg("--to").arg(t);
    }
    cmd.args(files);
    let out = cmd.output().await.expect("run send.py (python3)");
    assert!(
        out.status.success(),
        "send.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("send.py output");
            Sent {
                code: v["code"].as_u64().unwrap_or(0) as u16,
                refused: v["refused"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0) as u16))
                            .collect()
                    })
                    .unwrap_or_default(),
                message: v["message"].as_str().unwrap_or_default().to_owned(),
                tls: v["tls"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// A Dovecot IMAP server for one test, with user `guichet`.
pub struct Dovecot {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: tokio::process::Child,
}

pub const IMAP_USER: &str = "guichet";
pub const IMAP_PASSWORD: &str = "secret-imap";

impl Dovecot {
    /// Start Dovecot on a free loopback port (`None` with a notice when
    /// it is not installed: scripts/ensure-services.sh test installs it).
    pub async fn start() -> Option<Dovecot> {
        Self::start_with("").await
    }

    /// Like [`Dovecot::start`], with extra configuration lines (e.g.
    /// `imap_capability = IMAP4rev1 UIDPLUS` for a server without IDLE
    /// nor MOVE).
    pub async fn start_with(extra_conf: &str) -> Option<Dovecot> {
        let bin = ["/usr/sbin/dovecot", "/usr/bin/dovecot"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().expect("dovecot dir");
        let d = dir.path();
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(d.join(sub)).expect("dovecot dirs");
        }
        std::fs::write(
            d.join("passwd"),
            format!("{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}\n"),
        )
        .expect("passwd");
        let port = super::free_port();
        // As root: mail owned by the `dovecot` system user; otherwise
        // everything runs as the current user (unprivileged mode).
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let me = std::process::Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let (internal, login, mail_user) = if root {
            (
                "dovecot".to_owned(),
                "dovenull".to_owned(),
                "dovecot".to_owned(),
            )
        } else {
            (me.clone(), me.clone(), me.clone())
        };
        if root {
            let _ = std::process::Command::new("chown")
                .arg("-R")
                .arg("dovecot:dovecot")
                .arg(d.join("mail"))
                .status();
        }
        let p = d.display();
        let conf = format!(
            "base_dir = {p}/run\nstate_dir = {p}/state\nlog_path = {p}/dovecot.log\n\
             protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n\
             auth_mechanisms = plain login\nmail_location = maildir:{p}/mail/%u/Maildir\n\
             first_valid_uid = 1\ndefault_internal_user = {internal}\ndefault_login_user = {login}\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {p}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid={mail_user} gid={mail_user} home={p}/mail/%u\n}}\n\
             service imap-login {{\n  chroot =\n  inet_listener imap {{\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             service anvil {{\n  chroot =\n}}\n{extra_conf}\n"
        );
        std::fs::write(d.join("dovecot.conf"), conf).expect("dovecot.conf");
        let child = tokio::process::Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .kill_on_drop(true)
            .spawn()
            .expect("start dovecot");
        let addr = format!("127.0.0.1:{port}");
        super::eventually(
            "dovecot listening",
            std::time::Duration::from_secs(20),
            || {
                let addr = addr.clone();
                async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) }
            },
        )
        .await;
        Some(Dovecot { port, dir, child })
    }

    async fn client(&self, args: &[&str]) -> serde_json::Value {
        let out = tokio::process::Command::new("python3")
            .arg(fixtures_dir().join("imap.py"))
            .arg("127.0.0.1")
            .arg(self.port.to_string())
            .arg(IMAP_USER)
            .arg(IMAP_PASSWORD)
            .args(args)
            .output()
            .await
            .expect("run imap.py");
        assert!(
            out.status.success(),
            "imap.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("imap.py output")
    }

    /// Put `files` into `folder` (IMAP APPEND).
    pub async fn append(&self, folder: &str, files: &[PathBuf]) {
        let mut args = vec!["append".to_owned(), folder.to_owned()];
        args.extend(files.iter().map(|f| f.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.client(&args).await;
    }

    /// The Message-IDs in `folder` and how many are flagged \Deleted.
    pub async fn list(&self, folder: &str) -> (Vec<String>, u64) {
        let v = self.client(&["list", folder]).await;
        let ids = v["message_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        (ids, v["deleted"].as_u64().unwrap_or(0))
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
