//! The pure picker: node snapshot, candidate pools, ejection, panic guard.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use registry_actor::Node;
use semver::Version;
use tracing::{debug, info, warn};

use crate::balance::{Member, PickCx, Policy};
use crate::ejection::{max_ejected, NodeHealth};
use crate::hash::Prehashed;
use crate::panic_guard::PanicGuard;
use crate::selector::parse_version_lenient;
use crate::{Error, Fallback, HashKey, PickerConfig, Selector};

/// Candidate pools kept for call selectors besides the service's own; the cache is
/// emptied when it would grow past this.
const MAX_CACHED_SELECTORS: usize = 64;

/// A stable handle of one node of a picker: the same while the node keeps its id
/// and address, never reused for another node. Connection actors are keyed by it,
/// and report back with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeHandle(u64);

impl NodeHandle {
    /// The handle as a number (unique within its picker).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A node of a picker's snapshot, shared rather than copied: cloning it costs
/// one reference count. Dereferences to the [`Node`].
#[derive(Clone)]
pub struct NodeRef {
    snapshot: Arc<[Node]>,
    index: usize,
}

impl NodeRef {
    /// The node (also reachable through `*`).
    pub fn node(&self) -> &Node {
        &self.snapshot[self.index]
    }
}

impl std::ops::Deref for NodeRef {
    type Target = Node;

    fn deref(&self) -> &Node {
        self.node()
    }
}

impl PartialEq for NodeRef {
    fn eq(&self, other: &Self) -> bool {
        self.node() == other.node()
    }
}

impl Eq for NodeRef {}

impl fmt::Debug for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.node(), f)
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.node(), f)
    }
}

impl From<Node> for NodeRef {
    fn from(node: Node) -> Self {
        Self {
            snapshot: Arc::from(vec![node]),
            index: 0,
        }
    }
}

/// One picked node: the node, its stable handle, and the snapshot it came from.
///
/// Cheap to make and to clone: it shares the picker's immutable snapshot.
#[derive(Clone)]
pub struct Picked {
    node: NodeRef,
    handle: NodeHandle,
    revision: i64,
    connection: Option<crate::Connection>,
}

impl Picked {
    /// The node.
    pub fn node(&self) -> &Node {
        self.node.node()
    }

    /// The node, shared with the snapshot it was picked from.
    pub fn node_ref(&self) -> &NodeRef {
        &self.node
    }

    /// The node's stable handle.
    pub fn handle(&self) -> NodeHandle {
        self.handle
    }

    /// The registry revision of the snapshot the node was picked from.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The node's connection, owned by its connection actor. Set on every answer
    /// of a [`PickerActor`](crate::PickerActor) (unless the node's address cannot
    /// be used); `None` from a bare [`Picker`].
    pub fn connection(&self) -> Option<&crate::Connection> {
        self.connection.as_ref()
    }

    pub(crate) fn set_connection(&mut self, connection: crate::Connection) {
        self.connection = Some(connection);
    }
}

impl fmt::Debug for Picked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picked")
            .field("node", self.node())
            .field("handle", &self.handle)
            .field("revision", &self.revision)
            .finish()
    }
}

/// What a picker knows of its nodes, for health pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PickerStatus {
    /// The service.
    pub service: Arc<str>,
    /// Whether a node set has arrived from the registry.
    pub discovered: bool,
    /// The registry revision of the last node set.
    pub revision: i64,
    /// How many nodes the registry lists.
    pub listed: usize,
    /// Every node in force (listed, or held by the panic threshold), by id.
    pub nodes: Vec<NodeStatus>,
}

impl PickerStatus {
    /// The status of the node with this id.
    pub fn node(&self, id: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// How many nodes are ejected.
    pub fn ejected(&self) -> usize {
        self.nodes.iter().filter(|n| n.ejected).count()
    }

    /// How many nodes are held by the panic threshold.
    pub fn held(&self) -> usize {
        self.nodes.iter().filter(|n| n.held).count()
    }
}

/// One node of a [`PickerStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node id.
    pub id: String,
    /// The node address.
    pub addr: String,
    /// Its stable handle.
    pub handle: NodeHandle,
    /// Calls in flight, as last reported.
    pub in_flight: u32,
    /// Consecutive connection failures.
    pub consecutive_failures: u32,
    /// Whether it is ejected now.
    pub ejected: bool,
    /// How many times it was ejected.
    pub ejections: u32,
    /// Whether the registry dropped it and the panic threshold holds it.
    pub held: bool,
}

#[derive(Debug)]
struct Tracked {
    addr: Box<str>,
    handle: NodeHandle,
    health: NodeHealth,
    seen: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ready,
    NoNodes,
    NoMatch,
}

/// The candidates of one selector, and the balancer built over them.
#[derive(Debug)]
struct Pool {
    /// The selector in force (the call's over the service's), for errors.
    selector: Selector,
    outcome: Outcome,
    /// Matching nodes (not ejected, unless all are), any weight: for `pick_all`.
    all: Box<[u32]>,
    /// The balancer's candidates: `all`, less weight 0 for weighted balancers.
    indices: Box<[u32]>,
    policy: Policy,
    /// Whether a call used this pool since the last rebuild.
    used: bool,
}

/// The picking logic of one service, without an actor: the immutable node
/// snapshot, a balancer per selector built when the set changes, ejection and the
/// panic threshold. [`PickerActor`](crate::PickerActor) is a thin actor over it;
/// use it directly to pick without messages (or to measure picks).
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
    config: PickerConfig,
    rng: SmallRng,
    discovered: bool,
    revision: i64,
    /// The registry's set.
    listed: Arc<[Node]>,
    /// The set in force: listed plus held.
    snapshot: Arc<[Node]>,
    handles: Vec<NodeHandle>,
    loads: Vec<u32>,
    ejected: Vec<bool>,
    ejected_count: usize,
    versions: Option<Box<[Option<Version>]>>,
    by_handle: HashMap<NodeHandle, u32>,
    tracked: HashMap<Box<str>, Tracked>,
    default_pool: Pool,
    /// Call selectors → their pool in `pool_list`.
    pools: HashMap<Selector, usize, Prehashed>,
    pool_list: Vec<Pool>,
    guard: PanicGuard,
    next_handle: u64,
    generation: u64,
}

impl fmt::Debug for Picker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picker")
            .field("service", &self.service)
            .field("balancer", &self.config.balancer())
            .field("revision", &self.revision)
            .field("nodes", &self.snapshot.len())
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

    fn with_rng(service: Arc<str>, config: PickerConfig, rng: SmallRng) -> Self {
        let guard = PanicGuard::new(config.panic_threshold(), config.panic_grace());
        let empty: Arc<[Node]> = Arc::from(Vec::new());
        let mut picker = Self {
            service,
            default_pool: Pool::empty(config.selector().clone()),
            config,
            rng,
            discovered: false,
            revision: 0,
            listed: empty.clone(),
            snapshot: empty,
            handles: Vec::new(),
            loads: Vec::new(),
            ejected: Vec::new(),
            ejected_count: 0,
            versions: None,
            by_handle: HashMap::new(),
            tracked: HashMap::new(),
            pools: HashMap::default(),
            pool_list: Vec::new(),
            guard,
            next_handle: 0,
            generation: 0,
        };
        picker.rebuild_pools();
        picker
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
        &self.snapshot
    }

    /// Whether `handle` names a node in force.
    pub fn contains(&self, handle: NodeHandle) -> bool {
        self.by_handle.contains_key(&handle)
    }

    /// Applies new settings (a configuration reload): balancer, selector and
    /// fallback take effect for the next pick; handles, loads and health stay.
    /// The ejection and panic settings of nodes already tracked keep the values
    /// they were created with.
    pub fn reconfigure(&mut self, config: PickerConfig) {
        if config == self.config {
            return;
        }
        self.config = config;
        self.rebuild_pools();
    }

    /// Takes a new node set from the registry (at etcd `revision`), applying the
    /// panic threshold, and rebuilds every balancer.
    pub fn update(&mut self, nodes: Arc<[Node]>, revision: i64, now: Instant) {
        self.discovered = true;
        self.revision = revision;
        let tracked = &self.tracked;
        let effective = self
            .guard
            .apply(&self.service, &self.snapshot, nodes.clone(), now, |n| {
                tracked.get(n.id()).is_some_and(|t| t.health.is_ejected())
            });
        self.listed = nodes;
        self.install(effective);
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
        let pool = match selector {
            None => &mut self.default_pool,
            Some(s) => {
                let i = self.pool_index(s);
                &mut self.pool_list[i]
            }
        };
        pool.used = true;
        match pool.outcome {
            Outcome::Ready => {}
            Outcome::NoNodes => return Err(no_nodes(&self.service)),
            Outcome::NoMatch => {
                return Err(no_match(&self.service, &pool.selector, &self.snapshot));
            }
        }
        if pool.indices.is_empty() {
            return Err(Error::NoWeight {
                service: self.service.clone(),
                balancer: self.config.balancer(),
            });
        }
        let indices = &pool.indices;
        let loads = &self.loads;
        let hash = hash_key.map(HashKey::get);
        let load = |p: usize| loads[indices[p] as usize];
        let pos = if exclude.is_empty() {
            pool.policy.pick(&mut PickCx {
                rng: &mut self.rng,
                hash,
                accept: |_| true,
                load,
            })
        } else {
            let handles = &self.handles;
            pool.policy.pick(&mut PickCx {
                rng: &mut self.rng,
                hash,
                accept: |p: usize| !exclude.contains(&handles[indices[p] as usize]),
                load,
            })
        };
        let Some(pos) = pos else {
            return Err(Error::AllExcluded {
                service: self.service.clone(),
                tried: exclude.len(),
            });
        };
        let index = pool.indices[pos] as usize;
        Ok(Picked {
            node: NodeRef {
                snapshot: self.snapshot.clone(),
                index,
            },
            handle: self.handles[index],
            revision: self.revision,
            connection: None,
        })
    }

    /// Every node matching `selector` (merged over the service's), any weight; the
    /// ejected ones only when all matching nodes are ejected.
    ///
    /// # Errors
    ///
    /// [`Error::NoNodes`], or [`Error::NoMatch`] when nothing matches and the
    /// fallback is strict.
    pub fn pick_all(&mut self, selector: Option<&Selector>) -> Result<Vec<Picked>, Error> {
        let pool = match selector {
            None => &mut self.default_pool,
            Some(s) => {
                let i = self.pool_index(s);
                &mut self.pool_list[i]
            }
        };
        pool.used = true;
        match pool.outcome {
            Outcome::Ready => Ok(pool
                .all
                .iter()
                .map(|&i| Picked {
                    node: NodeRef {
                        snapshot: self.snapshot.clone(),
                        index: i as usize,
                    },
                    handle: self.handles[i as usize],
                    revision: self.revision,
                    connection: None,
                })
                .collect()),
            Outcome::NoNodes => Err(no_nodes(&self.service)),
            Outcome::NoMatch => Err(no_match(&self.service, &pool.selector, &self.snapshot)),
        }
    }

    /// Records the calls in flight on `node` (for `least_request`). Unknown
    /// handles (nodes gone meanwhile) are ignored.
    pub fn report_load(&mut self, node: NodeHandle, in_flight: u32) {
        if let Some(&i) = self.by_handle.get(&node) {
            self.loads[i as usize] = in_flight;
        }
    }

    /// Records a failed connection attempt to `node`: a node held by the panic
    /// threshold is dropped at once; another is ejected at its N-th consecutive
    /// failure if the share cap allows. Answers whether the candidates changed.
    pub fn connection_failed(&mut self, node: NodeHandle, now: Instant) -> bool {
        let Some(&i) = self.by_handle.get(&node) else {
            return false;
        };
        let i = i as usize;
        let snapshot = self.snapshot.clone();
        let id = snapshot[i].id();
        if self.guard.release(id) {
            info!(service = %self.service, node = %id, "held node failed; dropping it as the registry said");
            let effective = self.guard.merge(self.listed.clone());
            self.install(effective);
            return true;
        }
        let Some(tracked) = self.tracked.get_mut(id) else {
            return false;
        };
        let policy = self.config.ejection();
        if !tracked.health.record_failure(policy) {
            return false;
        }
        let cap = max_ejected(self.snapshot.len(), policy.max_share());
        if self.ejected_count >= cap {
            debug!(
                service = %self.service, node = %id, ejected = self.ejected_count, cap,
                "node keeps failing but the ejection cap is reached; keeping it"
            );
            return false;
        }
        let until = tracked.health.eject(policy, now);
        warn!(
            service = %self.service, node = %id,
            failures = tracked.health.consecutive_failures(),
            ejected_for = ?until.saturating_duration_since(now),
            "ejecting node after consecutive connection failures"
        );
        self.ejected[i] = true;
        self.ejected_count += 1;
        self.rebuild_pools();
        true
    }

    /// Records a successful connection attempt to `node` (resets its failure
    /// count).
    pub fn connection_succeeded(&mut self, node: NodeHandle) {
        if let Some(&i) = self.by_handle.get(&node) {
            if let Some(t) = self.tracked.get_mut(self.snapshot[i as usize].id()) {
                t.health.record_success();
            }
        }
    }

    /// Brings back ejected nodes whose time is up and drops held nodes whose grace
    /// has passed. Answers whether the candidates changed.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut returned = false;
        for (id, t) in &mut self.tracked {
            if t.health.expire(now) {
                info!(service = %self.service, node = %id, "ejection over; node is back");
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
            self.rebuild_pools();
        }
        returned
    }

    /// When [`expire`](Self::expire) has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let ejection = self
            .tracked
            .values()
            .filter_map(|t| t.health.ejected_until())
            .min();
        match (ejection, self.guard.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The state of every node.
    pub fn status(&self) -> PickerStatus {
        let nodes = self
            .snapshot
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let health = self.tracked.get(n.id()).map(|t| &t.health);
                NodeStatus {
                    id: n.id().to_owned(),
                    addr: n.addr().to_owned(),
                    handle: self.handles[i],
                    in_flight: self.loads[i],
                    consecutive_failures: health.map_or(0, |h| h.consecutive_failures()),
                    ejected: self.ejected[i],
                    ejections: health.map_or(0, |h| h.ejections()),
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
        }
    }

    /// Makes `effective` the set in force: handles, loads and health carried over
    /// by node, balancers rebuilt.
    fn install(&mut self, effective: Arc<[Node]>) {
        self.generation += 1;
        let generation = self.generation;
        let old_loads = std::mem::take(&mut self.loads);
        let old_by_handle = std::mem::take(&mut self.by_handle);
        let n = effective.len();
        let mut handles = Vec::with_capacity(n);
        let mut loads = Vec::with_capacity(n);
        let mut by_handle = HashMap::with_capacity(n);
        for (i, node) in effective.iter().enumerate() {
            let tracked = match self.tracked.get_mut(node.id()) {
                Some(t) if *t.addr == *node.addr() => t,
                _ => {
                    self.next_handle += 1;
                    let t = Tracked {
                        addr: node.addr().into(),
                        handle: NodeHandle(self.next_handle),
                        health: NodeHealth::new(self.config.ejection()),
                        seen: generation,
                    };
                    match self.tracked.entry(node.id().into()) {
                        Entry::Occupied(mut e) => {
                            e.insert(t);
                            e.into_mut()
                        }
                        Entry::Vacant(e) => e.insert(t),
                    }
                }
            };
            tracked.seen = generation;
            let handle = tracked.handle;
            handles.push(handle);
            loads.push(
                old_by_handle
                    .get(&handle)
                    .and_then(|&j| old_loads.get(j as usize))
                    .copied()
                    .unwrap_or(0),
            );
            by_handle.insert(handle, i as u32);
        }
        self.tracked.retain(|_, t| t.seen == generation);
        self.snapshot = effective;
        self.handles = handles;
        self.loads = loads;
        self.by_handle = by_handle;
        self.versions = None;
        self.refresh_ejected();
        self.rebuild_pools();
    }

    fn refresh_ejected(&mut self) {
        let tracked = &self.tracked;
        self.ejected = self
            .snapshot
            .iter()
            .map(|n| tracked.get(n.id()).is_some_and(|t| t.health.is_ejected()))
            .collect();
        self.ejected_count = self.ejected.iter().filter(|&&e| e).count();
    }

    /// Rebuilds the service's pool and those of the call selectors used since the
    /// last rebuild; the others are dropped, to be built again if a call comes
    /// back with them. A change costs a rebuild of the selectors in use, not of
    /// every selector ever seen.
    fn rebuild_pools(&mut self) {
        let base = self.config.selector().clone();
        self.default_pool = self.build_pool(base);
        let old = std::mem::take(&mut self.pools);
        let old_list = std::mem::take(&mut self.pool_list);
        for (selector, i) in old {
            if old_list.get(i).is_some_and(|pool| pool.used) {
                let pool = self.build_pool(selector.merged_over(self.config.selector()));
                self.pools.insert(selector, self.pool_list.len());
                self.pool_list.push(pool);
            }
        }
    }

    /// The pool of a call selector, built on its first use: one hash lookup when
    /// it is cached.
    fn pool_index(&mut self, selector: &Selector) -> usize {
        if let Some(&i) = self.pools.get(selector) {
            return i;
        }
        if self.pools.len() >= MAX_CACHED_SELECTORS {
            self.pools.clear();
            self.pool_list.clear();
        }
        let pool = self.build_pool(selector.merged_over(self.config.selector()));
        let i = self.pool_list.len();
        self.pool_list.push(pool);
        self.pools.insert(selector.clone(), i);
        i
    }

    fn build_pool(&mut self, selector: Selector) -> Pool {
        if self.snapshot.is_empty() {
            return Pool::empty(selector);
        }
        if selector.needs_semver() && self.versions.is_none() {
            self.versions = Some(
                self.snapshot
                    .iter()
                    .map(|n| parse_version_lenient(n.version()))
                    .collect(),
            );
        }
        let versions = self.versions.as_deref();
        let mut matching: Vec<u32> = (0..self.snapshot.len())
            .filter(|&i| {
                let parsed = versions.and_then(|v| v[i].as_ref());
                selector.matches_parsed(&self.snapshot[i], parsed)
            })
            .map(|i| i as u32)
            .collect();
        if matching.is_empty() {
            match selector.fallback().unwrap_or(self.config.fallback()) {
                Fallback::Strict => {
                    let mut pool = Pool::empty(selector);
                    pool.outcome = Outcome::NoMatch;
                    return pool;
                }
                Fallback::Any => matching = (0..self.snapshot.len() as u32).collect(),
            }
        }
        let healthy: Vec<u32> = matching
            .iter()
            .copied()
            .filter(|&i| !self.ejected[i as usize])
            .collect();
        let all: Box<[u32]> = if healthy.is_empty() {
            matching.into()
        } else {
            healthy.into()
        };
        let balancer = self.config.balancer();
        let indices: Box<[u32]> = if balancer.is_weighted() {
            all.iter()
                .copied()
                .filter(|&i| self.snapshot[i as usize].weight() > 0)
                .collect()
        } else {
            all.clone()
        };
        let members: Vec<Member<'_>> = indices
            .iter()
            .map(|&i| {
                let node = &self.snapshot[i as usize];
                Member {
                    id: node.id(),
                    weight: node.weight(),
                }
            })
            .collect();
        let policy = Policy::build(balancer, &members, &mut self.rng);
        Pool {
            selector,
            outcome: Outcome::Ready,
            all,
            indices,
            policy,
            used: false,
        }
    }
}

impl Pool {
    fn empty(selector: Selector) -> Self {
        Self {
            selector,
            outcome: Outcome::NoNodes,
            all: Box::new([]),
            indices: Box::new([]),
            policy: Policy::PickFirst { len: 0 },
            used: false,
        }
    }
}

fn no_nodes(service: &Arc<str>) -> Error {
    Error::NoNodes {
        service: service.clone(),
    }
}

fn no_match(service: &Arc<str>, selector: &Selector, nodes: &[Node]) -> Error {
    let mut versions: Vec<String> = nodes.iter().map(|n| n.version().to_owned()).collect();
    versions.sort();
    versions.dedup();
    Error::NoMatch {
        service: service.clone(),
        selector: selector.to_string(),
        available_versions: versions,
    }
}
