//! What the picker keeps of each node in force, chunk by chunk beside the
//! node set, and how a set change carries it over.
//!
//! The picker keeps a slot (handle, calls in flight, connections; shared
//! with the snapshots) and a health per node, in the chunks of the
//! [`NodeSet`] in force. A chunk the next set shares keeps its entries
//! whole; in the other chunks, a node that stays with its address keeps its
//! entry, found by id among the entries of the old chunks the next set does
//! not share. A change of a few nodes in a large set so touches a few chunks.

use std::collections::HashMap;
use std::sync::Arc;

use registry_actor::{Node, NodeSet};

use super::carry::NOT_CARRIED;
use super::picked::NodeHandle;
use super::snapshot::Slot;
use crate::balance::Member;
use crate::chunk_diff::ChunkDiff;
use crate::ejection::NodeHealth;

/// The entries of the nodes of one chunk of the set in force, in the
/// chunk's order: their slots and the nodes as balancers see them (both
/// shared, chunk by chunk, with the snapshots), and their health.
#[derive(Debug)]
pub(super) struct EntryChunk {
    pub(super) slots: Arc<[Arc<Slot>]>,
    pub(super) members: Arc<[Member]>,
    pub(super) health: Vec<NodeHealth>,
}

/// The entries of the next set, as [`carry_over`] made them.
pub(super) struct Carried {
    /// Per chunk of the next set.
    pub(super) entries: Vec<EntryChunk>,
    /// Per node of the next set: its position in the old set when it is the
    /// very same node, else [`NOT_CARRIED`].
    pub(super) from: Vec<u32>,
    /// Per node of the next set: whether it may not be picked.
    pub(super) out: Vec<bool>,
    /// The entries left behind (nodes gone, or back with a new address):
    /// each one's handle and whether it was ejected.
    pub(super) dropped: Vec<(NodeHandle, bool)>,
}

/// The entry of a node of an old chunk the next set does not share, while
/// [`carry_over`] finds its place.
struct Loose<'a> {
    index: usize,
    node: &'a Node,
    slot: Arc<Slot>,
    health: NodeHealth,
}

/// The entries of `next`, taken over from `old` (whose entries and out flags
/// are `entries` and `out`; `diff` is how `next` differs from it), with
/// `fresh` making the entry of a node that has none to take over.
pub(super) fn carry_over(
    old: &NodeSet,
    entries: Vec<EntryChunk>,
    out: &[bool],
    next: &NodeSet,
    diff: ChunkDiff,
    mut fresh: impl FnMut(&Node) -> (Arc<Slot>, NodeHealth),
) -> Carried {
    let mut old_entries: Vec<Option<EntryChunk>> = entries.into_iter().map(Some).collect();
    let mut loose: HashMap<&str, Loose<'_>> = HashMap::new();
    for ((chunk, kept), entries) in old.chunks().iter().zip(&diff.kept).zip(&mut old_entries) {
        if *kept {
            continue;
        }
        let Some(EntryChunk { slots, health, .. }) = entries.take() else {
            continue;
        };
        let nodes = chunk.nodes().iter().zip(slots.iter()).zip(health);
        for (o, ((node, slot), health)) in nodes.enumerate() {
            let index = chunk.start() + o;
            let slot = slot.clone();
            loose.insert(
                node.id(),
                Loose {
                    index,
                    node,
                    slot,
                    health,
                },
            );
        }
    }
    let mut carried = Carried {
        entries: Vec::with_capacity(next.chunks().len()),
        from: Vec::with_capacity(next.len()),
        out: Vec::with_capacity(next.len()),
        dropped: Vec::new(),
    };
    for (chunk, shared) in next.chunks().iter().zip(&diff.shared) {
        let taken = shared.and_then(|c| Some((old.chunks()[c].start(), old_entries[c].take()?)));
        if let Some((was, kept)) = taken {
            let moved = was..was + chunk.len();
            carried.from.extend(moved.clone().map(|i| i as u32));
            match out.get(moved) {
                Some(flags) => carried.out.extend_from_slice(flags),
                None => carried.out.resize(carried.out.len() + chunk.len(), false),
            }
            carried.entries.push(kept);
            continue;
        }
        let mut slots = Vec::with_capacity(chunk.len());
        let mut healths = Vec::with_capacity(chunk.len());
        for node in chunk.nodes().iter() {
            let before = loose.remove(node.id());
            let same = before.as_ref().is_some_and(|l| l.node.same(node));
            carried.from.push(match &before {
                Some(l) if same => l.index as u32,
                _ => NOT_CARRIED,
            });
            let kept = match before {
                Some(l) if same || l.node.addr() == node.addr() => Some((l.slot, l.health)),
                Some(l) => {
                    // Same id, new address: a new node for connections.
                    carried
                        .dropped
                        .push((l.slot.handle(), l.health.is_ejected()));
                    None
                }
                None => None,
            };
            let (slot, health) = kept.unwrap_or_else(|| fresh(node));
            carried.out.push(health.is_out());
            slots.push(slot);
            healths.push(health);
        }
        carried.entries.push(EntryChunk {
            slots: slots.into(),
            members: chunk.nodes().iter().map(Member::of).collect(),
            health: healths,
        });
    }
    carried.dropped.extend(
        loose
            .into_values()
            .map(|gone| (gone.slot.handle(), gone.health.is_ejected())),
    );
    carried
}

/// The health of the node at `i` of `set`, given the entries of its chunks.
pub(super) fn health_at<'a>(
    set: &NodeSet,
    entries: &'a [EntryChunk],
    i: usize,
) -> Option<&'a NodeHealth> {
    let (c, o) = set.locate(i)?;
    entries.get(c)?.health.get(o)
}

/// [`health_at`], to change it.
pub(super) fn health_mut_at<'a>(
    set: &NodeSet,
    entries: &'a mut [EntryChunk],
    i: usize,
) -> Option<&'a mut NodeHealth> {
    let (c, o) = set.locate(i)?;
    entries.get_mut(c)?.health.get_mut(o)
}
