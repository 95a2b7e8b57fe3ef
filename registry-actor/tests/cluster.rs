//! The registry against a 3-member etcd cluster: a frozen member, a leader
//! killed under a registration, a cluster rebuilt with older revisions, a
//! prefix too large for one message, and oversized or mismatched values.

mod common;

use std::time::{Duration, Instant};

use common::*;
use etcd_client::{GetOptions, Txn, TxnOp};
use registry_actor::{Etcd, Registrar, RegistryActor, RegistryConfig, RegistryStats, Stats};

/// The test that asserts a time bound runs alone; the others may share the
/// machine with each other.
static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn stats(registry: &actix::Addr<RegistryActor>) -> RegistryStats {
    registry.send(Stats).await.expect("registry alive")
}

/// A registry over `etcd`, whose member preference the test can read.
fn registry_over(etcd: &Etcd, config: &RegistryConfig) -> actix::Addr<RegistryActor> {
    use actix::Actor;
    RegistryActor::new(etcd.clone(), config).start()
}

/// A frozen member (SIGSTOP: its port open, nothing answering; a follower,
/// so the cluster takes writes at once) under a running watch: the watch moves to another member and delivers a node
/// registered after the freeze within 2 s of its put.
#[actix_rt::test]
async fn watch_on_a_frozen_member_moves_and_delivers_a_new_node_within_2s() {
    let _alone = TIMING.write().await;
    let cluster = EtcdCluster::start(3).await.expect("cluster");
    let config = cluster.registry_config();
    let etcd = registry_actor::connect(&config).await.expect("connect");
    let registry = registry_over(&etcd, &config);
    let mut sub = Subscriber::start(&registry, "echo").await;
    sub.wait_for("the empty set", |n| n.is_empty()).await;
    let watched = cluster.member_of(&etcd.preferred()).expect("a member");
    // Writes go on at once while a follower is frozen.
    let other = (watched + 1) % 3;
    cluster.move_leader(other).await.expect("leadership moved");

    cluster.pause(watched).expect("SIGSTOP");
    let mut raw = cluster.member_client(other).await.expect("client");
    let put_at = Instant::now();
    raw_put(
        &mut raw,
        &config,
        "late",
        r#"{"id":"late","addr":"127.0.0.1:1"}"#,
    )
    .await;
    sub.wait_for("the node put after the freeze", has_ids(&["late"]))
        .await;
    let delivered = put_at.elapsed();
    cluster.resume(watched).expect("SIGCONT");

    assert!(
        delivered <= Duration::from_secs(2),
        "delivered {delivered:?} after the put, bound 2 s"
    );
    assert_ne!(
        cluster.member_of(&etcd.preferred()).expect("a member"),
        watched,
        "the watch left the frozen member"
    );
    assert!(stats(&registry).await.reconnects >= 1);
}

/// The registration's key: its lease and its create revision (a key deleted
/// and put back gets a new one).
async fn key_identity(raw: &mut etcd_client::Client, key: &str) -> Option<(i64, i64)> {
    let got = raw.get(key, None).await.ok()?;
    got.kvs()
        .first()
        .map(|kv| (kv.lease(), kv.create_revision()))
}

/// A fault under a registration, then three lease TTLs (by when a lease not
/// kept alive would have expired): the key was never deleted (same create
/// revision) and stays on the same lease, carried over to another member.
async fn registration_outlives(
    cluster: &mut EtcdCluster,
    fault: impl AsyncFnOnce(&mut EtcdCluster, usize),
    heal: impl AsyncFnOnce(&mut EtcdCluster, usize),
) {
    let config = cluster.registry_config();
    let etcd = registry_actor::connect(&config).await.expect("connect");
    let registrar = Registrar::start(etcd.clone(), node("echo-1", 50051), &config);
    let lease = wait_registered(&registrar).await;
    let mut raw = cluster.client().await.expect("client");
    let before = key_identity(&mut raw, registrar.key()).await;
    assert_eq!(before.map(|b| b.0), Some(lease));
    let member = cluster.member_of(&etcd.preferred()).expect("a member");

    fault(cluster, member).await;
    // The behaviour under test is time passing: three lease TTLs.
    tokio::time::sleep(3 * config.lease_ttl()).await;
    let state = registrar.state();
    heal(cluster, member).await;

    assert!(state.is_registered(), "{state}");
    assert_eq!(
        key_identity(&mut raw, registrar.key()).await,
        before,
        "the key was never deleted and stayed on lease {lease:x}"
    );
}

/// The leader killed under a registration (the registrar's own member, made
/// the leader): the registrar carries its lease over to another member.
#[actix_rt::test]
async fn leader_killed_under_a_registration_never_deletes_its_key() {
    let _shared = TIMING.read().await;
    let mut cluster = EtcdCluster::start(3).await.expect("cluster");
    registration_outlives(
        &mut cluster,
        async |cluster, member| {
            cluster.move_leader(member).await.expect("leadership moved");
            cluster.kill(member);
        },
        async |cluster, member| cluster.restart(member).await.expect("rejoins"),
    )
    .await;
}

/// The registrar's member frozen (a follower: the cluster goes on): its
/// keepalives go unanswered, which it notices within 2/3 of the TTL and
/// carries the lease over to another member before it can expire.
#[actix_rt::test]
async fn a_frozen_member_under_a_registration_never_deletes_its_key() {
    let _shared = TIMING.read().await;
    let mut cluster = EtcdCluster::start(3).await.expect("cluster");
    registration_outlives(
        &mut cluster,
        async |cluster, member| {
            let other = (member + 1) % cluster.size();
            cluster.move_leader(other).await.expect("leadership moved");
            cluster.pause(member).expect("SIGSTOP");
        },
        async |cluster, member| cluster.resume(member).expect("SIGCONT"),
    )
    .await;
}

/// The cluster rebuilt on the same endpoints (a new cluster id, revisions
/// from 1 again, far below the last one the watch saw): the registry notices,
/// re-reads in full and converges to the new cluster's set.
#[actix_rt::test]
async fn a_cluster_rebuilt_with_older_revisions_is_reread_and_its_set_delivered() {
    let _shared = TIMING.read().await;
    let mut cluster = EtcdCluster::start(3).await.expect("cluster");
    let config = cluster.registry_config();
    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    let mut raw = cluster.client().await.expect("client");
    for i in 0..30 {
        raw.put("/churn", i.to_string(), None).await.expect("put");
    }
    raw_put(
        &mut raw,
        &config,
        "old-1",
        r#"{"id":"old-1","addr":"127.0.0.1:1"}"#,
    )
    .await;
    raw_put(
        &mut raw,
        &config,
        "old-2",
        r#"{"id":"old-2","addr":"127.0.0.1:2"}"#,
    )
    .await;
    let before = sub
        .wait_for("the old set", has_ids(&["old-1", "old-2"]))
        .await;

    cluster.wipe_and_restart().await.expect("a new cluster");
    let mut raw = cluster.client().await.expect("client");
    raw_put(
        &mut raw,
        &config,
        "new-1",
        r#"{"id":"new-1","addr":"127.0.0.1:3"}"#,
    )
    .await;
    let revision = raw
        .get("/", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    assert!(
        revision < before.revision,
        "premise: the new cluster's revision {revision} is below the last one seen {}",
        before.revision
    );
    sub.wait_for("the new cluster's set", has_ids(&["new-1"]))
        .await;
    assert!(stats(&registry).await.cluster_changes >= 1);
}

/// 100,000 nodes under one service: more than one gRPC message holds, so the
/// full read goes page by page; every node is listed, exactly.
#[actix_rt::test]
async fn a_hundred_thousand_nodes_list_through_paginated_reads() {
    let _shared = TIMING.read().await;
    const NODES: usize = 100_000;
    let etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd.registry_config();
    let raw = etcd.client().await.expect("client");
    let prefix = registry_actor::service_prefix(config.prefix(), "echo");
    // etcd takes at most 128 operations per transaction; 8 writers at once.
    let batches: Vec<Vec<usize>> = (0..NODES)
        .collect::<Vec<_>>()
        .chunks(128)
        .map(<[usize]>::to_vec)
        .collect();
    let mut writers = Vec::new();
    for part in batches.chunks(batches.len().div_ceil(8)) {
        let (mut raw, part, prefix) = (raw.clone(), part.to_vec(), prefix.clone());
        writers.push(tokio::spawn(async move {
            for batch in part {
                let ops: Vec<TxnOp> = batch
                    .iter()
                    .map(|i| {
                        let id = format!("n{i:06}");
                        let value = format!(
                            r#"{{"id":"{id}","addr":"10.0.{}.{}:50051"}}"#,
                            i / 250,
                            i % 250
                        );
                        TxnOp::put(format!("{prefix}{id}"), value, None)
                    })
                    .collect();
                raw.txn(Txn::new().and_then(ops)).await.expect("txn");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let mut probe = raw.clone();
    let whole = probe
        .get(prefix.as_bytes(), Some(GetOptions::new().with_prefix()))
        .await;
    assert!(
        whole.is_err(),
        "premise: one unpaginated read of the prefix exceeds the message limit"
    );

    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    let set = sub.wait_for("every node", |n| n.len() == NODES).await;
    let mut ids: Vec<&str> = set.nodes.iter().map(|n| n.id()).collect();
    ids.dedup();
    assert_eq!(ids.len(), NODES, "each node once");
    let s = stats(&registry).await;
    assert_eq!((s.nodes, s.decode_errors), (NODES, 0));
}

/// A value of 1 MiB and a value whose id is not its key's are skipped (and
/// counted); the rest of the set is intact, in a full read and in the watch.
#[actix_rt::test]
async fn an_oversized_value_and_an_id_key_mismatch_are_skipped_the_rest_intact() {
    let _shared = TIMING.read().await;
    let etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd.registry_config();
    let mut raw = etcd.client().await.expect("client");
    let big = format!(
        r#"{{"id":"big","addr":"127.0.0.1:9","labels":{{"pad":"{}"}}}}"#,
        "x".repeat(1 << 20)
    );
    raw_put(
        &mut raw,
        &config,
        "good-1",
        r#"{"id":"good-1","addr":"127.0.0.1:1"}"#,
    )
    .await;
    raw_put(&mut raw, &config, "big", &big).await;
    raw_put(
        &mut raw,
        &config,
        "wrong",
        r#"{"id":"other","addr":"127.0.0.1:2"}"#,
    )
    .await;
    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    sub.wait_for("good-1 only", has_ids(&["good-1"])).await;
    assert_eq!(stats(&registry).await.decode_errors, 2);

    raw_put(
        &mut raw,
        &config,
        "big-2",
        &big.replace("\"big\"", "\"big-2\""),
    )
    .await;
    raw_put(
        &mut raw,
        &config,
        "wrong-2",
        r#"{"id":"good-1","addr":"127.0.0.1:3"}"#,
    )
    .await;
    raw_put(
        &mut raw,
        &config,
        "good-2",
        r#"{"id":"good-2","addr":"127.0.0.1:4"}"#,
    )
    .await;
    sub.wait_for("good-1 and good-2", has_ids(&["good-1", "good-2"]))
        .await;
    assert_eq!(stats(&registry).await.decode_errors, 4);
}
