//! [`ConnectionSettings`]: how a node's channel is made.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use registry_actor::Node;
use tonic::transport::Endpoint;
use tonic::Status;

use super::networks::AllowedNetworks;
use super::tls::ClientTls;

/// How connections to nodes are made. Every setter states its default.
#[derive(Clone)]
pub struct ConnectionSettings {
    connect_timeout: Duration,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    short_connection: bool,
    tls: Option<ClientTls>,
    allow_plaintext_token: bool,
    allowed_networks: AllowedNetworks,
}

impl fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not tonic's own Debug of the TLS settings: it prints the private key.
        f.debug_struct("ConnectionSettings")
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("short_connection", &self.short_connection)
            .field("tls", &self.tls.is_some())
            .field("allow_plaintext_token", &self.allow_plaintext_token)
            .field("allowed_networks", &self.allowed_networks)
            .finish()
    }
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            short_connection: false,
            tls: None,
            allow_plaintext_token: false,
            allowed_networks: AllowedNetworks::default(),
        }
    }
}

impl ConnectionSettings {
    /// Timeout of establishing a connection (default 1 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// HTTP/2 keepalive ping interval and ack timeout (default 30 s and 10 s).
    pub fn with_keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// Connect per call instead of keeping one channel (default off).
    pub fn with_short_connection(mut self, short: bool) -> Self {
        self.short_connection = short;
        self
    }

    /// Connects over TLS with these settings (default `None`: plaintext).
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Lets a bearer token travel in plaintext to non-loopback addresses
    /// (default off).
    pub fn with_allow_plaintext_token(mut self, allow: bool) -> Self {
        self.allow_plaintext_token = allow;
        self
    }

    /// Dials only nodes inside these networks (default: empty, every node).
    /// A picker leaves the others out of its node set.
    pub fn with_allowed_networks(mut self, networks: AllowedNetworks) -> Self {
        self.allowed_networks = networks;
        self
    }

    /// Whether every node may be dialled (`client.allowed_networks` empty):
    /// nothing to check per node.
    pub(crate) fn admits_every_node(&self) -> bool {
        self.allowed_networks.is_empty()
    }

    /// Whether `node` may be dialled; why not, naming
    /// `client.allowed_networks`.
    pub(crate) fn admits(&self, node: &Node) -> Result<(), String> {
        self.allowed_networks.check(node.addr())
    }

    pub(crate) fn short_connection(&self) -> bool {
        self.short_connection
    }

    /// TLS to the nodes, when on.
    pub(crate) fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    /// Whether calls to `node` may carry a bearer token: under TLS, when
    /// plaintext tokens are allowed, or to a node on this host.
    pub(crate) fn token_allowed(&self, node: &Node) -> bool {
        self.tls.is_some() || self.allow_plaintext_token || is_loopback(node.addr())
    }

    /// tonic's endpoint of `node` (for short connections, their health
    /// watches, and probes of a node whose server closed its connection):
    /// its address, TLS when configured, the connect timeout, HTTP/2
    /// keepalive and `TCP_NODELAY`.
    pub(crate) fn endpoint(&self, node: &Node) -> Result<Endpoint, Status> {
        let mut endpoint = Endpoint::from(self.uri(node)?);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.tonic().clone())
                .map_err(|e| unusable(node, &e))?;
        }
        Ok(endpoint
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(false)
            .tcp_nodelay(true))
    }

    /// How long a connection to a node may take to be made.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The URI of `node`: `https://` its address under TLS, else `http://`.
    pub(crate) fn uri(&self, node: &Node) -> Result<http::Uri, Status> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        http::Uri::try_from(format!("{scheme}://{}", node.addr())).map_err(|e| unusable(node, &e))
    }

    /// The HTTP/2 keepalive ping interval and ack timeout.
    pub(crate) fn keepalive(&self) -> (Duration, Duration) {
        (self.keepalive_interval, self.keepalive_timeout)
    }
}

/// The error of a node whose address makes no URI.
fn unusable(node: &Node, e: &dyn fmt::Display) -> Status {
    Status::invalid_argument(format!(
        "node {} has an unusable address `{}`: {e}",
        node.id(),
        node.addr()
    ))
}

/// Whether `addr` (`host:port`) is on this host: a loopback IP or `localhost`.
fn is_loopback(addr: &str) -> bool {
    if let Ok(sock) = addr.parse::<SocketAddr>() {
        return sock.ip().is_loopback();
    }
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || host.eq_ignore_ascii_case("localhost")
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_is_the_loopback_ips_and_localhost() {
        for addr in [
            "127.0.0.1:1",
            "127.9.9.9:80",
            "[::1]:5",
            "localhost:7",
            "LOCALHOST:7",
        ] {
            assert!(is_loopback(addr), "{addr}");
        }
        for addr in [
            "10.0.0.1:1",
            "[::]:5",
            "0.0.0.0:1",
            "example.com:80",
            "[fe80::1]:5",
            "localhost.evil:1",
        ] {
            assert!(!is_loopback(addr), "{addr}");
        }
    }
}
