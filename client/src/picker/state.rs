//! The picker: node tracking, ejection and the panic guard, publishing
//! [`Snapshot`]s.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use registry_actor::Node;
use tracing::{debug, info, warn};

use super::carry::{Carry, NOT_CARRIED};
use super::picked::{NodeHandle, Picked};
use super::snapshot::{Parts, Slot, Snapshot};
use super::status::{NodeStatus, PickerStatus};
use crate::ejection::{max_ejected, success_rate_outliers, NodeHealth};
use crate::observe::PickerMetrics;
use crate::panic_guard::PanicGuard;
use crate::sorted;
use crate::{Error, HashKey, PickerConfig, Selector};

/// What the picker keeps of one node in force, beside it in the set.
#[derive(Debug)]
struct Entry {
    slot: Arc<Slot>,
    health: NodeHealth,
}

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
    listed: Arc<[Node]>,
    /// The set in force: listed plus held, sorted by id; an entry (slot and
    /// health) per node, in the same order.
    effective: Arc<[Node]>,
    entries: Vec<Entry>,
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
/// index of the same node in `current` (or [`NOT_CARRIED`]).
struct Installed {
    set: Arc<[Node]>,
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
        let empty: Arc<[Node]> = Arc::from(Vec::new());
        let current = Arc::new(Snapshot::build(
            Parts {
                service: service.clone(),
                config: config.clone(),
                discovered: false,
                revision: 0,
                nodes: empty.clone(),
                slots: Box::new([]),
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
    pub fn nodes(&self) -> &Arc<[Node]> {
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
    pub fn update(&mut self, nodes: Arc<[Node]>, revision: i64, now: Instant) {
        self.discovered = true;
        self.revision = revision;
        let (nodes, diff) = match sorted::diff_checked(&self.effective, &nodes) {
            Some(diff) => (nodes, diff),
            None => {
                let nodes = sorted::sorted(&nodes);
                let diff = sorted::diff(&self.effective, &nodes);
                (nodes, diff)
            }
        };
        let (effective, entries) = (&self.effective, &self.entries);
        let effective = self.guard.apply(
            &self.service,
            &self.effective,
            nodes.clone(),
            &diff.removed,
            now,
            |n| sorted::find(effective, n.id()).is_some_and(|i| entries[i].health.is_ejected()),
        );
        // Without held nodes the set in force is the registry's, whose
        // difference from the one before is known already.
        let diff = if Arc::ptr_eq(&effective, &nodes) {
            diff
        } else {
            sorted::diff(&self.effective, &effective)
        };
        self.listed = nodes;
        self.install_diffed(effective, diff);
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
        if let Some(i) = self.position(node) {
            self.entries[i].slot.set_load(in_flight);
        }
    }

    /// Where the node of `handle` is in the set in force.
    fn position(&self, handle: NodeHandle) -> Option<usize> {
        let id = self.by_handle.get(&handle)?;
        sorted::find(&self.effective, id)
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
            self.install(effective);
            return true;
        }
        let policy = self.config.ejection();
        let entry = &mut self.entries[i];
        if !entry.health.record_failure(policy) {
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
            .entries
            .iter()
            .map(|e| {
                let counts = e.slot.outcomes().take();
                // An ejected node is not compared (it has next to no attempts).
                if e.health.is_ejected() {
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
        let entry = &mut self.entries[i];
        let until = entry.health.eject(policy, now);
        warn!(
            service = %self.service, node = %id,
            failures = entry.health.consecutive_failures(),
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
        if !self.entries[i].health.pause(until) {
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
        if !self.entries[i].health.set_serving(serving) {
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
            .is_some_and(|i| self.entries[i].health.is_going_away())
    }

    /// The node of `handle`, when it is in force.
    pub fn node(&self, handle: NodeHandle) -> Option<&Node> {
        self.position(handle).map(|i| &self.effective[i])
    }

    fn set_going_away(&mut self, node: NodeHandle, going: bool) -> bool {
        let Some(i) = self.position(node) else {
            return false;
        };
        if !self.entries[i].health.set_going_away(going) {
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
        if let Some(i) = self.position(node) {
            self.entries[i].health.record_success();
        }
    }

    /// Brings back ejected nodes whose time is up and drops held nodes whose grace
    /// has passed. Answers whether the candidates changed.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut returned = false;
        for (node, entry) in self.effective.iter().zip(&mut self.entries) {
            if entry.health.expire(now) {
                info!(service = %self.service, node = %node.id(), "ejection over; node is back");
                returned = true;
            }
            if entry.health.expire_pause(now) {
                debug!(service = %self.service, node = %node.id(), "pushback over; node is back");
                returned = true;
            }
        }
        if self.guard.expire(now) {
            info!(service = %self.service, "panic grace over; dropping the held nodes");
            let effective = self.guard.merge(self.listed.clone());
            self.install(effective);
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
            .entries
            .iter()
            .flat_map(|e| [e.health.ejected_until(), e.health.paused_until()])
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
            .enumerate()
            .map(|(i, n)| {
                let entry = &self.entries[i];
                NodeStatus {
                    id: n.id().to_owned(),
                    addr: n.addr().to_owned(),
                    handle: entry.slot.handle(),
                    in_flight: entry.slot.load(),
                    consecutive_failures: entry.health.consecutive_failures(),
                    ejected: entry.health.is_ejected(),
                    paused: entry.health.is_paused(),
                    unhealthy: entry.health.is_unhealthy(),
                    going_away: entry.health.is_going_away(),
                    ejections: entry.health.ejections(),
                    held: self.guard.is_held(n.id()),
                }
            })
            .collect();
        PickerStatus {
            service: self.service.clone(),
            discovered: self.discovered,
            revision: self.revision,
            listed: self.listed.len(),
            nodes,
            connections: self.entries.iter().map(|e| e.slot.connections()).sum(),
            refused: 0,
        }
    }

    /// Makes `effective` (sorted by id) the set in force: each node that stays
    /// with its address keeps its entry (slot: handle, load, connection; and
    /// health), found by a merge walk of the two sorted sets; then a new
    /// snapshot is published. Only the nodes added or removed touch a map.
    fn install(&mut self, effective: Arc<[Node]>) {
        let diff = sorted::diff(&self.effective, &effective);
        self.install_diffed(effective, diff);
    }

    /// [`install`](Self::install) given how `effective` differs from the set
    /// in force.
    fn install_diffed(&mut self, effective: Arc<[Node]>, diff: sorted::Diff) {
        let sorted::Diff { matched, removed } = diff;
        for i in removed {
            if let Some(entry) = self.entries.get(i) {
                self.by_handle.remove(&entry.slot.handle());
            }
        }
        // The merge walk matches the old entries in their order, so they are
        // taken over in one pass; the ones it skips are the removed ones.
        let mut old = std::mem::take(&mut self.entries)
            .into_iter()
            .enumerate()
            .peekable();
        let mut entries = Vec::with_capacity(effective.len());
        let mut carried = Vec::with_capacity(effective.len());
        for (node, before) in effective.iter().zip(matched) {
            let same = before.is_some_and(|i| self.effective[i].same(node));
            carried.push(match before {
                Some(i) if same => i as u32,
                _ => NOT_CARRIED,
            });
            let kept = before.and_then(|i| {
                let keep = same || self.effective[i].addr() == node.addr();
                while old.next_if(|(j, _)| *j < i).is_some() {}
                let (_, entry) = old.next_if(|(j, _)| *j == i)?;
                if keep {
                    Some(entry)
                } else {
                    // Same id, new address: a new node for connections.
                    self.by_handle.remove(&entry.slot.handle());
                    None
                }
            });
            let entry = match kept {
                Some(entry) => entry,
                None => {
                    self.next_handle += 1;
                    let handle = NodeHandle(self.next_handle);
                    self.by_handle.insert(handle, node.id().into());
                    Entry {
                        slot: Arc::new(Slot::new(handle)),
                        health: NodeHealth::new(self.config.ejection()),
                    }
                }
            };
            entries.push(entry);
        }
        self.carry = Some(Installed {
            set: effective.clone(),
            from: carried.into(),
        });
        self.effective = effective;
        self.entries = entries;
        self.refresh_ejected();
        self.publish();
    }

    /// Recomputes which nodes may not be picked (ejected or paused) and how
    /// many are ejected (the share cap counts ejections only).
    fn refresh_ejected(&mut self) {
        let mut ejected_count = 0;
        self.ejected = self
            .entries
            .iter()
            .map(|e| {
                ejected_count += usize::from(e.health.is_ejected());
                e.health.is_out()
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
            Some(installed) if Arc::ptr_eq(&installed.set, &self.effective) => {
                Some(Carry::Mapped(installed.from))
            }
            _ if Arc::ptr_eq(self.current.nodes(), &self.effective) => Some(Carry::Same),
            _ => None,
        };
        let parts = Parts {
            service: self.service.clone(),
            config: self.config.clone(),
            discovered: self.discovered,
            revision: self.revision,
            nodes: self.effective.clone(),
            slots: self.entries.iter().map(|e| e.slot.clone()).collect(),
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
