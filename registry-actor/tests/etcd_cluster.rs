//! The `EtcdCluster` fixture itself: a leader change, a rejoin, a freeze and a
//! wipe do what the fault tests rely on.

mod common;

use std::time::Duration;

use common::*;

async fn revision(client: &mut etcd_client::Client) -> Option<(u64, i64)> {
    let resp = tokio::time::timeout(Duration::from_secs(2), client.get("/", None))
        .await
        .ok()?
        .ok()?;
    let header = resp.header()?;
    Some((header.cluster_id(), header.revision()))
}

#[actix_rt::test]
async fn three_members_elect_a_new_leader_rejoin_freeze_and_wipe() {
    let mut cluster = EtcdCluster::start(3).await.expect("cluster starts");
    assert_eq!(cluster.endpoints().len(), 3);
    let mut kv = cluster.client().await.expect("client");
    for i in 0..5 {
        kv.put("/fixture/k", i.to_string(), None)
            .await
            .expect("put");
    }
    let (cluster_id, before) = revision(&mut kv).await.expect("revision");

    let leader = cluster.leader().await.expect("a leader");
    cluster.kill(leader);
    let mut others = (0..3).filter(|&i| i != leader);
    let survivor = others.next().expect("a survivor");
    let mut survivor_kv = cluster.member_client(survivor).await.expect("client");
    let new_leader = wait_until(EVENTUALLY, || {
        let cluster = &cluster;
        async move { cluster.leader().await.is_some_and(|l| l != leader) }
    })
    .await;
    assert!(new_leader, "the two survivors elect a new leader");
    survivor_kv
        .put("/fixture/k", "after", None)
        .await
        .expect("writes go on with two members");
    cluster
        .restart(leader)
        .await
        .expect("the killed member rejoins");
    let mut rejoined = cluster.member_client(leader).await.expect("client");
    let caught_up = wait_until(EVENTUALLY, || {
        let mut rejoined = rejoined.clone();
        async move {
            let got = rejoined.get("/fixture/k", None).await;
            got.is_ok_and(|g| g.kvs().first().is_some_and(|kv| kv.value() == b"after"))
        }
    })
    .await;
    assert!(caught_up, "the rejoined member serves the write it missed");
    let _ = rejoined.status().await;

    let frozen = survivor;
    cluster.pause(frozen).expect("SIGSTOP");
    let mut frozen_kv = cluster.member_client(frozen).await.expect("client");
    let answer = tokio::time::timeout(
        Duration::from_millis(500),
        frozen_kv.get("/fixture/k", None),
    )
    .await;
    assert!(answer.is_err(), "a frozen member answers nothing");
    cluster.resume(frozen).expect("SIGCONT");
    // Just thawed, the member may refuse a request or two (no leader yet)
    // until it hears from the cluster again.
    let thawed = wait_until(EVENTUALLY, || {
        let mut kv = frozen_kv.clone();
        async move {
            let answer = tokio::time::timeout(Duration::from_secs(1), kv.get("/fixture/k", None));
            matches!(answer.await, Ok(Ok(_)))
        }
    })
    .await;
    assert!(thawed, "a thawed member answers again");

    cluster.wipe_and_restart().await.expect("a new cluster");
    let mut kv = cluster.client().await.expect("client");
    let (new_id, after) = revision(&mut kv).await.expect("revision");
    assert_ne!(new_id, cluster_id, "a new cluster id");
    assert!(after < before, "revisions start again: {after} < {before}");
}
