//! Reading the layers and turning their errors into ones that name the culprit.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Map, Source, Value};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

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
    "client.allowed_networks",
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
    /// Top-level tables that belong to the app, not to grpc-cluster.
    app_sections: Vec<String>,
}

impl fmt::Debug for ConfigLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigLoader")
            .field("dir", &self.dir)
            .field("env_name", &self.env_name)
            .field("app_sections", &self.app_sections)
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
            app_sections: Vec::new(),
        }
    }

    /// Declares top-level tables of the same files (and `GRPC_CLUSTER__NAME__…`
    /// variables) as the app's own (default: none): loading grpc-cluster's
    /// sections ignores them instead of refusing them as unknown keys, and
    /// [`load_section`](Self::load_section) reads them.
    ///
    /// ```no_run
    /// use grpc_cluster::config::{ConfigLoader, Settings};
    ///
    /// #[derive(Debug, Default, serde::Deserialize)]
    /// #[serde(default, deny_unknown_fields)]
    /// struct Shop {
    ///     currency: String,
    /// }
    ///
    /// // config/default.toml: [registry] … [server] … [shop] currency = "EUR"
    /// let loader = ConfigLoader::from_env().with_app_sections(["shop"]);
    /// let settings: Settings = loader.load()?;
    /// let shop: Shop = loader.load_section("shop")?;
    /// # Ok::<(), grpc_cluster::config::ConfigError>(())
    /// ```
    pub fn with_app_sections<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.app_sections.extend(names.into_iter().map(Into::into));
        self
    }

    /// Loads the app's own top-level table `name` from the same layers: the
    /// files, then `GRPC_CLUSTER__NAME__KEY` variables. A table set nowhere
    /// deserializes from an empty table (its serde defaults).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key and the file or the environment.
    pub fn load_section<A: DeserializeOwned>(&self, name: &str) -> Result<A, ConfigError> {
        let only = Only {
            config: self.build()?,
            key: name.to_owned(),
        };
        // Through a map keyed by the section, so errors give the full key path
        // (`shop.shelves`) and its file.
        let mut sections: std::collections::BTreeMap<String, A> = Config::builder()
            .add_source(only)
            .build()?
            .try_deserialize()?;
        match sections.remove(name) {
            Some(section) => Ok(section),
            None => Ok(Config::builder().build()?.try_deserialize::<A>()?),
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
        let config = self.ours(self.build()?)?;
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
                .and_then(|c| {
                    self.ours(c)
                        .map_err(|e| config::ConfigError::Message(e.to_string()))
                })
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

    /// Every layer merged; logs the files it read, and warns when the
    /// default directory is missing (every setting then comes from the
    /// defaults and the environment).
    fn build(&self) -> Result<Config, ConfigError> {
        if !self.dir.is_dir() {
            warn!(dir = %self.dir.display(),
                "configuration directory not found: using the defaults and GRPC_CLUSTER__ variables \
                 (set GRPC_CLUSTER_CONFIG_DIR or run from the directory holding config/)");
        }
        let mut builder = Config::builder();
        let mut read = Vec::new();
        for file in self.layer_files() {
            if file.is_file() {
                read.push(file.display().to_string());
            }
            let name = file.to_string_lossy().into_owned();
            builder = builder.add_source(File::new(&name, FileFormat::Toml).required(false));
        }
        info!(dir = %self.dir.display(), files = ?read, "configuration files read");
        Ok(builder.add_source(self.environment()).build()?)
    }

    /// `config` without the app's own sections.
    fn ours(&self, config: Config) -> Result<Config, ConfigError> {
        if self.app_sections.is_empty() {
            return Ok(config);
        }
        let without = Without {
            config,
            keys: self.app_sections.clone(),
        };
        Ok(Config::builder().add_source(without).build()?)
    }
}

/// One top-level table of a configuration, with its values' origins.
#[derive(Debug, Clone)]
struct Only {
    config: Config,
    key: String,
}

impl Source for Only {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        let mut map = self.config.collect()?;
        map.retain(|key, _| *key == self.key);
        Ok(map)
    }
}

/// A configuration with some top-level tables left out (the app's own);
/// every other value keeps its origin.
#[derive(Debug, Clone)]
struct Without {
    config: Config,
    keys: Vec<String>,
}

impl Source for Without {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        let mut map = self.config.collect()?;
        for key in &self.keys {
            map.remove(key);
        }
        Ok(map)
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

#[cfg(test)]
mod tests {
    use registry_actor::testing::Logs;

    use super::*;

    fn loader(dir: PathBuf, dir_given: bool) -> ConfigLoader {
        ConfigLoader {
            dir,
            dir_given,
            env_name: None,
            env_vars: Some(HashMap::new()),
            app_sections: Vec::new(),
        }
    }

    #[test]
    fn a_missing_default_directory_is_warned_about_and_the_files_read_are_logged() {
        let (logs, _guard) = Logs::capture();
        let missing = std::env::temp_dir().join(format!("gc-no-config-{}", std::process::id()));
        let settings: crate::config::Settings =
            loader(missing.clone(), false).load().expect("the defaults");
        assert_eq!(settings, crate::config::Settings::default());
        let text = logs.text();
        assert!(
            text.contains("WARN") && text.contains("configuration directory not found"),
            "{text}"
        );
        assert!(text.contains(&missing.display().to_string()), "{text}");

        let (logs, _guard) = Logs::capture();
        let dir = std::env::temp_dir().join(format!("gc-config-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("default.toml"), "[registry]\n").expect("write");
        let loaded: Result<crate::config::Settings, _> = loader(dir.clone(), true).load();
        let _ = std::fs::remove_dir_all(&dir);
        loaded.expect("loads");
        let text = logs.text();
        assert!(!text.contains("WARN"), "{text}");
        let read = text
            .lines()
            .find(|l| l.contains("configuration files read"))
            .unwrap_or_else(|| panic!("a line naming the files read: {text}"));
        assert!(
            read.contains(&dir.join("default.toml").display().to_string())
                && !read.contains("local.toml"),
            "only the files that exist: {read}"
        );
    }
}
