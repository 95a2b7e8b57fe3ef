//! `weighted_random`: Vose's alias method.
//!
//! Built in O(n) from the weights: column `i` keeps its own position with
//! probability `threshold[i] / 2^32` and otherwise yields `alias[i]`; every column
//! is equally likely. A pick is one random 64-bit word: its high half chooses the
//! column (multiply-shift), its low half the coin. Exact integer arithmetic keeps
//! the table faithful to the weights to within 2^-32 per column.

use rand::RngCore;

use super::{weighted_scan, Member, PickCx, DRAWS};

/// The alias table of a weighted candidate list.
#[derive(Debug, Clone)]
pub(crate) struct AliasTable {
    pub(super) threshold: Box<[u64]>,
    pub(super) alias: Box<[u32]>,
    weights: Box<[u32]>,
}

impl AliasTable {
    pub(crate) fn new(members: &[Member<'_>]) -> Self {
        let n = members.len();
        let weights: Box<[u32]> = members.iter().map(|m| m.weight).collect();
        let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
        let mut threshold = vec![1u64 << 32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        if n == 0 || total == 0 {
            return Self {
                threshold: threshold.into(),
                alias: alias.into(),
                weights,
            };
        }
        // Scaled so that one column holds exactly `total`.
        let mut scaled: Vec<u128> = weights.iter().map(|&w| u128::from(w) * n as u128).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < total);
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            threshold[s] = ((scaled[s] << 32) / total) as u64;
            alias[s] = l as u32;
            scaled[l] -= total - scaled[s];
            if scaled[l] < total {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left holds exactly one column (up to rounding): keep it.
        Self {
            threshold: threshold.into(),
            alias: alias.into(),
            weights,
        }
    }

    #[inline]
    fn draw(&self, rng: &mut impl RngCore) -> usize {
        let r = rng.next_u64();
        let column = (((r >> 32) * self.threshold.len() as u64) >> 32) as usize;
        if (r & 0xffff_ffff) < self.threshold[column] {
            column
        } else {
            self.alias[column] as usize
        }
    }

    #[inline]
    pub(crate) fn pick<A, L>(&self, cx: &mut PickCx<'_, A, L>) -> Option<usize>
    where
        A: Fn(usize) -> bool,
        L: Fn(usize) -> u32,
    {
        if self.threshold.is_empty() {
            return None;
        }
        for _ in 0..DRAWS {
            let i = self.draw(cx.rng);
            if (cx.accept)(i) {
                return Some(i);
            }
        }
        weighted_scan(&self.weights, cx.rng, &cx.accept)
    }
}
