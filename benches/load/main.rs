//! The load harness: grpc-cluster against what a tonic user writes (raw tonic
//! with the same deadline, tonic's own balancer), in one run, against the
//! same servers. Absolute times on shared machines drift; the ratios between
//! rows measured side by side are what to read.
//!
//! Run: `cargo bench --bench load` (a few minutes on 2 cores, once built). It
//! prints one markdown table per section, then the targets: as a table, and
//! as one line each (`target …: value (goal …) pass|MISS`).
//!
//! | section | module | what |
//! |---|---|---|
//! | `unary` | `unary.rs` | raw tonic + deadline vs `ClientHandle::call` failfast/failover and `Addr::send`, 1 node: p50/p99 at c=1, calls/s at c=64 |
//! | `tls` | `tls.rs` | plaintext vs TLS (`[server.tls]`, `[client.tls]`), raw tonic + deadline and `ClientHandle::call` failfast, 1 node: p50/p99 at c=1, calls/s at c=64; the time to make a TLS connection, tonic's `Endpoint::connect` vs a node channel's handshake |
//! | `stub` | `stub.rs` | the generated `EchoClient` on a raw tonic `Channel` + deadline vs on a `ClusterChannel` (failfast, failover), 1 node: p50/p99 at c=1, calls/s at c=64 |
//! | `balancer` | `balancer.rs` | `Channel::balance_list` + deadline vs `round_robin` and `least_request`, 3 nodes: calls/s at c=64, per-node share |
//! | `broadcast` | `broadcast.rs` | `Broadcast` to 8 nodes vs raw tonic's fan-out with the deadline (and one `Call`): p50/p99 at c=1 |
//! | `cpu` | `cpu.rs` | this process's CPU time per call (servers in a child process), `ClientHandle::call` vs raw tonic + deadline, at c=1 and c=64 |
//! | `caller_runtime` | `caller_runtime.rs` | calls from a tokio runtime of 2 workers, `ClientHandle::call` vs raw tonic + deadline on that runtime: calls/s at c=64 |
//! | `propagation` | `propagation.rs` | 100 registrations: `Registrar` start → the client's picker lists the node; `deregister` → the node leaves the picker's list |
//! | `memory` | `memory.rs` | RSS of a client process watching a service of 10,000 nodes (a child process) |
//! | `scale` | `scale.rs` | 100,000 nodes in etcd: RSS, time to list, one-node change, calls during rebuilds (a child process); pick p99 during a rebuild (public `Picker`) |
//! | `observe` | `observe.rs` | `ClientHandle::call` failfast, 1 node, not observed vs with the Prometheus recorder and an info-level subscriber: `tracing-subscriber`'s registry (spans kept, no output; the target's row) and `fmt` writing to a sink: p50 at c=1, calls/s at 64 |
//! | `server_kit` | `server_kit.rs` | plain tonic server vs `server_kit::serve` with the Prometheus recorder installed, limits never refusing: calls/s (`benches/support/server_kit.rs`) |
//!
//! Method (`harness.rs`): every row is measured once per round, and the rows
//! of a section take turns — in blocks of 10 calls for latency (a random
//! order per turn), chunk by chunk for throughput (the order rotating) — so
//! that all of them meet the same background load. Every row has a
//! connection of its own. Each value is the median over rounds, shown with
//! its range over rounds; each ratio is the median of the per-round ratios.
//!
//! Selecting: `cargo bench --bench load -- scale cpu` (section names as
//! arguments) or `LOAD_SECTIONS=scale,cpu` runs only those (default all).
//! `LOAD_ROUNDS=N` rounds of the interleaved sections (default 20);
//! `LOAD_KIT_ROUNDS=N` paired rounds of `server_kit` (default 40);
//! `LOAD_SERVER_THREADS=N` worker threads of the echo servers (default 1);
//! `LOAD_SCALE_NODES=N` nodes of the `scale` section (default 100,000).
//! `LOAD_PROFILE=failfast` (or `failfast-send`, `observed`,
//! `observed-registry`, `raw`, `raw-bare`, `stub`, `stub-raw`, `round_robin`,
//! `least_request`, `balance_list`; `:c1` appended for concurrency 1) only
//! runs that client's 100,000 calls (`LOAD_PROFILE_CALLS=N` for another
//! count, rounded down to whole rounds), for a profiler;
//! `server_kit` (or `server_kit-plain`) serves that many calls at c=64 on the
//! kit (or plain tonic) alone, as the `server_kit` section's servers run
//! (metrics recorded)
//! (`perf record -e cpu-clock --call-graph dwarf`, built with
//! `CARGO_PROFILE_BENCH_DEBUG=true`; under valgrind set `LOAD_NO_CPU=1`,
//! which leaves the CPU clock unread).
//!
//! Processes and threads: the 8 echo servers (plain tonic, `EchoService`)
//! run in a child process (this binary again) on a tokio runtime of
//! `LOAD_SERVER_THREADS` workers. The clients run on the actix `System`
//! thread of this process (and on whatever threads the cluster client starts
//! for its I/O), except in `caller_runtime` and the scale section's calls
//! during rebuilds, which call from a tokio runtime of 2 workers. etcd is a
//! private process (`scale` has one of its own). `memory` and `scale`
//! measure their client in a child process, so nothing else the run
//! allocated is counted. `server_kit` builds its own 2-worker runtime
//! carrying its servers and load, after the other sections. Loopback only;
//! every section is bounded in calls and time.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/server_kit.rs"]
mod kit;

mod balancer;
mod broadcast;
mod caller_runtime;
mod child;
mod cluster;
mod cpu;
mod harness;
mod memory;
mod observe;
mod propagation;
mod report;
mod scale;
mod server_kit;
mod servers;
mod settings;
mod stub;
mod tls;
mod unary;
mod usage;

use std::time::Instant;

use actix::prelude::*;
use cluster_client::{Balancer, CallOptions, ClientConfig, GetHandle, Strategy};
use grpc_cluster::echo::EchoClient;
use registry_actor::testing::EtcdServer;

use crate::cluster::{deadline, listed_client, raw_channel, Setup};
use crate::harness::{latency_round, throughput_round, Caller, Row, Via};
use crate::report::{value, Report};
use crate::servers::Servers;
use crate::settings::{Section, Settings};
use crate::usage::loadavg;

/// Servers started (the broadcast section uses them all).
const SERVERS: usize = 8;

/// For a profiler: one client's calls alone, 100,000 at concurrency 64, or one
/// at a time with a `:c1` suffix (`failfast:c1`). To one node: `failfast`,
/// `failfast-send` (the cluster client), `observed` and `observed-registry`
/// (`failfast` with the `observe` section's recorder and `fmt` or registry
/// subscriber), `raw` (tonic + deadline),
/// `raw-bare` (tonic, no deadline); to three: `round_robin`, `least_request`,
/// `balance_list`.
fn profile(which: &str) {
    let (name, sequential) = match which.strip_suffix(":c1") {
        Some(name) => (name, true),
        None => (which, false),
    };
    let calls = std::env::var("LOAD_PROFILE_CALLS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(100_000);
    if let Some(server) = name.strip_prefix("server_kit") {
        // As the section measures it: with the metrics recorded.
        observe::recorder();
        kit::profile(server != "-plain", calls as u64);
        return;
    }
    let servers = Servers::spawn(SERVERS, 1);
    let addrs = servers.addrs.clone();
    System::new().block_on(async {
        let etcd = EtcdServer::start().await.expect("etcd");
        let setup = Setup::new(etcd.registry_config(), addrs.clone(), 1).await;
        let balancer = match name {
            "least_request" => Balancer::LeastRequest,
            _ => Balancer::RoundRobin,
        };
        let config = ClientConfig::default().with_balancer(balancer);
        let (service, nodes) = match name {
            "round_robin" | "least_request" | "balance_list" => ("echo3", balancer::NODES),
            _ => ("echo", 1),
        };
        let client = listed_client(&setup.registry, config, service, nodes).await;
        let caller = match name {
            "raw" => Caller::Raw(raw_channel(addrs[0]).await, Some(deadline())),
            "raw-bare" => Caller::Raw(raw_channel(addrs[0]).await, None),
            "balance_list" => Caller::Raw(balancer::balance_list(&addrs), Some(deadline())),
            "failfast-send" => Caller::Cluster(Via::Actor(client), service, Strategy::Failfast),
            "stub-raw" => Caller::RawStub(EchoClient::new(raw_channel(addrs[0]).await), deadline()),
            "stub" => {
                let handle = client.send(GetHandle).await.expect("client alive");
                let channel = handle
                    .channel(service)
                    .with_options(CallOptions::new().with_strategy(Strategy::Failfast));
                Caller::ClusterStub(EchoClient::new(channel), deadline())
            }
            "observed" | "observed-registry" => {
                let spans = observe::CallSpans::default();
                let dispatch = match name {
                    "observed" => observe::observing(spans),
                    _ => observe::observing_unformatted(spans),
                };
                let call = Caller::Cluster(Via::handle(&client).await, service, Strategy::Failfast);
                Caller::Observed(Box::new(call), dispatch)
            }
            _ => Caller::Cluster(Via::handle(&client).await, service, Strategy::Failfast),
        };
        let mut row = Row::new("profile", caller);
        if sequential {
            for round in 0..(calls / harness::LATENCY_CALLS).max(1) {
                latency_round(std::slice::from_mut(&mut row), round).await;
            }
            println!("profile run ({which}): p50 {} µs", value(&row.p50, 1));
        } else {
            for round in 0..(calls / harness::THROUGHPUT_CALLS).max(1) {
                throughput_round(std::slice::from_mut(&mut row), round).await;
            }
            println!("profile run ({which}): {} calls/s", value(&row.rps, 0));
            // The calls went to the nodes of the section it stands for.
            assert_eq!(
                row.shares.len(),
                nodes,
                "profile {which}: answered by {}",
                row.share_text()
            );
        }
    });
    drop(servers);
}

/// Runs the child process's job when this process is one; whether it was.
fn child_job() -> bool {
    let var = |key: &str| std::env::var(key).ok();
    if let Some(spec) = var(servers::CHILD) {
        servers::serve(&spec);
    } else if let Some(endpoint) = var(memory::CHILD) {
        memory::child(&endpoint);
    } else if let (Some(endpoint), Some(probe)) = (var(scale::CHILD), var(scale::PROBE)) {
        scale::child(&endpoint, &probe);
    } else {
        return false;
    }
    true
}

fn main() {
    if child_job() {
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("load: run with `cargo bench --bench load` to measure");
        return;
    }
    if let Ok(which) = std::env::var("LOAD_PROFILE") {
        profile(&which);
        return;
    }
    let settings = Settings::from_env(kit::ROUNDS, scale::DEFAULT_NODES);
    let started = Instant::now();
    let load_before = loadavg();
    let mut report = Report::default();
    let servers = settings
        .sections
        .iter()
        .any(|s| s.needs_servers())
        .then(|| Servers::spawn(SERVERS, settings.server_threads));
    let addrs = servers
        .as_ref()
        .map(|s| s.addrs.clone())
        .unwrap_or_default();
    if settings.sections.iter().any(|s| s.needs_system()) {
        System::new().block_on(async {
            let etcd = EtcdServer::start().await.expect("etcd");
            let setup = Setup::new(etcd.registry_config(), addrs, settings.rounds).await;
            for section in &settings.sections {
                let report = &mut report;
                match section {
                    Section::Unary => unary::run(report, &setup).await,
                    Section::Tls => tls::run(report, &setup, settings.server_threads).await,
                    Section::Stub => stub::run(report, &setup).await,
                    Section::Balancer => balancer::run(report, &setup).await,
                    Section::Broadcast => broadcast::run(report, &setup).await,
                    Section::Cpu => cpu::run(report, &setup).await,
                    Section::CallerRuntime => caller_runtime::run(report, &setup).await,
                    Section::Propagation => propagation::run(report, &setup).await,
                    Section::Memory => memory::run(report, &setup).await,
                    Section::Scale => {
                        scale::run(report, setup.addrs[0], settings.scale_nodes).await;
                    }
                    Section::Observe => observe::run(report, &setup).await,
                    Section::ServerKit => {}
                }
            }
        });
    }
    drop(servers);
    if settings.runs(Section::ServerKit) {
        // The server kit is measured with its metrics recorded.
        observe::recorder();
        server_kit::run(&mut report, settings.kit_rounds);
    }
    if report.is_empty() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!("# grpc-cluster load harness");
    println!();
    println!(
        "Sections: {}. {cores} cores; echo servers in a child process on {} worker thread(s); \
         clients on the actix System thread unless a section says otherwise. Load average \
         (1/5/15 min) {load_before} at the start, {} at the end; {:.0} s in all.",
        settings
            .sections
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        settings.server_threads,
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    println!();
    report.print();
}
