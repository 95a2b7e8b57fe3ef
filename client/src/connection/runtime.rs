//! Where channels run: the runtime of the calls that use them, or the
//! client's own I/O runtime.
//!
//! A tonic channel spawns its tasks (the request buffer's worker, the HTTP/2
//! connection) on the runtime it is made in, and every call hands its request
//! to them. A channel made on the caller's runtime costs the call no hop
//! between threads of different runtimes: on the actix thread everything stays
//! on that thread, as with a channel a tonic user makes there; on a
//! multi-thread runtime the channel's tasks spread over its workers. So each
//! node gets one channel per runtime that calls it, made on that runtime.
//!
//! The client's [`IoRuntime`] carries the channels of calls made outside any
//! tokio runtime, or of every call when `client.io_threads` asks for a
//! dedicated runtime (for an app whose calling thread is its bottleneck).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::runtime::{Handle, Id, Runtime};

/// The runtime a call's channels run on.
#[derive(Debug, Clone)]
pub(crate) enum Home {
    /// The runtime the call runs on.
    Caller(Handle),
    /// The client's I/O runtime.
    Io,
}

impl Home {
    /// The home of a call made now: the current runtime, unless `dedicated`
    /// (or there is none).
    pub(crate) fn of_caller(dedicated: bool) -> Self {
        if dedicated {
            return Self::Io;
        }
        Handle::try_current().map_or(Self::Io, Self::Caller)
    }

    /// The key of the home among a node's channels: `None` for the I/O runtime.
    pub(crate) fn key(&self) -> Option<Id> {
        match self {
            Self::Caller(handle) => Some(handle.id()),
            Self::Io => None,
        }
    }
}

/// Which runtime a call's channels run on, as picks look it up: the key of
/// the calling runtime (`None`: the client's I/O runtime). Cheap to get: it
/// touches no count shared with other threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HomeKey {
    key: Option<Id>,
    dedicated: bool,
}

/// Calls a thread makes between two fresh reads of its runtime's key.
const KEY_REFRESH: u32 = 64;

thread_local! {
    // The key of the runtime this thread last ran a call on, and how many
    // calls may still use it before it is read again.
    static CALLER_KEY: Cell<(u32, Option<Id>)> = const { Cell::new((0, None)) };
}

impl HomeKey {
    /// The home key of a call made now. The calling runtime's key is read
    /// once per [`KEY_REFRESH`] calls of a thread (reading it clones a
    /// handle every worker shares). A thread that changed runtimes since
    /// may use a channel of the runtime it ran before for a few calls: that
    /// works (channels serve any caller), and a channel of a stopped runtime
    /// is never used.
    pub(crate) fn of_caller(dedicated: bool) -> Self {
        if dedicated {
            return Self {
                key: None,
                dedicated,
            };
        }
        let key = CALLER_KEY.with(|cached| match cached.get() {
            (left @ 1.., Some(key)) => {
                cached.set((left - 1, Some(key)));
                Some(key)
            }
            _ => {
                let key = Handle::try_current().ok().map(|h| h.id());
                cached.set((KEY_REFRESH, key));
                key
            }
        });
        Self { key, dedicated }
    }

    /// The key among a node's channels.
    pub(crate) fn key(self) -> Option<Id> {
        self.key
    }

    /// The home to make a channel on, read fresh from the calling task (and
    /// remembered for the thread's next calls).
    pub(crate) fn home(self) -> Home {
        let home = Home::of_caller(self.dedicated);
        if !self.dedicated {
            CALLER_KEY.with(|cached| cached.set((KEY_REFRESH, home.key())));
        }
        home
    }
}

/// The client's own multi-thread runtime, started on first use and shut down
/// without waiting when the client goes (dropping a runtime inside another
/// would block).
#[derive(Debug)]
pub(crate) struct IoRuntime {
    threads: usize,
    runtime: OnceLock<Option<Runtime>>,
}

impl IoRuntime {
    pub(crate) fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            runtime: OnceLock::new(),
        }
    }

    /// The runtime's handle, starting it on first use; `None` when it cannot
    /// be started (the system refused its threads).
    pub(crate) fn handle(&self) -> Option<&Handle> {
        self.runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(self.threads)
                    .thread_name("gc-io")
                    .enable_all()
                    .build()
                    .map_err(
                        |e| tracing::error!(error = %e, "cannot start the client's I/O runtime"),
                    )
                    .ok()
            })
            .as_ref()
            .map(Runtime::handle)
    }

    /// The handle, when the runtime has been started.
    pub(crate) fn started(&self) -> Option<&Handle> {
        self.runtime.get()?.as_ref().map(Runtime::handle)
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(Some(runtime)) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Whether a runtime is still running: a task parked on it clears the flag
/// when the runtime drops it (at shutdown).
#[derive(Debug, Clone)]
pub(crate) struct Alive(Arc<AtomicBool>);

impl Alive {
    /// Parks a task on `runtime` that answers for it.
    pub(crate) fn watch(runtime: &Handle) -> Self {
        let flag = Arc::new(AtomicBool::new(true));
        let guard = ClearOnDrop(flag.clone());
        runtime.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        Self(flag)
    }

    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}
