//! The live instance count behind `cluster_rps`.
//!
//! A served server with a registry watches its own service in etcd with
//! registry-actor's [`ServiceWatch`] (no actix system is needed inside a tokio
//! server): the same loop as every client's, so it moves off a dead, frozen or
//! leaderless member, resumes at the next revision, re-reads after a
//! compaction or a cluster change, and keeps the last count while etcd is
//! unreachable. Every set it publishes sets the instance count.
//!
//! This server counts itself even while its own key is not (or no longer)
//! visible: it is serving, so it takes a share.

use registry_actor::{Etcd, NodeSet, RegistryConfig, ServiceWatch};
use tracing::debug;

use crate::rate_limit::{LimiterClock, RateLimits};

/// Watches `service` and keeps `limits` told how many instances are live.
pub(crate) struct InstanceWatch<C: LimiterClock> {
    watch: ServiceWatch,
    own_id: String,
    limits: RateLimits<C>,
}

impl<C: LimiterClock> InstanceWatch<C> {
    pub(crate) fn new(
        etcd: Etcd,
        config: &RegistryConfig,
        service: &str,
        own_id: &str,
        limits: RateLimits<C>,
    ) -> Self {
        Self {
            watch: ServiceWatch::new(etcd, config, service),
            own_id: own_id.to_owned(),
            limits,
        }
    }

    /// Runs until the task is aborted.
    pub(crate) async fn run(self) {
        let Self {
            watch,
            own_id,
            limits,
        } = self;
        watch
            .run(move |nodes, _revision| {
                let instances = instances(&nodes, &own_id);
                debug!(instances, "live instances");
                limits.set_instances(instances);
                std::future::ready(true)
            })
            .await;
    }
}

/// The live nodes, plus this server when its own node is not among them.
fn instances(nodes: &NodeSet, own_id: &str) -> usize {
    nodes.len() + usize::from(nodes.find(own_id).is_none())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use registry_actor::testing::{unreachable_registry, wait_until, Logs};

    use super::*;
    use crate::RateLimitConfig;

    #[test]
    fn counts_itself_once_whether_listed_or_not() {
        let node = |id: &str| registry_actor::Node::new(id, "echo", "127.0.0.1:1").expect("node");
        assert_eq!(instances(&NodeSet::new(), "me"), 1);
        assert_eq!(instances(&vec![node("a"), node("b")].into(), "me"), 3);
        assert_eq!(instances(&vec![node("a"), node("me")].into(), "me"), 2);
    }

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
        assert!(
            text.contains("cannot read the service from etcd yet"),
            "{text}"
        );
        assert!(!text.contains("keeping the last known set"), "{text}");
    }
}
