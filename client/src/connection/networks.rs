//! [`AllowedNetworks`]: the networks (CIDRs) whose nodes a client dials
//! (`client.allowed_networks`).
//!
//! An empty list admits every node. A non-empty list admits a node only when
//! its address is an IP inside one of the networks: a host name is refused,
//! since the address it would resolve to cannot be checked before dialling.
//! IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) count as their IPv4 address.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use registry_actor::config::InvalidValue;

/// The config key, named in errors and logs.
pub(crate) const KEY: &str = "client.allowed_networks";

/// One network: an address and the length of its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare IP (a network of one).
    fn parse(text: &str) -> Result<Self, String> {
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text, None),
        };
        let addr = ip
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("`{text}` is not a CIDR (`10.0.0.0/8`, `fd00::/8`) or an IP"))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("`{text}`: the prefix length must be 0..={max}")),
            },
        };
        let network = Self { addr, prefix };
        if network.masked(addr) != addr {
            return Err(format!(
                "`{text}` has bits set past its prefix; the network is {}/{prefix}",
                network.masked(addr)
            ));
        }
        Ok(network)
    }

    /// `ip` with the bits past this network's prefix cleared.
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::from((u32::from(v4) & mask).to_be_bytes())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::from((u128::from(v6) & mask).to_be_bytes())
            }
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The networks whose nodes a client dials; empty (the default) admits every
/// node.
///
/// # Examples
///
/// ```
/// use cluster_client::AllowedNetworks;
///
/// let allowed = AllowedNetworks::parse(["10.0.0.0/8", "127.0.0.1"])?;
/// assert!(allowed.check("10.1.2.3:50051").is_ok());
/// assert!(allowed.check("127.0.0.1:50051").is_ok());
/// let refused = allowed.check("192.0.2.1:50051").unwrap_err();
/// assert!(refused.contains("client.allowed_networks"));
/// assert!(AllowedNetworks::default().check("echo.internal:50051").is_ok());
/// # Ok::<(), registry_actor::config::InvalidValue>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks(Box<[Network]>);

impl AllowedNetworks {
    /// Parses CIDRs (`10.0.0.0/8`, `fd00::/8`) and bare IPs.
    ///
    /// # Errors
    ///
    /// [`InvalidValue`] naming `client.allowed_networks` and the entry that is
    /// not a CIDR, has a prefix too long for its family, or has bits set past
    /// its prefix.
    pub fn parse<I, S>(networks: I) -> Result<Self, InvalidValue>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        networks
            .into_iter()
            .map(|n| Network::parse(n.as_ref()).map_err(|why| InvalidValue::new(KEY, why)))
            .collect::<Result<Box<[_]>, _>>()
            .map(Self)
    }

    /// Whether the list is empty: every node is admitted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a node at `addr` (`host:port`) may be dialled.
    ///
    /// # Errors
    ///
    /// Why not, naming `client.allowed_networks`: its IP is outside every
    /// network, or it is a host name.
    pub fn check(&self, addr: &str) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        let Ok(sock) = addr.parse::<SocketAddr>() else {
            return Err(format!(
                "`{addr}` is not an IP address and {KEY} ({self}) admits IP addresses only"
            ));
        };
        if self.0.iter().any(|n| n.contains(sock.ip())) {
            Ok(())
        } else {
            Err(format!("{} is outside {KEY} ({self})", sock.ip()))
        }
    }
}

impl fmt::Display for AllowedNetworks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(networks: &[&str]) -> AllowedNetworks {
        AllowedNetworks::parse(networks).expect("valid networks")
    }

    #[test]
    fn an_empty_list_admits_every_node_names_included() {
        let all = AllowedNetworks::default();
        for addr in ["10.0.0.1:1", "[2001:db8::1]:5", "echo.internal:80"] {
            assert_eq!(all.check(addr), Ok(()), "{addr}");
        }
    }

    #[test]
    fn a_node_is_admitted_only_inside_a_network() {
        let list = allowed(&["10.0.0.0/8", "192.168.1.0/24", "fd00::/8", "127.0.0.1"]);
        for addr in [
            "10.0.0.0:1",
            "10.255.255.255:1",
            "192.168.1.7:1",
            "[fd12::1]:1",
            "127.0.0.1:50051",
            "[::ffff:10.1.2.3]:1",
        ] {
            assert_eq!(list.check(addr), Ok(()), "{addr}");
        }
        for addr in [
            "11.0.0.1:1",
            "192.168.2.1:1",
            "127.0.0.2:1",
            "[fe80::1]:1",
            "[::1]:1",
        ] {
            let why = list.check(addr).expect_err(addr);
            assert!(why.contains(KEY) && why.contains("outside"), "{why}");
        }
        let why = list.check("localhost:1").expect_err("a name");
        assert!(
            why.contains("not an IP address") && why.contains(KEY),
            "{why}"
        );
    }

    #[test]
    fn the_widest_and_narrowest_prefixes_hold() {
        let any4 = allowed(&["0.0.0.0/0"]);
        assert_eq!(any4.check("203.0.113.9:1"), Ok(()));
        assert!(any4.check("[2001:db8::1]:1").is_err(), "v4 only");
        let any6 = allowed(&["::/0"]);
        assert_eq!(any6.check("[2001:db8::1]:1"), Ok(()));
        let one = allowed(&["2001:db8::1/128"]);
        assert_eq!(one.check("[2001:db8::1]:1"), Ok(()));
        assert!(one.check("[2001:db8::2]:1").is_err());
    }

    #[test]
    fn bad_entries_are_refused_naming_the_key_and_the_entry() {
        for (entry, says) in [
            ("10.0.0.0/33", "0..=32"),
            ("fd00::/129", "0..=128"),
            ("10.0.0.1/8", "10.0.0.0/8"),
            ("10.0.0.0/x", "prefix"),
            ("ten/8", "not a CIDR"),
            ("", "not a CIDR"),
        ] {
            let err = AllowedNetworks::parse([entry]).expect_err(entry);
            assert_eq!(err.key(), KEY);
            assert!(err.reason().contains(says), "{entry}: {err}");
        }
    }
}
