//! The client side of the fault suite: a registry and a cluster client, their
//! status, and a paced, bounded load in which every call ends as a [`Record`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cluster_client::{Attempt, Call, ClientConfig, ClusterClient, PickerStatus, ServiceStatus};
use registry_actor::{Etcd, RegistryActor, RegistryConfig, RegistryStats, Stats};
use tonic::Code;

use super::process::EchoProcess;
use super::{HANG_MARGIN, PROCESS_DEADLINE};
use crate::support::wait_until;
// ---------------------------------------------------------------------------

/// A registry actor and a cluster client over it, on the current arbiter.
pub async fn start_client(
    registry: &RegistryConfig,
    config: ClientConfig,
) -> (Addr<RegistryActor>, Addr<ClusterClient>) {
    let etcd = registry_actor::connect(registry)
        .await
        .expect("etcd client");
    start_client_over(etcd, registry, config)
}

/// [`start_client`] over a given etcd connection (whose member preference
/// the caller can then read).
pub fn start_client_over(
    etcd: Etcd,
    registry: &RegistryConfig,
    config: ClientConfig,
) -> (Addr<RegistryActor>, Addr<ClusterClient>) {
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

/// The fewest nodes of `echo` the client listed while `period` passed,
/// sampled every 100 ms. The period itself is the behaviour under test (a
/// fault or an outage lasting that long), not a wait for something.
pub async fn fewest_listed_during(client: &Addr<ClusterClient>, period: Duration) -> usize {
    let started = Instant::now();
    let mut fewest = usize::MAX;
    while started.elapsed() < period {
        fewest = fewest.min(echo_status(client).await.nodes.len());
        let left = period.saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
    fewest
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
