//! [`TlsChannel`]: tonic's channel under TLS, with the calls that wait for a
//! connection answered together when it cannot be made.
//!
//! tonic's channel queues calls while it connects, and a failed attempt is
//! handed to one queued call only: the next call in the queue starts an
//! attempt of its own. Against a node whose connects hang, the k-th queued
//! call would end k connect timeouts later, or at its deadline, instead of
//! failing at once and letting its strategy move on. Here a call that starts
//! while no connection is known to be open (no call was answered since the
//! channel's last connection failure) waits beside its request for the next
//! connection failure one of the waiting calls meets, and answers that
//! failure; its request leaves tonic's queue unsent. A call that starts
//! after the failure tries again.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{select, Either};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::Status;

use super::classify::is_connection_failure;

/// What a channel's calls fail with.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// tonic's channel to one node under TLS; cheap to clone, every clone shares
/// the connection and what is known of it.
#[derive(Clone, Debug)]
pub(crate) struct TlsChannel {
    channel: Channel,
    gate: Arc<Gate>,
}

/// What the calls of one channel know of its connection.
#[derive(Debug, Default)]
struct Gate {
    /// Whether a call was answered since the last transport failure.
    connected: AtomicBool,
    failures: Mutex<Failures>,
    /// Woken when a failure is recorded.
    failed: Notify,
}

/// The transport failures recorded on a channel.
#[derive(Debug, Default)]
struct Failures {
    count: u64,
    last: Option<Status>,
}

impl TlsChannel {
    /// Wraps tonic's lazily connecting `channel`.
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            channel,
            gate: Arc::default(),
        }
    }

    /// Whether the channel can take a call (tonic's queue has room).
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::poll_ready(&mut self.channel, cx).map_err(Into::into)
    }

    /// Sends `request`. Its error, when it has one, is a [`Status`].
    pub(crate) fn call(
        &mut self,
        request: http::Request<Body>,
    ) -> impl Future<Output = Result<http::Response<Body>, BoxError>> + Send + 'static {
        let gate = self.gate.clone();
        // Read before the request is queued: a failure recorded from here
        // on is one this call waited for.
        let waits = match gate.connected.load(Ordering::Acquire) {
            true => None,
            false => Some(gate.failures.lock().count),
        };
        let answer = tower::Service::call(&mut self.channel, request);
        async move {
            let Some(seen) = waits else {
                return gate.settle(answer.await, false);
            };
            match select(pin!(answer), pin!(gate.failure_after(seen))).await {
                Either::Left((answer, _)) => gate.settle(answer, true),
                Either::Right((failure, _)) => Err(Box::new(failure) as BoxError),
            }
        }
    }
}

impl Gate {
    /// Learns from a call's answer: an answer means a connection; a
    /// connection failure means none, and is recorded for the calls waiting
    /// when `waited` (this call waited too).
    fn settle(
        &self,
        answer: Result<http::Response<Body>, tonic::transport::Error>,
        waited: bool,
    ) -> Result<http::Response<Body>, BoxError> {
        let error = match answer {
            Ok(response) => {
                if !self.connected.load(Ordering::Relaxed) {
                    self.connected.store(true, Ordering::Release);
                }
                return Ok(response);
            }
            Err(error) => error,
        };
        let status = Status::from_error(Box::new(error));
        if is_connection_failure(&status) {
            self.connected.store(false, Ordering::Release);
            if waited {
                let mut failures = self.failures.lock();
                failures.count += 1;
                failures.last = Some(status.clone());
                drop(failures);
                self.failed.notify_waiters();
            }
        }
        Err(Box::new(status))
    }

    /// The first failure recorded after `seen` failures.
    async fn failure_after(&self, seen: u64) -> Status {
        loop {
            let mut notified = pin!(self.failed.notified());
            notified.as_mut().enable();
            {
                let failures = self.failures.lock();
                if failures.count != seen {
                    if let Some(last) = &failures.last {
                        return last.clone();
                    }
                }
            }
            notified.await;
        }
    }
}
