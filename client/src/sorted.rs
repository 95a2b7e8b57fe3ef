//! Node sets sorted by id, as the registry delivers them (its keys are
//! `{prefix}/{service}/{id}`) and as the picker keeps them: differences and
//! lookups by a merge walk or a binary search, never a hash of every id, so a
//! change of a few nodes in a large set costs little more than a pass over
//! its pointers.

use std::cmp::Ordering;
use std::sync::Arc;

use registry_actor::Node;

/// Whether `nodes` are sorted by id, each id once.
pub(crate) fn is_sorted(nodes: &[Node]) -> bool {
    nodes.windows(2).all(|w| w[0].id() < w[1].id())
}

/// `nodes`, sorted by id (the last of equal ids kept): as they are when they
/// already are.
pub(crate) fn sorted(nodes: Arc<[Node]>) -> Arc<[Node]> {
    if is_sorted(&nodes) {
        return nodes;
    }
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

/// How each node of `next` relates to `prev` (both sorted): `Some(i)` when
/// `prev[i]` has its id, `None` when it is new; and the positions of `prev`
/// whose id `next` lacks.
pub(crate) fn diff(prev: &[Node], next: &[Node]) -> (Vec<Option<usize>>, Vec<usize>) {
    let mut matched = Vec::with_capacity(next.len());
    let mut removed = Vec::new();
    let (mut i, mut j) = (0, 0);
    while j < next.len() {
        let order = match prev.get(i) {
            Some(p) => p.id().cmp(next[j].id()),
            None => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                removed.push(i);
                i += 1;
            }
            Ordering::Equal => {
                matched.push(Some(i));
                i += 1;
                j += 1;
            }
            Ordering::Greater => {
                matched.push(None);
                j += 1;
            }
        }
    }
    removed.extend(i..prev.len());
    (matched, removed)
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
            let (matched, removed) = diff(&prev, &next);
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

    #[test]
    fn unsorted_sets_are_sorted_keeping_the_last_of_a_duplicate_id() {
        let n =
            |id: &str, port: u16| Node::new(id, "svc", format!("127.0.0.1:{port}")).expect("node");
        let all: Arc<[Node]> = vec![n("b", 1), n("a", 2), n("b", 3)].into();
        let s = sorted(all);
        let got: Vec<(&str, &str)> = s.iter().map(|n| (n.id(), n.addr())).collect();
        assert_eq!(got, [("a", "127.0.0.1:2"), ("b", "127.0.0.1:3")]);
    }
}
