//! The example and test service `echo.v1.Echo` (DESIGN §8), generated from
//! `proto/echo.proto`, and [`EchoService`], its reference implementation.
//!
//! * `Say(SayRequest{message}) → SayReply{message, node_id}`
//! * `Slow(SlowRequest{message, delay_ms}) → SayReply` (sleeps first)
//! * `Fail(FailRequest{code, message}) → SayReply` (returns that status code)
//!
//! [`EchoService`] counts the calls it processed and the calls it saw cancelled,
//! and records the `grpc-timeout` each call carried, so tests can reconcile the
//! server's view with the client's.

#![allow(missing_docs, unreachable_pub, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Code, Request, Response, Status};

tonic::include_proto!("echo.v1");

pub use echo_client::EchoClient;
pub use echo_server::{Echo, EchoServer};

/// Longest `Slow` delay accepted, so a bad request cannot pin a server task.
pub const MAX_SLOW_DELAY: Duration = Duration::from_secs(60);

/// What an [`EchoService`] has seen.
#[derive(Debug, Default)]
pub struct EchoStats {
    processed: AtomicU64,
    cancelled: AtomicU64,
    grpc_timeouts: Mutex<Vec<String>>,
}

impl EchoStats {
    /// Calls answered (successfully or with their requested error).
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// `Slow` calls whose client went away before the answer was sent.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// The `grpc-timeout` headers received, in arrival order (`None` entries are
    /// not recorded).
    pub fn grpc_timeouts(&self) -> Vec<String> {
        self.grpc_timeouts
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

/// The reference `Echo` implementation: answers with its node id.
#[derive(Debug, Clone)]
pub struct EchoService {
    node_id: Arc<str>,
    stats: Arc<EchoStats>,
}

impl EchoService {
    /// A service answering as `node_id`.
    pub fn new(node_id: impl Into<Arc<str>>) -> Self {
        Self {
            node_id: node_id.into(),
            stats: Arc::default(),
        }
    }

    /// Its counters, shared with every clone.
    pub fn stats(&self) -> Arc<EchoStats> {
        self.stats.clone()
    }

    /// Wraps it in the generated tonic server.
    pub fn into_server(self) -> EchoServer<Self> {
        EchoServer::new(self)
    }

    fn seen<T>(&self, request: &Request<T>) {
        if let Some(t) = request.metadata().get("grpc-timeout") {
            if let (Ok(t), Ok(mut all)) = (t.to_str(), self.stats.grpc_timeouts.lock()) {
                all.push(t.to_owned());
            }
        }
    }

    fn reply(&self, message: String) -> Response<SayReply> {
        Response::new(SayReply {
            message,
            node_id: self.node_id.to_string(),
        })
    }
}

/// Counts a `Slow` call as cancelled when its future is dropped before it finished.
struct CancelGuard<'a> {
    stats: &'a EchoStats,
    done: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        self.seen(&request);
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        Ok(self.reply(request.into_inner().message))
    }

    async fn slow(&self, request: Request<SlowRequest>) -> Result<Response<SayReply>, Status> {
        self.seen(&request);
        let SlowRequest { message, delay_ms } = request.into_inner();
        let delay = Duration::from_millis(delay_ms);
        if delay > MAX_SLOW_DELAY {
            return Err(Status::invalid_argument(format!(
                "delay_ms {delay_ms} is above the maximum of {}",
                MAX_SLOW_DELAY.as_millis()
            )));
        }
        let mut guard = CancelGuard {
            stats: &self.stats,
            done: false,
        };
        tokio::time::sleep(delay).await;
        guard.done = true;
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        Ok(self.reply(message))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<SayReply>, Status> {
        self.seen(&request);
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        let FailRequest { code, message } = request.into_inner();
        let code = Code::from_i32(code);
        if code == Code::Ok {
            return Ok(self.reply(message));
        }
        Err(Status::new(code, message))
    }
}
