//! `round_robin`: every candidate in turn.
//!
//! The cycle starts at a random position, so that many clients built at the same
//! moment do not all begin with the first node. An excluded candidate is skipped;
//! the next pick continues after the one taken.
//!
//! The cursor is an atomic counter: concurrent picks each take the next
//! position without a lock.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::rngs::SmallRng;
use rand::Rng;

/// The position of the next pick, cyclically over `len` candidates.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    len: usize,
    next: AtomicUsize,
}

impl RoundRobin {
    pub(crate) fn new(len: usize, rng: &mut SmallRng) -> Self {
        let next = if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        };
        Self {
            len,
            next: AtomicUsize::new(next),
        }
    }

    #[inline]
    pub(crate) fn pick(&self, accept: impl Fn(usize) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % self.len;
        if accept(start) {
            return Some(start);
        }
        // Skip the excluded: the first accepted position after `start`, and
        // the next pick continues after it.
        let pos = (start + 1..self.len).chain(0..start).find(|&i| accept(i))?;
        let skipped = (pos + self.len - start) % self.len;
        self.next.fetch_add(skipped, Ordering::Relaxed);
        Some(pos)
    }
}
