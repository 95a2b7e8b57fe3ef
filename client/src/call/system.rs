//! [`SystemThread`]: the actix system a spawned client's actors run on, as
//! the handles that own it see it.

use std::sync::atomic::{AtomicBool, Ordering};

use actix::System;

/// The actix system of a spawned client; stopped when the last handle that
/// owns it is dropped.
#[derive(Debug)]
pub(crate) struct SystemThread {
    system: System,
    stopped: AtomicBool,
}

impl SystemThread {
    /// The system of the thread it runs on.
    pub(crate) fn new(system: System) -> Self {
        Self {
            system,
            stopped: AtomicBool::new(false),
        }
    }

    /// Stops the system; calls are refused from now on.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.system.stop();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

impl Drop for SystemThread {
    fn drop(&mut self) {
        self.system.stop();
    }
}
