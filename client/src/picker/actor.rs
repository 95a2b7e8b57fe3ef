//! The [`PickerActor`]: a thin actor over [`Picker`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use registry_actor::{
    NodeSet, NodesChanged, RegistryActor, Subscribe, SubscriptionId, Unsubscribe, WatchState,
};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use super::messages::{
    ConnectionFailed, ConnectionSucceeded, GoingAway, HealthChanged, Inspect, Pick, PickAll,
    PushedBack, Reconfigure,
};
use super::picked::{NodeHandle, Picked};
use super::shared::SharedPicker;
use super::snapshot::Homed;
use super::state::Picker;
use super::view::PickerView;
use crate::connection::{
    answers, Alive, Close, Connection, ConnectionActor, ConnectionSettings, HealthWatch, Home,
    IoRuntime, Report,
};
use crate::{Error, PickerConfig};

/// The first wait before a fresh connection is tried to a node whose server
/// is closing its connection.
const PROBE_MIN: Duration = Duration::from_millis(50);
/// The longest wait between such tries.
const PROBE_MAX: Duration = Duration::from_secs(1);
/// How long the server has to answer such a try.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The clock of the picker: tokio's, so that tests can pause and advance it.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The picker of one service, subscribed to the [`RegistryActor`]. See the
/// [`picker` docs](crate#picking).
pub struct PickerActor {
    picker: Picker,
    /// The snapshot calls pick from, published after every change.
    shared: Arc<SharedPicker>,
    service: Arc<str>,
    registry: Addr<RegistryActor>,
    subscription: Option<SubscriptionId>,
    /// The pending wake-up for [`Picker::expire`], and when it fires.
    timer: Option<(std::time::Instant, SpawnHandle)>,
    /// The periodic success-rate check, and its interval.
    success_rate: Option<(Duration, SpawnHandle)>,
    /// Picks waiting for the first node set.
    waiters: Vec<oneshot::Sender<()>>,
    /// Picks waiting for a node while the published set is empty.
    node_waiters: Vec<oneshot::Sender<()>>,
    /// The connection actors of each node picked so far (one per runtime that
    /// calls it), closed when the node leaves (the handles calls use are in
    /// the nodes' slots).
    connections: HashMap<NodeHandle, Vec<Addr<ConnectionActor>>>,
    /// The health watch of each connected node, with `health_check`; stopped
    /// when the node leaves.
    health: HashMap<NodeHandle, HealthWatch>,
    connection_settings: ConnectionSettings,
    /// The listed nodes `client.allowed_networks` refuses, by id: left out of
    /// the node set, each logged when it first appears.
    refused: HashSet<String>,
    /// The client's I/O runtime, for calls that have no runtime of their own.
    io: Arc<IoRuntime>,
    /// The etcd endpoints the registry reads, for errors.
    etcd: Option<Arc<str>>,
}

impl std::fmt::Debug for PickerActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickerActor")
            .field("picker", &self.picker)
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

impl PickerActor {
    /// A picker of `service` fed by `registry`; it subscribes when started.
    pub fn new(service: &str, config: PickerConfig, registry: Addr<RegistryActor>) -> Self {
        Self::from_picker(Picker::new(service, config), registry)
    }

    /// An actor over a [`Picker`] built by the caller (e.g. seeded).
    pub fn from_picker(picker: Picker, registry: Addr<RegistryActor>) -> Self {
        Self {
            service: picker.service().clone(),
            shared: Arc::new(SharedPicker::new(picker.snapshot().clone())),
            picker,
            registry,
            subscription: None,
            timer: None,
            success_rate: None,
            waiters: Vec::new(),
            node_waiters: Vec::new(),
            connections: HashMap::new(),
            health: HashMap::new(),
            connection_settings: ConnectionSettings::default(),
            refused: HashSet::new(),
            io: Arc::new(IoRuntime::new(1)),
            etcd: None,
        }
    }

    /// Names `endpoints` (comma-separated) as where the registry reads, in
    /// [`Error::NotDiscovered`] (default: unnamed).
    pub fn with_etcd_endpoints(mut self, endpoints: Arc<str>) -> Self {
        self.etcd = Some(endpoints);
        self
    }

    /// Connects to nodes with `settings` (default: [`ConnectionSettings::default`]).
    pub fn with_connection_settings(mut self, settings: ConnectionSettings) -> Self {
        self.connection_settings = settings;
        self
    }

    /// Runs the channels of calls that have no runtime of their own (or that
    /// ask for it) on `io` (default: a one-thread runtime started on first use).
    pub(crate) fn with_io(mut self, io: Arc<IoRuntime>) -> Self {
        self.io = io;
        self
    }

    /// The state calls pick from without a message.
    pub(crate) fn shared(&self) -> Arc<SharedPicker> {
        self.shared.clone()
    }

    /// A view of the picks this actor publishes, read without messages.
    pub fn view(&self) -> PickerView {
        PickerView::from_shared(self.shared.clone())
    }

    /// `nodes` without those `client.allowed_networks` refuses; each refused
    /// node is logged when it first appears.
    fn admitted(&mut self, nodes: NodeSet) -> NodeSet {
        let settings = &self.connection_settings;
        if settings.admits_every_node() {
            self.refused.clear();
            return nodes;
        }
        let mut refused = HashSet::new();
        for node in nodes.iter() {
            if let Err(why) = settings.admits(node) {
                if !self.refused.contains(node.id()) {
                    warn!(service = %self.service, node = %node.id(), addr = %node.addr(),
                        "node left out, never dialled: {why}");
                }
                refused.insert(node.id().to_owned());
            }
        }
        let admitted = match refused.is_empty() {
            true => nodes,
            false => nodes.updated(refused.iter().map(|id| (id.clone(), None))),
        };
        self.refused = refused;
        admitted
    }

    /// Gives `picked` its node's connection on the runtime `home`, starting
    /// the connection (and its actor) on first use there.
    fn attach(&mut self, picked: &mut Picked, home: &Home, ctx: &mut Context<Self>) {
        let handle = picked.handle();
        let Some(slot) = self.picker.snapshot().slot(handle).cloned() else {
            // Picked from a node set that has been replaced since: no connection
            // is started for a node that left; the attempt fails as unavailable.
            return;
        };
        let key = home.key();
        if let Some(connection) = slot.connection(key) {
            picked.set_connection(connection);
            return;
        }
        let runtime = match home {
            Home::Caller(runtime) => Some(runtime),
            Home::Io => self.io.handle(),
        };
        let Some(runtime) = runtime.cloned() else {
            warn!(service = %self.service, node = %picked.node(), "no runtime to connect on");
            return;
        };
        let report = Arc::new(NodeReport {
            node: handle,
            picker: ctx.address(),
        });
        let node = picked.node().clone();
        let settings = self.connection_settings.clone();
        let load = slot.load_counter().clone();
        let outcomes = slot.outcomes().clone();
        let failure_codes = self.picker.config().ejection().codes();
        // The channel spawns its tasks on the runtime it is made in.
        let made = {
            let _enter = runtime.enter();
            Connection::new(node, settings, report, load, outcomes, failure_codes)
        };
        match made {
            Ok(connection) => {
                let homed = Homed {
                    key,
                    alive: Alive::watch(&runtime),
                    connection,
                };
                let (connection, added) = slot.attach(homed);
                if added {
                    let actor = ConnectionActor::new(connection.clone()).start();
                    self.connections.entry(handle).or_default().push(actor);
                    self.watch_health(handle, &connection, &runtime, ctx);
                }
                picked.set_connection(connection);
            }
            Err(status) => {
                warn!(service = %self.service, node = %picked.node(), error = %status.message(), "cannot connect to this node");
            }
        }
    }

    /// Starts watching the health of `handle`'s node on `connection` (on
    /// `runtime`, where its channel lives), when `health_check` asks for it
    /// and the node has no running watch (a watch ends with its runtime).
    fn watch_health(
        &mut self,
        handle: NodeHandle,
        connection: &Connection,
        runtime: &tokio::runtime::Handle,
        ctx: &mut Context<Self>,
    ) {
        let Some(service) = self.picker.config().health_check().cloned() else {
            return;
        };
        match self.health.get(&handle) {
            Some(watch) if !watch.is_finished() => return,
            // Its runtime stopped: watch again from here, from a clean slate.
            Some(_) => {
                self.health.remove(&handle);
                if self.picker.health_changed(handle, true) {
                    self.publish();
                }
            }
            None => {}
        }
        let channel = {
            let _enter = runtime.enter();
            connection.health_channel()
        };
        let channel = match channel {
            Ok(channel) => channel,
            Err(status) => {
                warn!(service = %self.service, node = %connection.node(), error = %status.message(), "cannot watch this node's health");
                return;
            }
        };
        let report = Box::new(NodeReport {
            node: handle,
            picker: ctx.address(),
        });
        let watch = HealthWatch::start(
            runtime,
            channel,
            service,
            connection.node().to_string(),
            report,
        );
        self.health.insert(handle, watch);
    }

    /// After `delay`, tries a fresh connection to the node of `handle`, whose
    /// server is closing its connection: once the server answers a health
    /// check on it (any answer, `UNIMPLEMENTED` included) the node is picked
    /// again; until then the tries go on, each wait twice the last (up to
    /// [`PROBE_MAX`]), while the node is in force.
    fn probe(&mut self, handle: NodeHandle, delay: Duration, ctx: &mut Context<Self>) {
        let Some(node) = self.picker.node(handle) else {
            return;
        };
        let endpoint = match self.connection_settings.endpoint(node) {
            Ok(endpoint) => endpoint,
            Err(status) => {
                warn!(service = %self.service, node = %node, error = %status.message(), "cannot connect to this node");
                return;
            }
        };
        let attempt = async move {
            tokio::time::sleep(delay).await;
            answers(&endpoint, PROBE_TIMEOUT).await
        };
        ctx.spawn(attempt.into_actor(self).map(move |works, act, ctx| {
            if !act.picker.is_going_away(handle) {
                return;
            }
            if works {
                if act.picker.reconnected(handle) {
                    act.publish();
                }
            } else {
                act.probe(handle, (delay * 2).min(PROBE_MAX), ctx);
            }
        }));
    }

    /// Makes the picker's snapshot the one calls pick from, and closes the
    /// connections of nodes that left the set in force (each stops once its calls in
    /// flight have ended). Runs after every change of the picker.
    fn publish(&mut self) {
        self.shared.publish(self.picker.snapshot().clone());
        let picker = &self.picker;
        self.connections.retain(|handle, actors| {
            let keep = picker.contains(*handle);
            if !keep {
                for actor in actors.iter() {
                    // Not a call: the actor only waits for its calls to end, then stops.
                    actor.do_send(Close);
                }
            }
            keep
        });
        // Dropping a watch stops it.
        self.health.retain(|handle, _| picker.contains(*handle));
    }

    /// Arms the wake-up for the picker's next deadline, unless an earlier one is
    /// armed already.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let Some(deadline) = self.picker.next_deadline() else {
            return;
        };
        if let Some((at, handle)) = self.timer {
            if at <= deadline {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = deadline.saturating_duration_since(now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            if act.picker.expire(now()) {
                act.publish();
            }
            act.schedule(ctx);
        });
        self.timer = Some((deadline, handle));
    }

    /// Runs the success-rate check every interval the ejection settings name
    /// (none when they name none), replacing a check of another interval.
    fn arm_success_rate(&mut self, ctx: &mut Context<Self>) {
        let interval = self.picker.config().ejection().success_rate_interval();
        if self.success_rate.map(|(i, _)| i) == interval {
            return;
        }
        if let Some((_, handle)) = self.success_rate.take() {
            ctx.cancel_future(handle);
        }
        let Some(interval) = interval else {
            return;
        };
        let handle = ctx.run_interval(interval, |act, ctx| {
            if act.picker.check_success_rate(now()) {
                act.publish();
                act.schedule(ctx);
            }
        });
        self.success_rate = Some((interval, handle));
    }

    /// Runs `pick` now, or once the first node set arrives (within the discovery
    /// timeout).
    fn when_discovered<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        pick: impl FnOnce(&mut Self, &mut Context<Self>) -> Result<T, Error> + 'static,
    ) -> ActorResponse<Self, Result<T, Error>> {
        if self.picker.is_discovered() {
            return ActorResponse::reply(pick(self, ctx));
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.retain(|w| !w.is_closed());
        self.waiters.push(tx);
        let waited: Duration = self.picker.config().discovery_timeout();
        let registry = self.registry.clone();
        let service = self.service.clone();
        let wait = async move {
            if tokio::time::timeout(waited, rx).await.is_ok() {
                return None;
            }
            // Not discovered in time: why, as far as the registry knows.
            let state = WatchState {
                service: service.to_string(),
            };
            registry.send(state).await.ok().flatten()?.last_error
        };
        ActorResponse::r#async(wait.into_actor(self).map(move |cause, act, ctx| {
            if act.picker.is_discovered() {
                pick(act, ctx)
            } else {
                Err(Error::NotDiscovered {
                    service: act.service.clone(),
                    waited,
                    etcd: act.etcd.clone(),
                    cause,
                })
            }
        }))
    }
}

impl Actor for PickerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every call picks here and connections report here: room for bursts.
        ctx.set_mailbox_capacity(1024);
        self.arm_success_rate(ctx);
        let subscribe = Subscribe::new(self.service.to_string(), ctx.address().recipient());
        self.registry
            .send(subscribe)
            .into_actor(self)
            .map(|answer, act, ctx| match answer {
                Ok(id) => act.subscription = Some(id),
                Err(e) => {
                    error!(service = %act.service, error = %e, "the registry is gone; stopping the picker");
                    ctx.stop();
                }
            })
            .wait(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(id) = self.subscription.take() {
            // Best effort: the registry also drops subscribers that are gone.
            self.registry.do_send(Unsubscribe {
                service: self.service.to_string(),
                id,
            });
        }
    }
}

impl Handler<NodesChanged> for PickerActor {
    type Result = ();

    fn handle(&mut self, msg: NodesChanged, ctx: &mut Self::Context) {
        if *msg.service != *self.service {
            warn!(expected = %self.service, got = %msg.service, "node set of another service ignored");
            return;
        }
        debug!(service = %msg.service, revision = msg.revision, nodes = msg.nodes.len(), "node set changed");
        let nodes = self.admitted(msg.nodes);
        self.picker.update(nodes, msg.revision, now());
        self.publish();
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(());
        }
        if self.picker.snapshot().has_nodes() {
            for waiter in self.node_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        self.schedule(ctx);
    }
}

impl Handler<Pick> for PickerActor {
    type Result = ActorResponse<Self, Result<Picked, Error>>;

    fn handle(&mut self, msg: Pick, ctx: &mut Self::Context) -> Self::Result {
        self.when_discovered(ctx, move |act, ctx| {
            let mut picked = act
                .picker
                .pick(msg.selector.as_ref(), &msg.exclude, msg.hash_key)?;
            act.attach(&mut picked, &Home::of_caller(false), ctx);
            Ok(picked)
        })
    }
}

impl Handler<PickAll> for PickerActor {
    type Result = ActorResponse<Self, Result<Vec<Picked>, Error>>;

    fn handle(&mut self, msg: PickAll, ctx: &mut Self::Context) -> Self::Result {
        self.when_discovered(ctx, move |act, ctx| {
            let mut all = act.picker.pick_all(msg.selector.as_ref())?;
            let home = Home::of_caller(false);
            for picked in &mut all {
                act.attach(picked, &home, ctx);
            }
            Ok(all)
        })
    }
}

/// What a node's connection reports, sent to its picker. Reports carry no
/// call, so `do_send` (which never waits for mailbox room) is right for them.
struct NodeReport {
    node: NodeHandle,
    picker: Addr<PickerActor>,
}

impl Report for NodeReport {
    fn failed(&self, reason: &str) {
        self.picker
            .do_send(ConnectionFailed::new(self.node, reason));
    }

    fn succeeded(&self) {
        self.picker.do_send(ConnectionSucceeded { node: self.node });
    }

    fn serving(&self, serving: bool) {
        self.picker.do_send(HealthChanged {
            node: self.node,
            serving,
        });
    }

    fn going_away(&self) {
        self.picker.do_send(GoingAway { node: self.node });
    }
}

/// Gives nodes picked without a message (from the [`SharedPicker`]) their
/// connections on the runtime of the call, starting the connections of nodes
/// picked for the first time there.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Picked>")]
pub(crate) struct Attach {
    pub(crate) picked: Vec<Picked>,
    pub(crate) home: Home,
}

impl Handler<Attach> for PickerActor {
    type Result = MessageResult<Attach>;

    fn handle(&mut self, msg: Attach, ctx: &mut Self::Context) -> Self::Result {
        let mut all = msg.picked;
        for picked in &mut all {
            if picked.connection().is_none() {
                self.attach(picked, &msg.home, ctx);
            }
        }
        MessageResult(all)
    }
}

/// Answers once the service's first node set has arrived, or with
/// [`Error::NotDiscovered`] when the discovery timeout passes first.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct WaitDiscovered;

impl Handler<WaitDiscovered> for PickerActor {
    type Result = ActorResponse<Self, Result<(), Error>>;

    fn handle(&mut self, _: WaitDiscovered, ctx: &mut Self::Context) -> Self::Result {
        self.when_discovered(ctx, |_, _| Ok(()))
    }
}

/// Answers once the service's published node set is not empty, or when
/// `within` or the discovery timeout passes, whichever is sooner. The caller
/// picks again either way.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct WaitNodes {
    /// The time the call has left.
    pub(crate) within: Duration,
}

impl Handler<WaitNodes> for PickerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: WaitNodes, _: &mut Self::Context) -> Self::Result {
        if self.picker.snapshot().has_nodes() {
            return Box::pin(std::future::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        self.node_waiters.retain(|w| !w.is_closed());
        self.node_waiters.push(tx);
        let within = msg.within.min(self.picker.config().discovery_timeout());
        Box::pin(async move {
            let _ = tokio::time::timeout(within, rx).await;
        })
    }
}

impl Handler<ConnectionFailed> for PickerActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectionFailed, ctx: &mut Self::Context) {
        debug!(service = %self.service, node = %msg.node, reason = %msg.reason, "connection failed");
        if self.picker.connection_failed(msg.node, now()) {
            self.publish();
            self.schedule(ctx);
        }
    }
}

impl Handler<PushedBack> for PickerActor {
    type Result = ();

    fn handle(&mut self, msg: PushedBack, ctx: &mut Self::Context) {
        if self.picker.pushed_back(msg.node, now() + msg.wait) {
            self.publish();
            self.schedule(ctx);
        }
    }
}

impl Handler<HealthChanged> for PickerActor {
    type Result = ();

    fn handle(&mut self, msg: HealthChanged, _: &mut Self::Context) {
        if self.picker.health_changed(msg.node, msg.serving) {
            self.publish();
        }
    }
}

impl Handler<GoingAway> for PickerActor {
    type Result = ();

    fn handle(&mut self, msg: GoingAway, ctx: &mut Self::Context) {
        if self.picker.going_away(msg.node) {
            self.publish();
            self.probe(msg.node, PROBE_MIN, ctx);
        }
    }
}

impl Handler<ConnectionSucceeded> for PickerActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectionSucceeded, _: &mut Self::Context) {
        self.picker.connection_succeeded(msg.node);
    }
}

impl Handler<Inspect> for PickerActor {
    type Result = MessageResult<Inspect>;

    fn handle(&mut self, _: Inspect, _: &mut Self::Context) -> Self::Result {
        let mut status = self.picker.status();
        status.connections = self.connections.values().map(Vec::len).sum();
        status.refused = self.refused.len();
        MessageResult(status)
    }
}

impl Handler<Reconfigure> for PickerActor {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, ctx: &mut Self::Context) {
        let watched = self.picker.config().health_check().cloned();
        self.picker.reconfigure(msg.0);
        if self.picker.config().health_check() != watched.as_ref() {
            // Watches of the old setting stop, and their verdicts with them;
            // nodes connected from now on are watched as the new one says.
            for (handle, _) in self.health.drain() {
                self.picker.health_changed(handle, true);
            }
        }
        self.arm_success_rate(ctx);
        self.publish();
    }
}
