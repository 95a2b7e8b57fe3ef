//! Zone locality against real `echo-server` processes in two zones and a
//! private real etcd: with `client.locality = "prefer"`, calls stay in the
//! client's zone, fail over to the other zone without a failed call when the
//! home zone's processes are killed (`kill -9`), and come back when they are
//! restarted at the same addresses.
//!
//! The load is paced and bounded (a rate, a time limit); nothing waits by
//! sleeping: every wait polls a condition with a deadline. The test prints
//! its figures on a line starting with `LOCALITY`
//! (`cargo test --test locality -- --nocapture`).

mod support;

use std::ffi::OsStr;
use std::time::Instant;

use cluster_client::{ClientConfig, Locality, Strategy};
use support::faults::*;
use support::{init_tracing, EtcdServer};

/// The environment of an `echo-server` registering in `zone`.
fn in_zone(zone: &'static str) -> [(&'static str, &'static OsStr); 1] {
    [("GRPC_CLUSTER__SERVER__ZONE", OsStr::new(zone))]
}

/// Calls that must end after each step before the next one starts.
const CALLS_PER_STEP: usize = 100;

#[actix_rt::test]
async fn prefer_keeps_calls_home_fails_over_to_the_other_zone_and_comes_back() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let mut home = Vec::new();
    for id in ["a-1", "a-2"] {
        home.push(EchoProcess::start_with_env(&etcd, id, &in_zone("a")).await);
    }
    let mut away = Vec::new();
    for id in ["b-1", "b-2"] {
        away.push(EchoProcess::start_with_env(&etcd, id, &in_zone("b")).await);
    }
    let home_addrs: Vec<String> = home.iter().map(EchoProcess::addr).collect();
    let away_addrs: Vec<String> = away.iter().map(EchoProcess::addr).collect();
    let all_addrs: Vec<String> = home_addrs.iter().chain(&away_addrs).cloned().collect();
    let answered_in =
        |addrs: &[String], r: &Record| r.ok_addr().is_some_and(|a| addrs.iter().any(|h| h == a));

    // No health watch: the client learns of the dead zone from failed
    // attempts alone (ejection, then the leases' expiry), so calls do meet
    // the dead nodes and must fail over across zones. The retry budget is
    // wide open: this test is about where they go, not about the budget.
    let config = ClientConfig::default()
        .with_locality(Locality::Prefer)
        .with_zone("a")
        .with_budget(1.0, 1000);
    let (_registry, client) = start_client(&etcd.registry_config(), config).await;
    wait_listed(&client, &home.iter().chain(&away).collect::<Vec<_>>()).await;
    let load = Load::start(
        client.clone(),
        LoadPlan::new(RATE, LOAD_LIMIT),
        say_call(Strategy::Failover),
    );

    // 1. Both zones are listed, and every call is answered in zone a.
    wait_serving(&load, &home.iter().collect::<Vec<_>>(), WARM).await;
    wait_more_calls(&load, CALLS_PER_STEP).await;
    let home_phase = load.count(|_| true);
    assert_eq!(
        load.count(|r| answered_in(&away_addrs, r)),
        0,
        "while zone a has pickable nodes, no call goes to zone b"
    );

    // 2. Zone a dies: calls go to zone b, none fails.
    let killed: Vec<Killed> = home.iter_mut().map(EchoProcess::kill9).collect();
    let signalled = killed[0].signalled;
    wait_serving(&load, &away.iter().collect::<Vec<_>>(), WARM).await;
    let gone = wait_status(&client, LEASE_WAIT, |s| lists_exactly(s, &away_addrs)).await;
    assert!(
        gone.is_some(),
        "zone a's nodes leave the client's set once their leases expire"
    );
    wait_more_calls(&load, CALLS_PER_STEP).await;

    // 3. Zone a comes back at the same addresses: calls return to it.
    let mut restarted = Vec::new();
    for (process, addr) in home.iter().zip(&home_addrs) {
        restarted
            .push(EchoProcess::start_on_with_env(&etcd, process.id(), addr, &in_zone("a")).await);
    }
    let back = wait_status(&client, PROCESS_DEADLINE, |s| lists_exactly(s, &all_addrs)).await;
    assert!(back.is_some(), "the restarted nodes are listed again");
    let listed = Instant::now();
    assert!(
        load.wait_for(PROCESS_DEADLINE, CALLS_PER_STEP, |r| r.sent >= listed)
            .await,
        "the load goes on after zone a's return"
    );

    let report = load.stop().await;
    assert_no_call_failed(&report);
    let after_kill: Vec<&Record> = report
        .records
        .iter()
        .filter(|r| r.sent >= signalled && r.sent < listed)
        .collect();
    let in_b = after_kill
        .iter()
        .filter(|r| answered_in(&away_addrs, r))
        .count();
    let crossed = after_kill
        .iter()
        .filter(|r| answered_in(&away_addrs, r) && home_addrs.iter().any(|a| r.tried(a)))
        .count();
    let returned: Vec<&Record> = report.records.iter().filter(|r| r.sent >= listed).collect();
    let stray: Vec<&&Record> = returned
        .iter()
        .filter(|r| !answered_in(&home_addrs, r))
        .collect();
    assert!(
        stray.is_empty(),
        "once zone a is listed again, every call is answered there: {} of {} were not, first {:?}",
        stray.len(),
        returned.len(),
        stray.first()
    );
    eprintln!(
        "LOCALITY prefer: calls {} ({} home before the kill); after the kill {} ({} answered \
         in zone b, {} of them after an attempt in zone a); after zone a's return {} (all in \
         zone a); failed 0",
        report.calls(),
        home_phase,
        after_kill.len(),
        in_b,
        crossed,
        returned.len(),
    );
    for mut p in restarted.into_iter().chain(away) {
        p.stop_gracefully().await;
    }
}
