//! How one [`NodeSet`] differs from the one before it, chunk by chunk.
//!
//! Consecutive sets of a registry watch share every chunk a change did not
//! touch (the very same allocation), so a change of a few nodes in a large
//! set is found by comparing chunk pointers, and only the nodes of the
//! chunks that differ are read.

use std::collections::HashMap;

use registry_actor::{Node, NodeSet};

/// How the chunks of a set relate to those of the set before it.
#[derive(Debug, Default)]
pub(crate) struct ChunkDiff {
    /// Per chunk of the new set: the index of the very same chunk in the old
    /// set, if it has it.
    pub(crate) shared: Vec<Option<usize>>,
    /// Per chunk of the old set: whether the new set has it.
    pub(crate) kept: Vec<bool>,
}

impl ChunkDiff {
    /// How the chunks of `next` relate to those of `prev`.
    pub(crate) fn of(prev: &NodeSet, next: &NodeSet) -> Self {
        // While `prev` lives, no other chunk can have the address of one of
        // its chunks: equal addresses are the same chunk.
        let by_address: HashMap<*const Node, usize> = prev
            .chunks()
            .iter()
            .enumerate()
            .map(|(c, chunk)| (address(chunk.nodes()), c))
            .collect();
        let mut kept = vec![false; prev.chunks().len()];
        let shared = next
            .chunks()
            .iter()
            .map(|chunk| {
                let c = by_address.get(&address(chunk.nodes())).copied()?;
                kept[c] = true;
                Some(c)
            })
            .collect();
        Self { shared, kept }
    }

    /// The positions in `prev` of the ids `next` lacks, in order.
    pub(crate) fn removed(&self, prev: &NodeSet, next: &NodeSet) -> Vec<usize> {
        prev.chunks()
            .iter()
            .zip(&self.kept)
            .filter(|(_, &kept)| !kept)
            .flat_map(|(chunk, _)| {
                chunk
                    .nodes()
                    .iter()
                    .enumerate()
                    .filter(|(_, node)| next.find(node.id()).is_none())
                    .map(move |(i, _)| chunk.start() + i)
            })
            .collect()
    }
}

fn address(nodes: &std::sync::Arc<[Node]>) -> *const Node {
    std::sync::Arc::as_ptr(nodes).cast::<Node>()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn node(i: u32) -> Node {
        Node::new(format!("n{i:06}"), "svc", "127.0.0.1:1").expect("node")
    }

    #[test]
    fn a_one_node_change_shares_every_other_chunk() {
        let prev: NodeSet = (0..20_000).map(|i| node(i * 2)).collect();
        let next = prev.updated([(String::new(), Some(node(7)))]);
        let diff = ChunkDiff::of(&prev, &next);
        assert_eq!(diff.shared.iter().filter(|s| s.is_none()).count(), 1);
        assert_eq!(diff.kept.iter().filter(|&&k| !k).count(), 1);
        assert!(diff.removed(&prev, &next).is_empty());
        let back = ChunkDiff::of(&next, &prev);
        assert_eq!(
            back.removed(&next, &prev),
            [next.find("n000007").expect("added")]
        );
    }

    proptest! {
        #[test]
        fn removed_agrees_with_set_difference(
            a in prop::collection::btree_set(0u32..4_000, 0..2_000),
            changes in prop::collection::vec((0u32..4_000, any::<bool>()), 0..200),
            fresh in any::<bool>(),
        ) {
            let prev: NodeSet = a.iter().map(|&i| node(i)).collect();
            let mut model: BTreeSet<u32> = a.clone();
            let next = prev.updated(changes.iter().map(|&(i, put)| {
                if put { model.insert(i); } else { model.remove(&i); }
                (node(i).id().to_owned(), put.then(|| node(i)))
            }));
            // A set built afresh shares nothing, and differs the same.
            let next = if fresh { next.to_vec().into() } else { next };
            let diff = ChunkDiff::of(&prev, &next);
            prop_assert_eq!(diff.shared.len(), next.chunks().len());
            for (chunk, shared) in next.chunks().iter().zip(&diff.shared) {
                if let Some(c) = shared {
                    prop_assert!(std::sync::Arc::ptr_eq(prev.chunks()[*c].nodes(), chunk.nodes()));
                }
            }
            let gone: Vec<u32> = a.difference(&model).copied().collect();
            let removed: Vec<usize> = diff.removed(&prev, &next);
            let expected: Vec<usize> =
                gone.iter().map(|&i| prev.find(node(i).id()).expect("in prev")).collect();
            prop_assert_eq!(removed, expected);
        }
    }
}
