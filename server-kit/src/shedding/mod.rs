//! Adaptive load shedding (`[server.shedding]`, off by default): an in-flight
//! limit the server learns from its own throughput and latency, so it survives
//! an overload no rate limit was configured for.
//!
//! # The rule
//!
//! Completed calls are counted, with their latency, in a sliding window of
//! `buckets` buckets spanning `window`. Whenever a bucket ends the limit
//! becomes
//!
//! ```text
//! limit = max(min_in_flight, ⌈(1 + headroom_percent / 100)
//!                             × most calls completed in one bucket / bucket length
//!                             × least mean latency of a bucket⌉)
//! ```
//!
//! the bandwidth-delay product of BBR, as go-zero and Kratos shed load: the
//! calls the server completes per second times the time a call takes when
//! it does not queue is how many calls it can work on at once; more only
//! wait. A call arriving while that many are in flight is answered
//! `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms` set to the least
//! latency (at least 1 ms) and never reaches the service; it is counted in
//! `grpc_cluster_server_shed_total{method}`. The health service is never
//! shed, and shedding never changes the health status: an overloaded server
//! still serves.
//!
//! With the limit in force, a server that queues admitted calls settles at
//! `1 + headroom_percent / 100` times its capacity in flight, so admitted
//! calls take about that multiple of their unloaded latency at most, however
//! many more arrive.
//!
//! The least latency is kept for `min_rtt_window` (renewed whenever a window
//! matches or beats it); only then does a higher one replace it, so an
//! overload does not raise its own baseline within that time. An overload
//! lasting longer is taken as the server's new normal, one `min_rtt_window` at
//! a time. A window without completed calls keeps the limit (idleness says
//! nothing about capacity). Streaming calls count from their arrival until
//! their response headers.
//!
//! # Why not a gradient limit
//!
//! A gradient limit (Netflix concurrency-limits) moves the limit by the ratio
//! of a long-term to the current latency on every sample, plus a queue
//! allowance: it needs smoothing factors tuned per service and oscillates
//! around its target. The throughput × latency product is computed from
//! counts over a window, needs no per-service tuning besides the floor and
//! the headroom, and its bound on admitted latency follows from the
//! headroom alone.
//!
//! # Where it sits
//!
//! After the rate limits, before the drain's in-flight tracking: bearer auth
//! → metrics → rate limits → shedding → tracking → the user's layers → the
//! service. Calls a token bucket refuses never count.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use server_kit::{ServerConfig, ShedConfig};
//!
//! let config = ServerConfig::default().with_shedding(
//!     ShedConfig::default()
//!         .with_enabled(true)
//!         .with_window(Duration::from_secs(2))
//!         .with_min_in_flight(16),
//! );
//! config.validate()?;
//! # Ok::<(), server_kit::Error>(())
//! ```

mod estimate;
mod layer;

pub use layer::{Measured, Shedding, SheddingLayer};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use estimate::Estimate;

use crate::{Error, ShedConfig};

/// The shared state of a server's shedding: its calls in flight and the
/// estimate of its limit. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shedder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    in_flight: AtomicUsize,
    /// The estimate's limit, read without the lock.
    limit: AtomicUsize,
    /// The pushback in nanoseconds: the least latency.
    pushback_ns: AtomicUsize,
    estimate: Mutex<Estimate>,
}

impl Shedder {
    /// A shedder with `config`'s settings (doing nothing when it is off).
    pub fn new(config: &ShedConfig) -> Self {
        let estimate = Estimate::new(config, Instant::now());
        Self {
            inner: Arc::new(Inner {
                enabled: config.enabled(),
                in_flight: AtomicUsize::new(0),
                limit: AtomicUsize::new(estimate.limit()),
                pushback_ns: AtomicUsize::new(1_000_000),
                estimate: Mutex::new(estimate),
            }),
        }
    }

    /// Whether it sheds at all.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The calls it admitted that are still in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// The in-flight limit in force.
    pub fn limit(&self) -> usize {
        self.inner.limit.load(Ordering::Relaxed)
    }

    /// The layer applying it to a service.
    pub fn layer(&self) -> SheddingLayer {
        SheddingLayer::new(self.clone())
    }

    /// Admits a call (it then counts as in flight until the returned guard
    /// is dropped), or refuses it with [`Error::Overloaded`].
    pub(crate) fn admit(&self) -> Result<Admitted, Error> {
        let inner = &self.inner;
        let limit = inner.limit.load(Ordering::Relaxed);
        let in_flight = inner.in_flight.fetch_add(1, Ordering::AcqRel);
        if in_flight >= limit {
            inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            let pushback = inner.pushback_ns.load(Ordering::Relaxed);
            let pushback = Duration::from_nanos(u64::try_from(pushback).unwrap_or(u64::MAX));
            return Err(Error::overloaded(in_flight, limit, pushback));
        }
        Ok(Admitted {
            shedder: self.clone(),
            start: Instant::now(),
        })
    }

    fn complete(&self, latency: Duration) {
        let now = Instant::now();
        let mut estimate = self
            .inner
            .estimate
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let limit = estimate.record(now, latency);
        let pushback = estimate.min_rtt();
        drop(estimate);
        self.inner.limit.store(limit, Ordering::Relaxed);
        if let Some(rtt) = pushback {
            let ns = usize::try_from(rtt.as_nanos()).unwrap_or(usize::MAX);
            self.inner.pushback_ns.store(ns, Ordering::Relaxed);
        }
    }
}

/// An admitted call: in flight until dropped; [`finish`](Self::finish)ed, its
/// latency feeds the estimate.
#[derive(Debug)]
pub(crate) struct Admitted {
    shedder: Shedder,
    start: Instant,
}

impl Admitted {
    /// The call completed: its latency counts.
    pub(crate) fn finish(self) {
        self.shedder.complete(self.start.elapsed());
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.shedder.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_limit_are_refused_with_a_pushback_until_one_ends() {
        let shedder = Shedder::new(
            &ShedConfig::default()
                .with_enabled(true)
                .with_min_in_flight(2),
        );
        let first = shedder.admit().expect("under the limit");
        let _second = shedder.admit().expect("at the limit");
        assert_eq!(shedder.in_flight(), 2);
        match shedder.admit() {
            Err(Error::Overloaded {
                in_flight,
                limit,
                retry_after,
            }) => {
                assert_eq!((in_flight, limit), (2, 2));
                assert!(retry_after > Duration::ZERO);
            }
            other => panic!("expected Overloaded, got {other:?}"),
        }
        assert_eq!(shedder.in_flight(), 2, "a refused call is not in flight");
        first.finish();
        assert_eq!(shedder.in_flight(), 1);
        let _third = shedder.admit().expect("a slot freed");
    }

    #[test]
    fn the_default_config_sheds_nothing() {
        assert!(!Shedder::new(&ShedConfig::default()).enabled());
    }
}
