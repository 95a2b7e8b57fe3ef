//! A cluster for the client's tests: a private etcd, echo servers registered in
//! it, and a `ClusterClient` discovering them.

use std::time::Duration;

use actix::prelude::*;
use cluster_client::{ClientConfig, ClusterClient, ServiceStatus};
use grpc_cluster::echo::EchoService;
use registry_actor::{Node, Registrar, RegistryActor, RegistryConfig};

use super::{wait_until, EtcdServer, PlainEcho, EVENTUALLY};

/// One registered echo server.
pub struct TestNode {
    pub id: String,
    pub server: Option<PlainEcho>,
    pub registrar: Registrar,
}

impl TestNode {
    pub fn stats(&self) -> std::sync::Arc<grpc_cluster::echo::EchoStats> {
        self.server.as_ref().expect("a live server").stats.clone()
    }
}

pub struct Cluster {
    pub etcd: EtcdServer,
    pub registry: RegistryConfig,
    pub nodes: Vec<TestNode>,
}

impl Cluster {
    pub async fn start() -> Self {
        let etcd = EtcdServer::start().await.expect("etcd");
        let registry = etcd.registry_config();
        Self {
            etcd,
            registry,
            nodes: Vec::new(),
        }
    }

    /// Serves `service` and registers it as `node` (its address replaced by the
    /// real one).
    pub async fn add(
        &mut self,
        service: EchoService,
        node: impl FnOnce(Node) -> Node,
    ) -> &TestNode {
        self.add_over(service, None, node).await
    }

    /// As [`add`](Self::add), the server over `tls` when set.
    pub async fn add_over(
        &mut self,
        service: EchoService,
        tls: Option<tonic::transport::ServerTlsConfig>,
        node: impl FnOnce(Node) -> Node,
    ) -> &TestNode {
        let id = service.node_id().to_owned();
        let server = PlainEcho::serve_over(service, tls).await;
        let base = Node::new(&id, "echo", server.addr.to_string()).expect("node");
        self.register(id, Some(server), node(base)).await
    }

    /// Registers a node whose port refuses connections.
    pub async fn add_dead(&mut self, id: &str) -> &TestNode {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let node = Node::new(id, "echo", format!("127.0.0.1:{port}")).expect("node");
        self.register(id.to_owned(), None, node).await
    }

    /// Registers `node`, served by the test itself.
    pub async fn add_served_elsewhere(&mut self, node: Node) -> &TestNode {
        self.register(node.id().to_owned(), None, node).await
    }

    async fn register(&mut self, id: String, server: Option<PlainEcho>, node: Node) -> &TestNode {
        let etcd = registry_actor::connect(&self.registry)
            .await
            .expect("etcd client");
        let registrar = Registrar::start(etcd, node, &self.registry);
        let mut states = registrar.state_changes();
        tokio::time::timeout(EVENTUALLY, states.wait_for(|s| s.is_registered()))
            .await
            .expect("registered in time")
            .expect("registrar alive");
        self.nodes.push(TestNode {
            id,
            server,
            registrar,
        });
        self.nodes.last().expect("just pushed")
    }

    pub fn node(&self, id: &str) -> &TestNode {
        self.nodes.iter().find(|n| n.id == id).expect("known node")
    }

    /// A client over this cluster's etcd, waiting until it sees `expect` nodes of
    /// `echo`.
    pub async fn client(&self, config: ClientConfig, expect: usize) -> Addr<ClusterClient> {
        let client = self.start_client(config).await;
        let ok = wait_until(EVENTUALLY, || {
            let client = client.clone();
            async move {
                match client.send(ServiceStatus("echo".into())).await {
                    Ok(Ok(status)) => status.nodes.len() == expect,
                    _ => false,
                }
            }
        })
        .await;
        assert!(ok, "the client did not see {expect} nodes of echo");
        client
    }
}

impl Cluster {
    /// A client over this cluster's etcd, started at once.
    pub async fn start_client(&self, config: ClientConfig) -> Addr<ClusterClient> {
        let etcd = registry_actor::connect(&self.registry)
            .await
            .expect("etcd client");
        let registry = RegistryActor::new(etcd, &self.registry).start();
        ClusterClient::new(registry, config)
            .expect("valid config")
            .start()
    }
}

/// A client config for tests: no jitter in what matters, short backoffs.
pub fn test_config() -> ClientConfig {
    ClientConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_retry_backoff(Duration::from_millis(10), Duration::from_millis(100))
}
