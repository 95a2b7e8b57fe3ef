//! `weighted_round_robin`: smooth weighted round robin, exactly as nginx.
//!
//! nginx keeps a `current` value per node; each pick adds every node's weight to
//! its `current`, takes the node with the largest `current` (the first one on a
//! tie) and subtracts the total weight from it. Weights 5, 1, 1 give
//! `a a b a c a a`: heavy nodes are spread out, not bunched.
//!
//! The sequence repeats after `total weight / gcd(weights)` picks, so it is
//! computed once, when the candidates change, into a [`WrrSchedule`]; a pick
//! takes the next entry through an atomic cursor, without a lock. A schedule
//! longer than `max(4 × nodes, 65536)` entries is built over weights scaled
//! down to that length (each node keeps a weight of at least 1), which keeps
//! every node's share within one part in 65536 of its weight.
//!
//! Computing the sequence steps nginx's algorithm over weight classes
//! ([`SmoothWrr`]): nodes of equal weight always take their turns in position
//! order (the one with the fewest picks leads), so one `current` per *distinct
//! weight* — the current of the class's leader — and the class's cursor give
//! nginx's sequence at O(distinct weights) per step.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{weighted_scan, Member, PickCx};

/// Steps tried before an excluded pick falls back to a weighted scan.
const STEPS: usize = 8;

#[derive(Debug, Clone)]
struct Class {
    weight: i64,
    current: i64,
    /// Positions of the members, ascending.
    members: Box<[u32]>,
    cursor: usize,
}

/// Smooth weighted round robin over weight classes. See the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct SmoothWrr {
    classes: Box<[Class]>,
    total: i64,
}

impl SmoothWrr {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let mut by_weight: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
        for (i, &w) in weights.iter().enumerate() {
            by_weight.entry(w).or_default().push(i as u32);
        }
        let classes: Box<[Class]> = by_weight
            .into_iter()
            .filter(|(w, _)| *w > 0)
            .map(|(w, members)| Class {
                weight: i64::from(w),
                current: 0,
                members: members.into(),
                cursor: 0,
            })
            .collect();
        let total = weights.iter().map(|&w| i64::from(w)).sum();
        Self { classes, total }
    }

    /// One nginx step: the position picked.
    pub(crate) fn step(&mut self) -> Option<usize> {
        let mut best: Option<(usize, i64, u32)> = None;
        for (c, class) in self.classes.iter_mut().enumerate() {
            class.current += class.weight;
            let leader = class.members[class.cursor];
            let better = match best {
                None => true,
                Some((_, cur, pos)) => {
                    class.current > cur || (class.current == cur && leader < pos)
                }
            };
            if better {
                best = Some((c, class.current, leader));
            }
        }
        let (c, _, leader) = best?;
        let class = &mut self.classes[c];
        class.cursor += 1;
        if class.cursor == class.members.len() {
            class.cursor = 0;
            class.current -= self.total;
        }
        Some(leader as usize)
    }
}

/// One period of the smooth WRR sequence, picked through an atomic cursor.
#[derive(Debug)]
pub(crate) struct WrrSchedule {
    order: Box<[u32]>,
    next: AtomicUsize,
    weights: Box<[u32]>,
}

impl WrrSchedule {
    pub(crate) fn new(members: &[Member]) -> Self {
        let weights: Box<[u32]> = members.iter().map(|m| m.weight).collect();
        let gcd = weights
            .iter()
            .copied()
            .filter(|&w| w > 0)
            .fold(0u64, |g, w| gcd(g, u64::from(w)))
            .max(1);
        let mut scaled: Vec<u64> = weights.iter().map(|&w| u64::from(w) / gcd).collect();
        let period: u64 = scaled.iter().sum();
        let cap = (4 * weights.len() as u64).max(1 << 16);
        if period > cap {
            for w in scaled.iter_mut().filter(|w| **w > 0) {
                *w = ((*w as u128 * u128::from(cap)) / u128::from(period)).max(1) as u64;
            }
        }
        let scaled: Vec<u32> = scaled.iter().map(|&w| w as u32).collect();
        let period: u64 = scaled.iter().map(|&w| u64::from(w)).sum();
        let mut wrr = SmoothWrr::new(&scaled);
        let order = (0..period)
            .map_while(|_| wrr.step().map(|p| p as u32))
            .collect();
        Self {
            order,
            next: AtomicUsize::new(0),
            weights,
        }
    }

    #[inline]
    pub(crate) fn pick<A, L>(&self, cx: &mut PickCx<'_, A, L>) -> Option<usize>
    where
        A: Fn(usize) -> bool,
        L: Fn(usize) -> u32,
    {
        if self.order.is_empty() {
            return None;
        }
        for _ in 0..STEPS {
            let at = self.next.fetch_add(1, Ordering::Relaxed) % self.order.len();
            let pos = self.order[at] as usize;
            if (cx.accept)(pos) {
                return Some(pos);
            }
        }
        weighted_scan(&self.weights, cx.rng, &cx.accept)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
