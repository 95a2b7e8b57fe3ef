//! [`ClientHandle`]: the calls of a [`ClusterClient`](super::ClusterClient) in
//! the caller's own task.

use std::sync::Arc;

use actix::prelude::*;
use actix::Arbiter;
use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;
use registry_actor::config::InvalidValue;
use registry_actor::RegistryActor;
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};
use tracing::{info, warn};

use super::error::CallError;
use super::messages::{Broadcast, BroadcastReply, Call, Reply};
use super::rpc::Rpc;
use super::service::{Service, ServiceSettings};
use super::status::{request_id, REQUEST_ID};
use super::strategy::Plan;
use super::system::SystemThread;
use crate::budget::RetryBudget;
use crate::config::Throttling;
use crate::connection::{HomeKey, IoRuntime};
use crate::observe::{CallObserver, ServiceMetrics, Shape};
use crate::policy::Strategy;
use crate::throttle::AdaptiveThrottle;
use crate::{ClientConfig, Error, Inspect, PickerActor, PickerStatus, Reconfigure};

/// The services of a client by name: a fast hash of short, trusted keys (the
/// app's own service names), replaced whole when a service is added.
type Services = foldhash::HashMap<Arc<str>, Arc<Service>>;

/// A cheap, cloneable handle on a cluster client that runs each call in the
/// task that awaits it.
///
/// [`call`](Self::call) and [`broadcast`](Self::broadcast) do what sending
/// [`Call`] and [`Broadcast`] to the [`ClusterClient`](super::ClusterClient)
/// does, with the same settings, pickers, connections and retry budgets, but
/// without the actor's mailbox: the strategy runs in the caller's task, picks
/// read the service's picker without a message, and attempts go straight to
/// the node's channel. Dropping the future cancels the call and its attempts.
///
/// The handle is `Send + Sync` and may be used from any thread or runtime.
/// The pickers and connection actors stay on the arbiter the client was
/// created on, which must outlive the calls. Each node's channel is made on
/// the runtime of the calls that use it (one per calling runtime), so a call
/// hands its request to tasks of its own runtime: on the actix thread nothing
/// leaves the thread, and on a multi-thread runtime the channels spread over
/// its workers.
///
/// Get one with [`ClusterClient::handle`](super::ClusterClient::handle) or by
/// sending [`GetHandle`] to the client.
#[derive(Clone)]
pub struct ClientHandle {
    shared: Arc<Shared>,
    /// The client's own actix thread, for a client started by
    /// [`ClusterClient::spawn`](super::ClusterClient::spawn): it stops when
    /// the last handle and call holding it are dropped.
    owner: Option<Arc<SystemThread>>,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle")
            .field(
                "services",
                &self.shared.services.load().keys().collect::<Vec<_>>(),
            )
            .field("own_thread", &self.owner.is_some())
            .finish_non_exhaustive()
    }
}

/// Everything the actor and its handles share.
struct Shared {
    registry: Addr<RegistryActor>,
    /// Where pickers and connection actors are started.
    arbiter: actix::ArbiterHandle,
    /// The client's I/O runtime (channels of calls made outside any tokio
    /// runtime, or of every call when dedicated).
    io: Arc<IoRuntime>,
    /// Whether every channel runs on the I/O runtime (`client.io_threads` > 0).
    dedicated: bool,
    /// The etcd endpoints the registry reads, when the client connected it.
    etcd: Option<Arc<str>>,
    /// The configuration in force; replaced whole on reload.
    config: ArcSwap<ClientConfig>,
    /// How the channels of services added from now on connect: built from
    /// `config` with it (the `[client.tls]` files read once per
    /// configuration, not per service).
    connection: ArcSwap<crate::ConnectionSettings>,
    services: ArcSwap<Services>,
    /// Serialises the control path: adding a service, reloading.
    control: Mutex<()>,
}

/// The future of a call made through a [`ClientHandle`]: `Send`, `'static`.
pub type CallFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, CallError>> + Send + 'static>>;

/// Asks a [`ClusterClient`](super::ClusterClient) for a [`ClientHandle`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "ClientHandle")]
pub struct GetHandle;

impl ClientHandle {
    /// A handle on a new client of `registry` with `config`; pickers start on
    /// the current arbiter, channels on a new I/O runtime.
    /// `etcd` names the endpoints the registry reads, for errors.
    pub(crate) fn new(
        registry: Addr<RegistryActor>,
        config: ClientConfig,
        etcd: Option<Arc<str>>,
    ) -> Result<Self, Error> {
        let connection = config.validated()?;
        Self::from_validated(registry, config, connection, etcd)
    }

    /// As [`new`](Self::new), with `connection`, the settings `config`'s
    /// validation built.
    pub(crate) fn from_validated(
        registry: Addr<RegistryActor>,
        config: ClientConfig,
        connection: crate::ConnectionSettings,
        etcd: Option<Arc<str>>,
    ) -> Result<Self, Error> {
        let arbiter = Arbiter::try_current().ok_or_else(|| {
            Error::Config(InvalidValue::new(
                "client",
                "a cluster client must be created inside a running actix system",
            ))
        })?;
        Ok(Self {
            shared: Arc::new(Shared {
                registry,
                arbiter,
                io: Arc::new(IoRuntime::new(config.io_threads())),
                dedicated: config.dedicated_io(),
                etcd,
                config: ArcSwap::from_pointee(config),
                connection: ArcSwap::from_pointee(connection),
                services: ArcSwap::default(),
                control: Mutex::new(()),
            }),
            owner: None,
        })
    }

    /// This handle, owning the thread its client runs on.
    pub(crate) fn owning(mut self, thread: SystemThread) -> Self {
        self.owner = Some(Arc::new(thread));
        self
    }

    /// Stops the client's own thread now, for a client started by
    /// [`ClusterClient::spawn`](super::ClusterClient::spawn): its registry
    /// watch, pickers and connections end, and calls through any clone of
    /// the handle fail from then on. Dropping the last clone does the same.
    /// Does nothing for a client that runs on the app's actix system.
    pub fn shutdown(&self) {
        if let Some(owner) = &self.owner {
            owner.stop();
        }
    }

    /// Keeps the client's own thread (if any) running until `call` ends.
    pub(crate) fn holding_thread<T: Send + 'static>(&self, call: CallFuture<T>) -> CallFuture<T> {
        match self.owner.clone() {
            None => call,
            Some(owner) => Box::pin(async move {
                let answer = call.await;
                drop(owner);
                answer
            }),
        }
    }

    /// The client's own I/O runtime, once started: it carries the channels of
    /// calls made outside any tokio runtime, and of every call when
    /// `client.io_threads` asks for a dedicated runtime. Other calls use
    /// channels made on their own runtime.
    pub fn io_runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.shared.io.started()
    }

    /// Runs `call` by its strategy, in the task that awaits the answer.
    ///
    /// The future owns everything it needs (it may be spawned), and it is
    /// boxed: a call holds a tonic call of a few KiB, which would otherwise be
    /// copied into every future that awaits it. It resolves to a [`CallError`]
    /// with the final code and every attempt when the call fails.
    pub fn call<Req, Resp>(&self, call: Call<Req, Resp>) -> CallFuture<Reply<Resp>>
    where
        Req: prost::Message + Clone + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let request = call.request;
        let planned = self.plan(&call.service, call.method, |_| request, call.options, false);
        self.holding_thread(run_planned(planned))
    }

    /// Runs `broadcast` on every matching node at once, in the task that
    /// awaits the answer. Like [`call`](Self::call), the future owns what it
    /// needs and is boxed; it resolves to a [`CallError`] when no node could be
    /// called at all.
    pub fn broadcast<Req, Resp>(
        &self,
        broadcast: Broadcast<Req, Resp>,
    ) -> CallFuture<BroadcastReply<Resp>>
    where
        Req: prost::Message + Clone + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let completion = broadcast.completion;
        let request = broadcast.request;
        match self.plan(
            &broadcast.service,
            broadcast.method,
            |_| request,
            broadcast.options,
            true,
        ) {
            Err(e) => Box::pin(std::future::ready(Err(e))),
            Ok((plan, _)) => {
                let end = plan.observer.end();
                self.holding_thread(Box::pin(end.run(plan.broadcast(completion))))
            }
        }
    }

    /// The bytes of a channel request's body kept for sending it again.
    pub(crate) fn retry_buffer(&self) -> usize {
        self.shared.config.load().retry_buffer()
    }

    /// The picker state of `service` (nodes, loads, ejections).
    ///
    /// # Errors
    ///
    /// An invalid setting of the service, or its picker gone.
    pub async fn status(&self, service: &str) -> Result<PickerStatus, Error> {
        let picker = self.service(service)?.picker.clone();
        picker
            .send(Inspect)
            .await
            .map_err(|e| Error::picker_gone(service, e))
    }

    /// The picks of `service` as its calls make them, read without a message
    /// (starting its picker on first use).
    ///
    /// # Errors
    ///
    /// An invalid setting of the service.
    pub fn picker_view(&self, service: &str) -> Result<crate::PickerView, Error> {
        Ok(crate::PickerView::from_shared(
            self.service(service)?.shared.clone(),
        ))
    }

    /// The tokens left in `service`'s retry budget, in thousandths (0 for a
    /// service not called yet).
    pub fn budget_tokens(&self, service: &str) -> u64 {
        self.shared.services.load().get(service).map_or(0, |s| {
            s.budget.load().milli_tokens(std::time::Instant::now())
        })
    }

    /// Replaces the client's settings (a configuration reload). Strategies,
    /// retries, deadlines and budgets apply from the next call; balancers and
    /// selectors from the next pick. `io_threads` applies to new clients only.
    ///
    /// # Errors
    ///
    /// An invalid setting, naming its key; the old configuration then stays in
    /// force.
    pub fn update_config(&self, config: ClientConfig) -> Result<(), Error> {
        let _control = self.shared.control.lock();
        let services = self.shared.services.load_full();
        let resolved: Result<(_, Vec<_>), Error> = config.validated().and_then(|connection| {
            let settings = services
                .iter()
                .map(|(name, service)| Ok((service.clone(), service_settings(&config, name)?)))
                .collect::<Result<_, Error>>()?;
            Ok((connection, settings))
        });
        let (connection, resolved) = match resolved {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "client configuration refused; the old one stays in force");
                return Err(e);
            }
        };
        for (service, settings) in resolved {
            let (ratio, per_sec) = settings.policy.budget;
            if settings.policy.throttling != service.settings.load().policy.throttling {
                service.throttle.store(throttle(settings.policy.throttling));
            }
            if settings.policy.budget != service.settings.load().policy.budget {
                service.budget.store(Arc::new(RetryBudget::new(
                    ratio,
                    per_sec,
                    std::time::Instant::now(),
                )));
            }
            // Not a call: a dropped reconfiguration only leaves the old balancer.
            service
                .picker
                .do_send(Reconfigure(settings.policy.picker.clone()));
            service.settings.store(Arc::new(settings));
        }
        self.shared.config.store(Arc::new(config));
        self.shared.connection.store(Arc::new(connection));
        info!("client configuration updated");
        Ok(())
    }

    /// The state of `service`, starting its picker on first use.
    fn service(&self, name: &str) -> Result<Arc<Service>, Error> {
        if let Some(s) = self.shared.services.load().get(name) {
            return Ok(s.clone());
        }
        let _control = self.shared.control.lock();
        if let Some(s) = self.shared.services.load().get(name) {
            return Ok(s.clone());
        }
        let config = self.shared.config.load_full();
        let settings = service_settings(&config, name)?;
        let mut actor = PickerActor::new(
            name,
            settings.policy.picker.clone(),
            self.shared.registry.clone(),
        )
        .with_connection_settings(self.shared.connection.load().as_ref().clone())
        .with_io(self.shared.io.clone());
        if let Some(etcd) = &self.shared.etcd {
            actor = actor.with_etcd_endpoints(etcd.clone());
        }
        let shared = actor.shared();
        let picker = PickerActor::start_in_arbiter(&self.shared.arbiter, move |_| actor);
        let (ratio, per_sec) = settings.policy.budget;
        let name: Arc<str> = name.into();
        let service = Arc::new(Service {
            name: name.clone(),
            picker,
            shared,
            budget: ArcSwap::from_pointee(RetryBudget::new(
                ratio,
                per_sec,
                std::time::Instant::now(),
            )),
            throttle: ArcSwapOption::new(throttle(settings.policy.throttling)),
            settings: ArcSwap::from_pointee(settings),
            metrics: ServiceMetrics::new(name.clone()),
        });
        self.shared.services.rcu(|services| {
            let mut services = (**services).clone();
            services.insert(name.clone(), service.clone());
            services
        });
        Ok(service)
    }

    /// Builds the plan of one call (of every matching node when
    /// `broadcast`), or the error that stops it before any attempt.
    /// `request` makes the call's request once its strategy is known, told
    /// whether the call may send it more than once (a broadcast, and every
    /// strategy but failfast, may).
    pub(crate) fn plan<Req, Resp, M: Rpc<Req, Resp>>(
        &self,
        service: &str,
        method: M,
        request: impl FnOnce(bool) -> Req,
        options: super::CallOptions,
        broadcast: bool,
    ) -> Result<(Plan<Req, Resp, M>, Strategy), CallError> {
        if self.owner.as_ref().is_some_and(|owner| owner.is_stopped()) {
            return Err(CallError::pick(service, Error::Stopped, Vec::new()));
        }
        let svc = self
            .service(service)
            .map_err(|e| CallError::pick(service, e, Vec::new()))?;
        let settings = svc.settings.load();
        let policy = settings.policy.call(method.path());
        let mut metadata = settings.base_metadata.clone();
        if settings.request_id && !options.metadata.contains_key(REQUEST_ID) {
            metadata.insert(REQUEST_ID, request_id());
        }
        if !options.metadata.is_empty() {
            for kv in options.metadata.into_headers() {
                if let (Some(k), v) = kv {
                    metadata.as_mut().append(k, v);
                }
            }
        }
        if let Some(inbound) = &options.inherited {
            super::inherit::propagate(&mut metadata, &inbound.0, &settings.propagate);
        }
        let started = Instant::now();
        let timeout = options.timeout.unwrap_or(policy.timeout());
        let (min, max) = policy.backoff();
        let strategy = options.strategy.unwrap_or(policy.strategy());
        let shape = match broadcast {
            true => Shape::Broadcast,
            false => Shape::Unicast(strategy),
        };
        let attempt_timeout = options.attempt_timeout.or(policy.attempt_timeout());
        let retries = options.retries.unwrap_or(policy.retries());
        let (retry_codes, hedging) = (policy.retry_set(), policy.hedging().clone());
        // The settings read, the plan takes the service itself: no count of
        // its shared pointer taken and given back per call.
        drop(settings);
        let plan = Plan {
            observer: CallObserver::new(svc.metrics.method(method.path()), shape),
            method,
            request: Some(request(broadcast || strategy != Strategy::Failfast)),
            metadata,
            started,
            deadline: options
                .deadline
                .map_or(started + timeout, |d| d.min(started + timeout)),
            attempt_timeout,
            selector: options.selector.map(Box::new),
            hash_key: options.hash_key,
            retries,
            retry_codes,
            hedging,
            backoff: registry_actor::Backoff::new(min, max),
            home: HomeKey::of_caller(self.shared.dedicated),
            service: svc,
            _types: std::marker::PhantomData,
        };
        Ok((plan, strategy))
    }
}

/// Runs a planned call by its strategy (or answers the error that stopped
/// it). Each strategy's own future is boxed, not a future over all of them:
/// the box then holds only what this call's strategy needs, and no larger
/// union of states is copied as the call proceeds.
pub(crate) fn run_planned<Req, Resp, M>(
    planned: Result<(Plan<Req, Resp, M>, Strategy), CallError>,
) -> CallFuture<Reply<Resp>>
where
    Req: Clone + Send + Sync + 'static,
    Resp: Send + 'static,
    M: Rpc<Req, Resp>,
{
    let (plan, strategy) = match planned {
        Ok(planned) => planned,
        Err(e) => return Box::pin(std::future::ready(Err(e))),
    };
    let end = plan.observer.end();
    match strategy {
        Strategy::Failfast => Box::pin(end.run(plan.failfast())),
        Strategy::Failover => Box::pin(end.run(plan.failover())),
        Strategy::Failretry => Box::pin(end.run(plan.failretry())),
        Strategy::Forking(k) => Box::pin(end.run(plan.forking(k))),
        Strategy::Hedging => Box::pin(end.run(plan.hedging())),
    }
}

/// The settings of `service` under `config`, resolved for its calls.
fn service_settings(config: &ClientConfig, service: &str) -> Result<ServiceSettings, Error> {
    Ok(ServiceSettings {
        policy: config.resolve_service(service)?,
        base_metadata: base_metadata(config)?,
        request_id: config.request_id(),
        propagate: config.propagate()?.into(),
    })
}

fn base_metadata(config: &ClientConfig) -> Result<MetadataMap, Error> {
    let mut md = MetadataMap::new();
    if !config.caller().is_empty() {
        let v = MetadataValue::try_from(config.caller()).map_err(|_| {
            Error::Config(InvalidValue::new(
                "client.caller",
                "not a valid metadata value",
            ))
        })?;
        md.insert("x-caller", v);
    }
    if let Some(token) = config.token() {
        let mut v = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            Error::Config(InvalidValue::new(
                "client.token",
                "not a valid metadata value",
            ))
        })?;
        v.set_sensitive(true);
        md.insert("authorization", v);
    }
    Ok(md)
}

/// Compile-time check: the handle and the futures of its calls may cross
/// threads (a multi-threaded runtime may move a task between workers).
#[allow(dead_code)]
fn handle_and_call_futures_are_send<Req, Resp>(
    handle: &ClientHandle,
    call: Call<Req, Resp>,
    broadcast: Broadcast<Req, Resp>,
) where
    Req: prost::Message + Clone + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    fn send_static<T: Send + 'static>(_: T) {}
    fn send_sync<T: Send + Sync>(_: &T) {}
    send_sync(handle);
    send_static(handle.call(call));
    send_static(handle.broadcast(broadcast));
}

/// A fresh adaptive throttle for `settings`, `None` when throttling is off.
fn throttle(settings: Option<Throttling>) -> Option<Arc<AdaptiveThrottle>> {
    settings.map(|t| {
        Arc::new(AdaptiveThrottle::new(
            t.k,
            t.window,
            t.buckets,
            t.min_requests,
            std::time::Instant::now(),
        ))
    })
}
