//! Node sets sorted by id, as the registry delivers them (its keys are
//! `{prefix}/{service}/{id}`) and as the picker keeps them: differences and
//! lookups by a merge walk or a binary search, never a hash of every id, so a
//! change of a few nodes in a large set costs little more than a pass over
//! its pointers.

use std::cmp::Ordering;
use std::sync::Arc;

use registry_actor::Node;

/// `nodes`, sorted by id (the last of equal ids kept).
pub(crate) fn sorted(nodes: &[Node]) -> Arc<[Node]> {
    let mut all: Vec<Node> = nodes.to_vec();
    all.sort_by(|a, b| a.id().cmp(b.id()));
    all.reverse();
    all.dedup_by(|a, b| a.id() == b.id());
    all.reverse();
    all.into()
}

/// The position of the node with `id` in `nodes` (sorted).
pub(crate) fn find(nodes: &[Node], id: &str) -> Option<usize> {
    nodes.binary_search_by(|n| n.id().cmp(id)).ok()
}

/// How each node of a sorted set relates to the set before it.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    /// Per node of the new set: `Some(i)` when the old set's `i`-th node has
    /// its id, `None` when it is new.
    pub(crate) matched: Vec<Option<usize>>,
    /// The positions in the old set of the ids the new set lacks.
    pub(crate) removed: Vec<usize>,
}

/// How each node of `next` relates to `prev` (both sorted by id).
pub(crate) fn diff(prev: &[Node], next: &[Node]) -> Diff {
    walk(prev, next, false).unwrap_or_default()
}

/// [`diff`] for a `next` not known to be sorted: `None` when it is not.
///
/// The walk compares ids only where the two sets differ: a node of `next`
/// that is a clone of the `prev` node under the walk is the same id, and two
/// such nodes in a row are in order because `prev` is. So a change of a few
/// nodes in a large set costs a pass over pointers and a few string
/// comparisons, sortedness check included.
pub(crate) fn diff_checked(prev: &[Node], next: &[Node]) -> Option<Diff> {
    walk(prev, next, true)
}

fn walk(prev: &[Node], next: &[Node], check: bool) -> Option<Diff> {
    let mut matched = Vec::with_capacity(next.len());
    let mut removed = Vec::new();
    let (mut i, mut j) = (0, 0);
    // Whether `next[j - 1]` was the very node of `prev` the walk stood on.
    let mut last_shared = false;
    while j < next.len() {
        let shared = prev.get(i).is_some_and(|p| p.same(&next[j]));
        if check && j > 0 && !(shared && last_shared) && next[j - 1].id() >= next[j].id() {
            return None;
        }
        let order = match prev.get(i) {
            Some(_) if shared => Ordering::Equal,
            Some(p) => p.id().cmp(next[j].id()),
            None => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                removed.push(i);
                i += 1;
                continue;
            }
            Ordering::Equal => {
                matched.push(Some(i));
                i += 1;
            }
            Ordering::Greater => matched.push(None),
        }
        j += 1;
        last_shared = shared;
    }
    removed.extend(i..prev.len());
    Some(Diff { matched, removed })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(ids: &std::collections::BTreeSet<u16>) -> Vec<Node> {
        ids.iter()
            .map(|i| Node::new(format!("n{i:05}"), "svc", "127.0.0.1:1").expect("node"))
            .collect()
    }

    proptest! {
        #[test]
        fn diff_agrees_with_set_difference(
            a in prop::collection::btree_set(0u16..500, 0..80),
            b in prop::collection::btree_set(0u16..500, 0..80),
        ) {
            let (prev, next) = (set(&a), set(&b));
            let Diff { matched, removed } = diff(&prev, &next);
            prop_assert_eq!(matched.len(), next.len());
            for (j, m) in matched.iter().enumerate() {
                match m {
                    Some(i) => prop_assert_eq!(prev[*i].id(), next[j].id()),
                    None => prop_assert!(find(&prev, next[j].id()).is_none()),
                }
            }
            let gone: Vec<&str> = removed.iter().map(|&i| prev[i].id()).collect();
            let expected: Vec<&str> = prev
                .iter()
                .filter(|n| find(&next, n.id()).is_none())
                .map(Node::id)
                .collect();
            prop_assert_eq!(gone, expected);
        }
    }

    proptest! {
        /// The checked walk, given a next set sharing the nodes it keeps with
        /// the previous one (as the registry delivers it), agrees with the
        /// plain walk when the next set is sorted and answers `None` when a
        /// swap of two of its nodes unsorts it.
        #[test]
        fn the_checked_walk_agrees_and_catches_unsorted_sets(
            a in prop::collection::btree_set(0u16..500, 0..80),
            b in prop::collection::btree_set(0u16..500, 0..80),
            swap in any::<prop::sample::Index>(),
        ) {
            let prev = set(&a);
            // Nodes of `b` also in `a` are the very nodes of `prev`.
            let mut next: Vec<Node> = b
                .iter()
                .map(|i| match a.iter().position(|x| x == i) {
                    Some(k) => prev[k].clone(),
                    None => Node::new(format!("n{i:05}"), "svc", "127.0.0.1:2").expect("node"),
                })
                .collect();
            let plain = diff(&prev, &next);
            let checked = diff_checked(&prev, &next).expect("a sorted set");
            prop_assert_eq!(&plain.matched, &checked.matched);
            prop_assert_eq!(&plain.removed, &checked.removed);
            if next.len() >= 2 {
                let k = swap.index(next.len() - 1);
                next.swap(k, k + 1);
                prop_assert!(diff_checked(&prev, &next).is_none());
            }
        }
    }

    #[test]
    fn a_repeated_node_is_not_a_sorted_set() {
        let prev = set(&[1, 2, 3].into_iter().collect());
        let next = vec![
            prev[0].clone(),
            prev[1].clone(),
            prev[1].clone(),
            prev[2].clone(),
        ];
        assert!(diff_checked(&prev, &next).is_none());
    }

    #[test]
    fn unsorted_sets_are_sorted_keeping_the_last_of_a_duplicate_id() {
        let n =
            |id: &str, port: u16| Node::new(id, "svc", format!("127.0.0.1:{port}")).expect("node");
        let all = [n("b", 1), n("a", 2), n("b", 3)];
        let s = sorted(&all);
        let got: Vec<(&str, &str)> = s.iter().map(|n| (n.id(), n.addr())).collect();
        assert_eq!(got, [("a", "127.0.0.1:2"), ("b", "127.0.0.1:3")]);
    }
}
