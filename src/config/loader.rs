//! Reading the layers and turning their errors into ones that name the culprit.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;

/// Environment variable naming the configuration directory (default `./config`).
pub const CONFIG_DIR_VAR: &str = "GRPC_CLUSTER_CONFIG_DIR";
/// Environment variable naming the environment layer (`config/{name}.toml`).
pub const ENV_NAME_VAR: &str = "GRPC_CLUSTER_ENV";
/// Prefix of the override variables, `GRPC_CLUSTER__SECTION__KEY`.
pub const ENV_PREFIX: &str = "GRPC_CLUSTER";

/// Keys whose environment override is a comma-separated list.
const LIST_KEYS: &[&str] = &["registry.endpoints", "client.retry_codes"];

/// A typed configuration that can check itself after loading.
pub trait Section: DeserializeOwned {
    /// Checks every value. On error, answers the full key path (`server.rate_limit.rps`)
    /// and why the value is wrong.
    ///
    /// # Errors
    ///
    /// `(key path, reason)` of the first bad value.
    fn validate(&self) -> Result<(), (String, String)>;
}

/// A configuration that could not be loaded. Every variant names the culprit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be parsed, or a value has the wrong type or an unknown key;
    /// the message names the key and the file (or the environment).
    #[error("configuration error: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is of the right type but not acceptable.
    #[error("configuration error: `{key}` {reason} (set in {origin})")]
    Invalid {
        /// The full key path.
        key: String,
        /// Why the value is rejected.
        reason: String,
        /// Where the value came from: a file path, `the environment`, or `the defaults`.
        origin: String,
    },
}

/// Loads the configuration layers: `default.toml`, `{GRPC_CLUSTER_ENV}.toml`,
/// `local.toml`, then `GRPC_CLUSTER__…` variables. See the [module docs](super).
#[derive(Clone)]
pub struct ConfigLoader {
    dir: PathBuf,
    env_name: Option<String>,
    env_vars: Option<HashMap<String, String>>,
}

impl fmt::Debug for ConfigLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigLoader")
            .field("dir", &self.dir)
            .field("env_name", &self.env_name)
            .finish_non_exhaustive()
    }
}

impl ConfigLoader {
    /// The directory from `GRPC_CLUSTER_CONFIG_DIR` (default `./config`), the
    /// environment layer from `GRPC_CLUSTER_ENV`, overrides from the process
    /// environment.
    pub fn from_env() -> Self {
        Self {
            dir: std::env::var_os(CONFIG_DIR_VAR)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("config")),
            env_name: std::env::var(ENV_NAME_VAR).ok().filter(|s| !s.is_empty()),
            env_vars: None,
        }
    }

    /// Reads the files of `dir` instead (a `--config-dir` flag).
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }

    /// Uses `config/{name}.toml` as the environment layer (default: the value of
    /// `GRPC_CLUSTER_ENV`, or none).
    pub fn with_env_name(mut self, name: Option<String>) -> Self {
        self.env_name = name;
        self
    }

    /// Takes the override variables from `vars` instead of the process
    /// environment (for tests and embedding).
    pub fn with_env_vars(mut self, vars: HashMap<String, String>) -> Self {
        self.env_vars = Some(vars);
        self
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The layer files in order, whether they exist or not.
    pub fn layer_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.dir.join("default.toml")];
        if let Some(env) = &self.env_name {
            files.push(self.dir.join(format!("{env}.toml")));
        }
        files.push(self.dir.join("local.toml"));
        files
    }

    /// Loads and validates `T` from every layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key and the file or the environment.
    pub fn load<T: Section>(&self) -> Result<T, ConfigError> {
        let config = self.build()?;
        let value: T = match config.clone().try_deserialize() {
            Ok(value) => value,
            Err(e) => return Err(self.locate::<T>(e, &config)),
        };
        if let Err((key, reason)) = value.validate() {
            let origin = origin_of(&config, &key).unwrap_or_else(|| "the defaults".to_owned());
            return Err(ConfigError::Invalid {
                key,
                reason,
                origin,
            });
        }
        Ok(value)
    }

    /// Adds where the value was set to errors that name a key but no origin: those
    /// raised by our own deserializers (a duration without a unit) and unknown
    /// keys, which serde reports against their parent table.
    fn locate<T: Section>(&self, err: config::ConfigError, config: &Config) -> ConfigError {
        let config::ConfigError::At {
            error,
            origin: None,
            key: Some(key),
        } = err
        else {
            return ConfigError::Load(err);
        };
        let origin = origin_of(config, &key).or_else(|| self.failing_layer::<T>());
        match origin {
            Some(origin) => ConfigError::Invalid {
                key,
                reason: error.to_string(),
                origin,
            },
            None => ConfigError::Load(config::ConfigError::At {
                error,
                origin: None,
                key: Some(key),
            }),
        }
    }

    /// The first layer that does not deserialize on its own (the error path only).
    fn failing_layer<T: Section>(&self) -> Option<String> {
        for file in self.layer_files().into_iter().filter(|f| f.exists()) {
            let name = file.to_string_lossy().into_owned();
            let alone = Config::builder()
                .add_source(File::new(&name, FileFormat::Toml))
                .build()
                .and_then(|c| c.try_deserialize::<T>());
            if alone.is_err() {
                return Some(name);
            }
        }
        let env_alone = Config::builder()
            .add_source(self.environment())
            .build()
            .and_then(|c| c.try_deserialize::<T>());
        env_alone.is_err().then(|| "the environment".to_owned())
    }

    fn environment(&self) -> Environment {
        let mut env = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",");
        for key in LIST_KEYS {
            env = env.with_list_parse_key(key);
        }
        if let Some(vars) = &self.env_vars {
            env = env.source(Some(vars.clone().into_iter().collect()));
        }
        env
    }

    fn build(&self) -> Result<Config, ConfigError> {
        let mut builder = Config::builder();
        for file in self.layer_files() {
            let name = file.to_string_lossy().into_owned();
            builder = builder.add_source(File::new(&name, FileFormat::Toml).required(false));
        }
        Ok(builder.add_source(self.environment()).build()?)
    }
}

/// Where the value at `key` was set: a file path or `the environment`.
fn origin_of(config: &Config, key: &str) -> Option<String> {
    // Tables hand out their values with origins; a plain `get` does not.
    let (parent, leaf) = key.rsplit_once('.')?;
    let table = config.get_table(parent).ok()?;
    let origin = table.get(leaf)?.origin()?;
    Some(
        if origin.eq_ignore_ascii_case("the environment") || origin.starts_with("env") {
            "the environment".to_owned()
        } else {
            origin.to_owned()
        },
    )
}
