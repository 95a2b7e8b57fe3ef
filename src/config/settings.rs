//! The whole configuration: `[registry]`, `[client]`, `[server]`, `[metrics]`.

use cluster_client::ClientConfig;
use registry_actor::config::InvalidValue;
use registry_actor::RegistryConfig;
use serde::{Deserialize, Serialize};
use server_kit::ServerConfig;

use crate::metrics::MetricsConfig;

use super::{ConfigError, ConfigLoader, Section};

/// Every section of the configuration files, each with its documented defaults
/// (`config/default.toml` lists every key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// `[registry]`: where etcd is and how registrations and watches behave.
    pub registry: RegistryConfig,
    /// `[client]`: balancers, selectors, strategies, retries and deadlines, with
    /// `[client.services.NAME]` and `[client.services.NAME.methods.METHOD]` tables.
    pub client: ClientConfig,
    /// `[server]`: listen address, identity in the registry, `[server.rate_limit]`,
    /// `[server.shedding]` and `[server.shutdown]`.
    pub server: ServerConfig,
    /// `[metrics]`: where the Prometheus exposition is served (off by default).
    pub metrics: MetricsConfig,
}

impl Settings {
    /// Loads every layer: the files of `./config` (or `GRPC_CLUSTER_CONFIG_DIR`),
    /// then the `GRPC_CLUSTER__…` variables. The same as
    /// `ConfigLoader::from_env().load()`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the bad key and where it was set.
    pub fn load() -> Result<Self, ConfigError> {
        ConfigLoader::from_env().load()
    }

    /// Connects to etcd with `[registry]` and starts a cluster client with
    /// `[client]` on the current actix arbiter (inside [`crate::run`]).
    ///
    /// # Errors
    ///
    /// An invalid registry or client setting.
    pub async fn connect_client(
        &self,
    ) -> Result<actix::Addr<cluster_client::ClusterClient>, cluster_client::Error> {
        cluster_client::ClusterClient::connect(&self.registry, self.client.clone()).await
    }
}

impl Section for Settings {
    fn validate(&self) -> Result<(), (String, String)> {
        let keyed = |v: InvalidValue| (v.key().to_owned(), v.reason().to_owned());
        match self.registry.validate() {
            Ok(()) => {}
            Err(registry_actor::Error::Config(v)) => return Err(keyed(v)),
            Err(other) => return Err(("registry".to_owned(), other.to_string())),
        }
        match self.client.validate() {
            Ok(()) => {}
            Err(cluster_client::Error::Config(v)) => return Err(keyed(v)),
            Err(other) => return Err(("client".to_owned(), other.to_string())),
        }
        match self.server.validate() {
            Ok(()) => {}
            Err(server_kit::Error::Config(v)) => return Err(keyed(v)),
            Err(other) => return Err(("server".to_owned(), other.to_string())),
        }
        self.metrics.validate().map_err(keyed)
    }
}
