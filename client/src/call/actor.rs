//! The [`ClusterClient`] actor.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;
use futures_util::FutureExt;
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
/// exactly as [`ClientHandle::call`] does, in the actor's own task while it
/// is the only call running there, else in a task of the actor's arbiter (the
/// actor's task polls everything it runs each time it wakes). Code that can
/// hold the handle saves the mailbox hop.
pub struct ClusterClient {
    handle: ClientHandle,
    /// Calls running in the actor's own task.
    inline: usize,
}

/// Calls that may run in the actor's own task at once.
const INLINE_CALLS: usize = 1;

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("handle", &self.handle)
            .field("inline", &self.inline)
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
            inline: 0,
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
        Ok(Self { handle, inline: 0 }.start())
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
    type Result = Running<Result<Reply<Resp>, CallError>>;

    fn handle(&mut self, msg: Call<Req, Resp>, _: &mut Self::Context) -> Self::Result {
        let call = self.handle.call(msg);
        if self.inline < INLINE_CALLS {
            self.inline += 1;
            return Running::Inline(call);
        }
        Running::Task(call)
    }
}

/// A call's future, and where it runs: in the actor's own task, or in a task
/// of the arbiter.
pub enum Running<T> {
    /// In the actor's task (counted in `ClusterClient::inline`).
    Inline(Pin<Box<dyn Future<Output = T> + Send>>),
    /// In a task of its own.
    Task(Pin<Box<dyn Future<Output = T> + Send>>),
}

impl<T> std::fmt::Debug for Running<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Inline(_) => "Running::Inline",
            Self::Task(_) => "Running::Task",
        })
    }
}

/// Sends `answer` to whoever waits for it (a caller may have stopped waiting).
fn answer_to<T>(tx: Option<OneshotSender<T>>, answer: T) {
    if let Some(tx) = tx {
        let _ = tx.send(answer);
    }
}

impl<M> MessageResponse<ClusterClient, M> for Running<M::Result>
where
    M: Message,
    M::Result: 'static,
{
    fn handle(self, ctx: &mut Context<ClusterClient>, tx: Option<OneshotSender<M::Result>>) {
        match self {
            Self::Inline(call) => {
                // A panic ends the call, not the actor: the caller sees the
                // answer dropped, as when a task of its own panics.
                let call = AssertUnwindSafe(call).catch_unwind();
                ctx.spawn(actix::fut::wrap_future(call).map(
                    move |answer, client: &mut ClusterClient, _| {
                        client.inline -= 1;
                        if let Ok(answer) = answer {
                            answer_to(tx, answer);
                        }
                    },
                ));
            }
            Self::Task(call) => {
                actix::spawn(async { answer_to(tx, call.await) });
            }
        }
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
