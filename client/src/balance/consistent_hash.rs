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
//! for memory and rebuild time. A 65,536-entry index on the top 16 bits of the
//! hash narrows each lookup to a handful of points, so a pick costs the same at
//! 10 nodes as at 10,000.
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
const INDEX_BITS: u32 = 16;

/// The ring of one candidate list.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    /// Point hashes, ascending.
    points: Box<[u64]>,
    /// The candidate position owning each point.
    owners: Box<[u32]>,
    /// `index[b]` = the first point whose top 16 bits are ≥ `b`; 65,537 entries.
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
        let mut ring: Vec<(u64, u32)> = Vec::with_capacity(counts.iter().sum::<u64>() as usize);
        for (pos, (m, &count)) in members.iter().zip(&counts).enumerate() {
            let base = fnv1a(m.id.as_bytes());
            for k in 1..=count {
                ring.push((mix64(base.wrapping_add(k.wrapping_mul(PHI))), pos as u32));
            }
        }
        ring.sort_unstable();
        let points: Box<[u64]> = ring.iter().map(|p| p.0).collect();
        let owners: Box<[u32]> = ring.iter().map(|p| p.1).collect();
        let mut index = Vec::with_capacity((1 << INDEX_BITS) + 1);
        let mut at = 0usize;
        for bucket in 0..(1u64 << INDEX_BITS) {
            let floor = bucket << (64 - INDEX_BITS);
            while at < points.len() && points[at] < floor {
                at += 1;
            }
            index.push(at as u32);
        }
        index.push(points.len() as u32);
        Self {
            points,
            owners,
            index: index.into(),
        }
    }

    /// The index of the first point at or after `hash`, wrapping to 0.
    #[inline]
    fn locate(&self, hash: u64) -> usize {
        let bucket = (hash >> (64 - INDEX_BITS)) as usize;
        let (lo, hi) = (self.index[bucket] as usize, self.index[bucket + 1] as usize);
        let at = lo + self.points[lo..hi].partition_point(|&p| p < hash);
        if at == self.points.len() {
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
        if self.points.is_empty() {
            return None;
        }
        let hash = cx.hash.unwrap_or_else(|| cx.rng.next_u64());
        let start = self.locate(hash);
        let len = self.points.len();
        let mut i = start;
        for _ in 0..len {
            let owner = self.owners[i] as usize;
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
        self.points.len()
    }
}
