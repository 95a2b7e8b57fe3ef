//! The cluster client end to end: real echo servers found through a real etcd.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cluster_client::{
    Broadcast, BudgetTokens, Call, CallOptions, Completion, GetHandle, Selector, ServiceStatus,
    Strategy,
};
use futures_util::stream::{self, StreamExt};
use grpc_cluster::echo::{
    EchoService, FailRequest, Gauge, SayRequest, SlowRequest, FAIL, PUSHBACK_HOOK, SAY, SLOW,
};
use support::cluster::{test_config, Cluster};
use support::{wait_until, EVENTUALLY};
use tonic::metadata::MetadataMap;
use tonic::Code;

fn say(message: &str) -> SayRequest {
    SayRequest {
        message: message.into(),
    }
}

fn fail(code: Code) -> FailRequest {
    FailRequest {
        code: code as i32,
        message: format!("asked for {code:?}"),
    }
}

/// Runs `work` on a 2-worker tokio runtime of its own thread, and awaits its
/// answer here without blocking this thread (the client's actors run on it).
async fn on_another_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (done, answer) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let _ = done.send(runtime.block_on(work));
    });
    let answer = answer.await.expect("the other thread answers");
    thread.join().expect("thread");
    answer
}

fn with_strategy(strategy: Strategy) -> CallOptions {
    CallOptions::new().with_strategy(strategy)
}

#[actix_rt::test]
async fn failfast_makes_one_attempt_and_its_error_names_the_node_and_the_code() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    let client = cluster.client(test_config(), 1).await;

    let err = client
        .send(
            Call::new("echo", FAIL, fail(Code::Unavailable))
                .with_options(with_strategy(Strategy::Failfast)),
        )
        .await
        .expect("client alive")
        .expect_err("the server fails it");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.attempts().len(), 1, "failfast never retries");
    assert_eq!(err.attempts()[0].node.id(), "a");
    assert_eq!(err.attempts()[0].code, Code::Unavailable);
    let text = err.to_string();
    assert!(
        text.contains("a@127.0.0.1:") && text.contains("Unavailable"),
        "{text}"
    );
    assert_eq!(cluster.node("a").stats().processed(), 1);
    let status: tonic::Status = err.into();
    assert_eq!(status.code(), Code::Unavailable);
}

#[actix_rt::test]
async fn failover_around_a_node_that_refuses_connections_loses_no_call() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    cluster.add_dead("dead").await;
    let client = cluster.client(test_config().with_retries(2), 3).await;

    let replies: Vec<_> = stream::iter(0..1000)
        .map(|i| {
            let client = client.clone();
            async move {
                client
                    .send(
                        Call::new("echo", SAY, say(&format!("m{i}")))
                            .with_options(with_strategy(Strategy::Failover)),
                    )
                    .await
                    .expect("client alive")
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut via_dead = 0;
    for reply in &replies {
        let reply = reply
            .as_ref()
            .unwrap_or_else(|e| panic!("a call failed: {e}"));
        let nodes: Vec<_> = reply.attempts.iter().map(|a| a.node.id()).collect();
        let unique: HashSet<_> = nodes.iter().collect();
        assert_eq!(
            unique.len(),
            nodes.len(),
            "a call tried a node twice: {nodes:?}"
        );
        assert_ne!(reply.node.id(), "dead");
        via_dead += usize::from(nodes.contains(&"dead"));
    }
    assert_eq!(replies.len(), 1000);
    assert!(
        via_dead > 0,
        "the dead node was tried at least once before its ejection"
    );
    let served = cluster.node("a").stats().processed() + cluster.node("b").stats().processed();
    assert_eq!(served, 1000, "each call processed exactly once");
    // The refusals were recognised as connection failures and ejected the node.
    let status = client
        .send(ServiceStatus("echo".into()))
        .await
        .expect("alive")
        .expect("known");
    let dead = status.node("dead").expect("still listed");
    assert!(
        dead.ejected || dead.ejections > 0,
        "dead node never ejected: {dead:?}"
    );

    // A non-retryable code is not retried.
    let err = client
        .send(
            Call::new("echo", FAIL, fail(Code::InvalidArgument))
                .with_options(with_strategy(Strategy::Failover)),
        )
        .await
        .expect("alive")
        .expect_err("fails");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.attempts().len(), 1, "INVALID_ARGUMENT is not retried");
}

#[actix_rt::test]
async fn failretry_retries_on_the_same_node_with_one_request_id() {
    let mut cluster = Cluster::start().await;
    cluster
        .add(EchoService::new("a").with_header_log(true), |n| n)
        .await;
    cluster
        .add(EchoService::new("b").with_header_log(true), |n| n)
        .await;
    let client = cluster.client(test_config().with_request_id(true), 2).await;

    let err = client
        .send(
            Call::new("echo", FAIL, fail(Code::Unavailable))
                .with_options(with_strategy(Strategy::Failretry).with_retries(3)),
        )
        .await
        .expect("alive")
        .expect_err("always fails");
    let nodes: HashSet<_> = err
        .attempts()
        .iter()
        .map(|a| a.node.id().to_owned())
        .collect();
    assert_eq!(err.attempts().len(), 4, "1 + 3 retries");
    assert_eq!(nodes.len(), 1, "every attempt on the same node");
    let node = nodes.into_iter().next().expect("one");
    let other = if node == "a" { "b" } else { "a" };
    assert_eq!(cluster.node(&node).stats().processed(), 4);
    assert_eq!(cluster.node(other).stats().processed(), 0);
    let ids = cluster.node(&node).stats().request_ids();
    assert_eq!(ids.len(), 4);
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one x-request-id across attempts: {ids:?}"
    );
}

#[actix_rt::test]
async fn forking_returns_the_first_reply_and_cancels_the_other_attempt() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("fast"), |n| n).await;
    cluster
        .add(
            EchoService::new("slow").with_slow_delay(Duration::from_secs(5)),
            |n| n,
        )
        .await;
    let client = cluster
        .client(test_config().with_timeout(Duration::from_secs(20)), 2)
        .await;

    let request = SlowRequest {
        message: "race".into(),
        delay_ms: 20,
    };
    let reply = client
        .send(Call::new("echo", SLOW, request).with_options(with_strategy(Strategy::Forking(2))))
        .await
        .expect("alive")
        .expect("the fast node answers");
    assert_eq!(reply.message.node_id, "fast");
    let slow = cluster.node("slow").stats();
    let cancelled = wait_until(EVENTUALLY, || {
        let slow = slow.clone();
        async move { slow.cancelled() == 1 }
    })
    .await;
    assert!(cancelled, "the slow node saw its attempt cancelled");
    assert_eq!(slow.processed(), 0);
}

#[actix_rt::test]
async fn broadcast_calls_every_node_in_parallel_and_quorum_returns_after_three() {
    let mut cluster = Cluster::start().await;
    let gauge = Arc::new(Gauge::default());
    for id in ["n1", "n2", "n3"] {
        cluster
            .add(EchoService::new(id).with_gauge(gauge.clone()), |n| n)
            .await;
    }
    for id in ["s4", "s5"] {
        let slow = EchoService::new(id)
            .with_gauge(gauge.clone())
            .with_slow_delay(Duration::from_secs(10));
        cluster.add(slow, |n| n).await;
    }
    let client = cluster
        .client(test_config().with_timeout(Duration::from_secs(30)), 5)
        .await;
    let request = SlowRequest {
        message: "all".into(),
        delay_ms: 300,
    };

    let quorum = client
        .send(Broadcast::new("echo", SLOW, request.clone()).with_completion(Completion::Quorum(3)))
        .await
        .expect("alive")
        .expect("broadcast");
    assert!(quorum.complete);
    assert_eq!(quorum.nodes.len(), 5, "one result per node");
    assert_eq!(quorum.successes(), 3);
    for r in &quorum.nodes {
        match r.node.id() {
            "s4" | "s5" => {
                assert_eq!(
                    r.result
                        .as_ref()
                        .map_err(tonic::Status::code)
                        .expect_err("cut short"),
                    Code::Cancelled
                )
            }
            _ => assert!(r.result.is_ok(), "{} failed", r.node.id()),
        }
    }
    assert_eq!(
        gauge.max(),
        5,
        "all five nodes ran the call at the same time"
    );
    let slow = [cluster.node("s4").stats(), cluster.node("s5").stats()];
    let cancelled = wait_until(EVENTUALLY, || {
        let slow = slow.clone();
        async move { slow.iter().all(|s| s.cancelled() == 1) }
    })
    .await;
    assert!(cancelled, "the two unfinished nodes were cancelled");
}

#[actix_rt::test]
async fn broadcast_first_success_returns_after_one_node_and_cancels_the_rest() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("fast"), |n| n).await;
    for id in ["slow1", "slow2"] {
        let slow = EchoService::new(id).with_slow_delay(Duration::from_secs(10));
        cluster.add(slow, |n| n).await;
    }
    let client = cluster
        .client(test_config().with_timeout(Duration::from_secs(30)), 3)
        .await;
    let request = SlowRequest {
        message: "first".into(),
        delay_ms: 10,
    };

    let reply = client
        .send(Broadcast::new("echo", SLOW, request).with_completion(Completion::FirstSuccess))
        .await
        .expect("alive")
        .expect("broadcast");
    assert!(reply.complete);
    assert_eq!(reply.nodes.len(), 3, "one result per node");
    assert_eq!(reply.successes(), 1);
    for r in &reply.nodes {
        match r.node.id() {
            "fast" => assert_eq!(r.result.as_ref().expect("fast answers").node_id, "fast"),
            _ => assert_eq!(
                r.result
                    .as_ref()
                    .map_err(tonic::Status::code)
                    .expect_err("cut short"),
                Code::Cancelled
            ),
        }
    }
    let slow = [cluster.node("slow1").stats(), cluster.node("slow2").stats()];
    let cancelled = wait_until(EVENTUALLY, || {
        let slow = slow.clone();
        async move { slow.iter().all(|s| s.cancelled() == 1) }
    })
    .await;
    assert!(cancelled, "the slow nodes saw their calls cancelled");

    // When every node fails, first_success is not met and every failure is listed.
    let failed = client
        .send(
            Broadcast::new("echo", FAIL, fail(Code::Internal))
                .with_completion(Completion::FirstSuccess),
        )
        .await
        .expect("alive")
        .expect("broadcast");
    assert!(!failed.complete);
    assert_eq!(failed.successes(), 0);
    assert!(failed
        .nodes
        .iter()
        .all(|r| r.result.as_ref().map_err(tonic::Status::code).err() == Some(Code::Internal)));
}

#[actix_rt::test]
async fn broadcast_all_returns_one_result_per_node_and_multicast_reaches_one_group() {
    let mut cluster = Cluster::start().await;
    for (id, group) in [
        ("b1", "blue"),
        ("b2", "blue"),
        ("g1", "green"),
        ("g2", "green"),
        ("g3", "green"),
    ] {
        cluster
            .add(EchoService::new(id), |n| n.with_group(group))
            .await;
    }
    let client = cluster.client(test_config(), 5).await;

    let all = client
        .send(Broadcast::new("echo", SAY, say("everyone")))
        .await
        .expect("alive")
        .expect("broadcast");
    let ids: Vec<_> = all.nodes.iter().map(|r| r.node.id().to_owned()).collect();
    assert_eq!(ids, ["b1", "b2", "g1", "g2", "g3"]);
    assert!(all.complete && all.successes() == 5);
    for r in &all.nodes {
        assert_eq!(
            r.result.as_ref().expect("ok").node_id,
            r.node.id(),
            "each answer from its node"
        );
    }

    let blue = CallOptions::new().with_selector(Selector::new().with_group("blue"));
    let multicast = client
        .send(Broadcast::new("echo", SAY, say("blue only")).with_options(blue))
        .await
        .expect("alive")
        .expect("multicast");
    let ids: Vec<_> = multicast
        .nodes
        .iter()
        .map(|r| r.node.id().to_owned())
        .collect();
    assert_eq!(ids, ["b1", "b2"]);
    for id in ["g1", "g2", "g3"] {
        assert_eq!(
            cluster.node(id).stats().processed(),
            1,
            "{id} got only the broadcast"
        );
    }
    for id in ["b1", "b2"] {
        assert_eq!(cluster.node(id).stats().processed(), 2);
    }
}

/// The shape of grpc-go's TestRetryThrottling: a scripted sequence of calls,
/// with the budget's token count checked after each.
#[actix_rt::test]
async fn retry_budget_follows_a_scripted_failure_pattern_exactly() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    // 0.5 token per call, no time-based reserve: the count depends on calls alone.
    let config = test_config().with_budget(0.5, 0).with_retries(1);
    let client = cluster.client(config, 2).await;

    // (what, fails?, attempts expected, milli-tokens after)
    let script: &[(&str, bool, usize, u64)] = &[
        ("fail: 0.5 deposited, not enough to retry", true, 1, 500),
        ("fail: 1.0, one retry spends it", true, 2, 0),
        ("fail: 0.5 again", true, 1, 500),
        ("ok: 1.0", false, 1, 1000),
        ("ok: capped at 1.0", false, 1, 1000),
        ("fail: retries with the banked token", true, 2, 0),
        ("fail: 0.5", true, 1, 500),
    ];
    for (what, fails, attempts, tokens) in script {
        let options = with_strategy(Strategy::Failover);
        let made = if *fails {
            client
                .send(Call::new("echo", FAIL, fail(Code::Unavailable)).with_options(options))
                .await
                .expect("alive")
                .expect_err(what)
                .attempts()
                .len()
        } else {
            client
                .send(Call::new("echo", SAY, say(what)).with_options(options))
                .await
                .expect("alive")
                .expect(what)
                .attempts
                .len()
        };
        assert_eq!(made, *attempts, "{what}: attempts");
        let left = client
            .send(BudgetTokens("echo".into()))
            .await
            .expect("alive");
        assert_eq!(left, *tokens, "{what}: tokens after");
    }
}

#[actix_rt::test]
async fn resource_exhausted_honours_the_pushback_and_a_negative_one_stops_retries() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    let client = cluster.client(test_config(), 2).await;
    let pushback = |ms: &str| {
        let mut md = MetadataMap::new();
        md.insert(PUSHBACK_HOOK, ms.parse().expect("ascii"));
        md
    };

    // Failretry stays on the node: the retry waits out the 200 ms pushback.
    let started = std::time::Instant::now();
    let err = client
        .send(
            Call::new("echo", FAIL, fail(Code::ResourceExhausted)).with_options(
                with_strategy(Strategy::Failretry)
                    .with_retries(1)
                    .with_metadata(pushback("200")),
            ),
        )
        .await
        .expect("alive")
        .expect_err("always exhausted");
    assert_eq!(err.attempts().len(), 2);
    assert_eq!(err.attempts()[0].node, err.attempts()[1].node);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "retried before the pushback passed"
    );

    // Failover moves to another node at once.
    let err = client
        .send(
            Call::new("echo", FAIL, fail(Code::ResourceExhausted))
                .with_options(with_strategy(Strategy::Failover).with_metadata(pushback("200"))),
        )
        .await
        .expect("alive")
        .expect_err("always exhausted");
    let nodes: HashSet<_> = err.attempts().iter().map(|a| a.node.id()).collect();
    assert_eq!(nodes.len(), 2, "moved to the other node");
    let status: tonic::Status = err.clone().into();
    assert_eq!(
        status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .map(|v| v.to_str().ok()),
        Some(Some("200"))
    );

    // A negative pushback means "do not retry".
    for strategy in [Strategy::Failover, Strategy::Failretry] {
        let err = client
            .send(
                Call::new("echo", FAIL, fail(Code::ResourceExhausted))
                    .with_options(with_strategy(strategy).with_metadata(pushback("-1"))),
            )
            .await
            .expect("alive")
            .expect_err("exhausted");
        assert_eq!(
            err.attempts().len(),
            1,
            "{strategy}: no retry after a negative pushback"
        );
    }
}

#[actix_rt::test]
async fn deadline_shorter_than_the_call_ends_it_and_is_sent_as_grpc_timeout() {
    let mut cluster = Cluster::start().await;
    cluster
        .add(EchoService::new("a").with_header_log(true), |n| n)
        .await;
    let client = cluster.client(test_config(), 1).await;

    let request = SlowRequest {
        message: "too slow".into(),
        delay_ms: 500,
    };
    let err = client
        .send(Call::new("echo", SLOW, request).with_options(
            with_strategy(Strategy::Failover).with_timeout(Duration::from_millis(50)),
        ))
        .await
        .expect("alive")
        .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(
        err.attempts().len() <= 1,
        "no attempt starts after the deadline"
    );
    let timeouts = cluster.node("a").stats().grpc_timeouts();
    assert_eq!(timeouts.len(), 1, "the server received a grpc-timeout");
    let value = &timeouts[0];
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().expect("grpc-timeout digits");
    let sent = match unit {
        "n" => Duration::from_nanos(n),
        "u" => Duration::from_micros(n),
        "m" => Duration::from_millis(n),
        "S" => Duration::from_secs(n),
        other => panic!("unexpected grpc-timeout unit {other}"),
    };
    assert!(
        sent <= Duration::from_millis(50) && sent > Duration::ZERO,
        "grpc-timeout {value}"
    );
}

#[actix_rt::test]
async fn calls_to_a_service_with_no_nodes_wait_for_one_to_register() {
    let mut cluster = Cluster::start().await;
    let config = test_config().with_discovery_timeout(EVENTUALLY);
    // Seen, with an empty node set.
    let client = cluster.client(config, 0).await;

    let call = actix_rt::spawn(client.send(Call::new("echo", SAY, say("early"))));
    let broadcast = actix_rt::spawn(client.send(Broadcast::new("echo", SAY, say("early all"))));
    cluster.add(EchoService::new("late"), |n| n).await;

    let reply = call
        .await
        .expect("task")
        .expect("alive")
        .expect("the call waited for the node");
    assert_eq!(reply.node.id(), "late");
    assert_eq!(reply.message.message, "early");
    let all = broadcast
        .await
        .expect("task")
        .expect("alive")
        .expect("the broadcast waited for the node");
    let ids: Vec<_> = all.nodes.iter().map(|r| r.node.id().to_owned()).collect();
    assert_eq!(ids, ["late"]);
    assert_eq!(all.successes(), 1);
}

#[actix_rt::test]
async fn unknown_service_and_strict_selector_fail_with_clear_errors() {
    let mut cluster = Cluster::start().await;
    cluster
        .add(EchoService::new("a"), |n| n.with_version("1.0.0"))
        .await;
    let config = test_config().with_discovery_timeout(Duration::from_millis(300));
    let client = cluster.client(config, 1).await;

    let err = client
        .send(Call::new("nosuch", SAY, say("x")))
        .await
        .expect("alive")
        .expect_err("no nodes");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.to_string().contains("nosuch"), "{err}");

    let strict = Selector::new()
        .with_version(">=2, <3")
        .expect("range")
        .with_fallback(cluster_client::Fallback::Strict);
    let err = client
        .send(
            Call::new("echo", SAY, say("x")).with_options(CallOptions::new().with_selector(strict)),
        )
        .await
        .expect("alive")
        .expect_err("no match");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.to_string().contains("1.0.0"),
        "names the versions available: {err}"
    );
}

#[actix_rt::test]
async fn a_client_handle_runs_calls_from_another_threads_runtime_with_the_same_state() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    cluster.add_dead("dead").await;
    let client = cluster.client(test_config().with_retries(2), 3).await;
    let handle = client.send(GetHandle).await.expect("alive");

    // 400 failover calls spawned as tasks of a multi-threaded runtime on another
    // thread: the futures are Send and 'static.
    let remote = handle.clone();
    let (replies, broadcast) = on_another_runtime(async move {
        // 32 in flight, as the retry budget (20 % + 10) is sized for a
        // steady flow, not for 400 first attempts at once.
        let replies: Vec<_> = stream::iter(0..400)
            .map(|i| {
                let call = Call::new("echo", SAY, say(&format!("m{i}")))
                    .with_options(with_strategy(Strategy::Failover));
                tokio::spawn(remote.call(call))
            })
            .buffer_unordered(32)
            .map(|joined| joined.expect("task"))
            .collect()
            .await;
        let broadcast = remote
            .broadcast(Broadcast::new("echo", SAY, say("all")))
            .await;
        (replies, broadcast)
    })
    .await;

    for reply in &replies {
        let reply = reply
            .as_ref()
            .unwrap_or_else(|e| panic!("a call failed: {e}"));
        assert_ne!(reply.node.id(), "dead");
        assert_eq!(
            reply.attempts.last().map(|a| a.node.id()),
            Some(reply.node.id())
        );
    }
    let served = cluster.node("a").stats().processed() + cluster.node("b").stats().processed();
    assert_eq!(
        served,
        400 + 2,
        "each call processed once, and the broadcast's two"
    );
    // The handle and the actor share the picker, its ejections and the budget.
    let status = handle.status("echo").await.expect("status");
    let dead = status.node("dead").expect("still listed");
    assert!(
        dead.ejected,
        "the refusals seen through the handle ejected it: {dead:?}"
    );
    let broadcast = broadcast.expect("broadcast");
    let ids: Vec<_> = broadcast.nodes.iter().map(|r| r.node.id()).collect();
    assert_eq!(ids, ["a", "b"], "one result per node not ejected");
    assert_eq!(broadcast.successes(), 2);
    // One budget: with no call in between, the reserve only refills, so the
    // actor's reading lies between two of the handle's.
    let before = handle.budget_tokens("echo");
    let tokens = client
        .send(BudgetTokens("echo".into()))
        .await
        .expect("alive");
    let after = handle.budget_tokens("echo");
    assert!(
        (before..=after).contains(&tokens),
        "the actor reads the handle's budget: {before} <= {tokens} <= {after}"
    );
}

#[actix_rt::test]
async fn a_request_id_is_sent_only_when_configured() {
    let mut cluster = Cluster::start().await;
    cluster
        .add(EchoService::new("a").with_header_log(true), |n| n)
        .await;
    let client = cluster.client(test_config(), 1).await;
    for i in 0..3 {
        client
            .send(Call::new("echo", SAY, say(&format!("m{i}"))))
            .await
            .expect("alive")
            .expect("call");
    }
    let stats = cluster.node("a").stats();
    assert_eq!(stats.processed(), 3);
    assert!(
        stats.request_ids().is_empty(),
        "no x-request-id by default: {:?}",
        stats.request_ids()
    );
    assert_eq!(
        stats.grpc_timeouts().len(),
        3,
        "the deadline is always sent"
    );
}

#[actix_rt::test]
async fn channels_are_made_on_the_runtime_of_their_calls_off_the_actix_thread() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    let client = cluster.client(test_config(), 2).await;
    let handle = client.send(GetHandle).await.expect("alive");
    assert_eq!(handle.status("echo").await.expect("status").connections, 0);

    // Calls from tasks of a multi-threaded tokio runtime on another thread.
    let remote = handle.clone();
    let actix_thread = std::thread::current().id();
    let (served, tasks, threads) = on_another_runtime(async move {
        let runtime = tokio::runtime::Handle::current();
        let idle = runtime.metrics().num_alive_tasks();
        let replies: Vec<_> = stream::iter(0..200)
            .map(|i| tokio::spawn(remote.call(Call::new("echo", SAY, say(&format!("m{i}"))))))
            .buffer_unordered(16)
            .map(|joined| joined.expect("task").map(|r| r.node.id().to_owned()))
            .collect()
            .await;
        // The channels' tasks (request buffer, HTTP/2 connection) live on this
        // runtime, on its worker threads.
        let tasks = runtime.metrics().num_alive_tasks().saturating_sub(idle);
        let threads: HashSet<_> = stream::iter(0..8)
            .map(|_| tokio::spawn(async { std::thread::current().id() }))
            .buffer_unordered(8)
            .map(|joined| joined.expect("task"))
            .collect()
            .await;
        (replies, tasks, threads)
    })
    .await;
    let served: HashSet<String> = served
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("a call failed: {e}")))
        .collect();
    assert_eq!(served.len(), 2, "both nodes served");
    assert!(
        tasks >= 2,
        "each node's channel runs on the calling runtime: {tasks} tasks"
    );
    assert!(!threads.contains(&actix_thread), "off the actix thread");
    assert!(
        handle.io_runtime().is_none(),
        "the client's own I/O runtime is not needed"
    );
    let status = handle.status("echo").await.expect("status");
    assert_eq!(
        status.connections, 2,
        "one channel per node on that runtime"
    );

    // Calls from the actix thread get channels of their own, on this thread.
    for i in 0..4 {
        handle
            .call(Call::new("echo", SAY, say(&format!("here{i}"))))
            .await
            .expect("call");
    }
    let status = handle.status("echo").await.expect("status");
    assert_eq!(
        status.connections, 4,
        "and one per node on the actix runtime"
    );
}

#[actix_rt::test]
async fn a_dedicated_io_runtime_carries_every_channel() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    let client = cluster.client(test_config().with_io_threads(2), 2).await;
    let handle = client.send(GetHandle).await.expect("alive");
    for i in 0..20 {
        handle
            .call(Call::new("echo", SAY, say(&format!("m{i}"))))
            .await
            .expect("call");
    }
    let io = handle
        .io_runtime()
        .expect("started by the first call")
        .clone();
    assert_eq!(io.metrics().num_workers(), 2, "client.io_threads");
    let alive = io.metrics().num_alive_tasks();
    assert!(
        alive >= 2,
        "the channels' tasks live on the I/O runtime: {alive}"
    );
    let io_thread = io
        .spawn(async { std::thread::current().id() })
        .await
        .expect("I/O runtime task");
    assert_ne!(io_thread, std::thread::current().id());
    assert_eq!(handle.status("echo").await.expect("status").connections, 2);
}

#[actix_rt::test]
async fn least_request_by_reload_counts_the_calls_in_flight_of_existing_connections() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    let client = cluster.client(test_config(), 2).await;
    let handle = client.send(GetHandle).await.expect("alive");
    // Both connections made under round_robin.
    for i in 0..4 {
        handle
            .call(Call::new("echo", SAY, say(&format!("m{i}"))))
            .await
            .expect("call");
    }
    handle
        .update_config(test_config().with_balancer(cluster_client::Balancer::LeastRequest))
        .expect("reload");
    // Four calls held open on the servers.
    let slow = SlowRequest {
        message: "hold".into(),
        delay_ms: 30_000,
    };
    let held: Vec<_> = (0..4)
        .map(|_| {
            let call = Call::new("echo", SLOW, slow.clone())
                .with_options(CallOptions::new().with_timeout(Duration::from_secs(30)));
            actix::spawn(handle.call(call))
        })
        .collect();
    let counted = wait_until(EVENTUALLY, || async {
        let status = handle.status("echo").await.expect("status");
        status.nodes.iter().map(|n| n.in_flight).sum::<u32>() == 4
    })
    .await;
    assert!(
        counted,
        "least_request sees the calls in flight: {:?}",
        handle.status("echo").await.expect("status").nodes
    );
    for call in held {
        call.abort();
    }
}

/// An echo server `a` on a fresh loopback port that counts the connections
/// it accepts, registered in `cluster`; stops when the sender is dropped.
async fn counting_server(
    cluster: &mut Cluster,
) -> (
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let incoming = support::tokio_stream_from(listener).inspect(move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    actix::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoService::new("a").into_server())
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let node = registry_actor::Node::new("a", "echo", addr.to_string()).expect("node");
    cluster.add_served_elsewhere(node).await;
    (accepted, stop)
}

/// The first calls to a node, made at once, open one connection between them:
/// those that find it being made wait for it.
#[actix_rt::test]
async fn calls_made_at_once_to_a_new_node_share_one_connection() {
    let mut cluster = Cluster::start().await;
    let (accepted, _stop) = counting_server(&mut cluster).await;
    let client = cluster.client(test_config(), 1).await;
    let handle = client.send(GetHandle).await.expect("alive");

    let calls = (0..32).map(|i| handle.call(Call::new("echo", SAY, say(&format!("m{i}")))));
    for reply in futures_util::future::join_all(calls).await {
        let reply = reply.expect("every call is answered");
        assert_eq!(reply.node.id(), "a");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "32 calls at once made one connection"
    );
}

/// In short-connection mode every call connects afresh, and is answered.
#[actix_rt::test]
async fn short_connections_connect_once_per_call() {
    let mut cluster = Cluster::start().await;
    let (accepted, _stop) = counting_server(&mut cluster).await;
    let client = cluster
        .client(test_config().with_short_connection(true), 1)
        .await;
    for i in 0..3 {
        let reply = client
            .send(Call::new("echo", SAY, say(&format!("m{i}"))))
            .await
            .expect("alive")
            .expect("the call is answered");
        assert_eq!(reply.message.message, format!("m{i}"));
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one connection per call"
    );
}

/// A reply type whose decoding panics: the only way found for a call's own
/// code to panic inside the client actor.
#[derive(Clone, Debug, Default, PartialEq)]
struct PanicsWhenDecoded;

impl prost::Message for PanicsWhenDecoded {
    fn encode_raw(&self, _: &mut impl prost::bytes::BufMut) {}

    fn merge_field(
        &mut self,
        _: u32,
        _: prost::encoding::WireType,
        _: &mut impl prost::bytes::Buf,
        _: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        panic!("decoding PanicsWhenDecoded");
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {}
}

#[actix_rt::test]
async fn a_call_that_panics_in_the_client_actor_ends_alone_and_the_actor_serves_the_next() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    let client = cluster.client(test_config(), 1).await;
    let panicking =
        cluster_client::Method::<SayRequest, PanicsWhenDecoded>::from_static("/echo.v1.Echo/Say");

    for round in 0..2 {
        let answer = client
            .send(Call::new("echo", panicking.clone(), say("boom")))
            .await;
        assert!(
            answer.is_err(),
            "round {round}: the answer is dropped: {answer:?}"
        );
        let reply = client
            .send(Call::new("echo", SAY, say("after")))
            .await
            .unwrap_or_else(|e| panic!("round {round}: the actor is alive: {e}"))
            .expect("the next call is answered");
        assert_eq!(reply.message.message, "after");
    }
    assert_eq!(cluster.node("a").stats().processed(), 4);
}
