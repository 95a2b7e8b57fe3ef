//! The `hedging` strategy (gRFC A6): the same call on a new node every
//! `hedging_delay`, the first success or fatal answer winning.
//!
//! A first attempt starts at once; while none has answered, another starts
//! on a node not yet tried every `hedging_delay`, up to `max_attempts` in all,
//! each drawing a token from the retry budget (no token: no more hedges). An
//! answer with a non-fatal code, or an attempt timeout, lets the others run
//! and starts the next hedge at once; a positive pushback delays the next
//! hedge by that much (and keeps the node out of picks meanwhile), a negative
//! one stops further hedges. The first success or fatal answer ends the call,
//! and dropping the attempts still running cancels them.

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tonic::Status;

use super::error::CallError;
use super::messages::Reply;
use super::rpc::Rpc;
use super::status::pushback;
use super::strategy::Plan;
use crate::Picked;

impl<Req, Resp, M> Plan<Req, Resp, M>
where
    Req: Clone + Send + 'static,
    Resp: Send + 'static,
    M: Rpc<Req, Resp>,
{
    /// Runs the call by the hedging strategy.
    pub(crate) async fn hedging(self) -> Result<Reply<Resp>, CallError> {
        self.deposit()?;
        let delay = self.hedging.delay();
        let max = self.hedging.max_attempts().max(1) as usize;
        let mut tried: Vec<Picked> = Vec::new();
        let mut running = FuturesUnordered::new();
        let mut attempts = Vec::new();
        let mut last: Option<Status> = None;
        let mut refused = false;
        // Whether another attempt may start, and when.
        let mut more = true;
        let mut next_at = Instant::now();
        loop {
            if more && Instant::now() >= next_at {
                if Instant::now() >= self.deadline || (!tried.is_empty() && !self.may_resend()) {
                    more = false;
                } else if !tried.is_empty() && !self.withdraw() {
                    refused = true;
                    more = false;
                } else {
                    match self.pick(&tried).await {
                        Ok(picked) => {
                            tried.push(picked.clone());
                            running.push(self.attempt(picked, self.copy()));
                            next_at = Instant::now() + delay;
                            more = tried.len() < max;
                        }
                        Err(e) if tried.is_empty() => {
                            return Err(self.pick_error(e, attempts, None));
                        }
                        // Every node tried: the attempts running are all.
                        Err(_) => more = false,
                    }
                }
            }
            if running.is_empty() {
                if !more || next_at >= self.deadline {
                    break;
                }
                // Paused by a pushback, nothing running: wait for the next hedge.
                tokio::time::sleep_until(next_at).await;
                continue;
            }
            let outcome = if more {
                tokio::select! {
                    outcome = running.next() => outcome,
                    () = tokio::time::sleep_until(next_at) => continue,
                }
            } else {
                running.next().await
            };
            // `None` inside: the deadline passed before the attempt started.
            let Some(Some(t)) = outcome else { continue };
            attempts.push(t.attempt);
            let status = match t.result {
                // Returning drops `running`: every other attempt is cancelled.
                Ok(response) => return Ok(self.reply(t.picked, response, attempts)),
                Err(status) => status,
            };
            let non_fatal = t.timed_out || self.hedging.non_fatal_codes().contains(&status.code());
            if !non_fatal {
                self.observer.giving_up(t.picked.node(), &status);
                return Err(self.failed(status, attempts));
            }
            if let Some(None) = pushback(&status) {
                self.observer.giving_up(t.picked.node(), &status);
                more = false;
            } else {
                let wait = self.honour_pushback(&t.picked, &status).await;
                if more {
                    self.observer
                        .retrying(t.picked.node(), &status, wait.unwrap_or_default());
                }
                next_at = Instant::now() + wait.unwrap_or_default();
            }
            last = Some(status);
        }
        match last {
            Some(status) => Err(self.failed(status, attempts).with_budget_exhausted(refused)),
            None => Err(self.deadline_error(attempts)),
        }
    }
}
