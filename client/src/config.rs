//! Settings of the client's pickers (see [`ClientConfig`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use registry_actor::config::{duration, InvalidValue};
use registry_actor::{Secret, TlsConfig};
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::policy::{CodeSet, Strategy};
use crate::{Balancer, Error, Fallback, Selector};

const DEFAULT_FAILURES: u32 = 5;
const DEFAULT_BASE_TIME: Duration = Duration::from_secs(10);
const DEFAULT_MAX_TIME: Duration = Duration::from_secs(300);
const DEFAULT_MAX_SHARE: f64 = 0.5;
const DEFAULT_PANIC_THRESHOLD: f64 = 0.5;
const DEFAULT_PANIC_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_HEDGING_DELAY: Duration = Duration::from_millis(50);
const DEFAULT_MAX_ATTEMPTS: u32 = 3;

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
///
/// [client.services.echo]        # per service; every key above may be overridden
/// balancer = "consistent_hash"
/// version = ">=1.2, <2"         # exact ("v1") or a semver range
/// group = "blue"
/// zone = "eu-1"
/// labels = { canary = "false" }
/// fallback = "strict"
/// ejection = { failures = 3 }   # the other ejection keys come from [client.ejection]
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
    panic_threshold: f64,
    #[serde(with = "duration")]
    panic_grace: Duration,
    #[serde(with = "duration")]
    discovery_timeout: Duration,
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
    tls: TlsConfig,
    request_id: bool,
    io_threads: usize,
    services: BTreeMap<String, ServiceConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            balancer: Balancer::default().name().to_owned(),
            fallback: Fallback::default().name().to_owned(),
            ejection: EjectionConfig::default(),
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            panic_grace: DEFAULT_PANIC_GRACE,
            discovery_timeout: DEFAULT_DISCOVERY_TIMEOUT,
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
            tls: TlsConfig::default(),
            request_id: false,
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

    /// Default strategy (default `failover`): `failfast`, `failover`,
    /// `failretry`, `forking` or `forking(K)`.
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

    /// How the client connects to nodes. Reads the `[client.tls]` files.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key and path of a TLS file that cannot be
    /// read.
    pub fn connection_settings(&self) -> Result<crate::ConnectionSettings, Error> {
        Ok(crate::ConnectionSettings::default()
            .with_connect_timeout(self.connect_timeout)
            .with_short_connection(self.short_connection)
            .with_tls(self.tls.load("client.tls").map_err(Error::Config)?)
            .with_allow_plaintext_token(self.allow_plaintext_token))
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
            retry_codes: parse_codes("client.retry_codes", &self.retry_codes)?,
            hedging: Hedging {
                delay: self.hedging_delay,
                max_attempts: self.max_attempts,
                non_fatal: parse_codes("client.non_fatal_codes", &self.non_fatal_codes)?,
            },
            backoff_min: self.retry_backoff,
            backoff_max: self.retry_backoff_max,
        };
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
    /// outside 0..=1, or a `[client.tls]` file that cannot be read.
    pub fn validate(&self) -> Result<(), Error> {
        self.defaults("client")?;
        check_share("client.budget_ratio", self.budget_ratio)?;
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
        self.tls.load("client.tls").map_err(Error::Config)?;
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
            self.resolve_service(name)?;
        }
        Ok(())
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
        if let Some(z) = &svc.zone {
            selector = selector.with_zone(z.clone());
        }
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
        Ok(config)
    }

    fn defaults(&self, path: &str) -> Result<PickerConfig, Error> {
        self.ejection.validate(&format!("{path}.ejection"))?;
        check_share(&format!("{path}.panic_threshold"), self.panic_threshold)?;
        Ok(PickerConfig {
            balancer: parse_at(&format!("{path}.balancer"), &self.balancer)?,
            selector: Selector::new(),
            fallback: parse_at(&format!("{path}.fallback"), &self.fallback)?,
            ejection: self.ejection.clone(),
            panic_threshold: self.panic_threshold,
            panic_grace: self.panic_grace,
            discovery_timeout: self.discovery_timeout,
        })
    }
}

/// One `[client.services.NAME]` table: every key is optional and falls back to
/// the `[client]` default. See [`ClientConfig`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    balancer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ejection: Option<EjectionConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    panic_threshold: Option<f64>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    panic_grace: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    discovery_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strategy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u32>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    timeout: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    attempt_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_codes: Option<Vec<String>>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    hedging_delay: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    non_fatal_codes: Option<Vec<String>>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    retry_backoff: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    retry_backoff_max: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_min_per_sec: Option<u32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    methods: BTreeMap<String, MethodConfig>,
}

impl ServiceConfig {
    /// Call settings of this whole service (unset keys: `[client]`'s).
    pub fn with_call(mut self, call: MethodConfig) -> Self {
        self.strategy = call.strategy;
        self.retries = call.retries;
        self.timeout = call.timeout;
        self.attempt_timeout = call.attempt_timeout;
        self.retry_codes = call.retry_codes;
        self.hedging_delay = call.hedging_delay;
        self.max_attempts = call.max_attempts;
        self.non_fatal_codes = call.non_fatal_codes;
        self
    }

    /// The service-level call keys, as a [`MethodConfig`].
    fn call(&self) -> MethodConfig {
        MethodConfig {
            strategy: self.strategy.clone(),
            retries: self.retries,
            timeout: self.timeout,
            attempt_timeout: self.attempt_timeout,
            retry_codes: self.retry_codes.clone(),
            hedging_delay: self.hedging_delay,
            max_attempts: self.max_attempts,
            non_fatal_codes: self.non_fatal_codes.clone(),
        }
    }

    /// Call settings of one method, by name (`Say`) or full path
    /// (`/echo.v1.Echo/Say`, which wins over the name); unset keys come from
    /// the service, then `[client]`.
    pub fn with_method(mut self, method: impl Into<String>, call: MethodConfig) -> Self {
        self.methods.insert(method.into(), call);
        self
    }

    /// The balancer of this service (default: `[client]`'s).
    pub fn with_balancer(mut self, balancer: Balancer) -> Self {
        self.balancer = Some(balancer.name().to_owned());
        self
    }

    /// Only nodes of this version, exact or a semver range (default: any).
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Only nodes of this group (default: any).
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Only nodes of this zone (default: any).
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Only nodes with these labels (default: none required), as the table
    /// `labels = { canary = "false" }`.
    pub fn with_labels<I, K, V>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.labels = Some(
            labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// The fallback when nothing matches (default: `[client]`'s).
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = Some(fallback.name().to_owned());
        self
    }

    /// Ejection keys of this service; unset ones come from `[client.ejection]`.
    pub fn with_ejection(mut self, ejection: EjectionConfig) -> Self {
        self.ejection = Some(ejection);
        self
    }

    /// The panic threshold of this service (default: `[client]`'s).
    pub fn with_panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = Some(share);
        self
    }

    /// The panic grace of this service (default: `[client]`'s).
    pub fn with_panic_grace(mut self, grace: Duration) -> Self {
        self.panic_grace = Some(grace);
        self
    }

    /// The retry budget of this service (default: `[client]`'s).
    pub fn with_budget(mut self, ratio: f64, min_per_sec: u32) -> Self {
        self.budget_ratio = Some(ratio);
        self.budget_min_per_sec = Some(min_per_sec);
        self
    }

    /// Failretry's backoff of this service (default: `[client]`'s).
    pub fn with_retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.retry_backoff = Some(min);
        self.retry_backoff_max = Some(max);
        self
    }
}

/// The `ejection` table: when consecutive failures (broken connections, attempt
/// timeouts, answers with one of `codes`) take a node out, for
/// how long, and how many at most. Unset keys take the next level's value, and in
/// the end the defaults below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EjectionConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<u32>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    base_time: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    max_time: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    codes: Option<Vec<String>>,
}

impl EjectionConfig {
    /// Consecutive connection failures that eject a node (default 5, at least 1).
    pub fn with_failures(mut self, failures: u32) -> Self {
        self.failures = Some(failures);
        self
    }

    /// Length of a first ejection (default 10 s); each further ejection doubles it.
    pub fn with_base_time(mut self, time: Duration) -> Self {
        self.base_time = Some(time);
        self
    }

    /// Longest ejection (default 5 min, at least the base time).
    pub fn with_max_time(mut self, time: Duration) -> Self {
        self.max_time = Some(time);
        self
    }

    /// Largest share of a service's nodes ejected at once (default 0.5).
    pub fn with_max_share(mut self, share: f64) -> Self {
        self.max_share = Some(share);
        self
    }

    /// Status codes a node's answers count as failures, beside broken
    /// connections and attempt timeouts (default `["UNAVAILABLE"]`). Any
    /// other answer, an error or not, counts as a success.
    pub fn with_codes<I: IntoIterator<Item = Code>>(mut self, codes: I) -> Self {
        self.codes = Some(codes.into_iter().map(code_name).collect());
        self
    }

    /// The status codes counted as failures (names that are not codes, which
    /// validation refuses, are left out).
    pub fn codes(&self) -> Arc<[Code]> {
        match &self.codes {
            None => Arc::from([Code::Unavailable]),
            Some(names) => names
                .iter()
                .filter_map(|n| parse_codes("", std::slice::from_ref(n)).ok())
                .flat_map(|c| c.to_vec())
                .collect(),
        }
    }

    /// Consecutive failures that eject a node.
    pub fn failures(&self) -> u32 {
        self.failures.unwrap_or(DEFAULT_FAILURES)
    }

    /// Length of a first ejection.
    pub fn base_time(&self) -> Duration {
        self.base_time.unwrap_or(DEFAULT_BASE_TIME)
    }

    /// Longest ejection.
    pub fn max_time(&self) -> Duration {
        self.max_time.unwrap_or(DEFAULT_MAX_TIME)
    }

    /// Largest share of the nodes ejected at once.
    pub fn max_share(&self) -> f64 {
        self.max_share.unwrap_or(DEFAULT_MAX_SHARE)
    }

    /// These keys over `base`: the ones set here win.
    pub fn merged_over(&self, base: &EjectionConfig) -> EjectionConfig {
        EjectionConfig {
            failures: self.failures.or(base.failures),
            base_time: self.base_time.or(base.base_time),
            max_time: self.max_time.or(base.max_time),
            max_share: self.max_share.or(base.max_share),
            codes: self.codes.clone().or_else(|| base.codes.clone()),
        }
    }

    fn validate(&self, path: &str) -> Result<(), Error> {
        if self.failures() == 0 {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.failures"),
                "must be at least 1",
            )));
        }
        if self.base_time().is_zero() {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.base_time"),
                "must be above zero",
            )));
        }
        if self.max_time() < self.base_time() {
            return Err(Error::Config(InvalidValue::new(
                format!("{path}.max_time"),
                format!(
                    "{} is below base_time {}",
                    duration::format(self.max_time()),
                    duration::format(self.base_time())
                ),
            )));
        }
        if let Some(codes) = &self.codes {
            parse_codes(&format!("{path}.codes"), codes)?;
        }
        check_share(&format!("{path}.max_share"), self.max_share())
    }
}

/// The resolved picker settings of one service, as [`ClientConfig::picker_config`]
/// gives them or built directly.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cluster_client::{Balancer, EjectionConfig, Fallback, PickerConfig, Selector};
///
/// let config = PickerConfig::default()
///     .with_balancer(Balancer::WeightedRoundRobin)
///     .with_selector(Selector::new().with_group("blue"))
///     .with_fallback(Fallback::Strict)
///     .with_ejection(EjectionConfig::default().with_failures(3))
///     .with_panic_grace(Duration::from_secs(10));
/// assert_eq!(config.ejection().failures(), 3);
/// assert_eq!(config.panic_threshold(), 0.5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PickerConfig {
    balancer: Balancer,
    selector: Selector,
    fallback: Fallback,
    ejection: EjectionConfig,
    panic_threshold: f64,
    panic_grace: Duration,
    discovery_timeout: Duration,
}

impl Default for PickerConfig {
    fn default() -> Self {
        Self {
            balancer: Balancer::default(),
            selector: Selector::new(),
            fallback: Fallback::default(),
            ejection: EjectionConfig::default(),
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            panic_grace: DEFAULT_PANIC_GRACE,
            discovery_timeout: DEFAULT_DISCOVERY_TIMEOUT,
        }
    }
}

impl PickerConfig {
    /// The balancer (default `round_robin`).
    pub fn with_balancer(mut self, balancer: Balancer) -> Self {
        self.balancer = balancer;
        self
    }

    /// The service's selector (default: every node); a call's selector is merged
    /// over it.
    pub fn with_selector(mut self, selector: Selector) -> Self {
        self.selector = selector;
        self
    }

    /// The fallback when nothing matches (default `any`).
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// Ejection settings (defaults: see [`EjectionConfig`]).
    pub fn with_ejection(mut self, ejection: EjectionConfig) -> Self {
        self.ejection = ejection;
        self
    }

    /// Panic threshold (default 0.5).
    pub fn with_panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = share;
        self
    }

    /// Panic grace (default 30 s).
    pub fn with_panic_grace(mut self, grace: Duration) -> Self {
        self.panic_grace = grace;
        self
    }

    /// How long a pick waits for the first node set (default 5 s).
    pub fn with_discovery_timeout(mut self, timeout: Duration) -> Self {
        self.discovery_timeout = timeout;
        self
    }

    /// The balancer.
    pub fn balancer(&self) -> Balancer {
        self.balancer
    }

    /// The service's selector.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// The fallback.
    pub fn fallback(&self) -> Fallback {
        self.fallback
    }

    /// The ejection settings.
    pub fn ejection(&self) -> &EjectionConfig {
        &self.ejection
    }

    /// The panic threshold.
    pub fn panic_threshold(&self) -> f64 {
        self.panic_threshold
    }

    /// The panic grace.
    pub fn panic_grace(&self) -> Duration {
        self.panic_grace
    }

    /// The discovery timeout.
    pub fn discovery_timeout(&self) -> Duration {
        self.discovery_timeout
    }
}

/// Call settings of a service (`[client.services.NAME]`) or a method
/// (`[client.services.NAME.methods.METHOD]`); unset keys come from the level above.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    strategy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u32>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    timeout: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    attempt_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_codes: Option<Vec<String>>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    hedging_delay: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    non_fatal_codes: Option<Vec<String>>,
}

impl MethodConfig {
    /// The strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy.name());
        self
    }

    /// Extra attempts of failover and failretry.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// The deadline of a call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The bound of each attempt (see [`ClientConfig::with_attempt_timeout`]).
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Hedging's settings (see [`ClientConfig::with_hedging`]).
    pub fn with_hedging<I: IntoIterator<Item = Code>>(
        mut self,
        delay: Duration,
        max_attempts: u32,
        non_fatal: I,
    ) -> Self {
        self.hedging_delay = Some(delay);
        self.max_attempts = Some(max_attempts);
        self.non_fatal_codes = Some(non_fatal.into_iter().map(code_name).collect());
        self
    }

    fn apply(&self, path: &str, policy: &mut CallPolicy) -> Result<(), Error> {
        if let Some(s) = &self.strategy {
            policy.strategy = parse_strategy(&format!("{path}.strategy"), s)?;
        }
        if let Some(r) = self.retries {
            policy.retries = r;
        }
        if let Some(t) = self.timeout {
            if t.is_zero() {
                return Err(Error::Config(InvalidValue::new(
                    format!("{path}.timeout"),
                    "must be above zero",
                )));
            }
            policy.timeout = t;
        }
        if let Some(t) = self.attempt_timeout {
            if t.is_zero() {
                return Err(Error::Config(InvalidValue::new(
                    format!("{path}.attempt_timeout"),
                    "must be above zero",
                )));
            }
            policy.attempt_timeout = Some(t);
        }
        if let Some(c) = &self.retry_codes {
            policy.retry_codes = parse_codes(&format!("{path}.retry_codes"), c)?;
        }
        if let Some(d) = self.hedging_delay {
            policy.hedging.delay = d;
        }
        if let Some(n) = self.max_attempts {
            if n == 0 {
                return Err(Error::Config(InvalidValue::new(
                    format!("{path}.max_attempts"),
                    "must be at least 1",
                )));
            }
            policy.hedging.max_attempts = n;
        }
        if let Some(c) = &self.non_fatal_codes {
            policy.hedging.non_fatal = parse_codes(&format!("{path}.non_fatal_codes"), c)?;
        }
        Ok(())
    }
}

/// The resolved call settings of one method ([`ClientConfig::call_policy`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CallPolicy {
    strategy: Strategy,
    retries: u32,
    timeout: Duration,
    attempt_timeout: Option<Duration>,
    retry_codes: Arc<[Code]>,
    hedging: Hedging,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl CallPolicy {
    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Extra attempts of failover and failretry.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The deadline of a call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The bound of each attempt, if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// Hedging's settings.
    pub fn hedging(&self) -> &Hedging {
        &self.hedging
    }

    /// Codes retried by failover and failretry.
    pub fn retry_codes(&self) -> &Arc<[Code]> {
        &self.retry_codes
    }

    /// The retried codes as a set.
    pub(crate) fn retry_set(&self) -> CodeSet {
        CodeSet::of(&self.retry_codes)
    }

    /// Failretry's backoff bounds.
    pub fn backoff(&self) -> (Duration, Duration) {
        (self.backoff_min, self.backoff_max)
    }
}

/// The resolved settings of the `hedging` strategy (gRFC A6's hedging policy).
#[derive(Debug, Clone, PartialEq)]
pub struct Hedging {
    delay: Duration,
    max_attempts: u32,
    non_fatal: Arc<[Code]>,
}

impl Hedging {
    /// The wait before each further attempt.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The most attempts of one call, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The codes that let the other attempts go on.
    pub fn non_fatal_codes(&self) -> &Arc<[Code]> {
        &self.non_fatal
    }
}

/// Everything the calls of one service use, resolved from the configuration
/// once per load or reload; calls only look it up.
#[derive(Debug, Clone)]
pub(crate) struct ServicePolicy {
    pub(crate) picker: PickerConfig,
    pub(crate) budget: (f64, u32),
    pub(crate) default_call: Arc<CallPolicy>,
    /// The method tables, by their key: a full path or a bare name.
    pub(crate) methods: foldhash::HashMap<Box<str>, Arc<CallPolicy>>,
}

impl ServicePolicy {
    /// The call settings of the method at `path` (`/echo.v1.Echo/Say`): its
    /// full path's table, else its name's, else the service's.
    pub(crate) fn call(&self, path: &str) -> &Arc<CallPolicy> {
        if self.methods.is_empty() {
            return &self.default_call;
        }
        self.methods
            .get(path)
            .or_else(|| self.methods.get(method_name(path)))
            .unwrap_or(&self.default_call)
    }
}

/// The method name of a path: the part after the last `/` (`Say`); a bare
/// name is its own.
fn method_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

fn parse_strategy(key: &str, value: &str) -> Result<Strategy, Error> {
    Strategy::parse(value).map_err(|why| Error::Config(InvalidValue::new(key, why)))
}

/// The names of gRPC codes, as in the gRPC spec (`UNAVAILABLE`).
const CODE_NAMES: [(&str, Code); 17] = [
    ("OK", Code::Ok),
    ("CANCELLED", Code::Cancelled),
    ("UNKNOWN", Code::Unknown),
    ("INVALID_ARGUMENT", Code::InvalidArgument),
    ("DEADLINE_EXCEEDED", Code::DeadlineExceeded),
    ("NOT_FOUND", Code::NotFound),
    ("ALREADY_EXISTS", Code::AlreadyExists),
    ("PERMISSION_DENIED", Code::PermissionDenied),
    ("RESOURCE_EXHAUSTED", Code::ResourceExhausted),
    ("FAILED_PRECONDITION", Code::FailedPrecondition),
    ("ABORTED", Code::Aborted),
    ("OUT_OF_RANGE", Code::OutOfRange),
    ("UNIMPLEMENTED", Code::Unimplemented),
    ("INTERNAL", Code::Internal),
    ("UNAVAILABLE", Code::Unavailable),
    ("DATA_LOSS", Code::DataLoss),
    ("UNAUTHENTICATED", Code::Unauthenticated),
];

fn code_name(code: Code) -> String {
    CODE_NAMES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or_else(|| format!("{}", code as i32), |(n, _)| (*n).to_owned())
}

fn parse_codes(key: &str, names: &[String]) -> Result<Arc<[Code]>, Error> {
    names
        .iter()
        .map(|name| {
            let upper = name.trim().to_ascii_uppercase();
            CODE_NAMES
                .iter()
                .find(|(n, _)| *n == upper)
                .map(|(_, c)| *c)
                .or_else(|| {
                    upper
                        .parse::<i32>()
                        .ok()
                        .filter(|n| (0..=16).contains(n))
                        .map(Code::from_i32)
                })
                .ok_or_else(|| {
                    Error::Config(InvalidValue::new(
                        key,
                        format!("`{name}` is not a gRPC code such as UNAVAILABLE"),
                    ))
                })
        })
        .collect()
}

fn parse_at<T: std::str::FromStr<Err = InvalidValue>>(key: &str, value: &str) -> Result<T, Error> {
    value
        .parse()
        .map_err(|why: InvalidValue| Error::Config(InvalidValue::new(key, why.reason())))
}

fn check_share(key: &str, share: f64) -> Result<(), Error> {
    if (0.0..=1.0).contains(&share) {
        Ok(())
    } else {
        Err(Error::Config(InvalidValue::new(
            key,
            format!("{share} is not a share between 0 and 1"),
        )))
    }
}

/// `Option<Duration>` as an optional duration string.
mod opt_duration {
    use std::time::Duration;

    use registry_actor::config::duration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| duration::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ClientConfig {
        serde_json::from_str(json).expect("valid json config")
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let config = ClientConfig::default();
        config.validate().expect("defaults valid");
        let p = config.picker_config("any-service").expect("defaults");
        assert_eq!(p.balancer(), Balancer::RoundRobin);
        assert_eq!(p.fallback(), Fallback::Any);
        assert_eq!(p.ejection().failures(), 5);
        assert_eq!(p.ejection().base_time(), Duration::from_secs(10));
        assert_eq!(p.ejection().max_time(), Duration::from_secs(300));
        assert_eq!(p.ejection().max_share(), 0.5);
        assert_eq!(p.panic_threshold(), 0.5);
        assert_eq!(p.panic_grace(), Duration::from_secs(30));
        assert!(p.selector().is_empty());
        assert_eq!(p, PickerConfig::default());
    }

    #[test]
    fn service_tables_override_the_defaults_key_by_key() {
        let config = parse(
            r#"{"balancer": "random", "ejection": {"failures": 3, "base_time": "1s"},
                "services": {"echo": {"version": "v1", "group": "blue", "zone": "z",
                  "labels": {"canary": "false"}, "fallback": "strict",
                  "ejection": {"max_share": 0.25}, "panic_grace": "2s"}}}"#,
        );
        config.validate().expect("valid");
        let p = config.picker_config("echo").expect("echo");
        assert_eq!(p.balancer(), Balancer::Random);
        assert_eq!(p.fallback(), Fallback::Strict);
        assert_eq!(
            p.selector().to_string(),
            "version v1, group blue, zone z, labels canary=false"
        );
        assert_eq!(p.ejection().failures(), 3, "from [client.ejection]");
        assert_eq!(p.ejection().base_time(), Duration::from_secs(1));
        assert_eq!(p.ejection().max_share(), 0.25, "from the service");
        assert_eq!(p.panic_grace(), Duration::from_secs(2));
    }

    #[test]
    fn bad_values_name_their_full_key_path() {
        let cases = [
            (
                r#"{"services": {"echo": {"balancer": "foo"}}}"#,
                r#"client.services.echo.balancer: unknown balancer "foo"; expected one of pick_first, round_robin, random, weighted_random, weighted_round_robin, least_request, consistent_hash"#,
            ),
            (
                r#"{"balancer": "rr"}"#,
                "client.balancer: unknown balancer \"rr\"",
            ),
            (
                r#"{"services": {"echo": {"fallback": "maybe"}}}"#,
                "client.services.echo.fallback: unknown fallback \"maybe\"",
            ),
            (
                r#"{"services": {"echo": {"version": ">=one"}}}"#,
                "client.services.echo.version: invalid selector `>=one`",
            ),
            (
                r#"{"services": {"echo": {"labels": {"": "x"}}}}"#,
                "client.services.echo.labels: a label name is empty",
            ),
            (
                r#"{"ejection": {"failures": 0}}"#,
                "client.ejection.failures",
            ),
            (
                r#"{"ejection": {"base_time": "0"}}"#,
                "client.ejection.base_time",
            ),
            (
                r#"{"services": {"echo": {"ejection": {"max_time": "1s"}}}}"#,
                "client.services.echo.ejection.max_time: 1s is below base_time 10s",
            ),
            (
                r#"{"services": {"echo": {"ejection": {"max_share": 1.5}}}}"#,
                "client.services.echo.ejection.max_share",
            ),
            (r#"{"panic_threshold": -0.1}"#, "client.panic_threshold"),
        ];
        for (json, expected) in cases {
            let err = parse(json).validate().expect_err(json).to_string();
            assert!(
                err.contains(expected),
                "`{err}` should contain `{expected}`"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_rejected_at_load() {
        let err = serde_json::from_str::<ClientConfig>(
            r#"{"services": {"echo": {"balancr": "random"}}}"#,
        )
        .expect_err("unknown key");
        assert!(err.to_string().contains("balancr"), "{err}");
        let err =
            serde_json::from_str::<ClientConfig>(r#"{"panic_grace": "5"}"#).expect_err("no unit");
        assert!(err.to_string().contains("no unit"), "{err}");
    }

    #[test]
    fn method_tables_match_by_full_path_or_name_and_the_full_path_wins() {
        let config = parse(
            r#"{"services": {"echo": {"retries": 1, "methods": {
                "Say": {"retries": 3, "timeout": "2s"},
                "/echo.v1.Echo/Say": {"retries": 5},
                "/echo.v1.Echo/Slow": {"strategy": "failfast"}}}}}"#,
        );
        config.validate().expect("valid");
        let say = config
            .call_policy("echo", "/echo.v1.Echo/Say")
            .expect("say");
        assert_eq!(say.retries(), 5, "the full path's table wins");
        assert_eq!(
            say.timeout(),
            Duration::from_secs(5),
            "not merged with `Say`"
        );
        let other = config
            .call_policy("echo", "/other.v1.Other/Say")
            .expect("say");
        assert_eq!(other.retries(), 3, "by name for another package");
        let slow = config
            .call_policy("echo", "/echo.v1.Echo/Slow")
            .expect("slow");
        assert_eq!(slow.strategy(), Strategy::Failfast);
        assert_eq!(slow.retries(), 1, "from the service");

        let resolved = config.resolve_service("echo").expect("resolved");
        assert_eq!(resolved.call("/echo.v1.Echo/Say").retries(), 5);
        assert_eq!(resolved.call("/pkg.Other/Say").retries(), 3);
        assert_eq!(resolved.call("/echo.v1.Echo/Fail").retries(), 1);
        assert_eq!(
            resolved.call("/echo.v1.Echo/Slow").strategy(),
            Strategy::Failfast
        );
    }

    #[test]
    fn attempt_timeouts_resolve_per_method_and_zero_is_refused_by_key() {
        let config = parse(
            r#"{"attempt_timeout": "300ms", "services": {"echo": {"attempt_timeout": "200ms",
                "methods": {"Say": {"attempt_timeout": "50ms"}}}}}"#,
        );
        config.validate().expect("valid");
        let at = |service: &str, method: &str| {
            config
                .call_policy(service, method)
                .expect("valid")
                .attempt_timeout()
        };
        assert_eq!(at("echo", "Say"), Some(Duration::from_millis(50)));
        assert_eq!(at("echo", "Slow"), Some(Duration::from_millis(200)));
        assert_eq!(at("other", "Say"), Some(Duration::from_millis(300)));
        assert_eq!(
            ClientConfig::default()
                .call_policy("echo", "Say")
                .expect("ok")
                .attempt_timeout(),
            None
        );
        for (json, key) in [
            (r#"{"attempt_timeout": "0"}"#, "client.attempt_timeout"),
            (
                r#"{"services": {"echo": {"methods": {"Say": {"attempt_timeout": "0"}}}}}"#,
                "client.services.echo.methods.Say.attempt_timeout",
            ),
        ] {
            let err = parse(json).validate().expect_err(json).to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn hedging_settings_resolve_per_method_and_bad_ones_name_their_key() {
        let config = parse(
            r#"{"strategy": "hedging", "hedging_delay": "30ms", "services": {"echo": {
                "max_attempts": 4, "methods": {"Say": {"non_fatal_codes": ["UNAVAILABLE", "INTERNAL"]}}}}}"#,
        );
        config.validate().expect("valid");
        let say = config.call_policy("echo", "Say").expect("valid");
        assert_eq!(say.strategy(), Strategy::Hedging);
        assert_eq!(say.hedging().delay(), Duration::from_millis(30));
        assert_eq!(say.hedging().max_attempts(), 4);
        assert_eq!(
            &say.hedging().non_fatal_codes()[..],
            [Code::Unavailable, Code::Internal]
        );
        let other = ClientConfig::default()
            .call_policy("x", "Say")
            .expect("valid");
        assert_eq!(
            (other.hedging().delay(), other.hedging().max_attempts()),
            (Duration::from_millis(50), 3)
        );
        assert_eq!(&other.hedging().non_fatal_codes()[..], [Code::Unavailable]);
        for (json, key) in [
            (r#"{"max_attempts": 0}"#, "client.max_attempts"),
            (
                r#"{"services": {"echo": {"methods": {"Say": {"max_attempts": 0}}}}}"#,
                "client.services.echo.methods.Say.max_attempts",
            ),
            (r#"{"non_fatal_codes": ["NOPE"]}"#, "client.non_fatal_codes"),
            (
                r#"{"ejection": {"codes": ["NOPE"]}}"#,
                "client.ejection.codes",
            ),
        ] {
            let err = parse(json).validate().expect_err(json).to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn budgets_and_backoffs_are_overridable_per_service() {
        let config = parse(
            r#"{"budget_ratio": 0.2, "services": {"echo": {"budget_ratio": 0.5,
                "budget_min_per_sec": 3, "retry_backoff": "5ms", "retry_backoff_max": "20ms"}}}"#,
        );
        config.validate().expect("valid");
        assert_eq!(config.budget("echo"), (0.5, 3));
        assert_eq!(config.budget("other"), (0.2, 10));
        let echo = config.call_policy("echo", "Say").expect("echo");
        assert_eq!(
            echo.backoff(),
            (Duration::from_millis(5), Duration::from_millis(20))
        );
        let bad = parse(r#"{"services": {"echo": {"budget_ratio": 2.0}}}"#);
        let err = bad.validate().expect_err("ratio above 1").to_string();
        assert!(err.contains("client.services.echo.budget_ratio"), "{err}");
    }

    #[test]
    fn round_trips_through_serde() {
        let config = ClientConfig::default().with_service(
            "echo",
            ServiceConfig::default()
                .with_balancer(Balancer::ConsistentHash)
                .with_labels([("a", "b")])
                .with_ejection(EjectionConfig::default().with_failures(2))
                .with_panic_grace(Duration::from_millis(1500)),
        );
        let json = serde_json::to_string(&config).expect("serialize");
        let back: ClientConfig = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, config);
    }
}
