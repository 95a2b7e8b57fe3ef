//! The [`RegistryActor`]: subscriptions, one watch per service, fan-out.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use tracing::debug;

use super::messages::{
    NodesChanged, RegistryStats, Snapshot, Stats, Subscribe, SubscriptionId, Unsubscribe,
};
use super::watch::{Counters, ServiceWatch};
use crate::{Etcd, RegistryConfig};

/// Owns the watched node set of each service and pushes every change to its
/// subscribers. See the [module docs](super).
pub struct RegistryActor {
    etcd: Etcd,
    config: RegistryConfig,
    services: HashMap<Arc<str>, ServiceEntry>,
    counters: Arc<Counters>,
    next_id: u64,
}

struct ServiceEntry {
    subscribers: HashMap<SubscriptionId, Recipient<NodesChanged>>,
    current: Option<NodesChanged>,
    /// Tells updates of this watch from those of an older one of the same service.
    generation: u64,
    watch: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RegistryActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryActor")
            .field("prefix", &self.config.prefix())
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RegistryActor {
    /// A registry reading `config.prefix()` through `etcd` (see
    /// [`connect`](crate::connect)). Start it with [`Actor::start`].
    pub fn new(etcd: Etcd, config: &RegistryConfig) -> Self {
        Self {
            etcd,
            config: config.clone(),
            services: HashMap::new(),
            counters: Arc::default(),
            next_id: 0,
        }
    }

    fn start_watch(&mut self, service: Arc<str>, ctx: &mut Context<Self>) -> ServiceEntry {
        self.next_id += 1;
        let generation = self.next_id;
        let watch = ServiceWatch::with_counters(
            self.etcd.clone(),
            &self.config,
            service.clone(),
            self.counters.clone(),
        );
        // A weak address: a running watch must not keep the actor alive.
        let me = ctx.address().downgrade();
        let handle = actix::spawn(watch.run(move |nodes, revision| {
            let me = me.clone();
            let service = service.clone();
            async move {
                let Some(addr) = me.upgrade() else {
                    return false;
                };
                let update = WatchUpdate {
                    generation,
                    changed: NodesChanged {
                        service,
                        nodes,
                        revision,
                    },
                };
                addr.send(update).await.unwrap_or(false)
            }
        }));
        ServiceEntry {
            subscribers: HashMap::new(),
            current: None,
            generation,
            watch: handle,
        }
    }

    fn stop_watch(&mut self, service: &str) {
        if let Some(entry) = self.services.remove(service) {
            debug!(%service, "last subscriber gone; closing the watch");
            entry.watch.abort();
        }
    }
}

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        for (_, entry) in self.services.drain() {
            entry.watch.abort();
        }
    }
}

impl Handler<Subscribe> for RegistryActor {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) -> Self::Result {
        self.next_id += 1;
        let id = SubscriptionId(self.next_id);
        let service: Arc<str> = msg.service.into();
        if !self.services.contains_key(&service) {
            let entry = self.start_watch(service.clone(), ctx);
            self.services.insert(service.clone(), entry);
        }
        if let Some(entry) = self.services.get_mut(&service) {
            if let Some(current) = &entry.current {
                // The snapshot a new subscriber needs; it is not a call, and
                // `do_send` only drops it when the subscriber is already gone.
                msg.recipient.do_send(current.clone());
            }
            entry.subscribers.insert(id, msg.recipient);
        }
        MessageResult(id)
    }
}

impl Handler<Unsubscribe> for RegistryActor {
    type Result = bool;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) -> bool {
        let Some(entry) = self.services.get_mut(msg.service.as_str()) else {
            return false;
        };
        let existed = entry.subscribers.remove(&msg.id).is_some();
        if entry.subscribers.is_empty() {
            self.stop_watch(&msg.service);
        }
        existed
    }
}

/// A new set from a service's watch. Answers whether anybody still listens.
#[derive(Message)]
#[rtype(result = "bool")]
struct WatchUpdate {
    generation: u64,
    changed: NodesChanged,
}

impl Handler<WatchUpdate> for RegistryActor {
    type Result = bool;

    fn handle(&mut self, msg: WatchUpdate, _: &mut Self::Context) -> bool {
        let service = msg.changed.service.clone();
        let Some(entry) = self.services.get_mut(&service) else {
            return false;
        };
        if entry.generation != msg.generation {
            return false;
        }
        entry.subscribers.retain(|_, r| r.connected());
        for recipient in entry.subscribers.values() {
            recipient.do_send(msg.changed.clone());
        }
        entry.current = Some(msg.changed);
        if entry.subscribers.is_empty() {
            self.stop_watch(&service);
            return false;
        }
        true
    }
}

impl Handler<Snapshot> for RegistryActor {
    type Result = Option<NodesChanged>;

    fn handle(&mut self, msg: Snapshot, _: &mut Self::Context) -> Self::Result {
        self.services.get(msg.service.as_str())?.current.clone()
    }
}

impl Handler<Stats> for RegistryActor {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Self::Context) -> Self::Result {
        let c = &self.counters;
        MessageResult(RegistryStats {
            services: self.services.len(),
            subscribers: self.services.values().map(|e| e.subscribers.len()).sum(),
            nodes: self
                .services
                .values()
                .filter_map(|e| e.current.as_ref())
                .map(|c| c.nodes.len())
                .sum(),
            decode_errors: c.decode_errors.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            cluster_changes: c.cluster_changes.load(Ordering::Relaxed),
            watches_open: c.watches_open.load(Ordering::Relaxed),
        })
    }
}
