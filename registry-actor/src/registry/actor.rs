//! The [`RegistryActor`]: subscriptions, one watch per service, fan-out.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::*;
use tracing::{debug, info, warn};

use super::messages::{
    NodesChanged, RegistryStats, Snapshot, Stats, Subscribe, SubscriptionId, Unsubscribe,
};
use super::messages::{WatchState, WatchStatus};
use super::snapshot_file::SnapshotFile;
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
    snapshot_file: Option<SnapshotFile>,
}

struct ServiceEntry {
    subscribers: HashMap<SubscriptionId, Recipient<NodesChanged>>,
    current: Option<NodesChanged>,
    /// When `current` came from the snapshot file: the time it was written.
    from_file: Option<SystemTime>,
    /// The last failure of the watch, in one line.
    last_error: Option<Arc<str>>,
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
    ///
    /// With `registry.snapshot_file` set, the file is read here (an error is
    /// logged, naming the file, and the file ignored).
    pub fn new(etcd: Etcd, config: &RegistryConfig) -> Self {
        Self {
            etcd,
            config: config.clone(),
            services: HashMap::new(),
            counters: Arc::default(),
            next_id: 0,
            snapshot_file: config
                .snapshot_file()
                .map(|path| SnapshotFile::open(path, config.prefix())),
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
        let failures_to = me.clone();
        let failed_service = service.clone();
        let watch = watch.on_failure(move |error| {
            if let Some(addr) = failures_to.upgrade() {
                // A report, not a call: dropped only when the actor is gone.
                addr.do_send(WatchFailed {
                    generation,
                    service: failed_service.clone(),
                    cause: error.to_string().into(),
                });
            }
        });
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
            from_file: None,
            last_error: None,
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

    fn started(&mut self, _: &mut Self::Context) {
        if let Some(file) = &self.snapshot_file {
            actix::spawn(file.writer());
        }
    }

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
        if entry.from_file.take().is_some() {
            info!(%service, nodes = msg.changed.nodes.len(), revision = msg.changed.revision,
                "etcd answered; its set replaces the snapshot file's");
        }
        if let Some(file) = &self.snapshot_file {
            file.record(&msg.changed);
        }
        entry.current = Some(msg.changed);
        if entry.subscribers.is_empty() {
            self.stop_watch(&service);
            return false;
        }
        true
    }
}

/// A service's watch failed to read or watch etcd.
#[derive(Message)]
#[rtype(result = "()")]
struct WatchFailed {
    generation: u64,
    service: Arc<str>,
    cause: Arc<str>,
}

impl Handler<WatchFailed> for RegistryActor {
    type Result = ();

    /// Keeps the cause; when etcd has delivered nothing yet, serves the
    /// snapshot file's set of the service, if it has one.
    fn handle(&mut self, msg: WatchFailed, _: &mut Self::Context) {
        let Some(entry) = self.services.get_mut(&msg.service) else {
            return;
        };
        if entry.generation != msg.generation {
            return;
        }
        entry.last_error = Some(msg.cause.clone());
        if entry.current.is_some() {
            return;
        }
        let Some(file) = &self.snapshot_file else {
            return;
        };
        let Some((cached, written)) = file.cached(&msg.service) else {
            return;
        };
        let age = SystemTime::now()
            .duration_since(written)
            .unwrap_or_default()
            .as_secs();
        warn!(service = %msg.service, file = %file.path().display(), nodes = cached.nodes.len(),
            cause = %msg.cause,
            "etcd cannot be read; serving the service from the snapshot file written {age}s ago until etcd answers");
        entry.subscribers.retain(|_, r| r.connected());
        for recipient in entry.subscribers.values() {
            recipient.do_send(cached.clone());
        }
        entry.current = Some(cached);
        entry.from_file = Some(written);
    }
}

impl Handler<WatchState> for RegistryActor {
    type Result = Option<WatchStatus>;

    fn handle(&mut self, msg: WatchState, _: &mut Self::Context) -> Self::Result {
        let entry = self.services.get(msg.service.as_str())?;
        Some(WatchStatus {
            nodes: entry.current.as_ref().map_or(0, |c| c.nodes.len()),
            discovered: entry.current.is_some(),
            snapshot_file_written: entry.from_file,
            last_error: entry.last_error.clone(),
        })
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
