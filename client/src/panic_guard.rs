//! The panic threshold of discovery: a large removal is held, not applied at once.
//!
//! A registry change that removes more than `threshold` of a service's nodes at
//! once (default 50 %) is more likely a registry or network accident — leases
//! expired together during a partition, a prefix deleted by hand — than that many
//! servers dying in the same instant. The guard *holds* such removed nodes: they
//! stay pickable until the client sees them fail (their first connection failure
//! releases them), until `grace` passes, or until the registry lists them again.
//! Nodes the client already sees as ejected are not held. A removal within the
//! threshold is applied at once.
//!
//! The share is counted against the set in force (held nodes included), one
//! registry change at a time; nodes are told apart by id.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use registry_actor::{Node, NodeSet};
use tracing::{info, warn};

#[derive(Debug, Clone)]
struct Held {
    node: Node,
    until: Instant,
}

/// Holds back mass removals. See the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct PanicGuard {
    threshold: f64,
    grace: Duration,
    /// The held nodes, by id.
    held: HashMap<Box<str>, Held>,
}

impl PanicGuard {
    pub(crate) fn new(threshold: f64, grace: Duration) -> Self {
        Self {
            threshold,
            grace,
            held: HashMap::new(),
        }
    }

    /// The set to use after the registry reported `next`, given the set `prev` in
    /// force (both sorted by id) and the positions in `prev` of the ids `next`
    /// lacks (`gone`). `is_unhealthy` tells nodes the client already sees as
    /// failed.
    pub(crate) fn apply(
        &mut self,
        service: &str,
        prev: &NodeSet,
        next: NodeSet,
        gone: &[usize],
        now: Instant,
        is_unhealthy: impl Fn(&Node) -> bool,
    ) -> NodeSet {
        let before = self.held.len();
        self.held.retain(|_, h| next.find(h.node.id()).is_none());
        if self.held.len() < before {
            info!(%service, back = before - self.held.len(), "held nodes are listed again");
        }
        let removed: Vec<&Node> = gone
            .iter()
            .map(|&i| &prev[i])
            .filter(|n| !self.is_held(n.id()))
            .collect();
        if !removed.is_empty() && removed.len() as f64 > self.threshold * prev.len() as f64 {
            let until = now + self.grace;
            let mut count = 0;
            for node in removed {
                if !is_unhealthy(node) {
                    let held = Held {
                        node: node.clone(),
                        until,
                    };
                    self.held.insert(node.id().into(), held);
                    count += 1;
                }
            }
            warn!(
                %service,
                held = count,
                of = prev.len(),
                grace = ?self.grace,
                "registry removed more than the panic threshold at once; holding those nodes until they fail or the grace passes"
            );
        }
        self.merge(next)
    }

    /// Drops the held node `id` (it failed); answers whether it was held.
    pub(crate) fn release(&mut self, id: &str) -> bool {
        self.held.remove(id).is_some()
    }

    /// Drops the held nodes whose grace has passed; answers whether any was.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let before = self.held.len();
        self.held.retain(|_, h| h.until > now);
        self.held.len() < before
    }

    /// When the next held node's grace ends.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.held.values().map(|h| h.until).min()
    }

    /// Whether node `id` is held.
    pub(crate) fn is_held(&self, id: &str) -> bool {
        self.held.contains_key(id)
    }

    /// How many nodes are held.
    pub(crate) fn held_count(&self) -> usize {
        self.held.len()
    }

    /// The registry's set plus the held nodes, sorted by id: `listed` itself
    /// when none is held, else a set sharing the chunks of `listed` that no
    /// held node falls in.
    pub(crate) fn merge(&self, listed: NodeSet) -> NodeSet {
        if self.held.is_empty() {
            return listed;
        }
        listed.updated(
            self.held
                .values()
                .map(|h| (h.node.id().to_owned(), Some(h.node.clone()))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[&str]) -> NodeSet {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Node::new(*id, "svc", format!("127.0.0.1:{}", 1000 + i)).expect("node"))
            .collect()
    }

    /// [`PanicGuard::apply`] with the removed positions worked out.
    fn apply(
        g: &mut PanicGuard,
        prev: &NodeSet,
        next: NodeSet,
        now: Instant,
        is_unhealthy: impl Fn(&Node) -> bool,
    ) -> NodeSet {
        let gone = crate::chunk_diff::ChunkDiff::of(prev, &next).removed(prev, &next);
        g.apply("svc", prev, next, &gone, now, is_unhealthy)
    }

    fn ids(set: &NodeSet) -> Vec<&str> {
        set.iter().map(Node::id).collect()
    }

    #[test]
    fn removing_more_than_the_share_holds_the_nodes_until_grace() {
        let mut g = PanicGuard::new(0.5, Duration::from_secs(30));
        let now = Instant::now();
        let prev = nodes(&["a", "b", "c", "d"]);
        let set = apply(&mut g, &prev, nodes(&["a"]), now, |_| false);
        assert_eq!(ids(&set), ["a", "b", "c", "d"], "3 of 4 gone at once: held");
        assert_eq!(g.next_deadline(), Some(now + Duration::from_secs(30)));
        assert!(!g.expire(now + Duration::from_secs(29)));
        assert!(g.expire(now + Duration::from_secs(30)));
        assert_eq!(ids(&g.merge(nodes(&["a"]))), ["a"]);
    }

    #[test]
    fn removing_up_to_the_share_applies_at_once() {
        let mut g = PanicGuard::new(0.5, Duration::from_secs(30));
        let prev = nodes(&["a", "b", "c", "d"]);
        let set = apply(&mut g, &prev, nodes(&["a", "b"]), Instant::now(), |_| false);
        assert_eq!(ids(&set), ["a", "b"], "2 of 4 is not more than 50 %");
        assert_eq!(g.held_count(), 0);
    }

    #[test]
    fn a_failure_releases_a_held_node_and_listing_it_again_unholds_it() {
        let mut g = PanicGuard::new(0.5, Duration::from_secs(30));
        let now = Instant::now();
        let prev = nodes(&["a", "b", "c", "d"]);
        let set = apply(&mut g, &prev, nodes(&[]), now, |_| false);
        assert_eq!(set.len(), 4, "an emptied registry is held too");
        assert!(g.release("b"));
        assert!(!g.release("b"));
        let prev = g.merge(nodes(&[]));
        let set = apply(&mut g, &prev, nodes(&["c"]), now, |_| false);
        assert_eq!(ids(&set), ["a", "c", "d"]);
        assert!(!g.is_held("c"), "c is listed again");
    }

    #[test]
    fn unhealthy_nodes_are_not_held() {
        let mut g = PanicGuard::new(0.5, Duration::from_secs(30));
        let prev = nodes(&["a", "b", "c", "d"]);
        let set = apply(&mut g, &prev, nodes(&["a"]), Instant::now(), |n| {
            n.id() == "c"
        });
        assert_eq!(ids(&set), ["a", "b", "d"]);
    }
}
