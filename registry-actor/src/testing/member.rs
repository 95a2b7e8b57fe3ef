//! One etcd process: its ports, data directory, start, readiness, signals.

use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;

use super::security::Access;

/// How long a start may take before it is given up.
pub(super) const START_DEADLINE: Duration = Duration::from_secs(20);

/// One etcd member process of a test cluster (or a cluster of one).
#[derive(Debug)]
pub(super) struct Member {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) client_port: u16,
    pub(super) peer_port: u16,
    /// How clients reach it: TLS, and the user once authentication is on.
    pub(super) access: Access,
    child: Option<Child>,
}

impl Member {
    /// A member named `name` whose files live in `dir`, on two free loopback ports.
    pub(super) fn new(name: String, dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            name,
            dir,
            client_port: free_port()?,
            peer_port: free_port()?,
            access: Access::default(),
            child: None,
        })
    }

    pub(super) fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client URL: `https://` when the member serves TLS.
    pub(super) fn client_url(&self) -> String {
        format!("{}://{}", self.access.scheme(), self.endpoint())
    }

    pub(super) fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// `name=peer_url`, one entry of `--initial-cluster`.
    pub(super) fn initial_cluster_entry(&self) -> String {
        format!("{}={}", self.name, self.peer_url())
    }

    pub(super) fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The process id while it runs.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(super) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A client of this member alone (over TLS and as the root user when the
    /// member is secured so).
    pub(super) async fn client(&self) -> Result<Client, etcd_client::Error> {
        self.client_as(true).await
    }

    /// A client of this member alone, as the root user when `as_user` and
    /// authentication is on, else anonymous.
    pub(super) async fn client_as(&self, as_user: bool) -> Result<Client, etcd_client::Error> {
        let options = self
            .access
            .connect_options(as_user)
            .map_err(etcd_client::Error::IoError)?;
        Client::connect([self.client_url()], options).await
    }

    /// Runs etcd as a member of `initial_cluster` (ignored by etcd when the data
    /// directory already holds a member).
    pub(super) fn spawn(&mut self, initial_cluster: &str, token: &str) -> io::Result<()> {
        let client_url = self.client_url();
        let tls_args = self
            .access
            .tls
            .as_ref()
            .map(super::security::TlsFiles::etcd_args)
            .unwrap_or_default();
        let peer_url = self.peer_url();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-token", token])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn", "--logger", "zap"])
            .args(tls_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run `etcd` ({e}); install it with scripts/bootstrap"),
                )
            })?;
        super::leftovers::record_pid(&self.dir, child.id());
        self.child = Some(child);
        Ok(())
    }

    /// Waits until this member answers with a leader and lists itself among
    /// `expected` members (so it is ours, not another etcd on the port).
    pub(super) async fn wait_ready(&mut self, expected: &[String]) -> io::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        let mut client = None;
        loop {
            if !self.is_running() {
                self.child = None;
                return Err(io::Error::other(format!(
                    "etcd {} exited during start-up; see {}",
                    self.name,
                    self.log_path().display()
                )));
            }
            if client.is_none() {
                client = self.client().await.ok();
            }
            if let Some(c) = client.as_mut() {
                let wait = Duration::from_millis(500);
                if let Ok(Ok(members)) = tokio::time::timeout(wait, c.member_list()).await {
                    let names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
                    let foreign = names
                        .iter()
                        .filter(|n| !n.is_empty())
                        .all(|n| !expected.iter().any(|e| e == n));
                    if foreign && names.iter().any(|n| !n.is_empty()) {
                        self.kill();
                        return Err(io::Error::other("another etcd answers on our port"));
                    }
                    let led = tokio::time::timeout(wait, c.status())
                        .await
                        .is_ok_and(|s| s.is_ok_and(|s| s.leader() != 0));
                    if led && names.contains(&self.name.as_str()) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(io::Error::other(format!(
                    "etcd {} not ready after {START_DEADLINE:?}; see {}",
                    self.name,
                    self.log_path().display()
                )));
            }
            // Poll interval of a readiness check with a deadline, not a wait for luck.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL (like a crash), then reaps it; the data stays.
    pub(super) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the running process.
    pub(super) fn signal(&self, signal: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other(format!("etcd {} is not running", self.name)))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -{signal} {pid} failed")))
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(super) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A fresh, unique directory name under the system's temp dir.
pub(super) fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::env::temp_dir().join(format!("{name}-{nanos}"))
}
