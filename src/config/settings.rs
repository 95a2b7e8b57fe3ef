//! The whole configuration: `[registry]`, `[client]`, `[server]`.

use registry_actor::RegistryConfig;
use serde::{Deserialize, Serialize};

use super::Section;

/// Every section of the configuration file, each with its documented defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// `[registry]`: where etcd is and how registrations and watches behave.
    pub registry: RegistryConfig,
}

impl Section for Settings {
    fn validate(&self) -> Result<(), (String, String)> {
        self.registry.validate().map_err(|e| match e {
            registry_actor::Error::Config(v) => (v.key().to_owned(), v.reason().to_owned()),
            other => ("registry".to_owned(), other.to_string()),
        })
    }
}
