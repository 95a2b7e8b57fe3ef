//! Throughput of `server_kit::serve` against a plain tonic server, same run;
//! shared by `benches/server_kit.rs` (on its own) and `benches/load/` (as the
//! `server_kit` section of the load harness), which both include this file
//! with `#[path]`.
//!
//! Both serve `echo.v1.Echo` on `127.0.0.1:0` with `TCP_NODELAY`; the server
//! kit runs with every limit set (global, per method, per caller, cluster share)
//! too high to refuse anything, plus health, in-flight counting and cancellable
//! connections. The same closed-loop load (64 concurrent `Say` calls over 4
//! HTTP/2 connections per server, connected once and kept) runs against each,
//! back to back, in short windows: 40 rounds of 250 ms per server (after 50 ms
//! to fill the pipeline), alternating which goes first. The median of the
//! per-round ratios is the kit's throughput relative to plain tonic (target ≥
//! 0.97). Pairing adjacent short windows keeps the ratio steady when other work
//! on the machine comes and goes.
//!
//! With `shedding`, the same rounds compare the kit with `[server.shedding]`
//! off (the baseline) against on, its floor (`min_in_flight` 256) above the
//! load's 64 calls so that nothing is shed: the cost of the shedding's
//! bookkeeping at a load it admits whole (target ≥ 0.97).
//!
//! Servers and load share one tokio runtime of 2 worker threads, built here.
//! Loopback only; bounded to `rounds` rounds of `round` each per server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc_cluster::echo::{EchoClient, EchoService, SayRequest};
use grpc_cluster::server::{
    RateLimitConfig, ServeBuilder, ServerConfig, Serving, ShedConfig, ShutdownConfig,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Channel;

/// Paired rounds of a full run.
pub(crate) const ROUNDS: usize = 40;
/// The measured window of one server in one round.
pub(crate) const ROUND: Duration = Duration::from_millis(250);
/// Load before each window, to fill the pipeline.
const FILL: Duration = Duration::from_millis(50);
/// Load on each server before the first round: connections, allocators, caches.
const WARM_UP: Duration = Duration::from_millis(300);
const CONNECTIONS: usize = 4;
/// Calls in flight at once.
pub(crate) const CONCURRENCY: usize = 64;
/// Worker threads of the runtime carrying servers and load.
pub(crate) const WORKER_THREADS: usize = 2;
/// High enough never to refuse a call in a round.
const HUGE: u32 = 100_000_000;

/// What a run measured: one entry per round, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct KitRun {
    /// The baseline, calls/s: plain tonic, or the kit with shedding off.
    pub(crate) plain: Vec<f64>,
    /// `server_kit::serve` (with shedding on when comparing it), calls/s.
    pub(crate) kit: Vec<f64>,
    /// `kit / plain` of the same round.
    pub(crate) ratios: Vec<f64>,
    /// The kit's shutdown report after the run.
    pub(crate) shutdown: String,
}

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

/// The same service through the server kit, every limit on and never reached,
/// shedding as `shedding` says.
async fn kit_server(shedding: ShedConfig) -> Serving {
    let limits = RateLimitConfig::default()
        .with_rps(HUGE)
        .with_method("/echo.v1.Echo/Say", HUGE, 0)
        .with_caller_rps(HUGE)
        .with_cluster_rps(HUGE);
    let config = ServerConfig::default()
        .with_listen("127.0.0.1:0")
        .with_service("echo")
        .with_rate_limit(limits)
        .with_shedding(shedding)
        .with_shutdown(ShutdownConfig::default().with_lame_duck(Duration::ZERO));
    ServeBuilder::new(config)
        .add_service(EchoService::new("kit").into_server())
        .signals(false)
        .start()
        .await
        .expect("server kit starts")
}

/// The baseline server of a run: plain tonic, or the kit with shedding off.
enum Baseline {
    Plain(SocketAddr, oneshot::Sender<()>),
    Kit(Serving),
}

impl Baseline {
    async fn start(kit: bool) -> Self {
        match kit {
            true => Self::Kit(kit_server(ShedConfig::default()).await),
            false => {
                let (addr, stop) = plain_server().await;
                Self::Plain(addr, stop)
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Self::Plain(addr, _) => *addr,
            Self::Kit(serving) => serving.local_addr(),
        }
    }

    async fn stop(self) {
        match self {
            Self::Plain(_, stop) => {
                let _ = stop.send(());
            }
            Self::Kit(serving) => {
                serving.handle().shutdown();
                serving.wait().await.expect("clean shutdown");
            }
        }
    }
}

/// The runtime servers and load share.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A closed-loop load generator on one server: its connections, kept across
/// windows.
struct Load {
    channels: Vec<Channel>,
}

impl Load {
    async fn connect(addr: SocketAddr) -> Self {
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
        Self { channels }
    }

    /// Runs [`CONCURRENCY`] callers for `fill`, then measures `duration`;
    /// calls per second in the measured window.
    async fn run(&self, fill: Duration, duration: Duration) -> f64 {
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..CONCURRENCY {
            let mut client = EchoClient::new(self.channels[i % CONNECTIONS].clone());
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
        tokio::time::sleep(fill).await;
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
}

/// Runs `calls` calls (at least; [`CONCURRENCY`] at a time) against one
/// server alone, the kit (shedding off) or plain tonic, and stops: the
/// profile of one server's work per call, for `perf` or callgrind, where a
/// timed window would measure the profiler. Two runs of different counts
/// give the cost of a call by difference.
pub(crate) fn profile(kit: bool, calls: u64) {
    runtime().block_on(async {
        let server = Baseline::start(kit).await;
        let addr = server.addr();
        let load = Load::connect(addr).await;
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..CONCURRENCY {
            let mut client = EchoClient::new(load.channels[i % CONNECTIONS].clone());
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                while done.fetch_add(1, Ordering::Relaxed) < calls {
                    let request = SayRequest {
                        message: "bench".into(),
                    };
                    client
                        .say(request)
                        .await
                        .expect("no call fails in the bench");
                }
            }));
        }
        for task in tasks {
            task.await.expect("caller");
        }
        server.stop().await;
    });
}

/// Runs `rounds` paired rounds of `round` each on a runtime of its own (call it
/// outside any other runtime); prints each round when `verbose`. Compares
/// plain tonic with the kit, or with `shedding` the kit with shedding off and
/// on.
pub(crate) fn run(rounds: usize, round: Duration, verbose: bool, shedding: bool) -> KitRun {
    runtime().block_on(async {
        let base = Baseline::start(shedding).await;
        let plain_addr = base.addr();
        let kit = kit_server(match shedding {
            true => ShedConfig::default()
                .with_enabled(true)
                .with_min_in_flight(256),
            false => ShedConfig::default(),
        })
        .await;
        let names = match shedding {
            true => ("shedding off", "shedding on"),
            false => ("plain tonic", "server_kit::serve"),
        };
        let kit_addr = kit.local_addr();
        let (plain, served) = (
            Load::connect(plain_addr).await,
            Load::connect(kit_addr).await,
        );
        plain.run(WARM_UP, Duration::ZERO).await;
        served.run(WARM_UP, Duration::ZERO).await;
        let mut run = KitRun::default();
        for i in 0..rounds {
            // Alternate which goes first, so drift hits both alike.
            let (p, s) = if i % 2 == 0 {
                let p = plain.run(FILL, round).await;
                (p, served.run(FILL, round).await)
            } else {
                let s = served.run(FILL, round).await;
                (plain.run(FILL, round).await, s)
            };
            if verbose {
                println!(
                    "round {}: {} {:>8.0} calls/s, {} {:>8.0} calls/s, ratio {:.3}",
                    i + 1,
                    names.0,
                    p,
                    names.1,
                    s,
                    s / p
                );
            }
            run.plain.push(p);
            run.kit.push(s);
            run.ratios.push(s / p);
        }
        kit.handle().shutdown();
        let report = kit.wait().await.expect("clean shutdown");
        run.shutdown = report.to_string();
        base.stop().await;
        run
    })
}
