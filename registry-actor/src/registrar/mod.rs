//! Registering a server in etcd, and keeping it registered.
//!
//! A [`Registrar`] owns one node's key, `{prefix}/{service}/{id}`. It grants a lease
//! with the configured TTL (default 10 s, whole seconds: a fraction is rounded
//! up), puts the key with that lease and keeps the lease alive every TTL/3
//! through one member of the cluster. It also watches its own key there.
//!
//! When that member fails — its keepalive stream errs or ends (killed,
//! restarted, lost its leader), or no keepalive answer came for 2/3 of the TTL
//! (frozen, cut off) — the registrar moves to the next member and keeps the
//! *same lease* alive from there: the key never leaves the registry through a
//! leader change or a member's death. Only when etcd answers that the lease is
//! gone (it expired, or the cluster was rebuilt) does it grant a new lease and
//! put the key again. It retries for ever, with backoff capped at a third of
//! the TTL. Someone else deleting the key gets it put back at once with the same
//! lease.
//!
//! [`Registrar::pause`] takes the node out of discovery (revokes the lease) without
//! stopping the task; [`Registrar::resume`] puts it back. [`Registrar::deregister`]
//! revokes the lease and returns once the key is gone. The current
//! [`RegistrationState`] is always readable, and [`Registrar::state_changes`] gives a
//! `watch` receiver for waiting on it.
//!
//! Dropping a `Registrar` stops its task without revoking anything, exactly like a
//! crashed process: the key disappears when the lease expires. Call
//! [`deregister`](Registrar::deregister) for a clean exit.
//!
//! The task is spawned on the current tokio runtime (an actix `System` is one); it
//! stops with that runtime.
//!
//! # Examples
//!
//! ```no_run
//! # async fn run() -> Result<(), registry_actor::Error> {
//! use registry_actor::{Node, Registrar, RegistrationState, RegistryConfig};
//!
//! let config = RegistryConfig::default().with_endpoints(["127.0.0.1:2379"]);
//! let etcd = registry_actor::connect(&config).await?;
//! let node = Node::new("echo-1", "echo", "127.0.0.1:50051")?.with_version("1.2.0");
//! let registrar = Registrar::start(etcd, node, &config);
//! registrar
//!     .state_changes()
//!     .wait_for(|s| matches!(s, RegistrationState::Registered { .. }))
//!     .await
//!     .ok();
//! registrar.deregister().await?;
//! # Ok(()) }
//! ```

mod task;

use std::fmt;

use tokio::sync::{mpsc, oneshot, watch};

use crate::{Error, Etcd, Node, RegistryConfig};

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationState {
    /// The first registration is under way.
    Registering,
    /// The key is in etcd, attached to this lease, and kept alive.
    Registered {
        /// The lease the key is attached to.
        lease: i64,
    },
    /// The registration was lost or could not be made; trying again with backoff.
    Retrying {
        /// How many attempts failed in a row.
        attempt: u32,
        /// Why the last attempt failed.
        error: String,
    },
    /// Taken out of discovery by [`Registrar::pause`].
    Paused,
    /// Deregistered for good; the task has ended.
    Deregistered,
}

impl RegistrationState {
    /// Whether the key is in etcd and kept alive.
    pub fn is_registered(&self) -> bool {
        matches!(self, Self::Registered { .. })
    }
}

impl fmt::Display for RegistrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registering => f.write_str("registering"),
            Self::Registered { lease } => write!(f, "registered (lease {lease:x})"),
            Self::Retrying { attempt, error } => write!(f, "retrying (attempt {attempt}: {error})"),
            Self::Paused => f.write_str("paused"),
            Self::Deregistered => f.write_str("deregistered"),
        }
    }
}

enum Command {
    Pause(oneshot::Sender<Result<(), Error>>),
    Resume,
    Deregister(oneshot::Sender<Result<(), Error>>),
}

/// Keeps one node registered in etcd. See the [module docs](self).
#[derive(Debug)]
pub struct Registrar {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<RegistrationState>,
    key: String,
    task: tokio::task::AbortHandle,
}

impl Registrar {
    /// Starts registering `node` under `config.prefix()` with `config.lease_ttl()`.
    ///
    /// Returns at once; the registration happens in a task on the current tokio
    /// runtime, retrying while etcd is unreachable.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start(etcd: Etcd, node: Node, config: &RegistryConfig) -> Self {
        let key = node.key(config.prefix());
        let (state_tx, state) = watch::channel(RegistrationState::Registering);
        let (commands, command_rx) = mpsc::channel(8);
        let task = task::RegistrarTask::new(
            etcd,
            key.clone(),
            node.encode(),
            config,
            task::Published::new(state_tx, node.service(), node.id()),
            command_rx,
        );
        let task = tokio::spawn(task.run()).abort_handle();
        Self {
            commands,
            state,
            key,
            task,
        }
    }

    /// The etcd key this registrar owns.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// A receiver of every state change, e.g. to wait for `Registered`.
    ///
    /// The value that `borrow()` and `wait_for()` hand out is a read guard:
    /// clone what you need and drop it at once. A guard held across an `.await`
    /// stops the registrar from publishing its next state (on a single-threaded
    /// runtime, for good).
    pub fn state_changes(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Takes the node out of discovery (revokes its lease, so the key goes) without
    /// stopping the registrar. Returns once etcd confirmed it.
    ///
    /// # Errors
    ///
    /// When etcd cannot be reached (the key then expires with its lease), or the
    /// task has stopped.
    pub async fn pause(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Pause(tx))
            .await
            .map_err(|_| Error::RegistrarStopped)?;
        rx.await.map_err(|_| Error::RegistrarStopped)?
    }

    /// Puts a paused node back into discovery. Does nothing unless paused.
    ///
    /// # Errors
    ///
    /// When the task has stopped.
    pub async fn resume(&self) -> Result<(), Error> {
        self.commands
            .send(Command::Resume)
            .await
            .map_err(|_| Error::RegistrarStopped)
    }

    /// Revokes the lease and returns once the key is gone from etcd; the task ends.
    /// Calling it again, or after the task ended, returns `Ok`.
    ///
    /// # Errors
    ///
    /// When etcd cannot be reached; the key then expires with its lease.
    pub async fn deregister(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Deregister(tx)).await.is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.task.abort();
    }
}
