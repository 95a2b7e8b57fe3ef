//! `consistent_hash`: a ring of virtual nodes (ketama / gRPC `ring_hash`).
//!
//! Each candidate puts `VNODES_PER_DEFAULT_WEIGHT × weight / 100` points on a
//! 64-bit ring (at least one), at `splitmix64(fnv1a(id) + k·φ)` for
//! `k = 1, 2, …`: a point depends only on the node's id and weight, so a node
//! joining or leaving moves only the keys that land on its own arcs (about
//! `1/n` of them). A call's key hash picks the first point at or after it,
//! wrapping around; an excluded owner is skipped by walking on clockwise.
//!
//! Rings are capped at `MAX_POINTS` points: past that (about 1,600 nodes of the
//! default weight) every node's count is scaled down alike, trading some balance
//! for memory and rebuild time. A 16,384-entry index on the top 14 bits of the
//! hash narrows each lookup to a handful of points, and each point carries its
//! owner in its low bits (the hash keeps the high ones), so a pick touches two
//! cache lines at 10 nodes as at 10,000.
//!
//! A call without a key lands on a random point.
//!
//! A change of the candidates makes the next ring from the one before
//! ([`Ring::updated`]): the shared nodes' points stay in order, only their
//! owners' positions are rewritten, and only the joining nodes' points are
//! made and merged in, one linear pass with no sort. When the cap rescales a
//! shared node's count, the ring is built anew.

use rand::RngCore;

use super::{Member, PickCx};
use crate::hash::mix64;

/// Points of a node of the default weight (100).
pub(crate) const VNODES_PER_DEFAULT_WEIGHT: u64 = 160;
/// The most points a ring holds.
pub(crate) const MAX_POINTS: u64 = 1 << 18;
/// The golden-ratio increment of splitmix64.
const PHI: u64 = 0x9e37_79b9_7f4a_7c15;
const INDEX_BITS: u32 = 14;

/// The ring of one candidate list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ring {
    /// Ring points, ascending: the point's hash in the high bits, its owner's
    /// candidate position in the low `owner_bits`, so one load yields both.
    entries: Box<[u64]>,
    owner_mask: u64,
    /// `index[b]` = the first entry whose top 14 bits are ≥ `b`; 16,385 entries.
    index: Box<[u32]>,
    /// Each candidate's number of points.
    counts: Box<[u32]>,
}

impl Ring {
    pub(crate) fn new(members: &[Member]) -> Self {
        let counts = point_counts(members);
        let owner_mask = owner_mask(members.len());
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let mut entries: Vec<u64> = Vec::with_capacity(total);
        for (pos, (m, &count)) in members.iter().zip(&counts).enumerate() {
            entries.extend(points(m, count).map(|p| (p & !owner_mask) | pos as u64));
        }
        entries.sort_unstable();
        Self::of(entries, owner_mask, counts)
    }

    /// The ring of `members`, made from `self` (the ring of the candidates
    /// before), equal to [`Ring::new`] of `members`: the points of the
    /// candidates both share are kept in order, with their owners moved to
    /// their new positions, and only the new candidates' points are made and
    /// merged in. `None` when a shared candidate's number of points changes
    /// (the ring's cap scales them) or positions need another width.
    ///
    /// `moved[k]` is the new position of the candidate at `k` before, when it
    /// is the same node, else [`GONE`]; positions move in order.
    pub(crate) fn updated(&self, moved: &[u32], members: &[Member]) -> Option<Self> {
        let counts = point_counts(members);
        let owner_mask = owner_mask(members.len());
        let kept_counts = moved
            .iter()
            .zip(self.counts.iter())
            .all(|(&to, &count)| to == GONE || counts.get(to as usize) == Some(&count));
        if owner_mask != self.owner_mask || moved.len() != self.counts.len() || !kept_counts {
            return None;
        }
        let mut fresh = vec![true; members.len()];
        for &to in moved.iter().filter(|&&to| to != GONE) {
            fresh[to as usize] = false;
        }
        let mut added: Vec<u64> = Vec::new();
        for (pos, (m, &count)) in members.iter().zip(&counts).enumerate() {
            if fresh[pos] {
                added.extend(points(m, count).map(|p| (p & !owner_mask) | pos as u64));
            }
        }
        added.sort_unstable();
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let mut entries: Vec<u64> = Vec::with_capacity(total);
        let mut added = added.into_iter().peekable();
        for &e in self.entries.iter() {
            let to = moved[(e & owner_mask) as usize];
            if to == GONE {
                continue;
            }
            let e = (e & !owner_mask) | u64::from(to);
            while let Some(a) = added.next_if(|&a| a < e) {
                entries.push(a);
            }
            entries.push(e);
        }
        entries.extend(added);
        Some(Self::of(entries, owner_mask, counts))
    }

    /// The ring of sorted `entries`, with its index.
    fn of(entries: Vec<u64>, owner_mask: u64, counts: Vec<u32>) -> Self {
        let mut index = Vec::with_capacity((1 << INDEX_BITS) + 1);
        let mut at = 0usize;
        for bucket in 0..(1u64 << INDEX_BITS) {
            let floor = bucket << (64 - INDEX_BITS);
            while at < entries.len() && entries[at] < floor {
                at += 1;
            }
            index.push(at as u32);
        }
        index.push(entries.len() as u32);
        Self {
            entries: entries.into(),
            owner_mask,
            index: index.into(),
            counts: counts.into(),
        }
    }

    /// The index of the first entry at or after `hash` (compared on the hash
    /// bits), wrapping to 0.
    #[inline]
    fn locate(&self, hash: u64) -> usize {
        let target = hash & !self.owner_mask;
        let bucket = (hash >> (64 - INDEX_BITS)) as usize;
        let (lo, hi) = (self.index[bucket] as usize, self.index[bucket + 1] as usize);
        let at = lo + self.entries[lo..hi].partition_point(|&e| e < target);
        if at == self.entries.len() {
            0
        } else {
            at
        }
    }

    #[inline]
    pub(crate) fn pick<A, L>(&self, cx: &mut PickCx<'_, A, L>) -> Option<usize>
    where
        A: Fn(usize) -> bool,
        L: Fn(usize) -> u32,
    {
        if self.entries.is_empty() {
            return None;
        }
        let hash = cx.hash.unwrap_or_else(|| cx.rng.next_u64());
        let len = self.entries.len();
        let mut i = self.locate(hash);
        for _ in 0..len {
            let owner = (self.entries[i] & self.owner_mask) as usize;
            if (cx.accept)(owner) {
                return Some(owner);
            }
            i += 1;
            if i == len {
                i = 0;
            }
        }
        None
    }

    /// Points on the ring.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A candidate with no position in the next list (see [`Ring::updated`]).
pub(crate) const GONE: u32 = u32::MAX;

/// Each member's number of points: `VNODES_PER_DEFAULT_WEIGHT × weight / 100`
/// (at least one for a weight above 0), all scaled down alike when the ring
/// would pass `MAX_POINTS`.
fn point_counts(members: &[Member]) -> Vec<u32> {
    let wanted = |m: &Member| {
        if m.weight == 0 {
            0
        } else {
            (VNODES_PER_DEFAULT_WEIGHT * u64::from(m.weight))
                .div_ceil(u64::from(registry_actor::DEFAULT_WEIGHT))
                .min(MAX_POINTS)
        }
    };
    let sum: u64 = members.iter().map(wanted).sum();
    members
        .iter()
        .map(|m| {
            let w = wanted(m);
            let count = if sum > MAX_POINTS && w > 0 {
                (w * MAX_POINTS / sum).max(1)
            } else {
                w
            };
            count as u32
        })
        .collect()
}

/// The low bits that hold a position among `len` candidates (at least one).
fn owner_mask(len: usize) -> u64 {
    let bits = (u64::BITS - (len as u64).saturating_sub(1).leading_zeros()).max(1);
    (1u64 << bits) - 1
}

/// The `count` points of `member`.
fn points(member: &Member, count: u32) -> impl Iterator<Item = u64> {
    let base = member.id_hash;
    (1..=u64::from(count)).map(move |k| mix64(base.wrapping_add(k.wrapping_mul(PHI))))
}
