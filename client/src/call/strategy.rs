//! The strategies: how one call becomes attempts on nodes.
//!
//! Each runs as a plain future (no actor state): it asks the picker for nodes,
//! runs attempts on their connections and decides from each status whether to
//! go on. When the service's adaptive throttle is on, it decides every
//! attempt first: a refused first attempt ends the call with `UNAVAILABLE`
//! and no attempt, a refused extra attempt ends it as a spent budget does,
//! and each answer is counted for it. Extra attempts draw from the service's
//! [`RetryBudget`]; no
//! attempt starts after the deadline, and each carries what is left of it as
//! `grpc-timeout`, or its attempt timeout when that is shorter. An attempt
//! that outlives its attempt timeout is cancelled: it ends as
//! `DEADLINE_EXCEEDED`, strategies that retry move on from it, and its node is
//! told (ejection counts it as a failure).

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use registry_actor::Backoff;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tracing::Instrument;

use super::error::CallError;
use super::messages::{Attempt, BroadcastReply, Completion, NodeResult, Reply};
use super::rpc::Rpc;
use super::service::Service;
use super::status::{grpc_timeout, pushback};
use crate::connection::HomeKey;
use crate::observe::CallObserver;
use crate::picker::{Attach, Fast, PushedBack, WaitDiscovered, WaitNodes};
use crate::policy::CodeSet;
use crate::{Error, HashKey, Method, NodeHandle, Picked, Selector};

/// Everything a strategy needs to run one call of `method`.
pub(crate) struct Plan<Req, Resp, M = Method<Req, Resp>> {
    pub(crate) service: Arc<Service>,
    pub(crate) method: M,
    /// Copied for each attempt but the last, which takes it (with `metadata`).
    pub(crate) request: Option<Req>,
    pub(crate) metadata: MetadataMap,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    /// The bound of each attempt within the deadline.
    pub(crate) attempt_timeout: Option<Duration>,
    /// Boxed: rarely set, and the plan lives in every call's future.
    pub(crate) selector: Option<Box<Selector>>,
    pub(crate) hash_key: Option<HashKey>,
    pub(crate) retries: u32,
    pub(crate) retry_codes: CodeSet,
    /// The `hedging` strategy's settings.
    pub(crate) hedging: crate::Hedging,
    pub(crate) backoff: Backoff,
    /// The runtime the call's channels run on.
    pub(crate) home: HomeKey,
    pub(crate) _types: std::marker::PhantomData<fn(Req) -> Resp>,
    /// The call's span, events and metrics.
    pub(crate) observer: CallObserver,
}

/// How much earlier than the call's deadline tonic's channel may end an
/// attempt: the `grpc-timeout` it enforces is rounded down to its unit.
const DEADLINE_SLACK: Duration = Duration::from_millis(1);

/// The outcome of one attempt.
pub(super) struct Tried<Resp> {
    pub(super) attempt: Attempt,
    pub(super) picked: Picked,
    pub(super) result: Result<tonic::Response<Resp>, Status>,
    /// Whether the attempt timeout (not the call's deadline) ended it.
    pub(super) timed_out: bool,
}

impl<Req, Resp, M> Plan<Req, Resp, M>
where
    Req: Clone + Send + 'static,
    Resp: Send + 'static,
    M: Rpc<Req, Resp>,
{
    pub(super) fn failed(&self, status: Status, attempts: Vec<Attempt>) -> CallError {
        CallError::status(&self.service.name, status, attempts)
    }

    fn picker_gone(&self, e: actix::MailboxError) -> Error {
        Error::picker_gone(self.service.name.clone(), e)
    }

    /// The request of one attempt, copied.
    pub(super) fn copy(&self) -> Option<(Req, MetadataMap)> {
        let request = self.request.clone()?;
        Some((request, self.metadata.clone()))
    }

    /// The request of the call's last attempt, moved out.
    fn take(&mut self) -> Option<(Req, MetadataMap)> {
        let request = self.request.take()?;
        Some((request, std::mem::take(&mut self.metadata)))
    }

    /// The request of attempt `n` of a retrying strategy: moved out for the
    /// last one it may make, copied before.
    fn request_for(&mut self, n: u32) -> Option<(Req, MetadataMap)> {
        if n == self.retries {
            self.take()
        } else {
            self.copy()
        }
    }

    pub(super) fn pick_error(
        &self,
        err: Error,
        attempts: Vec<Attempt>,
        last: Option<Status>,
    ) -> CallError {
        // Having tried every node, the last node's answer is the one that matters.
        if let Some(status) = last {
            return self.failed(status, attempts);
        }
        CallError::pick(&self.service.name, err, attempts)
    }

    fn deadline_status(&self) -> Status {
        let timeout = self.deadline.saturating_duration_since(self.started);
        Status::deadline_exceeded(format!("deadline of {timeout:?} passed"))
    }

    pub(super) fn deadline_error(&self, attempts: Vec<Attempt>) -> CallError {
        let timeout = self.deadline.saturating_duration_since(self.started);
        CallError::deadline(&self.service.name, timeout, attempts)
    }

    /// Picks a node from the service's published snapshot, without a message
    /// when it can: the actor is asked only before the first node set, or to
    /// connect a node picked for the first time on this call's runtime.
    pub(super) async fn pick(&self, exclude: &[Picked]) -> Result<Picked, Error> {
        let handles: Vec<NodeHandle> = exclude.iter().map(Picked::handle).collect();
        let shared = &self.service.shared;
        let key = self.home.key();
        let fast = self
            .when_nodes(|| shared.pick(self.selector.as_deref(), &handles, self.hash_key, key))
            .await?;
        match fast {
            Fast::Done(result) => result,
            Fast::Attach(picked) => {
                Box::pin(self.attach(vec![picked]))
                    .await
                    .and_then(|mut all| {
                        all.pop().ok_or_else(|| Error::NoNodes {
                            service: self.service.name.clone(),
                        })
                    })
            }
            Fast::Wait => Err(Error::NoNodes {
                service: self.service.name.clone(),
            }),
        }
    }

    /// Asks the picker actor to connect `picked` on this call's runtime.
    async fn attach(&self, picked: Vec<Picked>) -> Result<Vec<Picked>, Error> {
        let attach = Attach {
            picked,
            home: self.home.home(),
        };
        self.service
            .picker
            .send(attach)
            .await
            .map_err(|e| self.picker_gone(e))
    }

    /// Waits (through the picker actor) for the service's first node set.
    async fn wait_discovered(&self) -> Result<(), Error> {
        match self.service.picker.send(WaitDiscovered).await {
            Ok(result) => result,
            Err(e) => Err(self.picker_gone(e)),
        }
    }

    /// Runs `pick` on the published snapshot, waiting (through the picker
    /// actor) first for the service's first node set and then, while the set is
    /// empty, for a node: within the call's deadline and the discovery timeout.
    async fn when_nodes<T>(&self, pick: impl Fn() -> Fast<T>) -> Result<Fast<T>, Error> {
        let mut fast = pick();
        if let Fast::Wait = fast {
            // Boxed, as the other messages: rare, and they would make every
            // call's future larger.
            Box::pin(self.wait_discovered()).await?;
            fast = pick();
        }
        if let Fast::Done(Err(Error::NoNodes { .. })) = fast {
            let within = self.deadline.saturating_duration_since(Instant::now());
            Box::pin(self.service.picker.send(WaitNodes { within }))
                .await
                .map_err(|e| self.picker_gone(e))?;
            fast = pick();
        }
        Ok(fast)
    }

    /// Every node matching the call's selector, as [`pick`](Self::pick) does.
    async fn pick_all(&self) -> Result<Vec<Picked>, Error> {
        let shared = &self.service.shared;
        let key = self.home.key();
        let fast = self
            .when_nodes(|| shared.pick_all(self.selector.as_deref(), key))
            .await?;
        match fast {
            Fast::Done(result) => result,
            Fast::Attach(all) => Box::pin(self.attach(all)).await,
            Fast::Wait => Err(Error::NoNodes {
                service: self.service.name.clone(),
            }),
        }
    }

    /// One attempt on `picked` with `request` (from [`copy`](Self::copy) or
    /// [`take`](Self::take)), bounded by the deadline. `None` when the deadline
    /// had already passed (no attempt is started then).
    ///
    /// A combinator rather than an `async fn`: its future holds the attempt's
    /// and nothing else (an `async fn` would also keep `picked` and `request`
    /// as they were passed in).
    pub(super) fn attempt(
        &self,
        picked: Picked,
        request: Option<(Req, MetadataMap)>,
    ) -> impl Future<Output = Option<Tried<Resp>>> + '_ {
        self.attempt_within(picked, request, true).map(|tried| {
            if let (Some(t), Some(throttle)) = (&tried, &*self.service.throttle.load()) {
                throttle.answered(t.attempt.code, std::time::Instant::now());
            }
            tried
        })
    }

    /// One attempt, as [`attempt`](Self::attempt) makes it; bounded by a timer
    /// of its own when `timed`, else only by the `grpc-timeout` it carries
    /// (for a caller that bounds a whole fan-out with one timer).
    async fn attempt_within(
        &self,
        picked: Picked,
        request: Option<(Req, MetadataMap)>,
        timed: bool,
    ) -> Option<Tried<Resp>> {
        let now = Instant::now();
        if now >= self.deadline {
            return None;
        }
        let mut picked = picked;
        let observer = self.observer.attempt(picked.node());
        let connection = picked.take_connection();
        let request_missing = request.is_none();
        let (Some(connection), Some((message, metadata))) = (connection, request) else {
            let status = if request_missing {
                Status::internal("the call's request was already sent by its last attempt")
            } else {
                Status::unavailable(format!("node {} has no usable connection", picked.node()))
            };
            observer.finish(status.code());
            return Some(Tried {
                attempt: Attempt {
                    node: picked.node_ref().clone(),
                    code: status.code(),
                    latency: now.elapsed(),
                },
                picked,
                result: Err(status),
                timed_out: false,
            });
        };
        // The attempt's own end: the call's deadline, or sooner its timeout.
        let (until, bounded) = match self.attempt_timeout {
            Some(t) if now + t < self.deadline => (now + t, true),
            _ => (self.deadline, false),
        };
        let mut request = self
            .method
            .request(message, metadata, grpc_timeout(until - now));
        observer.inject(request.metadata_mut());
        // The attempt runs in this task: timing out drops it, which cancels the RPC.
        // Boxed: the RPC's future is large, and the attempt's future is moved
        // into its strategy's as each attempt starts.
        let rpc = Box::pin(
            self.method
                .send(&connection, request)
                .instrument(observer.span().clone()),
        );
        // A fan-out bounds its attempts with one timer of its own, unless an
        // attempt has a shorter end.
        let answer = if timed || bounded {
            tokio::time::timeout_at(until, rpc).await
        } else {
            Ok(rpc.await)
        };
        let result = match answer {
            // The server and tonic's channel enforce the same end (both
            // answer CANCELLED when it passes, the channel up to the
            // `grpc-timeout` precision early): at the end, the end is what
            // ended it.
            Ok(Err(_)) if Instant::now() + DEADLINE_SLACK >= until => Err(None),
            Ok(result) => result.map_err(Some),
            Err(_) => Err(None),
        };
        let timed_out = bounded && matches!(result, Err(None));
        let result = result.map_err(|status| match status {
            Some(status) => status,
            None if bounded => {
                let timeout = until - now;
                connection.timed_out(timeout);
                Status::deadline_exceeded(format!(
                    "attempt timeout of {timeout:?} passed on node {}",
                    picked.node()
                ))
            }
            None => self.deadline_status(),
        });
        let attempt = Attempt {
            node: picked.node_ref().clone(),
            code: result.as_ref().map_or_else(Status::code, |_| Code::Ok),
            latency: now.elapsed(),
        };
        observer.finish(attempt.code);
        Some(Tried {
            attempt,
            picked,
            result,
            timed_out,
        })
    }

    pub(super) fn reply(
        &self,
        picked: Picked,
        response: tonic::Response<Resp>,
        attempts: Vec<Attempt>,
    ) -> Reply<Resp> {
        let (metadata, message, _) = response.into_parts();
        Reply {
            message,
            metadata,
            node: picked.into_node_ref(),
            attempts,
            latency: self.started.elapsed(),
        }
    }

    /// Keeps `picked` out of the service's picks while the positive pushback
    /// of `status` lasts; answers the pushback. The picker has published the
    /// change when this returns, so no later pick of any call takes the node.
    pub(super) async fn honour_pushback(
        &self,
        picked: &Picked,
        status: &Status,
    ) -> Option<Duration> {
        let wait = pushback(status).flatten().filter(|w| !w.is_zero())?;
        let paused = PushedBack {
            node: picked.handle(),
            wait,
        };
        // A picker gone only loses the pause: the call goes on without it.
        let _ = Box::pin(self.service.picker.send(paused)).await;
        Some(wait)
    }

    /// Whether the request may be sent again (a channel request whose body
    /// outgrew its replay buffer may not).
    pub(super) fn may_resend(&self) -> bool {
        self.request
            .as_ref()
            .is_none_or(|r| self.method.resendable(r))
    }

    /// Takes a token for an extra attempt, when the adaptive throttle lets it
    /// be made; a refusal is counted and said.
    pub(super) fn withdraw(&self) -> bool {
        if !self.throttle_admits() {
            return false;
        }
        let granted = self
            .service
            .budget
            .load()
            .try_withdraw(std::time::Instant::now());
        if !granted {
            self.service.metrics.budget_exhausted();
            self.observer.budget_refused();
        }
        granted
    }

    /// Starts a call: its first attempt, when the adaptive throttle lets it
    /// be made, adds its share to the retry budget; a refused one ends the
    /// call with `UNAVAILABLE` and no attempt.
    pub(super) fn deposit(&self) -> Result<(), CallError> {
        if !self.throttle_admits() {
            let status = Status::unavailable(
                "throttled by the client: the service refuses most of what it is sent",
            );
            return Err(self.failed(status, Vec::new()));
        }
        self.service.budget.load().deposit();
        Ok(())
    }

    /// Whether the service's adaptive throttle (when on) lets an attempt be
    /// made; a refusal is counted.
    fn throttle_admits(&self) -> bool {
        let Some(throttle) = &*self.service.throttle.load() else {
            return true;
        };
        let admitted = throttle.admit(std::time::Instant::now());
        if !admitted {
            self.service.metrics.throttled();
        }
        admitted
    }

    /// One attempt, its status final.
    pub(crate) async fn failfast(mut self) -> Result<Reply<Resp>, CallError> {
        self.deposit()?;
        let picked = match self.pick(&[]).await {
            Ok(p) => p,
            Err(e) => return Err(self.pick_error(e, Vec::new(), None)),
        };
        let request = self.take();
        let Some(tried) = self.attempt(picked, request).await else {
            return Err(self.deadline_error(Vec::new()));
        };
        match tried.result {
            Ok(response) => Ok(self.reply(tried.picked, response, vec![tried.attempt])),
            Err(status) => Err(self.failed(status, vec![tried.attempt])),
        }
    }

    /// Retries on nodes not yet tried, for retryable codes. A node that asked
    /// for a pushback is not picked again, by any call, until it has passed.
    pub(crate) async fn failover(mut self) -> Result<Reply<Resp>, CallError> {
        self.deposit()?;
        let mut tried: Vec<Picked> = Vec::new();
        let mut attempts = Vec::new();
        let mut last: Option<Status> = None;
        let mut refused = false;
        for n in 0..=self.retries {
            if n > 0 && !self.withdraw() {
                refused = true;
                break;
            }
            let picked = match self.pick(&tried).await {
                Ok(p) => p,
                Err(e) => return Err(self.pick_error(e, attempts, last)),
            };
            let request = self.request_for(n);
            let Some(t) = self.attempt(picked, request).await else {
                return Err(self.deadline_error(attempts));
            };
            attempts.push(t.attempt);
            match t.result {
                Ok(response) => return Ok(self.reply(t.picked, response, attempts)),
                Err(status) => {
                    let retry =
                        (t.timed_out || self.retryable(&status).is_some()) && self.may_resend();
                    let wait = self.honour_pushback(&t.picked, &status).await;
                    self.decided(retry && n < self.retries, &t.picked, &status, wait);
                    tried.push(t.picked);
                    last = Some(status);
                    if !retry {
                        break;
                    }
                }
            }
        }
        let status = last.unwrap_or_else(|| Status::unavailable("no attempt was made"));
        Err(self.failed(status, attempts).with_budget_exhausted(refused))
    }

    /// Retries on the same node, waiting the backoff (or the server's pushback,
    /// when longer) between attempts.
    pub(crate) async fn failretry(mut self) -> Result<Reply<Resp>, CallError> {
        self.deposit()?;
        let picked = match self.pick(&[]).await {
            Ok(p) => p,
            Err(e) => return Err(self.pick_error(e, Vec::new(), None)),
        };
        let mut attempts = Vec::new();
        let mut last: Option<Status> = None;
        let mut refused = false;
        for n in 0..=self.retries {
            if n > 0 {
                let wait = last
                    .as_ref()
                    .and_then(|s| self.retryable(s))
                    .unwrap_or_default();
                let wait = wait.max(self.backoff.next_delay());
                if Instant::now() + wait >= self.deadline {
                    break;
                }
                if !self.withdraw() {
                    refused = true;
                    break;
                }
                tokio::time::sleep(wait).await;
            }
            let request = self.request_for(n);
            let Some(t) = self.attempt(picked.clone(), request).await else {
                return Err(self.deadline_error(attempts));
            };
            attempts.push(t.attempt);
            match t.result {
                Ok(response) => return Ok(self.reply(t.picked, response, attempts)),
                Err(status) => {
                    let retry =
                        (t.timed_out || self.retryable(&status).is_some()) && self.may_resend();
                    self.decided(retry && n < self.retries, &t.picked, &status, None);
                    last = Some(status);
                    if !retry {
                        break;
                    }
                }
            }
        }
        let status = last.unwrap_or_else(|| Status::unavailable("no attempt was made"));
        Err(self.failed(status, attempts).with_budget_exhausted(refused))
    }

    /// The same call on `k` distinct nodes at once; the first success wins and
    /// the rest are cancelled (their guards dropped).
    pub(crate) async fn forking(self, k: u32) -> Result<Reply<Resp>, CallError> {
        self.deposit()?;
        let mut picks: Vec<Picked> = Vec::new();
        for n in 0..k.max(1) {
            if n > 0 && !self.withdraw() {
                break;
            }
            match self.pick(&picks).await {
                Ok(p) => picks.push(p),
                Err(e) if picks.is_empty() => return Err(self.pick_error(e, Vec::new(), None)),
                Err(_) => break,
            }
        }
        let mut running: FuturesUnordered<_> = picks
            .into_iter()
            .map(|p| self.attempt(p, self.copy()))
            .collect();
        let mut attempts = Vec::new();
        let mut last = None;
        while let Some(outcome) = running.next().await {
            let Some(t) = outcome else { continue };
            attempts.push(t.attempt);
            match t.result {
                // Returning drops `running`: every other attempt is cancelled.
                Ok(response) => return Ok(self.reply(t.picked, response, attempts)),
                Err(status) => last = Some(status),
            }
        }
        match last {
            Some(status) => Err(self.failed(status, attempts)),
            None => Err(self.deadline_error(attempts)),
        }
    }

    /// Every matching node in parallel, until the completion rule holds or the
    /// deadline passes; the nodes still running then are cancelled and listed
    /// as `CANCELLED`.
    pub(crate) async fn broadcast(
        self,
        completion: Completion,
    ) -> Result<BroadcastReply<Resp>, CallError> {
        let nodes = match self.pick_all().await {
            Ok(nodes) => nodes,
            Err(e) => return Err(self.pick_error(e, Vec::new(), None)),
        };
        let total = nodes.len();
        let needed = match completion {
            Completion::All => total,
            Completion::Quorum(k) => k.min(total),
            Completion::FirstSuccess => 1.min(total),
        };
        let mut pending: Vec<Picked> = nodes.clone();
        // One timer for the whole fan-out: at the deadline the attempts still
        // running are dropped (cancelled) and listed below.
        // Each attempt is started, and its connection's task let run, before
        // the next is made: the first request leaves as the fan-out begins,
        // and its node works while the others are being sent. (Started all
        // before any leaves, the fan-out's last answer comes later by the
        // time it takes to make them.) Attempts that end at once wait in
        // `early`.
        let mut running = FuturesUnordered::new();
        let mut early = Vec::new();
        for p in nodes {
            running.push(self.attempt_within(p, self.copy(), false));
            std::future::poll_fn(|cx| {
                while let Poll::Ready(Some(outcome)) = running.poll_next_unpin(cx) {
                    early.push(outcome);
                }
                Poll::Ready(())
            })
            .await;
            tokio::task::yield_now().await;
        }
        let deadline = tokio::time::sleep_until(self.deadline);
        tokio::pin!(deadline);
        let mut results: Vec<NodeResult<Resp>> = Vec::with_capacity(total);
        let (mut ok, mut failed) = (0usize, 0usize);
        let complete = loop {
            let done = match completion {
                Completion::All => ok + failed == total,
                Completion::Quorum(_) | Completion::FirstSuccess => {
                    ok >= needed || total - failed < needed
                }
            };
            if done {
                break ok >= needed;
            }
            let next = match early.pop() {
                Some(outcome) => Some(outcome),
                None => tokio::select! {
                    biased;
                    next = running.next() => next,
                    () = &mut deadline => break ok >= needed,
                },
            };
            let Some(outcome) = next else {
                break ok >= needed;
            };
            let Some(t) = outcome else { continue };
            pending.retain(|p| p.handle() != t.picked.handle());
            if t.result.is_ok() {
                ok += 1;
            } else {
                failed += 1;
            }
            results.push(NodeResult {
                node: t.picked.node_ref().clone(),
                result: t.result.map(tonic::Response::into_inner),
                latency: t.attempt.latency,
            });
        };
        drop(running);
        let latency = self.started.elapsed();
        for p in pending {
            let status = if Instant::now() >= self.deadline {
                Status::deadline_exceeded("the broadcast deadline passed first")
            } else {
                Status::cancelled("the broadcast completed without this node")
            };
            results.push(NodeResult {
                node: p.node_ref().clone(),
                result: Err(status),
                latency,
            });
        }
        results.sort_by(|a, b| a.node.id().cmp(b.node.id()));
        Ok(BroadcastReply {
            nodes: results,
            complete: complete || (total == 0 && needed == 0),
            latency,
        })
    }

    /// Says whether the call tries again after `status` from `picked`.
    fn decided(&self, retry: bool, picked: &Picked, status: &Status, wait: Option<Duration>) {
        if retry {
            self.observer
                .retrying(picked.node(), status, wait.unwrap_or_default());
        } else {
            self.observer.giving_up(picked.node(), status);
        }
    }

    /// Whether `status` may be retried, and the least wait before it:
    /// configured codes retry at once; `RESOURCE_EXHAUSTED` retries after the
    /// server's pushback, and not at all when the pushback says so.
    fn retryable(&self, status: &Status) -> Option<Duration> {
        match pushback(status) {
            Some(None) => return None,
            Some(Some(wait)) if status.code() == Code::ResourceExhausted => return Some(wait),
            _ => {}
        }
        if status.code() == Code::ResourceExhausted || self.retry_codes.contains(status.code()) {
            return Some(Duration::ZERO);
        }
        None
    }
}
