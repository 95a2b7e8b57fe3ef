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
const LIST_KEYS: &[&str] = &[
    "registry.endpoints",
    "client.retry_codes",
    "client.propagate",
];

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
        /// Where the value came from: a file path, `the environment variable NAME`,
        /// or `the defaults`.
        origin: String,
    },
    /// The configuration directory given does not exist.
    #[error("configuration error: the configuration directory {} does not exist", dir.display())]
    NoDir {
        /// The directory, as given.
        dir: PathBuf,
    },
}

/// Loads the configuration layers: `default.toml`, `{GRPC_CLUSTER_ENV}.toml`,
/// `local.toml`, then `GRPC_CLUSTER__…` variables. See the [module docs](super).
#[derive(Clone)]
pub struct ConfigLoader {
    dir: PathBuf,
    /// Whether `dir` was given (a flag or `GRPC_CLUSTER_CONFIG_DIR`): it must
    /// exist then; the default `./config` may be absent.
    dir_given: bool,
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
        let given = std::env::var_os(CONFIG_DIR_VAR).filter(|d| !d.is_empty());
        Self {
            dir_given: given.is_some(),
            dir: given.map_or_else(|| PathBuf::from("config"), PathBuf::from),
            env_name: std::env::var(ENV_NAME_VAR).ok().filter(|s| !s.is_empty()),
            env_vars: None,
        }
    }

    /// Reads the files of `dir` instead (a `--config-dir` flag); loading fails
    /// when it does not exist.
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self.dir_given = true;
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
    /// [`ConfigError`] naming the key and the file or the environment
    /// variable; [`ConfigError::NoDir`] when the directory given does not exist.
    pub fn load<T: Section>(&self) -> Result<T, ConfigError> {
        if self.dir_given && !self.dir.is_dir() {
            return Err(ConfigError::NoDir {
                dir: self.dir.clone(),
            });
        }
        let config = self.build()?;
        let value: T = match config.clone().try_deserialize() {
            Ok(value) => value,
            Err(e) => return Err(self.locate::<T>(e, &config)),
        };
        if let Err((key, reason)) = value.validate() {
            let origin = origin_of(&config, &key).unwrap_or_else(|| "the defaults".to_owned());
            return Err(self.invalid(key, reason, origin));
        }
        Ok(value)
    }

    /// An [`ConfigError::Invalid`], naming the variable when the value came
    /// from the environment.
    fn invalid(&self, key: String, reason: String, origin: String) -> ConfigError {
        let origin = match self.env_var_of(&key) {
            Some(var) if origin == ENVIRONMENT => format!("{ENVIRONMENT} variable {var}"),
            _ => origin,
        };
        ConfigError::Invalid {
            key,
            reason,
            origin,
        }
    }

    /// The override variable that sets `key` (`client.retries` →
    /// `GRPC_CLUSTER__CLIENT__RETRIES`), as spelt in the environment.
    fn env_var_of(&self, key: &str) -> Option<String> {
        let matches = |name: &str| {
            name.strip_prefix(ENV_PREFIX)
                .and_then(|rest| rest.strip_prefix("__"))
                .is_some_and(|rest| rest.to_lowercase().replace("__", ".") == key)
        };
        match &self.env_vars {
            Some(vars) => vars.keys().find(|name| matches(name)).cloned(),
            None => std::env::vars_os()
                .filter_map(|(name, _)| name.into_string().ok())
                .find(|name| matches(name)),
        }
    }

    /// Turns a deserialization error naming a key into one that also says where
    /// the value was set and, for a number out of range, the allowed range.
    /// Unknown keys, which serde reports against their parent table, are found
    /// by loading each layer alone.
    fn locate<T: Section>(&self, err: config::ConfigError, config: &Config) -> ConfigError {
        let (reason, origin, key) = match err {
            config::ConfigError::At {
                error,
                origin,
                key: Some(key),
            } => (self.reason::<T>(&error, config, &key), origin, key),
            config::ConfigError::Type {
                origin,
                unexpected,
                expected,
                key: Some(key),
            } => {
                let inner = config::ConfigError::Type {
                    origin: None,
                    unexpected,
                    expected,
                    key: None,
                };
                (self.reason::<T>(&inner, config, &key), origin, key)
            }
            other => return ConfigError::Load(other),
        };
        let origin = origin
            .map(|o| normalize_origin(&o))
            .or_else(|| origin_of(config, &key))
            .or_else(|| self.failing_layer::<T>())
            .unwrap_or_else(|| "one of the layers".to_owned());
        self.invalid(key, reason, origin)
    }

    /// Why the value at `key` was refused: for an integer out of its type's
    /// range, that range.
    fn reason<T: Section>(
        &self,
        error: &config::ConfigError,
        config: &Config,
        key: &str,
    ) -> String {
        let config::ConfigError::Type {
            unexpected,
            expected,
            ..
        } = error
        else {
            return error.to_string();
        };
        let got = unexpected.to_string();
        let integer = got.contains("integer `");
        match integer.then(|| integer_range(expected)).flatten() {
            // A negative value for an unsigned key: the error gives no width;
            // ask the key with the largest value for its real range.
            Some(_) if expected.contains("unsigned") && expected.contains("or less") => {
                match self.widest_unsigned::<T>(config, key) {
                    Some(max) => format!("must be a whole number from 0 to {max}; got {got}"),
                    None => format!("must be a whole number, 0 or more; got {got}"),
                }
            }
            Some((min, max)) => format!("must be a whole number from {min} to {max}; got {got}"),
            None => format!("invalid type: {got}, expected {expected}"),
        }
    }

    /// The largest value the unsigned key `key` takes, learnt by loading
    /// `config` with `u64::MAX` there (the error path only).
    fn widest_unsigned<T: Section>(&self, config: &Config, key: &str) -> Option<String> {
        let probe = Config::builder()
            .add_source(config.clone())
            .set_override(key, u64::MAX)
            .ok()?
            .build()
            .ok()?;
        match probe.try_deserialize::<T>() {
            Ok(_) => Some(u64::MAX.to_string()),
            Err(config::ConfigError::Type { expected, .. }) => {
                integer_range(expected).map(|(_, max)| max)
            }
            Err(config::ConfigError::At { error, .. }) => match *error {
                config::ConfigError::Type { expected, .. } => {
                    integer_range(expected).map(|(_, max)| max)
                }
                _ => None,
            },
            Err(_) => None,
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
        env_alone.is_err().then(|| ENVIRONMENT.to_owned())
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
    Some(normalize_origin(origin))
}

/// How errors name the environment layer.
const ENVIRONMENT: &str = "the environment";

/// An origin as errors name it: a file path, or [`ENVIRONMENT`].
fn normalize_origin(origin: &str) -> String {
    if origin.eq_ignore_ascii_case(ENVIRONMENT) || origin.starts_with("env") {
        ENVIRONMENT.to_owned()
    } else {
        origin.to_owned()
    }
}

/// The range of the integer type `expected` names (`an unsigned 32 bit
/// integer`, `an signed 64 bit or less integer`), as the config crate words it.
fn integer_range(expected: &str) -> Option<(String, String)> {
    let bits: u32 = expected
        .split(' ')
        .find_map(|word| word.parse().ok())
        .filter(|bits| (1..=128).contains(bits))?;
    if expected.contains("unsigned") {
        let max = u128::MAX >> (128 - bits);
        Some(("0".to_owned(), max.to_string()))
    } else {
        let max = i128::MAX >> (128 - bits);
        Some(((-max - 1).to_string(), max.to_string()))
    }
}
