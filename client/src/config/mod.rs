//! The client's configuration: the `[client]` table ([`ClientConfig`]), its
//! per-service and per-method tables, and what they resolve to.
//!
//! The modules: `service` (`[client.services.NAME]`, `methods`), `ejection`,
//! `throttling`,
//! `picker` (resolved picker settings), `policy` (resolved call settings),
//! `parse` (value parsing); `mod.rs` holds `[client]` and the resolution.

mod ejection;
mod parse;
mod picker;
mod policy;
mod service;
#[cfg(test)]
mod tests;
mod throttling;

pub use ejection::EjectionConfig;
pub(crate) use parse::code_name;
use parse::{check_share, opt_duration, parse_at, parse_codes, parse_strategy};
pub use picker::PickerConfig;
pub(crate) use policy::{method_name, ServicePolicy};
pub use policy::{CallPolicy, Hedging};
pub use service::{MethodConfig, ServiceConfig};
pub(crate) use throttling::Throttling;
pub use throttling::ThrottlingConfig;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use registry_actor::config::{duration, InvalidValue};
use registry_actor::{Secret, TlsConfig};
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::policy::{CodeSet, Strategy};
use crate::{Balancer, Error, Fallback, Locality, Selector, ZonePreference};

const DEFAULT_FAILURES: u32 = 5;
const DEFAULT_BASE_TIME: Duration = Duration::from_secs(10);
const DEFAULT_MAX_TIME: Duration = Duration::from_secs(300);
const DEFAULT_MAX_SHARE: f64 = 0.5;
const DEFAULT_SUCCESS_RATE_STDEV_FACTOR: f64 = 1.9;
const DEFAULT_SUCCESS_RATE_MIN_REQUESTS: u64 = 100;
const DEFAULT_SUCCESS_RATE_MIN_NODES: usize = 5;
const DEFAULT_PANIC_THRESHOLD: f64 = 0.5;
const DEFAULT_PANIC_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_HEDGING_DELAY: Duration = Duration::from_millis(50);
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const DEFAULT_RETRY_BUFFER: usize = 256 * 1024;

/// The picker part of `[client]`: defaults for every service, and one
/// [`ServiceConfig`] per `[client.services.NAME]` table.
///
/// ```toml
/// [client]
/// balancer = "round_robin"      # pick_first | round_robin | random | weighted_random
///                               # | weighted_round_robin | least_request | consistent_hash
/// fallback = "any"              # strict | any: when no node matches a selector
/// panic_threshold = 0.5         # hold a registry change removing more than this share
/// panic_grace = "30s"           # ... until the nodes fail or this passes
/// discovery_timeout = "5s"      # how long a pick waits for nodes
/// health_check = false          # watch grpc.health.v1 of each connected node
/// health_service = ""           # ... for this service ("": the whole server)
/// locality = "strict"           # strict | prefer | off: what `zone` does
/// zone = ""                     # the client's zone ("": none)
/// locality_min_healthy = 1      # prefer: pickable nodes the zone needs to keep calls
/// zone_priority = []            # prefer: zones to spill over to first; then by name
/// attempt_timeout = "200ms"     # bound of each attempt (default: none)
/// hedging_delay = "50ms"        # hedging: a new attempt this often ...
/// max_attempts = 3              # ... up to this many in all
/// non_fatal_codes = ["UNAVAILABLE"] # answers that let the other attempts go on
///
/// [client.ejection]
/// failures = 5                  # consecutive failures that eject a node
/// codes = ["UNAVAILABLE"]       # answers counted as failures, beside broken
///                               # connections and attempt timeouts
/// base_time = "10s"             # first ejection; doubles per ejection ...
/// max_time = "5m"               # ... up to this
/// max_share = 0.5               # never eject more than this share of the nodes
/// success_rate_interval = "10s" # success-rate ejection (default: off): every interval,
/// success_rate_stdev_factor = 1.9 # eject nodes this many stdevs below the mean rate,
/// success_rate_min_requests = 100 # counting nodes with this many attempts,
/// success_rate_min_nodes = 5    # when at least this many nodes have them
///
/// [client.throttling]           # adaptive throttling (Google SRE), off by default
/// enabled = false
/// k = 2.0                       # refuse locally with p = max(0, (requests - k × accepts) / (requests + 1))
/// window = "2m"                 # ... counted over this window,
/// buckets = 24                  # ... kept in this many buckets,
/// min_requests = 10             # ... once it holds this many requests
///
/// [client.services.echo]        # per service; every key above may be overridden
/// balancer = "consistent_hash"
/// version = ">=1.2, <2"         # exact ("v1") or a semver range
/// group = "blue"
/// zone = "eu-1"
/// labels = { canary = "false" }
/// fallback = "strict"
/// ejection = { failures = 3 }   # the other ejection keys come from [client.ejection]
/// throttling = { enabled = true } # the other keys come from [client.throttling]
/// ```
///
/// The types are plain serde data with private fields; [`ClientConfig::validate`]
/// checks every value and names the full key path in its error, and
/// [`ClientConfig::picker_config`] resolves one service's [`PickerConfig`].
///
/// # Examples
///
/// ```
/// use cluster_client::{Balancer, ClientConfig};
///
/// let config: ClientConfig = serde_json::from_str(
///     r#"{"services": {"echo": {"balancer": "least_request", "version": ">=1.2, <2"}}}"#,
/// )?;
/// config.validate()?;
/// let echo = config.picker_config("echo")?;
/// assert_eq!(echo.balancer(), Balancer::LeastRequest);
/// assert_eq!(echo.selector().version(), Some(">=1.2, <2"));
/// assert_eq!(config.picker_config("other")?.balancer(), Balancer::RoundRobin);
///
/// let bad: ClientConfig =
///     serde_json::from_str(r#"{"services": {"echo": {"balancer": "foo"}}}"#)?;
/// let err = bad.validate().unwrap_err().to_string();
/// assert!(err.contains(r#"client.services.echo.balancer: unknown balancer "foo""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    balancer: String,
    fallback: String,
    ejection: EjectionConfig,
    throttling: ThrottlingConfig,
    panic_threshold: f64,
    #[serde(with = "duration")]
    panic_grace: Duration,
    #[serde(with = "duration")]
    discovery_timeout: Duration,
    health_check: bool,
    health_service: String,
    locality: String,
    zone: String,
    locality_min_healthy: usize,
    zone_priority: Vec<String>,
    strategy: String,
    retries: u32,
    #[serde(with = "duration")]
    timeout: Duration,
    #[serde(with = "opt_duration")]
    attempt_timeout: Option<Duration>,
    retry_codes: Vec<String>,
    #[serde(with = "duration")]
    hedging_delay: Duration,
    max_attempts: u32,
    non_fatal_codes: Vec<String>,
    #[serde(with = "duration")]
    retry_backoff: Duration,
    #[serde(with = "duration")]
    retry_backoff_max: Duration,
    budget_ratio: f64,
    budget_min_per_sec: u32,
    #[serde(with = "duration")]
    connect_timeout: Duration,
    short_connection: bool,
    caller: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<Secret>,
    allow_plaintext_token: bool,
    allowed_networks: Vec<String>,
    tls: TlsConfig,
    request_id: bool,
    propagate: Vec<String>,
    retry_buffer: usize,
    io_threads: usize,
    services: BTreeMap<String, ServiceConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            balancer: Balancer::default().name().to_owned(),
            fallback: Fallback::default().name().to_owned(),
            ejection: EjectionConfig::default(),
            throttling: ThrottlingConfig::default(),
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            panic_grace: DEFAULT_PANIC_GRACE,
            discovery_timeout: DEFAULT_DISCOVERY_TIMEOUT,
            health_check: false,
            health_service: String::new(),
            locality: Locality::default().name().to_owned(),
            zone: String::new(),
            locality_min_healthy: 1,
            zone_priority: Vec::new(),
            strategy: "failover".to_owned(),
            retries: 2,
            timeout: Duration::from_secs(5),
            attempt_timeout: None,
            retry_codes: vec!["UNAVAILABLE".to_owned()],
            hedging_delay: DEFAULT_HEDGING_DELAY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            non_fatal_codes: vec!["UNAVAILABLE".to_owned()],
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(1),
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
            connect_timeout: Duration::from_secs(1),
            short_connection: false,
            caller: String::new(),
            token: None,
            allow_plaintext_token: false,
            allowed_networks: Vec::new(),
            tls: TlsConfig::default(),
            request_id: false,
            propagate: Vec::new(),
            retry_buffer: DEFAULT_RETRY_BUFFER,
            io_threads: 0,
            services: BTreeMap::new(),
        }
    }
}

impl ClientConfig {
    /// Default balancer of every service (default `round_robin`).
    pub fn with_balancer(mut self, balancer: Balancer) -> Self {
        self.balancer = balancer.name().to_owned();
        self
    }

    /// Default fallback of every service (default `any`).
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback.name().to_owned();
        self
    }

    /// Default adaptive throttling settings of every service (default: off;
    /// see [`ThrottlingConfig`]).
    pub fn with_throttling(mut self, throttling: ThrottlingConfig) -> Self {
        self.throttling = throttling;
        self
    }

    /// The adaptive throttling settings of `service`, `None` when off.
    pub(crate) fn throttling(&self, service: &str) -> Option<Throttling> {
        self.services
            .get(service)
            .and_then(|s| s.throttling.as_ref())
            .map_or_else(
                || self.throttling.clone(),
                |t| t.merged_over(&self.throttling),
            )
            .resolved()
    }

    /// Default ejection settings of every service (defaults: see
    /// [`EjectionConfig`]).
    pub fn with_ejection(mut self, ejection: EjectionConfig) -> Self {
        self.ejection = ejection;
        self
    }

    /// Default panic threshold (default 0.5): a registry change removing more than
    /// this share of a service's nodes at once is held.
    pub fn with_panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = share;
        self
    }

    /// Default panic grace (default 30 s): how long held nodes stay at most.
    pub fn with_panic_grace(mut self, grace: Duration) -> Self {
        self.panic_grace = grace;
        self
    }

    /// Default discovery timeout (default 5 s): how long a pick waits for a
    /// service's first node set, and for a node while the set is empty (within
    /// the call's deadline).
    pub fn with_discovery_timeout(mut self, timeout: Duration) -> Self {
        self.discovery_timeout = timeout;
        self
    }

    /// Default `health_check` of every service (default off): watch the
    /// `grpc.health.v1` status of every node connected to, on the node's own
    /// channel. A node whose server says it does not serve (a server kit says
    /// so first thing when it shuts down), or whose watch's connection broke
    /// (a GOAWAY and the server's exit), is not picked until the server says
    /// it serves again, before etcd says anything. Off by default: it costs
    /// every server one open stream per client, and a server without the
    /// health service is merely taken to serve.
    pub fn with_health_check(mut self, watch: bool) -> Self {
        self.health_check = watch;
        self
    }

    /// Default service name the health watch asks about (default `""`: the
    /// whole server, which a server kit reports `NOT_SERVING` when it shuts
    /// down, like each of its services).
    pub fn with_health_service(mut self, service: impl Into<String>) -> Self {
        self.health_service = service.into();
        self
    }

    /// Default locality of every service (default `strict`): what the
    /// client's zone ([`with_zone`](Self::with_zone)) does to the nodes picked.
    /// `strict`: only nodes of that zone; `prefer`: nodes of that zone while
    /// at least `locality_min_healthy` of them are pickable, then the other
    /// zones in priority order (see [`ZonePreference`]); `off`: any zone.
    pub fn with_locality(mut self, locality: Locality) -> Self {
        self.locality = locality.name().to_owned();
        self
    }

    /// The client's zone (default `""`: none), compared with the nodes'
    /// `zone` as `locality` says; a service's `zone` overrides it.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = zone.into();
        self
    }

    /// Under `prefer`, the pickable nodes the client's zone must have before
    /// calls stay in it (default 1, at least 1).
    pub fn with_locality_min_healthy(mut self, nodes: usize) -> Self {
        self.locality_min_healthy = nodes;
        self
    }

    /// Under `prefer`, the zones spilled over to first, in order (default
    /// none); zones not listed follow by name.
    pub fn with_zone_priority<I, S>(mut self, zones: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.zone_priority = zones.into_iter().map(Into::into).collect();
        self
    }

    /// Default strategy (default `failover`): `failfast`, `failover`,
    /// `failretry`, `forking`, `forking(K)` or `hedging`.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy.name();
        self
    }

    /// Default extra attempts of failover and failretry (default 2).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Default deadline of a call (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Default bound of each attempt of a call (default none: an attempt may
    /// take what is left of the call's deadline). An attempt that outlives it
    /// is cancelled and ends as `DEADLINE_EXCEEDED`, which failover and
    /// failretry retry and ejection counts as a failure of the node; its
    /// `grpc-timeout` is the smaller of it and the call's remaining deadline.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Codes that failover and failretry retry (default `["UNAVAILABLE"]`;
    /// `RESOURCE_EXHAUSTED` is always retried elsewhere unless the server's
    /// pushback forbids it).
    pub fn with_retry_codes<I: IntoIterator<Item = Code>>(mut self, codes: I) -> Self {
        self.retry_codes = codes.into_iter().map(code_name).collect();
        self
    }

    /// Hedging's settings (gRFC A6): a new attempt on another node every
    /// `delay` (default 50 ms) until one answers, at most `max_attempts` in
    /// all (default 3, at least 1); an answer with one of `non_fatal` (default
    /// `["UNAVAILABLE"]`), or an attempt timeout, lets the others go on and
    /// starts the next attempt at once; any other answer ends the call.
    pub fn with_hedging<I: IntoIterator<Item = Code>>(
        mut self,
        delay: Duration,
        max_attempts: u32,
        non_fatal: I,
    ) -> Self {
        self.hedging_delay = delay;
        self.max_attempts = max_attempts;
        self.non_fatal_codes = non_fatal.into_iter().map(code_name).collect();
        self
    }

    /// Failretry's backoff between attempts on the same node: first `min`
    /// (default 50 ms), doubling up to `max` (default 1 s).
    pub fn with_retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.retry_backoff = min;
        self.retry_backoff_max = max;
        self
    }

    /// The retry budget of each service: extra attempts at most `ratio` of the
    /// calls (default 0.2) plus `min_per_sec` per second (default 10).
    pub fn with_budget(mut self, ratio: f64, min_per_sec: u32) -> Self {
        self.budget_ratio = ratio;
        self.budget_min_per_sec = min_per_sec;
        self
    }

    /// Timeout of connecting to a node (default 1 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connect per call instead of one long-lived channel per node (default off).
    pub fn with_short_connection(mut self, short: bool) -> Self {
        self.short_connection = short;
        self
    }

    /// The caller name sent as `x-caller` with every call (default: none), the
    /// key servers' per-caller limits use.
    pub fn with_caller(mut self, caller: impl Into<String>) -> Self {
        self.caller = caller.into();
        self
    }

    /// A bearer token sent as `authorization: Bearer TOKEN` (default: none).
    /// It is sent in plaintext only to loopback addresses unless
    /// [`with_allow_plaintext_token`](Self::with_allow_plaintext_token) says so.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret::new(token));
        self
    }

    /// Lets the bearer token travel without TLS to non-loopback addresses
    /// (`allow_plaintext_token`, default off: such a call fails before anything
    /// is sent).
    pub fn with_allow_plaintext_token(mut self, allow: bool) -> Self {
        self.allow_plaintext_token = allow;
        self
    }

    /// The networks (CIDRs such as `10.0.0.0/8`, or single IPs) whose nodes
    /// the client dials (`allowed_networks`, default empty: every node). A
    /// node registered at an address outside them — or at a host name — is
    /// left out of its service's node set, counted and logged, and never
    /// dialled.
    pub fn with_allowed_networks<I, S>(mut self, networks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_networks = networks.into_iter().map(Into::into).collect();
        self
    }

    /// The networks whose nodes the client dials, as configured.
    pub fn allowed_networks(&self) -> &[String] {
        &self.allowed_networks
    }

    /// TLS to the servers (`[client.tls]`, default off): the CA to trust, a
    /// client certificate for mutual TLS, the server name to verify.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// The TLS settings.
    pub fn tls(&self) -> &TlsConfig {
        &self.tls
    }

    /// Send an `x-request-id` (one per call, the same on all its attempts) with
    /// every call (default off).
    pub fn with_request_id(mut self, send: bool) -> Self {
        self.request_id = send;
        self
    }

    /// The inbound metadata keys that [`CallOptions::inherit`](crate::CallOptions::inherit)
    /// carries into an outbound call, beside the deadline, `x-request-id`,
    /// `traceparent` and `tracestate` (default none).
    pub fn with_propagate<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.propagate = keys.into_iter().map(Into::into).collect();
        self
    }

    /// The most bytes of a channel request's body kept for sending it again
    /// (default 256 KiB): a request whose body grows past it is not retried
    /// (nor hedged) once its first attempt has sent it.
    pub fn with_retry_buffer(mut self, bytes: usize) -> Self {
        self.retry_buffer = bytes;
        self
    }

    /// The replay buffer of a channel request, in bytes.
    pub fn retry_buffer(&self) -> usize {
        self.retry_buffer
    }

    /// The metadata keys `inherit` carries, checked by
    /// [`validate`](Self::validate).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `client.propagate` and the bad key.
    pub fn propagate(
        &self,
    ) -> Result<Vec<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>, Error> {
        self.propagate
            .iter()
            .map(|key| {
                let bad = |why: &str| {
                    Error::Config(InvalidValue::new(
                        "client.propagate",
                        format!("`{key}` {why}"),
                    ))
                };
                if key.starts_with("grpc-") || key.ends_with("-bin") {
                    return Err(bad("is reserved or binary; list plain metadata keys"));
                }
                if key.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(bad("is not lowercase"));
                }
                key.parse().map_err(|_| bad("is not a valid metadata key"))
            })
            .collect()
    }

    /// Runs every node's channel (its connection and HTTP/2 I/O tasks) on a
    /// dedicated runtime of `threads` threads. 0 (the default): each channel
    /// is made on the runtime of the calls that use it, and only calls made
    /// outside any tokio runtime use a runtime of the client's, one thread per
    /// core.
    pub fn with_io_threads(mut self, threads: usize) -> Self {
        self.io_threads = threads;
        self
    }

    /// Whether calls carry an `x-request-id`.
    pub fn request_id(&self) -> bool {
        self.request_id
    }

    /// Whether every channel runs on a dedicated runtime (`io_threads` > 0).
    pub fn dedicated_io(&self) -> bool {
        self.io_threads > 0
    }

    /// The threads of the client's I/O runtime: `io_threads`, or the cores when 0.
    pub fn io_threads(&self) -> usize {
        if self.io_threads > 0 {
            self.io_threads
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }

    /// The caller name, `""` when none.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// The bearer token.
    pub fn token(&self) -> Option<&str> {
        self.token.as_ref().map(Secret::expose)
    }

    /// The retry budget of `service`: ratio of calls, and tokens per second.
    pub fn budget(&self, service: &str) -> (f64, u32) {
        let svc = self.services.get(service);
        (
            svc.and_then(|s| s.budget_ratio)
                .unwrap_or(self.budget_ratio),
            svc.and_then(|s| s.budget_min_per_sec)
                .unwrap_or(self.budget_min_per_sec),
        )
    }

    /// TLS to the nodes from the `[client.tls]` files; `None` when off.
    fn client_tls(&self) -> Result<Option<crate::ClientTls>, Error> {
        const SECTION: &str = "client.tls";
        let files = self.tls.read(SECTION).map_err(Error::Config)?;
        files
            .map(|files| crate::ClientTls::from_files(&files, SECTION))
            .transpose()
            .map_err(Error::Config)
    }

    /// How the client connects to nodes. Reads the `[client.tls]` files.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key and path of a TLS file that cannot be
    /// read or holds no usable certificate or key, or an entry of
    /// `client.allowed_networks` that is not a CIDR.
    pub fn connection_settings(&self) -> Result<crate::ConnectionSettings, Error> {
        Ok(crate::ConnectionSettings::default()
            .with_connect_timeout(self.connect_timeout)
            .with_short_connection(self.short_connection)
            .with_tls(self.client_tls()?)
            .with_allow_plaintext_token(self.allow_plaintext_token)
            .with_allowed_networks(
                crate::AllowedNetworks::parse(&self.allowed_networks).map_err(Error::Config)?,
            ))
    }

    /// The resolved call settings of `method` of `service`: the method's table
    /// over the service's over the defaults. `method` is a full path
    /// (`/echo.v1.Echo/Say`) or a bare name (`Say`); a method table may be
    /// keyed either way, and the full path's table wins over the name's.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key path of the first invalid value.
    pub fn call_policy(&self, service: &str, method: &str) -> Result<CallPolicy, Error> {
        let policy = self.service_call_policy(service)?;
        let Some(svc) = self.services.get(service) else {
            return Ok(policy);
        };
        let name = method_name(method);
        let table = svc
            .methods
            .get_key_value(method)
            .or_else(|| svc.methods.get_key_value(name));
        match table {
            Some((key, m)) => {
                let mut policy = policy;
                m.apply(
                    &format!("client.services.{service}.methods.{key}"),
                    &mut policy,
                )?;
                Ok(policy)
            }
            None => Ok(policy),
        }
    }

    /// The call settings of `service` as a whole (no method table).
    fn service_call_policy(&self, service: &str) -> Result<CallPolicy, Error> {
        let mut policy = CallPolicy {
            strategy: parse_strategy("client.strategy", &self.strategy)?,
            retries: self.retries,
            timeout: self.timeout,
            attempt_timeout: self.attempt_timeout,
            retry_codes: Arc::from([]),
            retry_set: CodeSet::default(),
            hedging: Hedging {
                delay: self.hedging_delay,
                max_attempts: self.max_attempts,
                non_fatal: parse_codes("client.non_fatal_codes", &self.non_fatal_codes)?,
            },
            backoff_min: self.retry_backoff,
            backoff_max: self.retry_backoff_max,
        };
        policy.set_retry_codes(parse_codes("client.retry_codes", &self.retry_codes)?);
        let Some(svc) = self.services.get(service) else {
            return Ok(policy);
        };
        let path = format!("client.services.{service}");
        svc.call().apply(&path, &mut policy)?;
        if let Some(b) = svc.retry_backoff {
            policy.backoff_min = b;
        }
        if let Some(b) = svc.retry_backoff_max {
            policy.backoff_max = b;
        }
        if policy.backoff_min.is_zero() || policy.backoff_max < policy.backoff_min {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.retry_backoff"),
                format!(
                    "{} must be above zero and at most retry_backoff_max ({})",
                    duration::format(policy.backoff_min),
                    duration::format(policy.backoff_max)
                ),
            )));
        }
        Ok(policy)
    }

    /// Everything calls of `service` use, resolved once: its picker settings,
    /// its retry budget, and the call settings of the service and of each
    /// method table.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key path of the first invalid value.
    pub(crate) fn resolve_service(&self, service: &str) -> Result<ServicePolicy, Error> {
        let default_call = Arc::new(self.service_call_policy(service)?);
        let mut methods = foldhash::HashMap::default();
        if let Some(svc) = self.services.get(service) {
            for key in svc.methods.keys() {
                methods.insert(
                    Box::<str>::from(key.as_str()),
                    Arc::new(self.call_policy(service, key)?),
                );
            }
        }
        Ok(ServicePolicy {
            picker: self.picker_config(service)?,
            budget: self.budget(service),
            throttling: self.throttling(service),
            default_call,
            methods,
        })
    }

    /// Sets the table of one service (default: none, every key from the defaults).
    pub fn with_service(mut self, name: impl Into<String>, service: ServiceConfig) -> Self {
        self.services.insert(name.into(), service);
        self
    }

    /// The `[client.services.NAME]` tables.
    pub fn services(&self) -> &BTreeMap<String, ServiceConfig> {
        &self.services
    }

    /// Checks every value; the error names the full key path
    /// (`client.services.echo.balancer: unknown balancer "foo"; expected one of ...`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown balancer or fallback, a version that looks
    /// like a range but is not one, a label that is not `k=v`, an ejection with 0
    /// failures, a zero base time, a max time below the base time, or a share
    /// outside 0..=1, a `[client.tls]` file that cannot be read, or an entry of
    /// `client.allowed_networks` that is not a CIDR.
    pub fn validate(&self) -> Result<(), Error> {
        self.validated().map(drop)
    }

    /// [`validate`](Self::validate), answering the connection settings it
    /// built (the `[client.tls]` files read and parsed once).
    pub(crate) fn validated(&self) -> Result<crate::ConnectionSettings, Error> {
        self.defaults("client")?;
        check_share("client.budget_ratio", self.budget_ratio)?;
        self.throttling.validate("client.throttling")?;
        for (key, d) in [
            ("client.timeout", self.timeout),
            ("client.retry_backoff", self.retry_backoff),
            ("client.connect_timeout", self.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::Config(InvalidValue::new(key, "must be above zero")));
            }
        }
        if self.max_attempts == 0 {
            return Err(Error::Config(InvalidValue::new(
                "client.max_attempts",
                "must be at least 1",
            )));
        }
        if self.attempt_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::Config(InvalidValue::new(
                "client.attempt_timeout",
                "must be above zero (leave it out for no bound)",
            )));
        }
        if self.retry_backoff_max < self.retry_backoff {
            return Err(Error::Config(InvalidValue::new(
                "client.retry_backoff_max",
                format!(
                    "{:?} is below retry_backoff ({:?})",
                    self.retry_backoff_max, self.retry_backoff
                ),
            )));
        }
        if let Some(t) = self.token() {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::Config(InvalidValue::new(
                    "client.token",
                    "must be non-empty visible ASCII",
                )));
            }
        }
        if !self.caller.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Config(InvalidValue::new(
                "client.caller",
                "must be visible ASCII",
            )));
        }
        let connection = self.connection_settings()?;
        self.propagate()?;
        self.service_call_policy("")?;
        for (name, svc) in &self.services {
            if name.is_empty() {
                return Err(Error::Config(InvalidValue::new(
                    "client.services",
                    "a service name is empty",
                )));
            }
            if let Some(r) = svc.budget_ratio {
                check_share(&format!("client.services.{name}.budget_ratio"), r)?;
            }
            if let Some(t) = &svc.throttling {
                t.merged_over(&self.throttling)
                    .validate(&format!("client.services.{name}.throttling"))?;
            }
            self.resolve_service(name)?;
        }
        Ok(connection)
    }

    /// The resolved settings of `service`: its table over the defaults. A service
    /// without a table gets the defaults.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key path of the first invalid value.
    pub fn picker_config(&self, service: &str) -> Result<PickerConfig, Error> {
        let mut config = self.defaults("client")?;
        let Some(svc) = self.services.get(service) else {
            return Ok(config);
        };
        let path = format!("client.services.{service}");
        let key = |k: &str| format!("{path}.{k}");
        if let Some(b) = &svc.balancer {
            config.balancer = parse_at(&key("balancer"), b)?;
        }
        if let Some(f) = &svc.fallback {
            config.fallback = parse_at(&key("fallback"), f)?;
        }
        let mut selector = Selector::new();
        if let Some(v) = &svc.version {
            selector = selector
                .with_version(v)
                .map_err(|e| Error::Config(InvalidValue::new(key("version"), e.to_string())))?;
        }
        if let Some(g) = &svc.group {
            selector = selector.with_group(g.clone());
        }
        let (zone, preference) = self.locality(Some(svc), &path)?;
        if let Some(z) = zone {
            selector = selector.with_zone(z);
        }
        config.locality = preference;
        for (k, v) in svc.labels.iter().flatten() {
            if k.is_empty() {
                return Err(Error::Config(InvalidValue::new(
                    key("labels"),
                    "a label name is empty",
                )));
            }
            selector = selector.with_label(k.clone(), v.clone());
        }
        config.selector = selector;
        if let Some(e) = &svc.ejection {
            config.ejection = e.merged_over(&self.ejection);
            config.ejection.validate(&key("ejection"))?;
        }
        if let Some(t) = svc.panic_threshold {
            check_share(&key("panic_threshold"), t)?;
            config.panic_threshold = t;
        }
        if let Some(g) = svc.panic_grace {
            config.panic_grace = g;
        }
        if let Some(t) = svc.discovery_timeout {
            config.discovery_timeout = t;
        }
        let health_check = svc.health_check.unwrap_or(self.health_check);
        let health_service = svc.health_service.as_ref().unwrap_or(&self.health_service);
        config.health_check = health_check.then(|| Arc::from(health_service.as_str()));
        Ok(config)
    }

    fn defaults(&self, path: &str) -> Result<PickerConfig, Error> {
        self.ejection.validate(&format!("{path}.ejection"))?;
        check_share(&format!("{path}.panic_threshold"), self.panic_threshold)?;
        let (zone, locality) = self.locality(None, path)?;
        Ok(PickerConfig {
            balancer: parse_at(&format!("{path}.balancer"), &self.balancer)?,
            selector: zone.map_or_else(Selector::new, |z| Selector::new().with_zone(z)),
            locality,
            fallback: parse_at(&format!("{path}.fallback"), &self.fallback)?,
            ejection: self.ejection.clone(),
            panic_threshold: self.panic_threshold,
            panic_grace: self.panic_grace,
            discovery_timeout: self.discovery_timeout,
            health_check: self
                .health_check
                .then(|| Arc::from(self.health_service.as_str())),
        })
    }

    /// What the zone does for `svc` (`None`: a service without a table, or
    /// the defaults at `path`): the zone of a `strict` selector, or the
    /// preference of `prefer`.
    fn locality(
        &self,
        svc: Option<&ServiceConfig>,
        path: &str,
    ) -> Result<(Option<String>, Option<ZonePreference>), Error> {
        // A key set in the service's table is reported there, else in [client].
        let at = |set: bool, k: &str| {
            if set {
                format!("{path}.{k}")
            } else {
                format!("client.{k}")
            }
        };
        let mode = svc.and_then(|s| s.locality.as_ref());
        let mode_key = at(mode.is_some(), "locality");
        let mode: Locality = parse_at(&mode_key, mode.unwrap_or(&self.locality))?;
        let zone = svc.and_then(|s| s.zone.as_ref());
        let zone_key = at(zone.is_some(), "zone");
        let zone = zone.unwrap_or(&self.zone);
        let min = svc.and_then(|s| s.locality_min_healthy);
        let min_key = at(min.is_some(), "locality_min_healthy");
        let min = min.unwrap_or(self.locality_min_healthy);
        if min == 0 {
            return Err(Error::Config(InvalidValue::new(
                min_key,
                "must be at least 1",
            )));
        }
        let priority = svc
            .and_then(|s| s.zone_priority.as_ref())
            .unwrap_or(&self.zone_priority);
        match mode {
            Locality::Off => Ok((None, None)),
            Locality::Strict if zone.is_empty() => Ok((None, None)),
            Locality::Strict => Ok((Some(zone.clone()), None)),
            Locality::Prefer if zone.is_empty() => Err(Error::Config(InvalidValue::new(
                zone_key,
                format!("is empty, but {mode_key} is \"prefer\": set the client's zone"),
            ))),
            Locality::Prefer => Ok((
                None,
                Some(
                    ZonePreference::new(zone.as_str())
                        .with_min_healthy(min)
                        .with_priority(priority.iter().map(String::as_str)),
                ),
            )),
        }
    }
}
