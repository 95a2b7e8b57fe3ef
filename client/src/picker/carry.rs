//! What a new snapshot takes over from the one before it: each call
//! selector's answer for every node the two share.
//!
//! A node-set change of one node in a large set leaves every other node the
//! very same (`Node` is shared, not copied, between sets). Whether such a node
//! matches a selector cannot have changed, so the next snapshot copies the
//! answer by index instead of reading the node again; only nodes added or
//! changed are matched.

use std::fmt;
use std::sync::Arc;

use registry_actor::Node;

use crate::balance::GONE;

/// How the nodes of a new snapshot map to those of the snapshot before it.
#[derive(Debug, Clone)]
pub(crate) enum Carry {
    /// The same node list.
    Same,
    /// For each new node, its index in the snapshot before when it is the very
    /// same node, else [`NOT_CARRIED`].
    Mapped(Arc<[u32]>),
}

/// A new node with no counterpart in the snapshot before.
pub(crate) const NOT_CARRIED: u32 = u32::MAX;

impl Carry {
    /// The index, in the snapshot before, of the node at `i`, when it is the
    /// same node.
    pub(super) fn before(&self, i: usize) -> Option<usize> {
        match self {
            Self::Same => Some(i),
            Self::Mapped(map) => map
                .get(i)
                .copied()
                .filter(|&j| j != NOT_CARRIED)
                .map(|j| j as usize),
        }
    }

    /// Where each entry of a list of the snapshot before is in a list of
    /// the new one: `was` and `now` hold node indices, ascending, of the
    /// snapshot before and of the new one; answers, per entry of `was`, the
    /// position in `now` of the very same node, or [`GONE`]. Linear: the
    /// nodes both snapshots share keep their order.
    pub(crate) fn moved(&self, was: &[u32], now: &[u32]) -> Vec<u32> {
        let mut moved = vec![GONE; was.len()];
        let mut at = 0;
        for (k, &i) in now.iter().enumerate() {
            let Some(j) = self.before(i as usize) else {
                continue;
            };
            let j = j as u32;
            while was.get(at).is_some_and(|&w| w < j) {
                at += 1;
            }
            if was.get(at) == Some(&j) {
                moved[at] = k as u32;
            }
        }
        moved
    }
}

/// Whether each node of a snapshot matches a pool's selector, by index.
pub(crate) struct Matched(Box<[bool]>);

impl fmt::Debug for Matched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let matching = self.0.iter().filter(|&&m| m).count();
        write!(f, "Matched({matching} of {})", self.0.len())
    }
}

impl Matched {
    /// The answers for `nodes`, in order: taken over from `before` through
    /// its [`Carry`] where a node is the same, else asked of `matches` (with
    /// the node's index).
    pub(crate) fn build<'n>(
        nodes: impl Iterator<Item = &'n Node>,
        before: Option<(&Matched, &Carry)>,
        mut matches: impl FnMut(usize, &'n Node) -> bool,
    ) -> Self {
        Self(
            nodes
                .enumerate()
                .map(|(i, node)| {
                    before
                        .and_then(|(was, carry)| was.0.get(carry.before(i)?).copied())
                        .unwrap_or_else(|| matches(i, node))
                })
                .collect(),
        )
    }

    /// The indices of the matching nodes, in order.
    pub(crate) fn indices(&self) -> Vec<u32> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, &m)| m)
            .map(|(i, _)| i as u32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| Node::new(format!("n{i}"), "svc", "127.0.0.1:1").expect("node"))
            .collect()
    }

    #[test]
    fn answers_of_the_same_nodes_are_taken_over_and_only_the_others_asked() {
        let was = Matched::build(nodes(4).iter(), None, |i, _| i % 2 == 0);
        assert_eq!(was.indices(), [0, 2]);
        // A node inserted at 1; the old 1 moved to 2 and changed (asked
        // again); the rest moved by one.
        let carry = Carry::Mapped(vec![0, NOT_CARRIED, NOT_CARRIED, 2, 3].into());
        let mut asked = Vec::new();
        let five = nodes(5);
        let now = Matched::build(five.iter(), Some((&was, &carry)), |i, node| {
            assert_eq!(node.id(), format!("n{i}"), "asked with its node");
            asked.push(i);
            true
        });
        assert_eq!(asked, [1, 2]);
        assert_eq!(now.indices(), [0, 1, 2, 3]);
    }

    #[test]
    fn moved_follows_each_shared_node_to_its_new_position() {
        // New nodes 0..6; new 1 and 4 are not carried; the others were at
        // 0, 2, 3 and 5 before.
        let carry = Carry::Mapped(vec![0, NOT_CARRIED, 2, 3, NOT_CARRIED, 5].into());
        // A list of old nodes 0, 1, 3, 5, and a new list of 0, 1, 3, 4, 5.
        let moved = carry.moved(&[0, 1, 3, 5], &[0, 1, 3, 4, 5]);
        // Old 0 is new 0 (position 0); old 1 is gone; old 3 is new 3
        // (position 2); old 5 is new 5 (position 4).
        assert_eq!(moved, [0, GONE, 2, 4]);
        // An old node that is carried but left out of the new list is gone.
        assert_eq!(carry.moved(&[2, 3], &[3]), [GONE, 0]);
        assert_eq!(Carry::Same.moved(&[1, 2, 4], &[0, 2, 4]), [GONE, 1, 2]);
    }

    #[test]
    fn the_same_list_asks_nothing_and_a_short_answer_list_asks_the_rest() {
        let (three, four) = (nodes(3), nodes(4));
        let was = Matched::build(three.iter(), None, |i, _| i == 1);
        let now = Matched::build(three.iter(), Some((&was, &Carry::Same)), |_, _| {
            panic!("asked")
        });
        assert_eq!(now.indices(), [1]);
        let longer = Matched::build(four.iter(), Some((&was, &Carry::Same)), |i, _| i == 3);
        assert_eq!(longer.indices(), [1, 3]);
    }
}
