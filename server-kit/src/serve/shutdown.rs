//! The ordered shutdown, its [`ShutdownReport`], and the signals that start it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_actor::{Etcd, Registrar};
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::drain::{Connections, DrainSignal, InFlight};
use crate::{Error, ShutdownConfig};

/// How long cancelled connections get to close, and their handlers to be
/// dropped, before the server task is aborted.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Polling interval while confirming that our key is gone from etcd.
const KEY_GONE_POLL: Duration = Duration::from_millis(20);

/// What started a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownTrigger {
    /// A process signal, `SIGTERM` or `SIGINT`.
    Signal(&'static str),
    /// [`ServeHandle::shutdown`](crate::ServeHandle::shutdown).
    Handle,
}

impl fmt::Display for ShutdownTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Signal(name) => f.write_str(name),
            Self::Handle => f.write_str("handle"),
        }
    }
}

/// How the deregistration went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Deregistration {
    /// The server was not registered (no registry given).
    NotRegistered,
    /// The key was deleted and etcd confirmed it is gone.
    Confirmed,
    /// etcd refused or could not be reached; the key expires with its lease.
    Failed(String),
    /// `server.shutdown.deregister_timeout` passed; the key expires with its
    /// lease.
    TimedOut,
}

impl fmt::Display for Deregistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRegistered => f.write_str("not registered"),
            Self::Confirmed => f.write_str("key gone from etcd"),
            Self::Failed(why) => write!(f, "failed ({why}); the key expires with its lease"),
            Self::TimedOut => f.write_str("timed out; the key expires with its lease"),
        }
    }
}

/// One step of the shutdown, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Health set to `NOT_SERVING`: clients watching it stop picking the node.
    NotServing,
    /// Deregistered, and saw the key gone from etcd.
    Deregister,
    /// Kept serving so clients see the key gone.
    LameDuck,
    /// Listener closed, GOAWAY sent on every connection.
    StopAccepting,
    /// Waited for calls in flight to finish.
    Drain,
    /// Cancelled what was still in flight at the drain deadline.
    Cancel,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotServing => "not-serving",
            Self::Deregister => "deregister",
            Self::LameDuck => "lame-duck",
            Self::StopAccepting => "stop-accepting",
            Self::Drain => "drain",
            Self::Cancel => "cancel",
        })
    }
}

/// What a shutdown did: returned by [`serve`](crate::serve) and
/// [`Serving::wait`](crate::Serving::wait), and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    trigger: ShutdownTrigger,
    deregistration: Deregistration,
    in_flight_at_drain: u64,
    drained: u64,
    cancelled: u64,
    phases: Vec<(Phase, Duration)>,
}

impl ShutdownReport {
    fn new(trigger: ShutdownTrigger) -> Self {
        Self {
            trigger,
            deregistration: Deregistration::NotRegistered,
            in_flight_at_drain: 0,
            drained: 0,
            cancelled: 0,
            phases: Vec::new(),
        }
    }

    /// What started the shutdown.
    pub fn trigger(&self) -> ShutdownTrigger {
        self.trigger
    }

    /// How the deregistration went.
    pub fn deregistration(&self) -> &Deregistration {
        &self.deregistration
    }

    /// Calls in flight when the server stopped accepting.
    pub fn in_flight_at_drain(&self) -> u64 {
        self.in_flight_at_drain
    }

    /// Calls that finished during the drain.
    pub fn drained(&self) -> u64 {
        self.drained
    }

    /// Calls still in flight at the drain deadline, and so cancelled.
    pub fn cancelled(&self) -> u64 {
        self.cancelled
    }

    /// The steps that ran, in order, with how long each took.
    pub fn phases(&self) -> &[(Phase, Duration)] {
        &self.phases
    }
}

/// A `main` may return the report, alone or as the `Ok` of a `Result`: a
/// process that shut down in order exits with status 0.
impl std::process::Termination for ShutdownReport {
    fn report(self) -> std::process::ExitCode {
        std::process::ExitCode::SUCCESS
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shutdown on {}: deregistration {}; in flight {}, drained {}, cancelled {}; phases",
            self.trigger,
            self.deregistration,
            self.in_flight_at_drain,
            self.drained,
            self.cancelled
        )?;
        for (phase, took) in &self.phases {
            write!(f, " {phase}={}ms", took.as_millis())?;
        }
        Ok(())
    }
}

/// Everything the shutdown needs, owned by its driver task.
pub(crate) struct Shutdown {
    pub(crate) config: ShutdownConfig,
    pub(crate) trigger: watch::Receiver<Option<ShutdownTrigger>>,
    pub(crate) registrar: Option<Arc<Registrar>>,
    pub(crate) etcd: Option<Etcd>,
    pub(crate) health: HealthReporter,
    pub(crate) names: Vec<&'static str>,
    pub(crate) watches: DrainSignal,
    pub(crate) goaway: Option<oneshot::Sender<()>>,
    pub(crate) server: JoinHandle<Result<(), tonic::transport::Error>>,
    pub(crate) counters: Arc<InFlight>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) background: Vec<AbortHandle>,
}

impl Shutdown {
    /// Waits for the trigger, then runs the steps in order.
    pub(crate) async fn run(mut self) -> Result<ShutdownReport, Error> {
        let mut trigger = self.trigger.clone();
        let started = tokio::select! {
            t = trigger.wait_for(Option::is_some) => {
                Ok(t.ok().and_then(|t| *t).unwrap_or(ShutdownTrigger::Handle))
            }
            ended = &mut self.server => Err(ended),
        };
        let trigger = match started {
            Ok(trigger) => trigger,
            Err(ended) => return Err(self.server_ended_by_itself(ended).await),
        };
        let mut report = ShutdownReport::new(trigger);
        info!(%trigger, "shutting down: health NOT_SERVING, deregistering");

        // First of all: clients that watch the health service stop picking
        // this node at once, whether or not etcd can be told (or tells them).
        let started = Instant::now();
        for name in self.names.iter().copied().chain([""]) {
            self.health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        report.phases.push((Phase::NotServing, started.elapsed()));

        let started = Instant::now();
        report.deregistration = self.deregister().await;
        report.phases.push((Phase::Deregister, started.elapsed()));
        info!(deregistration = %report.deregistration, lame_duck = ?self.config.lame_duck(),
            "deregistered; lame duck");

        let started = Instant::now();
        if !self.config.lame_duck().is_zero() {
            tokio::time::sleep(self.config.lame_duck()).await;
        }
        report.phases.push((Phase::LameDuck, started.elapsed()));
        info!("lame duck over; stopping accepting");

        let started = Instant::now();
        // Health watchers have their NOT_SERVING: their streams end, and the
        // drain waits for real calls only.
        self.watches.start();
        self.counters.start_draining();
        let completed_before = self.counters.completed();
        report.in_flight_at_drain = self.counters.in_flight();
        // tonic drops the listener and sends GOAWAY on every connection.
        if let Some(goaway) = self.goaway.take() {
            let _ = goaway.send(());
        }
        report
            .phases
            .push((Phase::StopAccepting, started.elapsed()));
        info!(in_flight = report.in_flight_at_drain, drain_timeout = ?self.config.drain_timeout(),
            "stopped accepting (GOAWAY sent); draining");

        let started = Instant::now();
        let drain_timeout = self.config.drain_timeout();
        let drained = tokio::time::timeout(drain_timeout, &mut self.server).await;
        report.phases.push((Phase::Drain, started.elapsed()));
        report.drained = self.counters.completed() - completed_before;
        let ended = match drained {
            Ok(ended) => Some(ended),
            Err(_) => {
                report.cancelled = self.counters.in_flight();
                warn!(
                    cancelled = report.cancelled,
                    "drain deadline passed; cancelling the rest"
                );
                let started = Instant::now();
                self.connections.cancel();
                let ended = tokio::time::timeout(CANCEL_GRACE, &mut self.server).await;
                if !self.counters.wait_idle(CANCEL_GRACE).await {
                    warn!(
                        left = self.counters.in_flight(),
                        "calls still running after cancel"
                    );
                }
                report.phases.push((Phase::Cancel, started.elapsed()));
                match ended {
                    Ok(ended) => Some(ended),
                    Err(_) => {
                        warn!("connections still open after cancel; aborting the server task");
                        self.server.abort();
                        None
                    }
                }
            }
        };
        match ended {
            Some(Ok(Err(e))) => warn!(error = %e, "the server reported an error while stopping"),
            Some(Err(e)) if !e.is_cancelled() => warn!(error = %e, "the server task failed"),
            _ => {}
        }
        self.stop_background();
        info!(%report, "shutdown complete");
        Ok(report)
    }

    /// Deregisters and waits until etcd no longer has the key, within
    /// `deregister_timeout`.
    async fn deregister(&mut self) -> Deregistration {
        let Some(registrar) = self.registrar.take() else {
            return Deregistration::NotRegistered;
        };
        let etcd = self.etcd.clone();
        let confirm = async move {
            registrar.deregister().await.map_err(|e| e.to_string())?;
            let Some(etcd) = etcd else {
                return Ok(());
            };
            loop {
                let present = etcd
                    .exists(registrar.key())
                    .await
                    .map_err(|e| e.to_string())?;
                if !present {
                    return Ok(());
                }
                tokio::time::sleep(KEY_GONE_POLL).await;
            }
        };
        match tokio::time::timeout(self.config.deregister_timeout(), confirm).await {
            Ok(Ok(())) => Deregistration::Confirmed,
            Ok(Err(why)) => {
                warn!(error = %why, "deregistration failed; the key expires with its lease");
                Deregistration::Failed(why)
            }
            Err(_) => {
                warn!(timeout = ?self.config.deregister_timeout(),
                    "deregistration timed out; the key expires with its lease");
                Deregistration::TimedOut
            }
        }
    }

    /// The server task ended without a shutdown: deregister, and say why.
    async fn server_ended_by_itself(
        &mut self,
        ended: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
    ) -> Error {
        let error = match ended {
            Ok(Ok(())) => Error::Task("the server stopped without a shutdown".into()),
            Ok(Err(e)) => Error::Serve(Box::new(e)),
            Err(e) => Error::Task(e.to_string()),
        };
        warn!(error = %error, "the server ended by itself; deregistering");
        self.deregister().await;
        self.stop_background();
        error
    }

    fn stop_background(&mut self) {
        for task in self.background.drain(..) {
            task.abort();
        }
    }
}

/// The SIGTERM and SIGINT listeners of a server. They are registered when
/// created, so a signal that arrives before the server's signal task first runs
/// starts the shutdown instead of killing the process.
pub(crate) struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Registers the listeners now.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub(crate) fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(listener) => Some(listener),
                Err(e) => {
                    warn!(error = %e, "cannot listen for {name}; it will not stop the server");
                    None
                }
            };
            Self {
                term: listen(SignalKind::terminate(), "SIGTERM"),
                int: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Waits for the first signal and names it.
    pub(crate) async fn recv(self) -> &'static str {
        #[cfg(unix)]
        {
            async fn next(listener: Option<tokio::signal::unix::Signal>) {
                match listener {
                    Some(mut listener) => {
                        if listener.recv().await.is_none() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(self.term) => "SIGTERM",
                () = next(self.int) => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                warn!("cannot listen for ctrl-c; it will not stop the server");
                std::future::pending::<()>().await;
            }
            "ctrl-c"
        }
    }
}
