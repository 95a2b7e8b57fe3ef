//! [`ConnectionSettings`]: how a node's channel is made.

use std::time::Duration;

use registry_actor::Node;
use tonic::transport::Endpoint;
use tonic::Status;

/// How connections to nodes are made. Every setter states its default.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    connect_timeout: Duration,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    short_connection: bool,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            short_connection: false,
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

    pub(crate) fn short_connection(&self) -> bool {
        self.short_connection
    }

    pub(crate) fn endpoint(&self, node: &Node) -> Result<Endpoint, Status> {
        let endpoint = Endpoint::from_shared(format!("http://{}", node.addr())).map_err(|e| {
            Status::invalid_argument(format!(
                "node {} has an unusable address `{}`: {e}",
                node.id(),
                node.addr()
            ))
        })?;
        Ok(endpoint
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(false)
            .tcp_nodelay(true))
    }
}
