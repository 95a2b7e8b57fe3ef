//! Zone locality: how a client's own zone narrows the nodes it picks.
//!
//! [`Locality`] says what the client's zone (`client.zone`, or a service's
//! `zone`) does: nothing (`off`), a hard selector (`strict`: only nodes of that
//! zone), or a preference (`prefer`). Under `prefer` ([`ZonePreference`]) the
//! candidates of a pick are the nodes of the client's zone while at least
//! `min_healthy` of them are pickable (not ejected, paused by a pushback,
//! unhealthy or going away); below that, the next zones in priority order are
//! added until the pickable nodes reach `min_healthy` (or every zone is in).
//! The priority order is: the client's zone, then the zones of
//! `zone_priority` in their order, then every other zone by name.
//!
//! The decision is made when the picker builds its snapshot (on every change
//! of the nodes or of their health), never per pick: a node that recovers
//! brings the traffic back at the next snapshot.
//!
//! # Examples
//!
//! ```
//! use cluster_client::{Locality, ZonePreference};
//!
//! assert_eq!("prefer".parse::<Locality>()?, Locality::Prefer);
//! let preference = ZonePreference::new("eu-1")
//!     .with_min_healthy(2)
//!     .with_priority(["eu-2"]);
//! assert_eq!(preference.zone(), "eu-1");
//! assert_eq!(preference.min_healthy(), 2);
//! # Ok::<(), registry_actor::config::InvalidValue>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use registry_actor::config::InvalidValue;
use registry_actor::Node;

#[cfg(test)]
mod tests;

/// What the client's zone does to the nodes a service's calls pick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Locality {
    /// The zone is ignored.
    Off,
    /// Nodes of the zone first; other zones when too few of them are pickable.
    Prefer,
    /// Only nodes of the zone: the zone is a selector (the default).
    #[default]
    Strict,
}

impl Locality {
    /// The configuration name: `off`, `prefer` or `strict`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Prefer => "prefer",
            Self::Strict => "strict",
        }
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Locality {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "off" => Ok(Self::Off),
            "prefer" => Ok(Self::Prefer),
            "strict" => Ok(Self::Strict),
            other => Err(InvalidValue::new(
                "locality",
                format!("unknown locality \"{other}\"; expected one of prefer, strict, off"),
            )),
        }
    }
}

/// The zone preference of a service under [`Locality::Prefer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZonePreference {
    zone: Arc<str>,
    min_healthy: usize,
    priority: Arc<[Arc<str>]>,
}

impl ZonePreference {
    /// Prefers the nodes of `zone`, with `min_healthy` 1 and no priority list.
    pub fn new(zone: impl Into<Arc<str>>) -> Self {
        Self {
            zone: zone.into(),
            min_healthy: 1,
            priority: Arc::from([]),
        }
    }

    /// The pickable nodes the preferred zones must have (default 1); fewer
    /// and the next zone in priority order is added.
    pub fn with_min_healthy(mut self, min_healthy: usize) -> Self {
        self.min_healthy = min_healthy;
        self
    }

    /// The zones to spill over to first, in order (default none); zones not
    /// listed follow by name.
    pub fn with_priority<I, S>(mut self, zones: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        self.priority = zones.into_iter().map(Into::into).collect();
        self
    }

    /// The client's zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The pickable nodes the preferred zones must have.
    pub fn min_healthy(&self) -> usize {
        self.min_healthy
    }

    /// The zones spilled over to first, in order.
    pub fn priority(&self) -> &[Arc<str>] {
        &self.priority
    }

    /// Where `zone` comes in the priority order: (rank, name), smaller first.
    fn rank<'a>(&self, zone: &'a str) -> (usize, &'a str) {
        if zone == &*self.zone {
            return (0, "");
        }
        match self.priority.iter().position(|z| &**z == zone) {
            Some(p) => (p + 1, ""),
            None => (self.priority.len() + 1, zone),
        }
    }

    /// The candidates among `pickable` (indices into `nodes`, all pickable)
    /// that the preference keeps: the nodes of the first zones in priority
    /// order whose count reaches `min_healthy`. `None` when that takes every
    /// zone (the candidates stay as they are).
    pub(crate) fn narrow<N>(&self, nodes: &N, pickable: &[u32]) -> Option<Vec<u32>>
    where
        N: std::ops::Index<usize, Output = Node> + ?Sized,
    {
        let mut zones: Vec<((usize, &str), usize)> = Vec::new();
        for &i in pickable {
            let rank = self.rank(nodes[i as usize].zone());
            match zones.iter_mut().find(|(r, _)| *r == rank) {
                Some((_, count)) => *count += 1,
                None => zones.push((rank, 1)),
            }
        }
        zones.sort_unstable();
        let mut total = 0;
        let mut taken = 0;
        for (_, count) in &zones {
            if total >= self.min_healthy {
                break;
            }
            total += count;
            taken += 1;
        }
        if taken >= zones.len() {
            return None;
        }
        let kept: Vec<(usize, &str)> = zones[..taken].iter().map(|(r, _)| *r).collect();
        Some(
            pickable
                .iter()
                .copied()
                .filter(|&i| kept.contains(&self.rank(nodes[i as usize].zone())))
                .collect(),
        )
    }
}
