//! The strategies: how one call becomes attempts on nodes.
//!
//! Each runs as a plain future (no actor state): it asks the picker for nodes,
//! runs attempts on their connections and decides from each status whether to
//! go on. Extra attempts draw from the service's [`RetryBudget`]; no
//! attempt starts after the deadline, and each carries what is left of it as
//! `grpc-timeout`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::stream::{FuturesUnordered, StreamExt};
use registry_actor::Backoff;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use super::error::CallError;
use super::messages::{Attempt, BroadcastReply, Completion, NodeResult, Reply};
use crate::budget::RetryBudget;
use crate::{Error, HashKey, Method, Pick, PickAll, Picked, PickerActor, Selector};

/// The metadata key of a server's retry pushback, in milliseconds (gRFC A6).
pub const RETRY_PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";

/// Everything a strategy needs to run one call.
pub(crate) struct Plan<Req, Resp> {
    pub(crate) service: Arc<str>,
    pub(crate) picker: Addr<PickerActor>,
    pub(crate) budget: Rc<RefCell<RetryBudget>>,
    pub(crate) method: Method<Req, Resp>,
    pub(crate) request: Req,
    pub(crate) metadata: MetadataMap,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    pub(crate) selector: Option<Selector>,
    pub(crate) hash_key: Option<HashKey>,
    pub(crate) retries: u32,
    pub(crate) retry_codes: Arc<[Code]>,
    pub(crate) backoff: Backoff,
}

/// The outcome of one attempt.
struct Tried<Resp> {
    attempt: Attempt,
    picked: Picked,
    result: Result<tonic::Response<Resp>, Status>,
}

/// The server's pushback: `None` when absent, `Some(None)` when it says "do not
/// retry" (negative or unparsable, per gRFC A6), `Some(Some(d))` to wait `d`.
pub(crate) fn pushback(status: &Status) -> Option<Option<Duration>> {
    let value = status.metadata().get(RETRY_PUSHBACK_KEY)?;
    let ms = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok());
    Some(
        ms.and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis),
    )
}

impl<Req, Resp> Plan<Req, Resp>
where
    Req: prost::Message + Clone + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    fn error(&self, code: Code, message: impl Into<String>, attempts: Vec<Attempt>) -> CallError {
        CallError::new(&self.service, code, message, attempts)
    }

    fn pick_error(&self, err: &Error, attempts: Vec<Attempt>, last: Option<&Status>) -> CallError {
        // Having tried every node, the last node's answer is the one that matters.
        if let Some(status) = last {
            return CallError::from_status(&self.service, status, attempts);
        }
        self.error(err.code(), err.to_string(), attempts)
    }

    fn deadline_status(&self) -> Status {
        let timeout = self.deadline.saturating_duration_since(self.started);
        Status::deadline_exceeded(format!("deadline of {timeout:?} passed"))
    }

    fn deadline_error(&self, attempts: Vec<Attempt>) -> CallError {
        let timeout = self.deadline.saturating_duration_since(self.started);
        self.error(
            Code::DeadlineExceeded,
            format!("deadline of {timeout:?} passed"),
            attempts,
        )
    }

    async fn pick(&self, exclude: &[Picked]) -> Result<Picked, Error> {
        let mut pick = Pick::new().excluding(exclude.iter().map(Picked::handle));
        pick.selector = self.selector.clone();
        pick.hash_key = self.hash_key;
        match self.picker.send(pick).await {
            Ok(result) => result,
            Err(e) => Err(Error::picker_gone(self.service.clone(), e)),
        }
    }

    /// One attempt on `picked`, bounded by the deadline. `None` when the deadline
    /// had already passed (no attempt is started then).
    async fn attempt(&self, picked: Picked) -> Option<Tried<Resp>> {
        let now = Instant::now();
        if now >= self.deadline {
            return None;
        }
        let remaining = self.deadline - now;
        let mut request = tonic::Request::new(self.request.clone());
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(remaining);
        let Some(connection) = picked.connection().cloned() else {
            let status =
                Status::unavailable(format!("node {} has no usable connection", picked.node()));
            return Some(Tried {
                attempt: Attempt {
                    node: picked.node().id().to_owned(),
                    addr: picked.node().addr().to_owned(),
                    code: status.code(),
                    latency: now.elapsed(),
                },
                picked,
                result: Err(status),
            });
        };
        // The attempt runs in this task: timing out drops it, which cancels the RPC.
        let result =
            match tokio::time::timeout_at(self.deadline, connection.call(&self.method, request))
                .await
            {
                // The server enforces the same deadline (tonic answers CANCELLED when
                // it expires): past the deadline, the deadline is what ended it.
                Ok(Err(status)) if Instant::now() >= self.deadline && status.code() != Code::Ok => {
                    Err(self.deadline_status())
                }
                Ok(result) => result,
                Err(_) => Err(self.deadline_status()),
            };
        let attempt = Attempt {
            node: picked.node().id().to_owned(),
            addr: picked.node().addr().to_owned(),
            code: result.as_ref().map_or_else(Status::code, |_| Code::Ok),
            latency: now.elapsed(),
        };
        Some(Tried {
            attempt,
            picked,
            result,
        })
    }

    fn reply(
        &self,
        picked: &Picked,
        response: tonic::Response<Resp>,
        attempts: Vec<Attempt>,
    ) -> Reply<Resp> {
        let (metadata, message, _) = response.into_parts();
        Reply {
            message,
            metadata,
            node: picked.node().clone(),
            attempts,
            latency: self.started.elapsed(),
        }
    }

    /// Takes a token for an extra attempt.
    fn withdraw(&self) -> bool {
        self.budget
            .borrow_mut()
            .try_withdraw(std::time::Instant::now())
    }

    /// One attempt, its status final.
    pub(crate) async fn failfast(self) -> Result<Reply<Resp>, CallError> {
        self.budget.borrow_mut().deposit();
        let picked = self
            .pick(&[])
            .await
            .map_err(|e| self.pick_error(&e, Vec::new(), None))?;
        let Some(tried) = self.attempt(picked).await else {
            return Err(self.deadline_error(Vec::new()));
        };
        match tried.result {
            Ok(response) => Ok(self.reply(&tried.picked, response, vec![tried.attempt])),
            Err(status) => Err(CallError::from_status(
                &self.service,
                &status,
                vec![tried.attempt],
            )),
        }
    }

    /// Retries on nodes not yet tried, for retryable codes.
    pub(crate) async fn failover(self) -> Result<Reply<Resp>, CallError> {
        self.budget.borrow_mut().deposit();
        let mut tried: Vec<Picked> = Vec::new();
        let mut attempts = Vec::new();
        let mut last: Option<Status> = None;
        for n in 0..=self.retries {
            if n > 0 && !self.withdraw() {
                break;
            }
            let picked = match self.pick(&tried).await {
                Ok(p) => p,
                Err(e) => return Err(self.pick_error(&e, attempts, last.as_ref())),
            };
            let Some(t) = self.attempt(picked).await else {
                return Err(self.deadline_error(attempts));
            };
            attempts.push(t.attempt);
            match t.result {
                Ok(response) => return Ok(self.reply(&t.picked, response, attempts)),
                Err(status) => {
                    let retry = self.retryable(&status).is_some();
                    tried.push(t.picked);
                    last = Some(status);
                    if !retry {
                        break;
                    }
                }
            }
        }
        let status = last.unwrap_or_else(|| Status::unavailable("no attempt was made"));
        Err(CallError::from_status(&self.service, &status, attempts))
    }

    /// Retries on the same node, waiting the backoff (or the server's pushback,
    /// when longer) between attempts.
    pub(crate) async fn failretry(mut self) -> Result<Reply<Resp>, CallError> {
        self.budget.borrow_mut().deposit();
        let picked = self
            .pick(&[])
            .await
            .map_err(|e| self.pick_error(&e, Vec::new(), None))?;
        let mut attempts = Vec::new();
        let mut last: Option<Status> = None;
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
                    break;
                }
                tokio::time::sleep(wait).await;
            }
            let Some(t) = self.attempt(picked.clone()).await else {
                return Err(self.deadline_error(attempts));
            };
            attempts.push(t.attempt);
            match t.result {
                Ok(response) => return Ok(self.reply(&t.picked, response, attempts)),
                Err(status) => {
                    let retry = self.retryable(&status).is_some();
                    last = Some(status);
                    if !retry {
                        break;
                    }
                }
            }
        }
        let status = last.unwrap_or_else(|| Status::unavailable("no attempt was made"));
        Err(CallError::from_status(&self.service, &status, attempts))
    }

    /// The same call on `k` distinct nodes at once; the first success wins and
    /// the rest are cancelled (their guards dropped).
    pub(crate) async fn forking(self, k: u32) -> Result<Reply<Resp>, CallError> {
        self.budget.borrow_mut().deposit();
        let mut picks: Vec<Picked> = Vec::new();
        for n in 0..k.max(1) {
            if n > 0 && !self.withdraw() {
                break;
            }
            match self.pick(&picks).await {
                Ok(p) => picks.push(p),
                Err(e) if picks.is_empty() => return Err(self.pick_error(&e, Vec::new(), None)),
                Err(_) => break,
            }
        }
        let mut running: FuturesUnordered<_> = picks.into_iter().map(|p| self.attempt(p)).collect();
        let mut attempts = Vec::new();
        let mut last = None;
        while let Some(outcome) = running.next().await {
            let Some(t) = outcome else { continue };
            attempts.push(t.attempt);
            match t.result {
                // Returning drops `running`: every other attempt is cancelled.
                Ok(response) => return Ok(self.reply(&t.picked, response, attempts)),
                Err(status) => last = Some(status),
            }
        }
        match last {
            Some(status) => Err(CallError::from_status(&self.service, &status, attempts)),
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
        let mut picker = PickAll::new();
        picker.selector = self.selector.clone();
        let nodes = match self.picker.send(picker).await {
            Ok(Ok(nodes)) => nodes,
            Ok(Err(e)) => return Err(self.pick_error(&e, Vec::new(), None)),
            Err(e) => {
                return Err(self.pick_error(
                    &Error::picker_gone(self.service.clone(), e),
                    Vec::new(),
                    None,
                ))
            }
        };
        let total = nodes.len();
        let needed = match completion {
            Completion::All => total,
            Completion::Quorum(k) => k.min(total),
            Completion::FirstSuccess => 1.min(total),
        };
        let mut pending: Vec<Picked> = nodes.clone();
        let mut running: FuturesUnordered<_> = nodes.into_iter().map(|p| self.attempt(p)).collect();
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
            let Some(outcome) = running.next().await else {
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
                node: t.picked.node().clone(),
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
                node: p.node().clone(),
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

    /// Whether `status` may be retried, and the least wait before it:
    /// configured codes retry at once; `RESOURCE_EXHAUSTED` retries after the
    /// server's pushback, and not at all when the pushback says so.
    fn retryable(&self, status: &Status) -> Option<Duration> {
        match pushback(status) {
            Some(None) => return None,
            Some(Some(wait)) if status.code() == Code::ResourceExhausted => return Some(wait),
            _ => {}
        }
        if status.code() == Code::ResourceExhausted || self.retry_codes.contains(&status.code()) {
            return Some(Duration::ZERO);
        }
        None
    }
}
