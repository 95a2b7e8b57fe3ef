//! Registry settings (`[registry]` of the layered configuration) and the duration
//! format shared by every section.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Secret, TlsConfig};

/// A configuration value that is not acceptable: its full key path and why.
///
/// Every section's `validate()` in grpc-cluster reports this, so the loader can
/// add where the value was set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidValue {
    key: String,
    reason: String,
}

impl InvalidValue {
    /// `key` (the full path, e.g. `registry.lease_ttl`) is wrong because `reason`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The full key path.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Why the value is wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The default key prefix under which services live.
pub const DEFAULT_PREFIX: &str = "/grpc-cluster/services";

/// The smallest lease TTL etcd grants at its defaults.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// Settings of the etcd registry: where etcd is, where services live in it, and how
/// registrations and watches retry. The `[registry]` section of the configuration.
///
/// Every setter states its default; [`RegistryConfig::validate`] checks the whole.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use registry_actor::RegistryConfig;
///
/// let config = RegistryConfig::default()
///     .with_endpoints(["127.0.0.1:2379"])
///     .with_lease_ttl(Duration::from_secs(5));
/// config.validate()?;
/// assert_eq!(config.prefix(), "/grpc-cluster/services");
/// # Ok::<(), registry_actor::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    endpoints: Vec<String>,
    prefix: String,
    #[serde(with = "duration")]
    lease_ttl: Duration,
    #[serde(with = "duration")]
    connect_timeout: Duration,
    #[serde(with = "duration")]
    request_timeout: Duration,
    #[serde(with = "duration")]
    backoff_min: Duration,
    #[serde(with = "duration")]
    backoff_max: Duration,
    max_value_bytes: usize,
    snapshot_file: Option<PathBuf>,
    tls: TlsConfig,
    username: Option<String>,
    #[serde(skip_serializing)]
    password: Option<Secret>,
}

/// The default of `registry.max_value_bytes`: 64 KiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 << 10;

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:2379".to_owned()],
            prefix: DEFAULT_PREFIX.to_owned(),
            lease_ttl: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            snapshot_file: None,
            tls: TlsConfig::default(),
            username: None,
            password: None,
        }
    }
}

impl RegistryConfig {
    /// etcd endpoints as `host:port` (default `["127.0.0.1:2379"]`).
    pub fn with_endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// Key prefix of all services (default `/grpc-cluster/services`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// TTL of a server's lease (default 10 s, at least 2 s, whole seconds: etcd
    /// grants leases in whole seconds, and [`validate`](Self::validate) rejects a
    /// fraction rather than cut it); kept alive every TTL/3.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Timeout of establishing a connection to etcd (default 2 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout of each unary etcd request (default 3 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Retry backoff of registrations and watches: first delay `min` (default
    /// 100 ms), doubling up to `max` (default 5 s).
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// The largest node value read from the registry (default 64 KiB); a larger
    /// value is skipped with an error naming its key. It also sizes the message
    /// limit of full reads, which fetch 1000 keys per page.
    pub fn with_max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// The snapshot file (default: none). When set, a [`RegistryActor`]
    /// keeps the last known node set of every service it watches in this
    /// file (written on change, at most once a second, atomically), and when
    /// etcd cannot be read at start-up it serves a service's set from the file
    /// until etcd answers. A file that cannot be read or is not such a file is
    /// logged as an error naming it, and ignored.
    ///
    /// [`RegistryActor`]: crate::RegistryActor
    pub fn with_snapshot_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.snapshot_file = Some(path.into());
        self
    }

    /// TLS to etcd (`[registry.tls]`, default off).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// etcd user/password authentication (`username`, `password`; default:
    /// none).
    pub fn with_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(Secret::new(password));
        self
    }

    /// The TLS settings.
    pub fn tls(&self) -> &TlsConfig {
        &self.tls
    }

    /// The etcd user name and password, when set.
    pub fn user(&self) -> Option<(&str, &str)> {
        Some((self.username.as_deref()?, self.password.as_ref()?.expose()))
    }

    /// etcd endpoints, `host:port`.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Key prefix of all services.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Lease TTL of registrations.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Timeout of each unary etcd request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The first retry delay.
    pub fn backoff_min(&self) -> Duration {
        self.backoff_min
    }

    /// The longest retry delay (registrations retry within a third of the lease
    /// TTL whatever this says).
    pub fn backoff_max(&self) -> Duration {
        self.backoff_max
    }

    /// The largest node value read from the registry.
    pub fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }

    /// The snapshot file, when set.
    pub fn snapshot_file(&self) -> Option<&Path> {
        self.snapshot_file.as_deref()
    }

    /// A fresh backoff with the configured bounds.
    pub fn backoff(&self) -> crate::Backoff {
        crate::Backoff::new(self.backoff_min, self.backoff_max)
    }

    /// Checks every value; the error names the key (`registry.…`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for no endpoints, an endpoint that is not `host:port`, a
    /// prefix not starting with `/` or ending with `/`, a TTL below 2 s or not
    /// in whole seconds, a zero timeout, a backoff whose min is zero or above
    /// its max, a duration above [`duration::MAX`], a zero `max_value_bytes`,
    /// or an empty `snapshot_file`.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, why: String| {
            Err(Error::Config(InvalidValue::new(
                format!("registry.{key}"),
                why,
            )))
        };
        if self.endpoints.is_empty() {
            return bad(
                "endpoints",
                "at least one etcd endpoint (host:port) is needed".into(),
            );
        }
        for e in &self.endpoints {
            let ok = e
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
            if !ok {
                return bad("endpoints", format!("`{e}` is not host:port"));
            }
        }
        if !self.prefix.starts_with('/') || (self.prefix.len() > 1 && self.prefix.ends_with('/')) {
            return bad(
                "prefix",
                format!("`{}` must start with `/` and not end with `/`", self.prefix),
            );
        }
        for (key, value) in [
            ("lease_ttl", self.lease_ttl),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("backoff_min", self.backoff_min),
            ("backoff_max", self.backoff_max),
        ] {
            if let Err(why) = duration::check_bound(value) {
                return bad(key, why);
            }
        }
        if self.lease_ttl < MIN_LEASE_TTL {
            return bad(
                "lease_ttl",
                format!("{:?} is below etcd's minimum of 2s", self.lease_ttl),
            );
        }
        if self.lease_ttl.subsec_nanos() != 0 {
            return bad(
                "lease_ttl",
                format!(
                    "{} is not a whole number of seconds (etcd grants leases in whole seconds)",
                    duration::format(self.lease_ttl)
                ),
            );
        }
        if self.max_value_bytes == 0 {
            return bad("max_value_bytes", "must be above zero".into());
        }
        if self
            .snapshot_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return bad(
                "snapshot_file",
                "is empty; leave it unset for no snapshot file".into(),
            );
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be above zero".into());
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout", "must be above zero".into());
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return bad(
                "backoff_min",
                format!(
                    "{:?} must be above zero and at most backoff_max ({:?})",
                    self.backoff_min, self.backoff_max
                ),
            );
        }
        if self.username.is_some() != self.password.is_some() {
            let missing = if self.username.is_none() {
                "username"
            } else {
                "password"
            };
            return bad(
                missing,
                "registry.username and registry.password go together".into(),
            );
        }
        Ok(())
    }
}

/// Durations as strings: `"250ms"`, `"10s"`, `"1.5s"`, `"2m"`, `"1h"`, `"500us"`,
/// and compound ones as [humantime](https://docs.rs/humantime) reads them
/// (`"1m30s"`, `"1h 15m"`, `"2days"`), at most [`MAX`](duration::MAX) (365 days), so that no deadline computed from
/// a configured duration can overflow.
///
/// Use with `#[serde(with = "registry_actor::config::duration")]`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// The longest duration a setting may have: 365 days. Far above any
    /// sensible timeout, grace or backoff, and far below what `Instant +
    /// Duration` can hold, even summed several times.
    pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

    /// `Err` with the reason when `d` is above [`MAX`].
    ///
    /// # Errors
    ///
    /// A message naming the bound.
    pub fn check_bound(d: Duration) -> Result<(), String> {
        if d > MAX {
            Err(format!(
                "{} is above the longest duration accepted, 365 days (8760h)",
                format(d)
            ))
        } else {
            Ok(())
        }
    }

    /// Parses `"250ms"`, `"10s"`, `"1.5s"`, `"2m"`, `"1h"`, `"500us"`, and
    /// compound durations such as `"1m30s"` or `"1h 15m"` (humantime's
    /// syntax); a bare `"0"` is zero.
    ///
    /// # Errors
    ///
    /// A message saying what was expected, for anything else, and for a
    /// duration above [`MAX`].
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        if t == "0" {
            return Ok(Duration::ZERO);
        }
        match single(s, t) {
            Ok(d) => Ok(d),
            // Not one number and one unit: perhaps several (`1m30s`).
            Err(why) => match humantime::parse_duration(t) {
                Ok(d) => {
                    check_bound(d).map_err(|_| {
                        format!("`{s}` is above the longest duration accepted, 365 days (8760h)")
                    })?;
                    Ok(d)
                }
                Err(_) => Err(why),
            },
        }
    }

    /// One number (maybe with a fraction) and one unit: `"1.5s"`.
    fn single(s: &str, t: &str) -> Result<Duration, String> {
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{s}` has no unit; use e.g. \"250ms\", \"10s\", \"2m\""))?;
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration such as \"250ms\" or \"10s\""))?;
        let secs = match unit.trim() {
            "us" | "µs" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            other => {
                return Err(format!(
                    "`{s}` has unknown unit `{other}`; use us, ms, s, m or h, or combine them as in \"1m30s\""
                ))
            }
        };
        let d = Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is out of range"))?;
        check_bound(d).map_err(|_| {
            format!("`{s}` is above the longest duration accepted, 365 days (8760h)")
        })?;
        Ok(d)
    }

    /// Formats a duration in the shortest exact unit: `"250ms"`, `"10s"`.
    pub fn format(d: Duration) -> String {
        let us = d.as_micros();
        if us.is_multiple_of(1_000_000) {
            format!("{}s", us / 1_000_000)
        } else if us.is_multiple_of(1_000) {
            format!("{}ms", us / 1_000)
        } else {
            format!("{us}us")
        }
    }

    /// serde: serializes as [`format`].
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// serde: deserializes with [`parse`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_and_formats_every_unit() {
            for (s, d) in [
                ("250ms", Duration::from_millis(250)),
                ("10s", Duration::from_secs(10)),
                ("1.5s", Duration::from_millis(1500)),
                ("2m", Duration::from_secs(120)),
                ("1h", Duration::from_secs(3600)),
                ("500us", Duration::from_micros(500)),
                ("0", Duration::ZERO),
                ("1m30s", Duration::from_secs(90)),
                ("1h 15m", Duration::from_secs(4500)),
                ("2s 250ms", Duration::from_millis(2250)),
            ] {
                assert_eq!(parse(s), Ok(d), "{s}");
                assert_eq!(parse(&format(d)), Ok(d));
            }
        }

        #[test]
        fn accepts_up_to_365_days_and_names_the_bound_above() {
            assert_eq!(parse("8760h"), Ok(MAX));
            let err = parse("3000000000000000h").expect_err("far too long");
            assert!(
                err.contains("3000000000000000h") && err.contains("365 days"),
                "{err}"
            );
        }

        #[test]
        fn rejects_garbage_with_a_message() {
            for s in [
                "",
                "10",
                "abc",
                "10 parsecs",
                "-1s",
                "1e400s",
                "1..5s",
                "3000000000000000h",
                "8761h",
            ] {
                assert!(parse(s).is_err(), "{s} should be rejected");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        RegistryConfig::default()
            .validate()
            .expect("defaults valid");
        let cases = [
            (
                RegistryConfig::default().with_endpoints(Vec::<String>::new()),
                "registry.endpoints",
            ),
            (
                RegistryConfig::default().with_endpoints(["localhost"]),
                "registry.endpoints",
            ),
            (
                RegistryConfig::default().with_endpoints(["h:99999"]),
                "registry.endpoints",
            ),
            (
                RegistryConfig::default().with_prefix("svc"),
                "registry.prefix",
            ),
            (
                RegistryConfig::default().with_lease_ttl(Duration::from_secs(1)),
                "registry.lease_ttl",
            ),
            (
                RegistryConfig::default()
                    .with_backoff(Duration::from_secs(2), Duration::from_secs(1)),
                "registry.backoff_min",
            ),
            (
                RegistryConfig::default().with_lease_ttl(Duration::from_millis(2900)),
                "registry.lease_ttl",
            ),
            (
                RegistryConfig::default().with_request_timeout(Duration::MAX),
                "registry.request_timeout",
            ),
            (
                RegistryConfig::default().with_max_value_bytes(0),
                "registry.max_value_bytes",
            ),
            (
                RegistryConfig::default().with_snapshot_file(""),
                "registry.snapshot_file",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate().expect_err(key).to_string();
            assert!(err.contains(key), "`{err}` should name {key}");
        }
    }

    #[test]
    fn deserializes_durations_from_strings() {
        let c: RegistryConfig =
            serde_json::from_str(r#"{"lease_ttl":"5s","backoff_min":"50ms"}"#).expect("valid");
        assert_eq!(c.lease_ttl(), Duration::from_secs(5));
        let err =
            serde_json::from_str::<RegistryConfig>(r#"{"lease_ttl":"5"}"#).expect_err("no unit");
        assert!(err.to_string().contains("no unit"));
    }

    #[test]
    fn a_fractional_lease_ttl_is_rejected_not_truncated() {
        let c: RegistryConfig = serde_json::from_str(r#"{"lease_ttl":"2.9s"}"#).expect("parses");
        let err = c
            .validate()
            .expect_err("2.9s is not whole seconds")
            .to_string();
        assert!(
            err.contains("registry.lease_ttl") && err.contains("2900ms") && err.contains("whole"),
            "{err}"
        );
    }
}
