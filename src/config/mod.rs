//! Layered configuration, validated at load and reloadable at run time.
//!
//! Layers, each overriding the one before:
//!
//! 1. `config/default.toml` — the shipped defaults (every key, commented);
//! 2. `config/{GRPC_CLUSTER_ENV}.toml` — when `GRPC_CLUSTER_ENV` is set;
//! 3. `config/local.toml` — machine-local overrides (not committed);
//! 4. environment variables `GRPC_CLUSTER__SECTION__KEY`, e.g.
//!    `GRPC_CLUSTER__REGISTRY__ENDPOINTS=10.0.0.1:2379,10.0.0.2:2379` (lists are
//!    comma-separated) or `GRPC_CLUSTER__SERVER__RATE_LIMIT__RPS=500`.
//!
//! The directory is `./config` unless `GRPC_CLUSTER_CONFIG_DIR` says otherwise. Every
//! file is optional; a key set nowhere takes the default documented in
//! `config/default.toml`. A bad value fails the load with an error naming the key
//! path and where it was set (the file, or the environment).
//!
//! [`Reloadable`] keeps the loaded settings in a `watch` channel and reloads them
//! when a layer file changes (or on [`Reloadable::reload`]); an invalid edit is
//! rejected with a logged error and the previous settings stay in force.
//!
//! # Examples
//!
//! ```no_run
//! use grpc_cluster::config::{ConfigLoader, Settings};
//!
//! let settings: Settings = ConfigLoader::from_env().load()?;
//! println!("etcd at {:?}", settings.registry.endpoints());
//! # Ok::<(), grpc_cluster::config::ConfigError>(())
//! ```

mod loader;
mod reload;
mod settings;

#[cfg(test)]
mod tests;

pub use loader::{ConfigError, ConfigLoader, Section, CONFIG_DIR_VAR, ENV_NAME_VAR, ENV_PREFIX};
pub use reload::Reloadable;
pub use settings::Settings;
