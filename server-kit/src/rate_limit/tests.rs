//! Rate limits on governor's fake clock: exact counts, no sleeping.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Code, Status};
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::{Error, Limit, RateLimitConfig, RETRY_PUSHBACK_KEY};

fn request(path: &str, caller: Option<&str>) -> http::Request<()> {
    let mut builder = http::Request::builder().uri(path);
    if let Some(caller) = caller {
        builder = builder.header("x-caller", caller);
    }
    builder.body(()).expect("valid request")
}

fn from_peer(path: &str, peer: &str) -> http::Request<()> {
    let mut request = request(path, None);
    let remote: SocketAddr = peer.parse().expect("peer addr");
    request.extensions_mut().insert(TcpConnectInfo {
        local_addr: None,
        remote_addr: Some(remote),
    });
    request
}

fn limits(config: RateLimitConfig) -> (RateLimits<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let limits = RateLimits::with_clock(&config, clock.clone()).expect("valid config");
    (limits, clock)
}

/// Sends `n` calls; returns how many were admitted.
fn admitted(
    limits: &RateLimits<FakeRelativeClock>,
    n: usize,
    req: impl Fn() -> http::Request<()>,
) -> usize {
    (0..n).filter(|_| limits.check(&req()).is_ok()).count()
}

const SAY: &str = "/echo.v1.Echo/Say";
const SLOW: &str = "/echo.v1.Echo/Slow";

#[test]
fn admits_exactly_the_quota_on_a_fake_clock() {
    let (limits, clock) = limits(RateLimitConfig::default().with_rps(10).with_burst(5));
    assert_eq!(
        admitted(&limits, 50, || request(SAY, None)),
        5,
        "the burst at once"
    );
    for second in 1..=3 {
        clock.advance(Duration::from_secs(1));
        // A burst of 5 caps what a whole idle second refills.
        assert_eq!(
            admitted(&limits, 50, || request(SAY, None)),
            5,
            "second {second}"
        );
    }
    // Paced at the rate, every call of 10 per second is admitted.
    let mut paced = 0;
    for _ in 0..100 {
        clock.advance(Duration::from_millis(100));
        paced += admitted(&limits, 1, || request(SAY, None));
    }
    assert_eq!(paced, 100);
    // Without a burst setting the burst is the rate.
    let (limits, clock) = limits_unbursted();
    assert_eq!(admitted(&limits, 1000, || request(SAY, None)), 300);
    clock.advance(Duration::from_secs(1));
    assert_eq!(admitted(&limits, 1000, || request(SAY, None)), 300);
}

fn limits_unbursted() -> (RateLimits<FakeRelativeClock>, FakeRelativeClock) {
    limits(RateLimitConfig::default().with_rps(300))
}

#[test]
fn a_refusal_is_resource_exhausted_with_governors_wait_as_pushback() {
    let (limits, clock) = limits(RateLimitConfig::default().with_rps(10).with_burst(1));
    assert!(limits.check(&request(SAY, None)).is_ok());
    let refusal = limits
        .check(&request(SAY, None))
        .expect_err("over the limit");
    assert!(matches!(
        refusal,
        Error::RateLimited { limit: Limit::Global, retry_after, .. } if retry_after == Duration::from_millis(100)
    ));
    clock.advance(Duration::from_millis(40));
    let status = Status::from(limits.check(&request(SAY, None)).expect_err("still over"));
    assert_eq!(status.code(), Code::ResourceExhausted);
    let pushback = status
        .metadata()
        .get(RETRY_PUSHBACK_KEY)
        .expect("pushback set");
    assert_eq!(pushback.to_str().ok(), Some("60"));
    clock.advance(Duration::from_millis(60));
    assert!(
        limits.check(&request(SAY, None)).is_ok(),
        "admitted once the wait passed"
    );
}

#[tokio::test]
async fn the_layer_answers_a_refusal_as_a_grpc_response_without_calling_the_service() {
    let (limits, _clock) = limits(RateLimitConfig::default().with_rps(1));
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let service = {
        let calls = calls.clone();
        tower::service_fn(move |_req: http::Request<()>| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Ok::<_, Infallible>(http::Response::new(())) }
        })
    };
    let service = limits.layer().layer(service);
    let ok = service
        .clone()
        .oneshot(request(SAY, None))
        .await
        .expect("infallible");
    assert!(ok.headers().get("grpc-status").is_none());
    let refused = service
        .clone()
        .oneshot(request(SAY, None))
        .await
        .expect("infallible");
    assert_eq!(
        refused.status(),
        http::StatusCode::OK,
        "gRPC errors travel in HTTP 200"
    );
    assert_eq!(refused.headers()["content-type"], "application/grpc");
    assert_eq!(refused.headers()["grpc-status"], "8");
    let pushback: u64 = refused.headers()[RETRY_PUSHBACK_KEY]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number of milliseconds");
    assert!(pushback > 0);
    // The health service is never limited.
    for _ in 0..10 {
        let health = service
            .clone()
            .oneshot(request("/grpc.health.v1.Health/Check", None))
            .await
            .expect("infallible");
        assert!(health.headers().get("grpc-status").is_none());
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::Relaxed),
        11,
        "1 admitted call + 10 health checks"
    );
}

#[test]
fn a_bare_method_name_limits_that_method_and_its_path_wins() {
    let (by_name, _clock) = limits(RateLimitConfig::default().with_method("Say", 2, 0));
    assert_eq!(admitted(&by_name, 10, || request(SAY, None)), 2);
    assert_eq!(admitted(&by_name, 10, || request(SLOW, None)), 10);
    let (both, _clock) = limits(
        RateLimitConfig::default()
            .with_method("Say", 2, 0)
            .with_method(SAY, 4, 0),
    );
    assert_eq!(admitted(&both, 10, || request(SAY, None)), 4);
}

#[test]
fn method_and_caller_limits_compose() {
    let (limits, clock) = limits(
        RateLimitConfig::default()
            .with_method(SAY, 5, 0)
            .with_caller_rps(3)
            .with_trust_caller_header(true),
    );
    // Caller a: its own quota (3) binds first.
    assert_eq!(admitted(&limits, 10, || request(SAY, Some("a"))), 3);
    // Caller b: its quota is 3, but the method has only 5 - 3 = 2 left.
    assert_eq!(admitted(&limits, 10, || request(SAY, Some("b"))), 2);
    // b's third call passed its own bucket and was refused by the method's: it
    // still counted against b. Another method is not under Say's limit, but
    // callers still are.
    assert_eq!(admitted(&limits, 10, || request(SLOW, Some("b"))), 0);
    assert_eq!(admitted(&limits, 10, || request(SLOW, Some("c"))), 3);
    assert_eq!(admitted(&limits, 10, || request(SLOW, Some("a"))), 0);
    // Which limit refused is told apart.
    let by_method = limits
        .check(&request(SAY, Some("d")))
        .expect_err("Say exhausted");
    assert!(matches!(
        by_method,
        Error::RateLimited {
            limit: Limit::Method,
            ..
        }
    ));
    let by_caller = limits
        .check(&request(SLOW, Some("a")))
        .expect_err("a exhausted");
    assert!(matches!(
        by_caller,
        Error::RateLimited {
            limit: Limit::Caller,
            ..
        }
    ));
    // One second later everything refilled: 3 per caller, 5 for Say.
    clock.advance(Duration::from_secs(1));
    let say: usize = ["a", "b", "c"]
        .iter()
        .map(|who| admitted(&limits, 10, || request(SAY, Some(who))))
        .sum();
    assert_eq!(say, 5);
}

#[test]
fn callers_without_the_metadata_key_are_keyed_by_peer_ip() {
    let (limits, _clock) = limits(
        RateLimitConfig::default()
            .with_caller_rps(2)
            .with_trust_caller_header(true),
    );
    assert_eq!(admitted(&limits, 5, || from_peer(SAY, "10.0.0.1:1000")), 2);
    // Same IP, other port: same caller.
    assert_eq!(admitted(&limits, 5, || from_peer(SAY, "10.0.0.1:2000")), 0);
    assert_eq!(admitted(&limits, 5, || from_peer(SAY, "10.0.0.2:1000")), 2);
    // The metadata key wins over the peer.
    let mut named = from_peer(SAY, "10.0.0.1:1000");
    named
        .headers_mut()
        .insert("x-caller", http::HeaderValue::from_static("svc-a"));
    assert!(limits.check(&named).is_ok());
}

/// Runs 5 fake seconds in 10 ms ticks; caller `b` sends its quota (10/s), and
/// caller `a`, when `flood`, sends 100/s, 10x its quota. Returns what each got.
fn run_two_callers(flood: bool) -> (usize, usize) {
    let (limits, clock) = limits(
        RateLimitConfig::default()
            .with_caller_rps(10)
            .with_trust_caller_header(true)
            .with_rps(20),
    );
    let (mut a, mut b) = (0, 0);
    for tick in 0..500 {
        clock.advance(Duration::from_millis(10));
        if flood {
            a += admitted(&limits, 1, || request(SAY, Some("a")));
        }
        if tick % 10 == 0 {
            b += admitted(&limits, 1, || request(SAY, Some("b")));
        }
    }
    (a, b)
}

#[test]
fn a_caller_at_ten_times_its_quota_does_not_reduce_another_callers_admissions() {
    let (_, b_alone) = run_two_callers(false);
    let (a, b_with_flood) = run_two_callers(true);
    assert_eq!(b_alone, 50, "b sends 50 calls within its quota");
    assert_eq!(b_with_flood, b_alone, "the flood of a costs b nothing");
    // a got its own quota: a burst of 10 and 10 per second after it.
    assert_eq!(a, 10 + 49);
}

#[test]
fn idle_callers_are_pruned() {
    let (limits, clock) = limits(
        RateLimitConfig::default()
            .with_caller_rps(10)
            .with_trust_caller_header(true)
            .with_max_callers(1_000_000),
    );
    for i in 0..100_000 {
        let _ = limits.check(&request(SAY, Some(&format!("caller-{i}"))));
    }
    assert_eq!(limits.status().tracked_callers(), 100_000);
    limits.prune();
    assert_eq!(
        limits.status().tracked_callers(),
        100_000,
        "all still recent"
    );
    // A second later every caller's bucket is full again.
    clock.advance(Duration::from_secs(1));
    limits.prune();
    assert_eq!(limits.status().tracked_callers(), 0);
}

#[test]
fn the_caller_table_stays_within_max_callers() {
    let max = 1_000;
    let (limits, _clock) = limits(
        RateLimitConfig::default()
            .with_caller_rps(10)
            .with_trust_caller_header(true)
            .with_max_callers(max),
    );
    let mut largest = 0;
    for i in 0..100_000 {
        let _ = limits.check(&request(SAY, Some(&format!("caller-{i}"))));
        if i % 100 == 0 {
            largest = largest.max(limits.status().tracked_callers());
        }
    }
    // Checked every 256 calls of a thread: never more than that above the bound.
    assert!(largest <= max + 256, "{largest} callers tracked");
    // Long keys are stored as a hash, not as themselves.
    let long = "x".repeat(4096);
    assert!(limits.check(&request(SAY, Some(&long))).is_ok());
}

#[test]
fn the_cluster_share_is_cluster_rps_over_live_instances() {
    let (limits, clock) = limits(RateLimitConfig::default().with_cluster_rps(300));
    limits.set_instances(3);
    assert_eq!(limits.status().cluster_share(), Some(100.0));
    assert_eq!(admitted(&limits, 1000, || request(SAY, None)), 100);
    clock.advance(Duration::from_secs(1));
    assert_eq!(admitted(&limits, 1000, || request(SAY, None)), 100);
    // One instance leaves.
    limits.set_instances(2);
    assert_eq!(limits.status().cluster_share(), Some(150.0));
    clock.advance(Duration::from_secs(1));
    assert_eq!(admitted(&limits, 1000, || request(SAY, None)), 150);
    clock.advance(Duration::from_secs(1));
    assert_eq!(admitted(&limits, 1000, || request(SAY, None)), 150);
    let refusal = limits
        .check(&request(SAY, None))
        .expect_err("share used up");
    assert!(matches!(
        refusal,
        Error::RateLimited {
            limit: Limit::Cluster,
            ..
        }
    ));
    // The same count again keeps the bucket (and its state).
    limits.set_instances(2);
    assert_eq!(admitted(&limits, 10, || request(SAY, None)), 0);
}

#[test]
fn new_limits_apply_to_the_next_call_and_unchanged_ones_keep_their_state() {
    let (limits, _clock) = limits(RateLimitConfig::default().with_rps(5));
    assert_eq!(admitted(&limits, 10, || request(SAY, None)), 5);
    // Same global limit, one method more: the global bucket stays exhausted.
    limits
        .set_config(
            RateLimitConfig::default()
                .with_rps(5)
                .with_method(SLOW, 1, 0),
        )
        .expect("valid");
    assert_eq!(admitted(&limits, 10, || request(SAY, None)), 0);
    // A new global rate is a new bucket, in force for the very next call.
    limits
        .set_config(RateLimitConfig::default().with_rps(50))
        .expect("valid");
    assert_eq!(admitted(&limits, 100, || request(SAY, None)), 50);
    // An invalid config is refused and the limits in force stay.
    let err = limits
        .set_config(RateLimitConfig::default().with_burst(3))
        .expect_err("burst without rps");
    assert!(err.to_string().contains("server.rate_limit.burst"), "{err}");
    assert_eq!(limits.status().config().rps(), 50);
    // Back to unlimited.
    limits
        .set_config(RateLimitConfig::default())
        .expect("valid");
    assert_eq!(admitted(&limits, 1000, || request(SAY, None)), 1000);
}

#[test]
fn no_limit_is_set_by_default() {
    let (limits, _clock) = limits(RateLimitConfig::default());
    assert!(limits.status().config().is_unlimited());
    assert_eq!(
        admitted(&limits, 10_000, || request(SAY, Some("a"))),
        10_000
    );
}

#[test]
fn the_caller_header_is_ignored_unless_trusted() {
    let (limits, _clock) = limits(RateLimitConfig::default().with_caller_rps(2));
    // One peer rotating the header: still one caller.
    let rotating: usize = (0..5)
        .map(|i| {
            let mut req = from_peer(SAY, "10.0.0.1:1000");
            req.headers_mut().insert(
                "x-caller",
                http::HeaderValue::from_str(&format!("rotated-{i}")).expect("ascii"),
            );
            usize::from(limits.check(&req).is_ok())
        })
        .sum();
    assert_eq!(rotating, 2);
}

#[test]
fn an_authenticated_caller_wins_over_the_header_and_the_peer() {
    let auth = crate::AuthConfig::default()
        .with_caller("alice", "token-a")
        .with_caller("bob", "token-b");
    let layer = crate::BearerAuthLayer::with_callers(None, &auth);
    let (limits, _clock) = limits(
        RateLimitConfig::default()
            .with_caller_rps(2)
            .with_trust_caller_header(true),
    );
    // The auth layer names the caller; the rate limit reads it.
    let captured = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = captured.clone();
    let mut svc = layer.layer(tower::service_fn(move |req: http::Request<()>| {
        sink.lock().expect("lock").push(req);
        async { Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty())) }
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for token in ["token-a", "token-b"] {
        let mut req = from_peer(SAY, "10.0.0.1:1000");
        let headers = req.headers_mut();
        headers.insert(
            "authorization",
            http::HeaderValue::from_str(&format!("Bearer {token}")).expect("ascii"),
        );
        // Claims to be bob whatever its token: ignored for an authenticated caller.
        headers.insert("x-caller", http::HeaderValue::from_static("bob"));
        rt.block_on(async { svc.ready().await.expect("ready").call(req).await })
            .expect("called");
    }
    let seen = std::mem::take(&mut *captured.lock().expect("lock"));
    assert_eq!(seen.len(), 2, "both tokens authenticated");
    let alice = &seen[0];
    let bob = &seen[1];
    let admitted_of =
        |req: &http::Request<()>| (0..5).filter(|_| limits.check(req).is_ok()).count();
    assert_eq!(admitted_of(alice), 2, "alice has her own bucket");
    assert_eq!(admitted_of(bob), 2, "bob has his own bucket");
}

#[test]
fn a_wrong_token_is_unauthenticated_when_callers_are_configured() {
    let auth = crate::AuthConfig::default().with_caller("alice", "token-a");
    let layer = crate::BearerAuthLayer::with_callers(None, &auth);
    let mut svc = layer.layer(tower::service_fn(|_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for header in [None, Some("Bearer token-b"), Some("Bearer token-a ")] {
        let mut req = request(SAY, None);
        if let Some(h) = header {
            req.headers_mut()
                .insert("authorization", http::HeaderValue::from_static(h));
        }
        let response = rt
            .block_on(async { svc.ready().await.expect("ready").call(req).await })
            .expect("answered");
        let status = Status::from_header_map(response.headers()).expect("a grpc status");
        assert_eq!(status.code(), Code::Unauthenticated, "{header:?}");
    }
}
