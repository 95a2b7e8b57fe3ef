//! The [`ClusterClient`] actor.

use std::sync::Arc;

use actix::prelude::*;
use registry_actor::{RegistryActor, RegistryConfig};

use super::error::CallError;
use super::handle::{ClientHandle, GetHandle};
use super::messages::{Broadcast, BroadcastReply, Call, Reply};
use crate::{ClientConfig, Error, PickerStatus};

impl<Req: 'static, Resp: 'static> Message for Call<Req, Resp> {
    type Result = Result<Reply<Resp>, CallError>;
}

impl<Req: 'static, Resp: 'static> Message for Broadcast<Req, Resp> {
    type Result = Result<BroadcastReply<Resp>, CallError>;
}

/// The cluster client: runs `Call` and `Broadcast` messages by their strategy
/// (failfast, failover, failretry, forking, broadcast, multicast).
///
/// The actor is a front for a [`ClientHandle`]: a `Call` sent to it runs
/// exactly as [`ClientHandle::call`] does, in a task of the actor's arbiter.
/// Code that can hold the handle saves the mailbox hop and that task.
pub struct ClusterClient {
    handle: ClientHandle,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("handle", &self.handle)
            .finish()
    }
}

impl ClusterClient {
    /// A client discovering services through `registry`. Start it with
    /// [`Actor::start`]. Must be created inside a running actix system: the
    /// pickers, connections and channels of its services are started on the
    /// current arbiter.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key of an invalid setting, or `client`
    /// when there is no current arbiter.
    pub fn new(registry: Addr<RegistryActor>, config: ClientConfig) -> Result<Self, Error> {
        Ok(Self {
            handle: ClientHandle::new(registry, config, None)?,
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
        let endpoints: Arc<str> = registry.endpoints().join(",").into();
        let registry = RegistryActor::new(etcd, registry).start();
        let handle = ClientHandle::new(registry, config, Some(endpoints))?;
        Ok(Self { handle }.start())
    }

    /// A handle that runs calls in the caller's task, sharing this client's
    /// pickers, connections, budgets and settings.
    pub fn handle(&self) -> ClientHandle {
        self.handle.clone()
    }
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
        self.handle.call(msg)
    }
}

impl<Req, Resp> Handler<Broadcast<Req, Resp>> for ClusterClient
where
    Req: prost::Message + Clone + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    type Result = ResponseFuture<Result<BroadcastReply<Resp>, CallError>>;

    fn handle(&mut self, msg: Broadcast<Req, Resp>, _: &mut Self::Context) -> Self::Result {
        self.handle.broadcast(msg)
    }
}

impl Handler<GetHandle> for ClusterClient {
    type Result = MessageResult<GetHandle>;

    fn handle(&mut self, _: GetHandle, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.handle.clone())
    }
}

/// Replaces the client's settings (a configuration reload). Strategies,
/// retries, deadlines and budgets apply from the next call; balancers and
/// selectors from the next pick. An invalid configuration is refused and the
/// old one stays in force. The same as [`ClientHandle::update_config`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct UpdateConfig(pub ClientConfig);

impl Handler<UpdateConfig> for ClusterClient {
    type Result = Result<(), Error>;

    fn handle(&mut self, msg: UpdateConfig, _: &mut Self::Context) -> Self::Result {
        self.handle.update_config(msg.0)
    }
}

/// Asks for the picker state of one service (nodes, loads, ejections).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<PickerStatus, Error>")]
pub struct ServiceStatus(pub String);

impl Handler<ServiceStatus> for ClusterClient {
    type Result = ResponseFuture<Result<PickerStatus, Error>>;

    fn handle(&mut self, msg: ServiceStatus, _: &mut Self::Context) -> Self::Result {
        let handle = self.handle.clone();
        Box::pin(async move { handle.status(&msg.0).await })
    }
}

/// Asks for the tokens left in a service's retry budget, in thousandths.
#[derive(Debug, Clone, Message)]
#[rtype(result = "u64")]
pub struct BudgetTokens(pub String);

impl Handler<BudgetTokens> for ClusterClient {
    type Result = u64;

    fn handle(&mut self, msg: BudgetTokens, _: &mut Self::Context) -> u64 {
        self.handle.budget_tokens(&msg.0)
    }
}
