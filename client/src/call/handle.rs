//! [`ClientHandle`]: the calls of a [`ClusterClient`](super::ClusterClient) in
//! the caller's own task.

use std::cell::RefCell;
use std::sync::Arc;

use actix::prelude::*;
use actix::Arbiter;
use parking_lot::{Mutex, RwLock};
use registry_actor::config::InvalidValue;
use registry_actor::RegistryActor;
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};
use tracing::{info, warn};

/// The maps every call looks up (service, then method): a fast hash of short,
/// trusted keys (the app's own service and method names).
type HashMap<K, V> = foldhash::HashMap<K, V>;

use super::error::CallError;
use super::messages::{Broadcast, BroadcastReply, Call, Reply, Strategy};
use super::strategy::Plan;
use crate::budget::RetryBudget;
use crate::config::CallPolicy;
use crate::picker::SharedPicker;
use crate::{ClientConfig, Error, Inspect, PickerActor, PickerStatus, Reconfigure};

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
/// The handle is `Send + Sync` and may be used from any thread or runtime;
/// the pickers, connection actors and channels stay on the arbiter the client
/// was created on, which must outlive the calls.
///
/// Get one with [`ClusterClient::handle`](super::ClusterClient::handle) or by
/// sending [`GetHandle`] to the client.
#[derive(Clone)]
pub struct ClientHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle")
            .field(
                "services",
                &self.shared.services.read().keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Everything the actor and its handles share.
struct Shared {
    registry: Addr<RegistryActor>,
    /// Where pickers (and so connection actors and channels) are started.
    arbiter: actix::ArbiterHandle,
    settings: RwLock<Arc<Settings>>,
    services: RwLock<HashMap<Arc<str>, Arc<Service>>>,
}

/// One configuration in force; replaced whole on reload.
struct Settings {
    config: ClientConfig,
    /// `x-caller` and `authorization`, sent with every call.
    base_metadata: MetadataMap,
    /// Resolved settings per service and method name.
    policies: Mutex<HashMap<String, HashMap<String, Arc<CallPolicy>>>>,
}

/// One service's picker and retry budget.
pub(crate) struct Service {
    pub(crate) name: Arc<str>,
    pub(crate) picker: Addr<PickerActor>,
    pub(crate) shared: Arc<SharedPicker>,
    pub(crate) budget: Mutex<RetryBudget>,
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
    /// the current arbiter.
    pub(crate) fn new(registry: Addr<RegistryActor>, config: ClientConfig) -> Result<Self, Error> {
        config.validate()?;
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
                settings: RwLock::new(Arc::new(Settings::new(config)?)),
                services: RwLock::new(HashMap::default()),
            }),
        })
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
        let planned = self.plan(&call.service, &call.method, call.request, call.options);
        Box::pin(async move {
            let (plan, strategy) = planned?;
            match strategy {
                Strategy::Failfast => plan.failfast().await,
                Strategy::Failover => plan.failover().await,
                Strategy::Failretry => plan.failretry().await,
                Strategy::Forking(k) => plan.forking(k).await,
            }
        })
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
        let planned = self.plan(
            &broadcast.service,
            &broadcast.method,
            broadcast.request,
            broadcast.options,
        );
        Box::pin(async move {
            let (plan, _) = planned?;
            plan.broadcast(completion).await
        })
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

    /// The tokens left in `service`'s retry budget, in thousandths (0 for a
    /// service not called yet).
    pub fn budget_tokens(&self, service: &str) -> u64 {
        self.shared.services.read().get(service).map_or(0, |s| {
            s.budget.lock().milli_tokens(std::time::Instant::now())
        })
    }

    /// Replaces the client's settings (a configuration reload). Strategies,
    /// retries, deadlines and budgets apply from the next call; balancers and
    /// selectors from the next pick.
    ///
    /// # Errors
    ///
    /// An invalid setting, naming its key; the old configuration then stays in
    /// force.
    pub fn update_config(&self, config: ClientConfig) -> Result<(), Error> {
        let settings = match config.validate().and_then(|()| Settings::new(config)) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "client configuration refused; the old one stays in force");
                return Err(e);
            }
        };
        let services = self.shared.services.read();
        let mut pickers = Vec::with_capacity(services.len());
        for (name, service) in services.iter() {
            pickers.push((service.picker.clone(), settings.config.picker_config(name)?));
        }
        let old = self.settings();
        let budget = settings.config.budget();
        if budget != old.config.budget() {
            let (ratio, per_sec) = budget;
            for service in services.values() {
                *service.budget.lock() =
                    RetryBudget::new(ratio, per_sec, std::time::Instant::now());
            }
        }
        drop(services);
        for (picker, picker_config) in pickers {
            // Not a call: a dropped reconfiguration only leaves the old balancer.
            picker.do_send(Reconfigure(picker_config));
        }
        *self.shared.settings.write() = Arc::new(settings);
        info!("client configuration updated");
        Ok(())
    }

    fn settings(&self) -> Arc<Settings> {
        self.shared.settings.read().clone()
    }

    /// The state of `service`, starting its picker on first use.
    fn service(&self, name: &str) -> Result<Arc<Service>, Error> {
        if let Some(s) = self.shared.services.read().get(name) {
            return Ok(s.clone());
        }
        let settings = self.settings();
        let mut services = self.shared.services.write();
        if let Some(s) = services.get(name) {
            return Ok(s.clone());
        }
        let config = &settings.config;
        let actor = PickerActor::new(
            name,
            config.picker_config(name)?,
            self.shared.registry.clone(),
        )
        .with_connection_settings(config.connection_settings());
        let shared = actor.shared();
        let picker = PickerActor::start_in_arbiter(&self.shared.arbiter, move |_| actor);
        let (ratio, per_sec) = config.budget();
        let name: Arc<str> = name.into();
        let service = Arc::new(Service {
            name: name.clone(),
            picker,
            shared,
            budget: Mutex::new(RetryBudget::new(ratio, per_sec, std::time::Instant::now())),
        });
        services.insert(name, service.clone());
        Ok(service)
    }

    /// Builds the plan of one call, or the error that stops it before any attempt.
    fn plan<Req, Resp>(
        &self,
        service: &str,
        method: &crate::Method<Req, Resp>,
        request: Req,
        options: super::CallOptions,
    ) -> Result<(Plan<Req, Resp>, Strategy), CallError> {
        let before = |e: Error| CallError::new(service, e.code(), e.to_string(), Vec::new());
        let svc = self.service(service).map_err(before)?;
        let settings = self.settings();
        let policy = settings.policy(service, method.name()).map_err(before)?;
        let mut metadata = settings.base_metadata.clone();
        metadata.insert("x-request-id", request_id());
        if !options.metadata.is_empty() {
            for kv in options.metadata.into_headers() {
                if let (Some(k), v) = kv {
                    metadata.as_mut().append(k, v);
                }
            }
        }
        let started = Instant::now();
        let timeout = options.timeout.unwrap_or(policy.timeout());
        let (min, max) = policy.backoff();
        let plan = Plan {
            service: svc,
            method: method.clone(),
            request: Some(request),
            metadata,
            started,
            deadline: started + timeout,
            selector: options.selector,
            hash_key: options.hash_key,
            retries: options.retries.unwrap_or(policy.retries()),
            retry_codes: policy.retry_codes().clone(),
            backoff: registry_actor::Backoff::new(min, max),
        };
        Ok((plan, options.strategy.unwrap_or(policy.strategy())))
    }
}

impl Settings {
    fn new(config: ClientConfig) -> Result<Self, Error> {
        Ok(Self {
            base_metadata: base_metadata(&config)?,
            config,
            policies: Mutex::new(HashMap::default()),
        })
    }

    /// The resolved settings of `method` of `service`, cached.
    fn policy(&self, service: &str, method: &str) -> Result<Arc<CallPolicy>, Error> {
        let mut policies = self.policies.lock();
        if let Some(p) = policies.get(service).and_then(|m| m.get(method)) {
            return Ok(p.clone());
        }
        let policy = Arc::new(self.config.call_policy(service, method)?);
        policies
            .entry(service.to_owned())
            .or_default()
            .insert(method.to_owned(), policy.clone());
        Ok(policy)
    }
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

/// 128 random bits in hex: one per call, the same on all its attempts.
///
/// Marked sensitive, so HPACK sends it as a literal that is never indexed: a
/// value seen once would only churn both sides' header tables.
fn request_id() -> MetadataValue<tonic::metadata::Ascii> {
    use rand::{Rng, SeedableRng};
    thread_local! {
        // A fast generator per thread, seeded from the OS-seeded one: request
        // ids need to be unique, not unpredictable.
        static IDS: RefCell<rand::rngs::SmallRng> =
            RefCell::new(rand::rngs::SmallRng::from_rng(&mut rand::rng()));
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: u128 = IDS.with(|rng| rng.borrow_mut().random());
    let mut text = [0u8; 32];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    let mut value =
        MetadataValue::try_from(&text[..]).unwrap_or_else(|_| MetadataValue::from_static("0"));
    value.set_sensitive(true);
    value
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_lowercase_hex_digits_and_differ() {
        let a = request_id();
        let b = request_id();
        let text = a.to_str().expect("ascii");
        assert_eq!(text.len(), 32);
        assert!(text
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
        assert!(a.is_sensitive());
    }
}
