//! Registrations, clients and channels: what the sections set up before they
//! measure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cluster_client::{ClientConfig, ClusterClient, ServiceStatus};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use grpc_cluster::echo::SAY;
use registry_actor::etcd_client::{self, Txn, TxnOp};
use registry_actor::{Node, RegistryConfig};
use tonic::transport::{Channel, Endpoint};

/// Puts per etcd transaction when writing nodes (etcd's default limit is 128).
pub(crate) const TXN_OPS: usize = 100;
/// Transactions in flight at once when writing nodes.
const TXN_PARALLEL: usize = 8;
/// Longest wait for a client to see a node set.
const DISCOVERY_DEADLINE: Duration = Duration::from_secs(60);

/// The deadline of a cluster call with the default configuration
/// (`client.timeout`); the raw tonic rows set the same one on each request.
pub(crate) fn deadline() -> Duration {
    ClientConfig::default()
        .call_policy("echo", SAY.name())
        .expect("the default configuration is valid")
        .timeout()
}

/// Writes `nodes` as static registrations (no lease, as `etcdctl put` would),
/// in transactions of [`TXN_OPS`] puts, a few in flight at once.
pub(crate) async fn put_static(etcd: &etcd_client::Client, prefix: &str, nodes: &[Node]) {
    stream::iter(nodes.chunks(TXN_OPS))
        .map(|chunk| {
            let mut etcd = etcd.clone();
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|n| TxnOp::put(n.key(prefix), n.encode(), None))
                .collect();
            async move { etcd.txn(Txn::new().and_then(ops)).await }
        })
        .buffer_unordered(TXN_PARALLEL)
        .try_collect::<Vec<_>>()
        .await
        .expect("etcd txn");
}

/// Node `n{i}` of `service` at `addrs[i]`, for each address.
pub(crate) fn echo_nodes(service: &str, addrs: &[SocketAddr]) -> Vec<Node> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Node::new(format!("n{i}"), service, a.to_string()).expect("node"))
        .collect()
}

/// Waits until `client` lists `count` nodes of `service`; the wait's length.
pub(crate) async fn wait_listed(
    client: &Addr<ClusterClient>,
    service: &str,
    count: usize,
) -> Duration {
    let started = Instant::now();
    while started.elapsed() < DISCOVERY_DEADLINE {
        if let Ok(Ok(s)) = client.send(ServiceStatus(service.into())).await {
            if s.listed == count && s.nodes.len() == count {
                return started.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cluster client did not list {count} nodes of `{service}`");
}

/// A cluster client of `registry` (on the current actix system).
pub(crate) async fn cluster_client(
    registry: &RegistryConfig,
    config: ClientConfig,
) -> Addr<ClusterClient> {
    ClusterClient::connect(registry, config)
        .await
        .expect("cluster client")
}

/// A client with the default configuration that lists `service`'s `count`
/// nodes: a client of its own for one row.
pub(crate) async fn listed_client(
    registry: &RegistryConfig,
    config: ClientConfig,
    service: &str,
    count: usize,
) -> Addr<ClusterClient> {
    let client = cluster_client(registry, config).await;
    wait_listed(&client, service, count).await;
    client
}

/// A raw tonic channel to `addr`, connected (on the current runtime).
pub(crate) async fn raw_channel(addr: SocketAddr) -> Channel {
    endpoint(addr).connect().await.expect("connect")
}

/// The endpoint of `addr`, with `TCP_NODELAY` as the cluster client sets it.
pub(crate) fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .tcp_nodelay(true)
}

/// Services every section finds registered on the run's etcd: `echo` (node
/// `n0`), `echo3` (`n0`..`n2`) and `echo8` (`n0`..`n7`), static nodes at the
/// echo servers.
pub(crate) const ECHO_SERVICES: [(&str, usize); 3] = [("echo", 1), ("echo3", 3), ("echo8", 8)];

/// What the sections on the shared etcd start from.
pub(crate) struct Setup {
    /// The run's etcd, with [`ECHO_SERVICES`] registered.
    pub(crate) registry: RegistryConfig,
    /// The echo servers (empty when no section of the run calls them).
    pub(crate) addrs: Vec<SocketAddr>,
    /// Rounds of the sections that interleave rows.
    pub(crate) rounds: usize,
    /// The deadline of a cluster call, set on raw tonic calls too.
    pub(crate) deadline: Duration,
}

impl Setup {
    /// Registers [`ECHO_SERVICES`] at `addrs` (when there are servers).
    pub(crate) async fn new(
        registry: RegistryConfig,
        addrs: Vec<SocketAddr>,
        rounds: usize,
    ) -> Self {
        if !addrs.is_empty() {
            let kv = registry_actor::connect(&registry).await.expect("etcd");
            let mut nodes = Vec::new();
            for (service, n) in ECHO_SERVICES {
                nodes.extend(echo_nodes(service, &addrs[..n]));
            }
            put_static(&kv, registry.prefix(), &nodes).await;
        }
        Self {
            registry,
            addrs,
            rounds,
            deadline: deadline(),
        }
    }
}
