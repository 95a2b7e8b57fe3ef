//! The [`PickerActor`]: a thin actor over [`Picker`].

use std::time::Duration;

use actix::prelude::*;
use registry_actor::{NodesChanged, RegistryActor, Subscribe, SubscriptionId, Unsubscribe};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use super::messages::{ConnectionFailed, ConnectionSucceeded, Inspect, Pick, PickAll, ReportLoad};
use super::state::{Picked, Picker};
use crate::{Error, PickerConfig};

/// The clock of the picker: tokio's, so that tests can pause and advance it.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The picker of one service, subscribed to the [`RegistryActor`]. See the
/// [`picker` docs](crate#picking).
pub struct PickerActor {
    picker: Picker,
    registry: Addr<RegistryActor>,
    subscription: Option<SubscriptionId>,
    /// The pending wake-up for [`Picker::expire`], and when it fires.
    timer: Option<(std::time::Instant, SpawnHandle)>,
    /// Picks waiting for the first node set.
    waiters: Vec<oneshot::Sender<()>>,
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
            picker,
            registry,
            subscription: None,
            timer: None,
            waiters: Vec::new(),
        }
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
            act.picker.expire(now());
            act.schedule(ctx);
        });
        self.timer = Some((deadline, handle));
    }

    /// Runs `pick` now, or once the first node set arrives (within the discovery
    /// timeout).
    fn when_discovered<T: 'static>(
        &mut self,
        pick: impl FnOnce(&mut Picker) -> Result<T, Error> + 'static,
    ) -> ActorResponse<Self, Result<T, Error>> {
        if self.picker.is_discovered() {
            return ActorResponse::reply(pick(&mut self.picker));
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.retain(|w| !w.is_closed());
        self.waiters.push(tx);
        let waited: Duration = self.picker.config().discovery_timeout();
        let wait = async move {
            let _ = tokio::time::timeout(waited, rx).await;
        };
        ActorResponse::r#async(wait.into_actor(self).map(move |(), act, _| {
            if act.picker.is_discovered() {
                pick(&mut act.picker)
            } else {
                Err(Error::NotDiscovered {
                    service: act.picker.service().clone(),
                    waited,
                })
            }
        }))
    }
}

impl Actor for PickerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let subscribe =
            Subscribe::new(self.picker.service().to_string(), ctx.address().recipient());
        self.registry
            .send(subscribe)
            .into_actor(self)
            .map(|answer, act, ctx| match answer {
                Ok(id) => act.subscription = Some(id),
                Err(e) => {
                    error!(service = %act.picker.service(), error = %e, "the registry is gone; stopping the picker");
                    ctx.stop();
                }
            })
            .wait(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(id) = self.subscription.take() {
            // Best effort: the registry also drops subscribers that are gone.
            self.registry.do_send(Unsubscribe {
                service: self.picker.service().to_string(),
                id,
            });
        }
    }
}

impl Handler<NodesChanged> for PickerActor {
    type Result = ();

    fn handle(&mut self, msg: NodesChanged, ctx: &mut Self::Context) {
        if *msg.service != **self.picker.service() {
            warn!(expected = %self.picker.service(), got = %msg.service, "node set of another service ignored");
            return;
        }
        debug!(service = %msg.service, revision = msg.revision, nodes = msg.nodes.len(), "node set changed");
        self.picker.update(msg.nodes, msg.revision, now());
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(());
        }
        self.schedule(ctx);
    }
}

impl Handler<Pick> for PickerActor {
    type Result = ActorResponse<Self, Result<Picked, Error>>;

    fn handle(&mut self, msg: Pick, _: &mut Self::Context) -> Self::Result {
        self.when_discovered(move |picker| {
            picker.pick(msg.selector.as_ref(), &msg.exclude, msg.hash_key)
        })
    }
}

impl Handler<PickAll> for PickerActor {
    type Result = ActorResponse<Self, Result<Vec<Picked>, Error>>;

    fn handle(&mut self, msg: PickAll, _: &mut Self::Context) -> Self::Result {
        self.when_discovered(move |picker| picker.pick_all(msg.selector.as_ref()))
    }
}

impl Handler<ReportLoad> for PickerActor {
    type Result = ();

    fn handle(&mut self, msg: ReportLoad, _: &mut Self::Context) {
        self.picker.report_load(msg.node, msg.in_flight);
    }
}

impl Handler<ConnectionFailed> for PickerActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectionFailed, ctx: &mut Self::Context) {
        debug!(service = %self.picker.service(), node = %msg.node, reason = %msg.reason, "connection failed");
        if self.picker.connection_failed(msg.node, now()) {
            self.schedule(ctx);
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
        MessageResult(self.picker.status())
    }
}
