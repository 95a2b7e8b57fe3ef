//! `least_request`: the power of two choices.
//!
//! Two distinct candidates are drawn at random and the one with fewer calls in
//! flight (as reported by the connection actors) wins; a tie goes to the first
//! drawn. This avoids the herd that "always the least loaded" causes when load
//! reports lag, at O(1) per pick (Mitzenmacher; Envoy's and gRPC's
//! `least_request`).

use rand::Rng;

use super::{scan_from, PickCx, DRAWS};

/// Of `a` and `b`, the one with fewer calls in flight; `a` on a tie.
#[inline]
pub(crate) fn choose_less_loaded(a: usize, b: usize, load: impl Fn(usize) -> u32) -> usize {
    if load(b) < load(a) {
        b
    } else {
        a
    }
}

pub(super) fn pick<A, L>(len: usize, cx: &mut PickCx<'_, A, L>) -> Option<usize>
where
    A: Fn(usize) -> bool,
    L: Fn(usize) -> u32,
{
    match len {
        0 => return None,
        1 => return (cx.accept)(0).then_some(0),
        _ => {}
    }
    for _ in 0..DRAWS {
        let a = cx.rng.random_range(0..len);
        let mut b = cx.rng.random_range(0..len - 1);
        if b >= a {
            b += 1;
        }
        match ((cx.accept)(a), (cx.accept)(b)) {
            (true, true) => return Some(choose_less_loaded(a, b, &cx.load)),
            (true, false) => return Some(a),
            (false, true) => return Some(b),
            (false, false) => {}
        }
    }
    // Nearly everything is excluded: the least loaded of what is left.
    let start = cx.rng.random_range(0..len);
    let first = scan_from(len, start, &cx.accept)?;
    Some(
        (0..len)
            .filter(|&i| (cx.accept)(i))
            .fold(first, |best, i| choose_less_loaded(best, i, &cx.load)),
    )
}
