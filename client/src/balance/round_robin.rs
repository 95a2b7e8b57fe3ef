//! `round_robin`: every candidate in turn.
//!
//! The cycle starts at a random position, so that many clients built at the same
//! moment do not all begin with the first node. An excluded candidate is skipped;
//! the next pick continues after the one taken.

use rand::rngs::SmallRng;
use rand::Rng;

/// The position of the next pick, cyclically over `len` candidates.
#[derive(Debug, Clone)]
pub(crate) struct RoundRobin {
    len: usize,
    next: usize,
}

impl RoundRobin {
    pub(crate) fn new(len: usize, rng: &mut SmallRng) -> Self {
        let next = if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        };
        Self { len, next }
    }

    #[inline]
    pub(crate) fn pick(&mut self, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let mut i = self.next;
        for _ in 0..self.len {
            let pos = i;
            i += 1;
            if i == self.len {
                i = 0;
            }
            if accept(pos) {
                self.next = i;
                return Some(pos);
            }
        }
        None
    }
}
