//! What apps send the [`ClusterClient`](super::ClusterClient), and what it answers.

use std::fmt;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::Code;

use crate::policy::Strategy;
use crate::{HashKey, Method, NodeRef, Selector};

/// Per-call settings; every one left unset takes the configured value of the
/// method, then the service, then the client.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub(crate) strategy: Option<Strategy>,
    pub(crate) retries: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) selector: Option<Selector>,
    pub(crate) hash_key: Option<HashKey>,
    pub(crate) metadata: MetadataMap,
    /// A deadline no attempt may pass, whatever the timeout (an inbound
    /// call's, from [`inherit`](Self::inherit)).
    pub(crate) deadline: Option<tokio::time::Instant>,
    /// The inbound call's metadata, whose `client.propagate` keys are sent.
    pub(crate) inherited: Option<Inbound>,
}

/// The metadata of an inbound call, shared; its `Debug` shows the keys only
/// (the values may hold credentials).
#[derive(Clone)]
pub(crate) struct Inbound(pub(crate) std::sync::Arc<MetadataMap>);

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.0.keys().map(|k| match k {
            tonic::metadata::KeyRef::Ascii(k) => k.as_str(),
            tonic::metadata::KeyRef::Binary(k) => k.as_str(),
        });
        f.debug_set().entries(keys).finish()
    }
}

impl CallOptions {
    /// The configured settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `strategy`.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Allows `retries` extra attempts (failover, failretry).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// The whole call's deadline, from now; no attempt starts after it, and each
    /// attempt carries what remains of it as `grpc-timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Bounds each attempt to `timeout` within the call's deadline: an attempt
    /// that gets no answer in time is cancelled and ends as
    /// `DEADLINE_EXCEEDED`, which failover and failretry retry, and counts as
    /// a failure of its node towards ejection.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Picks among nodes matching `selector` (merged over the service's).
    pub fn with_selector(mut self, selector: Selector) -> Self {
        self.selector = Some(selector);
        self
    }

    /// The key for `consistent_hash`.
    pub fn with_hash_key(mut self, key: HashKey) -> Self {
        self.hash_key = Some(key);
        self
    }

    /// Adds metadata entries sent with every attempt.
    pub fn with_metadata(mut self, metadata: MetadataMap) -> Self {
        for kv in metadata.into_headers() {
            if let (Some(k), v) = kv {
                self.metadata.as_mut().append(k, v);
            }
        }
        self
    }
}

/// A unary call to one service, carried out by its strategy.
pub struct Call<Req, Resp> {
    /// The service, as registered.
    pub service: String,
    /// The method.
    pub method: Method<Req, Resp>,
    /// The request message (cloned for each attempt).
    pub request: Req,
    /// Per-call settings.
    pub options: CallOptions,
}

impl<Req, Resp> Call<Req, Resp> {
    /// A call of `method` on `service` with the configured settings.
    pub fn new(service: impl Into<String>, method: Method<Req, Resp>, request: Req) -> Self {
        Self {
            service: service.into(),
            method,
            request,
            options: CallOptions::default(),
        }
    }

    /// Replaces the per-call settings.
    pub fn with_options(mut self, options: CallOptions) -> Self {
        self.options = options;
        self
    }
}

impl<Req, Resp> fmt::Debug for Call<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("service", &self.service)
            .field("method", &self.method)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// When a broadcast is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Completion {
    /// Every node answered (or the deadline passed).
    All,
    /// This many nodes succeeded (or it can no longer happen).
    Quorum(usize),
    /// One node succeeded (or every one failed).
    FirstSuccess,
}

impl Completion {
    /// Parses `all`, `quorum(K)` or `first_success`.
    ///
    /// # Errors
    ///
    /// A message listing the valid names.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.trim() {
            "all" => Ok(Self::All),
            "first_success" => Ok(Self::FirstSuccess),
            other => other
                .strip_prefix("quorum(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|k| k.trim().parse::<usize>().ok())
                .filter(|k| *k >= 1)
                .map(Self::Quorum)
                .ok_or_else(|| {
                    format!(
                        "unknown completion `{other}`; expected all, quorum(K) or first_success"
                    )
                }),
        }
    }
}

/// The same unary call to every node matching a selector, in parallel.
/// Multicast is a broadcast with a selector (for example one group).
pub struct Broadcast<Req, Resp> {
    /// The service, as registered.
    pub service: String,
    /// The method.
    pub method: Method<Req, Resp>,
    /// The request message (cloned for each node).
    pub request: Req,
    /// When the broadcast is complete (default [`Completion::All`]).
    pub completion: Completion,
    /// Per-call settings: timeout, selector and metadata apply.
    pub options: CallOptions,
}

impl<Req, Resp> Broadcast<Req, Resp> {
    /// A broadcast of `method` to every node of `service`, waiting for all.
    pub fn new(service: impl Into<String>, method: Method<Req, Resp>, request: Req) -> Self {
        Self {
            service: service.into(),
            method,
            request,
            completion: Completion::All,
            options: CallOptions::default(),
        }
    }

    /// Completes by `completion`.
    pub fn with_completion(mut self, completion: Completion) -> Self {
        self.completion = completion;
        self
    }

    /// Replaces the per-call settings.
    pub fn with_options(mut self, options: CallOptions) -> Self {
        self.options = options;
        self
    }
}

impl<Req, Resp> fmt::Debug for Broadcast<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("service", &self.service)
            .field("method", &self.method)
            .field("completion", &self.completion)
            .finish_non_exhaustive()
    }
}

/// One attempt of a call: where it went, how it ended, how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The node (its id, address and the rest).
    pub node: NodeRef,
    /// `Ok` or the status code it ended with.
    pub code: Code,
    /// From sending to the answer.
    pub latency: Duration,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{} {:?} in {:?}",
            self.node.id(),
            self.node.addr(),
            self.code,
            self.latency
        )
    }
}

/// A successful call: the response and every attempt it took.
#[derive(Debug)]
pub struct Reply<Resp> {
    /// The response message.
    pub message: Resp,
    /// The response metadata (headers).
    pub metadata: MetadataMap,
    /// The node that answered.
    pub node: NodeRef,
    /// Every attempt, the successful one last.
    pub attempts: Vec<Attempt>,
    /// The whole call, from the message to the reply.
    pub latency: Duration,
}

/// One node's part of a broadcast.
#[derive(Debug)]
pub struct NodeResult<Resp> {
    /// The node.
    pub node: NodeRef,
    /// Its answer; `CANCELLED` when the broadcast completed without it.
    pub result: Result<Resp, tonic::Status>,
    /// How long it took (until the broadcast completed, for a cancelled one).
    pub latency: Duration,
}

/// The result of a broadcast: one entry per node, in node-id order.
#[derive(Debug)]
pub struct BroadcastReply<Resp> {
    /// Every node that was called.
    pub nodes: Vec<NodeResult<Resp>>,
    /// Whether the completion rule was met.
    pub complete: bool,
    /// The whole broadcast.
    pub latency: Duration,
}

impl<Resp> BroadcastReply<Resp> {
    /// How many nodes succeeded.
    pub fn successes(&self) -> usize {
        self.nodes.iter().filter(|n| n.result.is_ok()).count()
    }
}
