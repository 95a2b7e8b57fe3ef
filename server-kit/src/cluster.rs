//! The live instance count behind `cluster_rps`.
//!
//! A served server with a registry watches its own service's prefix in etcd
//! with a plain etcd watch (no actix system is needed inside a tokio server, and
//! one small watch per server is all it takes): a `get` with the prefix counts
//! the valid nodes, then a watch from the next revision keeps the count current.
//! On any stream error or compaction it waits with capped backoff and starts
//! again with a full `get`, which is cheap for one service and cannot miss a
//! change. While etcd is unreachable the last count stays in force.
//!
//! This server counts itself even while its own key is not (or no longer)
//! visible: it is serving, so it takes a share.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use registry_actor::etcd_client::{Client, EventType, GetOptions, WatchOptions};
use registry_actor::{service_prefix, Backoff, Node, RegistryConfig};
use tracing::{debug, warn};

use crate::rate_limit::{LimiterClock, RateLimits};

/// Watches `service` and keeps `limits` told how many instances are live.
pub(crate) struct InstanceWatch<C: LimiterClock> {
    pub(crate) client: Client,
    pub(crate) service: String,
    pub(crate) own_id: String,
    pub(crate) prefix: String,
    pub(crate) request_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) limits: RateLimits<C>,
    /// Whether a count from etcd was ever published.
    pub(crate) counted: bool,
}

impl<C: LimiterClock> InstanceWatch<C> {
    pub(crate) fn new(
        client: Client,
        config: &RegistryConfig,
        service: &str,
        own_id: &str,
        limits: RateLimits<C>,
    ) -> Self {
        Self {
            client,
            service: service.to_owned(),
            own_id: own_id.to_owned(),
            prefix: service_prefix(config.prefix(), service),
            request_timeout: config.request_timeout(),
            backoff: config.backoff(),
            limits,
            counted: false,
        }
    }

    /// Runs until the task is aborted.
    pub(crate) async fn run(mut self) {
        loop {
            let Err(why) = self.session().await;
            let attempt = self.backoff.attempts() + 1;
            let delay = self.backoff.next_delay();
            // Repeated failures are logged at attempts 1, 2, 4, 8….
            if attempt.is_power_of_two() {
                if self.counted {
                    warn!(service = %self.service, attempt, error = %why, retry_in = ?delay,
                        "instance watch lost; keeping the last instance count");
                } else {
                    warn!(service = %self.service, attempt, error = %why, retry_in = ?delay,
                        "cannot count instances yet; counting this server alone");
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One `get` + watch; returns why the watch must be re-established.
    async fn session(&mut self) -> Result<Infallible, String> {
        let get = self.client.get(
            self.prefix.as_bytes(),
            Some(GetOptions::new().with_prefix()),
        );
        let resp = tokio::time::timeout(self.request_timeout, get)
            .await
            .map_err(|_| format!("get {} timed out", self.prefix))?
            .map_err(|e| format!("get {}: {e}", self.prefix))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut live: HashSet<Vec<u8>> = resp
            .kvs()
            .iter()
            .filter(|kv| self.valid(kv.key(), kv.value()))
            .map(|kv| kv.key().to_vec())
            .collect();
        self.publish(&live);

        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let watch = self.client.watch(self.prefix.as_bytes(), Some(options));
        let mut stream = tokio::time::timeout(self.request_timeout, watch)
            .await
            .map_err(|_| format!("watch {} timed out", self.prefix))?
            .map_err(|e| format!("watch {}: {e}", self.prefix))?;
        self.backoff.reset();
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err("watch stream ended".into()),
                Err(e) => return Err(format!("watch stream: {e}")),
            };
            if resp.canceled() {
                return Err(format!("watch canceled: {}", resp.cancel_reason()));
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let is_live =
                    event.event_type() == EventType::Put && self.valid(kv.key(), kv.value());
                if is_live {
                    live.insert(kv.key().to_vec());
                } else {
                    live.remove(kv.key());
                }
            }
            self.publish(&live);
        }
    }

    fn valid(&self, key: &[u8], value: &[u8]) -> bool {
        let key = String::from_utf8_lossy(key);
        Node::decode(&key, &self.service, value).is_ok()
    }

    fn publish(&mut self, live: &HashSet<Vec<u8>>) {
        self.counted = true;
        let own_key = format!("{}{}", self.prefix, self.own_id);
        let counted_self = usize::from(!live.contains(own_key.as_bytes()));
        let instances = live.len() + counted_self;
        debug!(service = %self.service, instances, "live instances");
        self.limits.set_instances(instances);
    }
}

#[cfg(test)]
mod tests {
    use registry_actor::testing::{unreachable_registry, wait_until, Logs};

    use super::*;
    use crate::RateLimitConfig;

    #[tokio::test]
    async fn a_count_never_read_is_not_reported_as_kept() {
        let (logs, _logging) = Logs::capture();
        let config = unreachable_registry();
        let client = registry_actor::connect(&config).await.expect("lazy client");
        let limits = RateLimits::new(&RateLimitConfig::default()).expect("limits");
        let watch = InstanceWatch::new(client, &config, "echo", "echo-1", limits);
        let task = tokio::spawn(watch.run());
        let logged = wait_until(Duration::from_secs(10), || {
            std::future::ready(!logs.text().is_empty())
        })
        .await;
        task.abort();
        let text = logs.text();
        assert!(logged, "a failure is logged");
        assert!(text.contains("cannot count instances yet"), "{text}");
        assert!(!text.contains("keeping the last instance count"), "{text}");
    }
}
