//! Picks during a rebuild, on the public `Picker`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_client::{Picker, PickerConfig};
use registry_actor::Node;

use super::nodes::{node, SERVICE};

/// Rebuilds of the picker while picks are timed, and the pause after each.
pub(super) const REBUILDS: usize = 20;
pub(super) const REBUILD_GAP: Duration = Duration::from_millis(10);
/// Picks are timed one every this long (so the samples stay few).
pub(super) const PICK_EVERY: Duration = Duration::from_micros(5);
/// Picks timed without any rebuild.
const QUIET_PICKS: usize = 100_000;

/// The picker state calls pick from, shared the way the cluster client
/// shares it between its picker actor (which applies node sets) and the
/// calls (which pick): one mutex over the [`Picker`], held for a whole update
/// and for each pick. The one place of this measurement that mirrors how the
/// client shares its picker.
struct SharedState(Mutex<Picker>);

impl SharedState {
    fn new(picker: Picker) -> Self {
        Self(Mutex::new(picker))
    }

    /// Applies `nodes`; `rebuilds` counts from when the rebuild starts until
    /// it is done.
    fn update(&self, nodes: Arc<[Node]>, revision: i64, rebuilds: &Rebuilds) {
        let mut picker = self.0.lock().expect("picker lock");
        rebuilds.started.fetch_add(1, Ordering::SeqCst);
        picker.update(nodes, revision, Instant::now());
        rebuilds.finished.fetch_add(1, Ordering::SeqCst);
    }

    fn pick(&self) -> bool {
        let mut picker = self.0.lock().expect("picker lock");
        picker.pick(None, &[], None).is_ok()
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
    let a: Arc<[Node]> = (0..n).map(node).collect();
    let b: Arc<[Node]> = (0..n)
        .map(|i| {
            if i == 0 {
                node(0).with_version("1.0.1")
            } else {
                node(i)
            }
        })
        .collect();
    let state = SharedState::new(Picker::with_seed(SERVICE, PickerConfig::default(), 7));
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
