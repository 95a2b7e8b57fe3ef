//! Failures beyond a refused connection, end to end: nodes that hang or answer
//! errors to everything, attempt timeouts, hedging, outlier ejection and the
//! server's pushback, against real echo servers found through a real etcd.

mod support;

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use cluster_client::{
    Call, CallOptions, ClusterClient, EjectionConfig, GetHandle, NodeStatus, Selector,
    ServiceStatus, Strategy,
};
use grpc_cluster::echo::{EchoService, EchoStats, SayRequest, SAY};
use support::cluster::{test_config, Cluster};
use support::{wait_until, EVENTUALLY};
use tonic::Code;
use tonic_health::ServingStatus;

fn say(message: &str) -> SayRequest {
    SayRequest {
        message: message.into(),
    }
}

async fn node_status(client: &Addr<ClusterClient>, id: &str) -> NodeStatus {
    client
        .send(ServiceStatus("echo".into()))
        .await
        .expect("client alive")
        .expect("echo known")
        .node(id)
        .cloned()
        .expect("node listed")
}

/// Sends `calls` calls; each is served at its first attempt (no node that
/// fails is picked).
async fn served_by_the_others_at_once(client: &Addr<ClusterClient>, calls: usize) {
    for i in 0..calls {
        let reply = client
            .send(Call::new("echo", SAY, say(&format!("after {i}"))))
            .await
            .expect("client alive")
            .expect("served by the others");
        assert_eq!(reply.attempts.len(), 1, "{:?}", reply.attempts);
    }
}

/// An ejection that outlasts the test: once out, a node stays out.
fn ejection_after(failures: u32) -> EjectionConfig {
    EjectionConfig::default()
        .with_failures(failures)
        .with_base_time(Duration::from_secs(120))
        .with_max_time(Duration::from_secs(120))
}

/// Whether every call a hanging node received is seen cancelled, soon.
async fn all_hung_calls_cancelled(stats: &Arc<EchoStats>) -> bool {
    wait_until(EVENTUALLY, || {
        let stats = stats.clone();
        async move { stats.cancelled() == stats.hung() }
    })
    .await
}

/// A `grpc-timeout` header value as a duration.
fn parse_grpc_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().expect("grpc-timeout digits");
    match unit {
        "u" => Duration::from_micros(n),
        "m" => Duration::from_millis(n),
        "S" => Duration::from_secs(n),
        other => panic!("unexpected grpc-timeout unit {other}"),
    }
}

#[actix_rt::test]
async fn failover_with_an_attempt_timeout_gets_past_a_hung_node_until_it_is_ejected() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    let hung = EchoService::new("hung")
        .with_hang(true)
        .with_header_log(true);
    cluster.add(hung, |n| n.with_group("stuck")).await;
    let attempt_timeout = Duration::from_millis(100);
    let call_timeout = Duration::from_secs(5);
    let failures = 3;
    let config = test_config()
        .with_timeout(call_timeout)
        .with_attempt_timeout(attempt_timeout)
        .with_strategy(Strategy::Failover)
        .with_ejection(ejection_after(failures));
    let client = cluster.client(config, 3).await;
    let hung = cluster.node("hung").stats();

    // Round robin reaches the hung node every third call; each of those calls
    // moves on after the attempt timeout, until the node is ejected.
    let mut calls = 0;
    while !node_status(&client, "hung").await.ejected {
        assert!(
            calls < 30 * failures,
            "not ejected after {calls} calls and {} timeouts",
            hung.hung()
        );
        let reply = client
            .send(Call::new("echo", SAY, say(&format!("m{calls}"))))
            .await
            .expect("client alive")
            .unwrap_or_else(|e| panic!("call {calls} failed: {e}"));
        calls += 1;
        assert_ne!(reply.node.id(), "hung");
        assert!(reply.latency < call_timeout, "within the call's deadline");
        let (last, earlier) = reply.attempts.split_last().expect("an attempt");
        assert_eq!(last.code, Code::Ok);
        for attempt in earlier {
            assert_eq!(attempt.node.id(), "hung", "{:?}", reply.attempts);
            assert_eq!(attempt.code, Code::DeadlineExceeded);
        }
    }
    assert!(
        hung.hung() >= u64::from(failures),
        "ejected after {} timeouts, fewer than {failures}",
        hung.hung()
    );
    for value in hung.grpc_timeouts() {
        assert!(
            parse_grpc_timeout(&value) <= attempt_timeout,
            "an attempt carried grpc-timeout {value}, above the attempt timeout"
        );
    }

    // Ejected: no attempt reaches it until its ejection ends.
    let before = hung.hung();
    served_by_the_others_at_once(&client, 30).await;
    assert_eq!(hung.hung(), before, "the ejected node got an attempt");
    assert!(
        all_hung_calls_cancelled(&hung).await,
        "every timed-out attempt was cancelled on the server"
    );

    // A call whose deadline is shorter than the attempt timeout: its attempt
    // carries the deadline, and the deadline ends the call.
    let short = attempt_timeout / 2;
    let err = client
        .send(
            Call::new("echo", SAY, say("short")).with_options(
                CallOptions::new()
                    .with_timeout(short)
                    .with_selector(Selector::new().with_group("stuck")),
            ),
        )
        .await
        .expect("client alive")
        .expect_err("the hung node never answers");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    let last = hung.grpc_timeouts().pop().expect("a grpc-timeout");
    assert!(parse_grpc_timeout(&last) <= short, "{last}");
}

#[actix_rt::test]
async fn a_node_answering_unavailable_to_everything_is_ejected_but_not_one_answering_invalid_argument(
) {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    let down = EchoService::new("down").with_say_error(Code::Unavailable, None);
    cluster.add(down, |n| n).await;
    let picky = EchoService::new("picky").with_say_error(Code::InvalidArgument, None);
    cluster.add(picky, |n| n).await;
    let failures = 3;
    let config = test_config()
        .with_strategy(Strategy::Failover)
        .with_ejection(ejection_after(failures));
    let client = cluster.client(config, 4).await;
    let (down, picky) = (cluster.node("down").stats(), cluster.node("picky").stats());

    // Every call either succeeds (moving on from `down`) or is refused by
    // `picky`, whose answer is final; go on until `picky` has answered more
    // than enough times to be ejected, were its answers failures.
    let mut calls = 0;
    while picky.processed() <= u64::from(3 * failures)
        || !node_status(&client, "down").await.ejected
    {
        assert!(
            calls < 200,
            "down never ejected: {:?}",
            node_status(&client, "down").await
        );
        let result = client
            .send(Call::new("echo", SAY, say(&format!("m{calls}"))))
            .await
            .expect("client alive");
        calls += 1;
        match result {
            Ok(reply) => assert_ne!(reply.node.id(), "down"),
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{e}");
                assert_eq!(e.attempts().last().map(|a| a.node.id()), Some("picky"));
            }
        }
    }
    let down_answers = down.processed();
    assert!(
        down_answers >= u64::from(failures),
        "ejected after {down_answers} answers"
    );
    let picky_status = node_status(&client, "picky").await;
    assert!(
        !picky_status.ejected
            && picky_status.ejections == 0
            && picky_status.consecutive_failures == 0,
        "INVALID_ARGUMENT counted against the node: {picky_status:?}"
    );
    for i in 0..20 {
        let _ = client
            .send(Call::new("echo", SAY, say(&format!("after {i}"))))
            .await
            .expect("client alive");
    }
    assert_eq!(
        down.processed(),
        down_answers,
        "the ejected node got a call"
    );
}

#[actix_rt::test]
async fn failover_leaves_a_node_alone_while_its_pushback_lasts() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    let pushback = Duration::from_millis(300);
    let busy = EchoService::new("busy").with_say_error(Code::ResourceExhausted, Some(pushback));
    cluster.add(busy, |n| n).await;
    let config = test_config().with_strategy(Strategy::Failover);
    let client = cluster.client(config, 3).await;
    let busy = cluster.node("busy").stats();

    // Calls until one reaches `busy` (round robin: within three).
    let mut started = std::time::Instant::now();
    for i in 0..3 {
        started = std::time::Instant::now();
        let reply = client
            .send(Call::new("echo", SAY, say(&format!("find {i}"))))
            .await
            .expect("client alive")
            .expect("another node serves it at once");
        assert_ne!(reply.node.id(), "busy");
        if busy.processed() == 1 {
            let codes: Vec<_> = reply.attempts.iter().map(|a| a.code).collect();
            assert_eq!(codes, [Code::ResourceExhausted, Code::Ok]);
            break;
        }
    }
    assert_eq!(busy.processed(), 1, "round robin reached busy");
    assert!(node_status(&client, "busy").await.paused);

    // Every call picked before the pushback has passed (counted from before
    // the call that got it) is served by the others, in one attempt.
    let mut during = 0;
    while started.elapsed() < pushback {
        let reply = client
            .send(Call::new("echo", SAY, say(&format!("during {during}"))))
            .await
            .expect("client alive")
            .expect("served by the others");
        assert_eq!(reply.attempts.len(), 1, "{:?}", reply.attempts);
        during += 1;
    }
    assert!(during > 0);
    assert_eq!(busy.processed(), 1, "busy was called during its pushback");

    // Then it is picked again: a pause, not an ejection.
    let back = wait_until(EVENTUALLY, || {
        let client = client.clone();
        let busy = busy.clone();
        async move {
            let _ = client.send(Call::new("echo", SAY, say("later"))).await;
            busy.processed() > 1
        }
    })
    .await;
    assert!(back, "busy never picked again");
    let status = node_status(&client, "busy").await;
    assert_eq!((status.ejections, status.consecutive_failures), (0, 0));
}

#[actix_rt::test]
async fn hedging_gets_past_a_hung_node_within_one_delay_and_cancels_the_losers() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    cluster
        .add(EchoService::new("hung").with_hang(true), |n| n)
        .await;
    let delay = Duration::from_millis(20);
    let max_attempts = 3;
    let config = test_config()
        .with_strategy(Strategy::Hedging)
        .with_hedging(delay, max_attempts, [Code::Unavailable])
        // Enough budget that no hedge is refused: this test is about latency.
        .with_budget(1.0, 1000);
    let client = cluster.client(config, 3).await;
    let hung = cluster.node("hung").stats();

    let (mut normal, mut hedged) = (Vec::new(), Vec::new());
    for i in 0..300 {
        let before = hung.hung();
        let reply = client
            .send(Call::new("echo", SAY, say(&format!("m{i}"))))
            .await
            .expect("client alive")
            .unwrap_or_else(|e| panic!("call {i} failed: {e}"));
        assert_ne!(reply.node.id(), "hung");
        assert!(reply.attempts.iter().all(|a| a.node.id() != "hung"));
        if hung.hung() > before {
            hedged.push(reply.latency);
        } else {
            normal.push(reply.latency);
        }
    }
    assert!(
        !hedged.is_empty() && !normal.is_empty(),
        "round robin reached every node"
    );
    // A call that met the hung node is answered by the hedge started one delay
    // later: it takes about a delay plus a normal call, and the hedge's timer
    // ends up to a couple of milliseconds late (a tokio sleep ends on a
    // millisecond tick, and the runtime parks in whole milliseconds). Bound on
    // the p99 of all 300 calls (so the few a busy machine holds back do not
    // decide it): the slowest normal call plus two delays, one for the hedge to
    // start and one for the timer's lateness on a busy machine; far inside the
    // 5 s deadline a call without a hedge would spend on the hung node.
    assert!(
        hedged.len() >= 60,
        "about a third of the calls met the hung node: {}",
        hedged.len()
    );
    let slowest_normal = normal.iter().max().copied().unwrap_or_default();
    let mut all: Vec<Duration> = hedged.iter().chain(&normal).copied().collect();
    all.sort();
    let p99 = all[(all.len() * 99).div_ceil(100) - 1];
    let bound = slowest_normal + delay * 2;
    eprintln!("hedging: p99 of the calls {p99:?}, slowest normal call {slowest_normal:?}, bound {bound:?}");
    assert!(
        p99 <= bound,
        "p99 {p99:?} of the calls above {bound:?} (slowest normal call + 2 delays)"
    );

    assert!(
        all_hung_calls_cancelled(&hung).await,
        "the hung node saw every losing attempt cancelled"
    );
}

#[actix_rt::test]
async fn a_storm_of_hedges_and_retries_stays_within_the_budget() {
    use futures_util::stream::{self, StreamExt};
    use grpc_cluster::echo::{FailRequest, FAIL};

    let mut cluster = Cluster::start().await;
    for id in ["a", "b", "c"] {
        cluster.add(EchoService::new(id), |n| n).await;
    }
    let (ratio, per_sec) = (0.2, 10);
    let config = test_config()
        .with_budget(ratio, per_sec)
        .with_retries(2)
        .with_retry_codes([Code::Internal])
        .with_hedging(Duration::from_millis(1), 3, [Code::Internal]);
    let client = cluster.client(config, 3).await;

    let started = std::time::Instant::now();
    let calls = 300u32;
    let outcomes: Vec<_> = stream::iter(0..calls)
        .map(|i| {
            let client = client.clone();
            // Half hedged, half failover: both draw from the one budget.
            let strategy = if i % 2 == 0 {
                Strategy::Hedging
            } else {
                Strategy::Failover
            };
            async move {
                let request = FailRequest {
                    code: Code::Internal as i32,
                    message: format!("m{i}"),
                };
                client
                    .send(
                        Call::new("echo", FAIL, request)
                            .with_options(CallOptions::new().with_strategy(strategy)),
                    )
                    .await
                    .expect("client alive")
                    .expect_err("every node fails it")
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    // Every attempt here ends with the node's answer (no attempt is cut short:
    // INTERNAL is non-fatal and retryable), so each is listed in its error.
    let attempts: usize = outcomes.iter().map(|e| e.attempts().len()).sum();
    let refused = outcomes.iter().filter(|e| e.budget_exhausted()).count();
    let processed: u64 = ["a", "b", "c"]
        .iter()
        .map(|id| cluster.node(id).stats().processed())
        .sum();
    assert_eq!(processed, attempts as u64, "the servers saw every attempt");
    // The budget's documented bound: extra attempts <= ratio x calls +
    // per_sec x elapsed + an initial reserve of 2 x per_sec.
    let bound =
        f64::from(calls) * (1.0 + ratio) + f64::from(per_sec) * elapsed + 2.0 * f64::from(per_sec);
    assert!(
        attempts as f64 <= bound,
        "{attempts} attempts for {calls} calls in {elapsed:.2}s exceed {bound:.1}"
    );
    assert!(attempts > calls as usize, "extra attempts were made");
    assert!(refused > 0, "the budget refused some extra attempts");
}

#[actix_rt::test]
async fn a_node_whose_server_sends_goaway_is_not_picked_until_a_fresh_connection_works() {
    goaway_takes_a_node_out(false).await;
}

#[actix_rt::test]
async fn over_tls_a_node_whose_server_sends_goaway_is_not_picked_until_a_fresh_connection_works() {
    goaway_takes_a_node_out(true).await;
}

/// Node `a`'s server stops gracefully with a call in flight: its GOAWAY takes
/// `a` out at once, and `a` comes back once a new server on its address
/// answers. `tls`: servers and client over TLS.
async fn goaway_takes_a_node_out(tls: bool) {
    use grpc_cluster::echo::{SlowRequest, SLOW};
    use support::certs::{server_tls, TestCa};
    use support::PlainEcho;

    support::init_tracing();
    let mut cluster = Cluster::start().await;
    let ca = tls.then(|| TestCa::new(&cluster.etcd.data_dir().join("certs"), "goaway-ca"));
    let server_tls = ca.as_ref().map(server_tls);
    cluster
        .add_over(EchoService::new("a"), server_tls.clone(), |n| {
            n.with_group("a")
        })
        .await;
    cluster
        .add_over(EchoService::new("b"), server_tls.clone(), |n| n)
        .await;
    // Neither health watch nor ejection: only the GOAWAY can take `a` out.
    let mut config = test_config()
        .with_strategy(Strategy::Failfast)
        .with_ejection(ejection_after(1000));
    if let Some(ca) = &ca {
        config = config.with_tls(registry_actor::TlsConfig::default().with_ca_file(&ca.ca_file));
    }
    let client = cluster.client(config, 2).await;
    let on_a = || CallOptions::new().with_selector(Selector::new().with_group("a"));

    // A call that stays in flight on `a` keeps its connection open while
    // its server drains: what the client sees then is the GOAWAY, not the
    // connection's end. The connection is made first: a server that drains
    // while a connection is being made may close it before its first call.
    client
        .send(Call::new("echo", SAY, say("open")).with_options(on_a()))
        .await
        .expect("client alive")
        .expect("a answers");
    let slow = SlowRequest {
        message: "stays".into(),
        delay_ms: 5_000,
    };
    let slow_call = actix_rt::spawn(client.send(
        Call::new("echo", SLOW, slow).with_options(on_a().with_timeout(Duration::from_secs(30))),
    ));
    let in_flight = wait_until(EVENTUALLY, || {
        let client = client.clone();
        async move { node_status(&client, "a").await.in_flight == 1 }
    })
    .await;
    assert!(in_flight, "the slow call reached a");
    let index = cluster.nodes.iter().position(|n| n.id == "a").expect("a");
    let old = cluster.nodes[index].server.take().expect("a serves");
    let addr = old.addr;
    // Its graceful stop: GOAWAY, the listener closed, the slow call drains.
    drop(old);

    let going = wait_until(EVENTUALLY, || {
        let client = client.clone();
        async move { node_status(&client, "a").await.going_away }
    })
    .await;
    assert!(going, "the GOAWAY took a out");
    assert!(!slow_call.is_finished(), "a's connection is still open");
    let status = node_status(&client, "a").await;
    assert!(
        !status.ejected && status.consecutive_failures == 0,
        "{status:?}"
    );
    for i in 0..20 {
        let reply = client
            .send(Call::new("echo", SAY, say(&format!("m{i}"))))
            .await
            .expect("client alive")
            .unwrap_or_else(|e| panic!("call {i} failed: {e}"));
        assert_eq!(reply.node.id(), "b", "a was picked after its GOAWAY");
    }

    // The slow call drains on the old connection; then a new server on the
    // same address brings `a` back once a fresh connection to it works.
    let drained = slow_call
        .await
        .expect("task")
        .expect("client alive")
        .expect("the call in flight at the GOAWAY completes");
    assert_eq!(drained.node.id(), "a");
    cluster.nodes[index].server =
        Some(PlainEcho::serve_on_over(EchoService::new("a"), addr, server_tls).await);
    let back = wait_until(EVENTUALLY, || {
        let client = client.clone();
        async move { !node_status(&client, "a").await.going_away }
    })
    .await;
    assert!(back, "a is picked again once a fresh connection works");
    let reply = client
        .send(Call::new("echo", SAY, say("back")).with_options(on_a()))
        .await
        .expect("client alive")
        .expect("the new a answers");
    assert_eq!(reply.node.id(), "a");
}

#[actix_rt::test]
async fn a_node_whose_success_rate_is_far_below_the_others_is_ejected() {
    let mut cluster = Cluster::start().await;
    let good = ["a", "b", "c", "d"];
    for id in good {
        cluster.add(EchoService::new(id), |n| n).await;
    }
    let bad = EchoService::new("bad").with_say_error(Code::Unavailable, None);
    cluster.add(bad, |n| n).await;
    // Consecutive failures never eject here: only the success rates can.
    let ejection =
        ejection_after(u32::MAX).with_success_rate(Duration::from_millis(300), 1.9, 10, 5);
    let config = test_config()
        .with_strategy(Strategy::Failover)
        .with_ejection(ejection)
        // Enough budget that no retry is refused: this test is about ejection.
        .with_budget(1.0, 1000);
    let client = cluster.client(config, 5).await;
    let bad = cluster.node("bad").stats();

    let mut calls = 0;
    while !node_status(&client, "bad").await.ejected {
        assert!(calls < 5_000, "bad not ejected after {calls} calls");
        let reply = client
            .send(Call::new("echo", SAY, say(&format!("m{calls}"))))
            .await
            .expect("client alive")
            .unwrap_or_else(|e| panic!("call {calls} failed: {e}"));
        assert_ne!(reply.node.id(), "bad");
        calls += 1;
    }
    let status = node_status(&client, "bad").await;
    assert_eq!(status.ejections, 1, "{status:?}");
    assert!(status.consecutive_failures < u32::MAX, "{status:?}");
    for id in good {
        let status = node_status(&client, id).await;
        assert!(!status.ejected && status.ejections == 0, "{status:?}");
    }
    let answered = bad.processed();
    served_by_the_others_at_once(&client, 30).await;
    assert_eq!(bad.processed(), answered, "the ejected node got a call");
}

#[actix_rt::test]
async fn with_health_check_a_node_saying_not_serving_is_not_picked_until_it_serves_again() {
    let (cluster, health) = cluster_with_a_watched_node().await;
    let config = test_config()
        .with_strategy(Strategy::Failfast)
        .with_health_check(true);
    let client = cluster.client(config, 2).await;

    assert!(
        wait_until(EVENTUALLY, || answered_by(client.clone(), "watched")).await,
        "watched is picked while it serves"
    );
    assert!(
        wait_until(EVENTUALLY, || answered_by(client.clone(), "a")).await,
        "a, without a health service, is picked"
    );

    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    assert!(
        unhealthy(&client, "watched").await,
        "NOT_SERVING marks watched unhealthy"
    );
    for i in 0..20 {
        let reply = client
            .send(Call::new("echo", SAY, say(&format!("m{i}"))))
            .await
            .expect("client alive")
            .unwrap_or_else(|e| panic!("call {i} failed: {e}"));
        assert_eq!(reply.node.id(), "a", "a node saying NOT_SERVING was picked");
    }
    let status = node_status(&client, "watched").await;
    assert!(
        !status.ejected && status.consecutive_failures == 0,
        "{status:?}"
    );

    health.set_service_status("", ServingStatus::Serving).await;
    assert!(
        wait_until(EVENTUALLY, || answered_by(client.clone(), "watched")).await,
        "watched is picked again once it says SERVING"
    );
    assert!(!node_status(&client, "a").await.unhealthy);
}

/// A cluster of `a` (a plain server, without the health service) and
/// `watched` (with it), and the health reporter of `watched`.
async fn cluster_with_a_watched_node() -> (Cluster, tonic_health::server::HealthReporter) {
    use registry_actor::Node;

    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    let (health, health_service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(EchoService::new("watched").into_server())
            .serve_with_incoming(support::tokio_stream_from(listener)),
    );
    let node = Node::new("watched", "echo", addr.to_string()).expect("node");
    cluster.add_served_elsewhere(node).await;
    (cluster, health)
}

/// Whether a call is answered by node `id`.
async fn answered_by(client: Addr<ClusterClient>, id: &'static str) -> bool {
    let reply = client
        .send(Call::new("echo", SAY, say("probe")))
        .await
        .expect("client alive")
        .expect("answered");
    reply.node.id() == id
}

async fn unhealthy(client: &Addr<ClusterClient>, id: &str) -> bool {
    let client = client.clone();
    let id = id.to_owned();
    wait_until(EVENTUALLY, move || {
        let (client, id) = (client.clone(), id.clone());
        async move { node_status(&client, &id).await.unhealthy }
    })
    .await
}

#[actix_rt::test]
async fn a_health_watch_that_ends_with_its_runtime_leaves_no_verdict_and_is_made_again() {
    let (cluster, health) = cluster_with_a_watched_node().await;
    let config = test_config()
        .with_strategy(Strategy::Failfast)
        .with_health_check(true);
    let client = cluster.client(config, 2).await;
    let handle = client.send(GetHandle).await.expect("client alive");

    // Calls from a runtime of their own reach `watched` first: its channel,
    // and its health watch, live on that runtime.
    let (answered_tx, answered_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let other = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            for i in 0..100 {
                let reply = handle
                    .call(Call::new("echo", SAY, say(&format!("m{i}"))))
                    .await
                    .expect("answered");
                if reply.node.id() == "watched" {
                    let _ = answered_tx.send(());
                    break;
                }
            }
            let _ = stop_rx.await;
        });
    });
    answered_rx
        .await
        .expect("watched answered on the other runtime");
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    assert!(unhealthy(&client, "watched").await, "NOT_SERVING seen");

    // The runtime stops, and the watch with it; `watched` then serves again
    // with no one watching.
    let _ = stop_tx.send(());
    let _ = tokio::task::spawn_blocking(move || other.join()).await;
    health.set_service_status("", ServingStatus::Serving).await;
    assert!(
        wait_until(EVENTUALLY, || answered_by(client.clone(), "watched")).await,
        "the ended watch's NOT_SERVING does not keep watched out"
    );
    // A new watch runs, on the runtime of the calls now.
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    assert!(unhealthy(&client, "watched").await, "watched again");
}
