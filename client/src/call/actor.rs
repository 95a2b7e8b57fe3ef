//! The [`ClusterClient`] actor.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use registry_actor::config::InvalidValue;
use registry_actor::{Backoff, RegistryActor, RegistryConfig};
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};

use tracing::{info, warn};

use super::error::CallError;
use super::messages::{Broadcast, BroadcastReply, Call, Reply, Strategy};
use super::strategy::Plan;
use crate::budget::RetryBudget;
use crate::config::CallPolicy;
use crate::{ClientConfig, Error, Inspect, PickerActor, PickerStatus, Reconfigure};

/// The cluster client. See the [module docs](super).
pub struct ClusterClient {
    registry: Addr<RegistryActor>,
    config: ClientConfig,
    services: HashMap<Arc<str>, ServiceState>,
    /// `x-caller` and `authorization`, sent with every call.
    base_metadata: MetadataMap,
}

struct ServiceState {
    name: Arc<str>,
    picker: Addr<PickerActor>,
    budget: Rc<RefCell<RetryBudget>>,
    /// Resolved settings per method name, cleared on reload.
    policies: HashMap<String, Arc<CallPolicy>>,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ClusterClient {
    /// A client discovering services through `registry`. Start it with
    /// [`Actor::start`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key of an invalid setting.
    pub fn new(registry: Addr<RegistryActor>, config: ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            registry,
            base_metadata: base_metadata(&config)?,
            config,
            services: HashMap::new(),
        })
    }

    /// Connects to etcd with `registry`, starts a [`RegistryActor`] and a client
    /// on the current arbiter, and returns the client's address.
    ///
    /// # Errors
    ///
    /// An invalid registry or client setting.
    pub async fn connect(
        registry: &RegistryConfig,
        config: ClientConfig,
    ) -> Result<Addr<Self>, Error> {
        let etcd = registry_actor::connect(registry).await?;
        let registry = RegistryActor::new(etcd, registry).start();
        Ok(Self::new(registry, config)?.start())
    }

    fn service(&mut self, name: &str) -> Result<&mut ServiceState, Error> {
        if !self.services.contains_key(name) {
            let picker_config = self.config.picker_config(name)?;
            let picker = PickerActor::new(name, picker_config, self.registry.clone())
                .with_connection_settings(self.config.connection_settings())
                .start();
            let (ratio, per_sec) = self.config.budget();
            let budget = RetryBudget::new(ratio, per_sec, std::time::Instant::now());
            let name: Arc<str> = name.into();
            self.services.insert(
                name.clone(),
                ServiceState {
                    name,
                    picker,
                    budget: Rc::new(RefCell::new(budget)),
                    policies: HashMap::new(),
                },
            );
        }
        self.services
            .get_mut(name)
            .ok_or_else(|| Error::unknown_service(name))
    }

    /// Builds the plan of one call, or the error that stops it before any attempt.
    fn plan<Req, Resp>(
        &mut self,
        service: &str,
        method: &crate::Method<Req, Resp>,
        request: Req,
        options: super::CallOptions,
    ) -> Result<(Plan<Req, Resp>, Strategy), CallError> {
        let before = |e: Error| CallError::new(service, e.code(), e.to_string(), Vec::new());
        if !self.services.contains_key(service) {
            self.service(service).map_err(before)?;
        }
        let config = &self.config;
        let Some(state) = self.services.get_mut(service) else {
            return Err(before(Error::unknown_service(service)));
        };
        let policy = match state.policies.get(method.name()) {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(config.call_policy(service, method.name()).map_err(before)?);
                state.policies.insert(method.name().to_owned(), p.clone());
                p
            }
        };
        let (picker, budget) = (state.picker.clone(), state.budget.clone());
        let service = state.name.clone();
        let mut metadata = self.base_metadata.clone();
        metadata.insert("x-request-id", request_id());
        for kv in options.metadata.into_headers() {
            if let (Some(k), v) = kv {
                metadata.as_mut().append(k, v);
            }
        }
        let started = Instant::now();
        let timeout = options.timeout.unwrap_or(policy.timeout());
        let (min, max) = policy.backoff();
        let plan = Plan {
            service,
            picker,
            budget,
            method: method.clone(),
            request,
            metadata,
            started,
            deadline: started + timeout,
            selector: options.selector,
            hash_key: options.hash_key,
            retries: options.retries.unwrap_or(policy.retries()),
            retry_codes: policy.retry_codes().clone(),
            backoff: Backoff::new(min, max),
        };
        Ok((plan, options.strategy.unwrap_or(policy.strategy())))
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
        let v = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            Error::Config(InvalidValue::new(
                "client.token",
                "not a valid metadata value",
            ))
        })?;
        md.insert("authorization", v);
    }
    Ok(md)
}

/// 128 random bits in hex: one per call, the same on all its attempts.
fn request_id() -> MetadataValue<tonic::metadata::Ascii> {
    let id: u128 = rand::random();
    MetadataValue::try_from(format!("{id:032x}"))
        .unwrap_or_else(|_| MetadataValue::from_static("0"))
}

impl Actor for ClusterClient {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Apps send bursts of calls; the default 16 would make them wait for room.
        ctx.set_mailbox_capacity(4096);
    }
}

impl<Req, Resp> Handler<Call<Req, Resp>> for ClusterClient
where
    Req: prost::Message + Clone + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    type Result = ResponseFuture<Result<Reply<Resp>, CallError>>;

    fn handle(&mut self, msg: Call<Req, Resp>, _: &mut Self::Context) -> Self::Result {
        let (plan, strategy) = match self.plan(&msg.service, &msg.method, msg.request, msg.options)
        {
            Ok(p) => p,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        Box::pin(async move {
            match strategy {
                Strategy::Failfast => plan.failfast().await,
                Strategy::Failover => plan.failover().await,
                Strategy::Failretry => plan.failretry().await,
                Strategy::Forking(k) => plan.forking(k).await,
            }
        })
    }
}

impl<Req, Resp> Handler<Broadcast<Req, Resp>> for ClusterClient
where
    Req: prost::Message + Clone + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    type Result = ResponseFuture<Result<BroadcastReply<Resp>, CallError>>;

    fn handle(&mut self, msg: Broadcast<Req, Resp>, _: &mut Self::Context) -> Self::Result {
        let completion = msg.completion;
        let (plan, _) = match self.plan(&msg.service, &msg.method, msg.request, msg.options) {
            Ok(p) => p,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        Box::pin(plan.broadcast(completion))
    }
}

/// Replaces the client's settings (a configuration reload). Strategies,
/// retries, deadlines and budgets apply from the next call; balancers and
/// selectors from the next pick. An invalid configuration is refused and the
/// old one stays in force.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct UpdateConfig(pub ClientConfig);

impl Handler<UpdateConfig> for ClusterClient {
    type Result = Result<(), Error>;

    fn handle(&mut self, msg: UpdateConfig, _: &mut Self::Context) -> Self::Result {
        let config = msg.0;
        if let Err(e) = config.validate().and_then(|()| base_metadata(&config)) {
            warn!(error = %e, "client configuration refused; the old one stays in force");
            return Err(e);
        }
        let base = base_metadata(&config)?;
        let mut pickers = Vec::new();
        for (name, state) in &self.services {
            pickers.push((state.picker.clone(), config.picker_config(name)?));
        }
        for (picker, picker_config) in pickers {
            // Not a call: a dropped reconfiguration only leaves the old balancer.
            picker.do_send(Reconfigure(picker_config));
        }
        if config.budget() != self.config.budget() {
            let (ratio, per_sec) = config.budget();
            for state in self.services.values() {
                *state.budget.borrow_mut() =
                    RetryBudget::new(ratio, per_sec, std::time::Instant::now());
            }
        }
        self.base_metadata = base;
        self.config = config;
        for state in self.services.values_mut() {
            state.policies.clear();
        }
        info!("client configuration updated");
        Ok(())
    }
}

/// Asks for the picker state of one service (nodes, loads, ejections).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<PickerStatus, Error>")]
pub struct ServiceStatus(pub String);

impl Handler<ServiceStatus> for ClusterClient {
    type Result = ResponseFuture<Result<PickerStatus, Error>>;

    fn handle(&mut self, msg: ServiceStatus, _: &mut Self::Context) -> Self::Result {
        let picker = match self.service(&msg.0) {
            Ok(s) => s.picker.clone(),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let service = msg.0;
        Box::pin(async move {
            picker
                .send(Inspect)
                .await
                .map_err(|e| Error::picker_gone(service, e))
        })
    }
}

/// Asks for the tokens left in a service's retry budget, in thousandths.
#[derive(Debug, Clone, Message)]
#[rtype(result = "u64")]
pub struct BudgetTokens(pub String);

impl Handler<BudgetTokens> for ClusterClient {
    type Result = u64;

    fn handle(&mut self, msg: BudgetTokens, _: &mut Self::Context) -> u64 {
        self.services.get(msg.0.as_str()).map_or(0, |s| {
            s.budget
                .borrow_mut()
                .milli_tokens(std::time::Instant::now())
        })
    }
}
