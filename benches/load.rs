//! The load harness: grpc-cluster against raw tonic and tonic's own balancer,
//! in one run, against the same servers. Absolute times on shared machines
//! drift; the ratios between rows measured side by side are what to read.
//!
//! Run: `cargo bench --bench load` (under two minutes on 2 cores, once built). It prints
//! one markdown table per section and a summary of the targets.
//!
//! | section | what |
//! |---|---|
//! | `unary` | raw tonic generic unary vs `Call` failfast/failover, 1 node: p50/p99 at concurrency 1, calls/s at 64 |
//! | `balance` | tonic `Channel::balance_list` vs `round_robin` and `least_request`, 3 nodes: calls/s at 64, per-node share |
//! | `broadcast` | `Broadcast` to 8 nodes vs one `Call` (and 8 raw tonic calls joined): p50/p99 at concurrency 1 |
//! | `propagation` | 100 registrations: `Registrar` start → the client's picker lists the node; `deregister` → it no longer does |
//! | `memory` | RSS of a client process watching a service of 10,000 nodes (a child process of this one) |
//! | `kit` | plain tonic server vs `server_kit::serve`, limits never refusing: calls/s (`support/server_kit.rs`) |
//!
//! Method: every row is measured once per round, and the rows of a section
//! take turns — in blocks of 10 calls for latency (a random order per turn),
//! chunk by chunk for throughput (the order rotating) — so that all of them
//! meet the same background load. Every row of the unary section has a
//! connection of its own. Each
//! value is the median over rounds, shown with its range over rounds; each ratio
//! is the median of the per-round ratios.
//!
//! Environment: `LOAD_SECTIONS=unary,balance,...` runs only those (default
//! all); `LOAD_ROUNDS=N` rounds of the unary, balance and broadcast sections
//! (default 20); `LOAD_KIT_ROUNDS=N` paired rounds of the kit section (default
//! 40); `LOAD_SERVER_THREADS=N` worker threads of the echo servers' runtime
//! (default 1). `LOAD_PROFILE=failfast` (or `failfast-send`, `raw`, `raw-headers`,
//! `round_robin`, `least_request`, `balance_list`; `:c1` appended for
//! concurrency 1) only runs that client's 100,000 calls, for a profiler
//! (`perf record -e cpu-clock --call-graph dwarf`, built with
//! `CARGO_PROFILE_BENCH_DEBUG=true`).
//!
//! Threads: the 8 echo servers (plain tonic, `EchoService`) share one tokio
//! runtime of `LOAD_SERVER_THREADS` workers; every client (raw tonic, tonic's
//! balancer, the cluster client and its pickers and connections) runs on the
//! one actix `System` thread, so all of them pay the same single-threaded
//! runtime. etcd is a private process. The kit section builds its own 2-worker
//! runtime carrying its servers and load, after the other sections are done.
//! The memory section re-runs this binary as a child, so nothing else the run
//! allocated is counted. Loopback only; every section is bounded in calls and
//! time.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server_kit.rs"]
mod kit;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cluster_client::{
    Balancer, Broadcast, Call, CallOptions, ClientConfig, ClientHandle, ClusterClient, Completion,
    GetHandle, ServiceStatus, Strategy,
};
use futures_util::stream::{self, StreamExt};
use grpc_cluster::echo::{EchoService, SayReply, SayRequest, SAY};
use registry_actor::etcd_client::{self, Txn, TxnOp};
use registry_actor::testing::EtcdServer;
use registry_actor::{Node, Registrar, RegistryConfig};
use tonic::transport::{Channel, Endpoint};

/// Calls per row and round of a latency measurement (concurrency 1).
const LATENCY_CALLS: usize = 1_000;
/// Sequential calls a row makes per turn before the next row's turn: a client
/// in use, whose code and data are in the caches, as an app's would be. Call
/// by call, each row would mostly measure the cache misses the previous row
/// left, which favours whichever rows share the most code.
const LATENCY_BLOCK: usize = 10;
/// Calls per row and round of a throughput measurement.
const THROUGHPUT_CALLS: usize = 10_000;
/// Chunks a row's calls of one round are cut into, to take turns with the others.
const CHUNKS: usize = 5;
/// Calls in flight at once in a throughput measurement.
const CONCURRENCY: usize = 64;
/// Servers started (the broadcast section uses them all).
const SERVERS: usize = 8;
/// Nodes of the balance section.
const BALANCE_NODES: usize = 3;
/// Registrations (each followed by its deregistration) of the propagation section.
const PROPAGATION_EVENTS: usize = 100;
/// Static nodes the propagation service keeps, so one node leaving stays far
/// below the client's panic threshold (50 % of the nodes at once).
const PROPAGATION_BASE: usize = 10;
/// How often the propagation section asks the client for its node set.
const POLL: Duration = Duration::from_millis(1);
/// Nodes of the memory section's service.
const MEMORY_NODES: usize = 10_000;
/// Puts per etcd transaction when writing them (etcd's default limit is 128).
const TXN_OPS: usize = 100;
/// Longest wait for a client to see a node set.
const DISCOVERY_DEADLINE: Duration = Duration::from_secs(60);
/// Set in the memory section's child process: the etcd endpoint to watch.
const MEMORY_CHILD: &str = "LOAD_MEMORY_CHILD";

// ---------------------------------------------------------------------------
// Settings and small statistics.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Unary,
    Balance,
    Broadcast,
    Propagation,
    Memory,
    Kit,
}

impl Section {
    const ALL: [Self; 6] = [
        Self::Unary,
        Self::Balance,
        Self::Broadcast,
        Self::Propagation,
        Self::Memory,
        Self::Kit,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::Balance => "balance",
            Self::Broadcast => "broadcast",
            Self::Propagation => "propagation",
            Self::Memory => "memory",
            Self::Kit => "kit",
        }
    }
}

struct Settings {
    sections: Vec<Section>,
    rounds: usize,
    kit_rounds: usize,
    server_threads: usize,
}

impl Settings {
    fn from_env() -> Self {
        let number = |key: &str, default: usize| {
            std::env::var(key)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let sections = match std::env::var("LOAD_SECTIONS") {
            Ok(list) if !list.trim().is_empty() => {
                let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
                for w in &wanted {
                    assert!(
                        Section::ALL.iter().any(|s| s.name() == *w),
                        "LOAD_SECTIONS: unknown section `{w}`; expected some of {:?}",
                        Section::ALL.map(Section::name)
                    );
                }
                Section::ALL
                    .into_iter()
                    .filter(|s| wanted.contains(&s.name()))
                    .collect()
            }
            _ => Section::ALL.to_vec(),
        };
        Self {
            sections,
            rounds: number("LOAD_ROUNDS", 20),
            kit_rounds: number("LOAD_KIT_ROUNDS", kit::ROUNDS),
            server_threads: number("LOAD_SERVER_THREADS", 1),
        }
    }

    fn runs(&self, section: Section) -> bool {
        self.sections.contains(&section)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `min–max` of a series, for how much the rounds disagreed.
fn spread(v: &[f64], digits: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.digits$}–{max:.digits$}")
}

fn ratios(values: &[f64], base: &[f64]) -> Vec<f64> {
    values.iter().zip(base).map(|(v, b)| v / b).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One line of the summary: a target and whether this run met it.
struct Target {
    what: String,
    measured: String,
    goal: String,
    holds: bool,
}

impl Target {
    /// `measured` against an upper bound (`max = true`) or a lower one.
    fn ratio(what: &str, measured: f64, goal: f64, max: bool) -> Self {
        let holds = if max {
            measured <= goal
        } else {
            measured >= goal
        };
        Self {
            what: what.to_owned(),
            measured: format!("{measured:.3}"),
            goal: format!("{} {goal}", if max { "≤" } else { "≥" }),
            holds,
        }
    }
}

#[derive(Default)]
struct Report {
    sections: Vec<String>,
    targets: Vec<Target>,
}

// ---------------------------------------------------------------------------
// Servers, registrations and clients.

/// Echo servers (plain tonic, each answering its node id `n{i}`) on a runtime
/// of their own.
struct Servers {
    addrs: Vec<SocketAddr>,
    _runtime: tokio::runtime::Runtime,
}

fn start_servers(n: usize, threads: usize) -> Servers {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("echo-server")
        .enable_all()
        .build()
        .expect("server runtime");
    let addrs = (0..n)
        .map(|i| {
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                let service = EchoService::new(format!("n{i}")).into_server();
                tokio::spawn(async move {
                    let incoming = stream::unfold(listener, |l| async move {
                        let next = l.accept().await.map(|(s, _)| {
                            let _ = s.set_nodelay(true);
                            s
                        });
                        Some((next, l))
                    });
                    let _ = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming(incoming)
                        .await;
                });
                addr
            })
        })
        .collect();
    Servers {
        addrs,
        _runtime: runtime,
    }
}

/// Writes `nodes` as static registrations (no lease, as `etcdctl put` would),
/// in transactions of [`TXN_OPS`] puts.
async fn put_static(etcd: &mut etcd_client::Client, prefix: &str, nodes: &[Node]) {
    for chunk in nodes.chunks(TXN_OPS) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|n| TxnOp::put(n.key(prefix), n.encode(), None))
            .collect();
        etcd.txn(Txn::new().and_then(ops)).await.expect("etcd txn");
    }
}

fn echo_nodes(service: &str, addrs: &[SocketAddr]) -> Vec<Node> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Node::new(format!("n{i}"), service, a.to_string()).expect("node"))
        .collect()
}

/// Waits until `client` lists `count` nodes of `service`; the wait's length.
async fn wait_listed(client: &Addr<ClusterClient>, service: &str, count: usize) -> Duration {
    let started = Instant::now();
    while started.elapsed() < DISCOVERY_DEADLINE {
        if let Ok(Ok(s)) = client.send(ServiceStatus(service.into())).await {
            if s.listed == count && s.nodes.len() == count {
                return started.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cluster client did not list {count} nodes of `{service}`");
}

async fn cluster_client(registry: &RegistryConfig, config: ClientConfig) -> Addr<ClusterClient> {
    ClusterClient::connect(registry, config)
        .await
        .expect("cluster client")
}

async fn raw_channel(addr: SocketAddr) -> Channel {
    endpoint(addr).connect().await.expect("connect")
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .tcp_nodelay(true)
}

// ---------------------------------------------------------------------------
// The ways of making a call, all measured alike.

/// A request id as random as the client's, without a dependency on `rand`.
fn rand_id(i: usize) -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(i);
    (u128::from(h.finish()) << 64) | u128::from(h.finish().rotate_left(17))
}

/// One way of making a call. `call` answers the id of the node that answered
/// (empty for a fan-out), or `None` when the call failed.
#[derive(Clone)]
enum Caller {
    /// Raw tonic generic unary on a channel (one node, or `balance_list`); with
    /// `true`, it also sends what every cluster call carries: a `grpc-timeout`
    /// and an `x-request-id`.
    Raw(Channel, bool),
    /// `Call` of `Say` with a strategy.
    Cluster(Via, &'static str, Strategy),
    /// `Broadcast` of `Say` to a service of this many nodes, completion `all`.
    Broadcast(Via, &'static str, usize),
    /// The same call on every channel at once with raw tonic, joined: the floor
    /// a broadcast can reach.
    RawFanOut(Vec<Channel>),
}

/// How a `Call` reaches the cluster client.
#[derive(Clone)]
enum Via {
    /// `ClientHandle::call`: the strategy runs in the calling task.
    Handle(ClientHandle),
    /// `Addr::send` to the `ClusterClient` actor, which runs it in a task of its own.
    Actor(Addr<ClusterClient>),
}

impl Via {
    async fn handle(client: &Addr<ClusterClient>) -> Self {
        Self::Handle(client.send(GetHandle).await.expect("client alive"))
    }
}

async fn raw_call(channel: &Channel, headers: bool, i: usize) -> Option<String> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.ok()?;
    let codec = tonic_prost::ProstCodec::<SayRequest, SayReply>::default();
    let mut request = tonic::Request::new(SayRequest {
        message: format!("m{i}"),
    });
    if headers {
        // As the cluster client sends them: the id never indexed by HPACK.
        request.set_timeout(Duration::from_secs(5));
        let id: u128 = rand_id(i);
        let mut id: tonic::metadata::MetadataValue<_> =
            format!("{id:032x}").parse().expect("ascii");
        id.set_sensitive(true);
        request.metadata_mut().insert("x-request-id", id);
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

impl Caller {
    async fn call(&self, i: usize) -> Option<String> {
        let request = || SayRequest {
            message: format!("m{i}"),
        };
        match self {
            Self::Raw(channel, headers) => raw_call(channel, *headers, i).await,
            Self::Cluster(client, service, strategy) => {
                let call = Call::new(*service, SAY, request())
                    .with_options(CallOptions::new().with_strategy(*strategy));
                let reply = match client {
                    Via::Handle(handle) => handle.call(call).await.ok(),
                    Via::Actor(addr) => addr.send(call).await.ok().and_then(Result::ok),
                };
                reply.map(|r| r.message.node_id)
            }
            Self::Broadcast(client, service, nodes) => {
                let call =
                    Broadcast::new(*service, SAY, request()).with_completion(Completion::All);
                let reply = match client {
                    Via::Handle(handle) => handle.broadcast(call).await.ok(),
                    Via::Actor(addr) => addr.send(call).await.ok().and_then(Result::ok),
                };
                reply
                    .filter(|r| r.successes() == *nodes)
                    .map(|_| String::new())
            }
            Self::RawFanOut(channels) => {
                let calls = channels.iter().map(|c| raw_call(c, false, i));
                let answers = futures_util::future::join_all(calls).await;
                answers.iter().all(Option::is_some).then(String::new)
            }
        }
    }
}

/// One row of a table: the measurements of every round, in order.
struct Row {
    name: &'static str,
    caller: Caller,
    p50: Vec<f64>,
    p99: Vec<f64>,
    rps: Vec<f64>,
    shares: BTreeMap<String, u64>,
}

impl Row {
    fn new(name: &'static str, caller: Caller) -> Self {
        Self {
            name,
            caller,
            p50: Vec::new(),
            p99: Vec::new(),
            rps: Vec::new(),
            shares: BTreeMap::new(),
        }
    }

    fn push_latency(&mut self, mut lat: Vec<Duration>) {
        lat.sort();
        self.p50.push(percentile(&lat, 0.5).as_secs_f64() * 1e6);
        self.p99.push(percentile(&lat, 0.99).as_secs_f64() * 1e6);
    }

    /// Runs `calls` calls at concurrency [`CONCURRENCY`]; counts who answered.
    /// The time they took.
    async fn run_chunk(&mut self, calls: usize) -> Duration {
        let caller = &self.caller;
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
        assert!(
            !shares.contains_key("failed"),
            "{}: calls failed: {shares:?}",
            self.name
        );
        for (node, n) in shares {
            *self.shares.entry(node).or_default() += n;
        }
        elapsed
    }

    fn share_text(&self) -> String {
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
async fn latency_round(rows: &mut [Row], round: usize) {
    let n = rows.len();
    let mut samples = vec![Vec::with_capacity(LATENCY_CALLS); n];
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
            for b in 0..LATENCY_BLOCK {
                let i = turn * LATENCY_BLOCK + b;
                let t = Instant::now();
                let ok = rows[j].caller.call(i).await.is_some();
                samples[j].push(t.elapsed());
                assert!(ok, "{}: a call failed", rows[j].name);
            }
        }
    }
    for (row, lat) in rows.iter_mut().zip(samples) {
        row.push_latency(lat);
    }
}

/// Throughput at concurrency [`CONCURRENCY`] of every row in one round:
/// [`THROUGHPUT_CALLS`] calls per row, in [`CHUNKS`] chunks, the rows taking
/// turns chunk by chunk (the order rotating).
async fn throughput_round(rows: &mut [Row], round: usize) {
    let n = rows.len();
    let mut took = vec![Duration::ZERO; n];
    for c in 0..CHUNKS {
        for k in 0..n {
            let j = (k + c + round) % n;
            took[j] += rows[j].run_chunk(THROUGHPUT_CALLS / CHUNKS).await;
        }
    }
    for (row, took) in rows.iter_mut().zip(took) {
        row.rps.push(THROUGHPUT_CALLS as f64 / took.as_secs_f64());
    }
}

/// Measures every row once per round, latency then throughput, the rows
/// taking turns block by block, then chunk by chunk.
async fn interleave(rows: &mut [Row], rounds: usize, section: &str, latency: bool, rps: bool) {
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
        if latency {
            latency_round(rows, round).await;
        }
        if rps {
            throughput_round(rows, round).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Sections.

/// A client of its own for one row, its node set listed.
async fn row_client(registry: &RegistryConfig) -> Addr<ClusterClient> {
    let client = cluster_client(registry, ClientConfig::default()).await;
    wait_listed(&client, "echo", 1).await;
    client
}

async fn unary(report: &mut Report, rounds: usize, addr: SocketAddr, registry: &RegistryConfig) {
    // Every row has a connection of its own: a row whose call follows a call
    // on the same connection would find it warm, and look faster than it is.
    let mut rows = [
        Row::new(
            "raw tonic generic unary",
            Caller::Raw(raw_channel(addr).await, false),
        ),
        Row::new(
            "raw tonic + grpc-timeout + x-request-id",
            Caller::Raw(raw_channel(addr).await, true),
        ),
        Row::new(
            "`Call` failfast, `ClientHandle::call`",
            Caller::Cluster(
                Via::handle(&row_client(registry).await).await,
                "echo",
                Strategy::Failfast,
            ),
        ),
        Row::new(
            "`Call` failover, `ClientHandle::call`",
            Caller::Cluster(
                Via::handle(&row_client(registry).await).await,
                "echo",
                Strategy::Failover,
            ),
        ),
        Row::new(
            "`Call` failfast, `Addr::send` to the actor",
            Caller::Cluster(
                Via::Actor(row_client(registry).await),
                "echo",
                Strategy::Failfast,
            ),
        ),
    ];
    interleave(&mut rows, rounds, "unary", true, true).await;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Unary call, 1 node: raw tonic vs the cluster client\n\n\
         Per row and round: {LATENCY_CALLS} sequential calls (c=1, the rows taking turns in \
         blocks of {LATENCY_BLOCK}, in a random order per turn) and {THROUGHPUT_CALLS} calls at \
         c={CONCURRENCY} (in {CHUNKS} chunks, the rows taking turns chunk by chunk); every row \
         on a connection of its own; {rounds} rounds. Medians over \
         rounds, with the range over rounds in brackets; a ratio is the median of the per-round \
         ratios to raw tonic.\n"
    );
    let _ = writeln!(
        out,
        "| client | p50 µs (c=1) | p99 µs (c=1) | calls/s (c={CONCURRENCY}) | p50 ratio | throughput ratio |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let (base_p50, base_rps) = (rows[0].p50.clone(), rows[0].rps.clone());
    for row in &rows {
        let p50r = ratios(&row.p50, &base_p50);
        let rpsr = ratios(&row.rps, &base_rps);
        let _ = writeln!(
            out,
            "| {} | {:.1} ({}) | {:.1} | {:.0} ({}) | {:.3} ({}) | {:.3} ({}) |",
            row.name,
            median(&row.p50),
            spread(&row.p50, 0),
            median(&row.p99),
            median(&row.rps),
            spread(&row.rps, 0),
            median(&p50r),
            spread(&p50r, 2),
            median(&rpsr),
            spread(&rpsr, 2),
        );
    }
    let (md_p50, md_rps) = (&rows[1].p50, &rows[1].rps);
    let _ = writeln!(
        out,
        "\nAgainst raw tonic with the same two headers (what the client itself adds):\n"
    );
    for row in &rows[2..] {
        let _ = writeln!(
            out,
            "* {}: p50 {:.3}, throughput {:.3}",
            row.name,
            median(&ratios(&row.p50, md_p50)),
            median(&ratios(&row.rps, md_rps)),
        );
    }
    for row in &rows[2..] {
        report.targets.push(Target::ratio(
            &format!("{} / raw p50", row.name),
            median(&ratios(&row.p50, &base_p50)),
            1.05,
            true,
        ));
        report.targets.push(Target::ratio(
            &format!("{} / raw throughput", row.name),
            median(&ratios(&row.rps, &base_rps)),
            0.95,
            false,
        ));
    }
    report.sections.push(out);
}

async fn balance(
    report: &mut Report,
    rounds: usize,
    addrs: &[SocketAddr],
    rr: &Addr<ClusterClient>,
    lr: &Addr<ClusterClient>,
) {
    let balanced = Channel::balance_list(addrs.iter().map(|a| endpoint(*a)));
    let mut rows = [
        Row::new(
            "tonic `Channel::balance_list`",
            Caller::Raw(balanced, false),
        ),
        Row::new(
            "`Call` failfast, round_robin",
            Caller::Cluster(Via::handle(rr).await, "echo3", Strategy::Failfast),
        ),
        Row::new(
            "`Call` failfast, least_request",
            Caller::Cluster(Via::handle(lr).await, "echo3", Strategy::Failfast),
        ),
    ];
    interleave(&mut rows, rounds, "balance", false, true).await;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Balancing over {} nodes: tonic's balancer vs the cluster client\n\n\
         {THROUGHPUT_CALLS} calls at c={CONCURRENCY} per row and round (in {CHUNKS} chunks, the \
         rows taking turns chunk by chunk); {rounds} rounds. Medians (range); ratio = median of the per-round ratios to \
         `balance_list`. Share: which node answered, over all rounds.\n",
        addrs.len()
    );
    let _ = writeln!(
        out,
        "| client | calls/s (c={CONCURRENCY}) | throughput ratio | per-node share |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let base = rows[0].rps.clone();
    for row in &rows {
        let r = ratios(&row.rps, &base);
        let _ = writeln!(
            out,
            "| {} | {:.0} ({}) | {:.3} ({}) | {} |",
            row.name,
            median(&row.rps),
            spread(&row.rps, 0),
            median(&r),
            spread(&r, 2),
            row.share_text()
        );
    }
    report.targets.push(Target::ratio(
        "round_robin / balance_list throughput",
        median(&ratios(&rows[1].rps, &base)),
        1.0,
        false,
    ));
    report.sections.push(out);
}

async fn broadcast(
    report: &mut Report,
    rounds: usize,
    addrs: &[SocketAddr],
    client: &Addr<ClusterClient>,
) {
    let mut channels = Vec::new();
    for a in addrs {
        channels.push(raw_channel(*a).await);
    }
    let n = addrs.len();
    let mut rows = [
        Row::new(
            "one `Call` (failfast, round_robin over the 8)",
            Caller::Cluster(Via::handle(client).await, "echo8", Strategy::Failfast),
        ),
        Row::new(
            "`Broadcast` to 8 nodes, completion all",
            Caller::Broadcast(Via::handle(client).await, "echo8", n),
        ),
        Row::new(
            "raw tonic: one call on each of 8 channels, joined",
            Caller::RawFanOut(channels),
        ),
    ];
    interleave(&mut rows, rounds, "broadcast", true, false).await;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Broadcast to {n} nodes vs one call\n\n\
         {LATENCY_CALLS} sequential calls (c=1) per row and round, the rows taking turns in \
         blocks of {LATENCY_BLOCK}; {rounds} rounds. Medians (range); ratio = median of the per-round p50 ratios \
         to one `Call`. The raw row is the floor on this machine: the same 8 calls with tonic \
         alone.\n"
    );
    let _ = writeln!(out, "| call | p50 µs | p99 µs | p50 ratio |");
    let _ = writeln!(out, "|---|---|---|---|");
    let base = rows[0].p50.clone();
    for row in &rows {
        let r = ratios(&row.p50, &base);
        let _ = writeln!(
            out,
            "| {} | {:.1} ({}) | {:.1} | {:.3} ({}) |",
            row.name,
            median(&row.p50),
            spread(&row.p50, 0),
            median(&row.p99),
            median(&r),
            spread(&r, 2),
        );
    }
    report.targets.push(Target::ratio(
        "broadcast(8) / one call p50",
        median(&ratios(&rows[1].p50, &base)),
        2.0,
        true,
    ));
    let floor = median(&ratios(&rows[1].p50, &rows[2].p50));
    let _ = writeln!(
        out,
        "\n`Broadcast` / raw tonic fan-out p50: {floor:.3} (range {}).",
        spread(&ratios(&rows[1].p50, &rows[2].p50), 2)
    );
    report.sections.push(out);
}

/// Polls the client's node set of `service` every [`POLL`] until `seen` holds;
/// the time since `started`.
async fn poll_until(
    client: &Addr<ClusterClient>,
    service: &str,
    started: Instant,
    seen: impl Fn(&cluster_client::PickerStatus) -> bool,
) -> Duration {
    loop {
        if let Ok(Ok(status)) = client.send(ServiceStatus(service.into())).await {
            if seen(&status) {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "propagation took more than 10 s"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn propagation(report: &mut Report, etcd: &EtcdServer) {
    let registry = etcd.registry_config();
    let mut kv = registry_actor::connect(&registry).await.expect("etcd");
    let base: Vec<Node> = (0..PROPAGATION_BASE)
        .map(|i| {
            Node::new(
                format!("base{i}"),
                "prop",
                format!("127.0.0.1:{}", 9_000 + i),
            )
            .expect("node")
        })
        .collect();
    put_static(&mut kv, registry.prefix(), &base).await;
    let client = cluster_client(&registry, ClientConfig::default()).await;
    wait_listed(&client, "prop", PROPAGATION_BASE).await;

    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for i in 0..PROPAGATION_EVENTS {
        if i % 25 == 0 {
            eprintln!("[load] propagation: event {}/{PROPAGATION_EVENTS}", i + 1);
        }
        let id = format!("p{i}");
        let node = Node::new(&id, "prop", format!("127.0.0.1:{}", 10_000 + i)).expect("node");
        // From just before the registrar starts (its lease grant and put) to the
        // first poll at which the client's picker has the node, pickable.
        let started = Instant::now();
        let registrar = Registrar::start(kv.clone(), node, &registry);
        added.push(
            poll_until(&client, "prop", started, |s| {
                s.node(&id).is_some_and(|n| !n.held && !n.ejected)
            })
            .await,
        );
        registrar
            .state_changes()
            .wait_for(|s| s.is_registered())
            .await
            .expect("registered");
        // From the deregistration (lease revoked) to the first poll at which the
        // picker no longer has it.
        let started = Instant::now();
        registrar.deregister().await.expect("deregister");
        removed.push(poll_until(&client, "prop", started, |s| s.node(&id).is_none()).await);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Discovery propagation\n\n\
         {PROPAGATION_EVENTS} registrations and deregistrations, one at a time, of a service \
         with {PROPAGATION_BASE} static nodes, through a private etcd (loopback). Measured to \
         the first poll of the client's picker (`ServiceStatus`, every {} ms) that lists the \
         node as pickable / no longer lists it: registry watch → `RegistryActor` → \
         `PickerActor` rebuild.\n",
        POLL.as_millis()
    );
    let _ = writeln!(out, "| event | n | p50 ms | p99 ms | max ms |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    let mut p99s = Vec::new();
    for (name, mut samples) in [
        ("`Registrar` start → first pick", added),
        ("`deregister` → last pick", removed),
    ] {
        samples.sort();
        let p99 = percentile(&samples, 0.99);
        p99s.push(ms(p99));
        let _ = writeln!(
            out,
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            samples.len(),
            ms(percentile(&samples, 0.5)),
            ms(p99),
            ms(samples[samples.len() - 1]),
        );
    }
    report.targets.push(Target {
        what: "propagation p99 (register; deregister)".into(),
        measured: format!("{:.1} ms; {:.1} ms", p99s[0], p99s[1]),
        goal: "≤ 100 ms".into(),
        holds: p99s.iter().all(|p| *p <= 100.0),
    });
    report.sections.push(out);
}

/// `VmRSS` (or another `Vm*` line) of this process, in KiB.
fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The memory section's child: a cluster client watching the `mem` service of
/// the etcd at `endpoint`, until it lists every node; prints one line for the
/// parent.
fn memory_child(endpoint: &str) {
    let at_start = vm_kib("VmRSS");
    System::new().block_on(async move {
        let before = vm_kib("VmRSS");
        let registry = RegistryConfig::default().with_endpoints([endpoint]);
        let client = cluster_client(&registry, ClientConfig::default()).await;
        let took = wait_listed(&client, "mem", MEMORY_NODES).await;
        let after = vm_kib("VmRSS");
        println!(
            "MEMORY start_kib={at_start} before_kib={before} after_kib={after} peak_kib={} list_ms={:.0}",
            vm_kib("VmHWM"),
            ms(took)
        );
    });
}

async fn memory(report: &mut Report, etcd: &EtcdServer) {
    let registry = etcd.registry_config();
    let mut kv = registry_actor::connect(&registry).await.expect("etcd");
    let nodes: Vec<Node> = (0..MEMORY_NODES)
        .map(|i| {
            Node::new(
                format!("mem-{i:05}"),
                "mem",
                format!("10.{}.{}.{}:50051", i >> 16, (i >> 8) & 255, i & 255),
            )
            .expect("node")
        })
        .collect();
    eprintln!("[load] memory: writing {MEMORY_NODES} node keys");
    let t = Instant::now();
    put_static(&mut kv, registry.prefix(), &nodes).await;
    let write = t.elapsed();
    eprintln!("[load] memory: starting the client process");
    let exe = std::env::current_exe().expect("current exe");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(exe)
            .arg("--bench")
            .env(MEMORY_CHILD, etcd.endpoint())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the memory child finishes within 120 s")
    .expect("the memory child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "memory child failed: {stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MEMORY "))
        .expect("the memory child's report");
    let field = |key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .expect("a field of the memory report")
    };
    let mib = |kib: f64| kib / 1024.0;
    let (before, after, peak) = (field("before_kib"), field("after_kib"), field("peak_kib"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Memory of a client watching {MEMORY_NODES} nodes\n\n\
         {MEMORY_NODES} static node keys written in transactions of {TXN_OPS} puts ({:.1} s); \
         then a fresh process starts an actix `System`, a `ClusterClient` (registry actor, \
         etcd watch) and its picker for the service (`ServiceStatus`), and waits until the \
         picker lists every node. `VmRSS` from `/proc/self/status`.\n",
        write.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| RSS at process start MiB | before the client MiB | with {MEMORY_NODES} nodes listed MiB | delta MiB | peak (VmHWM) MiB | time to list |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} ms |",
        mib(field("start_kib")),
        mib(before),
        mib(after),
        mib(after - before),
        mib(peak),
        field("list_ms"),
    );
    report.targets.push(Target {
        what: format!("RSS of a client watching {MEMORY_NODES} nodes"),
        measured: format!(
            "{:.1} MiB total ({:.1} MiB delta)",
            mib(after),
            mib(after - before)
        ),
        goal: "≤ 50 MB".into(),
        holds: after * 1024.0 <= 50e6,
    });
    report.sections.push(out);
}

fn kit_section(report: &mut Report, rounds: usize) {
    eprintln!("[load] kit: {rounds} paired rounds");
    let run = kit::run(rounds, kit::ROUND, false);
    eprintln!("[load] kit: {}", run.shutdown);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Server: plain tonic vs `server_kit::serve` (limits never refusing)\n\n\
         Closed loop of {} `Say` calls over 4 connections per server (kept across windows), \
         {} ms per server and round, {rounds} paired rounds (alternating which goes first), on \
         a runtime of {} worker threads carrying servers and load; ratio = median of the \
         per-round ratios.\n",
        kit::CONCURRENCY,
        kit::ROUND.as_millis(),
        kit::WORKER_THREADS
    );
    let _ = writeln!(out, "| server | calls/s | ratio |");
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(
        out,
        "| plain tonic | {:.0} ({}) | 1.000 |",
        median(&run.plain),
        spread(&run.plain, 0)
    );
    let _ = writeln!(
        out,
        "| `server_kit::serve` | {:.0} ({}) | {:.3} ({}) |",
        median(&run.kit),
        spread(&run.kit, 0),
        median(&run.ratios),
        spread(&run.ratios, 2)
    );
    report.targets.push(Target::ratio(
        "server_kit::serve / plain tonic throughput",
        median(&run.ratios),
        0.97,
        false,
    ));
    report.sections.push(out);
}

// ---------------------------------------------------------------------------

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// For a profiler: one client's calls alone, 100,000 at concurrency 64, or one
/// at a time with a `:c1` suffix (`failfast:c1`). To one node: `failfast` (the
/// cluster client), `raw`, `raw-headers` (tonic); to three: `round_robin`,
/// `least_request`, `balance_list`.
fn profile(which: &str) {
    let (name, sequential) = match which.strip_suffix(":c1") {
        Some(name) => (name, true),
        None => (which, false),
    };
    let servers = start_servers(BALANCE_NODES, 1);
    let addrs = servers.addrs.clone();
    System::new().block_on(async {
        let etcd = EtcdServer::start().await.expect("etcd");
        let registry = etcd.registry_config();
        let mut kv = registry_actor::connect(&registry).await.expect("etcd");
        let mut nodes = echo_nodes("echo", &addrs[..1]);
        nodes.extend(echo_nodes("echo3", &addrs));
        put_static(&mut kv, registry.prefix(), &nodes).await;
        let balancer = match name {
            "least_request" => Balancer::LeastRequest,
            _ => Balancer::RoundRobin,
        };
        let config = ClientConfig::default().with_balancer(balancer);
        let client = cluster_client(&registry, config).await;
        wait_listed(&client, "echo", 1).await;
        wait_listed(&client, "echo3", BALANCE_NODES).await;
        let caller = match name {
            "raw" => Caller::Raw(raw_channel(addrs[0]).await, false),
            "raw-headers" => Caller::Raw(raw_channel(addrs[0]).await, true),
            "balance_list" => Caller::Raw(
                Channel::balance_list(addrs.iter().map(|a| endpoint(*a))),
                false,
            ),
            "round_robin" | "least_request" => {
                Caller::Cluster(Via::handle(&client).await, "echo3", Strategy::Failfast)
            }
            "failfast-send" => Caller::Cluster(Via::Actor(client), "echo", Strategy::Failfast),
            _ => Caller::Cluster(Via::handle(&client).await, "echo", Strategy::Failfast),
        };
        let mut row = Row::new("profile", caller);
        if sequential {
            for _ in 0..(100_000 / LATENCY_CALLS) {
                latency_round(std::slice::from_mut(&mut row), 0).await;
            }
            println!("profile run ({which}): p50 {:?} µs", row.p50);
        } else {
            for _ in 0..(100_000 / THROUGHPUT_CALLS) {
                throughput_round(std::slice::from_mut(&mut row), 0).await;
            }
            println!("profile run ({which}): {:?} calls/s", row.rps);
        }
    });
    drop(servers);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("load: run with `cargo bench --bench load` to measure");
        return;
    }
    if let Ok(endpoint) = std::env::var(MEMORY_CHILD) {
        memory_child(&endpoint);
        return;
    }
    if let Ok(which) = std::env::var("LOAD_PROFILE") {
        profile(&which);
        return;
    }
    let settings = Settings::from_env();
    let started = Instant::now();
    let load_before = loadavg();
    let mut report = Report::default();
    let needs_etcd = settings.sections.iter().any(|s| *s != Section::Kit);
    if needs_etcd {
        let servers = start_servers(SERVERS, settings.server_threads);
        let addrs = servers.addrs.clone();
        System::new().block_on(async {
            let etcd = EtcdServer::start().await.expect("etcd");
            let registry = etcd.registry_config();
            let mut kv = registry_actor::connect(&registry).await.expect("etcd");
            let mut nodes = echo_nodes("echo", &addrs[..1]);
            nodes.extend(echo_nodes("echo3", &addrs[..BALANCE_NODES]));
            nodes.extend(echo_nodes("echo8", &addrs));
            put_static(&mut kv, registry.prefix(), &nodes).await;
            let rr = ClientConfig::default().with_balancer(Balancer::RoundRobin);
            let lr = ClientConfig::default().with_balancer(Balancer::LeastRequest);
            let (rr, lr) = (
                cluster_client(&registry, rr).await,
                cluster_client(&registry, lr).await,
            );
            for (service, n) in [("echo", 1), ("echo3", BALANCE_NODES), ("echo8", SERVERS)] {
                wait_listed(&rr, service, n).await;
            }
            wait_listed(&lr, "echo3", BALANCE_NODES).await;

            let rounds = settings.rounds;
            if settings.runs(Section::Unary) {
                unary(&mut report, rounds, addrs[0], &registry).await;
            }
            if settings.runs(Section::Balance) {
                balance(&mut report, rounds, &addrs[..BALANCE_NODES], &rr, &lr).await;
            }
            if settings.runs(Section::Broadcast) {
                broadcast(&mut report, rounds, &addrs, &rr).await;
            }
            if settings.runs(Section::Propagation) {
                propagation(&mut report, &etcd).await;
            }
            if settings.runs(Section::Memory) {
                memory(&mut report, &etcd).await;
            }
        });
        drop(servers);
    }
    if settings.runs(Section::Kit) {
        kit_section(&mut report, settings.kit_rounds);
    }
    if report.sections.is_empty() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!("# grpc-cluster load harness");
    println!();
    println!(
        "Sections: {}. {cores} cores; echo servers on {} worker thread(s), every client on the \
         actix System thread. Load average (1/5/15 min) {load_before} at the start, {} at the \
         end; {:.0} s in all.",
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
    for section in &report.sections {
        println!("{section}");
    }
    println!("## Targets\n");
    println!("| target | measured | goal | holds |");
    println!("|---|---|---|---|");
    for t in &report.targets {
        println!(
            "| {} | {} | {} | {} |",
            t.what,
            t.measured,
            t.goal,
            if t.holds { "yes" } else { "**no**" }
        );
    }
}
