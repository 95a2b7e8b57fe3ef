//! The watch loop of one service: read, watch, probe, resume, re-read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, KeyValue, WatchOptions, WatchResponse};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::with_timeout;
use crate::etcd::{read_prefix, ClusterIdentity, Etcd};
use crate::node::{service_prefix, DecodeError, DecodeErrorKind};
use crate::{Backoff, Error, Node, NodeSet, RegistryConfig};

/// How often an open watch asks its member for a progress report.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// A watch whose member said nothing (no event, no progress report) for this
/// long is given up and opened on the next member: the member is frozen, cut
/// off or overloaded.
const SILENCE_LIMIT: Duration = Duration::from_millis(1000);

/// Counters shared by all watch loops of one registry.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) decode_errors: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) cluster_changes: AtomicU64,
    pub(crate) watches_open: AtomicU64,
}

/// Keeps `watches_open` right however a stream ends (error, abort, drop).
struct OpenWatch<'a>(&'a AtomicU64);

impl<'a> OpenWatch<'a> {
    fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for OpenWatch<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The watch of one service's node set; see the [module docs](super).
///
/// [`run`](Self::run) hands every changed set to `publish` and ends when
/// `publish` answers `false` (nobody listens any more).
pub struct ServiceWatch {
    etcd: Etcd,
    service: Arc<str>,
    prefix: String,
    max_value_bytes: usize,
    backoff: Backoff,
    counters: Arc<Counters>,
    on_failure: Option<FailureReport>,
    metrics: WatchMetrics,
}

/// The metric handles of one service's watch: streams re-opened after a
/// failure, full re-reads (a compacted start revision, another cluster or one
/// gone back in time), and values skipped as invalid.
struct WatchMetrics {
    reconnects: metrics::Counter,
    resyncs: metrics::Counter,
    decode_errors: metrics::Counter,
}

impl WatchMetrics {
    fn new(service: &str) -> Self {
        let counter = |name: &'static str| metrics::counter!(name, "service" => service.to_owned());
        Self {
            reconnects: counter(crate::metrics::REGISTRY_RECONNECTS),
            resyncs: counter(crate::metrics::REGISTRY_RESYNCS),
            decode_errors: counter(crate::metrics::REGISTRY_DECODE_ERRORS),
        }
    }
}

/// Where a watch reports its failures.
type FailureReport = Box<dyn FnMut(&Error) + Send + Sync>;

impl std::fmt::Debug for ServiceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceWatch")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What one watch loop keeps between its streams.
struct Seen {
    /// The valid nodes (by id, which orders them as their keys).
    set: NodeSet,
    /// The last revision applied.
    revision: i64,
    /// The cluster the set was read from (`None` before the first read).
    identity: Option<ClusterIdentity>,
    published: Option<NodeSet>,
}

impl ServiceWatch {
    /// The watch of `service` under `config.prefix()` through `etcd`.
    pub fn new(etcd: Etcd, config: &RegistryConfig, service: &str) -> Self {
        Self::with_counters(etcd, config, service.into(), Arc::default())
    }

    pub(crate) fn with_counters(
        etcd: Etcd,
        config: &RegistryConfig,
        service: Arc<str>,
        counters: Arc<Counters>,
    ) -> Self {
        let metrics = WatchMetrics::new(&service);
        Self {
            etcd,
            prefix: service_prefix(config.prefix(), &service),
            service,
            max_value_bytes: config.max_value_bytes(),
            backoff: config.backoff(),
            counters,
            on_failure: None,
            metrics,
        }
    }

    /// Hands every failure to read or watch the service to `report`, before
    /// the backoff that follows it.
    pub(crate) fn on_failure(mut self, report: impl FnMut(&Error) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Box::new(report));
        self
    }

    /// Runs the loop: a full read, then a watch from the next revision, resumed
    /// after every failure; ends when `publish` answers `false`. While etcd is
    /// unreachable nothing is published: the last set stays in force.
    pub async fn run<F, Fut>(mut self, mut publish: F)
    where
        F: FnMut(NodeSet, i64) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut seen = Seen {
            set: NodeSet::new(),
            revision: 0,
            identity: None,
            published: None,
        };
        let mut synced = false;
        loop {
            if synced {
                // Resuming: the cluster must be the one the set came from, and
                // not gone back in time, or resuming at revision + 1 would
                // silently skip every change below it.
                match self.replaced(&seen).await {
                    Ok(false) => {}
                    Ok(true) => {
                        self.counters
                            .cluster_changes
                            .fetch_add(1, Ordering::Relaxed);
                        self.metrics.resyncs.increment(1);
                        warn!(service = %self.service, "etcd is another cluster or went back in time; re-reading the set");
                        synced = false;
                    }
                    Err(e) => {
                        self.wait_after(&e, &seen).await;
                        continue;
                    }
                }
            }
            if !synced {
                match self.read_all().await {
                    Ok((set, identity)) => {
                        // A set equal to the one published stays that one:
                        // its nodes are shared with what subscribers hold.
                        seen.set = match &seen.published {
                            Some(published) if *published == set => published.clone(),
                            _ => set,
                        };
                        seen.revision = identity.revision;
                        seen.identity = Some(identity);
                        synced = true;
                        if !self.publish_if_changed(&mut seen, &mut publish).await {
                            return;
                        }
                    }
                    Err(e) => {
                        self.wait_after(&e, &seen).await;
                        continue;
                    }
                }
            }
            match self.watch_from(&mut seen, &mut publish).await {
                WatchEnd::NobodyListens => return,
                WatchEnd::Compacted => {
                    self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
                    self.metrics.resyncs.increment(1);
                    synced = false;
                }
                WatchEnd::Failed(e) => {
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    self.metrics.reconnects.increment(1);
                    self.wait_after(&e, &seen).await;
                }
            }
        }
    }

    /// Waits the backoff after a failure. Repeated failures are logged at
    /// attempts 1, 2, 4, 8…; a last known set is claimed only when one was
    /// published.
    async fn wait_after(&mut self, error: &Error, seen: &Seen) {
        if let Some(report) = &mut self.on_failure {
            report(error);
        }
        let attempt = self.backoff.attempts() + 1;
        let delay = self.backoff.next_delay();
        if attempt.is_power_of_two() {
            if seen.published.is_some() {
                warn!(service = %self.service, attempt, %error, retry_in = ?delay,
                    resume_at = seen.revision + 1,
                    "cannot watch the service in etcd; keeping the last known set");
            } else {
                warn!(service = %self.service, attempt, %error, retry_in = ?delay,
                    "cannot read the service from etcd yet; retrying");
            }
        }
        tokio::time::sleep(delay).await;
    }

    /// Whether the cluster answering now is not the one `seen` came from.
    async fn replaced(&self, seen: &Seen) -> Result<bool, Error> {
        let Some(before) = seen.identity else {
            return Ok(true);
        };
        let op = format!("check {}", self.prefix);
        let key = self.prefix.clone();
        let now = self
            .etcd
            .read(&op, |mut kv| {
                let key = key.clone();
                async move {
                    let options = etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only();
                    kv.get(key, Some(options)).await
                }
            })
            .await?;
        let now = ClusterIdentity::of(now.header());
        let last = ClusterIdentity {
            cluster_id: before.cluster_id,
            revision: seen.revision,
        };
        Ok(last.replaced_by(&now))
    }

    async fn read_all(&self) -> Result<(NodeSet, ClusterIdentity), Error> {
        // Keys come in order, so the nodes come sorted by id.
        let mut nodes = Vec::new();
        let identity = read_prefix(&self.etcd, &self.prefix, |kv| {
            if let Some(node) = self.decode(kv) {
                nodes.push(node);
            }
        })
        .await?;
        Ok((nodes.into(), identity))
    }

    async fn watch_from<F, Fut>(&mut self, seen: &mut Seen, publish: &mut F) -> WatchEnd
    where
        F: FnMut(NodeSet, i64) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = seen.revision + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let op = format!("watch {}", self.prefix);
        let mut member = self.etcd.pick();
        // A live member opens a watch at once; a frozen one must not hold the
        // move for a whole request timeout.
        let opened = with_timeout(
            &op,
            self.etcd.request_timeout().min(SILENCE_LIMIT),
            member.watch.watch(self.prefix.as_bytes(), Some(options)),
        )
        .await;
        let (mut requests, mut stream) = match opened {
            Ok(s) => s.split(),
            Err(e) => {
                self.etcd.failed(member.index);
                return WatchEnd::Failed(e);
            }
        };
        let counters = self.counters.clone();
        let _open = OpenWatch::new(&counters.watches_open);
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        let mut heard = Instant::now();
        loop {
            let resp = tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(resp)) => resp,
                    Ok(None) => {
                        self.etcd.failed(member.index);
                        return WatchEnd::Failed(Error::WatchLost(format!(
                            "watch of {} on {} ended",
                            self.prefix, member.endpoint
                        )));
                    }
                    Err(e) => {
                        self.etcd.failed(member.index);
                        return WatchEnd::Failed(Error::etcd(format!("{op} on {}", member.endpoint), e));
                    }
                },
                _ = probe.tick() => {
                    if heard.elapsed() > SILENCE_LIMIT {
                        self.etcd.failed(member.index);
                        return WatchEnd::Failed(Error::WatchLost(format!(
                            "{} said nothing for {SILENCE_LIMIT:?}",
                            member.endpoint
                        )));
                    }
                    // A member that answers nothing (frozen, cut off) is noticed
                    // by its silence; a live one reports progress at once.
                    let _ = requests.request_progress().await;
                    continue;
                }
            };
            heard = Instant::now();
            match self.apply(&resp, seen, &member.endpoint) {
                Applied::Changed => {}
                Applied::Nothing => continue,
                Applied::Compacted => return WatchEnd::Compacted,
                Applied::Canceled(e) => {
                    self.etcd.failed(member.index);
                    return WatchEnd::Failed(e);
                }
            }
            if !Self::publish(seen, publish).await {
                return WatchEnd::NobodyListens;
            }
        }
    }

    /// Applies one watch response to `seen`: [`Applied::Changed`] when the
    /// set differs afterwards (found per event, without comparing the whole
    /// set).
    fn apply(&mut self, resp: &WatchResponse, seen: &mut Seen, endpoint: &str) -> Applied {
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                debug!(service = %self.service, start = seen.revision + 1, compacted = resp.compact_revision(), "watch start compacted; re-reading");
                return Applied::Compacted;
            }
            return Applied::Canceled(Error::WatchLost(format!(
                "watch of {} canceled by {endpoint}: {}",
                self.prefix,
                resp.cancel_reason()
            )));
        }
        if resp.created() {
            // A healthy stream: the next failure starts the backoff afresh.
            self.backoff.reset();
        }
        // Each event's change, by id (a later event of a key wins): a put of
        // an invalid value removes the node of its key like a delete.
        let mut changes: BTreeMap<String, Option<Node>> = BTreeMap::new();
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            seen.revision = seen.revision.max(kv.mod_revision());
            let decoded = match event.event_type() {
                EventType::Put => self.decode(kv),
                EventType::Delete => None,
            };
            let Some(id) = self.key_id(kv.key()) else {
                continue;
            };
            changes.insert(id.to_owned(), decoded);
        }
        changes.retain(|id, node| match (seen.set.by_id(id), node) {
            (Some(old), Some(node)) => old != node,
            (old, node) => old.is_some() || node.is_some(),
        });
        if changes.is_empty() {
            return Applied::Nothing;
        }
        seen.set = seen.set.updated(changes);
        Applied::Changed
    }

    /// Publishes the set when it differs from the last one published (or nothing
    /// was published yet). Returns `false` when nobody listens.
    async fn publish_if_changed<F, Fut>(&self, seen: &mut Seen, publish: &mut F) -> bool
    where
        F: FnMut(NodeSet, i64) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        if seen.published.as_ref() == Some(&seen.set) {
            return true;
        }
        Self::publish(seen, publish).await
    }

    /// Publishes the set. Returns `false` when nobody listens.
    async fn publish<F, Fut>(seen: &mut Seen, publish: &mut F) -> bool
    where
        F: FnMut(NodeSet, i64) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        seen.published = Some(seen.set.clone());
        publish(seen.set.clone(), seen.revision).await
    }

    /// The node id a key of the service names: the key past the service's
    /// prefix.
    fn key_id<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        let id = key.strip_prefix(self.prefix.as_bytes())?;
        std::str::from_utf8(id).ok()
    }

    fn decode(&self, kv: &KeyValue) -> Option<Node> {
        let key = String::from_utf8_lossy(kv.key());
        let decoded = if kv.value().len() > self.max_value_bytes {
            Err(DecodeError::new(
                key.to_string(),
                DecodeErrorKind::TooLarge {
                    size: kv.value().len(),
                    limit: self.max_value_bytes,
                },
            ))
        } else {
            Node::decode(&key, &self.service, kv.value()).and_then(|node| {
                // The id is the whole key past the service's prefix: a key
                // nested deeper names no node of the service.
                match self.key_id(kv.key()) {
                    Some(id) if id == node.id() => Ok(node),
                    _ => Err(DecodeError::new(
                        key.to_string(),
                        DecodeErrorKind::IdMismatch {
                            value: node.id().to_owned(),
                            key: key[self.prefix.len().min(key.len())..].to_owned(),
                        },
                    )),
                }
            })
        };
        match decoded {
            Ok(node) => Some(node),
            Err(e) => {
                self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                self.metrics.decode_errors.increment(1);
                warn!(service = %self.service, key = %key, error = %e, "skipping invalid registry value");
                None
            }
        }
    }
}

enum Applied {
    /// The set changed.
    Changed,
    /// Nothing changed (no event, or events that leave the set as it was).
    Nothing,
    Compacted,
    Canceled(Error),
}

enum WatchEnd {
    NobodyListens,
    Compacted,
    Failed(Error),
}
