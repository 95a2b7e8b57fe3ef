//! The immutable pick state: what calls read, without a lock, to pick.
//!
//! The picker builds a [`Snapshot`] whenever its candidates change (a node
//! set, an ejection, a reload) and publishes it whole; calls load the one in
//! force and pick from it. Everything a pick reads is built here, once: the
//! nodes, a [`Slot`] per node (its stable handle, its calls in flight and its
//! connection once one is made), and the candidate pool of the service's
//! selector. Under a zone preference a pool's balancer picks among the
//! preferred zones' nodes, with a second balancer over every zone's nodes for
//! a call that has tried all of those; which zones are preferred is decided
//! here, from the nodes' health, so picks never count healthy nodes. Pools of call selectors are built on their first use against
//! this snapshot and cached in it; the picker builds the ones still in use
//! into the next snapshot.
//!
//! Balancer cursors are atomics and randomness comes from the picking thread,
//! so concurrent picks never wait for each other, nor for the next snapshot
//! being built.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use rand::rngs::SmallRng;
use registry_actor::{Node, NodeSet};
use semver::Version;

use super::carry::{Carry, Matched};
use super::picked::{NodeHandle, NodeRef, Picked};
use crate::balance::{Member, PickCx, Policy};
use crate::connection::{Alive, Connection, Outcomes};
use crate::hash::Prehashed;
use crate::selector::parse_version_lenient;
use crate::{Error, Fallback, HashKey, PickerConfig, Selector};

/// Candidate pools kept for call selectors besides the service's own; the cache is
/// emptied when it would grow past this.
const MAX_CACHED_SELECTORS: usize = 64;

/// One node's lasting state across snapshots: its handle, its calls in flight
/// and its connections once made, one per runtime that calls it. Shared by
/// every snapshot the node is in.
#[derive(Debug)]
pub(crate) struct Slot {
    handle: NodeHandle,
    load: Arc<AtomicU32>,
    outcomes: Arc<Outcomes>,
    homes: ArcSwap<Vec<Homed>>,
}

/// A node's connection made on one runtime.
#[derive(Debug, Clone)]
pub(crate) struct Homed {
    /// The runtime's key (`None`: the client's I/O runtime).
    pub(crate) key: Option<tokio::runtime::Id>,
    pub(crate) alive: Alive,
    pub(crate) connection: Connection,
}

impl Slot {
    pub(crate) fn new(handle: NodeHandle) -> Self {
        Self {
            handle,
            load: Arc::new(AtomicU32::new(0)),
            outcomes: Arc::default(),
            homes: ArcSwap::default(),
        }
    }

    pub(crate) fn handle(&self) -> NodeHandle {
        self.handle
    }

    /// The counter of calls in flight, which the node's connection keeps.
    pub(crate) fn load_counter(&self) -> &Arc<AtomicU32> {
        &self.load
    }

    /// The counts of attempts' outcomes, which the node's connections keep.
    pub(crate) fn outcomes(&self) -> &Arc<Outcomes> {
        &self.outcomes
    }

    pub(crate) fn load(&self) -> u32 {
        self.load.load(Ordering::Relaxed)
    }

    pub(crate) fn set_load(&self, in_flight: u32) {
        self.load.store(in_flight, Ordering::Relaxed);
    }

    /// The node's connection on the runtime `key`, while that runtime runs.
    pub(crate) fn connection(&self, key: Option<tokio::runtime::Id>) -> Option<Connection> {
        self.homes
            .load()
            .iter()
            .find(|h| h.key == key && h.alive.get())
            .map(|h| h.connection.clone())
    }

    /// How many of the node's connections are on running runtimes.
    pub(crate) fn connections(&self) -> usize {
        self.homes.load().iter().filter(|h| h.alive.get()).count()
    }

    /// Adds `homed`, dropping connections of runtimes that have stopped;
    /// answers the connection in force on its runtime (an earlier one stays)
    /// and whether `homed` was added.
    pub(crate) fn attach(&self, homed: Homed) -> (Connection, bool) {
        let mut added = true;
        let mut answer = homed.connection.clone();
        self.homes.rcu(|homes| {
            let mut next: Vec<Homed> = homes.iter().filter(|h| h.alive.get()).cloned().collect();
            match next.iter().find(|h| h.key == homed.key) {
                Some(existing) => {
                    added = false;
                    answer = existing.connection.clone();
                }
                None => {
                    added = true;
                    answer = homed.connection.clone();
                    next.push(homed.clone());
                }
            }
            next
        });
        (answer, added)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ready,
    NoNodes,
    NoMatch,
}

/// The candidates of one selector, and the balancer built over them.
#[derive(Debug)]
pub(crate) struct Pool {
    /// The selector in force (the call's over the service's), for errors.
    selector: Selector,
    outcome: Outcome,
    /// Whether nothing matched and the `any` fallback put every node here.
    fell_back: bool,
    /// Matching nodes (not ejected, unless all are), any weight: for `pick_all`.
    all: Box<[u32]>,
    /// The balancer's candidates: `all` (narrowed to the preferred zones under
    /// a zone preference), less weight 0 for weighted balancers.
    local: Candidates,
    /// The candidates of every zone, when a zone preference narrowed `local`:
    /// picked from when the call has tried every node of `local`.
    spill: Option<Box<Candidates>>,
    /// Whether a call used this pool (it is then built into the next snapshot).
    used: AtomicBool,
    /// Which nodes match `selector` (`None` when it matches every node without
    /// reading any): the next snapshot takes over the answers of the nodes it
    /// shares with this one.
    matched: Option<Matched>,
}

/// Nodes a balancer picks among, and the balancer built over them.
#[derive(Debug)]
struct Candidates {
    indices: Box<[u32]>,
    policy: Policy,
}

/// Everything a pick reads, immutable once published.
pub(crate) struct Snapshot {
    service: Arc<str>,
    config: Arc<PickerConfig>,
    discovered: bool,
    revision: i64,
    nodes: NodeSet,
    /// The slots of each chunk of `nodes`, in the same order.
    slots: Box<[Arc<[Arc<Slot>]>]>,
    /// The nodes of each chunk of `nodes` as balancers see them.
    members: Box<[Arc<[Member]>]>,
    ejected: Box<[bool]>,
    versions: OnceLock<Box<[Option<Version>]>>,
    default_pool: Pool,
    /// Pools of call selectors, built on first use.
    pools: ArcSwap<SelectorPools>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("service", &self.service)
            .field("revision", &self.revision)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

/// Pools of call selectors; selectors carry their hash.
type SelectorPools = std::collections::HashMap<Selector, Arc<Pool>, Prehashed>;

/// What a snapshot is built from.
pub(crate) struct Parts {
    pub(crate) service: Arc<str>,
    pub(crate) config: Arc<PickerConfig>,
    pub(crate) discovered: bool,
    pub(crate) revision: i64,
    pub(crate) nodes: NodeSet,
    /// The slots of each chunk of `nodes`, in the same order.
    pub(crate) slots: Box<[Arc<[Arc<Slot>]>]>,
    /// The nodes of each chunk of `nodes` as balancers see them.
    pub(crate) members: Box<[Arc<[Member]>]>,
    pub(crate) ejected: Box<[bool]>,
    /// The snapshot before, and how `nodes` map to its nodes: pools take
    /// over its selectors' answers for the nodes both share.
    pub(crate) before: Option<(Arc<Snapshot>, Carry)>,
}

impl Snapshot {
    /// Builds the snapshot of `parts`, with the pools of `selectors` (the call
    /// selectors in use) built ahead.
    pub(crate) fn build(parts: Parts, selectors: Vec<Selector>, rng: &mut SmallRng) -> Self {
        let before = parts.before;
        let mut snapshot = Self {
            default_pool: Pool::empty(parts.config.selector().clone()),
            service: parts.service,
            config: parts.config,
            discovered: parts.discovered,
            revision: parts.revision,
            nodes: parts.nodes,
            slots: parts.slots,
            members: parts.members,
            ejected: parts.ejected,
            versions: OnceLock::new(),
            pools: ArcSwap::default(),
        };
        let default_before = before
            .as_ref()
            .map(|(was, carry)| (&was.default_pool, carry));
        snapshot.default_pool =
            snapshot.build_pool(snapshot.config.selector().clone(), default_before, rng);
        let pools_before = before
            .as_ref()
            .map(|(was, carry)| (was.pools.load(), carry));
        let pools: SelectorPools = selectors
            .into_iter()
            .map(|s| {
                let pool_before = pools_before
                    .as_ref()
                    .and_then(|(pools, carry)| Some((&**pools.get(&s)?, *carry)));
                let merged = s.merged_over(snapshot.config.selector());
                let pool = snapshot.build_pool(merged, pool_before, rng);
                (s, Arc::new(pool))
            })
            .collect();
        snapshot.pools = ArcSwap::from_pointee(pools);
        snapshot
    }

    pub(crate) fn service(&self) -> &Arc<str> {
        &self.service
    }

    /// The nodes, sorted by id.
    pub(crate) fn nodes(&self) -> &NodeSet {
        &self.nodes
    }

    /// The slots of each chunk of the nodes.
    #[cfg(test)]
    pub(crate) fn slot_chunks(&self) -> &[Arc<[Arc<Slot>]>] {
        &self.slots
    }

    /// The chunk of the node at `index`, and its position there. Candidate
    /// indices come from this snapshot's own set, so they are in range.
    fn locate(&self, index: usize) -> (usize, usize) {
        let located = self.nodes.locate(index);
        debug_assert!(located.is_some(), "index {index} of {}", self.nodes.len());
        located.unwrap_or_default()
    }

    /// The nodes at `indices` (in range), read chunk after chunk.
    fn nodes_at<'a>(&'a self, indices: &'a [u32]) -> impl Iterator<Item = &'a Node> + 'a {
        self.at(indices, |c| &self.nodes.chunks()[c].nodes()[..])
    }

    /// The nodes at `indices` (in range) as balancers see them.
    fn members_at<'a>(&'a self, indices: &'a [u32]) -> impl Iterator<Item = &'a Member> + 'a {
        self.at(indices, |c| &self.members[c][..])
    }

    /// The items at `indices` (in range) of a list kept chunk by chunk beside
    /// the nodes (`chunk(c)`: its items of chunk `c`), read chunk after
    /// chunk: ascending indices, as candidate lists are, cost no search.
    fn at<'a, T: 'a>(
        &'a self,
        indices: &'a [u32],
        chunk: impl Fn(usize) -> &'a [T] + 'a,
    ) -> impl Iterator<Item = &'a T> + 'a {
        let chunks = self.nodes.chunks();
        let mut c = 0;
        indices.iter().map(move |&i| {
            let i = i as usize;
            let within = |c: usize| {
                chunks
                    .get(c)
                    .is_some_and(|k| (k.start()..k.start() + k.len()).contains(&i))
            };
            if !within(c) {
                c = if within(c + 1) {
                    c + 1
                } else {
                    self.locate(i).0
                };
            }
            &chunk(c)[i - chunks[c].start()]
        })
    }

    /// The slot of the node at `index` (in range).
    fn slot_at(&self, index: usize) -> &Slot {
        let (c, o) = self.locate(index);
        &self.slots[c][o]
    }

    pub(crate) fn is_discovered(&self) -> bool {
        self.discovered
    }

    /// Whether the service has at least one node in this snapshot.
    pub(crate) fn has_nodes(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// Whether a zone preference is in force and the service's candidates
    /// reach beyond the client's zone (too few of its nodes are pickable).
    pub(crate) fn spills_over(&self) -> bool {
        let Some(preference) = self.config.locality() else {
            return false;
        };
        self.nodes_at(&self.default_pool.local.indices)
            .any(|node| node.zone() != preference.zone())
    }

    /// The slot of `handle`, if the node is in this snapshot.
    pub(crate) fn slot(&self, handle: NodeHandle) -> Option<&Arc<Slot>> {
        // Slots are in node order, handles are not: a scan, used off the pick path.
        self.slots
            .iter()
            .flat_map(|c| c.iter())
            .find(|s| s.handle == handle)
    }

    /// The call selectors whose pools calls used, to build into the next snapshot.
    pub(crate) fn selectors_in_use(&self) -> Vec<Selector> {
        self.pools
            .load()
            .iter()
            .filter(|(_, pool)| pool.used.load(Ordering::Relaxed))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Picks one node. See [`Picker::pick`](super::Picker::pick).
    pub(crate) fn pick(
        &self,
        selector: Option<&Selector>,
        exclude: &[NodeHandle],
        hash_key: Option<HashKey>,
        home: Option<tokio::runtime::Id>,
        rng: &mut SmallRng,
    ) -> Result<Picked, Error> {
        let pool = self.ready_pool(selector, rng)?;
        let widest = pool.spill.as_deref().unwrap_or(&pool.local);
        if widest.indices.is_empty() {
            return Err(Error::NoWeight {
                service: self.service.clone(),
                balancer: self.config.balancer(),
            });
        }
        let hash = hash_key.map(HashKey::get);
        let index = self.pick_in(&pool.local, exclude, hash, rng).or_else(|| {
            let spill = pool.spill.as_deref()?;
            self.pick_in(spill, exclude, hash, rng)
        });
        let Some(index) = index else {
            return Err(Error::AllExcluded {
                service: self.service.clone(),
                tried: exclude.len(),
            });
        };
        Ok(self.picked(index, home))
    }

    /// The node `candidates`' balancer picks, leaving out `exclude`.
    fn pick_in(
        &self,
        candidates: &Candidates,
        exclude: &[NodeHandle],
        hash: Option<u64>,
        rng: &mut SmallRng,
    ) -> Option<usize> {
        let indices = &candidates.indices;
        if indices.is_empty() {
            return None;
        }
        let load = |p: usize| self.slot_at(indices[p] as usize).load();
        let pos = if exclude.is_empty() {
            candidates.policy.pick(&mut PickCx {
                rng,
                hash,
                accept: |_| true,
                load,
            })
        } else {
            candidates.policy.pick(&mut PickCx {
                rng,
                hash,
                accept: |p: usize| !exclude.contains(&self.slot_at(indices[p] as usize).handle),
                load,
            })
        }?;
        Some(indices[pos] as usize)
    }

    /// Every node matching `selector`. See [`Picker::pick_all`](super::Picker::pick_all).
    pub(crate) fn pick_all(
        &self,
        selector: Option<&Selector>,
        home: Option<tokio::runtime::Id>,
        rng: &mut SmallRng,
    ) -> Result<Vec<Picked>, Error> {
        let pool = self.ready_pool(selector, rng)?;
        if pool.fell_back {
            // A fan-out goes to the nodes its selector names, never to all.
            return Err(no_match(&self.service, &pool.selector, &self.nodes, false));
        }
        Ok(pool
            .all
            .iter()
            .map(|&i| self.picked(i as usize, home))
            .collect())
    }

    /// The pool of `selector` (`None`: the service's), marked used, or the
    /// error of a pool that has no candidates.
    fn ready_pool(
        &self,
        selector: Option<&Selector>,
        rng: &mut SmallRng,
    ) -> Result<PoolRef<'_>, Error> {
        let pool = match selector {
            None => PoolRef::Default(&self.default_pool),
            Some(s) => PoolRef::Cached(self.pool(s, rng)),
        };
        pool.mark_used();
        pool.ready(self)?;
        Ok(pool)
    }

    /// The node at `index`, with its connection on the runtime `home`.
    fn picked(&self, index: usize, home: Option<tokio::runtime::Id>) -> Picked {
        let (c, o) = self.locate(index);
        let slot = &self.slots[c][o];
        Picked::new(
            NodeRef::new(self.nodes.chunks()[c].nodes().clone(), o),
            slot.handle,
            self.revision,
            slot.connection(home),
        )
    }

    /// The pool of a call selector: one hash lookup once built.
    fn pool(&self, selector: &Selector, rng: &mut SmallRng) -> Arc<Pool> {
        if let Some(pool) = self.pools.load().get(selector) {
            return pool.clone();
        }
        let pool =
            Arc::new(self.build_pool(selector.merged_over(self.config.selector()), None, rng));
        self.pools.rcu(|pools| {
            let mut pools = if pools.len() >= MAX_CACHED_SELECTORS {
                SelectorPools::default()
            } else {
                (**pools).clone()
            };
            pools.insert(selector.clone(), pool.clone());
            pools
        });
        pool
    }

    /// The pool of `selector` (merged over the service's); `before` is the
    /// same selector's pool in the snapshot before, whose answers are taken
    /// over for the nodes both snapshots share.
    fn build_pool(
        &self,
        selector: Selector,
        before: Option<(&Pool, &Carry)>,
        rng: &mut SmallRng,
    ) -> Pool {
        if self.nodes.is_empty() {
            return Pool::empty(selector);
        }
        let (matched, mut matching) = if selector.is_empty() {
            (None, (0..self.nodes.len() as u32).collect())
        } else {
            let before = before
                .filter(|(pool, _)| pool.selector == selector)
                .and_then(|(pool, carry)| Some((pool.matched.as_ref()?, carry)));
            // Every version parsed once for the snapshot when all are read;
            // only the new nodes' when the others' answers are taken over.
            let versions = match selector.needs_semver() && before.is_none() {
                true => Some(self.versions.get_or_init(|| {
                    self.nodes
                        .iter()
                        .map(|n| parse_version_lenient(n.version()))
                        .collect()
                })),
                false => None,
            };
            let matched = Matched::build(self.nodes.iter(), before, |i, node| match versions {
                Some(versions) => selector.matches_parsed(node, versions[i].as_ref()),
                None if selector.needs_semver() => {
                    selector.matches_parsed(node, parse_version_lenient(node.version()).as_ref())
                }
                None => selector.matches_parsed(node, None),
            });
            let matching = matched.indices();
            (Some(matched), matching)
        };
        let mut fell_back = false;
        if matching.is_empty() {
            match selector.fallback().unwrap_or(self.config.fallback()) {
                Fallback::Strict => {
                    let mut pool = Pool::empty(selector);
                    pool.outcome = Outcome::NoMatch;
                    pool.matched = matched;
                    return pool;
                }
                Fallback::Any => {
                    fell_back = true;
                    matching = (0..self.nodes.len() as u32).collect();
                }
            }
        }
        let healthy: Vec<u32> = matching
            .iter()
            .copied()
            .filter(|&i| !self.ejected[i as usize])
            .collect();
        // Only pickable nodes count for a zone preference: with none, every
        // matching node is a candidate anyway.
        let preferred = match self.config.locality() {
            Some(preference) if !healthy.is_empty() => preference.narrow(&self.nodes, &healthy),
            _ => None,
        };
        let all: Box<[u32]> = if healthy.is_empty() {
            matching.into()
        } else {
            healthy.into()
        };
        let local_before = before.map(|(pool, carry)| (&pool.local, carry));
        let spill_before = before.and_then(|(pool, carry)| Some((&**pool.spill.as_ref()?, carry)));
        let (local, spill) = match preferred {
            Some(preferred) => (
                self.candidates(&preferred, local_before, rng),
                Some(Box::new(self.candidates(&all, spill_before, rng))),
            ),
            None => (self.candidates(&all, local_before, rng), None),
        };
        Pool {
            selector,
            outcome: Outcome::Ready,
            fell_back,
            all,
            local,
            spill,
            used: AtomicBool::new(false),
            matched,
        }
    }

    /// The balancer's candidates among `nodes`: weight 0 left out for
    /// weighted balancers. `before` is the same list of the snapshot
    /// before, whose balancer's work is taken over where it can be.
    fn candidates(
        &self,
        nodes: &[u32],
        before: Option<(&Candidates, &Carry)>,
        rng: &mut SmallRng,
    ) -> Candidates {
        let balancer = self.config.balancer();
        if !balancer.is_weighted() {
            // These balancers read no member: no list of them is made.
            let policy = Policy::build(balancer, nodes.len(), &[], rng);
            return Candidates {
                indices: nodes.into(),
                policy,
            };
        }
        let (indices, members): (Vec<u32>, Vec<Member>) = nodes
            .iter()
            .zip(self.members_at(nodes))
            .filter(|(_, member)| member.weight > 0)
            .map(|(&i, &member)| (i, member))
            .unzip();
        let before = before.map(|(was, carry)| {
            let moved = || carry.moved(&was.indices, &indices);
            (&was.policy, moved)
        });
        let policy = Policy::rebuilt(balancer, &members, before, rng);
        Candidates {
            indices: indices.into(),
            policy,
        }
    }
}

/// A pool as a pick holds it: the service's, or a call selector's from the cache.
enum PoolRef<'a> {
    Default(&'a Pool),
    Cached(Arc<Pool>),
}

impl std::ops::Deref for PoolRef<'_> {
    type Target = Pool;

    fn deref(&self) -> &Pool {
        match self {
            Self::Default(pool) => pool,
            Self::Cached(pool) => pool,
        }
    }
}

impl Pool {
    fn empty(selector: Selector) -> Self {
        Self {
            selector,
            outcome: Outcome::NoNodes,
            fell_back: false,
            all: Box::new([]),
            local: Candidates {
                indices: Box::new([]),
                policy: Policy::PickFirst { len: 0 },
            },
            spill: None,
            used: AtomicBool::new(false),
            matched: None,
        }
    }

    fn mark_used(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    fn ready(&self, snapshot: &Snapshot) -> Result<(), Error> {
        match self.outcome {
            Outcome::Ready => Ok(()),
            Outcome::NoNodes => Err(Error::NoNodes {
                service: snapshot.service.clone(),
            }),
            Outcome::NoMatch => Err(no_match(
                &snapshot.service,
                &self.selector,
                &snapshot.nodes,
                true,
            )),
        }
    }
}

/// No node matches `selector`: the error names what the service has.
fn no_match(service: &Arc<str>, selector: &Selector, nodes: &NodeSet, strict: bool) -> Error {
    let distinct = |field: fn(&Node) -> &str| {
        let mut values: Vec<String> = nodes.iter().map(|n| field(n).to_owned()).collect();
        values.sort();
        values.dedup();
        values
    };
    Error::NoMatch {
        service: service.clone(),
        selector: selector.to_string(),
        strict,
        available_versions: distinct(Node::version),
        available_groups: distinct(Node::group),
    }
}
