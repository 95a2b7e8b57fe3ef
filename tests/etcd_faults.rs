//! etcd as a real cluster: faults of a 3-member etcd under a failover load.
//!
//! The same harness as `tests/faults.rs` (real `echo-server` processes, a paced
//! load with exact accounting, one scenario at a time), on an `EtcdCluster` of
//! three members instead of one server: the leader killed, a member frozen
//! (SIGSTOP: its ports open, nothing answering), quorum lost, and clients
//! started while a member is frozen. Each test prints its figures on a line
//! starting with `ETCD-FAULTS` (`cargo test --test etcd_faults -- --nocapture`).
//!
//! "Every registration continuously present" is checked twice: by a separate
//! watcher of the service (a `ServiceWatch` of its own) that must never see a
//! set without every node, and by etcd itself: each key's create revision is
//! still the one from before the fault (a key deleted and put back would have a
//! new one).

mod support;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cluster_client::{Call, CallOptions, ClientConfig, Strategy};
use grpc_cluster::echo::{EchoService, SayRequest, SAY};
use registry_actor::testing::EtcdCluster;
use registry_actor::{RegistryConfig, ServiceWatch};
use support::faults::*;
use support::{init_tracing, wait_until, EVENTUALLY};

/// A watcher of `echo` of its own, apart from the client's: remembers the
/// fewest nodes any set it got listed, once it had seen `expected`.
struct SetWatcher {
    fewest: Rc<Cell<usize>>,
    sets: Rc<Cell<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl SetWatcher {
    async fn start(config: &RegistryConfig, expected: usize) -> Self {
        let etcd = registry_actor::connect(config).await.expect("etcd");
        let (fewest, sets) = (Rc::new(Cell::new(usize::MAX)), Rc::new(Cell::new(0)));
        let (f, n) = (fewest.clone(), sets.clone());
        let task = actix::spawn(ServiceWatch::new(etcd, config, "echo").run(
            move |nodes, _revision| {
                if nodes.len() >= expected || n.get() > 0 {
                    n.set(n.get() + 1);
                    f.set(f.get().min(nodes.len()));
                }
                std::future::ready(true)
            },
        ));
        let watching = wait_until(EVENTUALLY, || std::future::ready(sets.get() > 0)).await;
        assert!(watching, "the separate watcher sees the {expected} nodes");
        Self { fewest, sets, task }
    }

    /// The fewest nodes of any set seen, and how many sets.
    fn stop(self) -> (usize, usize) {
        self.task.abort();
        (self.fewest.get(), self.sets.get())
    }
}

/// No key was deleted (`gone`, from [`recreated_since`]) and the separate
/// watcher always saw all `nodes`.
fn assert_every_registration_kept(gone: &[String], fewest: usize, nodes: usize) {
    assert!(gone.is_empty(), "keys deleted meanwhile: {gone:?}");
    assert_eq!(fewest, nodes, "the separate watcher never missed a node");
}

fn keys(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| node_key(id)).collect()
}

/// The leader killed (SIGKILL) under a failover load over three backends: no
/// call fails, every registration stays present throughout (its key never
/// deleted, the separate watcher never sees a node missing), and the killed
/// member, restarted, rejoins.
#[actix_rt::test]
async fn leader_sigkill_under_failover_load_loses_no_call_and_no_registration() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let mut cluster = EtcdCluster::start(3).await.expect("cluster starts");
    let config = cluster.registry_config();
    let ids = ["lk-1", "lk-2", "lk-3"];
    let Scenario {
        mut servers, load, ..
    } = Scenario::failover(&cluster, &ids, &config).await;
    let watcher = SetWatcher::start(&config, ids.len()).await;
    let mut kv = cluster.client().await.expect("etcd client");
    let since = revision(&mut kv).await;

    let leader = cluster.leader().await.expect("a leader");
    cluster.kill(leader);
    let killed = Instant::now();
    let elected = wait_until(EVENTUALLY, || {
        let cluster = &cluster;
        async move { cluster.leader().await.is_some_and(|l| l != leader) }
    })
    .await;
    assert!(elected, "the two survivors elect a new leader");
    let elected_after = killed.elapsed();
    // The behaviour under test is time passing: two lease TTLs with the
    // leader gone, by when a registration not carried over to another member
    // would have expired.
    tokio::time::sleep((2 * config.lease_ttl()).saturating_sub(killed.elapsed())).await;
    cluster
        .restart(leader)
        .await
        .expect("the killed member rejoins");
    let mut rejoined = cluster.member_client(leader).await.expect("client");
    let serves = tokio::time::timeout(EVENTUALLY, rejoined.get(node_key("lk-1"), None)).await;
    assert!(
        matches!(&serves, Ok(Ok(r)) if r.count() == 1),
        "the rejoined member serves the registrations: {serves:?}"
    );
    wait_more_calls(&load, RATE as usize).await;
    let gone = recreated_since(&mut kv, &keys(&ids), since).await;
    let (fewest, sets) = watcher.stop();
    let report = load.stop().await;
    let exits = stop_all(&mut servers).await;

    assert_no_call_failed(&report);
    assert_every_registration_kept(&gone, fewest, ids.len());
    assert_eq!(reconcile(&report, &exits), report.calls() as u64);
    eprintln!(
        "ETCD-FAULTS 1 leader SIGKILL: calls {} errors 0 attempts {}; new leader after {}; \
         separate watcher: {sets} sets, fewest nodes {fewest}; keys recreated: 0",
        report.calls(),
        report.attempts(),
        secs(elected_after),
    );
}

/// How long a member stays frozen in the pause scenario.
const PAUSE: Duration = Duration::from_secs(10);

/// The member the client watches through frozen (SIGSTOP) for 10 s under a
/// failover load: no call fails, the client's watch moves to another member,
/// the client keeps all three nodes, and every registration stays present.
///
/// The frozen member is a follower. A leader frozen for longer than the lease
/// TTL and then resumed still believes for a moment that it leads, finds every
/// lease expired by its own clock and forwards their revocation to the new
/// leader, which commits it: etcd before 3.4.28 and 3.5.11 (the Debian
/// package is 3.4.23) deletes every key then, whatever its clients do. The
/// leader's loss is covered by the SIGKILL scenario above, where no stale
/// leader comes back.
#[actix_rt::test]
async fn member_paused_10s_under_failover_load_loses_no_call_and_the_watch_moves() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let cluster = EtcdCluster::start(3).await.expect("cluster starts");
    let config = cluster.registry_config();
    let ids = ["pz-1", "pz-2", "pz-3"];
    let Scenario {
        mut servers,
        etcd,
        registry,
        client,
        load,
    } = Scenario::failover(&cluster, &ids, &config).await;
    let watcher = SetWatcher::start(&config, ids.len()).await;
    let mut kv = cluster.client().await.expect("etcd client");
    let since = revision(&mut kv).await;
    let before = registry_stats(&registry).await;

    // The member the client watches through, a follower (see above).
    let frozen = cluster.member_of(&etcd.preferred()).expect("a member");
    cluster
        .move_leader((frozen + 1) % cluster.size())
        .await
        .expect("leadership moved off the member to freeze");
    cluster.pause(frozen).expect("SIGSTOP");
    let fewest_listed = fewest_listed_during(&client, PAUSE).await;
    let moved_to = etcd.preferred();
    let during = registry_stats(&registry).await;
    cluster.resume(frozen).expect("SIGCONT");
    wait_more_calls(&load, RATE as usize).await;
    let gone = recreated_since(&mut kv, &keys(&ids), since).await;
    let (fewest, sets) = watcher.stop();
    let report = load.stop().await;
    let exits = stop_all(&mut servers).await;

    assert_no_call_failed(&report);
    assert_ne!(
        cluster.member_of(&moved_to).expect("a member"),
        frozen,
        "the client's watch left the frozen member"
    );
    assert!(
        during.reconnects > before.reconnects && during.watches_open >= 1,
        "the watch was re-opened elsewhere: {before:?} → {during:?}"
    );
    assert_eq!(fewest_listed, ids.len(), "the client kept every node");
    assert_every_registration_kept(&gone, fewest, ids.len());
    assert_eq!(reconcile(&report, &exits), report.calls() as u64);
    eprintln!(
        "ETCD-FAULTS 2 watched follower paused {}: calls {} errors 0 attempts {}; \
         watch reconnects {} → {}; separate watcher: {sets} sets, fewest nodes {fewest}",
        secs(PAUSE),
        report.calls(),
        report.attempts(),
        before.reconnects,
        during.reconnects,
    );
}

/// Two of three members killed (quorum lost) for three lease TTLs under a
/// failover load: no call fails and the client keeps its last set; once they
/// are back, within two TTLs every registration is kept alive again and the
/// client's watch is open.
#[actix_rt::test]
async fn quorum_lost_keeps_the_last_set_and_recovers_within_two_ttls() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let mut cluster = EtcdCluster::start(3).await.expect("cluster starts");
    let config = cluster.registry_config();
    let ids = ["qu-1", "qu-2", "qu-3"];
    let Scenario {
        mut servers,
        registry,
        client,
        load,
        ..
    } = Scenario::failover(&cluster, &ids, &config).await;
    let mut kv = cluster.member_client(2).await.expect("etcd client");
    let since = revision(&mut kv).await;

    cluster.kill(0);
    cluster.kill(1);
    let fewest_listed = fewest_listed_during(&client, 3 * config.lease_ttl()).await;
    cluster.restart(0).await.expect("member 0 back");
    let quorum_back = Instant::now();
    let ttl = config.lease_ttl();
    let recovered = wait_until(2 * ttl, || {
        let (mut kv, registry) = (kv.clone(), registry.clone());
        async move {
            for id in ["qu-1", "qu-2", "qu-3"] {
                if live_lease(&mut kv, &node_key(id)).await.is_none() {
                    return false;
                }
            }
            registry_stats(&registry).await.watches_open >= 1
        }
    })
    .await;
    let recovered_after = quorum_back.elapsed();
    assert!(
        recovered,
        "registrations alive and the watch open within 2 × TTL ({:?}) of quorum's return",
        2 * ttl
    );
    cluster.restart(1).await.expect("member 1 back");
    // Alive one TTL later too: kept alive, not left over from before.
    let kept = wait_until(EVENTUALLY, || {
        let mut kv = kv.clone();
        async move {
            quorum_back.elapsed() > 2 * ttl
                && live_lease(&mut kv, &node_key("qu-1")).await.is_some()
        }
    })
    .await;
    assert!(kept, "the registrations are kept alive after the recovery");
    let gone = recreated_since(&mut kv, &keys(&ids), since).await;
    wait_more_calls(&load, RATE as usize).await;
    let report = load.stop().await;
    let exits = stop_all(&mut servers).await;

    assert_no_call_failed(&report);
    assert_eq!(fewest_listed, ids.len(), "the client kept its last set");
    assert!(gone.is_empty(), "keys deleted meanwhile: {gone:?}");
    let processed = reconcile(&report, &exits);
    assert_eq!(processed, report.calls() as u64);
    eprintln!(
        "ETCD-FAULTS 3 quorum lost {}: calls {} errors 0 attempts {}; nodes listed meanwhile ≥ \
         {fewest_listed}; registrations alive and watch open {} after quorum's return (bound {})",
        secs(3 * ttl),
        report.calls(),
        report.attempts(),
        secs(recovered_after),
        secs(2 * ttl),
    );
}

/// How many fresh clients start while a member is frozen.
const STARTS: usize = 20;

/// One of three members frozen (SIGSTOP, a follower): a freshly started
/// client's first call completes within 500 ms, every one of 20 starts (each
/// starts at a random member, so some at the frozen one); and a running
/// client whose watch is on the frozen member moves and lists a node
/// registered after the freeze within 2 s of its registration.
#[actix_rt::test]
async fn with_a_member_frozen_fresh_clients_call_within_500ms_and_a_running_watch_moves() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let cluster = EtcdCluster::start(3).await.expect("cluster starts");
    let config = cluster.registry_config();
    let _echoes = InProcessEchoes::start(
        &config,
        vec![
            EchoService::new("fr-1"),
            EchoService::new("fr-2"),
            EchoService::new("fr-3"),
        ],
    )
    .await;
    let running_etcd = registry_actor::connect(&config).await.expect("etcd");
    let (_running_registry, running) =
        start_client_over(running_etcd.clone(), &config, ClientConfig::default());
    let listed = wait_status(&running, EVENTUALLY, |s| s.nodes.len() == 3).await;
    assert!(listed.is_some(), "the running client lists the 3 servers");
    let frozen = cluster
        .member_of(&running_etcd.preferred())
        .expect("a member");
    cluster
        .move_leader((frozen + 1) % 3)
        .await
        .expect("leadership moved off the member to freeze");
    cluster.pause(frozen).expect("SIGSTOP");

    let newcomer = InProcessEchoes::start(&config, vec![EchoService::new("fr-4")]).await;
    let registered = Instant::now();
    let moved = wait_status(&running, EVENTUALLY, |s| s.nodes.len() == 4).await;
    let delivered = registered.elapsed();
    assert!(moved.is_some(), "the running client lists the newcomer");

    let frozen_endpoint = cluster.endpoints()[frozen].clone();
    let (mut slowest, mut at_frozen) = (Duration::ZERO, 0);
    for i in 0..STARTS {
        let started = Instant::now();
        let etcd = registry_actor::connect(&config).await.expect("etcd");
        at_frozen += usize::from(etcd.preferred() == frozen_endpoint);
        let (_registry, client) = start_client_over(etcd, &config, ClientConfig::default());
        let call = Call::new(
            "echo",
            SAY,
            SayRequest {
                message: format!("first {i}"),
            },
        )
        .with_options(CallOptions::new().with_strategy(Strategy::Failover));
        let reply = client.send(call).await.expect("client alive");
        let took = started.elapsed();
        assert!(reply.is_ok(), "start {i}: {reply:?}");
        assert!(
            took <= Duration::from_millis(500),
            "start {i} took {took:?} to its first reply (bound 500 ms)"
        );
        slowest = slowest.max(took);
    }
    cluster.resume(frozen).expect("SIGCONT");
    drop(newcomer);

    assert!(
        delivered <= Duration::from_secs(2),
        "the running client listed a node registered after the freeze {delivered:?} after its \
         registration (bound 2 s)"
    );
    eprintln!(
        "ETCD-FAULTS 4 member frozen: {STARTS} fresh clients, {at_frozen} starting at the frozen \
         member, slowest first reply {slowest:.1?} (bound 500 ms); running client listed a new \
         node {delivered:.1?} after its registration (bound 2 s)"
    );
}

/// The etcd cluster rebuilt on the same endpoints (`wipe_and_restart`: a new
/// cluster id, revisions from 1 again, below the ones the client saw): the
/// servers register in the new cluster, and the client converges to its set —
/// the node written by hand into the old cluster is gone from it.
///
/// The rebuilt cluster is empty for a moment, a change the client's panic
/// threshold holds until its grace passes (nobody calls the gone node, so it
/// never fails); the client here has a 1 s grace.
#[actix_rt::test]
async fn a_rebuilt_cluster_with_older_revisions_is_what_the_client_converges_to() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let mut cluster = EtcdCluster::start(3).await.expect("cluster starts");
    let config = cluster.registry_config();
    let _echoes = InProcessEchoes::start(
        &config,
        vec![
            EchoService::new("wr-1"),
            EchoService::new("wr-2"),
            EchoService::new("wr-3"),
        ],
    )
    .await;
    let mut kv = cluster.client().await.expect("etcd client");
    let ghost = "127.0.0.1:1";
    kv.put(
        node_key("ghost"),
        format!(r#"{{"id":"ghost","addr":"{ghost}"}}"#),
        None,
    )
    .await
    .expect("put");
    for i in 0..30 {
        kv.put("/churn", i.to_string(), None).await.expect("put");
    }
    let (registry, client) = start_client(
        &config,
        ClientConfig::default().with_panic_grace(Duration::from_secs(1)),
    )
    .await;
    let listed = wait_status(&client, EVENTUALLY, |s| s.nodes.len() == 4).await;
    assert!(
        listed.is_some(),
        "the client lists the 3 servers and the ghost"
    );
    let old_revision = revision(&mut kv).await;

    cluster.wipe_and_restart().await.expect("a new cluster");
    let rebuilt = Instant::now();
    let converged = wait_status(&client, EVENTUALLY, |s| {
        s.nodes.len() == 3 && s.nodes.iter().all(|n| n.addr != ghost && !n.held)
    })
    .await;
    let after = rebuilt.elapsed();
    let mut kv = cluster.client().await.expect("etcd client");
    let new_revision = revision(&mut kv).await;
    assert!(
        new_revision < old_revision,
        "premise: the new cluster's revision {new_revision} is below {old_revision}"
    );
    assert!(
        converged.is_some(),
        "the client lists exactly the servers registered in the new cluster: {:?}",
        echo_status(&client).await.nodes
    );
    let stats = registry_stats(&registry).await;
    assert!(stats.cluster_changes >= 1, "{stats:?}");
    eprintln!(
        "ETCD-FAULTS 5 cluster rebuilt: revision {old_revision} → {new_revision}; the client \
         converged to the new set {} after the rebuild (cluster changes {})",
        secs(after),
        stats.cluster_changes
    );
}
