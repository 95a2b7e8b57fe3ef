//! Selectors: which nodes of a service a call may go to (see [`Selector`]).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use registry_actor::Node;
use semver::{Version, VersionReq};

use registry_actor::config::InvalidValue;

use crate::Error;

#[cfg(test)]
mod tests;

/// What to do when no node matches a selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fallback {
    /// Fail the pick with [`Error::NoMatch`], naming the selector and the versions
    /// available.
    Strict,
    /// Pick among all nodes of the service (the default).
    #[default]
    Any,
}

impl Fallback {
    /// The configuration name: `strict` or `any`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Any => "any",
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fallback {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "strict" => Ok(Self::Strict),
            "any" => Ok(Self::Any),
            other => Err(InvalidValue::new(
                "fallback",
                format!("unknown fallback \"{other}\"; expected one of strict, any"),
            )),
        }
    }
}

/// Which nodes a call may go to.
///
/// A [`Selector`] narrows a service's nodes by any of:
///
/// * **version** — exact (`v1`, `1.4.2`: the node's version string must be equal),
///   or a semver range when the text starts with an operator (`=`, `>`, `<`, `~`,
///   `^`, `*`) or holds a comma: `>=1.2, <2`. For ranges a node's version is read
///   leniently: a leading `v` is dropped and missing minor/patch parts are zero
///   (`v1.2` → `1.2.0`); a node whose version is not a version never matches a
///   range;
/// * **group** and **zone** — equal strings;
/// * **labels** — every `k=v` must be present with that value.
///
/// An empty selector matches every node. When nothing matches, the
/// [`Fallback`] decides: `strict` fails the pick with an error naming the selector
/// and the versions available, `any` picks among all nodes.
///
/// A service has a selector in its configuration; a call may bring its own, whose
/// criteria override the service's ones they name ([`Selector::merged_over`]).
///
/// # Examples
///
/// ```
/// use cluster_client::{Fallback, Selector};
/// use registry_actor::Node;
///
/// let selector = Selector::new()
///     .with_version(">=1.2, <2")?
///     .with_label("canary", "false")
///     .with_fallback(Fallback::Strict);
/// let node = Node::new("echo-1", "echo", "127.0.0.1:50051")?
///     .with_version("v1.4")
///     .with_label("canary", "false");
/// assert!(selector.matches(&node));
/// assert!(!selector.matches(&node.clone().with_version("2.0.0")));
/// assert_eq!(selector.to_string(), "version >=1.2, <2, labels canary=false");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Hashable: pickers cache the candidate list of each selector they have seen. A
/// selector keeps a fingerprint of its criteria, computed by the builders, so that
/// finding its cached candidates costs one word's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// A hash of all the fields below; first, so that equality fails fast.
    fingerprint: u64,
    version: Option<VersionMatch>,
    group: Option<String>,
    zone: Option<String>,
    /// Sorted by key, one entry per key.
    labels: Vec<(String, String)>,
    fallback: Option<Fallback>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum VersionMatch {
    Exact(String),
    Range { text: String, req: VersionReq },
}

impl Default for Selector {
    fn default() -> Self {
        Self {
            fingerprint: 0,
            version: None,
            group: None,
            zone: None,
            labels: Vec::new(),
            fallback: None,
        }
        .sealed()
    }
}

impl Hash for Selector {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.fingerprint);
    }
}

impl Selector {
    /// Recomputes the fingerprint after a builder changed a field.
    fn sealed(mut self) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.version.hash(&mut h);
        self.group.hash(&mut h);
        self.zone.hash(&mut h);
        self.labels.hash(&mut h);
        self.fallback.hash(&mut h);
        self.fingerprint = h.finish();
        self
    }

    /// A selector that matches every node.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only nodes of this version: exact, or a semver range such as `>=1.2, <2`
    /// (see [`Selector`]). Default: any version.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSelector`] when the text is empty or looks like a range
    /// but is not a valid one.
    pub fn with_version(mut self, version: &str) -> Result<Self, Error> {
        let text = version.trim();
        if text.is_empty() {
            return Err(Error::InvalidSelector {
                input: version.to_owned(),
                reason: "empty version".to_owned(),
            });
        }
        let is_range = text.contains(',') || text.starts_with(['=', '>', '<', '~', '^', '*']);
        self.version = Some(if is_range {
            let req = VersionReq::parse(text).map_err(|e| Error::InvalidSelector {
                input: version.to_owned(),
                reason: format!("not a semver range: {e}"),
            })?;
            VersionMatch::Range {
                text: text.to_owned(),
                req,
            }
        } else {
            VersionMatch::Exact(text.to_owned())
        });
        Ok(self.sealed())
    }

    /// Only nodes of this group. Default: any group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self.sealed()
    }

    /// Only nodes of this zone. Default: any zone.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self.sealed()
    }

    /// Only nodes with label `key` set to `value` (replaces an earlier value for the
    /// same key). Default: no label required.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.labels.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => self.labels[i].1 = value,
            Err(i) => self.labels.insert(i, (key, value)),
        }
        self.sealed()
    }

    /// Adds a label written as `k=v`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSelector`] when there is no `=` or the key is empty.
    pub fn with_label_pair(self, pair: &str) -> Result<Self, Error> {
        let (k, v) = parse_label(pair).map_err(|reason| Error::InvalidSelector {
            input: pair.to_owned(),
            reason,
        })?;
        Ok(self.with_label(k, v))
    }

    /// What to do when nothing matches. Default: the service's fallback (itself
    /// `any` by default).
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = Some(fallback);
        self.sealed()
    }

    /// The version criterion as written, if any.
    pub fn version(&self) -> Option<&str> {
        self.version.as_ref().map(|v| match v {
            VersionMatch::Exact(s) => s.as_str(),
            VersionMatch::Range { text, .. } => text.as_str(),
        })
    }

    /// The group criterion, if any.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// The zone criterion, if any.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// The required labels, sorted by key.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The fallback, if this selector sets one.
    pub fn fallback(&self) -> Option<Fallback> {
        self.fallback
    }

    /// Whether this selector has no criterion (matches every node).
    pub fn is_empty(&self) -> bool {
        self.version.is_none()
            && self.group.is_none()
            && self.zone.is_none()
            && self.labels.is_empty()
    }

    /// This selector on top of `base`: the criteria this one sets replace those of
    /// `base`, the others (and `base`'s labels for other keys) are kept.
    pub fn merged_over(&self, base: &Selector) -> Selector {
        let mut merged = base.clone();
        if self.version.is_some() {
            merged.version.clone_from(&self.version);
        }
        if self.group.is_some() {
            merged.group.clone_from(&self.group);
        }
        if self.zone.is_some() {
            merged.zone.clone_from(&self.zone);
        }
        for (k, v) in &self.labels {
            merged = merged.with_label(k.clone(), v.clone());
        }
        if self.fallback.is_some() {
            merged.fallback = self.fallback;
        }
        merged.sealed()
    }

    /// Whether `node` matches every criterion.
    pub fn matches(&self, node: &Node) -> bool {
        let parsed = match &self.version {
            Some(VersionMatch::Range { .. }) => parse_version_lenient(node.version()),
            _ => None,
        };
        self.matches_parsed(node, parsed.as_ref())
    }

    /// Whether this selector needs node versions parsed as semver.
    pub(crate) fn needs_semver(&self) -> bool {
        matches!(self.version, Some(VersionMatch::Range { .. }))
    }

    /// [`matches`](Self::matches) with the node's version already parsed (by
    /// [`parse_version_lenient`]), so a picker parses each version once per snapshot.
    pub(crate) fn matches_parsed(&self, node: &Node, parsed: Option<&Version>) -> bool {
        let version_ok = match &self.version {
            None => true,
            Some(VersionMatch::Exact(v)) => node.version() == v,
            Some(VersionMatch::Range { req, .. }) => parsed.is_some_and(|p| req.matches(p)),
        };
        version_ok
            && self.group.as_deref().is_none_or(|g| node.group() == g)
            && self.zone.as_deref().is_none_or(|z| node.zone() == z)
            && self
                .labels
                .iter()
                .all(|(k, v)| node.label(k) == Some(v.as_str()))
    }
}

impl fmt::Display for Selector {
    /// `version >=1.2, <2, group blue, zone a, labels canary=false,tier=1`, or `any`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = self.version() {
            parts.push(format!("version {v}"));
        }
        if let Some(g) = &self.group {
            parts.push(format!("group {g}"));
        }
        if let Some(z) = &self.zone {
            parts.push(format!("zone {z}"));
        }
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            parts.push(format!("labels {}", labels.join(",")));
        }
        if parts.is_empty() {
            f.write_str("any")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Splits `k=v`; the key must not be empty.
pub(crate) fn parse_label(pair: &str) -> Result<(&str, &str), String> {
    let (k, v) = pair
        .split_once('=')
        .ok_or_else(|| format!("label \"{pair}\" is not k=v"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("label \"{pair}\" has an empty key"));
    }
    Ok((k, v.trim()))
}

/// Reads a node's version as semver, leniently: a leading `v`/`V` is dropped and
/// missing minor/patch parts are zero (`v1.2` → `1.2.0`, `2` → `2.0.0`).
/// Pre-release and build parts are kept (`1.2-rc.1` → `1.2.0-rc.1`).
pub(crate) fn parse_version_lenient(text: &str) -> Option<Version> {
    let t = text.trim();
    let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
    if t.is_empty() {
        return None;
    }
    if let Ok(v) = Version::parse(t) {
        return Some(v);
    }
    let split = t.find(['-', '+']).unwrap_or(t.len());
    let (core, rest) = t.split_at(split);
    let parts = core.split('.').count();
    let padded = match parts {
        1 => format!("{core}.0.0{rest}"),
        2 => format!("{core}.0{rest}"),
        _ => return None,
    };
    Version::parse(&padded).ok()
}
