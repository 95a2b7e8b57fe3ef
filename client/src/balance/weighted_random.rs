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
    pub(crate) fn new(members: &[Member]) -> Self {
        let n = members.len();
        let weights: Box<[u32]> = members.iter().map(|m| m.weight).collect();
        let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
        let mut threshold = vec![1u64 << 32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        // Below 2^32 in all, a column's share shifted by 32 bits fits 64.
        match u64::try_from(total) {
            Ok(0) => {}
            Ok(total) if total < 1 << 32 => fill(&weights, total, &mut threshold, &mut alias),
            _ => fill(&weights, total, &mut threshold, &mut alias),
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

/// The integer type a table is built in: wide enough for a column's share
/// shifted by 32 bits.
pub(super) trait Wide:
    Copy
    + Ord
    + From<u32>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Shl<u32, Output = Self>
{
    fn low_64(self) -> u64;
}

impl Wide for u64 {
    fn low_64(self) -> u64 {
        self
    }
}

impl Wide for u128 {
    fn low_64(self) -> u64 {
        self as u64
    }
}

/// Vose's pairing of under- and over-full columns, over `weights` summing to
/// `total` (above 0): fills the threshold and alias of every column that is
/// not exactly full.
pub(super) fn fill<T: Wide>(weights: &[u32], total: T, threshold: &mut [u64], alias: &mut [u32]) {
    let n = T::from(weights.len() as u32);
    // Scaled so that one column holds exactly `total`.
    let mut scaled: Vec<T> = weights.iter().map(|&w| T::from(w) * n).collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) =
        (0..weights.len()).partition(|&i| scaled[i] < total);
    while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
        small.pop();
        threshold[s] = ((scaled[s] << 32) / total).low_64();
        alias[s] = l as u32;
        scaled[l] = scaled[l] - (total - scaled[s]);
        if scaled[l] < total {
            large.pop();
            small.push(l);
        }
    }
}
