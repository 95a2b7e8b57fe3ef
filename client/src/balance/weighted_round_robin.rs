//! `weighted_round_robin`: smooth weighted round robin, exactly as nginx.
//!
//! nginx keeps a `current` value per node; each pick adds every node's weight to
//! its `current`, takes the node with the largest `current` (the first one on a
//! tie) and subtracts the total weight from it. Weights 5, 1, 1 give
//! `a a b a c a a`: heavy nodes are spread out, not bunched.
//!
//! That is O(n) per pick. Nodes of equal weight, though, always take their turns
//! in position order (the one with the fewest picks leads), so we keep one
//! `current` per *distinct weight* — the current of the class's leader — and the
//! class's cursor: a pick adds each class's weight, takes the class with the
//! largest current (ties: the smaller leader position, as nginx), advances its
//! cursor, and subtracts the total only when the cursor wraps (then every member
//! has been picked once more). The sequence is nginx's, at O(distinct weights)
//! per pick: O(1) when all nodes weigh the same.

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
    weights: Box<[u32]>,
}

impl SmoothWrr {
    pub(crate) fn new(members: &[Member<'_>]) -> Self {
        let mut by_weight: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
        for (i, m) in members.iter().enumerate() {
            by_weight.entry(m.weight).or_default().push(i as u32);
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
        let total = members.iter().map(|m| i64::from(m.weight)).sum();
        Self {
            classes,
            total,
            weights: members.iter().map(|m| m.weight).collect(),
        }
    }

    /// One nginx step: the position picked.
    #[inline]
    fn step(&mut self) -> Option<usize> {
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

    #[inline]
    pub(crate) fn pick<A, L>(&mut self, cx: &mut PickCx<'_, A, L>) -> Option<usize>
    where
        A: Fn(usize) -> bool,
        L: Fn(usize) -> u32,
    {
        for _ in 0..STEPS {
            let pos = self.step()?;
            if (cx.accept)(pos) {
                return Some(pos);
            }
        }
        weighted_scan(&self.weights, cx.rng, &cx.accept)
    }
}
