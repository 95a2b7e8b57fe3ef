//! [`Strategy`]: how a call becomes attempts, by its configuration name.

use std::fmt;

use tonic::Code;

/// How a call is carried out over the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// One attempt.
    Failfast,
    /// Up to `retries` more attempts, each on a node not yet tried, for
    /// retryable codes only (`UNAVAILABLE`; `RESOURCE_EXHAUSTED` moves on and
    /// honours the server's pushback).
    Failover,
    /// Up to `retries` more attempts on the same node, with backoff.
    Failretry,
    /// The call goes to this many nodes at once; the first success wins and the
    /// other attempts are cancelled.
    Forking(u32),
    /// A first attempt, then another on a new node every `hedging_delay`
    /// until one answers or `max_attempts` are running (gRFC A6 hedging); a
    /// non-fatal code lets the others go on, the first success or fatal code
    /// wins and cancels the rest.
    Hedging,
}

impl Strategy {
    /// Parses a configuration name: `failfast`, `failover`, `failretry`,
    /// `forking` (2 nodes), `forking(K)` or `hedging`.
    ///
    /// # Errors
    ///
    /// A message listing the valid names.
    pub fn parse(name: &str) -> Result<Self, String> {
        let name = name.trim();
        match name {
            "failfast" => return Ok(Self::Failfast),
            "failover" => return Ok(Self::Failover),
            "failretry" => return Ok(Self::Failretry),
            "forking" => return Ok(Self::Forking(2)),
            "hedging" => return Ok(Self::Hedging),
            _ => {}
        }
        if let Some(k) = name
            .strip_prefix("forking(")
            .and_then(|r| r.strip_suffix(')'))
        {
            if let Ok(k) = k.trim().parse::<u32>() {
                if k >= 1 {
                    return Ok(Self::Forking(k));
                }
            }
        }
        Err(format!(
            "unknown strategy `{name}`; expected failfast, failover, failretry, forking, forking(K) \
             or hedging (broadcast and multicast are sent as Broadcast)"
        ))
    }

    /// The configuration name.
    pub fn name(&self) -> String {
        match self {
            Self::Failfast => "failfast".into(),
            Self::Failover => "failover".into(),
            Self::Failretry => "failretry".into(),
            Self::Forking(k) => format!("forking({k})"),
            Self::Hedging => "hedging".into(),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A set of gRPC codes as one word: what a retry asks of the codes it may
/// retry, without a pointer to follow or a count to touch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CodeSet(u32);

impl CodeSet {
    /// The set of `codes`.
    pub(crate) fn of(codes: &[Code]) -> Self {
        Self(codes.iter().fold(0, |set, &c| set | Self::bit(c)))
    }

    /// Whether `code` is in the set.
    pub(crate) fn contains(self, code: Code) -> bool {
        self.0 & Self::bit(code) != 0
    }

    fn bit(code: Code) -> u32 {
        // Codes are 0..=16.
        1u32.checked_shl(code as u32).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_set_holds_exactly_its_codes() {
        let set = CodeSet::of(&[Code::Unavailable, Code::Internal, Code::Unauthenticated]);
        for code in [Code::Unavailable, Code::Internal, Code::Unauthenticated] {
            assert!(set.contains(code), "{code:?}");
        }
        for code in [
            Code::Ok,
            Code::Cancelled,
            Code::ResourceExhausted,
            Code::DataLoss,
        ] {
            assert!(!set.contains(code), "{code:?}");
        }
        assert!(!CodeSet::default().contains(Code::Ok));
    }
}
