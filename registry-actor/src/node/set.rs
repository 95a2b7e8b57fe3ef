//! [`NodeSet`]: a service's nodes sorted by id, shared in chunks.
//!
//! A set of 100,000 nodes changes a few nodes at a time. Kept as one flat
//! slice, every change would copy every node's pointer (a reference count
//! each) and every reader would walk the whole slice to find what changed.
//! A `NodeSet` is a list of chunks of a few hundred nodes each, every chunk
//! an `Arc<[Node]>`: a change copies only the chunks it touches and the list
//! of chunk pointers, and the next set shares every other chunk with the one
//! before. A reader tells the chunks both sets share by pointer
//! ([`NodeChunk::nodes`] with `Arc::ptr_eq`) and looks only at the others.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::Node;

/// The size chunks are cut to when a set is built whole or a chunk is split.
const CHUNK: usize = 512;
/// A chunk grown past this is split in two.
const MAX_CHUNK: usize = 2 * CHUNK;
/// A chunk shrunk below this is merged with a neighbour.
const MIN_CHUNK: usize = CHUNK / 4;

/// A service's nodes sorted by id, each id once, shared in chunks.
///
/// Cloning a set costs one reference count; [`updated`](Self::updated)
/// builds the next set from a few changes, copying only the chunks they
/// touch. Readers index it like a slice ([`get`](Self::get), `set[i]`,
/// [`iter`](Self::iter)) and find nodes by id ([`find`](Self::find)).
///
/// # Examples
///
/// ```
/// use registry_actor::{Node, NodeSet};
///
/// let node = |id: &str| Node::new(id, "echo", "127.0.0.1:5000");
/// let set: NodeSet = ["b", "a", "c"].into_iter().map(node).collect::<Result<_, _>>()?;
/// assert_eq!(set.iter().map(Node::id).collect::<Vec<_>>(), ["a", "b", "c"]);
///
/// let next = set.updated([("b".to_owned(), None), ("d".to_owned(), Some(node("d")?))]);
/// assert_eq!(next.iter().map(Node::id).collect::<Vec<_>>(), ["a", "c", "d"]);
/// assert_eq!(next.find("c"), Some(1));
/// assert_eq!(set.len(), 3, "the set before is unchanged");
/// # Ok::<(), registry_actor::DecodeError>(())
/// ```
#[derive(Clone, Default)]
pub struct NodeSet {
    chunks: Arc<[NodeChunk]>,
    len: usize,
}

/// One chunk of a [`NodeSet`]: consecutive nodes, and where the first of them
/// is in the set.
#[derive(Clone)]
pub struct NodeChunk {
    start: usize,
    nodes: Arc<[Node]>,
}

impl NodeChunk {
    /// The position, in the set, of the chunk's first node.
    pub fn start(&self) -> usize {
        self.start
    }

    /// The chunk's nodes. Two sets share this chunk when these are the same
    /// allocation (`Arc::ptr_eq`).
    pub fn nodes(&self) -> &Arc<[Node]> {
        &self.nodes
    }

    /// The number of nodes in the chunk.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the chunk has no node (never true of a chunk of a set).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn first_id(&self) -> &str {
        self.nodes.first().map(Node::id).unwrap_or_default()
    }
}

impl fmt::Debug for NodeChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeChunk")
            .field("start", &self.start)
            .field("len", &self.nodes.len())
            .finish()
    }
}

impl NodeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set has no node.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order; together they hold every node once.
    pub fn chunks(&self) -> &[NodeChunk] {
        &self.chunks
    }

    /// The chunk holding position `index`, and the position within it.
    pub fn locate(&self, index: usize) -> Option<(usize, usize)> {
        if index >= self.len {
            return None;
        }
        let c = self.chunks.partition_point(|c| c.start <= index) - 1;
        Some((c, index - self.chunks[c].start))
    }

    /// The node at `index` (in id order).
    pub fn get(&self, index: usize) -> Option<&Node> {
        let (c, i) = self.locate(index)?;
        Some(&self.chunks[c].nodes[i])
    }

    /// The nodes in id order.
    pub fn iter(&self) -> Nodes<'_> {
        Nodes {
            chunks: &self.chunks,
            current: [].iter(),
            left: self.len,
        }
    }

    /// The position of the node with `id`.
    pub fn find(&self, id: &str) -> Option<usize> {
        let c = self.chunk_for(id)?;
        let chunk = &self.chunks[c];
        let i = chunk.nodes.binary_search_by(|n| n.id().cmp(id)).ok()?;
        Some(chunk.start + i)
    }

    /// The node with `id`.
    pub fn by_id(&self, id: &str) -> Option<&Node> {
        self.find(id).and_then(|i| self.get(i))
    }

    /// Whether `self` and `other` are clones of one set (share their list of
    /// chunks): a pointer comparison, true only for equal sets.
    pub fn same(&self, other: &NodeSet) -> bool {
        Arc::ptr_eq(&self.chunks, &other.chunks)
    }

    /// The nodes as one vector, in id order.
    pub fn to_vec(&self) -> Vec<Node> {
        self.iter().cloned().collect()
    }

    /// The chunk whose id range holds `id`: the last one whose first id is not
    /// above it (the first chunk for an id below every node).
    fn chunk_for(&self, id: &str) -> Option<usize> {
        if self.chunks.is_empty() {
            return None;
        }
        Some(self.chunks.partition_point(|c| c.first_id() <= id).max(1) - 1)
    }

    /// The set with `changes` applied in order: `(id, Some(node))` puts the
    /// node under `id` (adding it or replacing the node of that id), `(id,
    /// None)` removes the node of `id` if there is one. A change whose node
    /// has another id than the one it is given under is applied under the
    /// node's own id. The chunks no change falls in are shared with `self`;
    /// a change of a few nodes costs a few chunks and the list of chunks,
    /// whatever the size of the set.
    pub fn updated(&self, changes: impl IntoIterator<Item = (String, Option<Node>)>) -> Self {
        let mut changes: BTreeMap<String, Option<Node>> = changes
            .into_iter()
            .map(|(id, node)| match node {
                Some(node) => (node.id().to_owned(), Some(node)),
                None => (id, None),
            })
            .collect();
        if changes.is_empty() {
            return self.clone();
        }
        if self.chunks.is_empty() {
            return changes.into_values().flatten().collect::<Vec<_>>().into();
        }
        let mut out: Vec<Arc<[Node]>> = Vec::with_capacity(self.chunks.len() + 1);
        // Whether each chunk of `out` was made here (only those are resized).
        let mut made: Vec<bool> = Vec::with_capacity(self.chunks.len() + 1);
        for (c, chunk) in self.chunks.iter().enumerate() {
            // The changes in this chunk's id range: below the next chunk's
            // first id (the last chunk takes every id left).
            let mine = match self.chunks.get(c + 1) {
                Some(next) => {
                    let rest = changes.split_off(next.first_id());
                    std::mem::replace(&mut changes, rest)
                }
                None => std::mem::take(&mut changes),
            };
            if mine.is_empty() {
                out.push(chunk.nodes.clone());
                made.push(false);
                continue;
            }
            for piece in cut(merge(&chunk.nodes, mine)) {
                out.push(piece);
                made.push(true);
            }
        }
        balance(&mut out, made);
        Self::from_chunks(out)
    }

    fn from_chunks(chunks: Vec<Arc<[Node]>>) -> Self {
        let mut start = 0;
        let chunks: Arc<[NodeChunk]> = chunks
            .into_iter()
            .map(|nodes| {
                let chunk = NodeChunk { start, nodes };
                start += chunk.nodes.len();
                chunk
            })
            .collect();
        Self { chunks, len: start }
    }
}

/// `nodes` (sorted) with `changes` (sorted by id) applied.
fn merge(nodes: &[Node], changes: BTreeMap<String, Option<Node>>) -> Vec<Node> {
    let mut merged = Vec::with_capacity(nodes.len() + changes.len());
    let mut nodes = nodes.iter().peekable();
    for (id, change) in changes {
        while let Some(node) = nodes.next_if(|n| n.id() < id.as_str()) {
            merged.push(node.clone());
        }
        // The node the change replaces or removes.
        nodes.next_if(|n| n.id() == id);
        merged.extend(change);
    }
    merged.extend(nodes.cloned());
    merged
}

/// `nodes` cut into chunks of at most [`MAX_CHUNK`], as even as can be;
/// none for no node.
fn cut(nodes: Vec<Node>) -> Vec<Arc<[Node]>> {
    if nodes.is_empty() {
        return Vec::new();
    }
    if nodes.len() <= MAX_CHUNK {
        return vec![nodes.into()];
    }
    let pieces = nodes.len().div_ceil(CHUNK);
    let size = nodes.len().div_ceil(pieces);
    nodes.chunks(size).map(Arc::from).collect()
}

/// Merges each chunk made smaller than [`MIN_CHUNK`] into a neighbour (cut
/// again if the two pass [`MAX_CHUNK`]), so that many removals do not leave
/// a long list of tiny chunks. Chunks not made by this change stay shared.
fn balance(chunks: &mut Vec<Arc<[Node]>>, mut made: Vec<bool>) {
    let mut c = 0;
    while c < chunks.len() {
        if !made[c] || chunks[c].len() >= MIN_CHUNK || chunks.len() == 1 {
            c += 1;
            continue;
        }
        // Merge with the one before, or the one after for the first chunk.
        let at = if c > 0 { c - 1 } else { c };
        let joined: Vec<Node> = chunks[at]
            .iter()
            .chain(chunks[at + 1].iter())
            .cloned()
            .collect();
        let pieces = cut(joined);
        let n = pieces.len();
        chunks.splice(at..at + 2, pieces);
        made.splice(at..at + 2, std::iter::repeat_n(true, n));
        // The merged chunk may still be small (two small ones joined).
        c = at;
    }
}

impl From<Vec<Node>> for NodeSet {
    /// The set of `nodes`, sorted by id; of nodes with equal ids the last is
    /// kept.
    fn from(mut nodes: Vec<Node>) -> Self {
        if !nodes.is_sorted_by(|a, b| a.id() < b.id()) {
            // A stable sort keeps equal ids in their order: the last is kept.
            nodes.sort_by(|a, b| a.id().cmp(b.id()));
            nodes.reverse();
            nodes.dedup_by(|a, b| a.id() == b.id());
            nodes.reverse();
        }
        Self::from_chunks(cut(nodes))
    }
}

impl From<Arc<[Node]>> for NodeSet {
    /// The set of `nodes`, sorted by id; of nodes with equal ids the last is
    /// kept.
    fn from(nodes: Arc<[Node]>) -> Self {
        nodes.to_vec().into()
    }
}

impl From<&[Node]> for NodeSet {
    fn from(nodes: &[Node]) -> Self {
        nodes.to_vec().into()
    }
}

impl FromIterator<Node> for NodeSet {
    /// The set of the nodes, sorted by id; of nodes with equal ids the last is
    /// kept.
    fn from_iter<I: IntoIterator<Item = Node>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl std::ops::Index<usize> for NodeSet {
    type Output = Node;

    fn index(&self, index: usize) -> &Node {
        match self.get(index) {
            Some(node) => node,
            None => panic!("index {index} out of a set of {} nodes", self.len),
        }
    }
}

impl PartialEq for NodeSet {
    fn eq(&self, other: &Self) -> bool {
        if self.len != other.len {
            return false;
        }
        if self.same(other) {
            return true;
        }
        let aligned = self.chunks.len() == other.chunks.len()
            && self
                .chunks
                .iter()
                .zip(other.chunks.iter())
                .all(|(a, b)| a.start == b.start);
        if aligned {
            // Shared chunks are equal without reading them.
            return self
                .chunks
                .iter()
                .zip(other.chunks.iter())
                .all(|(a, b)| Arc::ptr_eq(&a.nodes, &b.nodes) || a.nodes == b.nodes);
        }
        self.iter().eq(other.iter())
    }
}

impl Eq for NodeSet {}

impl fmt::Debug for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl serde::Serialize for NodeSet {
    /// A sequence of the nodes, in id order.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'a> IntoIterator for &'a NodeSet {
    type Item = &'a Node;
    type IntoIter = Nodes<'a>;

    fn into_iter(self) -> Nodes<'a> {
        self.iter()
    }
}

/// The nodes of a [`NodeSet`] in id order.
#[derive(Clone)]
pub struct Nodes<'a> {
    chunks: &'a [NodeChunk],
    current: std::slice::Iter<'a, Node>,
    left: usize,
}

impl<'a> Iterator for Nodes<'a> {
    type Item = &'a Node;

    fn next(&mut self) -> Option<&'a Node> {
        loop {
            if let Some(node) = self.current.next() {
                self.left -= 1;
                return Some(node);
            }
            let (first, rest) = self.chunks.split_first()?;
            self.current = first.nodes.iter();
            self.chunks = rest;
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Nodes<'_> {}

impl fmt::Debug for Nodes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nodes").field("left", &self.left).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn node(i: u32) -> Node {
        Node::new(format!("n{i:06}"), "svc", "127.0.0.1:1").expect("node")
    }

    fn ids(set: &NodeSet) -> Vec<String> {
        set.iter().map(|n| n.id().to_owned()).collect()
    }

    fn check_invariants(set: &NodeSet) {
        let mut start = 0;
        for chunk in set.chunks() {
            assert_eq!(chunk.start(), start);
            assert!(!chunk.is_empty());
            assert!(chunk.len() <= MAX_CHUNK, "chunk of {}", chunk.len());
            start += chunk.len();
        }
        assert_eq!(start, set.len());
        let all = ids(set);
        assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
    }

    #[test]
    fn a_large_set_is_cut_into_chunks_and_indexed_like_a_slice() {
        let set: NodeSet = (0..5_000).rev().map(node).collect();
        check_invariants(&set);
        assert!(set.chunks().len() >= 5_000 / MAX_CHUNK);
        for i in [0, 1, 511, 512, 2_500, 4_999] {
            assert_eq!(set[i].id(), format!("n{i:06}"));
            assert_eq!(set.find(&format!("n{i:06}")), Some(i));
            assert_eq!(
                set.locate(i).map(|(c, o)| set.chunks()[c].start() + o),
                Some(i)
            );
        }
        assert_eq!(set.get(5_000), None);
        assert_eq!(set.find("n999999"), None);
        assert_eq!(set.find("a"), None);
        assert_eq!(set.iter().len(), 5_000);
    }

    #[test]
    fn one_change_shares_every_chunk_it_does_not_touch() {
        let set: NodeSet = (0..100_000).map(|i| node(i * 2)).collect();
        let added = set.updated([(String::new(), Some(node(1001)))]);
        check_invariants(&added);
        assert_eq!(added.len(), 100_001);
        let fresh = added
            .chunks()
            .iter()
            .filter(|c| {
                !set.chunks()
                    .iter()
                    .any(|o| Arc::ptr_eq(o.nodes(), c.nodes()))
            })
            .count();
        assert_eq!(fresh, 1, "only the chunk of the new node is new");
        let removed = added.updated([("n001001".to_owned(), None)]);
        assert_eq!(removed, set);
        assert_eq!(set.len(), 100_000, "the set before stays as it was");
    }

    #[test]
    fn equal_ids_keep_the_last_and_a_change_replaces_the_node_of_its_id() {
        let first = node(1);
        let second = node(1).with_version("2");
        let set: NodeSet = vec![first, node(0), second.clone()].into();
        assert_eq!(set.len(), 2);
        assert!(set[1].same(&second));
        let third = node(1).with_version("3");
        let next = set.updated([("ignored".to_owned(), Some(third.clone()))]);
        assert_eq!(next.len(), 2);
        assert!(next.by_id("n000001").expect("there").same(&third));
    }

    #[test]
    fn removing_most_nodes_merges_the_small_chunks() {
        let set: NodeSet = (0..10_000).map(node).collect();
        let next = set.updated(
            (0..10_000)
                .filter(|i| i % 50 != 0)
                .map(|i| (node(i).id().to_owned(), None)),
        );
        check_invariants(&next);
        assert_eq!(next.len(), 200);
        assert_eq!(next.chunks().len(), 1, "200 nodes fit one chunk");
        let empty = next.updated(
            next.iter()
                .map(|n| (n.id().to_owned(), None))
                .collect::<Vec<_>>(),
        );
        assert!(empty.is_empty());
        assert!(empty.chunks().is_empty());
        let again = empty.updated([(String::new(), Some(node(7)))]);
        assert_eq!(ids(&again), ["n000007"]);
    }

    proptest! {
        #[test]
        fn updated_agrees_with_a_sorted_map(
            start in prop::collection::btree_set(0u32..3_000, 0..2_500),
            changes in prop::collection::vec((0u32..3_000, any::<bool>()), 0..400),
        ) {
            let set: NodeSet = start.iter().map(|&i| node(i)).collect();
            let mut model: BTreeSet<u32> = start.clone();
            let mut batch = Vec::new();
            for &(i, put) in &changes {
                if put {
                    model.insert(i);
                    batch.push((node(i).id().to_owned(), Some(node(i))));
                } else {
                    model.remove(&i);
                    batch.push((node(i).id().to_owned(), None));
                }
            }
            let next = set.updated(batch);
            check_invariants(&next);
            let expected: Vec<String> = model.iter().map(|&i| node(i).id().to_owned()).collect();
            prop_assert_eq!(ids(&next), expected);
            // One at a time gives the same set.
            let mut stepped = set.clone();
            for &(i, put) in &changes {
                stepped = stepped.updated([(node(i).id().to_owned(), put.then(|| node(i)))]);
                check_invariants(&stepped);
            }
            prop_assert_eq!(ids(&stepped), ids(&next));
        }
    }
}
