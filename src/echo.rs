//! The example and test service `echo.v1.Echo`, generated from
//! `proto/echo.proto`, and [`EchoService`], its reference implementation.
//!
//! * `Say(SayRequest{message}) → SayReply{message, node_id}`
//! * `Slow(SlowRequest{message, delay_ms}) → SayReply` (sleeps first)
//! * `Fail(FailRequest{code, message}) → SayReply` (returns that status code)
//! * `Count(CountRequest{message, n, interval_ms}) → stream SayReply` (`n`
//!   replies `interval_ms` apart: `"{message} 1"` … `"{message} n"`)
//! * `Chat(stream SayRequest) → stream SayReply` (each message answered as it
//!   arrives)
//!
//! [`EchoService`] counts the calls it processed and the calls it saw cancelled,
//! and records the `grpc-timeout` each call carried, so tests can reconcile the
//! server's view with the client's. Four knobs make nodes differ on purpose:
//! [`EchoService::with_slow_delay`] (a slow node: every `Slow` waits longer),
//! [`EchoService::with_gauge`] (a concurrency gauge shared by several nodes, to
//! see calls overlap), [`EchoService::with_slow_capacity`] (a node that works
//! on only so many `Slow` calls at once and queues the rest), and the request metadata `x-echo-pushback-ms`, which `Fail`
//! returns as `grpc-retry-pushback-ms` (a server asking for a pushback). Two
//! more make a node misbehave as a whole: [`EchoService::with_hang`] (it
//! accepts `Say` and `Count` and never answers) and [`EchoService::with_say_error`] (it
//! answers every `Say` with one error, optionally with a pushback).
//!
//! [`SAY`], [`SLOW`] and [`FAIL`] are the typed methods for the cluster
//! client's `Call`; [`EchoClient`] over a `ClusterChannel` calls all five.

#![allow(missing_docs, unreachable_pub, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

tonic::include_proto!("echo.v1");

pub use echo_client::EchoClient;
pub use echo_server::{Echo, EchoServer};

use cluster_client::Method;

/// `echo.v1.Echo/Say` for [`cluster_client::Call`].
pub const SAY: Method<SayRequest, SayReply> = Method::from_static("/echo.v1.Echo/Say");
/// `echo.v1.Echo/Slow` for [`cluster_client::Call`].
pub const SLOW: Method<SlowRequest, SayReply> = Method::from_static("/echo.v1.Echo/Slow");
/// `echo.v1.Echo/Fail` for [`cluster_client::Call`].
pub const FAIL: Method<FailRequest, SayReply> = Method::from_static("/echo.v1.Echo/Fail");

/// The request metadata key whose value `Fail` returns as its pushback.
pub const PUSHBACK_HOOK: &str = "x-echo-pushback-ms";

/// Calls running at once, and the most ever seen; may be shared by several
/// services to see whether calls to different nodes overlap.
#[derive(Debug, Default)]
pub struct Gauge {
    now: AtomicU64,
    max: AtomicU64,
}

impl Gauge {
    /// The most calls ever running at once.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    fn enter(&self) -> GaugeGuard<'_> {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
        GaugeGuard(self)
    }
}

struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Longest `Slow` delay accepted, so a bad request cannot pin a server task.
pub const MAX_SLOW_DELAY: Duration = Duration::from_secs(60);

/// Most replies one `Count` call may ask for.
pub const MAX_COUNT: u32 = 100_000;

/// The replies of a streaming call.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<SayReply, Status>> + Send>>;

/// What an [`EchoService`] has seen.
#[derive(Debug, Default)]
pub struct EchoStats {
    processed: AtomicU64,
    cancelled: AtomicU64,
    hung: AtomicU64,
    grpc_timeouts: Mutex<VecDeque<String>>,
    request_ids: Mutex<VecDeque<String>>,
    traceparents: Mutex<VecDeque<String>>,
}

/// How many `grpc-timeout`, `x-request-id` and `traceparent` values each log keeps (the most
/// recent), so that a long load run does not grow the service without bound.
pub const HEADER_LOG: usize = 1024;

impl EchoStats {
    /// Calls answered (successfully or with their requested error).
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// `Say` and `Count` calls a hanging service received (and never answered).
    pub fn hung(&self) -> u64 {
        self.hung.load(Ordering::Relaxed)
    }

    /// `Slow` calls, and `Say` and `Count` calls of a hanging service, whose client went
    /// away before the answer was sent.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// The last [`HEADER_LOG`] `x-request-id` headers received, in arrival order
    /// (when the service keeps them: [`EchoService::with_header_log`]).
    pub fn request_ids(&self) -> Vec<String> {
        self.request_ids
            .lock()
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The last [`HEADER_LOG`] `traceparent` headers received, in arrival order
    /// (when the service keeps them: [`EchoService::with_header_log`]).
    pub fn traceparents(&self) -> Vec<String> {
        self.traceparents
            .lock()
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The last [`HEADER_LOG`] `grpc-timeout` headers received, in arrival order
    /// (calls without one are not recorded; only when the service keeps them:
    /// [`EchoService::with_header_log`]).
    pub fn grpc_timeouts(&self) -> Vec<String> {
        self.grpc_timeouts
            .lock()
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The reference `Echo` implementation: answers with its node id.
#[derive(Debug, Clone)]
pub struct EchoService {
    node_id: Arc<str>,
    stats: Arc<EchoStats>,
    slow_delay: Duration,
    gauge: Option<Arc<Gauge>>,
    capacity: Option<Arc<tokio::sync::Semaphore>>,
    log_headers: bool,
    hang: bool,
    say_error: Option<(Code, Option<Duration>)>,
}

impl EchoService {
    /// A service answering as `node_id`.
    pub fn new(node_id: impl Into<Arc<str>>) -> Self {
        Self {
            node_id: node_id.into(),
            stats: Arc::default(),
            slow_delay: Duration::ZERO,
            gauge: None,
            capacity: None,
            log_headers: false,
            hang: false,
            say_error: None,
        }
    }

    /// Accepts every `Say` and `Count` and never answers it (default off): a node that
    /// takes connections and calls but has stopped working. The call stays
    /// open until the client gives up; [`EchoStats::hung`] counts them and
    /// [`EchoStats::cancelled`] the ones the client cancelled.
    pub fn with_hang(mut self, hang: bool) -> Self {
        self.hang = hang;
        self
    }

    /// Answers every `Say` with `code` (default: none, `Say` succeeds), with
    /// `pushback` as `grpc-retry-pushback-ms` when given.
    pub fn with_say_error(mut self, code: Code, pushback: Option<Duration>) -> Self {
        self.say_error = Some((code, pushback));
        self
    }

    /// Adds `delay` to every `Slow` call: a slow node (default none).
    pub fn with_slow_delay(mut self, delay: Duration) -> Self {
        self.slow_delay = delay;
        self
    }

    /// Keeps the last [`HEADER_LOG`] `grpc-timeout`, `x-request-id` and
    /// `traceparent` values received, for [`EchoStats::grpc_timeouts`],
    /// [`EchoStats::request_ids`] and [`EchoStats::traceparents`] (default
    /// off: it costs a lock and a copy per header and call, which a load test
    /// should not measure).
    pub fn with_header_log(mut self, log: bool) -> Self {
        self.log_headers = log;
        self
    }

    /// Counts `Slow` calls running at once in `gauge` (default none).
    pub fn with_gauge(mut self, gauge: Arc<Gauge>) -> Self {
        self.gauge = Some(gauge);
        self
    }

    /// Works on at most `n` `Slow` calls at once (default: no limit); the
    /// others wait their turn, first come first served, inside the handler (and
    /// in the gauge). A node whose latency grows with its queue once its
    /// capacity of `n / delay` calls per second is exceeded.
    pub fn with_slow_capacity(mut self, n: usize) -> Self {
        self.capacity = Some(Arc::new(tokio::sync::Semaphore::new(n)));
        self
    }

    /// The node id it answers with.
    pub fn node_id(&self) -> &str {
        &self.node_id
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
        if !self.log_headers {
            return;
        }
        for (key, log) in [
            ("grpc-timeout", &self.stats.grpc_timeouts),
            ("x-request-id", &self.stats.request_ids),
            ("traceparent", &self.stats.traceparents),
        ] {
            if let Some(v) = request.metadata().get(key) {
                if let (Ok(v), Ok(mut all)) = (v.to_str(), log.lock()) {
                    if all.len() == HEADER_LOG {
                        all.pop_front();
                    }
                    all.push_back(v.to_owned());
                }
            }
        }
    }

    /// A hanging service never gets past this (its calls stay open until
    /// their client goes away).
    async fn hang_if_asked(&self) {
        if self.hang {
            self.stats.hung.fetch_add(1, Ordering::Relaxed);
            let _guard = CancelGuard {
                stats: &self.stats,
                done: false,
            };
            std::future::pending::<()>().await;
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
        self.hang_if_asked().await;
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        if let Some((code, pushback)) = self.say_error {
            let mut status =
                Status::new(code, format!("this node answers every Say with {code:?}"));
            if let Some(p) = pushback {
                if let Ok(v) = p.as_millis().to_string().parse() {
                    status.metadata_mut().insert("grpc-retry-pushback-ms", v);
                }
            }
            return Err(status);
        }
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
        let _running = self.gauge.as_ref().map(|g| g.enter());
        let _permit = match &self.capacity {
            Some(capacity) => Some(
                capacity
                    .acquire()
                    .await
                    .map_err(|_| Status::internal("the Slow capacity is closed"))?,
            ),
            None => None,
        };
        tokio::time::sleep(delay + self.slow_delay).await;
        guard.done = true;
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        Ok(self.reply(message))
    }

    type CountStream = ReplyStream;

    async fn count(&self, request: Request<CountRequest>) -> Result<Response<ReplyStream>, Status> {
        self.seen(&request);
        self.hang_if_asked().await;
        let CountRequest {
            message,
            n,
            interval_ms,
        } = request.into_inner();
        let interval = Duration::from_millis(interval_ms);
        if n > MAX_COUNT || interval > MAX_SLOW_DELAY {
            return Err(Status::invalid_argument(format!(
                "n {n} or interval_ms {interval_ms} is above the maximum of {MAX_COUNT} \
                 replies {} ms apart",
                MAX_SLOW_DELAY.as_millis()
            )));
        }
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        let node_id = self.node_id.clone();
        let replies = futures_util::stream::unfold(1..=n, move |mut left| {
            let (message, node_id) = (message.clone(), node_id.clone());
            async move {
                let i = left.next()?;
                if i > 1 {
                    tokio::time::sleep(interval).await;
                }
                let reply = SayReply {
                    message: format!("{message} {i}"),
                    node_id: node_id.to_string(),
                };
                Some((Ok(reply), left))
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        request: Request<Streaming<SayRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.seen(&request);
        let (stats, node_id) = (self.stats.clone(), self.node_id.clone());
        let replies = request.into_inner().map(move |said| {
            let said = said?;
            stats.processed.fetch_add(1, Ordering::Relaxed);
            Ok(SayReply {
                message: said.message,
                node_id: node_id.to_string(),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<SayReply>, Status> {
        self.seen(&request);
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        let pushback = request.metadata().get(PUSHBACK_HOOK).cloned();
        let FailRequest { code, message } = request.into_inner();
        let code = Code::from_i32(code);
        if code == Code::Ok {
            return Ok(self.reply(message));
        }
        let mut status = Status::new(code, message);
        if let Some(p) = pushback {
            status.metadata_mut().insert("grpc-retry-pushback-ms", p);
        }
        Err(status)
    }
}
