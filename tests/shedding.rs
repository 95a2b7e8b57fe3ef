//! Adaptive load shedding end to end: a real server-kit server whose `Slow`
//! handler works on [`CAPACITY`] calls at once, driven open-loop at ten times
//! what it can serve, with `[server.shedding]` on and then off. Bounded: each
//! run sends [`LOAD_CALLS`] calls over [`LOAD_SECS`] seconds, each given
//! [`DEADLINE`].

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc_cluster::echo::{EchoClient, EchoService, Gauge, SlowRequest};
use grpc_cluster::metrics::MetricsConfig;
use grpc_cluster::server::{RateLimitConfig, ServeBuilder, Serving, ShedConfig};
use registry_actor::metrics::SERVER_SHED;
use support::exposition::{free_port, scrape, Exposition};
use support::init_tracing;
use support::server_kit::{channel, echo_config};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const SLOW: &str = "/echo.v1.Echo/Slow";
/// `Slow` calls the handler works on at once; the rest queue inside it.
const CAPACITY: usize = 4;
/// How long each `Slow` call works: the server serves CAPACITY / DELAY = 40
/// calls per second.
const DELAY: Duration = Duration::from_millis(100);
/// Ten times the capacity.
const LOAD_RPS: u32 = 400;
const LOAD_SECS: u32 = 3;
const LOAD_CALLS: u32 = LOAD_RPS * LOAD_SECS;
/// Every call's deadline, ten times its work.
const DEADLINE: Duration = Duration::from_secs(1);
/// Calls inside the handler at once that a shedding server stays under: its
/// limit settles at 1.5 × CAPACITY (`headroom_percent` 50).
const IN_FLIGHT_BOUND: u64 = 4 * CAPACITY as u64;

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Answered, after this long.
    Ok(Duration),
    /// Shed: `RESOURCE_EXHAUSTED` with a positive `grpc-retry-pushback-ms`.
    Shed,
    /// No answer within [`DEADLINE`].
    TimedOut,
    /// Any other answer.
    Failed(Code),
}

fn shedding() -> ShedConfig {
    ShedConfig::default()
        .with_enabled(true)
        .with_window(Duration::from_secs(2))
        .with_buckets(4)
        .with_min_in_flight(2)
        .with_headroom_percent(50)
        .with_min_rtt_window(Duration::from_secs(10))
}

/// A server without any token-bucket limit whose `Slow` runs CAPACITY calls at
/// once, counted in the returned gauge.
async fn start(shed: ShedConfig) -> (Serving, Arc<Gauge>) {
    let gauge = Arc::new(Gauge::default());
    let service = EchoService::new("shed-1")
        .with_slow_capacity(CAPACITY)
        .with_gauge(gauge.clone());
    let config = echo_config(RateLimitConfig::default()).with_shedding(shed);
    let serving = ServeBuilder::new(config)
        .add_service(service.into_server())
        .signals(false)
        .start()
        .await
        .expect("server starts");
    (serving, gauge)
}

async fn call(mut client: EchoClient<Channel>) -> Outcome {
    let request = SlowRequest {
        message: "load".into(),
        delay_ms: u64::try_from(DELAY.as_millis()).expect("small"),
    };
    let start = Instant::now();
    match tokio::time::timeout(DEADLINE, client.slow(request)).await {
        Err(_) => Outcome::TimedOut,
        Ok(Ok(_)) => Outcome::Ok(start.elapsed()),
        Ok(Err(status)) if status.code() == Code::ResourceExhausted => {
            let pushback: u64 = status
                .metadata()
                .get("grpc-retry-pushback-ms")
                .expect("a shed call carries grpc-retry-pushback-ms")
                .to_str()
                .expect("ascii")
                .parse()
                .expect("milliseconds");
            assert!(pushback > 0, "pushback {pushback}");
            Outcome::Shed
        }
        Ok(Err(status)) => Outcome::Failed(status.code()),
    }
}

/// Starts LOAD_CALLS calls at LOAD_RPS, each on its own task (open loop: a
/// call starts on time whether or not the earlier ones ended); checks the
/// health service while they run; returns every outcome.
async fn overload(
    client: &EchoClient<Channel>,
    health: &mut HealthClient<Channel>,
) -> Vec<Outcome> {
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / LOAD_RPS);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = Vec::new();
    for _ in 0..LOAD_CALLS {
        ticks.tick().await;
        calls.push(tokio::spawn(call(client.clone())));
    }
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("the health service answers under load")
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving, "health stays SERVING");
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.expect("call task"));
    }
    outcomes
}

/// The nearest-rank 99th percentile.
fn p99(mut latencies: Vec<Duration>) -> Duration {
    assert!(!latencies.is_empty(), "no latency to rank");
    latencies.sort_unstable();
    let rank = (latencies.len() * 99).div_ceil(100);
    latencies[rank.max(1) - 1]
}

fn latencies(outcomes: &[Outcome]) -> Vec<Duration> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Ok(latency) => Some(*latency),
            _ => None,
        })
        .collect()
}

fn count(outcomes: &[Outcome], which: Outcome) -> usize {
    outcomes.iter().filter(|o| **o == which).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_the_capacity_is_shed_keeping_admitted_calls_fast_and_in_time() {
    init_tracing();
    let metrics = grpc_cluster::metrics::install(
        &MetricsConfig::default().with_listen(format!("127.0.0.1:{}", free_port())),
    )
    .expect("the recorder installs and the listener binds");
    let metrics_addr = metrics.listen_addr().expect("served");

    // Shedding on.
    let (serving, gauge) = start(shedding()).await;
    let to_server = channel(serving.local_addr()).await;
    let client = EchoClient::new(to_server.clone());
    let mut health = HealthClient::new(to_server);
    // Unloaded: one call at a time.
    let mut unloaded = Vec::new();
    for _ in 0..20 {
        unloaded.push(call(client.clone()).await);
    }
    assert_eq!(count(&unloaded, Outcome::Shed), 0, "{unloaded:?}");
    let unloaded_p99 = p99(latencies(&unloaded));

    let outcomes = overload(&client, &mut health).await;
    let shed = count(&outcomes, Outcome::Shed);
    let admitted = latencies(&outcomes);
    assert_eq!(
        count(&outcomes, Outcome::TimedOut),
        0,
        "no admitted call times out"
    );
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Failed(_)))
        .collect();
    assert!(failed.is_empty(), "only answers and sheds: {failed:?}");
    assert!(shed > 0, "ten times the capacity is shed");
    assert!(
        gauge.max() <= IN_FLIGHT_BOUND,
        "in flight stays bounded: {} > {IN_FLIGHT_BOUND}",
        gauge.max()
    );
    let loaded_p99 = p99(admitted.clone());
    assert!(
        loaded_p99 <= unloaded_p99 * 3,
        "admitted p99 {loaded_p99:?} within 3 × the unloaded {unloaded_p99:?} ({} admitted, {shed} shed)",
        admitted.len()
    );
    eprintln!(
        "shedding on: {} admitted, {shed} shed, p99 {loaded_p99:?} (unloaded {unloaded_p99:?}), \
         at most {} in the handler",
        admitted.len(),
        gauge.max()
    );
    let (_, body) = scrape(metrics_addr);
    let exported = Exposition::parse(&body).value(SERVER_SHED, &[("method", SLOW)]);
    assert_eq!(
        exported,
        Some(shed as f64),
        "every shed call is counted in {SERVER_SHED}"
    );
    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");

    // Shedding off: the same load times calls out.
    let (serving, gauge) = start(ShedConfig::default()).await;
    let to_server = channel(serving.local_addr()).await;
    let client = EchoClient::new(to_server.clone());
    let mut health = HealthClient::new(to_server);
    let outcomes = overload(&client, &mut health).await;
    eprintln!(
        "shedding off: {} answered, {} timed out, at most {} in the handler",
        latencies(&outcomes).len(),
        count(&outcomes, Outcome::TimedOut),
        gauge.max()
    );
    assert_eq!(count(&outcomes, Outcome::Shed), 0, "nothing is shed");
    assert!(
        count(&outcomes, Outcome::TimedOut) > 0,
        "without shedding calls time out"
    );
    assert!(
        gauge.max() > IN_FLIGHT_BOUND,
        "without shedding calls pile up in the handler: {}",
        gauge.max()
    );
    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
}
