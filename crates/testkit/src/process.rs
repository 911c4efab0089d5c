//! `guichet serve` as a child process of the test.

use crate::*;

/// The `guichet` binary built next to the test executable.
pub fn guichet_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug/guichet
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("guichet"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} not built: run the tests with `cargo nextest run --workspace`",
        bin.display()
    );
    bin
}

/// A free TCP port on loopback, never the same twice in one test process:
/// the kernel may hand back a port just released, so two calls before
/// either port is bound (Dovecot's IMAP and IMAPS listeners) could
/// otherwise collide ("duplicate listener").
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A `guichet serve …` child process.
pub struct Process {
    pub child: tokio::process::Child,
    pub grpc_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
}

impl Process {
    /// SIGKILL: a crash, nothing drained.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("process stops within 30 s")
            .expect("wait for process")
    }
}

impl TestEnv {
    /// Start `guichet serve <roles>` as a separate process and wait until
    /// it is ready.
    pub async fn spawn_process(&self, roles: &[&str], extra: &[(&str, &str)]) -> Process {
        self.spawn_process_inner(roles, extra, None).await
    }

    /// Like [`TestEnv::spawn_process`], with the process's stderr (its logs)
    /// written to `log`.
    pub async fn spawn_process_logging(
        &self,
        roles: &[&str],
        extra: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Process {
        self.spawn_process_inner(roles, extra, Some(log)).await
    }

    async fn spawn_process_inner(
        &self,
        roles: &[&str],
        extra: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Process {
        let grpc_addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin_addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut cmd = tokio::process::Command::new(guichet_bin());
        cmd.arg("serve").args(roles).kill_on_drop(true);
        // The tests read SMS and emails from the development sinks.
        cmd.env("GUICHET__DEVELOPMENT", "true");
        for (k, v) in &self.overrides {
            cmd.env(k, v);
        }
        cmd.env("GUICHET__SERVER__GRPC_ADDR", grpc_addr.to_string())
            .env("GUICHET__SERVER__ADMIN_ADDR", admin_addr.to_string());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        if let Some(path) = log {
            let file = std::fs::File::create(path).expect("log file");
            cmd.stdout(std::process::Stdio::null()).stderr(file);
        } else if std::env::var_os("TEST_LOG").is_none() {
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        let child = cmd.spawn().expect("spawn guichet");
        let p = Process {
            child,
            grpc_addr,
            admin_addr,
        };
        eventually(
            &format!("`guichet serve {}` ready", roles.join(" ")),
            Duration::from_secs(60),
            || async {
                match http_get(admin_addr, "/readyz").await {
                    Ok((200, _)) => Some(()),
                    _ => None,
                }
            },
        )
        .await;
        p
    }
}
