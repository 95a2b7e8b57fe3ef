//! Connecting to etcd with the settings every long-lived stream needs.

use etcd_client::{Client, ConnectOptions};

use crate::{Error, RegistryConfig};

/// HTTP/2 keepalive towards etcd. A frozen etcd otherwise hangs watch and
/// keepalive streams for ever; etcd cuts clients that ping faster than its
/// `--grpc-keepalive-min-time` (5 s), so 10 s / 5 s is as tight as it goes.
const KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens an etcd client for `config.endpoints()`.
///
/// The connection is lazy: this succeeds while etcd is down and the first request
/// fails instead, so a server started before etcd keeps retrying rather than
/// exiting. No overall request timeout is set on the channel (it would cut watch
/// streams); every unary call of this crate carries its own.
///
/// # Errors
///
/// [`Error::Config`] when the settings are invalid; [`Error::Etcd`] when the client
/// cannot be built from the endpoints.
pub async fn connect(config: &RegistryConfig) -> Result<Client, Error> {
    config.validate()?;
    let tls = config.tls().load("registry.tls")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoints: Vec<String> = config
        .endpoints()
        .iter()
        .map(|e| {
            if e.contains("://") {
                e.clone()
            } else {
                format!("{scheme}://{e}")
            }
        })
        .collect();
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout())
        .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
        .with_keep_alive_while_idle(true);
    if let Some(tls) = tls {
        options = options.with_tls(tls);
    }
    let what = match config.user() {
        Some((user, password)) => {
            options = options.with_user(user, password);
            format!(
                "connect to {:?} as registry.username `{user}`",
                config.endpoints()
            )
        }
        None => format!("connect to {:?}", config.endpoints()),
    };
    Client::connect(endpoints, Some(options))
        .await
        .map_err(|e| Error::etcd(what, e))
}
