//! The RegistryActor against a real etcd: shared watches, outages, compaction,
//! malformed values.

mod common;

use std::time::Duration;

use common::*;
use registry_actor::{Registrar, RegistrationState, RegistryStats, Snapshot, Stats, Unsubscribe};

async fn stats(registry: &actix::Addr<registry_actor::RegistryActor>) -> RegistryStats {
    registry.send(Stats).await.expect("registry alive")
}

async fn wait_stats(
    registry: &actix::Addr<registry_actor::RegistryActor>,
    what: &str,
    pred: impl Fn(&RegistryStats) -> bool,
) -> RegistryStats {
    let ok = wait_until(EVENTUALLY, || async { pred(&stats(registry).await) }).await;
    let now = stats(registry).await;
    assert!(ok, "timed out waiting for {what}; stats {now:?}");
    now
}

#[actix_rt::test]
async fn two_subscribers_share_one_watch_and_the_last_unsubscribe_closes_it() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd.registry_config();
    let mut raw = etcd.client().await.expect("raw client");
    raw_put(&mut raw, &config, "a", r#"{"id":"a","addr":"127.0.0.1:1"}"#).await;
    let registry = start_registry(&config).await;

    let mut first = Subscriber::start(&registry, "echo").await;
    first.wait_for("a", has_ids(&["a"])).await;
    // The service is known now: the second subscriber gets the snapshot at once.
    let mut second = Subscriber::start(&registry, "echo").await;
    second.wait_for("a, at once", has_ids(&["a"])).await;

    let s = wait_stats(&registry, "one open watch", |s| s.watches_open == 1).await;
    assert_eq!((s.services, s.subscribers, s.nodes), (1, 2, 1));

    raw_put(&mut raw, &config, "b", r#"{"id":"b","addr":"127.0.0.1:2"}"#).await;
    let a = first.wait_for("a, b", has_ids(&["a", "b"])).await;
    let b = second.wait_for("a, b", has_ids(&["a", "b"])).await;
    assert_eq!(a.revision, b.revision, "both see the same revision");
    assert_eq!(
        stats(&registry).await.watches_open,
        1,
        "still one watch for two subscribers"
    );

    assert!(registry
        .send(Unsubscribe {
            service: "echo".into(),
            id: first.id
        })
        .await
        .expect("alive"));
    assert_eq!(stats(&registry).await.watches_open, 1);
    assert!(registry
        .send(Unsubscribe {
            service: "echo".into(),
            id: second.id
        })
        .await
        .expect("alive"));
    let s = wait_stats(&registry, "the watch to close", |s| s.watches_open == 0).await;
    assert_eq!((s.services, s.subscribers), (0, 0));
}

#[actix_rt::test]
async fn malformed_values_are_skipped_and_counted_beside_good_ones() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd.registry_config();
    let mut raw = etcd.client().await.expect("raw client");
    raw_put(
        &mut raw,
        &config,
        "good-1",
        r#"{"id":"good-1","addr":"127.0.0.1:1"}"#,
    )
    .await;
    raw_put(
        &mut raw,
        &config,
        "bad-json",
        r#"{"id": "bad-json", "addr": "#,
    )
    .await;
    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    sub.wait_for("good-1 only", has_ids(&["good-1"])).await;

    // Live events: three more bad values and one more good one.
    raw_put(&mut raw, &config, "no-addr", r#"{"id":"no-addr"}"#).await;
    raw_put(
        &mut raw,
        &config,
        "bad-port",
        r#"{"id":"bad-port","addr":"127.0.0.1:99999"}"#,
    )
    .await;
    raw_put(
        &mut raw,
        &config,
        "neg-weight",
        r#"{"id":"neg-weight","addr":"127.0.0.1:3","weight":-1}"#,
    )
    .await;
    raw_put(
        &mut raw,
        &config,
        "good-2",
        r#"{"id":"good-2","addr":"127.0.0.1:2","weight":0}"#,
    )
    .await;
    let set = sub
        .wait_for("both good nodes", has_ids(&["good-1", "good-2"]))
        .await;
    assert_eq!(
        set.nodes
            .iter()
            .find(|n| n.id() == "good-2")
            .map(|n| n.weight()),
        Some(0)
    );
    let s = stats(&registry).await;
    assert_eq!(
        s.decode_errors, 4,
        "bad JSON, no addr, port 99999, negative weight"
    );
    assert_eq!(s.nodes, 2);

    // A good node whose value turns bad leaves the set; the rest stays.
    raw_put(&mut raw, &config, "good-1", "garbage").await;
    sub.wait_for("good-2 only", has_ids(&["good-2"])).await;
    assert_eq!(stats(&registry).await.decode_errors, 5);

    // A key nested below the service's prefix names no node, even with a
    // value whose id is its last segment; a node put after it shows that it
    // was read.
    raw_put(
        &mut raw,
        &config,
        "deeper/good-3",
        r#"{"id":"good-3","addr":"127.0.0.1:4"}"#,
    )
    .await;
    raw_put(
        &mut raw,
        &config,
        "good-4",
        r#"{"id":"good-4","addr":"127.0.0.1:5"}"#,
    )
    .await;
    sub.wait_for("good-2 and good-4", has_ids(&["good-2", "good-4"]))
        .await;
    assert_eq!(stats(&registry).await.decode_errors, 6, "the nested key");
    raw_delete(&mut raw, &config, "good-4").await;
    sub.wait_for("good-2 again", has_ids(&["good-2"])).await;
    assert!(
        sub.history.iter().all(|c| !c.nodes.is_empty()),
        "the set was never wiped"
    );
}

#[actix_rt::test]
async fn etcd_outage_longer_than_the_ttl_keeps_the_set_then_heals() {
    let mut etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd.registry_config();
    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    let client = registry_actor::connect(&config).await.expect("client");
    let registrar = Registrar::start(client, node("echo-1", 50051), &config);
    sub.wait_for("echo-1", has_ids(&["echo-1"])).await;
    let first_lease = wait_registered(&registrar).await;

    etcd.stop();
    let mut states = registrar.state_changes();
    tokio::time::timeout(
        EVENTUALLY,
        states.wait_for(|s| matches!(s, RegistrationState::Retrying { .. })),
    )
    .await
    .expect("the registrar notices the outage")
    .expect("alive");
    wait_stats(&registry, "the watch to notice the outage", |s| {
        s.reconnects >= 1
    })
    .await;
    // The outage itself is the behaviour under test: it must outlast the lease TTL.
    tokio::time::sleep(config.lease_ttl() + Duration::from_secs(1)).await;
    let kept = registry
        .send(Snapshot {
            service: "echo".into(),
        })
        .await
        .expect("alive")
        .expect("a known set");
    assert_eq!(
        ids(&kept.nodes),
        ["echo-1"],
        "the last known set is kept while etcd is down"
    );

    etcd.restart().await.expect("restart on the same data");
    let mut raw = etcd.client().await.expect("raw client");
    raw_put(
        &mut raw,
        &config,
        "other",
        r#"{"id":"other","addr":"127.0.0.1:2"}"#,
    )
    .await;
    sub.wait_for(
        "the event made right after the restart",
        has_ids(&["echo-1", "other"]),
    )
    .await;

    // etcd restores its leases with a fresh TTL: the registrar carries its
    // lease over when it outlived the outage, or grants a new one.
    let mut states = registrar.state_changes();
    let state = tokio::time::timeout(EVENTUALLY, states.wait_for(|s| s.is_registered()))
        .await
        .expect("registered again")
        .expect("alive")
        .clone();
    let RegistrationState::Registered { lease } = state else {
        unreachable!()
    };
    assert_eq!(
        key_lease(&mut raw, registrar.key()).await,
        Some(lease),
        "the key hangs on the registered lease (first {first_lease:x}, now {lease:x})"
    );
    // A lease left behind expiring must not take the node away: it stays.
    tokio::time::sleep(config.lease_ttl() + Duration::from_secs(1)).await;
    sub.drain();
    assert_eq!(ids(&sub.last().expect("a set").nodes), ["echo-1", "other"]);
    let seen: Vec<_> = sub
        .history
        .iter()
        .map(|c| (c.revision, ids(&c.nodes)))
        .collect();
    let mut after_first = sub.history.iter().skip_while(|c| c.nodes.is_empty());
    assert!(after_first.clone().count() >= 2, "{seen:?}");
    assert!(
        after_first.all(|c| !c.nodes.is_empty()),
        "never emptied by the outage: {seen:?}"
    );
    registrar.deregister().await.expect("deregister");
}

#[actix_rt::test]
async fn compaction_past_a_disconnected_watcher_resyncs_to_exactly_the_right_set() {
    let mut etcd = EtcdServer::start().await.expect("etcd");
    // A long reconnect backoff keeps the watcher away while we change and compact.
    let config = etcd
        .registry_config()
        .with_backoff(Duration::from_secs(6), Duration::from_secs(6));
    let mut raw = etcd.client().await.expect("raw client");
    for id in ["a", "b", "c"] {
        raw_put(
            &mut raw,
            &config,
            id,
            &format!(r#"{{"id":"{id}","addr":"127.0.0.1:1"}}"#),
        )
        .await;
    }
    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    sub.wait_for("a, b, c", has_ids(&["a", "b", "c"])).await;

    etcd.stop();
    wait_stats(&registry, "the watcher to disconnect", |s| {
        s.reconnects >= 1 && s.watches_open == 0
    })
    .await;
    etcd.restart().await.expect("restart");
    let mut raw = etcd.client().await.expect("raw client");
    raw_delete(&mut raw, &config, "a").await;
    raw_put(
        &mut raw,
        &config,
        "c",
        r#"{"id":"c","addr":"127.0.0.1:1","version":"2"}"#,
    )
    .await;
    raw_put(&mut raw, &config, "d", r#"{"id":"d","addr":"127.0.0.1:1"}"#).await;
    let rev = raw
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    raw.compact(rev, None).await.expect("compact");
    assert_eq!(
        stats(&registry).await.resyncs,
        0,
        "the watcher is still away"
    );

    let set = sub
        .wait_for("b, c, d after the resync", has_ids(&["b", "c", "d"]))
        .await;
    assert_eq!(
        set.nodes
            .iter()
            .find(|n| n.id() == "c")
            .map(|n| n.version()),
        Some("2")
    );
    assert!(set.revision >= rev);
    let s = stats(&registry).await;
    assert!(
        s.resyncs >= 1,
        "the compacted start revision forced a full re-read: {s:?}"
    );
    assert_eq!(s.nodes, 3);
}

#[actix_rt::test]
async fn subscriber_of_a_registry_started_while_etcd_is_down_gets_the_set_once_it_is_up() {
    let mut etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd.registry_config();
    let mut raw = etcd.client().await.expect("raw client");
    raw_put(&mut raw, &config, "a", r#"{"id":"a","addr":"127.0.0.1:1"}"#).await;
    etcd.stop();

    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    let none = registry
        .send(Snapshot {
            service: "echo".into(),
        })
        .await
        .expect("alive");
    assert!(none.is_none(), "nothing is known before etcd answers");
    etcd.restart().await.expect("restart");
    sub.wait_for("a", has_ids(&["a"])).await;
}

#[actix_rt::test]
async fn a_put_that_changes_nothing_publishes_nothing_and_a_changed_value_publishes_once() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd.registry_config();
    let mut raw = etcd.client().await.expect("raw client");
    let a = r#"{"id":"a","addr":"127.0.0.1:1"}"#;
    raw_put(&mut raw, &config, "a", a).await;
    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    sub.wait_for("a", has_ids(&["a"])).await;

    // Neither the same value again nor an invalid value under a key outside
    // the set changes the set.
    raw_put(&mut raw, &config, "a", a).await;
    raw_put(&mut raw, &config, "bad", "not json").await;
    // a's address changed: one new set, whatever came before it.
    raw_put(&mut raw, &config, "a", r#"{"id":"a","addr":"127.0.0.1:2"}"#).await;
    let moved = sub
        .wait_for("a at :2", |nodes| {
            nodes.len() == 1 && nodes[0].addr() == "127.0.0.1:2"
        })
        .await;
    assert_eq!(ids(&moved.nodes), ["a"]);
    let sets: Vec<Vec<String>> = sub
        .history
        .iter()
        .map(|c| c.nodes.iter().map(|n| n.addr().to_owned()).collect())
        .collect();
    assert_eq!(
        sets,
        [
            vec!["127.0.0.1:1".to_owned()],
            vec!["127.0.0.1:2".to_owned()]
        ],
        "one set per change, none for the puts that changed nothing"
    );
}
