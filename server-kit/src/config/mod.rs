//! Server settings: the `[server]` section of the layered configuration, with its
//! sub-tables `[server.rate_limit]`, `[server.shedding]` and `[server.shutdown]`.
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:50051"
//! advertise = "10.0.0.7"          # host (or host:port) written to the registry
//! service = "echo"
//! node_id = "echo-1"              # default: the advertised host:port
//! version = "1.4.0"
//! group = "blue"
//! weight = 100
//! zone = "eu-1a"
//! labels = { canary = "false" }
//! token = "s3cret"                # optional bearer token
//!
//! [server.tls]                    # see ServerTlsConfig
//! cert_file = "certs/server.pem"
//! key_file = "certs/server.key"
//! client_ca_file = "certs/ca.pem" # set: client certificates required
//!
//! [server.auth.callers]           # see AuthConfig: bearer token -> caller name
//! billing = "token-of-billing"
//!
//! [server.rate_limit]
//! rps = 1000                      # 0 or absent = unlimited
//! burst = 200                     # 0 or absent = rps
//! methods = { "/echo.v1.Echo/Slow" = { rps = 50, burst = 10 } }
//! caller_rps = 100
//! caller_burst = 20
//! caller_key = "x-caller"         # metadata key naming the caller ...
//! trust_caller_header = false     # ... used only when true
//! max_callers = 100000
//! prune_interval = "10s"
//! cluster_rps = 3000              # divided by the live instances seen in the registry
//!
//! [server.shedding]               # see ShedConfig; off by default
//! enabled = true
//!
//! [server.shutdown]
//! deregister_timeout = "5s"
//! lame_duck = "1s"
//! drain_timeout = "10s"
//! ```
//!
//! Every type has private fields, `with_*` setters that state their default, and a
//! `validate` whose error names the full key path (`server.rate_limit.rps: ...`).
//! Durations are strings such as `"250ms"` or `"10s"`
//! ([`registry_actor::config::duration`]). Unknown keys are errors.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use server_kit::{RateLimitConfig, ServerConfig, ShutdownConfig};
//!
//! let config = ServerConfig::default()
//!     .with_listen("127.0.0.1:0")
//!     .with_service("echo")
//!     .with_rate_limit(
//!         RateLimitConfig::default()
//!             .with_rps(1000)
//!             .with_method("/echo.v1.Echo/Slow", 50, 10)
//!             .with_caller_rps(100),
//!     )
//!     .with_shutdown(ShutdownConfig::default().with_drain_timeout(Duration::from_secs(5)));
//! config.validate()?;
//! # Ok::<(), server_kit::Error>(())
//! ```

mod security;
mod shedding;
#[cfg(test)]
mod tests;

pub use security::{AuthConfig, ServerTlsConfig};
pub use shedding::ShedConfig;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use registry_actor::config::duration;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The default metadata key naming the caller for per-caller limits.
pub const DEFAULT_CALLER_KEY: &str = "x-caller";

/// Settings of one server (the `[server]` section). See the [module docs](self).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    listen: String,
    advertise: Option<String>,
    service: String,
    node_id: String,
    version: String,
    group: String,
    weight: u32,
    zone: String,
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing)]
    token: Option<String>,
    tls: ServerTlsConfig,
    auth: AuthConfig,
    rate_limit: RateLimitConfig,
    shedding: ShedConfig,
    shutdown: ShutdownConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".to_owned(),
            advertise: None,
            service: String::new(),
            node_id: String::new(),
            version: String::new(),
            group: String::new(),
            weight: registry_actor::DEFAULT_WEIGHT,
            zone: String::new(),
            labels: BTreeMap::new(),
            token: None,
            tls: ServerTlsConfig::default(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            shedding: ShedConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("service", &self.service)
            .field("node_id", &self.node_id)
            .field("version", &self.version)
            .field("group", &self.group)
            .field("weight", &self.weight)
            .field("zone", &self.zone)
            .field("labels", &self.labels)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .field("rate_limit", &self.rate_limit)
            .field("shedding", &self.shedding)
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl ServerConfig {
    /// The address to bind, `ip:port` (default `127.0.0.1:50051`; port 0 picks a
    /// free port, and the real one is advertised).
    pub fn with_listen(mut self, listen: impl Into<String>) -> Self {
        self.listen = listen.into();
        self
    }

    /// The host (or `host:port`) written to the registry (default: the bound
    /// address; required to register when `listen` binds every interface, such
    /// as `0.0.0.0`).
    pub fn with_advertise(mut self, advertise: impl Into<String>) -> Self {
        self.advertise = Some(advertise.into());
        self
    }

    /// The service name under which the node registers (default `""`: do not
    /// register, even with a registry given).
    pub fn with_service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// The node id, unique within the service (default `""`: the advertised
    /// `host:port`).
    pub fn with_node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = node_id.into();
        self
    }

    /// The version written to the registry (default `""`).
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The group written to the registry (default `""`).
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// The weight written to the registry (default 100; 0 = never picked by
    /// weighted policies).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The zone written to the registry (default `""`).
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = zone.into();
        self
    }

    /// Adds one label written to the registry (default: none).
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// A bearer token every call must carry as `authorization: Bearer <token>`
    /// (default: none, no authentication). The health service is exempt.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// TLS on the listener (`[server.tls]`, default off).
    pub fn with_tls(mut self, tls: ServerTlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Callers authenticated by bearer token (`[server.auth]`, default: none).
    pub fn with_auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }

    /// The rate limits (default: unlimited).
    pub fn with_rate_limit(mut self, rate_limit: RateLimitConfig) -> Self {
        self.rate_limit = rate_limit;
        self
    }

    /// The adaptive load shedding (default off: see [`ShedConfig`]).
    pub fn with_shedding(mut self, shedding: ShedConfig) -> Self {
        self.shedding = shedding;
        self
    }

    /// The shutdown timings (default: see [`ShutdownConfig`]).
    pub fn with_shutdown(mut self, shutdown: ShutdownConfig) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The address to bind, as written.
    pub fn listen(&self) -> &str {
        &self.listen
    }

    /// The host (or `host:port`) to advertise, when set.
    pub fn advertise(&self) -> Option<&str> {
        self.advertise.as_deref()
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The node id as configured (`""` = the advertised address).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The bearer token, when set.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The listener's TLS settings.
    pub fn tls(&self) -> &ServerTlsConfig {
        &self.tls
    }

    /// The callers authenticated by bearer token.
    pub fn auth(&self) -> &AuthConfig {
        &self.auth
    }

    /// The rate limits.
    pub fn rate_limit(&self) -> &RateLimitConfig {
        &self.rate_limit
    }

    /// The adaptive load shedding.
    pub fn shedding(&self) -> &ShedConfig {
        &self.shedding
    }

    /// The shutdown timings.
    pub fn shutdown(&self) -> &ShutdownConfig {
        &self.shutdown
    }

    /// The bind address, parsed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `server.listen` when it is not `ip:port`.
    pub fn listen_addr(&self) -> Result<SocketAddr, Error> {
        self.listen.parse().map_err(|_| {
            Error::invalid(
                "server.listen",
                format!(
                    "`{}` is not ip:port (e.g. \"127.0.0.1:50051\" or \"0.0.0.0:0\")",
                    self.listen
                ),
            )
        })
    }

    /// Checks every value; the error names the key (`server.…`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a `listen` that is not `ip:port`, an empty or
    /// whitespace `advertise`, `service` or `node_id` with `/` or whitespace, an
    /// empty token or one that is not visible ASCII, or a bad rate limit or
    /// shedding or shutdown value (see [`RateLimitConfig::validate`],
    /// [`ShedConfig::validate`], [`ShutdownConfig::validate`]).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, why: String| Err(Error::invalid(format!("server.{key}"), why));
        self.listen_addr()?;
        if let Some(a) = &self.advertise {
            if a.is_empty() || a.chars().any(char::is_whitespace) {
                return bad("advertise", format!("`{a}` is not a host or host:port"));
            }
        }
        for (key, value) in [("service", &self.service), ("node_id", &self.node_id)] {
            if value.contains('/') || value.chars().any(char::is_whitespace) {
                return bad(key, format!("`{value}` must not contain `/` or whitespace"));
            }
        }
        if let Some(t) = &self.token {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return bad("token", "must be non-empty visible ASCII".into());
            }
        }
        self.auth.validate()?;
        self.rate_limit.validate()?;
        self.shedding.validate()?;
        self.shutdown.validate()
    }
}

/// A rate and a burst: at most `burst` calls at once, refilled at `rps` per
/// second. A rate of 0 means unlimited; a burst of 0 means "the rate" (one
/// second's worth).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodLimit {
    rps: u32,
    burst: u32,
}

impl MethodLimit {
    /// `rps` calls per second with bursts of `burst` (0 = `rps`).
    pub fn new(rps: u32, burst: u32) -> Self {
        Self { rps, burst }
    }

    /// Calls per second; 0 = unlimited.
    pub fn rps(&self) -> u32 {
        self.rps
    }

    /// The burst as configured; 0 = the rate.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The burst in force: `burst`, or `rps` when `burst` is 0.
    pub fn effective_burst(&self) -> u32 {
        if self.burst == 0 {
            self.rps
        } else {
            self.burst
        }
    }

    /// Whether this limits anything.
    pub fn is_limited(&self) -> bool {
        self.rps > 0
    }

    fn validate(&self, key: &str) -> Result<(), Error> {
        if self.rps == 0 && self.burst > 0 {
            return Err(Error::invalid(
                format!("{key}.burst"),
                format!(
                    "{} is set but {key}.rps is 0 (unlimited); set a rate or remove the burst",
                    self.burst
                ),
            ));
        }
        Ok(())
    }
}

/// The `[server.rate_limit]` table: global, per-method, per-caller and cluster
/// limits, all optional and composable. See [`crate::rate_limit`] for how they
/// are applied.
///
/// This is also what [`ServeHandle::set_rate_limits`](crate::ServeHandle::set_rate_limits)
/// takes to change the limits of a running server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    rps: u32,
    burst: u32,
    methods: BTreeMap<String, MethodLimit>,
    caller_rps: u32,
    caller_burst: u32,
    caller_key: String,
    trust_caller_header: bool,
    max_callers: usize,
    #[serde(with = "duration")]
    prune_interval: Duration,
    cluster_rps: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            rps: 0,
            burst: 0,
            methods: BTreeMap::new(),
            caller_rps: 0,
            caller_burst: 0,
            caller_key: DEFAULT_CALLER_KEY.to_owned(),
            trust_caller_header: false,
            max_callers: 100_000,
            prune_interval: Duration::from_secs(10),
            cluster_rps: 0,
        }
    }
}

impl RateLimitConfig {
    /// Calls per second over the whole server (`rps`, default 0 = unlimited).
    pub fn with_rps(mut self, rps: u32) -> Self {
        self.rps = rps;
        self
    }

    /// The global burst (`burst`, default 0 = the rate).
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// A limit for one method, by its path `/package.Service/Method` or its
    /// bare name `Method` (that method of every service; the path's limit
    /// wins) (`methods`, default: none). A rate of 0 removes it; a burst of 0
    /// means the rate.
    pub fn with_method(mut self, path: impl Into<String>, rps: u32, burst: u32) -> Self {
        self.methods
            .insert(path.into(), MethodLimit::new(rps, burst));
        self
    }

    /// Calls per second for each caller (`caller_rps`, default 0 = unlimited).
    pub fn with_caller_rps(mut self, rps: u32) -> Self {
        self.caller_rps = rps;
        self
    }

    /// The burst of each caller (`caller_burst`, default 0 = the caller rate).
    pub fn with_caller_burst(mut self, burst: u32) -> Self {
        self.caller_burst = burst;
        self
    }

    /// The metadata key naming the caller (`caller_key`, default `x-caller`),
    /// read only when [`with_trust_caller_header`](Self::with_trust_caller_header)
    /// is on.
    pub fn with_caller_key(mut self, key: impl Into<String>) -> Self {
        self.caller_key = key.into();
        self
    }

    /// Whether the `caller_key` metadata names the caller
    /// (`trust_caller_header`, default off). Any client can set it, so turn it
    /// on only behind a proxy that sets it. Off, a call's caller is the name of
    /// its bearer token (`[server.auth.callers]`), else its client
    /// certificate, else its peer IP.
    pub fn with_trust_caller_header(mut self, trust: bool) -> Self {
        self.trust_caller_header = trust;
        self
    }

    /// Whether the `caller_key` metadata names the caller.
    pub fn trust_caller_header(&self) -> bool {
        self.trust_caller_header
    }

    /// How many callers are tracked at most (`max_callers`, default 100 000).
    /// Beyond it idle callers are pruned at once, and if that is not enough the
    /// caller table starts afresh.
    pub fn with_max_callers(mut self, max: usize) -> Self {
        self.max_callers = max;
        self
    }

    /// How often idle callers are pruned (`prune_interval`, default 10 s).
    pub fn with_prune_interval(mut self, interval: Duration) -> Self {
        self.prune_interval = interval;
        self
    }

    /// Calls per second for the whole cluster (`cluster_rps`, default 0 =
    /// unlimited); each instance enforces `cluster_rps / live instances`, the
    /// instances being those of its service seen in the registry.
    pub fn with_cluster_rps(mut self, rps: u32) -> Self {
        self.cluster_rps = rps;
        self
    }

    /// The global limit.
    pub fn global(&self) -> MethodLimit {
        MethodLimit::new(self.rps, self.burst)
    }

    /// Global calls per second (0 = unlimited).
    pub fn rps(&self) -> u32 {
        self.rps
    }

    /// Global burst (0 = the rate).
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The per-method limits by path.
    pub fn methods(&self) -> &BTreeMap<String, MethodLimit> {
        &self.methods
    }

    /// The per-caller limit.
    pub fn caller(&self) -> MethodLimit {
        MethodLimit::new(self.caller_rps, self.caller_burst)
    }

    /// The metadata key naming the caller.
    pub fn caller_key(&self) -> &str {
        &self.caller_key
    }

    /// How many callers are tracked at most.
    pub fn max_callers(&self) -> usize {
        self.max_callers
    }

    /// How often idle callers are pruned.
    pub fn prune_interval(&self) -> Duration {
        self.prune_interval
    }

    /// Calls per second for the whole cluster (0 = unlimited).
    pub fn cluster_rps(&self) -> u32 {
        self.cluster_rps
    }

    /// Whether no limit at all is set.
    pub fn is_unlimited(&self) -> bool {
        self.rps == 0
            && self.caller_rps == 0
            && self.cluster_rps == 0
            && self.methods.values().all(|m| !m.is_limited())
    }

    /// Checks every value; the error names the key (`server.rate_limit.…`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a burst without a rate, a method key that is not
    /// `/package.Service/Method`, a `caller_key` that is not a lowercase metadata
    /// key (or is reserved: `grpc-*`, `:*`, binary `*-bin`), `max_callers` of 0
    /// or a `prune_interval` of zero or above 365 days.
    pub fn validate(&self) -> Result<(), Error> {
        const KEY: &str = "server.rate_limit";
        let bad = |key: &str, why: String| Err(Error::invalid(format!("{KEY}.{key}"), why));
        self.global().validate(KEY)?;
        for (path, limit) in &self.methods {
            if !is_method_path(path) {
                return bad(
                    &format!("methods.\"{path}\""),
                    "a method key must be a path /package.Service/Method or a bare method name"
                        .into(),
                );
            }
            limit.validate(&format!("{KEY}.methods.\"{path}\""))?;
        }
        if self.caller_rps == 0 && self.caller_burst > 0 {
            return bad(
                "caller_burst",
                format!(
                    "{} is set but {KEY}.caller_rps is 0 (unlimited); set a rate or remove the burst",
                    self.caller_burst
                ),
            );
        }
        let k = &self.caller_key;
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || k.bytes().any(|b| b.is_ascii_uppercase())
            || k.starts_with("grpc-")
            || k.ends_with("-bin")
        {
            return bad(
                "caller_key",
                format!(
                    "`{k}` is not a lowercase ASCII metadata key (grpc-* and *-bin are reserved)"
                ),
            );
        }
        if self.max_callers == 0 {
            return bad("max_callers", "must be at least 1".into());
        }
        if self.prune_interval.is_zero() {
            return bad("prune_interval", "must be above zero".into());
        }
        if let Err(why) = duration::check_bound(self.prune_interval) {
            return bad("prune_interval", why);
        }
        Ok(())
    }
}

/// `/package.Service/Method`: two non-empty segments.
fn is_method_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        // A bare method name (`Say`), for that method of every service.
        return !path.is_empty() && !path.contains('/') && !path.chars().any(char::is_whitespace);
    };
    match rest.split_once('/') {
        Some((service, method)) => {
            !service.is_empty()
                && !method.is_empty()
                && !method.contains('/')
                && !path.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// The `[server.shutdown]` table: how long each step of the ordered shutdown may
/// take (see [`crate::serve`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    #[serde(with = "duration")]
    deregister_timeout: Duration,
    #[serde(with = "duration")]
    lame_duck: Duration,
    #[serde(with = "duration")]
    drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            deregister_timeout: Duration::from_secs(5),
            lame_duck: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl ShutdownConfig {
    /// How long deregistering, and seeing the key gone from etcd, may take
    /// (`deregister_timeout`, default 5 s); past it the shutdown goes on and the
    /// key expires with its lease.
    pub fn with_deregister_timeout(mut self, timeout: Duration) -> Self {
        self.deregister_timeout = timeout;
        self
    }

    /// How long the server keeps serving after its key is gone, so clients that
    /// picked it just before see the change (`lame_duck`, default 1 s).
    pub fn with_lame_duck(mut self, lame_duck: Duration) -> Self {
        self.lame_duck = lame_duck;
        self
    }

    /// How long calls in flight may take to finish after the server stopped
    /// accepting (`drain_timeout`, default 10 s); the rest are then cancelled.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The deregistration timeout.
    pub fn deregister_timeout(&self) -> Duration {
        self.deregister_timeout
    }

    /// The lame-duck period.
    pub fn lame_duck(&self) -> Duration {
        self.lame_duck
    }

    /// The drain deadline.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// Checks every value; the error names the key (`server.shutdown.…`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a zero `deregister_timeout`, or any duration above
    /// 365 days (a deadline computed from it could not be represented).
    pub fn validate(&self) -> Result<(), Error> {
        if self.deregister_timeout.is_zero() {
            return Err(Error::invalid(
                "server.shutdown.deregister_timeout",
                "must be above zero",
            ));
        }
        for (key, value) in [
            ("deregister_timeout", self.deregister_timeout),
            ("lame_duck", self.lame_duck),
            ("drain_timeout", self.drain_timeout),
        ] {
            duration::check_bound(value)
                .map_err(|why| Error::invalid(format!("server.shutdown.{key}"), why))?;
        }
        Ok(())
    }
}
