//! Echo servers of the fault suite: `echo-server` child processes killed with
//! real signals, and in-process servers on a runtime of their own.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use grpc_cluster::echo::{EchoService, EchoStats};
use registry_actor::{Node, Registrar, RegistryConfig};
use tonic::Code;

use super::etcd::EtcdFixture;
use super::load::Record;
use super::PROCESS_DEADLINE;
use crate::support::server_kit::example_path;
use crate::support::{wait_until, PlainEcho};
// ---------------------------------------------------------------------------

/// The lines a child wrote to one of its pipes, read by a thread of their own
/// (a full pipe would block the child).
#[derive(Clone, Default)]
struct Captured {
    lines: Arc<Mutex<VecDeque<String>>>,
    closed: Arc<AtomicBool>,
}

/// Lines kept per pipe; older ones are dropped (logs only serve diagnostics).
const KEPT_LINES: usize = 4000;

impl Captured {
    fn start(stream: impl Read + Send + 'static) -> Self {
        let captured = Self::default();
        let (lines, closed) = (captured.lines.clone(), captured.closed.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut all) = lines.lock() {
                    if all.len() == KEPT_LINES {
                        all.pop_front();
                    }
                    all.push_back(line);
                }
            }
            closed.store(true, Ordering::SeqCst);
        });
        captured
    }

    fn find(&self, pick: impl Fn(&str) -> bool) -> Option<String> {
        let lines = self.lines.lock().ok()?;
        lines.iter().find(|l| pick(l)).cloned()
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn tail(&self, n: usize) -> String {
        let Ok(lines) = self.lines.lock() else {
            return String::new();
        };
        let skip = lines.len().saturating_sub(n);
        lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The configuration of every `echo-server` of the suite beyond the shipped
/// defaults, through the environment layer: the lease TTL and the retry
/// backoff of the test registry (`EtcdServer::registry_config`), so that a
/// killed node leaves the registry within seconds (a cluster fixture sets a
/// TTL of its own, [`EtcdFixture::lease_ttl_env`]). Lame duck (1 s) and drain
/// timeout (10 s) keep their defaults.
pub const CHILD_SETTINGS: &[(&str, &str)] = &[
    ("GRPC_CLUSTER__REGISTRY__LEASE_TTL", "2s"),
    ("GRPC_CLUSTER__REGISTRY__BACKOFF_MIN", "100ms"),
    ("GRPC_CLUSTER__REGISTRY__BACKOFF_MAX", "1s"),
];

/// How an `echo-server` process ended after SIGTERM: its exit status, its
/// shutdown report and the counts its service printed last.
#[derive(Debug, Clone)]
pub struct Exit {
    pub status: ExitStatus,
    /// The `shutdown on ...` line.
    pub report: String,
    /// Calls the service answered over the process's life.
    pub processed: u64,
    /// `Slow` calls it saw cancelled.
    pub cancelled: u64,
}

/// One `echo-server` child process serving `echo` on `127.0.0.1:<free port>`,
/// registered in the given etcd. Dropping it kills it (SIGKILL) and reaps it.
pub struct EchoProcess {
    id: String,
    addr: SocketAddr,
    child: Child,
    exited: Option<ExitStatus>,
    stdout: Captured,
    stderr: Captured,
}

impl std::fmt::Debug for EchoProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoProcess")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl EchoProcess {
    /// Starts `echo-server --id ID --listen 127.0.0.1:0` registering in `etcd`
    /// (configured as [`CHILD_SETTINGS`] say) and waits until it prints where it
    /// listens. It registers right after; wait for the client to list it before
    /// relying on it.
    pub async fn start(etcd: &impl EtcdFixture, id: &str) -> Self {
        Self::start_with_env(etcd, id, &[]).await
    }

    /// [`start`](Self::start) with more environment variables (e.g. the
    /// `GRPC_CLUSTER__SERVER__TLS__*` settings).
    pub async fn start_with_env(
        etcd: &impl EtcdFixture,
        id: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        Self::spawn(etcd, id, "127.0.0.1:0", env).await
    }

    /// [`start`](Self::start) on `listen` (e.g. the address of a process
    /// that just exited, to restart it where clients know it).
    pub async fn start_on(etcd: &impl EtcdFixture, id: &str, listen: &str) -> Self {
        Self::spawn(etcd, id, listen, &[]).await
    }

    /// [`start_on`](Self::start_on) with more environment variables.
    pub async fn start_on_with_env(
        etcd: &impl EtcdFixture,
        id: &str,
        listen: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        Self::spawn(etcd, id, listen, env).await
    }

    async fn spawn(
        etcd: &impl EtcdFixture,
        id: &str,
        listen: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        // An empty configuration directory of the test's own (removed with the
        // etcd data): no developer's config/local.toml or environment leaks in.
        let config_dir = etcd.scratch_dir().join("echo-server-config");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        let mut command = Command::new(example_path("echo-server"));
        for name in crate::support::cluster_env_vars() {
            command.env_remove(name);
        }
        let mut child = command
            .args(["--id", id, "--listen", listen])
            .env("GRPC_CLUSTER_CONFIG_DIR", &config_dir)
            .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", etcd.endpoints_env())
            .envs(CHILD_SETTINGS.iter().copied())
            .env("GRPC_CLUSTER__REGISTRY__LEASE_TTL", etcd.lease_ttl_env())
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("echo-server starts");
        let stdout = Captured::start(child.stdout.take().expect("piped stdout"));
        let stderr = Captured::start(child.stderr.take().expect("piped stderr"));
        // The guard exists before anything can fail, so a failure kills the child.
        let mut process = Self {
            id: id.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            exited: None,
            stdout,
            stderr,
        };
        let out = process.stdout.clone();
        let printed = wait_until(PROCESS_DEADLINE, || {
            std::future::ready(
                out.find(|l| l.starts_with("listening on ")).is_some() || out.is_closed(),
            )
        })
        .await;
        let line = out.find(|l| l.starts_with("listening on "));
        let addr = line
            .as_deref()
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) if printed => process.addr = addr,
            _ => panic!(
                "echo-server {id} did not say where it listens: {line:?}\n{}",
                process.logs()
            ),
        }
        process
    }

    /// Its node id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The address it serves on (and registers).
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The last lines of its stdout and stderr, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.id,
            self.stdout.tail(20),
            self.id,
            self.stderr.tail(40)
        )
    }

    /// Whether it has exited (and is reaped).
    pub fn has_exited(&mut self) -> bool {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
            }
        }
        self.exited.is_some()
    }

    /// `kill -9`: SIGKILL, then reaps it (its sockets are closed by then).
    pub fn kill9(&mut self) -> Killed {
        let signalled = Instant::now();
        if !self.has_exited() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exited = Some(status);
            }
        }
        Killed {
            addr: self.addr(),
            signalled,
            reaped: Instant::now(),
        }
    }

    /// `kill -TERM`: the ordered graceful shutdown. Answers when it was sent.
    pub fn sigterm(&self) -> Instant {
        let at = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {} failed", self.child.id());
        at
    }

    /// Waits until it exits and its stdout is read to the end; parses what it
    /// printed last.
    ///
    /// # Panics
    ///
    /// When it does not exit within [`PROCESS_DEADLINE`], or did not print its
    /// report and totals.
    pub async fn wait_exit(&mut self) -> Exit {
        let out = self.stdout.clone();
        let exited = wait_until(PROCESS_DEADLINE, || {
            std::future::ready(self.has_exited() && out.is_closed())
        })
        .await;
        assert!(
            exited,
            "echo-server {} did not exit within {PROCESS_DEADLINE:?}\n{}",
            self.id,
            self.logs()
        );
        let status = self.exited.expect("exited");
        let report = self.stdout.find(|l| l.starts_with("shutdown on "));
        let totals = self.stdout.find(|l| l.starts_with("echo totals: "));
        let (Some(report), Some(totals)) = (report, totals) else {
            panic!(
                "echo-server {} exited ({status}) without its report and totals\n{}",
                self.id,
                self.logs()
            );
        };
        Exit {
            status,
            report,
            processed: number_after(&totals, "processed").expect("processed N"),
            cancelled: number_after(&totals, "cancelled").expect("cancelled N"),
        }
    }

    /// SIGTERM, then [`wait_exit`](Self::wait_exit); checks it exited 0.
    pub async fn stop_gracefully(&mut self) -> Exit {
        self.sigterm();
        let exit = self.wait_exit().await;
        assert!(
            exit.status.success(),
            "echo-server {} exits 0 after a graceful shutdown: {}\n{}",
            self.id,
            exit.status,
            self.logs()
        );
        exit
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process killed with SIGKILL: between `signalled` and `reaped` it died.
#[derive(Debug, Clone)]
pub struct Killed {
    pub addr: String,
    pub signalled: Instant,
    pub reaped: Instant,
}

impl Killed {
    /// When the client first saw a call fail on this node with `UNAVAILABLE`
    /// after the kill (a broken or refused connection): from then on it may
    /// know that the node is dead. `None` if it never saw one.
    pub fn known_dead_at(&self, records: &[Record]) -> Option<Instant> {
        records
            .iter()
            .filter(|r| r.done >= self.signalled)
            .filter(|r| {
                r.attempts()
                    .iter()
                    .any(|a| a.node.addr() == self.addr && a.code == Code::Unavailable)
            })
            .map(|r| r.done)
            .min()
    }

    /// Whether the call `r` was in flight on this node while it died, as the
    /// client sees it: it tried the node, had not ended when the kill was sent,
    /// and was sent before the client could know the node was dead (`known`,
    /// from [`known_dead_at`](Self::known_dead_at)).
    pub fn caught(&self, r: &Record, known: Option<Instant>) -> bool {
        r.tried(&self.addr) && r.done >= self.signalled && known.is_none_or(|k| r.sent <= k)
    }
}

/// Starts one `echo-server` per id, one after the other.
pub async fn start_processes(etcd: &impl EtcdFixture, ids: &[&str]) -> Vec<EchoProcess> {
    let mut all = Vec::with_capacity(ids.len());
    for id in ids {
        all.push(EchoProcess::start(etcd, id).await);
    }
    all
}

/// The number after `label ` in `text` (`processed 12, ...` → 12).
pub fn number_after(text: &str, label: &str) -> Option<u64> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------

/// Echo servers on a runtime of their own (two worker threads), registered in
/// etcd: they do not compete with the client's arbiter for its thread.
pub struct InProcessEchoes {
    runtime: Option<tokio::runtime::Runtime>,
    servers: Vec<(PlainEcho, Registrar)>,
}

impl InProcessEchoes {
    /// Serves each service and registers it as node `service.node_id()` of
    /// `echo`; waits until every registration is confirmed.
    pub async fn start(registry: &RegistryConfig, services: Vec<EchoService>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        let mut servers = Vec::new();
        for service in services {
            let id = service.node_id().to_owned();
            let server = runtime
                .spawn(PlainEcho::serve(service))
                .await
                .expect("server task");
            let node = Node::new(&id, "echo", server.addr.to_string()).expect("node");
            let etcd = registry_actor::connect(registry)
                .await
                .expect("etcd client");
            let registrar = Registrar::start(etcd, node, registry);
            let mut states = registrar.state_changes();
            let registered =
                tokio::time::timeout(PROCESS_DEADLINE, states.wait_for(|s| s.is_registered()))
                    .await;
            assert!(matches!(registered, Ok(Ok(_))), "{id} registered");
            servers.push((server, registrar));
        }
        Self {
            runtime: Some(runtime),
            servers,
        }
    }

    /// The servers' counters.
    pub fn stats(&self) -> Vec<Arc<EchoStats>> {
        self.servers.iter().map(|(s, _)| s.stats.clone()).collect()
    }
}

impl Drop for InProcessEchoes {
    fn drop(&mut self) {
        self.servers.clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
