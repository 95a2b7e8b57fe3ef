//! Tests of the picker: the pure [`Picker`] with explicit time, then the actor
//! against a real etcd and real (refused) connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use registry_actor::etcd_client::{Client, Txn, TxnOp};
use registry_actor::testing::{wait_until, EtcdServer};
use registry_actor::{Node, NodeSet, RegistryActor, RegistryConfig};

use super::*;
use crate::connection::Home;
use crate::{Balancer, EjectionConfig, Error, Fallback, HashKey, PickerConfig, Selector};

const DEADLINE: Duration = Duration::from_secs(20);

fn node(id: &str, port: u16) -> Node {
    Node::new(id, "echo", format!("127.0.0.1:{port}")).expect("valid node")
}

fn versioned() -> Arc<[Node]> {
    [
        node("a", 1001).with_version("1.0.0"),
        node("b", 1002).with_version("v1.2"),
        node("c", 1003).with_version("1.5.3"),
        node("d", 1004).with_version("2.0.0"),
    ]
    .into()
}

fn picker(config: PickerConfig, nodes: Arc<[Node]>) -> Picker {
    let mut p = Picker::with_seed("echo", config, 7);
    p.update(nodes, 1, Instant::now());
    p
}

fn ids_of(picked: &[Picked]) -> Vec<String> {
    let mut ids: Vec<String> = picked.iter().map(|p| p.node().id().to_owned()).collect();
    ids.sort();
    ids
}

/// The key of the runtime this test runs on.
fn here() -> Option<tokio::runtime::Id> {
    Home::of_caller(false).key()
}

fn handle_of(p: &Picker, id: &str) -> NodeHandle {
    p.status().node(id).expect("node in status").handle
}

// ---- pure picker -------------------------------------------------------------

#[test]
fn a_version_range_picks_only_matching_nodes() {
    let range = Selector::new().with_version(">=1.2, <2").expect("range");
    for balancer in Balancer::ALL {
        let mut p = picker(
            PickerConfig::default()
                .with_balancer(balancer)
                .with_selector(range.clone()),
            versioned(),
        );
        for k in 0..200u32 {
            let picked = p
                .pick(None, &[], Some(HashKey::of(k.to_le_bytes())))
                .expect("pick");
            let id = picked.node().id();
            assert!(id == "b" || id == "c", "{balancer} picked {id}");
        }
        assert_eq!(ids_of(&p.pick_all(None).expect("all")), ["b", "c"]);
    }
    // The same as a call selector over an empty service selector.
    let mut p = picker(PickerConfig::default(), versioned());
    let all = p.pick_all(Some(&range)).expect("all");
    assert_eq!(ids_of(&all), ["b", "c"]);
}

/// The ids a selector's pool holds, through `pick_all`.
fn pool_ids(p: &mut Picker, selector: &Selector) -> Vec<String> {
    ids_of(&p.pick_all(Some(selector)).expect("a match"))
}

#[test]
fn after_a_change_selector_pools_match_changed_and_new_nodes_afresh() {
    let blue = Selector::new().with_group("blue");
    let range = Selector::new().with_version(">=1.2, <2").expect("range");
    let set = |nodes: Vec<Node>| -> Arc<[Node]> { nodes.into() };
    let a = node("a", 1001).with_group("blue").with_version("1.2.0");
    let b = node("b", 1002).with_group("green").with_version("1.0.0");
    let c = node("c", 1003).with_group("blue").with_version("1.5.0");
    let mut p = picker(
        PickerConfig::default(),
        set(vec![a.clone(), b.clone(), c.clone()]),
    );
    assert_eq!(pool_ids(&mut p, &blue), ["a", "c"]);
    assert_eq!(pool_ids(&mut p, &range), ["a", "c"]);

    // b turns blue and 1.3, c turns green and 2.0, d comes in blue and 1.9;
    // a stays the very same node.
    let b2 = node("b", 1002).with_group("blue").with_version("1.3.0");
    let c2 = node("c", 1003).with_group("green").with_version("2.0.0");
    let d = node("d", 1004).with_group("blue").with_version("1.9.0");
    p.update(
        set(vec![a.clone(), b2.clone(), c2, d.clone()]),
        2,
        Instant::now(),
    );
    assert_eq!(pool_ids(&mut p, &blue), ["a", "b", "d"]);
    assert_eq!(pool_ids(&mut p, &range), ["a", "b", "d"]);

    // a leaves; the rest are the same nodes at other indices.
    p.update(set(vec![b2, d]), 3, Instant::now());
    assert_eq!(pool_ids(&mut p, &blue), ["b", "d"]);
    assert_eq!(pool_ids(&mut p, &range), ["b", "d"]);
}

#[test]
fn strict_without_a_match_is_an_error_naming_the_selector_and_the_versions() {
    let selector = Selector::new().with_version(">=3").expect("range");
    let mut p = picker(
        PickerConfig::default()
            .with_selector(selector)
            .with_fallback(Fallback::Strict),
        versioned(),
    );
    let err = p.pick(None, &[], None).expect_err("nothing matches >=3");
    assert!(
        matches!(err, Error::NoMatch { ref available_versions, .. } if available_versions.len() == 4)
    );
    assert_eq!(
        err.to_string(),
        "no node of service `echo` matches selector `version >=3` (fallback strict); \
         versions available: `1.0.0`, `1.5.3`, `2.0.0`, `v1.2`; groups available: (no group)"
    );
    assert!(matches!(p.pick_all(None), Err(Error::NoMatch { .. })));
}

#[test]
fn any_falls_back_to_all_nodes() {
    let mut p = picker(
        PickerConfig::default()
            .with_balancer(Balancer::RoundRobin)
            .with_selector(Selector::new().with_group("nobody")),
        versioned(),
    );
    let picked: Vec<Picked> = (0..4)
        .map(|_| p.pick(None, &[], None).expect("pick"))
        .collect();
    assert_eq!(
        ids_of(&picked),
        ["a", "b", "c", "d"],
        "round robin over all four"
    );
    // A call may ask for strict on its own.
    let strict = Selector::new()
        .with_group("nobody")
        .with_fallback(Fallback::Strict);
    assert!(matches!(
        p.pick(Some(&strict), &[], None),
        Err(Error::NoMatch { .. })
    ));
}

#[test]
fn picks_are_answered_while_a_rebuild_runs_on_another_thread() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    // A set big enough that building its snapshot takes a while.
    let big = |tag: u32| -> Arc<[Node]> {
        (0..100_000u32)
            .map(|i| node(&format!("n{i:06}"), (1 + (i + tag) % 60_000) as u16))
            .collect()
    };
    let mut p = picker(PickerConfig::default(), big(0));
    let shared = Arc::new(SharedPicker::new(p.snapshot().clone()));
    let rebuilding = Arc::new(AtomicBool::new(false));
    let rebuilds = Arc::new(AtomicU64::new(0));
    let next = big(1);
    let builder = {
        let (shared, rebuilding, rebuilds) = (shared.clone(), rebuilding.clone(), rebuilds.clone());
        std::thread::spawn(move || {
            for round in 0..3u32 {
                let nodes = if round % 2 == 0 { next.clone() } else { big(0) };
                rebuilding.store(true, Ordering::SeqCst);
                p.update(nodes, i64::from(round) + 2, Instant::now());
                rebuilding.store(false, Ordering::SeqCst);
                rebuilds.fetch_add(1, Ordering::SeqCst);
                shared.publish(p.snapshot().clone());
            }
        })
    };
    // Count the picks that began and ended inside one rebuild.
    let mut during = 0u64;
    while rebuilds.load(Ordering::SeqCst) < 3 {
        let before = rebuilds.load(Ordering::SeqCst);
        let inside = rebuilding.load(Ordering::SeqCst);
        let answered = matches!(
            shared.pick(None, &[], None, None),
            Fast::Attach(_) | Fast::Done(Ok(_))
        );
        assert!(answered, "every pick is answered");
        if inside && rebuilding.load(Ordering::SeqCst) && rebuilds.load(Ordering::SeqCst) == before
        {
            during += 1;
        }
    }
    builder.join().expect("builder thread");
    assert!(during > 0, "no pick was answered while a rebuild ran");
}

#[test]
fn a_fan_out_never_falls_back_to_every_node() {
    let mut p = picker(PickerConfig::default(), versioned());
    let nobody = Selector::new().with_version(">=9").expect("range");
    assert_eq!(p.config().fallback(), Fallback::Any);
    assert!(
        p.pick(Some(&nobody), &[], None).is_ok(),
        "unicast falls back"
    );
    let err = p.pick_all(Some(&nobody)).expect_err("a fan-out does not");
    assert!(
        matches!(err, Error::NoMatch { strict: false, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("a broadcast goes to matching nodes only")
            && text.contains("versions available: `1.0.0`, `1.5.3`, `2.0.0`, `v1.2`")
            && text.contains("groups available: (no group)"),
        "{text}"
    );
}

#[test]
fn excluded_nodes_are_never_picked_and_all_excluded_is_an_error() {
    for balancer in Balancer::ALL {
        let mut p = picker(PickerConfig::default().with_balancer(balancer), versioned());
        let exclude = [handle_of(&p, "a"), handle_of(&p, "c")];
        for k in 0..100u32 {
            let picked = p
                .pick(None, &exclude, Some(HashKey::of(k.to_le_bytes())))
                .expect("pick");
            assert!(
                !exclude.contains(&picked.handle()),
                "{balancer} picked an excluded node"
            );
        }
        let every: Vec<NodeHandle> = p.status().nodes.iter().map(|n| n.handle).collect();
        let err = p.pick(None, &every, None).expect_err("all tried");
        assert!(
            matches!(err, Error::AllExcluded { tried: 4, .. }),
            "{balancer}: {err}"
        );
    }
}

#[test]
fn weight_zero_is_never_picked_by_weighted_balancers() {
    let nodes: Arc<[Node]> = [node("a", 1).with_weight(0), node("b", 2), node("c", 3)].into();
    for balancer in [
        Balancer::WeightedRandom,
        Balancer::WeightedRoundRobin,
        Balancer::ConsistentHash,
    ] {
        let mut p = picker(
            PickerConfig::default().with_balancer(balancer),
            nodes.clone(),
        );
        for k in 0..300u32 {
            let picked = p
                .pick(None, &[], Some(HashKey::of(k.to_le_bytes())))
                .expect("pick");
            assert_ne!(picked.node().id(), "a", "{balancer}");
        }
        assert_eq!(
            p.pick_all(None).expect("all").len(),
            3,
            "broadcast still reaches weight 0"
        );
    }
    let zero: Arc<[Node]> = [node("a", 1).with_weight(0)].into();
    let mut p = picker(
        PickerConfig::default().with_balancer(Balancer::WeightedRandom),
        zero,
    );
    assert!(matches!(
        p.pick(None, &[], None),
        Err(Error::NoWeight { .. })
    ));
}

#[test]
fn no_nodes_is_an_error() {
    let mut p = Picker::new("echo", PickerConfig::default());
    assert!(!p.is_discovered());
    assert!(matches!(
        p.pick(None, &[], None),
        Err(Error::NoNodes { .. })
    ));
    p.update(Arc::from(Vec::new()), 3, Instant::now());
    assert!(p.is_discovered());
    let err = p.pick(None, &[], None).expect_err("empty");
    assert_eq!(
        err.to_string(),
        "service `echo` has no nodes in the registry"
    );
}

#[test]
fn handles_are_stable_while_id_and_address_are_and_loads_carry_over() {
    let mut p = picker(PickerConfig::default(), versioned());
    let b = handle_of(&p, "b");
    let c = handle_of(&p, "c");
    p.report_load(b, 4);
    let changed: Arc<[Node]> = [
        node("b", 1002).with_version("v1.3").with_weight(7),
        node("c", 2003),
        node("e", 1005),
    ]
    .into();
    p.update(changed, 2, Instant::now());
    let status = p.status();
    assert_eq!(
        status.node("b").expect("b").handle,
        b,
        "same id and address: same handle"
    );
    assert_eq!(
        status.node("b").expect("b").in_flight,
        4,
        "load carried over"
    );
    assert_ne!(
        status.node("c").expect("c").handle,
        c,
        "new address: new handle"
    );
    assert!(status.node("a").is_none());
    p.report_load(c, 9); // the old handle is gone: ignored
    assert_eq!(p.status().node("c").expect("c").in_flight, 0);
}

#[test]
fn call_selector_candidates_follow_every_node_set_change() {
    let blue = Selector::new().with_group("blue");
    let set = |ids: &[&str]| -> Arc<[Node]> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                node(id, 2000 + i as u16).with_group(if *id == "a" { "green" } else { "blue" })
            })
            .collect()
    };
    let mut p = picker(PickerConfig::default(), set(&["a", "b"]));
    assert_eq!(ids_of(&p.pick_all(Some(&blue)).expect("blue")), ["b"]);
    p.update(set(&["a", "b", "c"]), 2, Instant::now());
    assert_eq!(
        ids_of(&p.pick_all(Some(&blue)).expect("blue")),
        ["b", "c"],
        "rebuilt at update"
    );
    p.update(set(&["a", "c", "d"]), 3, Instant::now());
    p.update(set(&["a", "d"]), 4, Instant::now());
    assert_eq!(
        ids_of(&p.pick_all(Some(&blue)).expect("blue")),
        ["d"],
        "unused in between: built anew"
    );
    let picked = p.pick(Some(&blue), &[], None).expect("pick");
    assert_eq!(picked.node().id(), "d");
}

#[test]
fn least_request_follows_reported_loads() {
    let nodes: Arc<[Node]> = [node("a", 1), node("b", 2)].into();
    let mut p = picker(
        PickerConfig::default().with_balancer(Balancer::LeastRequest),
        nodes,
    );
    p.report_load(handle_of(&p, "a"), 10);
    p.report_load(handle_of(&p, "b"), 2);
    for _ in 0..50 {
        assert_eq!(p.pick(None, &[], None).expect("pick").node().id(), "b");
    }
}

#[test]
fn consistent_hash_keeps_a_key_on_its_node_through_unrelated_updates() {
    let mut p = picker(
        PickerConfig::default().with_balancer(Balancer::ConsistentHash),
        versioned(),
    );
    let key = HashKey::of("user-42");
    let home = p
        .pick(None, &[], Some(key))
        .expect("pick")
        .node()
        .id()
        .to_owned();
    for revision in 2..5 {
        p.update(versioned(), revision, Instant::now());
        assert_eq!(
            p.pick(None, &[], Some(key)).expect("pick").node().id(),
            home
        );
    }
}

#[test]
fn ejection_takes_out_failing_nodes_within_the_share_cap_and_brings_them_back() {
    let ejection = EjectionConfig::default()
        .with_failures(3)
        .with_base_time(Duration::from_secs(10))
        .with_max_time(Duration::from_secs(60))
        .with_max_share(0.5);
    let mut p = picker(PickerConfig::default().with_ejection(ejection), versioned());
    let t0 = Instant::now();
    let (a, b, c) = (handle_of(&p, "a"), handle_of(&p, "b"), handle_of(&p, "c"));
    assert!(!p.connection_failed(a, t0));
    p.connection_succeeded(a);
    assert!(!p.connection_failed(a, t0));
    assert!(!p.connection_failed(a, t0));
    assert!(
        p.connection_failed(a, t0),
        "third consecutive failure ejects"
    );
    for _ in 0..3 {
        p.connection_failed(b, t0);
        p.connection_failed(c, t0);
    }
    let status = p.status();
    assert_eq!(status.ejected(), 2, "half of four at most");
    assert!(status.node("a").expect("a").ejected && status.node("b").expect("b").ejected);
    assert!(!status.node("c").expect("c").ejected);
    assert_eq!(status.node("c").expect("c").consecutive_failures, 3);
    for _ in 0..50 {
        let id = p
            .pick(None, &[], None)
            .expect("pick")
            .node()
            .id()
            .to_owned();
        assert!(id == "c" || id == "d", "ejected node {id} picked");
    }
    let deadline = p.next_deadline().expect("an ejection ends");
    assert!(deadline >= t0 + Duration::from_secs(5) && deadline <= t0 + Duration::from_secs(10));
    assert!(
        !p.expire(t0 + Duration::from_millis(4_999)),
        "not back before the backoff"
    );
    assert!(p.expire(t0 + Duration::from_secs(10)));
    assert_eq!(p.status().ejected(), 0);
    assert!(
        p.connection_failed(c, t0 + Duration::from_secs(10)),
        "room again: c goes"
    );
    // Every candidate ejected or excluded still leaves the ejected ones to pick.
}

#[test]
fn panic_threshold_holds_a_mass_removal_until_failure_or_grace() {
    let grace = Duration::from_secs(30);
    let mut p = picker(PickerConfig::default().with_panic_grace(grace), versioned());
    let t0 = Instant::now();
    let b = handle_of(&p, "b");
    p.update(vec![node("a", 1001).with_version("1.0.0")], 2, t0);
    let status = p.status();
    assert_eq!(
        (status.listed, status.nodes.len(), status.held()),
        (1, 4, 3)
    );
    assert_eq!(p.pick_all(None).expect("all").len(), 4);
    assert!(
        p.connection_failed(b, t0),
        "a held node goes at its first failure"
    );
    assert_eq!(ids_of(&p.pick_all(None).expect("all")), ["a", "c", "d"]);
    assert!(!p.expire(t0 + grace - Duration::from_millis(1)));
    assert!(p.expire(t0 + grace));
    assert_eq!(ids_of(&p.pick_all(None).expect("all")), ["a"]);
    // Removing half is within the threshold: applied at once.
    p.update(versioned(), 3, t0 + grace);
    p.update(vec![node("a", 1001), node("b", 1002)], 4, t0 + grace);
    assert_eq!(p.status().held(), 0);
}

fn two_zones() -> Arc<[Node]> {
    [
        node("a1", 1001).with_zone("a"),
        node("a2", 1002).with_zone("a"),
        node("b1", 1003).with_zone("b"),
        node("b2", 1004).with_zone("b"),
    ]
    .into()
}

/// The zones of `n` picks (no exclusion), sorted and deduplicated.
fn zones_picked(p: &mut Picker, n: usize) -> Vec<String> {
    let mut zones: Vec<String> = (0..n)
        .map(|_| {
            p.pick(None, &[], None)
                .expect("pick")
                .node()
                .zone()
                .to_owned()
        })
        .collect();
    zones.sort();
    zones.dedup();
    zones
}

#[test]
fn a_zone_preference_keeps_picks_home_spills_over_and_comes_back() {
    let preference = crate::ZonePreference::new("a").with_min_healthy(2);
    for balancer in Balancer::ALL {
        let config = PickerConfig::default()
            .with_balancer(balancer)
            .with_locality(preference.clone());
        let mut p = picker(config, two_zones());
        assert_eq!(zones_picked(&mut p, 40), ["a"], "{balancer}: home zone");
        assert!(!p.snapshot().spills_over());
        assert_eq!(
            p.pick_all(None).expect("pick_all").len(),
            4,
            "{balancer}: a fan-out reaches every zone"
        );

        let a1 = handle_of(&p, "a1");
        assert!(p.health_changed(a1, false));
        // One pickable node of a is below min_healthy: b joins (pick_first
        // keeps to its first candidate).
        if balancer != Balancer::PickFirst {
            assert_eq!(zones_picked(&mut p, 80), ["a", "b"], "{balancer}: spilled");
        }
        let a2 = handle_of(&p, "a2");
        assert!(p.health_changed(a2, false));
        assert_eq!(zones_picked(&mut p, 40), ["b"], "{balancer}: a is out");
        assert!(p.snapshot().spills_over());

        assert!(p.health_changed(a1, true));
        assert!(p.health_changed(a2, true));
        assert_eq!(zones_picked(&mut p, 40), ["a"], "{balancer}: back home");
        assert!(!p.snapshot().spills_over());
    }
}

#[test]
fn a_call_that_tried_every_home_node_spills_over_to_the_next_zone() {
    let config = PickerConfig::default().with_locality(crate::ZonePreference::new("a"));
    let mut p = picker(config, two_zones());
    let first = p.pick(None, &[], None).expect("first");
    let second = p.pick(None, &[first.handle()], None).expect("second");
    assert_eq!(
        [first.node().zone(), second.node().zone()],
        ["a", "a"],
        "the home zone first"
    );
    let tried = [first.handle(), second.handle()];
    let third = p.pick(None, &tried, None).expect("third");
    assert_eq!(third.node().zone(), "b", "then the other zone");
    let mut tried = tried.to_vec();
    tried.push(third.handle());
    let fourth = p.pick(None, &tried, None).expect("fourth");
    tried.push(fourth.handle());
    assert!(matches!(
        p.pick(None, &tried, None),
        Err(Error::AllExcluded { tried: 4, .. })
    ));
}

#[test]
fn without_a_preference_picks_ignore_zones() {
    let mut p = picker(PickerConfig::default(), two_zones());
    assert_eq!(zones_picked(&mut p, 40), ["a", "b"]);
}

// ---- the actor, against a real etcd -------------------------------------------

struct Cluster {
    etcd: EtcdServer,
    config: RegistryConfig,
    client: Client,
}

impl Cluster {
    async fn start() -> Self {
        let etcd = EtcdServer::start().await.expect("etcd starts");
        let config = etcd.registry_config();
        let client = etcd.client().await.expect("etcd client");
        Self {
            etcd,
            config,
            client,
        }
    }

    async fn put(&mut self, node: &Node) -> i64 {
        let r = self
            .client
            .put(node.key(self.config.prefix()), node.encode(), None)
            .await
            .expect("put");
        r.header().map_or(0, |h| h.revision())
    }

    async fn registry(&self) -> Addr<RegistryActor> {
        let client = registry_actor::connect(&self.config)
            .await
            .expect("connect");
        RegistryActor::new(client, &self.config).start()
    }
}

/// A loopback address nothing listens on: connections to it are refused.
fn refused_addr() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A real connection attempt, as a connection actor makes it, reported to the
/// picker.
async fn connect_and_report(picker: &Addr<PickerActor>, node: NodeHandle, addr: &str) -> bool {
    let attempt = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    match attempt {
        Ok(_) => {
            picker.do_send(ConnectionSucceeded { node });
            true
        }
        Err(e) => {
            picker
                .send(ConnectionFailed::new(node, e.to_string()))
                .await
                .expect("picker alive");
            false
        }
    }
}

async fn status(picker: &Addr<PickerActor>) -> PickerStatus {
    picker.send(Inspect).await.expect("picker alive")
}

async fn wait_for_revision(picker: &Addr<PickerActor>, revision: i64) {
    assert!(
        wait_until(DEADLINE, || async {
            status(picker).await.revision >= revision
        })
        .await,
        "the picker never saw revision {revision}"
    );
}

#[actix_rt::test]
async fn the_actor_picks_by_version_range_from_etcd_with_strict_and_any_fallbacks() {
    let mut cluster = Cluster::start().await;
    let mut revision = 0;
    for n in versioned().iter() {
        revision = cluster.put(n).await;
    }
    let config = PickerConfig::default().with_balancer(Balancer::RoundRobin);
    let picker = PickerActor::new("echo", config, cluster.registry().await).start();
    wait_for_revision(&picker, revision).await;

    let range = Selector::new().with_version(">=1.2, <2").expect("range");
    for _ in 0..20 {
        let picked = picker
            .send(Pick::new().with_selector(range.clone()))
            .await
            .expect("picker alive")
            .expect("a match");
        assert!(
            ["b", "c"].contains(&picked.node().id()),
            "picked {}",
            picked.node().id()
        );
    }
    let all = picker
        .send(PickAll::new().with_selector(range))
        .await
        .expect("alive")
        .expect("all");
    assert_eq!(ids_of(&all), ["b", "c"]);

    let none = Selector::new().with_version(">=3, <4").expect("range");
    let err = picker
        .send(Pick::new().with_selector(none.clone().with_fallback(Fallback::Strict)))
        .await
        .expect("alive")
        .expect_err("strict, nothing matches");
    let text = err.to_string();
    assert!(
        text.contains("version >=3, <4") && text.contains("`2.0.0`"),
        "{text}"
    );

    let one = picker
        .send(Pick::new().with_selector(none.clone()))
        .await
        .expect("alive")
        .expect("any: a unicast falls back to every node");
    assert!(["a", "b", "c", "d"].contains(&one.node().id()));
    let err = picker
        .send(PickAll::new().with_selector(none))
        .await
        .expect("alive")
        .expect_err("a fan-out never falls back");
    assert!(matches!(err, Error::NoMatch { strict: false, .. }), "{err}");
}

#[actix_rt::test]
async fn a_node_refusing_connections_is_ejected_after_n_failures_within_the_cap_and_comes_back() {
    let mut cluster = Cluster::start().await;
    let mut revision = 0;
    let mut addrs = Vec::new();
    for id in ["n1", "n2", "n3", "n4"] {
        let n = node(id, refused_addr());
        addrs.push((id, n.addr().to_owned()));
        revision = cluster.put(&n).await;
    }
    let base = Duration::from_secs(10);
    let config = PickerConfig::default().with_ejection(
        EjectionConfig::default()
            .with_failures(3)
            .with_base_time(base)
            .with_max_time(Duration::from_secs(60))
            .with_max_share(0.5),
    );
    let picker = PickerActor::new("echo", config, cluster.registry().await).start();
    wait_for_revision(&picker, revision).await;
    let handles = status(&picker).await;
    let handle = |id: &str| handles.node(id).expect("node").handle;

    for attempt in 1..=3 {
        assert!(
            !connect_and_report(&picker, handle("n1"), &addrs[0].1).await,
            "refused"
        );
        let n1 = status(&picker).await.node("n1").cloned().expect("n1");
        assert_eq!(n1.consecutive_failures, attempt);
        assert_eq!(
            n1.ejected,
            attempt == 3,
            "ejected at the third failure, not before"
        );
    }
    for _ in 0..3 {
        connect_and_report(&picker, handle("n2"), &addrs[1].1).await;
        connect_and_report(&picker, handle("n3"), &addrs[2].1).await;
    }
    let s = status(&picker).await;
    assert_eq!(s.ejected(), 2, "never more than half of four");
    assert!(s.node("n2").expect("n2").ejected);
    assert!(!s.node("n3").expect("n3").ejected, "the cap keeps n3 in");
    for _ in 0..40 {
        let picked = picker
            .send(Pick::new())
            .await
            .expect("alive")
            .expect("pick");
        assert!(
            ["n3", "n4"].contains(&picked.node().id()),
            "picked ejected {}",
            picked.node().id()
        );
    }

    // The backoff of a first ejection is within [base/2, base]: step through it on
    // tokio's clock, which the actor's timers run on.
    tokio::time::pause();
    tokio::time::advance(base / 2 - Duration::from_millis(1)).await;
    assert_eq!(
        status(&picker).await.ejected(),
        2,
        "still out before the backoff"
    );
    tokio::time::advance(base / 2 + Duration::from_millis(1)).await;
    assert!(
        wait_until(DEADLINE, || async { status(&picker).await.ejected() == 0 }).await,
        "both back after the backoff"
    );
    let s = status(&picker).await;
    assert_eq!(s.node("n1").expect("n1").consecutive_failures, 0);
    assert_eq!(s.node("n1").expect("n1").ejections, 1);
}

#[actix_rt::test]
async fn etcd_dropping_three_of_four_nodes_at_once_is_held_until_they_fail_or_the_grace_passes() {
    let mut cluster = Cluster::start().await;
    let nodes: Vec<Node> = ["n1", "n2", "n3", "n4"]
        .iter()
        .map(|id| node(id, refused_addr()))
        .collect();
    let mut revision = 0;
    for n in &nodes {
        revision = cluster.put(n).await;
    }
    let grace = Duration::from_secs(60);
    let config = PickerConfig::default().with_panic_grace(grace);
    let picker = PickerActor::new("echo", config, cluster.registry().await).start();
    wait_for_revision(&picker, revision).await;

    // One etcd transaction: one revision, one change removing 3 of 4.
    let prefix = cluster.config.prefix().to_owned();
    let deletes: Vec<TxnOp> = nodes[1..]
        .iter()
        .map(|n| TxnOp::delete(n.key(&prefix), None))
        .collect();
    let answer = cluster
        .client
        .txn(Txn::new().and_then(deletes))
        .await
        .expect("txn");
    let revision = answer.header().map_or(0, |h| h.revision());
    wait_for_revision(&picker, revision).await;

    let s = status(&picker).await;
    assert_eq!(
        (s.listed, s.nodes.len(), s.held()),
        (1, 4, 3),
        "kept: {s:?}"
    );
    let all = picker
        .send(PickAll::new())
        .await
        .expect("alive")
        .expect("all");
    assert_eq!(ids_of(&all), ["n1", "n2", "n3", "n4"]);
    assert_eq!(status(&picker).await.connections, 4, "one per node picked");

    // n2 really is down: its first failed connection lets the removal through,
    // and closes its connection.
    assert!(!connect_and_report(&picker, s.node("n2").expect("n2").handle, nodes[1].addr()).await);
    let s = status(&picker).await;
    assert!(s.node("n2").is_none(), "n2 dropped after it failed");
    assert_eq!(s.held(), 2);
    assert_eq!(s.connections, 3, "the dropped node's connection is closed");

    // The others go when the grace passes.
    tokio::time::pause();
    tokio::time::advance(grace).await;
    assert!(
        wait_until(DEADLINE, || async {
            status(&picker).await.nodes.len() == 1
        })
        .await,
        "held nodes dropped after the grace"
    );
    assert_eq!(
        status(&picker).await.connections,
        1,
        "the held nodes' connections are closed when their grace ends"
    );
    let all = picker
        .send(PickAll::new())
        .await
        .expect("alive")
        .expect("all");
    assert_eq!(ids_of(&all), ["n1"]);
}

#[actix_rt::test]
async fn a_pick_waits_for_the_first_node_set_and_times_out_without_one() {
    let mut cluster = Cluster::start().await;
    cluster.put(&node("n1", 1001)).await;
    cluster.etcd.stop();

    let registry = cluster.registry().await;
    let impatient = PickerActor::new(
        "echo",
        PickerConfig::default().with_discovery_timeout(Duration::from_millis(300)),
        registry.clone(),
    )
    .start();
    let err = impatient
        .send(Pick::new())
        .await
        .expect("alive")
        .expect_err("etcd is down");
    let Error::NotDiscovered { cause, .. } = &err else {
        panic!("not discovered: {err}");
    };
    let cause = cause.as_deref().unwrap_or_default();
    let refused = format!("at {} failed: connection refused", cluster.etcd.endpoint());
    assert!(cause.contains(&refused), "names etcd's last failure: {err}");

    let patient = PickerActor::new(
        "echo",
        PickerConfig::default().with_discovery_timeout(DEADLINE),
        registry,
    )
    .start();
    let pending = patient.send(Pick::new());
    assert!(
        !status(&patient).await.discovered,
        "sent before any node set"
    );
    cluster.etcd.restart().await.expect("etcd restarts");
    let picked = pending
        .await
        .expect("alive")
        .expect("picked once discovered");
    assert_eq!(picked.node().id(), "n1");
}

#[actix_rt::test]
async fn calls_pick_from_the_shared_state_once_the_actor_has_attached_a_connection() {
    let mut cluster = Cluster::start().await;
    let n1 = node("n1", refused_addr());
    let revision = cluster.put(&n1).await;
    // Threshold 1: the only node leaving is applied at once, not held.
    let config = PickerConfig::default().with_panic_threshold(1.0);
    let actor = PickerActor::new("echo", config, cluster.registry().await);
    let shared = actor.shared();
    assert!(
        matches!(shared.pick(None, &[], None, here()), Fast::Wait),
        "before the first node set a call must ask the actor"
    );
    let picker = actor.start();
    wait_for_revision(&picker, revision).await;

    // The node has no connection yet: the pick is made, the actor attaches one.
    let Fast::Attach(picked) = shared.pick(None, &[], None, here()) else {
        panic!("a node picked for the first time needs its connection started");
    };
    assert!(picked.connection().is_none());
    let attached = picker
        .send(Attach {
            picked: vec![picked],
            home: Home::of_caller(false),
        })
        .await
        .expect("picker alive");
    let first = attached[0].connection().expect("attached").clone();

    // From now on a pick needs no message, and hands out the same connection.
    let Fast::Done(Ok(again)) = shared.pick(None, &[], None, here()) else {
        panic!("a node with a connection is picked without the actor");
    };
    let again = again.connection().expect("connection");
    assert!(
        std::ptr::eq(again.node(), first.node()),
        "one connection per node"
    );
    let Fast::Done(Ok(all)) = shared.pick_all(None, here()) else {
        panic!("pick_all without the actor");
    };
    assert_eq!(ids_of(&all), ["n1"]);

    // An excluded node is an error answered without the actor.
    let handle = attached[0].handle();
    assert!(matches!(
        shared.pick(None, &[handle], None, here()),
        Fast::Done(Err(Error::AllExcluded { .. }))
    ));

    // The node leaving drops its connection from the shared state.
    cluster
        .client
        .delete(n1.key(cluster.config.prefix()), None)
        .await
        .expect("delete");
    assert!(
        wait_until(DEADLINE, || async {
            matches!(shared.pick(None, &[], None, here()), Fast::Done(Err(_)))
        })
        .await,
        "the departed node is no longer picked"
    );
    assert!(
        wait_until(DEADLINE, || async {
            status(&picker).await.connections == 0
        })
        .await,
        "the departed node's connection is closed"
    );
}

#[actix_rt::test]
async fn least_request_reads_loads_written_by_connections_into_the_shared_state() {
    let mut cluster = Cluster::start().await;
    for n in [node("a", refused_addr()), node("b", refused_addr())] {
        cluster.put(&n).await;
    }
    let config = PickerConfig::default().with_balancer(Balancer::LeastRequest);
    let actor = PickerActor::new("echo", config, cluster.registry().await);
    let shared = actor.shared();
    let picker = actor.start();
    assert!(
        wait_until(DEADLINE, || async {
            status(&picker).await.nodes.len() == 2
        })
        .await,
        "both nodes listed"
    );
    let all = picker
        .send(PickAll::new())
        .await
        .expect("alive")
        .expect("all");
    let (a, b) = (all[0].handle(), all[1].handle());
    // What a connection does when calls start and end on `a`.
    shared.set_load(a, 7);
    for _ in 0..50 {
        let Fast::Done(Ok(p)) = shared.pick(None, &[], None, here()) else {
            panic!("picked without the actor");
        };
        assert_eq!(p.handle(), b, "least_request avoids the loaded node");
    }
    shared.set_load(a, 0);
    shared.set_load(b, 7);
    let Fast::Done(Ok(p)) = shared.pick(None, &[], None, here()) else {
        panic!("picked without the actor");
    };
    assert_eq!(p.handle(), a);
}

#[actix_rt::test]
async fn a_view_picks_from_the_published_snapshot_without_the_actor() {
    let mut cluster = Cluster::start().await;
    let actor = PickerActor::new("echo", PickerConfig::default(), cluster.registry().await);
    let view = actor.view();
    assert!(
        matches!(view.pick(&Pick::new()), Err(Error::NotDiscovered { .. })),
        "nothing published before the first node set"
    );
    let picker = actor.start();
    let revision = cluster.put(&node("a", refused_addr())).await;
    wait_for_revision(&picker, revision).await;
    let picked = view.pick(&Pick::new()).expect("published");
    assert_eq!(picked.node().id(), "a");
    assert!(picked.connection().is_none(), "a view makes no connection");
    let all = view.pick_all(&PickAll::new()).expect("published");
    assert_eq!(ids_of(&all), ["a"]);
    assert!(matches!(
        view.pick(&Pick::new().excluding([picked.handle()])),
        Err(Error::AllExcluded { .. })
    ));
}

// ---- large sets, changed chunk by chunk ---------------------------------------

fn numbered(i: u32, port: u16) -> Node {
    node(&format!("n{i:05}"), port)
}

/// Ejects the nodes of `ids` (one failure ejects; no cap).
fn eject_all(p: &mut Picker, ids: &[String], now: Instant) {
    for id in ids {
        let handle = handle_of(p, id);
        assert!(p.connection_failed(handle, now), "{id} ejected");
    }
}

fn ejecting_at_once() -> PickerConfig {
    PickerConfig::default().with_ejection(
        EjectionConfig::default()
            .with_failures(1)
            .with_max_share(1.0),
    )
}

#[test]
fn a_one_node_change_in_a_large_set_keeps_every_other_entry_and_shares_its_chunks() {
    let t0 = Instant::now();
    let set: NodeSet = (0..5_000).map(|i| numbered(i * 2, 1000)).collect();
    let mut p = picker(ejecting_at_once(), set.clone().to_vec().into());
    p.update(set.clone(), 2, t0);
    let before = p.status();
    eject_all(&mut p, &["n00010".to_owned(), "n09000".to_owned()], t0);
    p.report_load(handle_of(&p, "n04000"), 3);
    let slots_before: Vec<_> = p.snapshot().slot_chunks().to_vec();

    let added = set.updated([(String::new(), Some(numbered(4001, 1000)))]);
    p.update(added.clone(), 3, t0);
    p.assert_consistent();
    let after = p.status();
    for node in &before.nodes {
        assert_eq!(
            after.node(&node.id).expect("kept").handle,
            node.handle,
            "{}",
            node.id
        );
    }
    assert_eq!(after.ejected(), 2, "ejections carried over");
    assert_eq!(
        after.node("n04000").expect("kept").in_flight,
        3,
        "load carried over"
    );
    let fresh = p
        .snapshot()
        .slot_chunks()
        .iter()
        .filter(|c| !slots_before.iter().any(|b| Arc::ptr_eq(b, c)))
        .count();
    assert_eq!(fresh, 1, "only the changed chunk's slots are new");

    // Removing an ejected node ends its ejection; the other stays.
    p.update(added.updated([("n00010".to_owned(), None)]), 4, t0);
    p.assert_consistent();
    assert_eq!(p.status().ejected(), 1);
    for _ in 0..200 {
        let picked = p.pick(None, &[], None).expect("pick");
        assert_ne!(
            picked.node().id(),
            "n09000",
            "an ejected node is not picked"
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any batch of changes to a set of several chunks, applied as the
    /// registry applies them: every node that stays with its address keeps
    /// its handle and its ejection; a node with a new address gets a new
    /// handle and no ejection; the picker's state agrees with its set.
    #[test]
    fn entries_follow_their_ids_through_any_change(
        start in proptest::collection::btree_set(0u32..6_000, 0..3_000),
        eject in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..20),
        changes in proptest::collection::vec((0u32..6_000, 0u8..3), 0..700),
    ) {
        let t0 = Instant::now();
        let set: NodeSet = start.iter().map(|&i| numbered(i, 1000)).collect();
        let mut p = Picker::with_seed("echo", ejecting_at_once(), 3);
        p.update(set.clone(), 1, t0);
        let mut ejected: Vec<String> = eject
            .iter()
            .filter(|_| !set.is_empty())
            .map(|k| set[k.index(set.len())].id().to_owned())
            .collect();
        ejected.sort();
        ejected.dedup();
        eject_all(&mut p, &ejected, t0);
        let before = p.status();
        // 0: put with the same address, 1: with a new address, 2: delete.
        let batch: Vec<(String, Option<Node>)> = changes
            .iter()
            .map(|&(i, kind)| {
                let n = numbered(i, if kind == 1 { 2000 } else { 1000 });
                (n.id().to_owned(), (kind != 2).then_some(n))
            })
            .collect();
        let next = set.updated(batch);
        p.update(next.clone(), 2, t0);
        p.assert_consistent();
        let after = p.status();
        proptest::prop_assert_eq!(after.nodes.len(), next.len());
        for node in &after.nodes {
            let was = before.node(&node.id).filter(|b| b.addr == node.addr);
            match was {
                Some(b) => {
                    proptest::prop_assert_eq!(node.handle, b.handle);
                    proptest::prop_assert_eq!(node.ejected, b.ejected);
                }
                None => {
                    proptest::prop_assert!(before.nodes.iter().all(|b| b.handle != node.handle));
                    proptest::prop_assert!(!node.ejected);
                }
            }
        }
    }
}

#[test]
fn weighted_balancers_read_weights_across_every_chunk() {
    let set: NodeSet = (0..3_000)
        .map(|i| numbered(i, 1000).with_weight(if i % 3 == 0 { 0 } else { 1 + i % 7 }))
        .collect();
    assert!(set.chunks().len() > 2);
    for balancer in [Balancer::WeightedRandom, Balancer::WeightedRoundRobin] {
        let mut p = picker(
            PickerConfig::default().with_balancer(balancer),
            set.to_vec().into(),
        );
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3_000 {
            let picked = p.pick(None, &[], None).expect("pick");
            assert!(picked.node().weight() > 0, "{balancer:?} picked weight 0");
            seen.insert(set.find(picked.node().id()).expect("in the set") / 512);
        }
        assert!(
            seen.len() > 2,
            "{balancer:?} picks from every part: {seen:?}"
        );
    }
}

#[test]
fn a_ring_carried_through_changes_sends_every_key_where_a_ring_built_anew_does() {
    // Weights of three classes and some 0, over several chunks, light
    // enough that no node's points are scaled down to fit the ring; the
    // change removes, adds and re-weighs nodes in three of them.
    let weight = |i: u32| [0, 25, 50, 75][(i % 4) as usize];
    let set: NodeSet = (0..3_000)
        .map(|i| numbered(i, 1000).with_weight(weight(i)))
        .collect();
    let next = set.updated([
        ("n00007".to_owned(), None),
        ("n01500".to_owned(), None),
        ("n03001".to_owned(), Some(numbered(3_001, 1000))),
        (
            "n00600".to_owned(),
            Some(numbered(600, 1000).with_weight(300)),
        ),
    ]);
    let config = PickerConfig::default().with_balancer(Balancer::ConsistentHash);
    let t0 = Instant::now();
    let mut carried = Picker::with_seed("echo", config.clone(), 1);
    carried.update(set, 1, t0);
    carried.update(next.clone(), 2, t0);
    carried.assert_consistent();
    let mut anew = Picker::with_seed("echo", config, 2);
    anew.update(next, 2, t0);
    for k in 0..5_000u32 {
        let key = || Some(HashKey::of(k.to_le_bytes()));
        let a = carried.pick(None, &[], key()).expect("pick");
        let b = anew.pick(None, &[], key()).expect("pick");
        assert_eq!(a.node().id(), b.node().id(), "key {k}");
    }
}
