//! Throughput of `server_kit::serve` against a plain tonic server, same run.
//!
//! Both serve `echo.v1.Echo` on `127.0.0.1:0` with `TCP_NODELAY`; the server
//! kit runs with every limit set (global, per method, per caller, cluster share)
//! too high to refuse anything, plus health, in-flight counting and cancellable
//! connections. The same closed-loop load (64 concurrent `Say` calls over 4
//! HTTP/2 connections) runs against each, back to back, in 10 rounds of 1 s
//! (alternating which goes first); the median of the per-round ratios is the
//! kit's throughput relative to plain tonic (target ≥ 0.97). Pairing adjacent
//! runs keeps the ratio steady when other work on the machine comes and goes.
//!
//! `cargo bench --bench server_kit` (a `harness = false` binary). Loopback
//! only; bounded to `ROUNDS` rounds of `ROUND` each per server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc_cluster::echo::{EchoClient, EchoService, SayRequest};
use grpc_cluster::server::{RateLimitConfig, ServeBuilder, ServerConfig, Serving, ShutdownConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Channel;

const ROUNDS: usize = 10;
const ROUND: Duration = Duration::from_secs(1);
const WARM_UP: Duration = Duration::from_millis(300);
const CONNECTIONS: usize = 4;
const CONCURRENCY: usize = 64;
/// High enough never to refuse a call in a round.
const HUGE: u32 = 100_000_000;

/// A plain tonic server: no layers, no health.
async fn plain_server() -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoService::new("plain").into_server())
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    (addr, stop)
}

/// The same service through the server kit, every limit on and never reached.
async fn kit_server() -> Serving {
    let limits = RateLimitConfig::default()
        .with_rps(HUGE)
        .with_method("/echo.v1.Echo/Say", HUGE, 0)
        .with_caller_rps(HUGE)
        .with_cluster_rps(HUGE);
    let config = ServerConfig::default()
        .with_listen("127.0.0.1:0")
        .with_service("echo")
        .with_rate_limit(limits)
        .with_shutdown(ShutdownConfig::default().with_lame_duck(Duration::ZERO));
    ServeBuilder::new(config)
        .add_service(EchoService::new("kit").into_server())
        .signals(false)
        .start()
        .await
        .expect("server kit starts")
}

/// Runs the closed-loop load against `addr` for `duration`; calls per second.
async fn load(addr: SocketAddr, duration: Duration) -> f64 {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect");
        channels.push(channel);
    }
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..CONCURRENCY {
        let mut client = EchoClient::new(channels[i % CONNECTIONS].clone());
        let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let request = SayRequest {
                    message: "bench".into(),
                };
                match client.say(request).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    let before = done.load(Ordering::Relaxed);
    let started = Instant::now();
    // The measurement window itself.
    tokio::time::sleep(duration).await;
    let calls = done.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let failed = failed.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "no call may fail (or be refused) in the bench");
    calls as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs benches once in test mode: keep that quick.
    let quick = std::env::args().any(|a| a == "--test");
    let (rounds, round) = if quick {
        (1, Duration::from_millis(200))
    } else {
        (ROUNDS, ROUND)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (plain_addr, stop_plain) = plain_server().await;
        let kit = kit_server().await;
        let kit_addr = kit.local_addr();
        let (mut plain, mut served, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..rounds {
            // Alternate which goes first, so drift hits both alike.
            let (p, s) = if i % 2 == 0 {
                let p = load(plain_addr, round).await;
                (p, load(kit_addr, round).await)
            } else {
                let s = load(kit_addr, round).await;
                (load(plain_addr, round).await, s)
            };
            println!(
                "round {}: plain tonic {:>8.0} calls/s, server_kit::serve {:>8.0} calls/s, ratio {:.3}",
                i + 1,
                p,
                s,
                s / p
            );
            plain.push(p);
            served.push(s);
            ratios.push(s / p);
        }
        let (p, s) = (median(plain), median(served));
        println!("medians: plain tonic {p:.0} calls/s, server_kit::serve {s:.0} calls/s");
        println!(
            "throughput ratio server_kit::serve / plain tonic: {:.3} (median of {rounds} paired rounds; target >= 0.97)",
            median(ratios)
        );
        kit.handle().shutdown();
        let report = kit.wait().await.expect("clean shutdown");
        println!("{report}");
        let _ = stop_plain.send(());
    });
}
