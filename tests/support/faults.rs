//! Helpers of the fault-injection suite (`tests/faults.rs`):
//!
//! * [`EchoProcess`] — an `echo-server` child process, killed (SIGKILL) and
//!   reaped when dropped, so a failing test leaves no server behind; SIGKILL and
//!   SIGTERM on demand; its shutdown report and its own processed count on exit.
//! * [`Load`] — a paced, bounded load from a `ClusterClient` (a rate, a count
//!   and a time limit) in which every call ends as a [`Record`]: a success with
//!   its node and attempts, an error with its code and attempts, or a hang (no
//!   answer within the call's deadline plus [`HANG_MARGIN`]).
//! * [`InProcessEchoes`] — echo servers on their own runtime, registered in etcd.
//! * [`fuzz_node_value`] — inputs for the node decoder.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use cluster_client::{Attempt, Call, ClientConfig, ClusterClient, PickerStatus, ServiceStatus};
use grpc_cluster::echo::{EchoService, EchoStats};
use registry_actor::etcd_client::Client;
use registry_actor::{Node, Registrar, RegistryActor, RegistryConfig, RegistryStats, Stats};
use tonic::Code;

use super::server_kit::example_path;
use super::{wait_until, EtcdServer, PlainEcho};

/// How long a child process may take to start serving, or to exit after
/// SIGTERM (deregister + lame duck + drain, with etcd possibly slow).
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(30);

/// How long past its own deadline a call may stay unanswered before the load
/// records it as hung.
pub const HANG_MARGIN: Duration = Duration::from_secs(5);

/// The fault tests run one at a time: each starts processes and a load whose
/// accounting must not depend on what a neighbour test does to the 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the other fault tests to finish; hold the guard for the whole test
/// (a panicking test releases it while unwinding).
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

// ---------------------------------------------------------------------------
// Child processes
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
/// killed node leaves the registry within seconds. Lame duck (1 s) and drain
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
    pub async fn start(etcd: &EtcdServer, id: &str) -> Self {
        Self::start_with_env(etcd, id, &[]).await
    }

    /// [`start`](Self::start) with more environment variables (e.g. the
    /// `GRPC_CLUSTER__SERVER__TLS__*` settings).
    pub async fn start_with_env(
        etcd: &EtcdServer,
        id: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        // An empty configuration directory of the test's own (removed with the
        // etcd data): no developer's config/local.toml or environment leaks in.
        let config_dir = etcd.data_dir().join("echo-server-config");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        let mut command = Command::new(example_path("echo-server"));
        for name in super::cluster_env_vars() {
            command.env_remove(name);
        }
        let mut child = command
            .args(["--id", id, "--listen", "127.0.0.1:0"])
            .env("GRPC_CLUSTER_CONFIG_DIR", &config_dir)
            .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", etcd.endpoint())
            .envs(CHILD_SETTINGS.iter().copied())
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
pub async fn start_processes(etcd: &EtcdServer, ids: &[&str]) -> Vec<EchoProcess> {
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
// The client side
// ---------------------------------------------------------------------------

/// A registry actor and a cluster client over it, on the current arbiter.
pub async fn start_client(
    registry: &RegistryConfig,
    config: ClientConfig,
) -> (Addr<RegistryActor>, Addr<ClusterClient>) {
    let etcd = registry_actor::connect(registry)
        .await
        .expect("etcd client");
    let registry_actor = RegistryActor::new(etcd, registry).start();
    let client = ClusterClient::new(registry_actor.clone(), config)
        .expect("valid client config")
        .start();
    (registry_actor, client)
}

/// The client's picker status of `echo`.
pub async fn echo_status(client: &Addr<ClusterClient>) -> PickerStatus {
    client
        .send(ServiceStatus("echo".into()))
        .await
        .expect("client alive")
        .expect("echo is a service")
}

/// Waits until the client's status of `echo` satisfies `pick`; answers it then,
/// or `None` after `timeout`.
pub async fn wait_status(
    client: &Addr<ClusterClient>,
    timeout: Duration,
    pick: impl Fn(&PickerStatus) -> bool,
) -> Option<PickerStatus> {
    let found: Rc<RefCell<Option<PickerStatus>>> = Rc::default();
    let ok = wait_until(timeout, || {
        let found = found.clone();
        let client = client.clone();
        let pick = &pick;
        async move {
            let status = echo_status(&client).await;
            let ok = pick(&status);
            *found.borrow_mut() = Some(status);
            ok
        }
    })
    .await;
    let last = found.borrow_mut().take();
    ok.then_some(last).flatten()
}

/// Whether `status` lists exactly these addresses.
pub fn lists_exactly(status: &PickerStatus, addrs: &[String]) -> bool {
    let mut listed: Vec<&str> = status.nodes.iter().map(|n| n.addr.as_str()).collect();
    let mut wanted: Vec<&str> = addrs.iter().map(String::as_str).collect();
    listed.sort_unstable();
    wanted.sort_unstable();
    listed == wanted
}

/// Waits until the client lists exactly the addresses of `processes`.
pub async fn wait_listed(client: &Addr<ClusterClient>, processes: &[&EchoProcess]) {
    let addrs: Vec<String> = processes.iter().map(|p| p.addr()).collect();
    let status = wait_status(client, PROCESS_DEADLINE, |s| lists_exactly(s, &addrs)).await;
    assert!(
        status.is_some(),
        "the client did not come to list exactly {addrs:?}: {:?}",
        echo_status(client).await.nodes
    );
}

/// The registry actor's counters.
pub async fn registry_stats(registry: &Addr<RegistryActor>) -> RegistryStats {
    registry.send(Stats).await.expect("registry alive")
}

// ---------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------

/// How a [`Load`] runs: `rate` calls per second, at most `max_in_flight` at
/// once, until `max_calls` were sent or `max_duration` passed (or it is
/// stopped); each call has the deadline `call_timeout`.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub rate: u32,
    pub max_calls: u64,
    pub max_duration: Duration,
    pub max_in_flight: usize,
    pub call_timeout: Duration,
}

impl LoadPlan {
    /// `rate` calls per second for at most `max_duration`.
    pub fn new(rate: u32, max_duration: Duration) -> Self {
        Self {
            rate,
            max_calls: (f64::from(rate) * max_duration.as_secs_f64()).ceil() as u64,
            max_duration,
            max_in_flight: 256,
            call_timeout: Duration::from_secs(5),
        }
    }

    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }
}

/// How one call of a load ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It succeeded on `node` (`addr`) after `attempts`.
    Ok {
        node: String,
        addr: String,
        attempts: Vec<Attempt>,
    },
    /// It failed with `code` after `attempts`.
    Failed {
        code: Code,
        message: String,
        attempts: Vec<Attempt>,
    },
    /// No answer within its deadline plus [`HANG_MARGIN`].
    Hung,
    /// The client actor was gone.
    ClientGone(String),
}

/// One call of a load: when it was sent, when it ended, how.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub sent: Instant,
    pub done: Instant,
    pub outcome: Outcome,
}

impl Record {
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    /// The attempts it made (none for a hang).
    pub fn attempts(&self) -> &[Attempt] {
        match &self.outcome {
            Outcome::Ok { attempts, .. } | Outcome::Failed { attempts, .. } => attempts,
            Outcome::Hung | Outcome::ClientGone(_) => &[],
        }
    }

    /// The address that answered a success.
    pub fn ok_addr(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Ok { addr, .. } => Some(addr),
            _ => None,
        }
    }

    /// The final code: `Ok`, the error's, or `None` for a hang / gone client.
    pub fn code(&self) -> Option<Code> {
        match &self.outcome {
            Outcome::Ok { .. } => Some(Code::Ok),
            Outcome::Failed { code, .. } => Some(*code),
            Outcome::Hung | Outcome::ClientGone(_) => None,
        }
    }

    /// From sending to its end.
    pub fn latency(&self) -> Duration {
        self.done.saturating_duration_since(self.sent)
    }

    /// Whether one of its attempts went to `addr`.
    pub fn tried(&self, addr: &str) -> bool {
        self.attempts().iter().any(|a| a.node.addr() == addr)
    }
}

#[derive(Default)]
struct LoadState {
    records: Vec<Record>,
    sent: u64,
    in_flight: usize,
    driver_done: bool,
    stop: bool,
}

/// A running load. See the [module docs](self).
pub struct Load {
    state: Rc<RefCell<LoadState>>,
    plan: LoadPlan,
    started: Instant,
}

impl Load {
    /// Starts sending `make(seq)` calls to `client` as `plan` says, on the
    /// current arbiter. Each call's deadline is set to `plan.call_timeout`.
    pub fn start<Req, Resp, F>(client: Addr<ClusterClient>, plan: LoadPlan, make: F) -> Self
    where
        Req: prost::Message + Clone + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
        F: Fn(u64) -> Call<Req, Resp> + 'static,
    {
        let state: Rc<RefCell<LoadState>> = Rc::default();
        let started = Instant::now();
        actix::spawn(drive(client, plan.clone(), state.clone(), started, make));
        Self {
            state,
            plan,
            started,
        }
    }

    /// When it started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Calls sent so far.
    pub fn sent(&self) -> u64 {
        self.state.borrow().sent
    }

    /// Finished calls satisfying `pick`, so far.
    pub fn count(&self, pick: impl Fn(&Record) -> bool) -> usize {
        self.state
            .borrow()
            .records
            .iter()
            .filter(|r| pick(r))
            .count()
    }

    /// The first finished call (by sequence) satisfying `pick`, so far.
    pub fn first(&self, pick: impl Fn(&Record) -> bool) -> Option<Record> {
        let state = self.state.borrow();
        state
            .records
            .iter()
            .filter(|r| pick(r))
            .min_by_key(|r| r.seq)
            .cloned()
    }

    /// Waits until at least `n` finished calls satisfy `pick`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        n: usize,
        pick: impl Fn(&Record) -> bool,
    ) -> bool {
        wait_until(timeout, || std::future::ready(self.count(&pick) >= n)).await
    }

    /// Waits until the plan's count or time limit ends the load by itself, then
    /// [`stop`](Self::stop)s it.
    pub async fn run_out(self) -> LoadReport {
        let state = self.state.clone();
        let ended = wait_until(self.plan.max_duration + HANG_MARGIN, || {
            std::future::ready(state.borrow().driver_done)
        })
        .await;
        assert!(ended, "the load did not end by its own limits");
        self.stop().await
    }

    /// Stops sending, waits for every call in flight to end (each is bounded by
    /// its deadline plus [`HANG_MARGIN`]) and answers every record.
    pub async fn stop(self) -> LoadReport {
        self.state.borrow_mut().stop = true;
        let state = self.state.clone();
        let drained = wait_until(
            self.plan.call_timeout + HANG_MARGIN + Duration::from_secs(5),
            || {
                let s = state.borrow();
                std::future::ready(s.driver_done && s.in_flight == 0)
            },
        )
        .await;
        assert!(drained, "the load's calls in flight did not end");
        let stopped = Instant::now();
        let mut state = self.state.borrow_mut();
        let mut records = std::mem::take(&mut state.records);
        records.sort_by_key(|r| r.seq);
        assert_eq!(
            records.len() as u64,
            state.sent,
            "every call sent has a record"
        );
        LoadReport {
            records,
            started: self.started,
            elapsed: stopped.saturating_duration_since(self.started),
        }
    }
}

async fn drive<Req, Resp, F>(
    client: Addr<ClusterClient>,
    plan: LoadPlan,
    state: Rc<RefCell<LoadState>>,
    started: Instant,
    make: F,
) where
    Req: prost::Message + Clone + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
    F: Fn(u64) -> Call<Req, Resp> + 'static,
{
    loop {
        let elapsed = started.elapsed();
        {
            let s = state.borrow();
            if s.stop || s.sent >= plan.max_calls || elapsed >= plan.max_duration {
                break;
            }
        }
        let due = ((elapsed.as_secs_f64() * f64::from(plan.rate)) as u64 + 1).min(plan.max_calls);
        loop {
            let seq = {
                let mut s = state.borrow_mut();
                if s.sent >= due || s.in_flight >= plan.max_in_flight {
                    break;
                }
                s.sent += 1;
                s.in_flight += 1;
                s.sent - 1
            };
            let mut call = make(seq);
            call.options = std::mem::take(&mut call.options).with_timeout(plan.call_timeout);
            actix::spawn(one_call(
                client.clone(),
                call,
                seq,
                plan.call_timeout,
                state.clone(),
            ));
        }
        // The pacing tick of the load generator: this sleep is the send rate.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    state.borrow_mut().driver_done = true;
}

async fn one_call<Req, Resp>(
    client: Addr<ClusterClient>,
    call: Call<Req, Resp>,
    seq: u64,
    timeout: Duration,
    state: Rc<RefCell<LoadState>>,
) where
    Req: prost::Message + Clone + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    let sent = Instant::now();
    let outcome = match tokio::time::timeout(timeout + HANG_MARGIN, client.send(call)).await {
        Err(_) => Outcome::Hung,
        Ok(Err(mailbox)) => Outcome::ClientGone(mailbox.to_string()),
        Ok(Ok(Ok(reply))) => Outcome::Ok {
            node: reply.node.id().to_owned(),
            addr: reply.node.addr().to_owned(),
            attempts: reply.attempts,
        },
        Ok(Ok(Err(e))) => Outcome::Failed {
            code: e.code(),
            message: e.to_string(),
            attempts: e.attempts().to_vec(),
        },
    };
    let mut s = state.borrow_mut();
    s.records.push(Record {
        seq,
        sent,
        done: Instant::now(),
        outcome,
    });
    s.in_flight -= 1;
}

/// Every call of a stopped load.
#[derive(Debug)]
pub struct LoadReport {
    /// One per call sent, by sequence number.
    pub records: Vec<Record>,
    pub started: Instant,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn calls(&self) -> usize {
        self.records.len()
    }

    pub fn successes(&self) -> usize {
        self.records.iter().filter(|r| r.is_ok()).count()
    }

    /// Every call that did not succeed.
    pub fn failures(&self) -> Vec<&Record> {
        self.records.iter().filter(|r| !r.is_ok()).collect()
    }

    /// Calls by how they ended: `Ok`, a gRPC code, `hung` or `client gone`.
    pub fn by_code(&self) -> BTreeMap<String, usize> {
        let mut all = BTreeMap::new();
        for r in &self.records {
            let key = match &r.outcome {
                Outcome::Ok { .. } => "Ok".to_owned(),
                Outcome::Failed { code, .. } => format!("{code:?}"),
                Outcome::Hung => "hung".to_owned(),
                Outcome::ClientGone(_) => "client gone".to_owned(),
            };
            *all.entry(key).or_default() += 1;
        }
        all
    }

    /// Attempts over all calls.
    pub fn attempts(&self) -> usize {
        self.records.iter().map(|r| r.attempts().len()).sum()
    }

    /// Successes per answering address.
    pub fn successes_by_addr(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for addr in self.records.iter().filter_map(Record::ok_addr) {
            *all.entry(addr.to_owned()).or_default() += 1;
        }
        all
    }

    /// Successes answered by `addr`.
    pub fn successes_at(&self, addr: &str) -> u64 {
        self.successes_by_addr().get(addr).copied().unwrap_or(0)
    }

    /// Attempts per address, whatever their outcome.
    pub fn attempts_by_addr(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for a in self.records.iter().flat_map(|r| r.attempts()) {
            *all.entry(a.node.addr().to_owned()).or_default() += 1;
        }
        all
    }

    /// The longest call.
    pub fn max_latency(&self) -> Duration {
        self.records
            .iter()
            .map(Record::latency)
            .max()
            .unwrap_or_default()
    }

    /// One line for the test output.
    pub fn summary(&self) -> String {
        format!(
            "{} calls in {:.1?} ({:.0}/s): {:?}; {} attempts; max latency {:.1?}",
            self.calls(),
            self.elapsed,
            self.calls() as f64 / self.elapsed.as_secs_f64().max(1e-3),
            self.by_code(),
            self.attempts(),
            self.max_latency()
        )
    }

    /// The first failures, for assertion messages.
    pub fn first_failures(&self, n: usize) -> String {
        self.failures()
            .iter()
            .take(n)
            .map(|r| format!("#{} {:?}", r.seq, r.outcome))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// ---------------------------------------------------------------------------
// In-process servers
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

// ---------------------------------------------------------------------------
// etcd probes
// ---------------------------------------------------------------------------

/// The lease of `key` and its remaining and granted TTL in seconds, when the
/// key exists and its lease is alive.
pub async fn live_lease(etcd: &mut Client, key: &str) -> Option<(i64, i64, i64)> {
    let got = tokio::time::timeout(Duration::from_secs(2), etcd.get(key, None))
        .await
        .ok()?
        .ok()?;
    let lease = got.kvs().first()?.lease();
    if lease == 0 {
        return None;
    }
    let ttl = tokio::time::timeout(Duration::from_secs(2), etcd.lease_time_to_live(lease, None))
        .await
        .ok()?
        .ok()?;
    (ttl.ttl() > 0).then_some((lease, ttl.ttl(), ttl.granted_ttl()))
}

/// The current etcd revision.
pub async fn revision(etcd: &mut Client) -> i64 {
    tokio::time::timeout(Duration::from_secs(10), etcd.get("/", None))
        .await
        .expect("etcd answers in time")
        .expect("etcd answers")
        .header()
        .expect("a header")
        .revision()
}

// ---------------------------------------------------------------------------
// Decoder fuzzing
// ---------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator, so a failing input can be
/// reproduced from its seed and index.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

const FIELDS: &[&str] = &[
    "id", "service", "addr", "version", "group", "weight", "zone", "labels", "owner", "",
];
const ADDRS: &[&str] = &[
    "127.0.0.1:50051",
    "h:1",
    "db.local:65535",
    "[::1]:80",
    "[::1]:0",
    "::1:80",
    ":80",
    "h:",
    "h",
    "h:65536",
    "h:-1",
    "h:+1",
    "h: 1",
    "h :1",
    "a:b:c",
    "[::1]",
    "[]:1",
    "[:1",
    "ünï.cödé:443",
    "h:99999999999999999999",
    "",
    ":",
    "\u{0}:1",
];
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u",
    "\\ud800",
    "null",
    "true",
    "false",
    "-",
    "0",
    "1e999",
    "-1",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775809",
    "4294967296",
    "1.5",
    " ",
    "\n",
    "\u{feff}",
    "\"id\"",
    "\"addr\"",
    "\"weight\"",
    "\"labels\"",
];

fn json_string(rng: &mut SplitMix) -> String {
    let pieces = [
        "a",
        "echo-1",
        "",
        " ",
        "\\\"",
        "\\\\",
        "\\n",
        "\\u0000",
        "\\ud83d\\ude00",
        "\\ud800",
        "é",
        "日本",
        "\u{10FFFF}",
        ":",
        "127.0.0.1:1",
        "[::1]:1",
        "/",
        "=",
    ];
    let mut s = String::from("\"");
    for _ in 0..rng.below(5) {
        s.push_str(rng.pick::<&str>(&pieces));
    }
    s.push('"');
    s
}

fn json_value(rng: &mut SplitMix, depth: usize) -> String {
    match rng.below(if depth > 2 { 6 } else { 9 }) {
        0 => json_string(rng),
        1 => format!("\"{}\"", rng.pick(ADDRS).replace('\\', "\\\\")),
        2 => rng.pick(&TOKENS[10..22]).to_string(),
        3 => (rng.next_u64() as i64 >> rng.below(64)).to_string(),
        4 => "null".to_owned(),
        5 => format!("{}", rng.below(1000) as f64 / 7.0),
        6 => {
            let items: Vec<String> = (0..rng.below(4))
                .map(|_| json_value(rng, depth + 1))
                .collect();
            format!("[{}]", items.join(","))
        }
        7 => json_object(rng, depth + 1),
        _ => "true".to_owned(),
    }
}

fn json_object(rng: &mut SplitMix, depth: usize) -> String {
    let mut members = Vec::new();
    for _ in 0..rng.below(10) {
        let key = if rng.chance(5) {
            json_string(rng)
        } else {
            format!("\"{}\"", rng.pick(FIELDS))
        };
        let value = match key.trim_matches('"') {
            "addr" if !rng.chance(4) => format!("\"{}\"", rng.pick(ADDRS).replace('\\', "\\\\")),
            "labels" if !rng.chance(3) => {
                let pairs: Vec<String> = (0..rng.below(4))
                    .map(|_| format!("{}:{}", json_string(rng), json_value(rng, depth + 1)))
                    .collect();
                format!("{{{}}}", pairs.join(","))
            }
            _ => json_value(rng, depth),
        };
        members.push(format!("{key}:{value}"));
    }
    format!("{{{}}}", members.join(","))
}

/// A valid node value with random fields.
fn valid_value(rng: &mut SplitMix) -> Vec<u8> {
    let id = format!("n-{}", rng.below(1000));
    let addr = format!("127.0.0.{}:{}", rng.below(256), 1 + rng.below(65535));
    let mut node = Node::new(id, "echo", addr)
        .expect("valid")
        .with_weight(rng.below(1000) as u32)
        .with_version(format!("{}.{}", rng.below(3), rng.below(10)));
    for i in 0..rng.below(3) {
        node = node.with_label(format!("k{i}"), "v\u{e9}\"");
    }
    node.encode()
}

/// The `i`-th input of a fuzz run: random bytes, JSON-ish noise, mutated and
/// truncated valid values, and structured objects with tricky fields.
pub fn fuzz_node_value(rng: &mut SplitMix, i: usize) -> Vec<u8> {
    match i % 6 {
        0 => (0..rng.below(256)).map(|_| rng.next_u64() as u8).collect(),
        1 => {
            let mut s = String::new();
            for _ in 0..rng.below(24) {
                s.push_str(rng.pick::<&str>(TOKENS));
            }
            s.into_bytes()
        }
        2 => {
            let mut v = valid_value(rng);
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(v.len());
                v[at] ^= 1 << rng.below(8);
            }
            v
        }
        3 => {
            let mut v = valid_value(rng);
            v.truncate(rng.below(v.len() + 1));
            v
        }
        4 => json_object(rng, 0).into_bytes(),
        _ => {
            let mut v = valid_value(rng);
            let at = rng.below(v.len() + 1);
            let token = rng.pick(TOKENS).as_bytes().to_vec();
            v.splice(at..at, token);
            v
        }
    }
}
