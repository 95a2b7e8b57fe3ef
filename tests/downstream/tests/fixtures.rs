//! grpc-cluster's test fixtures as a downstream crate uses them: a real etcd
//! from `grpc_cluster::testing`, a node registered and read back through the
//! re-exported registry.

use std::time::Duration;

use grpc_cluster::registry::{Node, Registrar};
use grpc_cluster::testing::{wait_until, EtcdServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_test_registers_a_node_in_the_fixture_etcd() {
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let registry = etcd.registry_config();
    let node = Node::new("svc-1", "svc", "127.0.0.1:4000").expect("a valid node");
    let registrar = Registrar::start(
        grpc_cluster::registry::connect(&registry)
            .await
            .expect("connect"),
        node,
        &registry,
    );
    let key = registrar.key().to_owned();
    let client = etcd.client().await.expect("an etcd client");
    let present = wait_until(Duration::from_secs(10), || {
        let (mut client, key) = (client.clone(), key.clone());
        async move {
            client
                .get(key, None)
                .await
                .is_ok_and(|r| r.kvs().first().is_some_and(|kv| kv.lease() != 0))
        }
    })
    .await;
    assert!(present, "the node is in the fixture's etcd with a lease");
    registrar.deregister().await.expect("deregister");
    let mut client = client;
    let left = client.get(key, None).await.expect("get");
    assert!(left.kvs().is_empty(), "deregistered");
}
