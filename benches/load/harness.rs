//! How every row is measured: the ways of making a call ([`Caller`]), one
//! row's results ([`Row`]), and rounds in which the rows of a section take
//! turns so that all of them meet the same background load.
//!
//! Latency: [`LATENCY_CALLS`] sequential calls per row and round, the rows
//! taking turns in blocks of [`LATENCY_BLOCK`] in a random order per turn.
//! Throughput: [`THROUGHPUT_CALLS`] calls at [`CONCURRENCY`] in flight per
//! row and round, in [`CHUNKS`] chunks, the rows taking turns chunk by chunk
//! (the order rotating). Both also read this process's CPU clock around each
//! block and chunk, for the CPU each call cost the client.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cluster_client::{
    Broadcast, Call, CallOptions, ClientHandle, ClusterChannel, ClusterClient, Completion,
    GetHandle, Strategy,
};
use futures_util::stream::{self, StreamExt};
use grpc_cluster::echo::{EchoClient, SayReply, SayRequest, SAY};
use tonic::transport::Channel;

use crate::report::{percentile, us};
use crate::usage::process_cpu;

/// Calls per row and round of a latency measurement (concurrency 1).
pub(crate) const LATENCY_CALLS: usize = 1_000;
/// Sequential calls a row makes per turn before the next row's turn: a client
/// in use, whose code and data are in the caches, as an app's would be. Call
/// by call, each row would mostly measure the cache misses the previous row
/// left, which favours whichever rows share the most code.
pub(crate) const LATENCY_BLOCK: usize = 10;
/// Calls per row and round of a throughput measurement.
pub(crate) const THROUGHPUT_CALLS: usize = 10_000;
/// Chunks a row's calls of one round are cut into, to take turns with the others.
pub(crate) const CHUNKS: usize = 5;
/// Calls in flight at once in a throughput measurement.
pub(crate) const CONCURRENCY: usize = 64;

/// One way of making a call. [`call`](Self::call) answers the id of the node
/// that answered (empty for a fan-out), or `None` when the call failed.
#[derive(Clone)]
pub(crate) enum Caller {
    /// Raw tonic generic unary on a channel (one node, or `balance_list`), with
    /// `Request::set_timeout` of the given deadline when there is one.
    Raw(Channel, Option<Duration>),
    /// `Call` of `Say` to a service, with a strategy.
    Cluster(Via, &'static str, Strategy),
    /// `Broadcast` of `Say` to a service of this many nodes, completion `all`.
    Broadcast(Via, &'static str, usize),
    /// The same call on every channel at once with raw tonic (and the
    /// deadline), joined: what a tonic user writes for a fan-out.
    RawFanOut(Vec<Channel>, Duration),
    /// The generated client on a raw tonic channel, with the deadline.
    RawStub(EchoClient<Channel>, Duration),
    /// The generated client on a `ClusterChannel`, with the deadline.
    ClusterStub(EchoClient<ClusterChannel>, Duration),
    /// Another caller's call, run with this `tracing` dispatcher as the
    /// default while it is polled.
    Observed(Box<Caller>, tracing::Dispatch),
}

/// How a call reaches the cluster client.
#[derive(Clone)]
pub(crate) enum Via {
    /// `ClientHandle::call`: the strategy runs in the calling task.
    Handle(ClientHandle),
    /// `Addr::send` to the `ClusterClient` actor, which runs it in a task of its own.
    Actor(Addr<ClusterClient>),
}

impl Via {
    /// The handle of `client`.
    pub(crate) async fn handle(client: &Addr<ClusterClient>) -> Self {
        Self::Handle(client.send(GetHandle).await.expect("client alive"))
    }
}

fn request(i: usize) -> SayRequest {
    SayRequest {
        message: format!("m{i}"),
    }
}

/// One raw tonic unary `Say` call, as a tonic user writes it without
/// generated stubs.
async fn raw_call(channel: &Channel, deadline: Option<Duration>, i: usize) -> Option<String> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.ok()?;
    let codec = tonic_prost::ProstCodec::<SayRequest, SayReply>::default();
    let mut request = tonic::Request::new(request(i));
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static("/echo.v1.Echo/Say"),
        codec,
    )
    .await
    .ok()
    .map(|r| r.into_inner().node_id)
}

/// One `Say` call through a generated client, as a tonic user writes it.
async fn stub_call<T>(stub: &EchoClient<T>, deadline: Duration, i: usize) -> Option<String>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut request = tonic::Request::new(request(i));
    request.set_timeout(deadline);
    let reply = stub.clone().say(request).await.ok()?;
    Some(reply.into_inner().node_id)
}

impl Caller {
    /// Makes call number `i`.
    pub(crate) async fn call(&self, i: usize) -> Option<String> {
        match self {
            Self::Raw(channel, deadline) => raw_call(channel, *deadline, i).await,
            Self::Cluster(client, service, strategy) => {
                let call = Call::new(*service, SAY, request(i))
                    .with_options(CallOptions::new().with_strategy(*strategy));
                let reply = match client {
                    Via::Handle(handle) => handle.call(call).await.ok(),
                    Via::Actor(addr) => addr.send(call).await.ok().and_then(Result::ok),
                };
                reply.map(|r| r.message.node_id)
            }
            Self::Broadcast(client, service, nodes) => {
                let call =
                    Broadcast::new(*service, SAY, request(i)).with_completion(Completion::All);
                let reply = match client {
                    Via::Handle(handle) => handle.broadcast(call).await.ok(),
                    Via::Actor(addr) => addr.send(call).await.ok().and_then(Result::ok),
                };
                reply
                    .filter(|r| r.successes() == *nodes)
                    .map(|_| String::new())
            }
            Self::RawStub(stub, deadline) => stub_call(stub, *deadline, i).await,
            Self::ClusterStub(stub, deadline) => stub_call(stub, *deadline, i).await,
            Self::RawFanOut(channels, deadline) => {
                let calls = channels.iter().map(|c| raw_call(c, Some(*deadline), i));
                let answers = futures_util::future::join_all(calls).await;
                answers.iter().all(Option::is_some).then(String::new)
            }
            Self::Observed(caller, dispatch) => {
                use tracing::instrument::WithSubscriber as _;
                // Boxed: the caller's future is recursive.
                Box::pin(caller.call(i))
                    .with_subscriber(dispatch.clone())
                    .await
            }
        }
    }
}

/// One row of a table: the measurements of every round, in order.
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) caller: Caller,
    /// p50 latency per round, µs (concurrency 1).
    pub(crate) p50: Vec<f64>,
    /// p99 latency per round, µs (concurrency 1).
    pub(crate) p99: Vec<f64>,
    /// Calls per second per round at [`CONCURRENCY`].
    pub(crate) rps: Vec<f64>,
    /// CPU time of this process per call, µs, per round at concurrency 1.
    pub(crate) cpu_c1: Vec<f64>,
    /// CPU time of this process per call, µs, per round at [`CONCURRENCY`].
    pub(crate) cpu_c64: Vec<f64>,
    /// Which node answered how many calls, over all rounds.
    pub(crate) shares: BTreeMap<String, u64>,
}

impl Row {
    pub(crate) fn new(name: &'static str, caller: Caller) -> Self {
        Self {
            name,
            caller,
            p50: Vec::new(),
            p99: Vec::new(),
            rps: Vec::new(),
            cpu_c1: Vec::new(),
            cpu_c64: Vec::new(),
            shares: BTreeMap::new(),
        }
    }

    /// Runs `calls` calls at concurrency [`CONCURRENCY`]; counts who answered.
    /// The time they took and the CPU time this process spent meanwhile.
    async fn run_chunk(&mut self, calls: usize) -> (Duration, Duration) {
        let caller = &self.caller;
        let cpu = process_cpu();
        let t = Instant::now();
        let shares = stream::iter(0..calls)
            .map(|i| caller.call(i))
            .buffer_unordered(CONCURRENCY)
            .fold(BTreeMap::<String, u64>::new(), |mut shares, node| {
                let node = node.unwrap_or_else(|| "failed".to_owned());
                *shares.entry(node).or_default() += 1;
                std::future::ready(shares)
            })
            .await;
        let elapsed = t.elapsed();
        let cpu = process_cpu().saturating_sub(cpu);
        assert!(
            !shares.contains_key("failed"),
            "{}: calls failed: {shares:?}",
            self.name
        );
        for (node, n) in shares {
            *self.shares.entry(node).or_default() += n;
        }
        (elapsed, cpu)
    }

    /// `n0 33.3 %, n1 …`: the share of the calls each node answered.
    pub(crate) fn share_text(&self) -> String {
        let total: u64 = self.shares.values().sum();
        self.shares
            .iter()
            .map(|(node, n)| format!("{node} {:.1} %", *n as f64 * 100.0 / total as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Latency at concurrency 1 of every row in one round: the rows take turns in
/// blocks of [`LATENCY_BLOCK`] calls, in a random order per turn, so that all
/// of them meet the same moments of the machine's background load.
pub(crate) async fn latency_round(rows: &mut [Row], round: usize) {
    let n = rows.len();
    let mut samples = vec![Vec::with_capacity(LATENCY_CALLS); n];
    let mut cpu = vec![Duration::ZERO; n];
    let mut order: Vec<usize> = (0..n).collect();
    let mut seed = (round as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for turn in 0..LATENCY_CALLS / LATENCY_BLOCK {
        // A fresh order for every turn (Fisher-Yates, xorshift): no row always
        // follows the same other row.
        for k in (1..n).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(k, (seed % (k as u64 + 1)) as usize);
        }
        for &j in &order {
            let block_cpu = process_cpu();
            for b in 0..LATENCY_BLOCK {
                let i = turn * LATENCY_BLOCK + b;
                let t = Instant::now();
                let ok = rows[j].caller.call(i).await.is_some();
                samples[j].push(t.elapsed());
                assert!(ok, "{}: a call failed", rows[j].name);
            }
            cpu[j] += process_cpu().saturating_sub(block_cpu);
        }
    }
    for ((row, mut lat), cpu) in rows.iter_mut().zip(samples).zip(cpu) {
        lat.sort();
        row.p50.push(us(percentile(&lat, 0.5)));
        row.p99.push(us(percentile(&lat, 0.99)));
        row.cpu_c1.push(us(cpu) / LATENCY_CALLS as f64);
    }
}

/// Throughput at concurrency [`CONCURRENCY`] of every row in one round:
/// [`THROUGHPUT_CALLS`] calls per row, in [`CHUNKS`] chunks, the rows taking
/// turns chunk by chunk (the order rotating).
pub(crate) async fn throughput_round(rows: &mut [Row], round: usize) {
    let n = rows.len();
    let mut took = vec![(Duration::ZERO, Duration::ZERO); n];
    for c in 0..CHUNKS {
        for k in 0..n {
            let j = (k + c + round) % n;
            let (wall, cpu) = rows[j].run_chunk(THROUGHPUT_CALLS / CHUNKS).await;
            took[j].0 += wall;
            took[j].1 += cpu;
        }
    }
    for (row, (wall, cpu)) in rows.iter_mut().zip(took) {
        row.rps.push(THROUGHPUT_CALLS as f64 / wall.as_secs_f64());
        row.cpu_c64.push(us(cpu) / THROUGHPUT_CALLS as f64);
    }
}

/// What [`interleave`] measures each round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measure {
    latency: bool,
    throughput: bool,
}

impl Measure {
    /// Latency at concurrency 1, then throughput at [`CONCURRENCY`].
    pub(crate) const BOTH: Self = Self {
        latency: true,
        throughput: true,
    };
    /// Latency at concurrency 1 only.
    pub(crate) const LATENCY: Self = Self {
        latency: true,
        throughput: false,
    };
    /// Throughput at [`CONCURRENCY`] only.
    pub(crate) const THROUGHPUT: Self = Self {
        latency: false,
        throughput: true,
    };
}

/// Warms every row up, then measures every row once per round: latency then
/// throughput, the rows taking turns block by block, then chunk by chunk.
pub(crate) async fn interleave(rows: &mut [Row], rounds: usize, section: &str, measure: Measure) {
    for i in 0..20 {
        // Warm-up: connections, allocators, caches.
        for row in rows.iter() {
            for k in 0..25 {
                assert!(
                    row.caller.call(i * 25 + k).await.is_some(),
                    "{}: warm-up",
                    row.name
                );
            }
        }
    }
    for round in 0..rounds {
        eprintln!("[load] {section}: round {}/{rounds}", round + 1);
        if measure.latency {
            latency_round(rows, round).await;
        }
        if measure.throughput {
            throughput_round(rows, round).await;
        }
    }
}
