//! Client adaptive throttling end to end: every node of a service answers
//! `RESOURCE_EXHAUSTED`, and the client sends only the share the SRE formula
//! allows, counted by the servers themselves. Servers are real echo servers
//! found through a real etcd.
//!
//! The tests share the process's metrics recorder, so they run one at a time
//! and read the throttled-attempts counter before and after.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use actix::Addr;
use cluster_client::{Call, ClusterClient, GetHandle, Strategy, ThrottlingConfig};
use grpc_cluster::echo::{EchoService, SayRequest, SAY};
use grpc_cluster::metrics::{Metrics, MetricsConfig};
use registry_actor::metrics as names;
use support::cluster::{test_config, Cluster};
use support::exposition::Exposition;
use tonic::Code;

const K: f64 = 2.0;
const MIN_REQUESTS: u64 = 10;
/// Accepts in the window: every node answers `RESOURCE_EXHAUSTED`.
const ACCEPTS: f64 = 0.0;

/// Throttling over a window that outlasts the test, so no request leaves it
/// and the formula's counts are known exactly.
fn throttling() -> ThrottlingConfig {
    ThrottlingConfig::default()
        .with_enabled(true)
        .with_k(K)
        .with_window(Duration::from_secs(600), 10)
        .with_min_requests(MIN_REQUESTS)
}

/// The most attempts the throttle lets through out of `requests`, none of
/// them accepted: the first `MIN_REQUESTS`, then request `i` (0-based) weighs
/// `1 − p = 1 − i / (i + 1) = 1 / (i + 1)`, and the credit makes at most the
/// sum of the weights.
fn formula_bound(requests: u64) -> u64 {
    let share: f64 = (MIN_REQUESTS..requests)
        .map(|i| (1.0 + K * ACCEPTS) / (i as f64 + 1.0))
        .sum();
    MIN_REQUESTS.min(requests) + (share + 1e-9).floor() as u64
}

/// One test at a time: both count on the same metric series.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The attempts of `echo` the client's throttle refused so far.
fn throttled_total() -> u64 {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    let metrics = METRICS.get_or_init(|| {
        grpc_cluster::metrics::install(&MetricsConfig::default()).expect("recorder")
    });
    Exposition::parse(&metrics.render())
        .value(names::CLIENT_THROTTLED, &[("service", "echo")])
        .unwrap_or(0.0) as u64
}

/// Two nodes that answer every `Say` with `RESOURCE_EXHAUSTED`.
async fn exhausted_cluster() -> Cluster {
    let mut cluster = Cluster::start().await;
    for id in ["full-1", "full-2"] {
        let service = EchoService::new(id).with_say_error(Code::ResourceExhausted, None);
        cluster.add(service, |n| n).await;
    }
    cluster
}

fn received(cluster: &Cluster) -> u64 {
    cluster.nodes.iter().map(|n| n.stats().processed()).sum()
}

/// Makes `calls` calls one after the other, checking every call failed as it
/// should; answers how many the throttle ended: with no attempt, and after
/// some (a retry refused).
async fn call_all(client: &Addr<ClusterClient>, calls: u64) -> (u64, u64) {
    let (mut refused_locally, mut retry_refused) = (0, 0);
    for i in 0..calls {
        let request = SayRequest {
            message: format!("call {i}"),
        };
        let err = client
            .send(Call::new("echo", SAY, request))
            .await
            .expect("client alive")
            .expect_err("every node is exhausted");
        if err.attempts().is_empty() {
            assert_eq!(err.code(), Code::Unavailable, "a local refusal: {err}");
            refused_locally += 1;
        } else {
            assert!(
                err.attempts()
                    .iter()
                    .all(|a| a.code == Code::ResourceExhausted),
                "{err}"
            );
            if err.budget_exhausted() {
                retry_refused += 1;
            }
        }
    }
    (refused_locally, retry_refused)
}

#[actix_rt::test]
async fn an_exhausted_service_receives_only_the_formula_s_share() {
    let _serial = SERIAL.lock().await;
    let cluster = exhausted_cluster().await;
    let config = test_config()
        .with_strategy(Strategy::Failfast)
        .with_throttling(throttling());
    let client = cluster.client(config, 2).await;

    let calls = 2000;
    let throttled_before = throttled_total();
    let (refused_locally, retry_refused) = call_all(&client, calls).await;
    assert_eq!(retry_refused, 0, "failfast makes no retry");

    // One attempt per call: the throttle counted exactly `calls` requests.
    let sent = received(&cluster);
    let bound = formula_bound(calls);
    assert!(
        sent <= bound,
        "servers received {sent} of {calls} calls, above the formula's {bound}"
    );
    assert!(
        sent > MIN_REQUESTS,
        "once the window is full some attempts still go through (to see a recovery): {sent}"
    );
    assert_eq!(sent + refused_locally, calls, "each call sent or refused");
    assert_eq!(
        throttled_total() - throttled_before,
        refused_locally,
        "every local refusal is counted"
    );

    // Turned off by a reload, the throttle refuses nothing: every call is sent.
    let handle = client.send(GetHandle).await.expect("client alive");
    handle
        .update_config(test_config().with_strategy(Strategy::Failfast))
        .expect("valid config");
    let before = received(&cluster);
    assert_eq!(call_all(&client, 50).await, (0, 0));
    assert_eq!(received(&cluster) - before, 50);
}

#[actix_rt::test]
async fn retries_of_a_throttled_service_are_throttled_too() {
    let _serial = SERIAL.lock().await;
    let cluster = exhausted_cluster().await;
    // A budget that never refuses: only the throttle holds the retries back.
    let retries = 2;
    let config = test_config()
        .with_strategy(Strategy::Failover)
        .with_retries(retries)
        .with_budget(1.0, 100_000)
        .with_throttling(throttling());
    let client = cluster.client(config, 2).await;

    let calls = 2000;
    let throttled_before = throttled_total();
    let (refused_locally, retry_refused) = call_all(&client, calls).await;

    // Every attempt a call wanted (its first, and each retry until one is
    // refused) is a request: at most `retries + 1` per call.
    let sent = received(&cluster);
    let bound = formula_bound(calls * u64::from(retries + 1));
    assert!(
        sent <= bound,
        "servers received {sent} attempts for {calls} calls, above the formula's {bound}"
    );
    assert!(
        sent > MIN_REQUESTS,
        "some attempts still go through: {sent}"
    );
    assert!(
        retry_refused > 0,
        "some retries were refused by the throttle"
    );
    assert_eq!(
        throttled_total() - throttled_before,
        refused_locally + retry_refused,
        "every refusal, of a first attempt or a retry, is counted"
    );
}
