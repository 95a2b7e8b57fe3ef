//! The set-up every process scenario starts from.

use std::time::Duration;

use actix::prelude::*;
use cluster_client::{Call, CallOptions, ClientConfig, ClusterClient, Strategy};
use grpc_cluster::echo::{SayReply, SayRequest, SAY};
use registry_actor::{Etcd, RegistryActor, RegistryConfig};

use super::etcd::EtcdFixture;
use super::load::{start_client_over, wait_listed, Load, LoadPlan, LoadReport};
use super::process::{number_after, start_processes, EchoProcess, Exit};
use super::PROCESS_DEADLINE;

/// Calls each server must have answered before a scenario counts it as serving.
pub const WARM: usize = 20;

/// A running scenario: `echo-server` processes registered in a private etcd, a
/// registry and a cluster client that lists exactly them, and a load that
/// each of them has answered [`WARM`] calls of.
pub struct Scenario {
    pub servers: Vec<EchoProcess>,
    /// The client's etcd connection.
    pub etcd: Etcd,
    pub registry: Addr<RegistryActor>,
    pub client: Addr<ClusterClient>,
    pub load: Load,
}

impl Scenario {
    /// Starts one process per id in `etcd`, a client with `registry` and
    /// `client`, and the load `plan` of `make(seq)` calls; returns once every
    /// process is listed and serving.
    pub async fn start<Req, Resp, F>(
        etcd: &impl EtcdFixture,
        ids: &[&str],
        registry: &RegistryConfig,
        client: ClientConfig,
        plan: LoadPlan,
        make: F,
    ) -> Self
    where
        Req: prost::Message + Clone + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
        F: Fn(u64) -> Call<Req, Resp> + 'static,
    {
        let servers = start_processes(etcd, ids).await;
        let connection = registry_actor::connect(registry)
            .await
            .expect("etcd client");
        let (registry, client) = start_client_over(connection.clone(), registry, client);
        wait_listed(&client, &servers.iter().collect::<Vec<_>>()).await;
        let load = Load::start(client.clone(), plan, make);
        wait_serving(&load, &servers.iter().collect::<Vec<_>>(), WARM).await;
        Self {
            servers,
            etcd: connection,
            registry,
            client,
            load,
        }
    }
}

impl Scenario {
    /// [`start`](Self::start) with the default client and a failover load of
    /// `Say` at [`RATE`] calls a second.
    pub async fn failover(
        etcd: &impl EtcdFixture,
        ids: &[&str],
        registry: &RegistryConfig,
    ) -> Self {
        Self::start(
            etcd,
            ids,
            registry,
            ClientConfig::default(),
            LoadPlan::new(RATE, LOAD_LIMIT),
            say_call(Strategy::Failover),
        )
        .await
    }
}

/// Prints the load's summary and checks that no call failed.
pub fn assert_no_call_failed(report: &LoadReport) {
    eprintln!("{}", report.summary());
    assert!(
        report.failures().is_empty(),
        "no call fails: {:?}\n{}",
        report.by_code(),
        report.first_failures(10)
    );
}

/// Waits until each process has answered `n` calls of `load`.
pub async fn wait_serving(load: &Load, processes: &[&EchoProcess], n: usize) {
    for p in processes {
        let addr = p.addr();
        let served = load
            .wait_for(PROCESS_DEADLINE, n, |r| r.ok_addr() == Some(&addr))
            .await;
        assert!(served, "{} answered {n} calls", p.id());
    }
}

/// The load of the process scenarios: calls per second.
pub const RATE: u32 = 200;

/// Upper bound of a process scenario's load; the tests stop it much earlier.
pub const LOAD_LIMIT: Duration = Duration::from_secs(90);

/// How long a killed node may stay listed: its lease's TTL (2 s), with room
/// for a loaded machine.
pub const LEASE_WAIT: Duration = Duration::from_secs(20);

pub fn say_call(strategy: Strategy) -> impl Fn(u64) -> Call<SayRequest, SayReply> {
    move |seq| {
        Call::new(
            "echo",
            SAY,
            SayRequest {
                message: format!("m{seq}"),
            },
        )
        .with_options(CallOptions::new().with_strategy(strategy))
    }
}

pub fn node_key(id: &str) -> String {
    registry_actor::node_key("/grpc-cluster/services", "echo", id)
}

/// Waits until `n` more calls than now have ended.
pub async fn wait_more_calls(load: &Load, n: usize) {
    let now = load.count(|_| true);
    assert!(
        load.wait_for(PROCESS_DEADLINE, now + n, |_| true).await,
        "the load goes on"
    );
}

/// SIGTERM to every process at once, then each one's exit (all must be 0).
pub async fn stop_all(processes: &mut [EchoProcess]) -> Vec<(String, Exit)> {
    for p in processes.iter() {
        p.sigterm();
    }
    let mut exits = Vec::new();
    for p in processes.iter_mut() {
        let exit = p.wait_exit().await;
        assert!(
            exit.status.success(),
            "{} exits 0 after SIGTERM: {}\n{}",
            p.id(),
            exit.status,
            p.logs()
        );
        exits.push((p.addr(), exit));
    }
    exits
}

/// Checks that each gracefully stopped process processed exactly the calls the
/// client saw it answer: nothing lost (a processed call whose answer never
/// arrived) and nothing doubled (a call answered twice). Answers the sum.
pub fn reconcile(report: &LoadReport, exits: &[(String, Exit)]) -> u64 {
    reconcile_within(report, exits, |_| 0)
}

/// [`reconcile`], where up to `late(addr)` calls at `addr` may have been
/// processed after their client gave up (their deadline passed in flight).
pub fn reconcile_within(
    report: &LoadReport,
    exits: &[(String, Exit)],
    late: impl Fn(&str) -> u64,
) -> u64 {
    let mut sum = 0;
    for (addr, exit) in exits {
        let answered = report.successes_at(addr);
        assert!(
            (answered..=answered + late(addr)).contains(&exit.processed),
            "{addr}: processed on the server ({}) == successes the client got from it \
             ({answered}), plus at most {} that passed their deadline in flight ({})",
            exit.processed,
            late(addr),
            exit.report
        );
        assert_eq!(exit.cancelled, 0, "{addr}: {}", exit.report);
        assert_eq!(
            number_after(&exit.report, "cancelled"),
            Some(0),
            "{addr}: nothing cancelled by the drain deadline: {}",
            exit.report
        );
        sum += exit.processed;
    }
    sum
}

pub fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
