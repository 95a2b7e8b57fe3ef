//! Picks during a rebuild, through a real `PickerActor` and its `PickerView`:
//! the actor rebuilds its candidates for each node set on its actix thread
//! while this thread picks from the published snapshot, as calls do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use cluster_client::{Pick, PickerActor, PickerConfig, PickerView};
use registry_actor::{NodeSet, NodesChanged, RegistryActor, RegistryConfig};

use super::nodes::{node, SERVICE};

/// Rebuilds of the picker while picks are timed, and the pause after each.
pub(super) const REBUILDS: usize = 20;
pub(super) const REBUILD_GAP: Duration = Duration::from_millis(10);
/// Picks are timed one every this long (so the samples stay few).
pub(super) const PICK_EVERY: Duration = Duration::from_micros(5);
/// Picks timed without any rebuild.
const QUIET_PICKS: usize = 100_000;

/// A picker actor on an actix system thread of its own, fed node sets by
/// message, and the view calls pick from.
struct SharedState {
    picker: Addr<PickerActor>,
    view: PickerView,
    /// Carries the messages to the actor from the updating thread.
    runtime: tokio::runtime::Runtime,
}

impl SharedState {
    fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let system = System::new();
            system.block_on(async move {
                // A registry whose etcd is nowhere (the discard port): the
                // node sets come by message from this measurement.
                let config = RegistryConfig::default().with_endpoints(["127.0.0.1:9"]);
                let client = registry_actor::connect(&config).await.expect("lazy client");
                let registry = RegistryActor::new(client, &config).start();
                let actor = PickerActor::new(SERVICE, PickerConfig::default(), registry);
                let view = actor.view();
                tx.send((actor.start(), view)).expect("measurement alive");
            });
            system.run().expect("actix system");
        });
        let (picker, view) = rx.recv().expect("picker started");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            picker,
            view,
            runtime,
        }
    }

    /// Applies `nodes`; `rebuilds` counts from when the rebuild starts until
    /// it is done.
    fn update(&self, nodes: NodeSet, revision: i64, rebuilds: &Rebuilds) {
        rebuilds.started.fetch_add(1, Ordering::SeqCst);
        self.runtime
            .block_on(self.picker.send(NodesChanged {
                service: SERVICE.into(),
                nodes,
                revision,
            }))
            .expect("picker alive");
        rebuilds.finished.fetch_add(1, Ordering::SeqCst);
    }

    fn pick(&self) -> bool {
        self.view.pick(&Pick::new()).is_ok()
    }
}

/// Rebuilds started and finished: a pick overlapped a rebuild when one was
/// in progress as it started, or one started before it ended.
#[derive(Default)]
struct Rebuilds {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Rebuilds {
    /// A mark taken before a pick: (started, finished).
    fn mark(&self) -> (u64, u64) {
        let started = self.started.load(Ordering::SeqCst);
        (started, self.finished.load(Ordering::SeqCst))
    }

    /// Whether a pick between `before` and now overlapped a rebuild.
    fn overlapped(&self, before: (u64, u64)) -> bool {
        before.0 != before.1 || self.started.load(Ordering::SeqCst) != before.0
    }
}

/// What [`during_rebuilds`] measured.
pub(super) struct PickRun {
    /// Picks with no rebuild anywhere.
    pub(super) quiet: Vec<Duration>,
    /// Picks that overlapped a rebuild.
    pub(super) during: Vec<Duration>,
    /// Picks between rebuilds.
    pub(super) between: Vec<Duration>,
    /// How long each rebuild took.
    pub(super) rebuilds: Vec<Duration>,
}

/// One thread applies [`REBUILDS`] node sets of `n` nodes (each a
/// one-node change from the last), pausing [`REBUILD_GAP`] after each, while
/// this one picks every [`PICK_EVERY`] and times each pick; picks are sorted
/// by whether they overlapped a rebuild.
pub(super) fn during_rebuilds(n: usize) -> PickRun {
    // `b` is `a` with one node changed, sharing the rest as the registry's
    // consecutive sets do.
    let a: NodeSet = (0..n).map(node).collect();
    let changed = node(0).with_version("1.0.1");
    let b = a.updated([(changed.id().to_owned(), Some(changed))]);
    let state = SharedState::new();
    let rebuilds = Rebuilds::default();
    state.update(a.clone(), 1, &rebuilds);
    let mut quiet = Vec::with_capacity(QUIET_PICKS);
    for _ in 0..QUIET_PICKS {
        let t = Instant::now();
        assert!(state.pick(), "a pick of {n} nodes");
        quiet.push(t.elapsed());
    }
    let stop = AtomicBool::new(false);
    let (mut during, mut between) = (Vec::new(), Vec::new());
    let took = std::thread::scope(|s| {
        let updater = s.spawn(|| {
            let mut took = Vec::with_capacity(REBUILDS);
            for r in 0..REBUILDS {
                let set = if r % 2 == 0 { b.clone() } else { a.clone() };
                let t = Instant::now();
                state.update(set, r as i64 + 2, &rebuilds);
                took.push(t.elapsed());
                std::thread::sleep(REBUILD_GAP);
            }
            stop.store(true, Ordering::SeqCst);
            took
        });
        let mut next = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            while Instant::now() < next {
                std::hint::spin_loop();
            }
            let mark = rebuilds.mark();
            let t = Instant::now();
            assert!(state.pick(), "a pick of {n} nodes");
            let took = t.elapsed();
            if rebuilds.overlapped(mark) {
                during.push(took);
            } else {
                between.push(took);
            }
            // The next pick on schedule, or now if this one ran late.
            next = (next + PICK_EVERY).max(Instant::now());
        }
        updater.join().expect("updater thread")
    });
    PickRun {
        quiet,
        during,
        between,
        rebuilds: took,
    }
}
