//! [`ServeHandle`]: controlling a running server.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use governor::clock::MonotonicClock;
use registry_actor::{Registrar, RegistrationState};
use tokio::sync::watch;

use super::shutdown::ShutdownTrigger;
use crate::drain::InFlight;
use crate::rate_limit::{LimiterClock, RateLimitStatus, RateLimits};
use crate::{Error, RateLimitConfig};

/// Controls a running server: shutdown, new rate limits, and what it is doing.
/// Cheap to clone; every clone controls the same server.
pub struct ServeHandle<C: LimiterClock = MonotonicClock> {
    inner: Arc<Inner<C>>,
}

pub(crate) struct Inner<C: LimiterClock> {
    pub(crate) trigger: watch::Sender<Option<ShutdownTrigger>>,
    pub(crate) limits: RateLimits<C>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) advertised: String,
    pub(crate) node_id: String,
    pub(crate) registry_key: Option<String>,
    pub(crate) registration: Option<watch::Receiver<RegistrationState>>,
    pub(crate) registrar: Option<Arc<Registrar>>,
    pub(crate) counters: Arc<InFlight>,
}

impl<C: LimiterClock> ServeHandle<C> {
    pub(crate) fn new(inner: Inner<C>) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Starts the ordered shutdown (as SIGTERM does) and returns at once; a
    /// second call does nothing. Await [`Serving::wait`](crate::Serving::wait)
    /// for the [`ShutdownReport`](crate::ShutdownReport).
    pub fn shutdown(&self) {
        trigger(&self.inner.trigger, ShutdownTrigger::Handle);
    }

    /// Whether a shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.trigger.borrow().is_some()
    }

    /// Resolves once a shutdown has started (at once when one already has),
    /// for work that should stop with the server, such as following a
    /// configuration.
    pub async fn shutdown_started(&self) {
        let mut trigger = self.inner.trigger.subscribe();
        // The sender lives as long as `self`: the wait ends only by a trigger.
        let _ = trigger.wait_for(Option::is_some).await;
    }

    /// Replaces the rate limits; the next call is checked against them. No
    /// restart, no dropped call; limiters whose values did not change keep
    /// their state. For configuration hot-reload.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key when `config` is invalid; the limits in
    /// force stay.
    pub fn set_rate_limits(&self, config: RateLimitConfig) -> Result<(), Error> {
        self.inner.limits.set_config(config)
    }

    /// The rate limits in force, with the live instance count and cluster share.
    pub fn rate_limits(&self) -> RateLimitStatus {
        self.inner.limits.status()
    }

    /// The limiters themselves (shared with the server).
    pub fn limits(&self) -> &RateLimits<C> {
        &self.inner.limits
    }

    /// The address the listener is bound to (with the real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The address written to the registry, `host:port`.
    pub fn advertised_addr(&self) -> &str {
        &self.inner.advertised
    }

    /// The node id (the configured one, or the advertised address).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The etcd key of this server, when registered.
    pub fn registry_key(&self) -> Option<&str> {
        self.inner.registry_key.as_deref()
    }

    /// The registration state, when registered.
    pub fn registration_state(&self) -> Option<RegistrationState> {
        self.inner.registration.as_ref().map(|r| r.borrow().clone())
    }

    /// A receiver of every registration state change, when registered.
    pub fn registration_changes(&self) -> Option<watch::Receiver<RegistrationState>> {
        self.inner.registration.clone()
    }

    /// Takes the server out of discovery without stopping it: its key leaves
    /// the registry (the lease is revoked) and clients stop picking it, while
    /// it keeps answering every call that reaches it, direct or already
    /// routed. Health shows it: `grpc-cluster.registration` is `NOT_SERVING`
    /// while the server (`""`) and its services stay `SERVING`, and
    /// [`registration_state`](Self::registration_state) is `Paused`. Returns
    /// once etcd confirmed the key is gone. [`resume`](Self::resume) puts it
    /// back; a shutdown deregisters a paused server as any other.
    ///
    /// # Errors
    ///
    /// [`Error::NotRegistered`] when the server serves without a registry;
    /// [`Error::Registry`] when etcd cannot be reached (the key then leaves
    /// when its lease expires) or the shutdown has deregistered it.
    pub async fn pause(&self) -> Result<(), Error> {
        Ok(self.registrar()?.pause().await?)
    }

    /// Puts a paused server back into discovery: a new lease, the key written
    /// again, health `SERVING`. Returns at once; follow
    /// [`registration_changes`](Self::registration_changes) to see it
    /// registered. Does nothing unless paused.
    ///
    /// # Errors
    ///
    /// [`Error::NotRegistered`] when the server serves without a registry;
    /// [`Error::Registry`] once a shutdown has started.
    pub async fn resume(&self) -> Result<(), Error> {
        if self.is_shutting_down() {
            return Err(registry_actor::Error::RegistrarStopped.into());
        }
        Ok(self.registrar()?.resume().await?)
    }

    fn registrar(&self) -> Result<&Registrar, Error> {
        self.inner.registrar.as_deref().ok_or(Error::NotRegistered)
    }

    /// Calls in flight right now (streams count until they end).
    pub fn in_flight(&self) -> u64 {
        self.inner.counters.in_flight()
    }
}

/// Sets the trigger unless a shutdown already started.
pub(crate) fn trigger(sender: &watch::Sender<Option<ShutdownTrigger>>, why: ShutdownTrigger) {
    sender.send_if_modified(|t| {
        if t.is_none() {
            *t = Some(why);
            true
        } else {
            false
        }
    });
}

impl<C: LimiterClock> Clone for ServeHandle<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C: LimiterClock> fmt::Debug for ServeHandle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeHandle")
            .field("local_addr", &self.inner.local_addr)
            .field("advertised", &self.inner.advertised)
            .field("registry_key", &self.inner.registry_key)
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}
