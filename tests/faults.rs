//! Fault injection under load, with exact accounting.
//!
//! Real `echo-server` processes (the example binary, killed with real signals),
//! a private real etcd, and a bounded, paced load from a `ClusterClient` (a rate,
//! a count and a time limit). Every call sent ends as a record: a success with
//! the node that answered and its attempts, or an error with its code and
//! attempts, or a hang (no answer by its deadline plus a margin) — and each test
//! says what it reconciles with the servers' own counts (`echo totals:
//! processed N`, printed by each process after its graceful shutdown).
//!
//! The scenarios copy etcd's robustness tests (kill, restart, outage,
//! compaction under load) and grpc-go's drain tests (a graceful stop loses no
//! call). They run one at a time (`one_at_a_time`): each owns the machine's two
//! cores while it measures. Nothing waits by sleeping: waits poll a condition
//! with a deadline; the only sleeps are the behaviour itself (etcd kept down
//! for 10 s, the load's send pacing). Each test prints its figures on a line
//! starting with `FAULTS` (`cargo test --test faults -- --nocapture`).
//!
//! The `echo-server` processes run with the shipped configuration defaults
//! (lame duck 1 s, drain timeout 10 s, ...) except for a 2 s lease TTL and a
//! 100 ms–1 s registry backoff (`CHILD_SETTINGS`, as environment overrides of
//! the layered configuration), from an empty configuration directory of their
//! own. Where a bound depends on the TTL, the tests read the TTL etcd granted.

mod support;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cluster_client::{Call, CallOptions, ClientConfig, EjectionConfig, Strategy};
use grpc_cluster::echo::{EchoService, FailRequest, SlowRequest, FAIL, SLOW};
use support::faults::*;
use support::{init_tracing, wait_until, EtcdServer, EVENTUALLY};
use tonic::Code;

/// Scenario 1: `kill -9` of one of three backends in the middle of a failover
/// load of idempotent `Say` calls: no call fails.
///
/// Reconciled: the two survivors (stopped gracefully at the end) processed
/// exactly the successes the client got from them. The killed process cannot
/// report; the calls it acknowledged are the successes the client got from it,
/// so survivors' processed + killed's acknowledged == successes. (It may have
/// processed a few more whose answers died with it: those calls were failed
/// over, and `Say` is idempotent.)
#[actix_rt::test]
async fn kill_9_of_one_backend_under_failover_load_loses_no_call() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let Scenario {
        mut servers,
        client,
        load,
        ..
    } = Scenario::failover(&etcd, &["k9-1", "k9-2", "k9-3"], &etcd.registry_config()).await;

    let killed = servers[0].kill9();
    let victim = killed.addr.clone();
    // Ejected after its connection failures, unless its lease expired first.
    let ejected = wait_status(&client, LEASE_WAIT, |s| {
        s.nodes.iter().all(|n| n.addr != victim || n.ejected)
    })
    .await
    .filter(|s| s.nodes.iter().any(|n| n.addr == victim))
    .map(|_| killed.signalled.elapsed());
    let removed = wait_status(&client, LEASE_WAIT, |s| {
        s.nodes.iter().all(|n| n.addr != victim)
    })
    .await;
    assert!(
        removed.is_some(),
        "the killed node leaves the client's set once its lease expires"
    );
    let removed_after = killed.signalled.elapsed();
    wait_more_calls(&load, 2 * RATE as usize).await;
    let report = load.stop().await;
    let exits = stop_all(&mut servers[1..]).await;

    assert_no_call_failed(&report);
    let mut failed_over = 0;
    for r in &report.records {
        let addrs: BTreeSet<&str> = r.attempts().iter().map(|a| a.node.addr()).collect();
        assert_eq!(addrs.len(), r.attempts().len(), "a node tried twice: {r:?}");
        if r.is_ok() {
            for before in &r.attempts()[..r.attempts().len() - 1] {
                assert_eq!(
                    before.node.addr(),
                    victim,
                    "only the killed node fails: {r:?}"
                );
                assert_eq!(before.code, Code::Unavailable, "{r:?}");
            }
            failed_over += usize::from(r.attempts().len() > 1);
        }
    }
    let survivors = reconcile(&report, &exits);
    let acknowledged = report.successes_at(&victim);
    assert_eq!(
        survivors + acknowledged,
        report.successes() as u64,
        "survivors' processed + the killed node's acknowledged == successes"
    );
    let last_failed_over = report
        .records
        .iter()
        .filter(|r| r.attempts().len() > 1)
        .map(|r| r.done.saturating_duration_since(killed.signalled))
        .max()
        .unwrap_or_default();
    eprintln!(
        "FAULTS 1 kill-9 failover: calls {} errors {} attempts {} failed-over calls {} \
         (last {} after the kill); \
         ejected after {}; removed from the client after {}; \
         survivors processed {survivors} + killed acknowledged {acknowledged}",
        report.calls(),
        report.failures().len(),
        report.attempts(),
        failed_over,
        secs(last_failed_over),
        ejected.map_or("never".into(), secs),
        secs(removed_after),
    );
}

/// Scenario 2: The same kill with failfast: the only calls that fail are calls that
/// were in flight on the killed node, and they fail with `UNAVAILABLE`.
///
/// "In flight" as the client can know it ([`Killed::caught`]): sent to the node
/// and not ended when it was killed, and sent before the client saw the first
/// call fail on it. A client learns that a node died only from a call failing
/// on it; every call sent after that must avoid the node, so this client ejects
/// a node at its first connection failure (the default waits for 5), for longer
/// than the killed node's lease lives. The calls are `Slow` (100 ms) so that
/// the kill finds calls in flight.
///
/// Reconciled: survivors' processed == their successes; calls == successes +
/// failures.
#[actix_rt::test]
async fn kill_9_under_failfast_fails_only_calls_in_flight_on_the_killed_node_with_unavailable() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let config = ClientConfig::default().with_ejection(
        EjectionConfig::default()
            .with_failures(1)
            .with_base_time(Duration::from_secs(60))
            .with_max_time(Duration::from_secs(60)),
    );
    let Scenario {
        mut servers,
        client,
        load,
        ..
    } = Scenario::start(
        &etcd,
        &["ff-1", "ff-2", "ff-3"],
        &etcd.registry_config(),
        config,
        LoadPlan::new(RATE, LOAD_LIMIT),
        |seq| {
            Call::new(
                "echo",
                SLOW,
                SlowRequest {
                    message: format!("m{seq}"),
                    delay_ms: 100,
                },
            )
            .with_options(CallOptions::new().with_strategy(Strategy::Failfast))
        },
    )
    .await;

    let killed = servers[0].kill9();
    let victim = killed.addr.clone();
    let removed = wait_status(&client, LEASE_WAIT, |s| {
        s.nodes.iter().all(|n| n.addr != victim)
    })
    .await;
    assert!(
        removed.is_some(),
        "the killed node leaves the client's set once its lease expires"
    );
    wait_more_calls(&load, 2 * RATE as usize).await;
    let report = load.stop().await;
    let exits = stop_all(&mut servers[1..]).await;

    eprintln!("{}", report.summary());
    let known = killed.known_dead_at(&report.records);
    assert!(known.is_some(), "the client saw the node fail");
    let in_flight = report
        .records
        .iter()
        .filter(|r| killed.caught(r, known))
        .count();
    let at_kill = report
        .records
        .iter()
        .filter(|r| killed.caught(r, known) && r.sent < killed.signalled)
        .count();
    let failures = report.failures();
    for r in &failures {
        assert!(
            killed.caught(r, known),
            "a failed call was not in flight on the killed node: {r:?}"
        );
        assert_eq!(r.attempts().len(), 1, "failfast makes one attempt: {r:?}");
        assert_eq!(r.code(), Some(Code::Unavailable), "{r:?}");
    }
    assert!(
        failures.len() <= in_flight,
        "{} failures, {in_flight} calls in flight on the killed node",
        failures.len()
    );
    let failed_after_kill = failures
        .iter()
        .filter(|r| r.sent >= killed.signalled)
        .count();
    let survivors = reconcile(&report, &exits);
    assert_eq!(
        survivors + report.successes_at(&victim),
        report.successes() as u64
    );
    assert_eq!(report.successes() + failures.len(), report.calls());
    eprintln!(
        "FAULTS 2 kill-9 failfast: calls {} errors {} ({:?}); {in_flight} calls in flight on the killed node ({at_kill} sent before \
         the kill, {} after it before the client saw it fail; {failed_after_kill} of these \
         failed); client saw it fail {} after the kill; killed acknowledged {}",
        report.calls(),
        failures.len(),
        report.by_code(),
        in_flight - at_kill,
        secs(known.map_or(Duration::ZERO, |k| {
            k.saturating_duration_since(killed.signalled)
        })),
        report.successes_at(&victim),
    );
}

/// Scenario 3: A rolling graceful restart of all three backends under a failfast load
/// of `Say`: SIGTERM one, wait for its exit, start it again (same id, new
/// port), wait until the client lists it, then the next. No call fails.
///
/// Reconciled, per process (the three originals and the three restarted):
/// processed on the server == successes the client got from it, and the sum
/// == calls. With failfast every call is one attempt, so this is exact:
/// nothing lost, nothing doubled.
#[actix_rt::test]
async fn rolling_graceful_restart_under_failfast_load_loses_and_doubles_nothing() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let ids = ["rr-1", "rr-2", "rr-3"];
    let Scenario {
        mut servers,
        client,
        load,
        ..
    } = Scenario::start(
        &etcd,
        &ids,
        &etcd.registry_config(),
        ClientConfig::default(),
        LoadPlan::new(RATE, LOAD_LIMIT),
        say_call(Strategy::Failfast),
    )
    .await;

    let mut exits = Vec::new();
    let mut steps = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let began = Instant::now();
        let addr = servers[i].addr();
        let exit = servers[i].stop_gracefully().await;
        let stopped = began.elapsed();
        exits.push((addr, exit));
        servers[i] = EchoProcess::start(&etcd, id).await;
        wait_listed(&client, &servers.iter().collect::<Vec<_>>()).await;
        let listed = began.elapsed();
        wait_serving(&load, &[&servers[i]], WARM).await;
        steps.push(format!(
            "{id}: exited after {}, new one listed after {}",
            secs(stopped),
            secs(listed)
        ));
    }
    wait_more_calls(&load, RATE as usize).await;
    let report = load.stop().await;
    exits.extend(stop_all(&mut servers).await);

    assert_no_call_failed(&report);
    assert_eq!(
        report.attempts(),
        report.calls(),
        "failfast: one attempt per call"
    );
    let processed = reconcile(&report, &exits);
    assert_eq!(
        processed,
        report.calls() as u64,
        "processed on all servers == successes == calls"
    );
    let drained: Vec<String> = exits[..3]
        .iter()
        .map(|(_, e)| {
            format!(
                "in flight {} drained {}",
                number_after(&e.report, "in flight").unwrap_or(0),
                number_after(&e.report, "drained").unwrap_or(0)
            )
        })
        .collect();
    eprintln!(
        "FAULTS 3 rolling restart failfast: calls {} errors 0 attempts {} processed {processed} \
         (6 processes); restarts: {}; at each SIGTERM: {}",
        report.calls(),
        report.attempts(),
        steps.join("; "),
        drained.join(", ")
    );
}

/// Scenario 3b: the rolling graceful restart of scenario 3 with the client's
/// etcd watch held back: etcd is frozen (SIGSTOP) for the whole restart, so
/// the client hears nothing from the registry and no server can deregister.
/// Each backend restarts on its own address. The client watches the servers'
/// health (`client.health_check`): a server kit says `NOT_SERVING` first thing
/// when it shuts down, so the client stops picking it at once, while it still
/// serves (deregistration timeout, lame duck) and well before its GOAWAY; the
/// new process is picked again once it says `SERVING`. Failfast: no call fails
/// and none needs a second attempt.
///
/// Reconciled per address (the original process and its restart share it):
/// processed on both == successes the client got there, and the sum == calls.
#[actix_rt::test]
async fn rolling_graceful_restart_with_etcd_frozen_loses_nothing_thanks_to_health() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let ids = ["hr-1", "hr-2", "hr-3"];
    let Scenario {
        mut servers,
        client,
        load,
        ..
    } = Scenario::start(
        &etcd,
        &ids,
        &etcd.registry_config(),
        ClientConfig::default().with_health_check(true),
        LoadPlan::new(RATE, LOAD_LIMIT),
        say_call(Strategy::Failfast),
    )
    .await;
    let revision = echo_status(&client).await.revision;

    etcd.pause().expect("etcd freezes");
    let mut exits = Vec::new();
    let mut steps = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let began = Instant::now();
        let addr = servers[i].addr();
        let exit = servers[i].stop_gracefully().await;
        let stopped = began.elapsed();
        assert!(
            !exit.report.contains("key gone from etcd"),
            "etcd is frozen: no deregistration can be confirmed: {}",
            exit.report
        );
        exits.push((addr.clone(), exit));
        let served_before = load.count(|r| r.ok_addr() == Some(addr.as_str()));
        servers[i] = EchoProcess::start_on(&etcd, id, &addr).await;
        let served = load
            .wait_for(PROCESS_DEADLINE, served_before + WARM, |r| {
                r.ok_addr() == Some(addr.as_str())
            })
            .await;
        assert!(served, "the restarted {id} answered {WARM} calls");
        steps.push(format!(
            "{id}: exited after {}, serving again after {}",
            secs(stopped),
            secs(began.elapsed())
        ));
    }
    wait_more_calls(&load, RATE as usize).await;
    assert_eq!(
        echo_status(&client).await.revision,
        revision,
        "the client heard nothing from etcd during the restart"
    );
    let report = load.stop().await;
    etcd.resume().expect("etcd thaws");
    exits.extend(stop_all(&mut servers).await);

    assert_no_call_failed(&report);
    assert_eq!(
        report.attempts(),
        report.calls(),
        "failfast: one attempt per call"
    );
    let mut processed = 0;
    for (addr, _) in &exits[..3] {
        let here: Vec<_> = exits.iter().filter(|(a, _)| a == addr).collect();
        assert_eq!(here.len(), 2, "{addr}: the original and its restart");
        let on_servers: u64 = here.iter().map(|(_, e)| e.processed).sum();
        assert_eq!(
            on_servers,
            report.successes_at(addr),
            "{addr}: processed on its two processes == successes the client got there"
        );
        for (_, exit) in here {
            // ", cancelled N": a failed deregistration's reason may say
            // "cancelled" too.
            assert_eq!(
                number_after(&exit.report, ", cancelled"),
                Some(0),
                "{addr}: nothing cancelled by the drain deadline: {}",
                exit.report
            );
        }
        processed += on_servers;
    }
    assert_eq!(processed, report.calls() as u64, "processed == calls");
    eprintln!(
        "FAULTS 3b rolling restart, etcd frozen, health watched: calls {} errors 0 attempts {} \
         processed {processed} (6 processes); restarts: {}",
        report.calls(),
        report.attempts(),
        steps.join("; ")
    );
}

/// How long etcd stays down in scenario 4.
const OUTAGE: Duration = Duration::from_secs(10);

/// Scenario 4: etcd killed for 10 s under a failover load, then restarted on the same
/// ports and data: no call fails, the client keeps its last known set
/// throughout, and every node keeps its key alive again after etcd's return
/// (never missing, and still on a live lease twice its TTL later).
///
/// Reconciled: each process processed exactly its successes, and they sum to
/// the calls.
#[actix_rt::test]
async fn etcd_down_10s_under_load_loses_no_call_and_every_registration_returns_within_two_ttls() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let mut etcd = EtcdServer::start().await.expect("etcd starts");
    let ids = ["et-1", "et-2", "et-3"];
    let Scenario {
        mut servers,
        registry,
        client,
        load,
        ..
    } = Scenario::failover(&etcd, &ids, &etcd.registry_config()).await;

    let kv = etcd.client().await.expect("etcd client");
    let mut leases = Vec::new();
    for id in ids {
        let key = node_key(id);
        let mut probe = kv.clone();
        let lease = live_lease(&mut probe, &key)
            .await
            .unwrap_or_else(|| panic!("{key} has a live lease"));
        leases.push((id, key, lease.0, lease.2));
    }

    etcd.stop();
    let stopped = Instant::now();
    // The outage itself: etcd stays down OUTAGE while the load runs.
    let fewest_listed = fewest_listed_during(&client, OUTAGE).await;
    let calls_during = load.count(|r| r.sent >= stopped);
    etcd.restart().await.expect("etcd restarts");
    let restarted = Instant::now();

    // etcd restores its leases with a fresh TTL; each node must keep its key
    // alive from then on (carrying its lease over, or on a new one). Polled
    // together until 2 × TTL after etcd's return, by when a lease nobody kept
    // alive would have expired: every poll finds every key on a live lease.
    // The client's watch coming back is seen meanwhile.
    let kv = etcd.client().await.expect("etcd client");
    let gaps: RefCell<Vec<String>> = RefCell::default();
    let now_leases: RefCell<Vec<i64>> = RefCell::new(vec![0; leases.len()]);
    let watch_back: Cell<Option<Duration>> = Cell::new(None);
    let longest_ttl = leases.iter().map(|l| l.3).max().expect("three leases");
    let within = Duration::from_secs(2 * u64::try_from(longest_ttl).expect("a positive TTL"));
    while restarted.elapsed() < within {
        for (i, (id, key, _, _)) in leases.iter().enumerate() {
            let mut kv = kv.clone();
            match live_lease(&mut kv, key).await {
                Some((lease, _, _)) => now_leases.borrow_mut()[i] = lease,
                None => gaps
                    .borrow_mut()
                    .push(format!("{id} at {}", secs(restarted.elapsed()))),
            }
        }
        if watch_back.get().is_none() && registry_stats(&registry).await.watches_open >= 1 {
            watch_back.set(Some(restarted.elapsed()));
        }
    }
    let gaps = gaps.into_inner();
    assert!(
        gaps.is_empty(),
        "every key stays on a live lease until 2 × TTL ({within:?}) after etcd's return: \
         missing {gaps:?}"
    );
    if watch_back.get().is_none() {
        let watching = wait_until(EVENTUALLY, || {
            let registry = registry.clone();
            async move { registry_stats(&registry).await.watches_open >= 1 }
        })
        .await;
        assert!(watching, "the client's watch is back");
        watch_back.set(Some(restarted.elapsed()));
    }
    let back: Vec<String> = leases
        .iter()
        .zip(now_leases.into_inner())
        .map(|((id, _, old, granted), now)| {
            let how = if now == *old {
                "lease carried over"
            } else {
                "new lease"
            };
            format!("{id} {how} (TTL {granted}s)")
        })
        .collect();
    let watch_back = watch_back.get().unwrap_or_default();
    wait_listed(&client, &servers.iter().collect::<Vec<_>>()).await;
    wait_more_calls(&load, 2 * RATE as usize).await;
    let report = load.stop().await;
    let exits = stop_all(&mut servers).await;

    assert_no_call_failed(&report);
    assert_eq!(
        fewest_listed, 3,
        "the client keeps its last known set while etcd is down"
    );
    let processed = reconcile(&report, &exits);
    assert_eq!(processed, report.calls() as u64);
    eprintln!(
        "FAULTS 4 etcd down {}: calls {} ({calls_during} sent during the outage) errors 0 \
         attempts {}; nodes listed during the outage ≥ {fewest_listed}; kept alive through \
         2 × TTL after etcd's return: {}; client watch back after {}",
        secs(OUTAGE),
        report.calls(),
        report.attempts(),
        back.join(", "),
        secs(watch_back),
    );
}

/// Scenario 5: A new node joins while the client's watch is away and etcd's history is
/// compacted past the watch's revision: the watch must re-read the whole set,
/// and the new node then gets traffic. The load (failover) runs throughout and
/// no call fails.
///
/// The client's registry retries its watch after 6-12 s (a 12 s backoff with
/// jitter), so the test can, in that window, restart etcd, start the new node,
/// write history the watch has not seen and compact it.
///
/// Reconciled: each of the four processes processed exactly its successes.
#[actix_rt::test]
async fn compaction_during_load_while_a_node_joins_gives_the_new_node_traffic() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let mut etcd = EtcdServer::start().await.expect("etcd starts");
    let registry_config = etcd
        .registry_config()
        .with_backoff(Duration::from_secs(12), Duration::from_secs(12));
    let Scenario {
        mut servers,
        registry,
        client,
        load,
        ..
    } = Scenario::failover(&etcd, &["cp-1", "cp-2", "cp-3"], &registry_config).await;

    etcd.stop();
    let away = wait_until(EVENTUALLY, || {
        let registry = registry.clone();
        async move {
            let s = registry_stats(&registry).await;
            s.reconnects >= 1 && s.watches_open == 0
        }
    })
    .await;
    assert!(away, "the client's watch broke with etcd");
    etcd.restart().await.expect("etcd restarts");
    servers.push(EchoProcess::start(&etcd, "cp-new").await);
    let mut kv = etcd.client().await.expect("etcd client");
    let joined = wait_until(PROCESS_DEADLINE, || {
        let mut kv = kv.clone();
        async move { live_lease(&mut kv, &node_key("cp-new")).await.is_some() }
    })
    .await;
    assert!(joined, "the new node registered");
    for i in 0..50 {
        let put = kv.put("/faults/churn", i.to_string(), None);
        let put = tokio::time::timeout(EVENTUALLY, put).await;
        assert!(matches!(put, Ok(Ok(_))), "put: {put:?}");
    }
    let compacted_at = revision(&mut kv).await;
    let compact = tokio::time::timeout(EVENTUALLY, kv.compact(compacted_at, None)).await;
    assert!(matches!(compact, Ok(Ok(_))), "compact: {compact:?}");
    let compacted = Instant::now();
    let premise = registry_stats(&registry).await;
    assert!(
        premise.watches_open == 0 && premise.resyncs == 0,
        "the client's watch was still away when the history was compacted: {premise:?}"
    );

    wait_listed(&client, &servers.iter().collect::<Vec<_>>()).await;
    let listed_after = compacted.elapsed();
    let stats = registry_stats(&registry).await;
    assert!(
        stats.resyncs >= 1,
        "the compacted start revision forced a full re-read: {stats:?}"
    );
    let newcomer = servers[3].addr();
    let served = load
        .wait_for(PROCESS_DEADLINE, 50, |r| r.ok_addr() == Some(&newcomer))
        .await;
    assert!(served, "the new node gets traffic");
    let traffic_after = compacted.elapsed();
    let report = load.stop().await;
    let exits = stop_all(&mut servers).await;

    assert_no_call_failed(&report);
    let processed = reconcile(&report, &exits);
    assert_eq!(processed, report.calls() as u64);
    eprintln!(
        "FAULTS 5 compaction + join: calls {} errors 0; compacted at revision {compacted_at}; \
         the client listed the new node {} after the compaction (resyncs {}, reconnects {}) and \
         it had answered 50 calls after {}; new node's successes {}",
        report.calls(),
        secs(listed_after),
        stats.resyncs,
        stats.reconnects,
        secs(traffic_after),
        report.successes_at(&newcomer),
    );
}

/// The deadline of each call in scenario 6.
const DEADLINE: Duration = Duration::from_secs(2);

/// Scenario 6: Every backend killed under a failover load: while the dead
/// nodes are still listed, calls end with `UNAVAILABLE` (none hangs, none
/// reaches its deadline); once their leases expired and the client has no node
/// at all, calls wait for a node within their deadline and end
/// `DEADLINE_EXCEEDED` when none comes in time (or one comes back as the
/// deadline runs out); when the backends come back (same ids, new ports) the
/// traffic resumes, and every call sent once the client lists them succeeds.
///
/// Reconciled: the three restarted processes processed exactly their
/// successes.
#[actix_rt::test]
async fn all_backends_down_end_calls_with_unavailable_within_their_deadline_and_traffic_resumes() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let ids = ["ad-1", "ad-2", "ad-3"];
    let Scenario {
        mut servers,
        client,
        load,
        ..
    } = Scenario::start(
        &etcd,
        &ids,
        &etcd.registry_config(),
        ClientConfig::default(),
        LoadPlan::new(RATE, LOAD_LIMIT).with_call_timeout(DEADLINE),
        say_call(Strategy::Failover),
    )
    .await;

    let killed: Vec<Killed> = servers.iter_mut().map(EchoProcess::kill9).collect();
    let all_dead = killed.iter().map(|k| k.reaped).max().expect("three");
    let ended = load
        .wait_for(PROCESS_DEADLINE, RATE as usize, |r| r.sent > all_dead)
        .await;
    assert!(ended, "calls to dead-but-listed nodes end");
    let emptied = wait_status(&client, LEASE_WAIT, |s| s.nodes.is_empty()).await;
    assert!(
        emptied.is_some(),
        "the client drops the nodes once their leases expire"
    );
    let empty_at = Instant::now();
    let ended = load
        .wait_for(PROCESS_DEADLINE, RATE as usize, |r| r.sent > empty_at)
        .await;
    assert!(ended, "calls with no node at all end");

    let returned = Instant::now();
    let mut back = start_processes(&etcd, &ids).await;
    let resumed = load
        .wait_for(PROCESS_DEADLINE, 1, |r| r.is_ok() && r.sent > returned)
        .await;
    assert!(resumed, "traffic resumes");
    let first_success = load
        .first(|r| r.is_ok() && r.sent > returned)
        .map(|r| r.done.saturating_duration_since(returned))
        .unwrap_or_default();
    wait_listed(&client, &back.iter().collect::<Vec<_>>()).await;
    let listed_at = Instant::now();
    wait_serving(&load, &back.iter().collect::<Vec<_>>(), WARM).await;
    let report = load.stop().await;
    let exits = stop_all(&mut back).await;

    eprintln!("{}", report.summary());
    let failures = report.failures();
    assert!(
        !failures.is_empty(),
        "calls failed while every node was down"
    );
    let dead: Vec<&str> = killed.iter().map(|k| k.addr.as_str()).collect();
    for r in &failures {
        // A call that found the set empty waits for a node within its
        // deadline: DEADLINE_EXCEEDED when none came in time, or one came (a
        // restarted process) as the deadline ran out.
        let waited_for_a_node = r.code() == Some(Code::DeadlineExceeded)
            && r.sent > all_dead
            && r.attempts().iter().all(|a| !dead.contains(&a.node.addr()));
        assert!(
            r.code() == Some(Code::Unavailable) || waited_for_a_node,
            "a call ends with UNAVAILABLE (or waited for a node until its deadline), \
             not hung: {r:?}"
        );
    }
    let late: Vec<&Record> = report
        .records
        .iter()
        .filter(|r| r.sent >= listed_at && !r.is_ok())
        .collect();
    assert!(
        late.is_empty(),
        "every call sent once the backends are listed again succeeds: {late:?}"
    );
    // A call that waited for a node may reach one as its deadline runs out:
    // the server may process it after the client gave up.
    let late = |addr: &str| {
        report
            .records
            .iter()
            .flat_map(|r| r.attempts())
            .filter(|a| a.node.addr() == addr && a.code == Code::DeadlineExceeded)
            .count() as u64
    };
    reconcile_within(&report, &exits, late);
    let new: u64 = exits
        .iter()
        .map(|(addr, _)| report.successes_at(addr))
        .sum();
    let old: u64 = killed.iter().map(|k| report.successes_at(&k.addr)).sum();
    assert_eq!(new + old, report.successes() as u64);
    let max_failure = failures
        .iter()
        .map(|r| r.latency())
        .max()
        .unwrap_or_default();
    let no_node = failures.iter().filter(|r| r.attempts().is_empty()).count();
    eprintln!(
        "FAULTS 6 all down: calls {} errors {} ({:?}; {no_node} with no node to try); \
         slowest failure {:.1?} (deadline {DEADLINE:?}); client set empty after {}; \
         first success {} after the restart began; all listed again after {}",
        report.calls(),
        failures.len(),
        report.by_code(),
        max_failure,
        secs(empty_at.saturating_duration_since(all_dead)),
        secs(first_success),
        secs(listed_at.saturating_duration_since(returned)),
    );
}

/// Scenario 7: Retry-storm guard: every backend answers `UNAVAILABLE` to every call
/// for 5 s at 1000 calls/s, each call failover with 2 retries. The retry
/// budget (20 % of calls + 10/s, the defaults) caps the attempts at
/// 1.2 × calls + 10 per second of the budget's life, plus its reserve of 10
/// tokens it starts with (one second's worth).
///
/// Counted twice: from the client (the attempts of each `CallError`) and on
/// the servers (in-process here: the property is the client's; `processed`
/// counts every `Fail` answered), which must agree.
#[actix_rt::test]
async fn retry_storm_of_unavailable_stays_within_ratio_of_calls_plus_ten_per_second() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let registry = etcd.registry_config();
    let echoes = InProcessEchoes::start(
        &registry,
        vec![
            EchoService::new("st-1"),
            EchoService::new("st-2"),
            EchoService::new("st-3"),
        ],
    )
    .await;
    // The budget starts with the service's first use, within this span.
    let budget_from = Instant::now();
    let (_registry, client) = start_client(&registry, ClientConfig::default()).await;
    let listed = wait_status(&client, EVENTUALLY, |s| s.nodes.len() == 3).await;
    assert!(listed.is_some(), "the client lists the 3 servers");

    let load = Load::start(
        client.clone(),
        LoadPlan::new(1000, Duration::from_secs(5)),
        |seq| {
            Call::new(
                "echo",
                FAIL,
                FailRequest {
                    code: Code::Unavailable as i32,
                    message: format!("storm {seq}"),
                },
            )
            .with_options(CallOptions::new().with_strategy(Strategy::Failover))
        },
    );
    let report = load.run_out().await;
    let budget_life = budget_from.elapsed();

    eprintln!("{}", report.summary());
    let calls = report.calls();
    assert_eq!(
        report.by_code().get("Unavailable"),
        Some(&calls),
        "every call ends UNAVAILABLE: {:?}",
        report.by_code()
    );
    let attempts = report.attempts();
    let processed: u64 = echoes.stats().iter().map(|s| s.processed()).sum();
    assert_eq!(
        processed, attempts as u64,
        "the servers answered exactly the attempts the client reports"
    );
    let retries = attempts - calls;
    assert!(retries > 0, "the budget grants some retries");
    let bound = 1.2 * calls as f64 + 10.0 * (budget_life.as_secs_f64() + 1.0);
    assert!(
        attempts as f64 <= bound,
        "{attempts} attempts for {calls} calls over {budget_life:?} exceed {bound:.0}"
    );
    let issue_bound = 1.2 * calls as f64 + 10.0 * report.elapsed.as_secs_f64();
    eprintln!(
        "FAULTS 7 retry storm: calls {calls} in {} ({:.0}/s) attempts {attempts} (retries \
         {retries}, {:.1} % of calls); bound 1.2 × calls + 10 × ({} + 1 s reserve) = {bound:.0}; \
         1.2 × calls + 10/s over the load alone = {issue_bound:.0} ({})",
        secs(report.elapsed),
        calls as f64 / report.elapsed.as_secs_f64(),
        100.0 * retries as f64 / calls as f64,
        secs(budget_life),
        if attempts as f64 <= issue_bound {
            "within it too"
        } else {
            "exceeded by the starting reserve"
        },
    );
}
