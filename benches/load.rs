//! The load harness: grpc-cluster against raw tonic, in the same run, against
//! the same servers. Absolute times on shared machines drift; the ratios between
//! rows measured side by side are what to read.
//!
//! Run: `cargo bench --bench load` (about a minute). `LOAD_ROUNDS=N` sets the
//! interleaved rounds (default 3; the median is reported).
//!
//! Set-up: echo servers (plain tonic) on their own runtime thread; the clients
//! (raw tonic, and the cluster client) share one actix System thread, so both
//! pay the same single-threaded runtime. A private etcd holds the registrations.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use std::time::{Duration, Instant};

use actix::prelude::*;
use cluster_client::{Call, CallOptions, ClientConfig, ClusterClient, ServiceStatus, Strategy};
use futures_util::stream::{self, StreamExt};
use grpc_cluster::echo::{EchoService, SayReply, SayRequest, SAY};
use registry_actor::testing::EtcdServer;
use registry_actor::{Node, Registrar, RegistryActor, RegistryConfig};
use tonic::transport::Channel;

const LATENCY_CALLS: usize = 2_000;
const THROUGHPUT_CALLS: usize = 20_000;
const CONCURRENCY: usize = 64;

/// Echo servers on a runtime of their own (one worker thread).
struct Servers {
    addrs: Vec<SocketAddr>,
    _runtime: tokio::runtime::Runtime,
}

fn start_servers(n: usize) -> Servers {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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

/// A request id as random as the client's, without a dependency on `rand`.
fn rand_id(i: usize) -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(i);
    u128::from(h.finish()) << 64 | u128::from(h.finish().rotate_left(17))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[derive(Default, Clone)]
struct Row {
    p50: Vec<f64>,
    p99: Vec<f64>,
    rps: Vec<f64>,
}

/// One way of making a call, measured the same way as every other.
trait Caller: Clone + 'static {
    async fn call(&self, i: usize) -> bool;
}

/// Raw tonic; with `true`, it also sends what every cluster call carries: a
/// `grpc-timeout` and an `x-request-id`.
#[derive(Clone)]
struct Raw(Channel, bool);

impl Caller for Raw {
    async fn call(&self, i: usize) -> bool {
        let mut grpc = tonic::client::Grpc::new(self.0.clone());
        if grpc.ready().await.is_err() {
            return false;
        }
        let codec = tonic_prost::ProstCodec::<SayRequest, SayReply>::default();
        let mut request = tonic::Request::new(SayRequest {
            message: format!("m{i}"),
        });
        if self.1 {
            request.set_timeout(Duration::from_secs(5));
            let id: u128 = rand_id(i);
            request
                .metadata_mut()
                .insert("x-request-id", format!("{id:032x}").parse().expect("ascii"));
        }
        grpc.unary(
            request,
            http::uri::PathAndQuery::from_static("/echo.v1.Echo/Say"),
            codec,
        )
        .await
        .is_ok()
    }
}

#[derive(Clone)]
struct Cluster(Addr<ClusterClient>, Strategy);

impl Caller for Cluster {
    async fn call(&self, i: usize) -> bool {
        let call = Call::new(
            "echo",
            SAY,
            SayRequest {
                message: format!("m{i}"),
            },
        )
        .with_options(CallOptions::new().with_strategy(self.1));
        matches!(self.0.send(call).await, Ok(Ok(_)))
    }
}

async fn measure<C: Caller>(caller: &C, row: &mut Row) {
    // Latency at concurrency 1.
    let mut lat = Vec::with_capacity(LATENCY_CALLS);
    for i in 0..LATENCY_CALLS {
        let t = Instant::now();
        assert!(caller.call(i).await, "a benchmark call failed");
        lat.push(t.elapsed());
    }
    lat.sort();
    row.p50.push(percentile(&lat, 0.5).as_secs_f64() * 1e6);
    row.p99.push(percentile(&lat, 0.99).as_secs_f64() * 1e6);
    // Throughput at concurrency 64.
    let t = Instant::now();
    let ok = stream::iter(0..THROUGHPUT_CALLS)
        .map(|i| {
            let c = caller.clone();
            async move { c.call(i).await }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(ok, THROUGHPUT_CALLS, "benchmark calls failed");
    row.rps
        .push(THROUGHPUT_CALLS as f64 / t.elapsed().as_secs_f64());
}

async fn cluster_client(
    registry: &RegistryConfig,
    expect: usize,
    config: ClientConfig,
) -> Addr<ClusterClient> {
    let etcd = registry_actor::connect(registry).await.expect("etcd");
    let registry = RegistryActor::new(etcd, registry).start();
    let client = ClusterClient::new(registry, config)
        .expect("config")
        .start();
    for _ in 0..500 {
        if let Ok(Ok(s)) = client.send(ServiceStatus("echo".into())).await {
            if s.nodes.len() == expect {
                return client;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cluster client did not discover {expect} nodes");
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("load: run with `cargo bench --bench load` to measure");
        return;
    }
    let rounds: usize = std::env::var("LOAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let servers = start_servers(1);
    let addr = servers.addrs[0];
    System::new().block_on(async move {
        let etcd = EtcdServer::start().await.expect("etcd");
        let registry = etcd.registry_config();
        let client_etcd = registry_actor::connect(&registry).await.expect("etcd");
        let node = Node::new("n0", "echo", addr.to_string()).expect("node");
        let registrar = Registrar::start(client_etcd, node, &registry);
        registrar.state_changes().wait_for(|s| s.is_registered()).await.expect("registered");

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect");
        let raw = Raw(channel.clone(), false);
        let raw_md = Raw(channel, true);
        let cluster = cluster_client(&registry, 1, ClientConfig::default()).await;
        let failfast = Cluster(cluster.clone(), Strategy::Failfast);
        let failover = Cluster(cluster, Strategy::Failover);

        if std::env::var_os("LOAD_PROFILE").is_some() {
            // For a profiler: the cluster client's concurrency-64 loop alone.
            let mut row = Row::default();
            for _ in 0..5 {
                measure(&failfast, &mut row).await;
            }
            println!("profile run: {:?} calls/s", row.rps);
            return;
        }
        // Warm-up: connections, allocators, caches.
        for i in 0..500 {
            raw.call(i).await;
            failfast.call(i).await;
        }
        let (mut r_raw, mut r_ff, mut r_fo) = (Row::default(), Row::default(), Row::default());
        let mut r_md = Row::default();
        for round in 0..rounds {
            eprintln!("round {}/{rounds}", round + 1);
            measure(&raw, &mut r_raw).await;
            measure(&raw_md, &mut r_md).await;
            measure(&failfast, &mut r_ff).await;
            measure(&failover, &mut r_fo).await;
        }
        let raw_p50 = median(r_raw.p50.clone());
        let raw_rps = median(r_raw.rps.clone());
        println!();
        println!("## Unary call, 1 node: raw tonic vs cluster client ({rounds} interleaved rounds, medians)");
        println!();
        println!("| client | p50 µs (c=1) | p99 µs (c=1) | calls/s (c={CONCURRENCY}) | p50 ratio | throughput ratio |");
        println!("|---|---|---|---|---|---|");
        for (name, row) in [
            ("raw tonic generic unary", &r_raw),
            ("raw tonic + grpc-timeout + x-request-id", &r_md),
            ("Call failfast", &r_ff),
            ("Call failover", &r_fo),
        ] {
            let p50 = median(row.p50.clone());
            let rps = median(row.rps.clone());
            println!(
                "| {name} | {p50:.1} | {:.1} | {rps:.0} | {:.3} | {:.3} |",
                median(row.p99.clone()),
                p50 / raw_p50,
                rps / raw_rps
            );
        }
        drop(registrar);
        drop(etcd);
    });
    drop(servers);
}
