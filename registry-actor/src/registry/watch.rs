//! The watch loop of one service: get, watch, resume, resync.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use tracing::{debug, warn};

use crate::error::with_timeout;
use crate::{Backoff, Error, Node};

/// Counters shared by all watch loops of one registry.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) decode_errors: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) resyncs: AtomicU64,
    pub(super) watches_open: AtomicU64,
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

/// The watch of one service. `publish` receives every changed set; it returns
/// `false` when nobody listens any more, which ends the loop.
pub(super) struct ServiceWatch {
    pub(super) client: Client,
    pub(super) service: Arc<str>,
    pub(super) prefix: String,
    pub(super) request_timeout: Duration,
    pub(super) backoff: Backoff,
    pub(super) counters: Arc<Counters>,
}

impl ServiceWatch {
    pub(super) async fn run<F, Fut>(mut self, mut publish: F)
    where
        F: FnMut(Arc<[Node]>, i64) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        // Valid nodes by key; the published snapshot is its values in key order.
        let mut nodes: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
        let mut revision: i64 = 0;
        let mut synced = false;
        let mut published: Option<Arc<[Node]>> = None;
        loop {
            if !synced {
                match self.get_all().await {
                    Ok((all, rev)) => {
                        nodes = all;
                        revision = rev;
                        synced = true;
                        if !self
                            .publish_if_changed(&nodes, revision, &mut published, &mut publish)
                            .await
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let delay = self.backoff.next_delay();
                        warn!(service = %self.service, error = %e, retry_in = ?delay, "cannot read service from etcd; keeping the last known set");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            match self
                .watch_from(
                    revision + 1,
                    &mut nodes,
                    &mut revision,
                    &mut published,
                    &mut publish,
                )
                .await
            {
                WatchEnd::NobodyListens => return,
                WatchEnd::Compacted => {
                    self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
                    synced = false;
                }
                WatchEnd::Failed(e) => {
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    let delay = self.backoff.next_delay();
                    warn!(service = %self.service, error = %e, retry_in = ?delay, resume_at = revision + 1, "watch lost; keeping the last known set");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn get_all(&mut self) -> Result<(BTreeMap<Vec<u8>, Node>, i64), Error> {
        let op = format!("get {}", self.prefix);
        let resp = with_timeout(
            &op,
            self.request_timeout,
            self.client.get(
                self.prefix.as_bytes(),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let nodes = resp
            .kvs()
            .iter()
            .filter_map(|kv| self.decode(kv).map(|n| (kv.key().to_vec(), n)))
            .collect();
        Ok((nodes, revision))
    }

    async fn watch_from<F, Fut>(
        &mut self,
        start: i64,
        nodes: &mut BTreeMap<Vec<u8>, Node>,
        revision: &mut i64,
        published: &mut Option<Arc<[Node]>>,
        publish: &mut F,
    ) -> WatchEnd
    where
        F: FnMut(Arc<[Node]>, i64) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let op = format!("watch {}", self.prefix);
        let mut stream = match with_timeout(
            &op,
            self.request_timeout,
            self.client.watch(self.prefix.as_bytes(), Some(options)),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => return WatchEnd::Failed(e),
        };
        let _open = OpenWatch::new(&self.counters.watches_open);
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    return WatchEnd::Failed(Error::WatchLost(format!(
                        "watch of {} ended",
                        self.prefix
                    )))
                }
                Err(e) => return WatchEnd::Failed(Error::etcd(op.clone(), e)),
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    debug!(service = %self.service, start, compacted = resp.compact_revision(), "watch start compacted; re-reading");
                    return WatchEnd::Compacted;
                }
                return WatchEnd::Failed(Error::WatchLost(format!(
                    "watch of {} canceled by etcd: {}",
                    self.prefix,
                    resp.cancel_reason()
                )));
            }
            if resp.created() {
                // A healthy stream: the next failure starts the backoff afresh.
                self.backoff.reset();
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                *revision = (*revision).max(kv.mod_revision());
                match event.event_type() {
                    EventType::Put => match self.decode(kv) {
                        Some(node) => {
                            nodes.insert(kv.key().to_vec(), node);
                        }
                        None => {
                            nodes.remove(kv.key());
                        }
                    },
                    EventType::Delete => {
                        nodes.remove(kv.key());
                    }
                }
            }
            if !self
                .publish_if_changed(nodes, *revision, published, publish)
                .await
            {
                return WatchEnd::NobodyListens;
            }
        }
    }

    /// Publishes the set when it differs from the last one published (or nothing
    /// was published yet). Returns `false` when nobody listens.
    async fn publish_if_changed<F, Fut>(
        &self,
        nodes: &BTreeMap<Vec<u8>, Node>,
        revision: i64,
        published: &mut Option<Arc<[Node]>>,
        publish: &mut F,
    ) -> bool
    where
        F: FnMut(Arc<[Node]>, i64) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        if published
            .as_deref()
            .is_some_and(|p| p.iter().eq(nodes.values()))
        {
            return true;
        }
        let snapshot: Arc<[Node]> = nodes.values().cloned().collect();
        *published = Some(snapshot.clone());
        publish(snapshot, revision).await
    }

    fn decode(&self, kv: &KeyValue) -> Option<Node> {
        let key = String::from_utf8_lossy(kv.key());
        match Node::decode(&key, &self.service, kv.value()) {
            Ok(node) => Some(node),
            Err(e) => {
                self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                warn!(service = %self.service, key = %key, error = %e, "skipping invalid registry value");
                None
            }
        }
    }
}

enum WatchEnd {
    NobodyListens,
    Compacted,
    Failed(Error),
}
