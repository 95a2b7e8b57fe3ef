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

use rand::RngCore;

use super::{Member, PickCx};
use crate::hash::{fnv1a, mix64};

/// Points of a node of the default weight (100).
pub(crate) const VNODES_PER_DEFAULT_WEIGHT: u64 = 160;
/// The most points a ring holds.
pub(crate) const MAX_POINTS: u64 = 1 << 18;
/// The golden-ratio increment of splitmix64.
const PHI: u64 = 0x9e37_79b9_7f4a_7c15;
const INDEX_BITS: u32 = 14;

/// The ring of one candidate list.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    /// Ring points, ascending: the point's hash in the high bits, its owner's
    /// candidate position in the low `owner_bits`, so one load yields both.
    entries: Box<[u64]>,
    owner_mask: u64,
    /// `index[b]` = the first entry whose top 14 bits are ≥ `b`; 16,385 entries.
    index: Box<[u32]>,
}

impl Ring {
    pub(crate) fn new(members: &[Member<'_>]) -> Self {
        let wanted: Vec<u64> = members
            .iter()
            .map(|m| {
                if m.weight == 0 {
                    0
                } else {
                    (VNODES_PER_DEFAULT_WEIGHT * u64::from(m.weight))
                        .div_ceil(u64::from(registry_actor::DEFAULT_WEIGHT))
                        .min(MAX_POINTS)
                }
            })
            .collect();
        let sum: u64 = wanted.iter().sum();
        let counts: Vec<u64> = if sum > MAX_POINTS {
            wanted
                .iter()
                .map(|&w| {
                    if w == 0 {
                        0
                    } else {
                        (w * MAX_POINTS / sum).max(1)
                    }
                })
                .collect()
        } else {
            wanted
        };
        // Enough low bits for the largest position (at least one).
        let owner_bits =
            (u64::BITS - (members.len() as u64).saturating_sub(1).leading_zeros()).max(1);
        let owner_mask = (1u64 << owner_bits) - 1;
        let mut entries: Vec<u64> = Vec::with_capacity(counts.iter().sum::<u64>() as usize);
        for (pos, (m, &count)) in members.iter().zip(&counts).enumerate() {
            let base = fnv1a(m.id.as_bytes());
            for k in 1..=count {
                let point = mix64(base.wrapping_add(k.wrapping_mul(PHI)));
                entries.push((point & !owner_mask) | pos as u64);
            }
        }
        entries.sort_unstable();
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
