//! The picker: node tracking, ejection and the panic guard, publishing
//! [`Snapshot`]s.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use registry_actor::{Node, NodeSet};
use tracing::{debug, info, warn};

use super::carry::Carry;
use super::entries::{carry_over, health_at, health_mut_at, EntryChunk};
use super::picked::{NodeHandle, Picked};
use super::snapshot::{Parts, Slot, Snapshot};
use super::status::{NodeStatus, PickerStatus};
use crate::chunk_diff::ChunkDiff;
use crate::ejection::{max_ejected, success_rate_outliers, NodeHealth};
use crate::observe::PickerMetrics;
use crate::panic_guard::PanicGuard;
use crate::{Error, HashKey, PickerConfig, Selector};

/// The picking logic of one service, without an actor: the node set in force,
/// ejection and the panic threshold, and the immutable snapshot of candidates
/// and balancers built from them whenever they change. [`PickerActor`](crate::PickerActor) is a thin actor over it;
/// use it directly to pick without messages (or to measure picks). Each change
/// builds a new snapshot beside the one in force and then replaces it, so
/// calls picking from the published snapshot never wait for a rebuild.
///
/// Time comes in as arguments (`now`), so the logic is testable without clocks;
/// [`next_deadline`](Self::next_deadline) tells when [`expire`](Self::expire)
/// should run next.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Instant;
/// use cluster_client::{Balancer, Picker, PickerConfig, Selector};
/// use registry_actor::Node;
///
/// let nodes: Arc<[Node]> = (1..=3)
///     .map(|i| Node::new(format!("echo-{i}"), "echo", format!("127.0.0.1:{}", 5000 + i)))
///     .collect::<Result<_, _>>()?;
/// let mut picker = Picker::new("echo", PickerConfig::default().with_balancer(Balancer::RoundRobin));
/// picker.update(nodes, 7, Instant::now());
///
/// let first = picker.pick(None, &[], None)?;
/// let second = picker.pick(None, &[first.handle()], None)?;
/// assert_ne!(first.node().id(), second.node().id());
/// assert_eq!(picker.pick_all(None)?.len(), 3);
///
/// let strict = Selector::new().with_group("blue").with_fallback(cluster_client::Fallback::Strict);
/// assert!(picker.pick(Some(&strict), &[], None).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Picker {
    service: Arc<str>,
    config: Arc<PickerConfig>,
    rng: SmallRng,
    discovered: bool,
    revision: i64,
    /// The registry's set.
    listed: NodeSet,
    /// The set in force: listed plus held, sorted by id; the entries (slots
    /// and health) of each of its chunks, in the same order.
    effective: NodeSet,
    entries: Vec<EntryChunk>,
    /// Per node in force: whether it may not be picked (ejected, paused,
    /// unhealthy or going away).
    ejected: Vec<bool>,
    ejected_count: usize,
    /// The id of each node in force, by handle (changed only for the nodes a
    /// change adds or removes).
    by_handle: HashMap<NodeHandle, Box<str>>,
    guard: PanicGuard,
    next_handle: u64,
    current: Arc<Snapshot>,
    /// How the set installed last maps to the nodes of `current`, for the
    /// snapshot published next.
    carry: Option<Installed>,
    /// The node gauges and ejection counter, set as the state changes.
    metrics: PickerMetrics,
}

/// A set installed since `current` was built, and for each of its nodes the
/// index of the same node in `current` (or [`NOT_CARRIED`](super::carry::NOT_CARRIED)).
struct Installed {
    set: NodeSet,
    from: Arc<[u32]>,
}

impl fmt::Debug for Picker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picker")
            .field("service", &self.service)
            .field("balancer", &self.config.balancer())
            .field("revision", &self.revision)
            .field("nodes", &self.effective.len())
            .field("ejected", &self.ejected_count)
            .field("held", &self.guard.held_count())
            .finish_non_exhaustive()
    }
}

impl Picker {
    /// A picker for `service` with no nodes yet.
    pub fn new(service: impl Into<Arc<str>>, config: PickerConfig) -> Self {
        Self::with_rng(service.into(), config, SmallRng::from_rng(&mut rand::rng()))
    }

    /// A picker whose random choices follow `seed`: the same picks for the same
    /// inputs, for tests and benches.
    pub fn with_seed(service: impl Into<Arc<str>>, config: PickerConfig, seed: u64) -> Self {
        Self::with_rng(service.into(), config, SmallRng::seed_from_u64(seed))
    }

    fn with_rng(service: Arc<str>, config: PickerConfig, mut rng: SmallRng) -> Self {
        let guard = PanicGuard::new(config.panic_threshold(), config.panic_grace());
        let metrics = PickerMetrics::new(&service);
        let config = Arc::new(config);
        let empty = NodeSet::new();
        let current = Arc::new(Snapshot::build(
            Parts {
                service: service.clone(),
                config: config.clone(),
                discovered: false,
                revision: 0,
                nodes: empty.clone(),
                slots: Box::new([]),
                members: Box::new([]),
                ejected: Box::new([]),
                before: None,
            },
            Vec::new(),
            &mut rng,
        ));
        Self {
            service,
            config,
            rng,
            discovered: false,
            revision: 0,
            listed: empty.clone(),
            effective: empty,
            entries: Vec::new(),
            ejected: Vec::new(),
            ejected_count: 0,
            by_handle: HashMap::new(),
            guard,
            next_handle: 0,
            current,
            carry: None,
            metrics,
        }
    }

    /// The service.
    pub fn service(&self) -> &Arc<str> {
        &self.service
    }

    /// The settings.
    pub fn config(&self) -> &PickerConfig {
        &self.config
    }

    /// Whether a node set has arrived.
    pub fn is_discovered(&self) -> bool {
        self.discovered
    }

    /// The registry revision of the last node set.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The nodes in force: the registry's set plus nodes held by the panic
    /// threshold, sorted by id.
    pub fn nodes(&self) -> &NodeSet {
        &self.effective
    }

    /// Whether `handle` names a node in force.
    pub fn contains(&self, handle: NodeHandle) -> bool {
        self.by_handle.contains_key(&handle)
    }

    /// The snapshot in force: what picks read.
    pub(crate) fn snapshot(&self) -> &Arc<Snapshot> {
        &self.current
    }

    /// Applies new settings (a configuration reload): balancer, selector and
    /// fallback take effect for the next pick; handles, loads and health stay.
    /// The ejection and panic settings of nodes already tracked keep the values
    /// they were created with.
    pub fn reconfigure(&mut self, config: PickerConfig) {
        if config == *self.config {
            return;
        }
        self.config = Arc::new(config);
        self.publish();
    }

    /// Takes a new node set from the registry (at etcd `revision`), applying the
    /// panic threshold, and publishes a new snapshot.
    ///
    /// Only the chunks of `nodes` that the set in force does not share are
    /// read: a set made from the one before by
    /// [`NodeSet::updated`] (as the registry makes them) costs in proportion
    /// to what changed.
    pub fn update(&mut self, nodes: impl Into<NodeSet>, revision: i64, now: Instant) {
        let nodes = nodes.into();
        self.discovered = true;
        self.revision = revision;
        let diff = ChunkDiff::of(&self.effective, &nodes);
        let removed = diff.removed(&self.effective, &nodes);
        let (effective, entries) = (&self.effective, &self.entries);
        let effective = self.guard.apply(
            &self.service,
            &self.effective,
            nodes.clone(),
            &removed,
            now,
            |n| {
                effective
                    .find(n.id())
                    .and_then(|i| health_at(effective, entries, i))
                    .is_some_and(NodeHealth::is_ejected)
            },
        );
        // Without held nodes the set in force is the registry's, whose
        // difference from the one before is known already.
        let diff = effective.same(&nodes).then_some(diff);
        self.listed = nodes;
        self.install(effective, diff);
    }

    /// Picks one node.
    ///
    /// `selector` is merged over the service's (`None`: the service's alone);
    /// `exclude` lists nodes this call already tried; `hash_key` is the key for
    /// `consistent_hash` (other balancers ignore it; without one a random point of
    /// the ring is taken). The candidates of each selector are built once per node
    /// set; a pick only steps the balancer.
    ///
    /// # Errors
    ///
    /// [`Error::NoNodes`] when the service has no nodes, [`Error::NoMatch`] when
    /// nothing matches and the fallback is strict, [`Error::NoWeight`] when every
    /// candidate has weight 0 under a weighted balancer, [`Error::AllExcluded`] when
    /// the call has tried every candidate.
    pub fn pick(
        &mut self,
        selector: Option<&Selector>,
        exclude: &[NodeHandle],
        hash_key: Option<HashKey>,
    ) -> Result<Picked, Error> {
        let home = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        self.current
            .pick(selector, exclude, hash_key, home, &mut self.rng)
    }

    /// Every node matching `selector` (merged over the service's), any weight; the
    /// ejected ones only when all matching nodes are ejected.
    ///
    /// # Errors
    ///
    /// [`Error::NoNodes`], or [`Error::NoMatch`] when nothing matches, whatever
    /// the fallback: a fan-out never falls back to every node.
    pub fn pick_all(&mut self, selector: Option<&Selector>) -> Result<Vec<Picked>, Error> {
        let home = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        self.current.pick_all(selector, home, &mut self.rng)
    }

    /// Sets the calls in flight on `node`, which `least_request` compares (a
    /// node's connection keeps this count itself). Unknown handles (nodes gone
    /// meanwhile) are ignored.
    pub fn report_load(&mut self, node: NodeHandle, in_flight: u32) {
        if let Some(slot) = self.position(node).and_then(|i| self.slot(i)) {
            slot.set_load(in_flight);
        }
    }

    /// Where the node of `handle` is in the set in force.
    fn position(&self, handle: NodeHandle) -> Option<usize> {
        let id = self.by_handle.get(&handle)?;
        self.effective.find(id)
    }

    /// The slot of the node at `i` in the set in force.
    fn slot(&self, i: usize) -> Option<&Arc<Slot>> {
        let (c, o) = self.effective.locate(i)?;
        self.entries.get(c)?.slots.get(o)
    }

    /// The health of the node at `i` in the set in force.
    fn health_mut(&mut self, i: usize) -> Option<&mut NodeHealth> {
        health_mut_at(&self.effective, &mut self.entries, i)
    }

    /// The slots and health of every node in force, in order.
    fn all_entries(&self) -> impl Iterator<Item = (&Arc<Slot>, &NodeHealth)> {
        self.entries
            .iter()
            .flat_map(|chunk| chunk.slots.iter().zip(&chunk.health))
    }

    /// The positions of the nodes that may not be picked: the only ones
    /// with an ejection or a pause to end.
    fn out_positions(&self) -> Vec<usize> {
        self.ejected
            .iter()
            .enumerate()
            .filter(|(_, &out)| out)
            .map(|(i, _)| i)
            .collect()
    }

    /// Records a failure of `node` (see [`ConnectionFailed`](crate::ConnectionFailed)): a node held by the panic
    /// threshold is dropped at once; another is ejected at its N-th consecutive
    /// failure if the share cap allows. Answers whether the candidates changed.
    pub fn connection_failed(&mut self, node: NodeHandle, now: Instant) -> bool {
        let Some(i) = self.position(node) else {
            return false;
        };
        let effective = self.effective.clone();
        let id = effective[i].id();
        if self.guard.release(id) {
            info!(service = %self.service, node = %id, "held node failed; dropping it as the registry said");
            let effective = self.guard.merge(self.listed.clone());
            self.install(effective, None);
            return true;
        }
        let config = self.config.clone();
        let Some(health) = self.health_mut(i) else {
            return false;
        };
        if !health.record_failure(config.ejection()) {
            return false;
        }
        if !self.eject(i, now, "consecutive failures") {
            return false;
        }
        self.publish();
        true
    }

    /// Ejects the nodes whose success rate since the last check is far below
    /// the others' (success-rate ejection; see
    /// [`EjectionConfig::with_success_rate`](crate::EjectionConfig::with_success_rate)),
    /// within the share cap, and starts the counts over. Answers whether the
    /// candidates changed.
    pub fn check_success_rate(&mut self, now: Instant) -> bool {
        let config = self.config.clone();
        let policy = config.ejection();
        let samples: Vec<(u64, u64)> = self
            .all_entries()
            .map(|(slot, health)| {
                let counts = slot.outcomes().take();
                // An ejected node is not compared (it has next to no attempts).
                if health.is_ejected() {
                    (0, 0)
                } else {
                    counts
                }
            })
            .collect();
        let outliers = success_rate_outliers(
            &samples,
            policy.success_rate_stdev_factor(),
            policy.success_rate_min_requests(),
            policy.success_rate_min_nodes(),
        );
        let mut changed = false;
        for i in outliers {
            let (ok, failed) = samples[i];
            debug!(service = %self.service, node = %self.effective[i].id(), ok, failed, "success-rate outlier");
            changed |= self.eject(i, now, "a success rate far below the other nodes'");
        }
        if changed {
            self.publish();
        }
        changed
    }

    /// Ejects the node at `i` for `why`, unless the share cap is reached;
    /// answers whether it did. The caller publishes.
    fn eject(&mut self, i: usize, now: Instant, why: &str) -> bool {
        let config = self.config.clone();
        let policy = config.ejection();
        let id = self.effective[i].id();
        let cap = max_ejected(self.effective.len(), policy.max_share());
        if self.ejected_count >= cap {
            debug!(
                service = %self.service, node = %id, ejected = self.ejected_count, cap, why,
                "node would be ejected but the ejection cap is reached; keeping it"
            );
            return false;
        }
        let Some(health) = health_mut_at(&self.effective, &mut self.entries, i) else {
            return false;
        };
        let until = health.eject(policy, now);
        warn!(
            service = %self.service, node = %id,
            failures = health.consecutive_failures(),
            ejected_for = ?until.saturating_duration_since(now),
            "ejecting node after {why}"
        );
        self.ejected[i] = true;
        self.ejected_count += 1;
        self.metrics.ejected();
        true
    }

    /// Keeps `node` out of picking until `until`, as its retry pushback asked
    /// (the node is not counted as failing, nor against the ejection cap).
    /// Answers whether the candidates changed.
    pub fn pushed_back(&mut self, node: NodeHandle, until: Instant) -> bool {
        let Some(i) = self.position(node) else {
            return false;
        };
        if !self.health_mut(i).is_some_and(|h| h.pause(until)) {
            return false;
        }
        debug!(service = %self.service, node = %self.effective[i].id(), "node asked for a pushback; not picked until it passes");
        self.ejected[i] = true;
        self.publish();
        true
    }

    /// Records what the health service of `node`'s server says: a node that
    /// does not serve is not picked until it serves again (it is not counted
    /// as failing, nor against the ejection cap). Answers whether that
    /// changed what is known of the node (a new snapshot is then published).
    pub fn health_changed(&mut self, node: NodeHandle, serving: bool) -> bool {
        let Some(i) = self.position(node) else {
            return false;
        };
        if !self.health_mut(i).is_some_and(|h| h.set_serving(serving)) {
            return false;
        }
        let id = self.effective[i].id();
        if serving {
            info!(service = %self.service, node = %id, "node's health says it serves again");
        } else {
            info!(service = %self.service, node = %id, "node's health says it does not serve; not picking it");
        }
        self.refresh_ejected();
        self.publish();
        true
    }

    /// Records that `node`'s server is closing a connection to it (it sent
    /// GOAWAY, or the connection ended): the node is not picked until
    /// [`reconnected`](Self::reconnected) says a fresh connection works (it is
    /// not counted as failing, nor against the ejection cap). Answers whether
    /// that changed what is known of the node (a new snapshot is then
    /// published).
    pub fn going_away(&mut self, node: NodeHandle) -> bool {
        self.set_going_away(node, true)
    }

    /// Records that a fresh connection to `node` works, after
    /// [`going_away`](Self::going_away). Answers whether that changed what is
    /// known of the node.
    pub fn reconnected(&mut self, node: NodeHandle) -> bool {
        self.set_going_away(node, false)
    }

    /// Whether `node` is in force and its server is closing its connection.
    pub fn is_going_away(&self, node: NodeHandle) -> bool {
        self.position(node)
            .and_then(|i| health_at(&self.effective, &self.entries, i))
            .is_some_and(NodeHealth::is_going_away)
    }

    /// The node of `handle`, when it is in force.
    pub fn node(&self, handle: NodeHandle) -> Option<&Node> {
        self.position(handle).and_then(|i| self.effective.get(i))
    }

    fn set_going_away(&mut self, node: NodeHandle, going: bool) -> bool {
        let Some(i) = self.position(node) else {
            return false;
        };
        if !self.health_mut(i).is_some_and(|h| h.set_going_away(going)) {
            return false;
        }
        let id = self.effective[i].id();
        if going {
            info!(service = %self.service, node = %id, "node's server is closing its connection (GOAWAY); not picking it");
        } else {
            info!(service = %self.service, node = %id, "a fresh connection to the node works again");
        }
        self.refresh_ejected();
        self.publish();
        true
    }

    /// Records a successful connection attempt to `node` (resets its failure
    /// count).
    pub fn connection_succeeded(&mut self, node: NodeHandle) {
        if let Some(health) = self.position(node).and_then(|i| self.health_mut(i)) {
            health.record_success();
        }
    }

    /// Brings back ejected nodes whose time is up and drops held nodes whose grace
    /// has passed. Answers whether the candidates changed.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut returned = false;
        for i in self.out_positions() {
            let Some(health) = health_mut_at(&self.effective, &mut self.entries, i) else {
                continue;
            };
            let (ejection_over, pause_over) = (health.expire(now), health.expire_pause(now));
            let id = self.effective.get(i).map(Node::id).unwrap_or_default();
            if ejection_over {
                info!(service = %self.service, node = %id, "ejection over; node is back");
            }
            if pause_over {
                debug!(service = %self.service, node = %id, "pushback over; node is back");
            }
            returned |= ejection_over || pause_over;
        }
        if self.guard.expire(now) {
            info!(service = %self.service, "panic grace over; dropping the held nodes");
            let effective = self.guard.merge(self.listed.clone());
            self.install(effective, None);
            return true;
        }
        if returned {
            self.refresh_ejected();
            self.publish();
        }
        returned
    }

    /// When [`expire`](Self::expire) has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let ejection = self
            .out_positions()
            .into_iter()
            .filter_map(|i| health_at(&self.effective, &self.entries, i))
            .flat_map(|h| [h.ejected_until(), h.paused_until()])
            .flatten()
            .min();
        match (ejection, self.guard.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The state of every node.
    pub fn status(&self) -> PickerStatus {
        let nodes = self
            .effective
            .iter()
            .zip(self.all_entries())
            .map(|(n, (slot, health))| NodeStatus {
                id: n.id().to_owned(),
                addr: n.addr().to_owned(),
                handle: slot.handle(),
                in_flight: slot.load(),
                consecutive_failures: health.consecutive_failures(),
                ejected: health.is_ejected(),
                paused: health.is_paused(),
                unhealthy: health.is_unhealthy(),
                going_away: health.is_going_away(),
                ejections: health.ejections(),
                held: self.guard.is_held(n.id()),
            })
            .collect();
        PickerStatus {
            service: self.service.clone(),
            discovered: self.discovered,
            revision: self.revision,
            listed: self.listed.len(),
            nodes,
            connections: self.all_entries().map(|(slot, _)| slot.connections()).sum(),
            refused: 0,
        }
    }

    /// Makes `effective` the set in force and publishes a new snapshot. The
    /// entries (slots and health) of the nodes that stay are carried over:
    /// whole for the chunks the two sets share, by id in the others. Only
    /// the nodes added or removed touch a map.
    ///
    /// `diff` is how `effective` differs from the set in force, when known.
    fn install(&mut self, effective: NodeSet, diff: Option<ChunkDiff>) {
        let diff = diff.unwrap_or_else(|| ChunkDiff::of(&self.effective, &effective));
        let old = std::mem::replace(&mut self.effective, effective.clone());
        let entries = std::mem::take(&mut self.entries);
        let (next_handle, by_handle, config) =
            (&mut self.next_handle, &mut self.by_handle, &self.config);
        let carried = carry_over(&old, entries, &self.ejected, &effective, diff, |node| {
            *next_handle += 1;
            let handle = NodeHandle(*next_handle);
            by_handle.insert(handle, node.id().into());
            (
                Arc::new(Slot::new(handle)),
                NodeHealth::new(config.ejection()),
            )
        });
        let mut dropped_ejections = 0;
        for (handle, ejected) in carried.dropped {
            self.by_handle.remove(&handle);
            dropped_ejections += usize::from(ejected);
        }
        self.ejected_count = self.ejected_count.saturating_sub(dropped_ejections);
        self.carry = Some(Installed {
            set: effective,
            from: carried.from.into(),
        });
        self.entries = carried.entries;
        self.ejected = carried.out;
        self.publish();
    }

    /// Recomputes which nodes may not be picked (ejected or paused) and how
    /// many are ejected (the share cap counts ejections only).
    fn refresh_ejected(&mut self) {
        let mut ejected_count = 0;
        self.ejected = self
            .all_entries()
            .map(|(_, health)| {
                ejected_count += usize::from(health.is_ejected());
                health.is_out()
            })
            .collect();
        self.ejected_count = ejected_count;
    }

    /// Builds the snapshot of the state in force, with the pools of the call
    /// selectors used since the last one, and makes it current. Selectors no
    /// call used since are dropped, to be built again if a call comes back
    /// with them.
    fn publish(&mut self) {
        let selectors = self.current.selectors_in_use();
        // The nodes of `current`, in the same order, are `effective` unless a
        // set was installed since; then `carry` says where each went.
        let carry = match self.carry.take() {
            Some(installed) if installed.set.same(&self.effective) => {
                Some(Carry::Mapped(installed.from))
            }
            _ if self.current.nodes().same(&self.effective) => Some(Carry::Same),
            _ => None,
        };
        let parts = Parts {
            service: self.service.clone(),
            config: self.config.clone(),
            discovered: self.discovered,
            revision: self.revision,
            nodes: self.effective.clone(),
            slots: self.entries.iter().map(|e| e.slots.clone()).collect(),
            members: self.entries.iter().map(|e| e.members.clone()).collect(),
            ejected: self.ejected.clone().into(),
            before: carry.map(|carry| (self.current.clone(), carry)),
        };
        let spilled = self.current.spills_over();
        self.current = Arc::new(Snapshot::build(parts, selectors, &mut self.rng));
        if let Some(preference) = self.config.locality() {
            match (spilled, self.current.spills_over()) {
                (false, true) => warn!(
                    service = %self.service, zone = preference.zone(),
                    min_healthy = preference.min_healthy(),
                    "too few pickable nodes in the client's zone; calls spill over to other zones"
                ),
                (true, false) => info!(
                    service = %self.service, zone = preference.zone(),
                    "enough pickable nodes in the client's zone again; calls stay in it"
                ),
                _ => {}
            }
        }
        let out = self.ejected.iter().filter(|&&out| out).count();
        self.metrics.nodes(
            self.effective.len() - out,
            self.ejected_count,
            self.guard.held_count(),
        );
    }
}

#[cfg(test)]
impl Picker {
    /// Checks what the picker keeps beside the set in force against the set:
    /// an entry per node in the set's chunks (its member as its node says),
    /// the out flags and ejection
    /// count as the healths say, a handle map of exactly the nodes in force,
    /// and a snapshot of the same set.
    pub(crate) fn assert_consistent(&self) {
        assert_eq!(self.entries.len(), self.effective.chunks().len());
        for (entries, chunk) in self.entries.iter().zip(self.effective.chunks()) {
            assert_eq!(entries.slots.len(), chunk.len());
            let members: Vec<_> = chunk
                .nodes()
                .iter()
                .map(crate::balance::Member::of)
                .collect();
            assert_eq!(*entries.members, *members);
            assert_eq!(entries.health.len(), chunk.len());
        }
        let out: Vec<bool> = self.all_entries().map(|(_, h)| h.is_out()).collect();
        assert_eq!(self.ejected, out, "out flags");
        let ejected = self.all_entries().filter(|(_, h)| h.is_ejected()).count();
        assert_eq!(self.ejected_count, ejected, "ejection count");
        assert_eq!(
            self.by_handle.len(),
            self.effective.len(),
            "handle map size"
        );
        for (node, (slot, _)) in self.effective.iter().zip(self.all_entries()) {
            assert_eq!(
                self.by_handle.get(&slot.handle()).map(|id| &**id),
                Some(node.id())
            );
        }
        assert!(self.current.nodes().same(&self.effective));
    }
}
