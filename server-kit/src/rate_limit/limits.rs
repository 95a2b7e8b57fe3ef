//! The limiters and their run-time replacement.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::Quota;
use http::{HeaderName, HeaderValue};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tracing::{debug, warn};

use crate::{AuthenticatedCaller, Error, Limit, MethodLimit, RateLimitConfig};

/// The clocks a [`RateLimits`] can run on: governor's `MonotonicClock` in
/// production, `FakeRelativeClock` in tests. Implemented for every governor clock
/// that is `Clone + Send + Sync + Debug + 'static`.
pub trait LimiterClock: Clock + Clone + Send + Sync + fmt::Debug + 'static {}

impl<T> LimiterClock for T where T: Clock + Clone + Send + Sync + fmt::Debug + 'static {}

type Direct<C> =
    governor::RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Keyed<C> = governor::RateLimiter<
    CallerKey,
    DashMapStateStore<CallerKey>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

/// Caller keys longer than this are stored as a hash.
const MAX_CALLER_KEY_LEN: usize = 128;

/// Calls per thread between two checks of the caller table's size.
const BOUND_CHECK_EVERY: u32 = 256;

/// Who a call counts against in the per-caller limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum CallerKey {
    /// The caller its bearer token names, or the value of the trusted caller
    /// metadata key (cheap to clone: shared bytes).
    Named(HeaderValue),
    /// A hash of a caller value too long to keep.
    Hashed(u64),
    /// A hash of the client certificate a mutual-TLS call presented.
    Certificate(u64),
    /// The peer IP of a call with neither.
    Peer(IpAddr),
    /// Neither (not a TCP connection).
    Unknown,
}

/// One token bucket and the limit it was built from.
struct Bucket<C: LimiterClock> {
    limit: MethodLimit,
    limiter: Direct<C>,
}

impl<C: LimiterClock> Bucket<C> {
    fn new(limit: MethodLimit, clock: &C) -> Option<Arc<Self>> {
        let quota = quota(limit.rps(), limit.effective_burst())?;
        Some(Arc::new(Self {
            limit,
            limiter: governor::RateLimiter::direct_with_clock(quota, clock.clone()),
        }))
    }

    /// This instance's share of `cluster_rps` over `instances`: one call every
    /// `instances / cluster_rps` seconds (in whole nanoseconds, rounded down, so
    /// a second admits exactly the share when it is whole), with a burst of one
    /// second's worth (at least 1).
    fn share(cluster_rps: u32, instances: usize, clock: &C) -> Option<Arc<Self>> {
        let rps = NonZeroU32::new(cluster_rps)?;
        let instances = u32::try_from(instances.max(1)).unwrap_or(u32::MAX);
        let period_ns = 1_000_000_000u64 * u64::from(instances) / u64::from(rps.get());
        let burst = NonZeroU32::new(rps.get() / instances).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_nanos(period_ns.max(1)))?.allow_burst(burst);
        Some(Arc::new(Self {
            limit: MethodLimit::new(rps.get(), 0),
            limiter: governor::RateLimiter::direct_with_clock(quota, clock.clone()),
        }))
    }

    #[inline]
    fn check(&self, which: Limit) -> Result<(), Error> {
        self.limiter.check().map_err(|not_until| {
            Error::rate_limited(which, not_until.wait_time_from(self.limiter.clock().now()))
        })
    }
}

/// The per-caller keyed limiter.
struct Callers<C: LimiterClock> {
    limit: MethodLimit,
    /// The caller metadata key, when trusted.
    header: Option<HeaderName>,
    hasher: RandomState,
    limiter: Keyed<C>,
}

impl<C: LimiterClock> Callers<C> {
    fn new(config: &RateLimitConfig, clock: &C) -> Option<Arc<Self>> {
        let limit = config.caller();
        let quota = quota(limit.rps(), limit.effective_burst())?;
        let header = match config.trust_caller_header() {
            true => Some(HeaderName::from_bytes(config.caller_key().as_bytes()).ok()?),
            false => None,
        };
        Some(Arc::new(Self {
            limit,
            header,
            hasher: RandomState::new(),
            limiter: governor::RateLimiter::dashmap_with_clock(quota, clock.clone()),
        }))
    }

    fn same_as(&self, config: &RateLimitConfig) -> bool {
        self.limit == config.caller()
            && self.header.as_ref().map(HeaderName::as_str)
                == config.trust_caller_header().then_some(config.caller_key())
    }

    /// The caller of a call: the name its bearer token authenticated, else the
    /// trusted caller metadata, else its client certificate, else its peer IP.
    #[inline]
    fn key_of<B>(&self, request: &http::Request<B>) -> CallerKey {
        let extensions = request.extensions();
        if let Some(caller) = extensions.get::<AuthenticatedCaller>() {
            return CallerKey::Named(caller.header_value().clone());
        }
        if let Some(value) = self.header.as_ref().and_then(|h| request.headers().get(h)) {
            if value.len() <= MAX_CALLER_KEY_LEN {
                return CallerKey::Named(value.clone());
            }
            return CallerKey::Hashed(self.hasher.hash_one(value.as_bytes()));
        }
        let tcp = match extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
            Some(tls) => {
                if let Some(cert) = tls.peer_certs().as_deref().and_then(|c| c.first()) {
                    return CallerKey::Certificate(self.hasher.hash_one(cert.as_ref()));
                }
                Some(tls.get_ref())
            }
            None => extensions.get::<TcpConnectInfo>(),
        };
        match tcp.and_then(TcpConnectInfo::remote_addr) {
            Some(peer) => CallerKey::Peer(peer.ip()),
            None => CallerKey::Unknown,
        }
    }

    #[inline]
    fn check(&self, key: &CallerKey) -> Result<(), Error> {
        self.limiter.check_key(key).map_err(|not_until| {
            Error::rate_limited(
                Limit::Caller,
                not_until.wait_time_from(self.limiter.clock().now()),
            )
        })
    }
}

/// `rps` per second with bursts of `burst`; `None` for unlimited.
fn quota(rps: u32, burst: u32) -> Option<Quota> {
    let rps = NonZeroU32::new(rps)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rps);
    Some(Quota::per_second(rps).allow_burst(burst))
}

/// One immutable set of limiters; swapped whole when anything changes.
struct Snapshot<C: LimiterClock> {
    callers: Option<Arc<Callers<C>>>,
    /// By path and by bare method name; a fast hash, as its keys come from
    /// the configuration (a request's path is only looked up).
    methods: foldhash::HashMap<Box<str>, Arc<Bucket<C>>>,
    global: Option<Arc<Bucket<C>>>,
    /// The cluster bucket and what it was built for.
    cluster: Option<(ShareOf, Arc<Bucket<C>>)>,
}

impl<C: LimiterClock> Snapshot<C> {
    /// Builds the limiters of `config` for `instances` live instances, reusing
    /// those of `old` whose limit did not change.
    fn build(config: &RateLimitConfig, instances: usize, clock: &C, old: Option<&Self>) -> Self {
        let reuse = |old: Option<&Arc<Bucket<C>>>, limit: MethodLimit| match old {
            Some(b) if b.limit == limit => Some(b.clone()),
            _ => Bucket::new(limit, clock),
        };
        let callers = match old.and_then(|o| o.callers.as_ref()) {
            Some(c) if c.same_as(config) => Some(c.clone()),
            _ => Callers::new(config, clock),
        };
        let methods = config
            .methods()
            .iter()
            .filter_map(|(path, limit)| {
                let old = old.and_then(|o| o.methods.get(path.as_str()));
                Some((path.as_str().into(), reuse(old, *limit)?))
            })
            .collect();
        let global = reuse(old.and_then(|o| o.global.as_ref()), config.global());
        let built_for = (config.cluster_rps(), instances);
        let cluster = match old.and_then(|o| o.cluster.as_ref()) {
            Some((was, bucket)) if *was == built_for => Some((built_for, bucket.clone())),
            _ => Bucket::share(config.cluster_rps(), instances, clock).map(|b| (built_for, b)),
        };
        Self {
            callers,
            methods,
            global,
            cluster,
        }
    }

    #[inline]
    fn check<B>(&self, request: &http::Request<B>) -> Result<(), Error> {
        if let Some(callers) = &self.callers {
            callers.check(&callers.key_of(request))?;
        }
        if !self.methods.is_empty() {
            let path = request.uri().path();
            let bucket = self.methods.get(path).or_else(|| {
                let name = path.rsplit_once('/').map_or(path, |(_, name)| name);
                self.methods.get(name)
            });
            if let Some(bucket) = bucket {
                bucket.check(Limit::Method)?;
            }
        }
        if let Some(bucket) = &self.global {
            bucket.check(Limit::Global)?;
        }
        if let Some((_, bucket)) = &self.cluster {
            bucket.check(Limit::Cluster)?;
        }
        Ok(())
    }
}

/// (`cluster_rps`, live instances): what a cluster bucket was built for.
type ShareOf = (u32, usize);

/// `cluster_rps / instances` calls per second, `None` when unlimited.
fn cluster_share(cluster_rps: u32, instances: usize) -> Option<f64> {
    if cluster_rps == 0 {
        return None;
    }
    Some(f64::from(cluster_rps) / instances.max(1) as f64)
}

/// What the control path changes; updates are serialized by its mutex.
struct Control {
    config: RateLimitConfig,
    instances: usize,
}

struct Shared<C: LimiterClock> {
    clock: C,
    /// Read by every call without a lock; replaced whole by the control
    /// path, whose changes are serialized by `control`.
    current: ArcSwap<Snapshot<C>>,
    control: Mutex<Control>,
}

/// The rate limits of a server, changeable at run time. Cheap to clone: clones
/// share the same limiters. See the [module docs](super).
pub struct RateLimits<C: LimiterClock = MonotonicClock> {
    shared: Arc<Shared<C>>,
}

impl<C: LimiterClock> Clone for RateLimits<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C: LimiterClock> fmt::Debug for RateLimits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimits")
            .field("status", &self.status())
            .finish()
    }
}

impl RateLimits<MonotonicClock> {
    /// Limits built from `config` on the monotonic clock, for one instance.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `config` is invalid.
    pub fn new(config: &RateLimitConfig) -> Result<Self, Error> {
        Self::with_clock(config, MonotonicClock)
    }
}

impl<C: LimiterClock> RateLimits<C> {
    /// Limits built from `config` on `clock` (e.g. governor's
    /// `FakeRelativeClock` in tests), for one instance.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `config` is invalid.
    pub fn with_clock(config: &RateLimitConfig, clock: C) -> Result<Self, Error> {
        config.validate()?;
        let snapshot = Snapshot::build(config, 1, &clock, None);
        Ok(Self {
            shared: Arc::new(Shared {
                clock,
                current: ArcSwap::from_pointee(snapshot),
                control: Mutex::new(Control {
                    config: config.clone(),
                    instances: 1,
                }),
            }),
        })
    }

    /// The tower layer checking calls against these limits.
    pub fn layer(&self) -> super::RateLimitLayer<C> {
        super::RateLimitLayer::new(self.clone())
    }

    /// Replaces the limits; the next call is checked against the new ones.
    /// Limiters whose values did not change keep their state.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `config` is invalid; the limits in force stay.
    pub fn set_config(&self, config: RateLimitConfig) -> Result<(), Error> {
        config.validate()?;
        let mut control = self.control();
        if control.config == config {
            return Ok(());
        }
        control.config = config;
        self.rebuild(&control);
        debug!(config = ?control.config, "rate limits replaced");
        Ok(())
    }

    /// Sets the number of live instances of the service, which divides
    /// `cluster_rps` (0 counts as 1).
    pub fn set_instances(&self, instances: usize) {
        let instances = instances.max(1);
        let mut control = self.control();
        if control.instances == instances {
            return;
        }
        control.instances = instances;
        self.rebuild(&control);
        debug!(instances, "cluster share recomputed");
    }

    /// What is in force.
    pub fn status(&self) -> RateLimitStatus {
        let control = self.control();
        let tracked_callers = self
            .snapshot()
            .callers
            .as_ref()
            .map_or(0, |c| c.limiter.len());
        RateLimitStatus {
            cluster_share: cluster_share(control.config.cluster_rps(), control.instances),
            config: control.config.clone(),
            instances: control.instances,
            tracked_callers,
        }
    }

    /// Drops the callers whose bucket is full again (they are indistinguishable
    /// from new callers), and starts the caller table afresh if it still holds
    /// more than `max_callers`. Runs every `prune_interval` in a served server.
    pub fn prune(&self) {
        let Some(callers) = self.snapshot().callers.clone() else {
            return;
        };
        let before = callers.limiter.len();
        callers.limiter.retain_recent();
        callers.limiter.shrink_to_fit();
        let after = callers.limiter.len();
        if after < before {
            debug!(before, after, "pruned idle callers");
        }
        let max = self.control().config.max_callers();
        if after > max {
            self.reset_callers(&callers, after, max);
        }
    }

    /// The current prune interval.
    pub(crate) fn prune_interval(&self) -> Duration {
        self.control().config.prune_interval()
    }

    /// Checks one call; `Err` is the refusal to answer.
    #[inline]
    pub(crate) fn check<B>(&self, request: &http::Request<B>) -> Result<(), Error> {
        if bound_check_due() {
            self.enforce_bound();
        }
        self.shared.current.load().check(request)
    }

    /// Keeps the caller table within `max_callers`: prunes idle callers when it
    /// is over, and starts afresh when pruning is not enough.
    fn enforce_bound(&self) {
        let Some(callers) = self.snapshot().callers.clone() else {
            return;
        };
        let max = match self.shared.control.try_lock() {
            Ok(control) => control.config.max_callers(),
            Err(_) => return, // being updated right now; the next check will do
        };
        if callers.limiter.len() <= max {
            return;
        }
        callers.limiter.retain_recent();
        let after = callers.limiter.len();
        if after > max {
            self.reset_callers(&callers, after, max);
        }
    }

    fn reset_callers(&self, callers: &Arc<Callers<C>>, size: usize, max: usize) {
        let control = self.control();
        let current = self.shared.current.load_full();
        if !current
            .callers
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, callers))
        {
            return; // already replaced
        }
        warn!(
            callers = size,
            max_callers = max,
            "more active callers than server.rate_limit.max_callers; the caller table starts afresh"
        );
        let mut next = Snapshot::build(
            &control.config,
            control.instances,
            &self.shared.clock,
            Some(&current),
        );
        next.callers = Callers::new(&control.config, &self.shared.clock);
        self.shared.current.store(Arc::new(next));
    }

    /// Builds and installs the snapshot of `control`; the caller holds the
    /// control lock, so no other change runs meanwhile.
    fn rebuild(&self, control: &Control) {
        let current = self.shared.current.load_full();
        let next = Snapshot::build(
            &control.config,
            control.instances,
            &self.shared.clock,
            Some(&current),
        );
        self.shared.current.store(Arc::new(next));
    }

    fn snapshot(&self) -> Arc<Snapshot<C>> {
        self.shared.current.load_full()
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.shared
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether this thread's call counter says it is time to check the size of the
/// caller table (every [`BOUND_CHECK_EVERY`] calls per thread).
#[inline]
fn bound_check_due() -> bool {
    thread_local! {
        static CALLS: Cell<u32> = const { Cell::new(0) };
    }
    CALLS.with(|calls| {
        let n = calls.get().wrapping_add(1);
        calls.set(n);
        n % BOUND_CHECK_EVERY == 0
    })
}

/// The limits in force, as [`RateLimits::status`] reports them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RateLimitStatus {
    config: RateLimitConfig,
    instances: usize,
    cluster_share: Option<f64>,
    tracked_callers: usize,
}

impl RateLimitStatus {
    /// The configuration in force.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// The live instances dividing `cluster_rps` (at least 1).
    pub fn instances(&self) -> usize {
        self.instances
    }

    /// This instance's share of `cluster_rps` in calls per second, `None` when
    /// there is no cluster limit.
    pub fn cluster_share(&self) -> Option<f64> {
        self.cluster_share
    }

    /// Callers tracked by the per-caller limiter right now.
    pub fn tracked_callers(&self) -> usize {
        self.tracked_callers
    }
}
