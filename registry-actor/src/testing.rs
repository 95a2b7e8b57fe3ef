//! Test fixtures: a real etcd on free loopback ports (feature `testing`).
//!
//! [`EtcdServer::start`] runs the `etcd` binary (Debian `etcd-server`) with a fresh
//! temporary data directory on two free loopback ports, waits until it answers and
//! checks it is the member it started (not some other etcd that took the port).
//! [`EtcdServer::stop`] and [`EtcdServer::restart`] make outages on the same ports
//! and data; dropping it kills the process and deletes the data.
//!
//! # Examples
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use registry_actor::testing::EtcdServer;
//!
//! let mut etcd = EtcdServer::start().await?;
//! let config = etcd.registry_config();
//! etcd.stop();
//! etcd.restart().await?;
//! # Ok(()) }
//! ```

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use etcd_client::Client;

use crate::RegistryConfig;

/// How long a start may take before it is given up.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A private etcd process for tests. See the [module docs](self).
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Starts etcd on free loopback ports with a fresh data directory and waits
    /// until it serves requests.
    ///
    /// # Errors
    ///
    /// When `etcd` is not installed (run `scripts/bootstrap`) or does not become
    /// ready within 20 s on any of three port pairs.
    pub async fn start() -> io::Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let mut last_err = None;
        for _ in 0..3 {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let name = format!("gc-test-{}-{seq}", std::process::id());
            let dir = std::env::temp_dir().join(format!(
                "{name}-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default()
            ));
            std::fs::create_dir_all(&dir)?;
            let mut server = Self {
                child: None,
                dir,
                name,
                client_port: free_port()?,
                peer_port: free_port()?,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// A registry configuration pointing at this etcd, with a 2 s lease TTL and a
    /// short backoff (100 ms to 1 s) so that tests recover quickly.
    pub fn registry_config(&self) -> RegistryConfig {
        RegistryConfig::default()
            .with_endpoints([self.endpoint()])
            .with_lease_ttl(Duration::from_secs(2))
            .with_backoff(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// A plain etcd client for this server, for tests that act as "another tool".
    ///
    /// # Errors
    ///
    /// When the client cannot be built.
    pub async fn client(&self) -> Result<Client, etcd_client::Error> {
        Client::connect([format!("http://{}", self.endpoint())], None).await
    }

    /// The data directory (kept across [`stop`](Self::stop) and
    /// [`restart`](Self::restart)).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the process (SIGKILL, like a crash) and waits for it; the data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory and waits until it
    /// serves requests.
    ///
    /// # Errors
    ///
    /// When it does not become ready within 20 s.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> io::Result<()> {
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))?;
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .arg("--initial-cluster")
            .arg(format!("{}={peer_url}", self.name))
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn", "--logger", "zap"])
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
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        let mut client = None;
        loop {
            if !self.is_running() {
                self.child = None;
                return Err(io::Error::other(format!(
                    "etcd exited during start-up; see {}",
                    self.dir.join("etcd.log").display()
                )));
            }
            if client.is_none() {
                client = self.client().await.ok();
            }
            if let Some(c) = client.as_mut() {
                let answer =
                    tokio::time::timeout(Duration::from_millis(500), c.member_list()).await;
                if let Ok(Ok(members)) = answer {
                    if members.members().iter().any(|m| m.name() == self.name) {
                        return Ok(());
                    }
                    self.stop();
                    return Err(io::Error::other("another etcd answers on our port"));
                }
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(io::Error::other(format!(
                    "etcd not ready after {START_DEADLINE:?}; see {}",
                    self.dir.join("etcd.log").display()
                )));
            }
            // Poll interval of a readiness check with a deadline, not a wait for luck.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Registry settings naming a loopback port nothing listens on, with short
/// timeouts and backoff: for tests of what happens while etcd is unreachable.
///
/// # Panics
///
/// When no loopback port can be bound.
pub fn unreachable_registry() -> RegistryConfig {
    let port = free_port().expect("a free loopback port");
    RegistryConfig::default()
        .with_endpoints([format!("127.0.0.1:{port}")])
        .with_connect_timeout(Duration::from_millis(200))
        .with_request_timeout(Duration::from_millis(200))
        .with_backoff(Duration::from_millis(10), Duration::from_millis(20))
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns
/// whether it held. The way tests wait for something to happen.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The log lines of a test, captured without colour.
#[derive(Debug, Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// Captures every event of this thread (the tasks of a current-thread
    /// runtime included) until the guard is dropped.
    pub fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}
