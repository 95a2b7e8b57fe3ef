//! Helpers shared by registry-actor's integration tests.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used
)]

use std::time::Duration;

use actix::prelude::*;
use etcd_client::Client;
use registry_actor::{
    Node, NodeSet, NodesChanged, Registrar, RegistrationState, RegistryActor, RegistryConfig,
    Subscribe, SubscriptionId,
};
use tokio::sync::mpsc;

pub use registry_actor::testing::{wait_until, EtcdCluster, EtcdServer};

/// How long a distributed event gets to happen before a test fails.
pub const EVENTUALLY: Duration = Duration::from_secs(15);

/// An actor that forwards every `NodesChanged` to a channel.
struct Collector(mpsc::UnboundedSender<NodesChanged>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<NodesChanged> for Collector {
    type Result = ();
    fn handle(&mut self, msg: NodesChanged, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

/// A subscriber of one service that remembers everything it was sent.
pub struct Subscriber {
    rx: mpsc::UnboundedReceiver<NodesChanged>,
    pub history: Vec<NodesChanged>,
    pub id: SubscriptionId,
    addr: Addr<Collector>,
}

impl Subscriber {
    pub async fn start(registry: &Addr<RegistryActor>, service: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let addr = Collector(tx).start();
        let id = registry
            .send(Subscribe::new(service, addr.clone().recipient()))
            .await
            .expect("registry alive");
        Self {
            rx,
            history: Vec::new(),
            id,
            addr,
        }
    }

    /// The last set received.
    pub fn last(&self) -> Option<&NodesChanged> {
        self.history.last()
    }

    /// Waits until a set satisfying `pred` arrives (or the last one already does).
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&NodeSet) -> bool) -> NodesChanged {
        if let Some(last) = self.history.last() {
            if pred(&last.nodes) {
                return last.clone();
            }
        }
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(changed)) => {
                    self.history.push(changed.clone());
                    if pred(&changed.nodes) {
                        return changed;
                    }
                }
                Ok(None) => panic!("subscription closed while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; last set: {:?}",
                    self.history.last().map(|c| ids(&c.nodes))
                ),
            }
        }
    }

    /// Takes whatever arrived without waiting.
    pub fn drain(&mut self) {
        while let Ok(changed) = self.rx.try_recv() {
            self.history.push(changed);
        }
    }
}

pub fn ids(nodes: &NodeSet) -> Vec<String> {
    let mut ids: Vec<String> = nodes.iter().map(|n| n.id().to_owned()).collect();
    ids.sort();
    ids
}

pub fn has_ids<'a>(expected: &'a [&'a str]) -> impl Fn(&NodeSet) -> bool + 'a {
    move |nodes| ids(nodes) == expected
}

pub fn node(id: &str, port: u16) -> Node {
    Node::new(id, "echo", format!("127.0.0.1:{port}")).expect("valid node")
}

pub async fn start_registry(config: &RegistryConfig) -> Addr<RegistryActor> {
    let client = registry_actor::connect(config).await.expect("client");
    RegistryActor::new(client, config).start()
}

/// Puts a raw value, as `etcdctl put` would.
pub async fn raw_put(client: &mut Client, config: &RegistryConfig, id: &str, value: &str) {
    let key = registry_actor::node_key(config.prefix(), "echo", id);
    client.put(key, value, None).await.expect("raw put");
}

pub async fn raw_delete(client: &mut Client, config: &RegistryConfig, id: &str) {
    let key = registry_actor::node_key(config.prefix(), "echo", id);
    client.delete(key, None).await.expect("raw delete");
}

/// The lease a key is attached to, `None` when the key is absent.
pub async fn key_lease(client: &mut Client, key: &str) -> Option<i64> {
    let resp = client.get(key, None).await.ok()?;
    resp.kvs().first().map(|kv| kv.lease())
}

/// Waits until `registrar` is registered; returns its lease.
pub async fn wait_registered(registrar: &Registrar) -> i64 {
    let mut states = registrar.state_changes();
    let state = tokio::time::timeout(EVENTUALLY, states.wait_for(|s| s.is_registered()))
        .await
        .unwrap_or_else(|_| panic!("not registered in time; state {}", registrar.state()))
        .expect("registrar alive")
        .clone();
    match state {
        RegistrationState::Registered { lease } => lease,
        other => panic!("unexpected {other}"),
    }
}
