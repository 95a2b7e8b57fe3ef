//! A node of a service, and its etcd value format.
//!
//! Every replica of a service is described by one etcd key,
//! `{prefix}/{service}/{node_id}`, whose value is one UTF-8 JSON object:
//!
//! ```json
//! {"id":"echo-1","service":"echo","addr":"127.0.0.1:50051",
//!  "version":"v1","group":"blue","weight":100,"zone":"local",
//!  "labels":{"canary":"false"}}
//! ```
//!
//! `id` and `addr` (`host:port`) are required. The rest default: `service` to the
//! service named by the key, `version`, `group` and `zone` to `""`, `weight` to 100
//! (0 means "never picked by weighted policies"), `labels` to `{}`. Unknown fields
//! are ignored so that other tools may add their own. The `id` must be the
//! key's last segment. A value that breaks these rules is rejected by [`Node::decode`] with a [`DecodeError`] naming the key.
//!
//! # Examples
//!
//! ```
//! use registry_actor::Node;
//!
//! let node = Node::decode(
//!     "/grpc-cluster/services/echo/echo-1",
//!     "echo",
//!     br#"{"id":"echo-1","addr":"127.0.0.1:50051","labels":{"canary":"true"}}"#,
//! )?;
//! assert_eq!(node.service(), "echo");
//! assert_eq!(node.weight(), 100);
//! assert_eq!(node.label("canary"), Some("true"));
//!
//! let again = Node::decode("/grpc-cluster/services/echo/echo-1", "echo", &node.encode())?;
//! assert_eq!(again, node);
//! # Ok::<(), registry_actor::DecodeError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use set::{NodeChunk, NodeSet, Nodes};

#[cfg(test)]
mod fuzz;
mod set;
#[cfg(test)]
mod tests;

/// The weight a node gets when its value does not say.
pub const DEFAULT_WEIGHT: u32 = 100;

/// One replica of a service, as registered in etcd.
///
/// Built with [`Node::new`] and the `with_*` setters, or decoded from an etcd value
/// with [`Node::decode`]. Immutable once shared: the client hands nodes around in
/// [`NodeSet`]s. A clone shares the node's fields (one reference count).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Node(Arc<Fields>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
struct Fields {
    id: String,
    service: String,
    addr: String,
    version: String,
    group: String,
    weight: u32,
    zone: String,
    labels: BTreeMap<String, String>,
}

impl Node {
    /// A node with the given id, service and address (`host:port`), weight 100 and
    /// empty version, group, zone and labels.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when `id` is empty or `addr` is not `host:port` with a port in
    /// 1..=65535.
    pub fn new(
        id: impl Into<String>,
        service: impl Into<String>,
        addr: impl Into<String>,
    ) -> Result<Self, DecodeError> {
        let id = id.into();
        let service = service.into();
        let addr = addr.into();
        let key = format!("{service}/{id}");
        if id.is_empty() {
            return Err(DecodeError::new(key, DecodeErrorKind::MissingField("id")));
        }
        validate_addr(&addr).map_err(|kind| DecodeError::new(key, kind))?;
        Ok(Self(Arc::new(Fields {
            id,
            service,
            addr,
            version: String::new(),
            group: String::new(),
            weight: DEFAULT_WEIGHT,
            zone: String::new(),
            labels: BTreeMap::new(),
        })))
    }

    /// Sets the version (default `""`).
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.0).version = version.into();
        self
    }

    /// Sets the group (default `""`).
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.0).group = group.into();
        self
    }

    /// Sets the weight (default 100; 0 = never picked by weighted policies).
    pub fn with_weight(mut self, weight: u32) -> Self {
        Arc::make_mut(&mut self.0).weight = weight;
        self
    }

    /// Sets the zone (default `""`).
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.0).zone = zone.into();
        self
    }

    /// Adds one label (default: no labels).
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.0)
            .labels
            .insert(key.into(), value.into());
        self
    }

    /// Replaces the address, keeping everything else. Used when a server learns the
    /// port it really bound.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when `addr` is not `host:port`.
    pub fn with_addr(mut self, addr: impl Into<String>) -> Result<Self, DecodeError> {
        let addr = addr.into();
        validate_addr(&addr)
            .map_err(|kind| DecodeError::new(format!("{}/{}", self.0.service, self.0.id), kind))?;
        Arc::make_mut(&mut self.0).addr = addr;
        Ok(self)
    }

    /// Whether `self` and `other` are clones of one node (share their fields):
    /// a pointer comparison, true only for equal nodes.
    pub fn same(&self, other: &Node) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The node id, unique within its service.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The service this node serves.
    pub fn service(&self) -> &str {
        &self.0.service
    }

    /// The address clients connect to, `host:port`.
    pub fn addr(&self) -> &str {
        &self.0.addr
    }

    /// The version, `""` when not set.
    pub fn version(&self) -> &str {
        &self.0.version
    }

    /// The group, `""` when not set.
    pub fn group(&self) -> &str {
        &self.0.group
    }

    /// The weight for weighted policies; 0 means never picked by them.
    pub fn weight(&self) -> u32 {
        self.0.weight
    }

    /// The zone, `""` when not set.
    pub fn zone(&self) -> &str {
        &self.0.zone
    }

    /// All labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.0.labels
    }

    /// One label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.0.labels.get(key).map(String::as_str)
    }

    /// The etcd key of this node under `prefix`: `{prefix}/{service}/{id}`.
    pub fn key(&self, prefix: &str) -> String {
        node_key(prefix, &self.0.service, &self.0.id)
    }

    /// The JSON value of this node, every field written out.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings, integers and a string map cannot fail.
        serde_json::to_vec(&*self.0).unwrap_or_default()
    }

    /// Decodes the value stored at `key` for `service`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming `key` when the value is not UTF-8 JSON, lacks `id` or
    /// `addr`, has an address that is not `host:port` with a port in 1..=65535, a
    /// weight that is negative or above `u32::MAX`, names another service than
    /// `service`, or an `id` other than the key's last segment.
    pub fn decode(key: &str, service: &str, value: &[u8]) -> Result<Self, DecodeError> {
        let err = |kind| DecodeError::new(key.to_owned(), kind);
        let raw: RawNode =
            serde_json::from_slice(value).map_err(|e| err(DecodeErrorKind::Json(e.to_string())))?;
        let id = raw
            .id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| err(DecodeErrorKind::MissingField("id")))?;
        let key_id = key.rsplit('/').next().unwrap_or(key);
        if id != key_id {
            return Err(err(DecodeErrorKind::IdMismatch {
                value: id,
                key: key_id.to_owned(),
            }));
        }
        let addr = raw
            .addr
            .ok_or_else(|| err(DecodeErrorKind::MissingField("addr")))?;
        validate_addr(&addr).map_err(err)?;
        let service = match raw.service {
            Some(s) if !s.is_empty() && s != service => {
                return Err(err(DecodeErrorKind::ServiceMismatch {
                    value: s,
                    key: service.to_owned(),
                }))
            }
            _ => service.to_owned(),
        };
        let weight = match raw.weight {
            None => DEFAULT_WEIGHT,
            Some(w) => u32::try_from(w).map_err(|_| err(DecodeErrorKind::Weight(w)))?,
        };
        Ok(Self(Arc::new(Fields {
            id,
            service,
            addr,
            version: raw.version.unwrap_or_default(),
            group: raw.group.unwrap_or_default(),
            weight,
            zone: raw.zone.unwrap_or_default(),
            labels: raw.labels.unwrap_or_default(),
        })))
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.0.service, self.0.id, self.0.addr)
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = &*self.0;
        f.debug_struct("Node")
            .field("id", &n.id)
            .field("service", &n.service)
            .field("addr", &n.addr)
            .field("version", &n.version)
            .field("group", &n.group)
            .field("weight", &n.weight)
            .field("zone", &n.zone)
            .field("labels", &n.labels)
            .finish()
    }
}

impl Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// The key prefix that holds every node of `service`: `{prefix}/{service}/`.
///
/// The trailing slash keeps service `echo` from matching `echo2`.
pub fn service_prefix(prefix: &str, service: &str) -> String {
    format!("{}/{}/", prefix.trim_end_matches('/'), service)
}

/// The key of one node: `{prefix}/{service}/{id}`.
pub fn node_key(prefix: &str, service: &str, id: &str) -> String {
    format!("{}{}", service_prefix(prefix, service), id)
}

/// The value as stored, before validation. Unknown fields are ignored.
#[derive(Deserialize)]
struct RawNode {
    id: Option<String>,
    service: Option<String>,
    addr: Option<String>,
    version: Option<String>,
    group: Option<String>,
    weight: Option<i64>,
    zone: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

/// Checks `host:port` (IPv6 hosts in brackets) with a port in 1..=65535.
fn validate_addr(addr: &str) -> Result<(), DecodeErrorKind> {
    let bad = |why: &'static str| DecodeErrorKind::Addr {
        addr: addr.to_owned(),
        why,
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 host must be in brackets"));
    }
    if host.chars().any(char::is_whitespace) {
        return Err(bad("whitespace in host"));
    }
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    if ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        return Err(bad(
            "an unspecified address (every interface) cannot be dialled",
        ));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad("port must be 1..=65535")),
        Ok(_) => Ok(()),
    }
}

/// A registry value that is not a valid node. Names the key it was read from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node value at key `{key}`: {kind}")]
pub struct DecodeError {
    key: String,
    kind: DecodeErrorKind,
}

impl DecodeError {
    pub(crate) fn new(key: String, kind: DecodeErrorKind) -> Self {
        Self { key, kind }
    }

    /// The etcd key whose value was rejected.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What was wrong with it.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.kind
    }
}

/// What was wrong with a registry value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Not UTF-8 JSON of the expected shape.
    #[error("bad JSON: {0}")]
    Json(String),
    /// A required field is absent or empty.
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    /// `addr` is not `host:port` with a port in 1..=65535.
    #[error("bad addr `{addr}`: {why}")]
    Addr {
        /// The address as written.
        addr: String,
        /// Why it was rejected.
        why: &'static str,
    },
    /// `weight` is negative or too large.
    #[error("bad weight {0}: must be 0..=4294967295")]
    Weight(i64),
    /// The value's `id` is not the last segment of its key.
    #[error("value has id `{value}` but the key names node `{key}`")]
    IdMismatch {
        /// The id in the value.
        value: String,
        /// The last segment of the key.
        key: String,
    },
    /// The value is larger than `registry.max_value_bytes`.
    #[error(
        "value of {size} bytes is above the limit of {limit} bytes (registry.max_value_bytes)"
    )]
    TooLarge {
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The value names a service other than the key's.
    #[error("value names service `{value}` but the key is under service `{key}`")]
    ServiceMismatch {
        /// The service in the value.
        value: String,
        /// The service in the key.
        key: String,
    },
}
