//! Load balancers: the pure policies a picker runs over its candidate nodes
//! (see [`Balancer`]).

use std::fmt;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::Rng;

use registry_actor::config::InvalidValue;

use crate::hash::fnv1a;

mod consistent_hash;
mod least_request;
mod round_robin;
mod weighted_random;
mod weighted_round_robin;

#[cfg(test)]
mod tests;

pub(crate) use consistent_hash::{Ring, GONE};
pub(crate) use round_robin::RoundRobin;
pub(crate) use weighted_random::AliasTable;
pub(crate) use weighted_round_robin::WrrSchedule;

/// How many draws randomized policies make before scanning for a candidate that
/// is not excluded.
const DRAWS: usize = 4;

/// A load-balancing policy, by its configuration name.
///
/// A picker builds one policy per candidate list (the nodes matching a selector,
/// less the ejected ones) when the node set changes, and then only reads and
/// steps it per pick. Every policy picks a *position* in its candidate list:
///
/// | name | per pick | built from |
/// | --- | --- | --- |
/// | `pick_first` | first candidate not excluded | nothing |
/// | `round_robin` | next position, cyclically | a random start |
/// | `random` | uniform position | nothing |
/// | `weighted_random` | Vose's alias table: one random word, O(1) | weights |
/// | `weighted_round_robin` | smooth WRR as nginx: the next entry of a precomputed period | weights |
/// | `least_request` | power of two choices on in-flight calls | nothing |
/// | `consistent_hash` | first ring point at or after the key's hash | a ring of virtual nodes, updated from the ring before |
///
/// Weighted policies (`weighted_random`, `weighted_round_robin`,
/// `consistent_hash`) never see nodes of weight 0.
///
/// A built policy is read by concurrent picks without a lock: cursors are
/// atomics, randomness comes from the picking thread.
///
/// Exclusion (nodes already tried by the call) is a predicate, not a rebuild: each
/// policy skips or redraws over its prebuilt state, and only when the first few
/// tries all hit excluded nodes falls back to a scan of the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Balancer {
    /// `pick_first`: always the first candidate (in key order) not excluded.
    PickFirst,
    /// `round_robin`: every candidate in turn (the default).
    #[default]
    RoundRobin,
    /// `random`: a uniformly random candidate.
    Random,
    /// `weighted_random`: a random candidate with probability proportional to its
    /// weight.
    WeightedRandom,
    /// `weighted_round_robin`: smooth weighted round robin, as nginx: weights 5, 1,
    /// 1 give `a a b a c a a`.
    WeightedRoundRobin,
    /// `least_request`: of two random candidates, the one with fewer calls in
    /// flight.
    LeastRequest,
    /// `consistent_hash`: the call's hash key on a ring of virtual nodes; a key
    /// stays on its node while the set is unchanged.
    ConsistentHash,
}

impl Balancer {
    /// All balancers, in the order of the docs.
    pub const ALL: [Balancer; 7] = [
        Balancer::PickFirst,
        Balancer::RoundRobin,
        Balancer::Random,
        Balancer::WeightedRandom,
        Balancer::WeightedRoundRobin,
        Balancer::LeastRequest,
        Balancer::ConsistentHash,
    ];

    /// The configuration name (`round_robin`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::PickFirst => "pick_first",
            Self::RoundRobin => "round_robin",
            Self::Random => "random",
            Self::WeightedRandom => "weighted_random",
            Self::WeightedRoundRobin => "weighted_round_robin",
            Self::LeastRequest => "least_request",
            Self::ConsistentHash => "consistent_hash",
        }
    }

    /// Whether this policy uses weights (and so never picks a node of weight 0).
    pub fn is_weighted(self) -> bool {
        matches!(
            self,
            Self::WeightedRandom | Self::WeightedRoundRobin | Self::ConsistentHash
        )
    }
}

impl fmt::Display for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Balancer {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|b| b.name()).collect();
                InvalidValue::new(
                    "balancer",
                    format!(
                        "unknown balancer \"{s}\"; expected one of {}",
                        names.join(", ")
                    ),
                )
            })
    }
}

/// A node as a policy sees it when it is built: its weight, and the hash of
/// its id (where a ring puts its points). The picker keeps one per node, in
/// arrays beside its node chunks, so that building a weighted policy reads
/// them in a row rather than every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) id_hash: u64,
    pub(crate) weight: u32,
}

impl Member {
    /// `node` as a policy sees it.
    pub(crate) fn of(node: &registry_actor::Node) -> Self {
        Self {
            id_hash: fnv1a(node.id().as_bytes()),
            weight: node.weight(),
        }
    }
}

/// What a pick brings: randomness, the call's hash key, which positions it may
/// take (`accept`: not excluded) and each position's calls in flight (`load`).
pub(crate) struct PickCx<'a, A, L> {
    pub(crate) rng: &'a mut SmallRng,
    pub(crate) hash: Option<u64>,
    pub(crate) accept: A,
    pub(crate) load: L,
}

/// A built policy over `len` candidates.
#[derive(Debug)]
pub(crate) enum Policy {
    PickFirst { len: usize },
    RoundRobin(RoundRobin),
    Random { len: usize },
    WeightedRandom(AliasTable),
    WeightedRoundRobin(WrrSchedule),
    LeastRequest { len: usize },
    ConsistentHash(Ring),
}

impl Policy {
    /// Builds `balancer` over `len` candidates; weighted balancers read their
    /// `members` (one per candidate, every weight above 0: the picker filters
    /// them), the others need none.
    pub(crate) fn build(
        balancer: Balancer,
        len: usize,
        members: &[Member],
        rng: &mut SmallRng,
    ) -> Self {
        match balancer {
            Balancer::PickFirst => Self::PickFirst { len },
            Balancer::RoundRobin => Self::RoundRobin(RoundRobin::new(len, rng)),
            Balancer::Random => Self::Random { len },
            Balancer::WeightedRandom => Self::WeightedRandom(AliasTable::new(members)),
            Balancer::WeightedRoundRobin => Self::WeightedRoundRobin(WrrSchedule::new(members)),
            Balancer::LeastRequest => Self::LeastRequest { len },
            Balancer::ConsistentHash => Self::ConsistentHash(Ring::new(members)),
        }
    }

    /// [`Policy::build`], taking over what it can of `before`: the same
    /// balancer's policy over the candidates before, and `moved` (computed
    /// only when asked) the new position of each of those candidates when it
    /// is the very same node, else [`GONE`]. A ring keeps the points of the
    /// nodes both lists share; the other policies are built anew.
    pub(crate) fn rebuilt(
        balancer: Balancer,
        members: &[Member],
        before: Option<(&Policy, impl FnOnce() -> Vec<u32>)>,
        rng: &mut SmallRng,
    ) -> Self {
        if let (Balancer::ConsistentHash, Some((Self::ConsistentHash(ring), moved))) =
            (balancer, before)
        {
            if let Some(ring) = ring.updated(&moved(), members) {
                return Self::ConsistentHash(ring);
            }
        }
        Self::build(balancer, members.len(), members, rng)
    }

    /// Picks a position accepted by `cx.accept`, or `None` when every position is
    /// refused (or there are none).
    #[inline]
    pub(crate) fn pick<A, L>(&self, cx: &mut PickCx<'_, A, L>) -> Option<usize>
    where
        A: Fn(usize) -> bool,
        L: Fn(usize) -> u32,
    {
        match self {
            Self::PickFirst { len } => (0..*len).find(|&i| (cx.accept)(i)),
            Self::RoundRobin(rr) => rr.pick(&cx.accept),
            Self::Random { len } => pick_random(*len, cx),
            Self::WeightedRandom(table) => table.pick(cx),
            Self::WeightedRoundRobin(wrr) => wrr.pick(cx),
            Self::LeastRequest { len } => least_request::pick(*len, cx),
            Self::ConsistentHash(ring) => ring.pick(cx),
        }
    }
}

/// A uniform position among those accepted.
fn pick_random<A, L>(len: usize, cx: &mut PickCx<'_, A, L>) -> Option<usize>
where
    A: Fn(usize) -> bool,
{
    if len == 0 {
        return None;
    }
    for _ in 0..DRAWS {
        let i = cx.rng.random_range(0..len);
        if (cx.accept)(i) {
            return Some(i);
        }
    }
    scan_from(len, cx.rng.random_range(0..len), &cx.accept)
}

/// The first accepted position at or after `start`, cyclically.
fn scan_from(len: usize, start: usize, accept: impl Fn(usize) -> bool) -> Option<usize> {
    (start..len).chain(0..start).find(|&i| accept(i))
}

/// A position among those accepted, with probability proportional to `weight`:
/// the slow path of weighted policies when their draws hit excluded nodes.
fn weighted_scan(
    weights: &[u32],
    rng: &mut SmallRng,
    accept: impl Fn(usize) -> bool,
) -> Option<usize> {
    let total: u64 = (0..weights.len())
        .filter(|&i| accept(i))
        .map(|i| u64::from(weights[i]))
        .sum();
    if total == 0 {
        return None;
    }
    let mut r = rng.random_range(0..total);
    for (i, &w) in weights.iter().enumerate() {
        if !accept(i) {
            continue;
        }
        let w = u64::from(w);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}
