use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::*;

/// A nested section shaped like `[server.rate_limit]`, for the loader's own tests.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Doc {
    registry: registry_actor::RegistryConfig,
    outer: Outer,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Outer {
    inner: Inner,
    name: String,
}

impl Default for Outer {
    fn default() -> Self {
        Self {
            inner: Inner::default(),
            name: "default".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Inner {
    rps: u32,
    tags: Vec<String>,
}

impl Section for Doc {
    fn validate(&self) -> Result<(), (String, String)> {
        if self.outer.inner.rps > 1000 {
            return Err((
                "outer.inner.rps".into(),
                format!("{} is above 1000", self.outer.inner.rps),
            ));
        }
        let settings = Settings {
            registry: self.registry.clone(),
            ..Settings::default()
        };
        settings.validate()
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gc-config-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn write(&self, file: &str, body: &str) -> &Self {
        std::fs::write(self.0.join(file), body).expect("write");
        self
    }

    fn loader(&self) -> ConfigLoader {
        ConfigLoader::from_env()
            .with_dir(&self.0)
            .with_env_name(None)
            .with_env_vars(HashMap::new())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's root, found at run time: `CARGO_MANIFEST_DIR` as cargo
/// sets it for the test run, else where the crate was built.
fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The text of the repository file `path`; a failure names its full path.
fn read_repo_file(path: &str) -> String {
    let full = repo_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn no_files_at_all_gives_the_defaults() {
    let dir = Dir::new("empty");
    let doc: Doc = dir.loader().load().expect("defaults load");
    assert_eq!(doc, Doc::default());
}

#[test]
fn each_layer_overrides_the_one_before() {
    let dir = Dir::new("layers");
    dir.write(
        "default.toml",
        "[registry]\nprefix = \"/from-default\"\nlease_ttl = \"4s\"\nrequest_timeout = \"1s\"\n[outer]\nname = \"d\"\n",
    )
    .write("staging.toml", "[registry]\nprefix = \"/from-staging\"\nlease_ttl = \"5s\"\n")
    .write("local.toml", "[registry]\nprefix = \"/from-local\"\n");
    let loader = dir.loader().with_env_name(Some("staging".into()));

    let doc: Doc = loader.load().expect("loads");
    assert_eq!(
        doc.registry.prefix(),
        "/from-local",
        "local beats the env file"
    );
    assert_eq!(
        doc.registry.lease_ttl(),
        Duration::from_secs(5),
        "the env file beats default"
    );
    assert_eq!(
        doc.registry.request_timeout(),
        Duration::from_secs(1),
        "default beats built-in"
    );
    assert_eq!(doc.outer.name, "d");

    let doc: Doc = loader
        .with_env_vars(vars(&[("GRPC_CLUSTER__REGISTRY__PREFIX", "/from-env")]))
        .load()
        .expect("loads");
    assert_eq!(
        doc.registry.prefix(),
        "/from-env",
        "the environment beats every file"
    );
}

#[test]
fn env_vars_override_a_nested_key_and_a_list() {
    let dir = Dir::new("env");
    dir.write("default.toml", "[outer.inner]\nrps = 10\n");
    let doc: Doc = dir
        .loader()
        .with_env_vars(vars(&[
            ("GRPC_CLUSTER__OUTER__INNER__RPS", "250"),
            (
                "GRPC_CLUSTER__REGISTRY__ENDPOINTS",
                "10.0.0.1:2379,10.0.0.2:2379",
            ),
            ("UNRELATED", "x"),
        ]))
        .load()
        .expect("loads");
    assert_eq!(doc.outer.inner.rps, 250);
    assert_eq!(doc.registry.endpoints(), ["10.0.0.1:2379", "10.0.0.2:2379"]);
}

#[test]
fn every_kind_of_bad_value_names_the_key_and_where_it_was_set() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "[outer.inner]\nrps = \"many\"\n",
            "wrong type",
            &["outer.inner.rps", "local.toml"],
        ),
        (
            "[outer.inner]\nrps = -1\n",
            "negative into unsigned",
            &["outer.inner.rps", "local.toml"],
        ),
        (
            "[outer.inner]\nrps = 5000\n",
            "out of range",
            &["outer.inner.rps", "local.toml", "above 1000"],
        ),
        (
            "[registry]\nlease_ttl = \"10\"\n",
            "duration without unit",
            &["lease_ttl", "local.toml", "no unit"],
        ),
        (
            "[registry]\nrequest_timeout = \"3000000000000000h\"\n",
            "a duration no deadline can hold",
            &["request_timeout", "local.toml", "365 days"],
        ),
        (
            "[registry]\nlease_ttl = \"1s\"\n",
            "below the minimum",
            &["registry.lease_ttl", "local.toml"],
        ),
        (
            "[registry]\nendpoints = [\"nohost\"]\n",
            "bad address",
            &["registry.endpoints", "local.toml"],
        ),
        (
            "[registry]\nlease_tll = \"5s\"\n",
            "misspelt key",
            &["lease_tll", "local.toml"],
        ),
        ("[registry\nprefix = 1\n", "broken TOML", &["local.toml"]),
    ];
    for (body, what, needles) in cases {
        let dir = Dir::new("bad");
        dir.write("default.toml", "[registry]\nprefix = \"/ok\"\n")
            .write("local.toml", body);
        let err = dir.loader().load::<Doc>().expect_err(what).to_string();
        for needle in *needles {
            assert!(
                err.contains(needle),
                "{what}: `{err}` should mention `{needle}`"
            );
        }
    }
}

#[test]
fn bad_env_value_names_the_environment() {
    let dir = Dir::new("badenv");
    let err = dir
        .loader()
        .with_env_vars(vars(&[("GRPC_CLUSTER__REGISTRY__LEASE_TTL", "1s")]))
        .load::<Doc>()
        .expect_err("1s is below the minimum")
        .to_string();
    assert!(
        err.contains("registry.lease_ttl") && err.contains("environment"),
        "{err}"
    );
}

#[test]
fn env_errors_name_the_variable_and_numbers_out_of_range_the_range() {
    let dir = Dir::new("envrange");
    let cases = [
        ("-1", "negative into unsigned"),
        ("99999999999", "above the type's maximum"),
    ];
    for (value, what) in cases {
        let err = dir
            .loader()
            .with_env_vars(vars(&[("GRPC_CLUSTER__OUTER__INNER__RPS", value)]))
            .load::<Doc>()
            .expect_err(what)
            .to_string();
        for needle in [
            "outer.inner.rps",
            "GRPC_CLUSTER__OUTER__INNER__RPS",
            "from 0 to 4294967295",
            value,
        ] {
            assert!(
                err.contains(needle),
                "{what}: `{err}` should mention `{needle}`"
            );
        }
    }
    // Out of range in a file: the range, and the file.
    dir.write("local.toml", "[outer.inner]\nrps = -5\n");
    let err = dir
        .loader()
        .load::<Doc>()
        .expect_err("negative")
        .to_string();
    assert!(
        err.contains("from 0 to 4294967295") && err.contains("local.toml"),
        "{err}"
    );
    // A value refused by validation names the variable too.
    let err = Dir::new("envvalid")
        .loader()
        .with_env_vars(vars(&[("GRPC_CLUSTER__REGISTRY__LEASE_TTL", "1s")]))
        .load::<Doc>()
        .expect_err("1s is below the minimum")
        .to_string();
    assert!(err.contains("GRPC_CLUSTER__REGISTRY__LEASE_TTL"), "{err}");
}

#[test]
fn a_config_dir_given_must_exist() {
    let dir = Dir::new("gone");
    let missing = dir.0.join("missing");
    let err = ConfigLoader::from_env()
        .with_dir(&missing)
        .with_env_vars(HashMap::new())
        .load::<Doc>()
        .expect_err("no such directory");
    assert!(matches!(err, ConfigError::NoDir { .. }), "{err}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    // An existing, empty directory is fine: every file is optional.
    assert_eq!(
        dir.loader().load::<Doc>().expect("defaults"),
        Doc::default()
    );
}

#[test]
fn reload_applies_a_valid_edit_and_keeps_the_old_settings_on_an_invalid_one() {
    let dir = Dir::new("reload");
    dir.write("local.toml", "[outer.inner]\nrps = 10\n");
    let settings = Reloadable::<Doc>::load(dir.loader()).expect("first load");
    let mut changes = settings.subscribe();
    assert_eq!(settings.current().outer.inner.rps, 10);
    assert!(!settings.files_changed());

    dir.write("local.toml", "[outer.inner]\nrps = 20\n");
    assert!(settings.files_changed());
    assert_eq!(settings.reload().expect("valid edit").outer.inner.rps, 20);
    assert!(changes.has_changed().expect("open"));
    assert_eq!(changes.borrow_and_update().outer.inner.rps, 20);

    dir.write("local.toml", "[outer.inner]\nrps = 99999\n");
    let err = settings.reload().expect_err("invalid edit").to_string();
    assert!(err.contains("outer.inner.rps"), "{err}");
    assert_eq!(
        settings.current().outer.inner.rps,
        20,
        "the old settings stay in force"
    );
    assert!(!changes.has_changed().expect("open"), "nothing published");
    assert!(
        !settings.files_changed(),
        "the rejected content counts as seen"
    );
}

#[tokio::test]
async fn file_watcher_picks_up_an_edit() {
    let dir = Dir::new("watch");
    dir.write("default.toml", "[outer]\nname = \"one\"\n");
    let settings = std::sync::Arc::new(Reloadable::<Doc>::load(dir.loader()).expect("load"));
    let mut changes = settings.subscribe();
    let watcher = settings.watch_files(Duration::from_millis(20));
    dir.write("default.toml", "[outer]\nname = \"two\"\n");
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("the watcher reloads within a few polls")
        .expect("open");
    assert_eq!(settings.current().outer.name, "two");
    watcher.abort();
}

/// `config/default.toml` is the configuration reference: it must load to exactly
/// the built-in defaults, and name every key the code knows (optional keys as
/// commented examples).
#[test]
fn shipped_default_toml_lists_every_key_with_its_default() {
    let dir = repo_root().join("config");
    let text = read_repo_file("config/default.toml");
    let loader = ConfigLoader::from_env()
        .with_dir(&dir)
        .with_env_name(Some("no-such-environment".into()))
        .with_env_vars(HashMap::new());
    let shipped: Settings = loader.load().expect("default.toml loads and validates");
    let defaults = Settings::default();
    assert_eq!(shipped.registry, defaults.registry);
    assert_eq!(shipped.server, defaults.server);
    assert_eq!(shipped.metrics, defaults.metrics);
    for service in ["", "echo"] {
        let (a, b) = (
            shipped.client.picker_config(service).expect("valid"),
            defaults.client.picker_config(service).expect("valid"),
        );
        assert_eq!(
            (
                a.balancer(),
                a.selector(),
                a.fallback(),
                a.panic_threshold(),
                a.panic_grace()
            ),
            (
                b.balancer(),
                b.selector(),
                b.fallback(),
                b.panic_threshold(),
                b.panic_grace()
            )
        );
        assert_eq!(a.discovery_timeout(), b.discovery_timeout());
        let (a, b) = (a.ejection(), b.ejection());
        assert_eq!(
            (
                a.failures(),
                a.base_time(),
                a.max_time(),
                a.max_share(),
                a.codes()
            ),
            (
                b.failures(),
                b.base_time(),
                b.max_time(),
                b.max_share(),
                b.codes()
            )
        );
        assert_eq!(
            shipped.client.call_policy(service, "Say").expect("valid"),
            defaults.client.call_policy(service, "Say").expect("valid")
        );
    }
    assert_eq!(shipped.client.budget("any"), defaults.client.budget("any"));

    let mut keys = Vec::new();
    leaf_keys(
        "",
        &serde_json::to_value(&defaults).expect("serializable"),
        &mut keys,
    );
    for (key, is_null) in keys {
        let leaf = key.rsplit('.').next().unwrap_or(&key);
        let present = if is_null {
            text.contains(&format!("# {leaf} = "))
        } else {
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{leaf} = ")))
                || text.contains(&format!("[{key}]"))
        };
        assert!(present, "config/default.toml does not document `{key}`");
    }
}

fn leaf_keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, bool)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(&key, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.is_null())),
    }
}

#[test]
fn documented_env_overrides_reach_the_real_sections() {
    let dir = Dir::new("settings-env");
    let settings: Settings = dir
        .loader()
        .with_env_vars(vars(&[
            (
                "GRPC_CLUSTER__REGISTRY__ENDPOINTS",
                "10.0.0.1:2379,10.0.0.2:2379",
            ),
            ("GRPC_CLUSTER__SERVER__RATE_LIMIT__RPS", "500"),
            ("GRPC_CLUSTER__SERVER__SHUTDOWN__DRAIN_TIMEOUT", "3s"),
            ("GRPC_CLUSTER__CLIENT__STRATEGY", "failfast"),
        ]))
        .load()
        .expect("loads");
    assert_eq!(
        settings.registry.endpoints(),
        ["10.0.0.1:2379", "10.0.0.2:2379"]
    );
    assert_eq!(settings.server.rate_limit().rps(), 500);
    assert_eq!(
        settings.server.shutdown().drain_timeout(),
        Duration::from_secs(3)
    );
    assert_eq!(
        settings
            .client
            .call_policy("echo", "Say")
            .expect("valid")
            .strategy(),
        cluster_client::Strategy::Failfast
    );
}

#[test]
fn list_keys_of_the_environment_are_the_real_list_keys() {
    let dir = Dir::new("settings-lists");
    dir.write(
        "default.toml",
        "[server.labels]\ncanary = \"false\"\n\n[client.services.echo]\nlabels = { canary = \"true\" }\n",
    );
    let settings: Settings = dir
        .loader()
        .with_env_vars(vars(&[
            ("GRPC_CLUSTER__CLIENT__RETRY_CODES", "UNAVAILABLE,INTERNAL"),
            ("GRPC_CLUSTER__SERVER__LABELS__ZONE_TAG", "eu"),
            (
                "GRPC_CLUSTER__CLIENT__ALLOWED_NETWORKS",
                "10.0.0.0/8,127.0.0.1",
            ),
        ]))
        .load()
        .expect("loads");
    assert_eq!(
        settings.client.allowed_networks(),
        ["10.0.0.0/8", "127.0.0.1"]
    );
    let codes = settings
        .client
        .call_policy("echo", "Say")
        .expect("valid")
        .retry_codes()
        .to_vec();
    assert_eq!(codes, [tonic::Code::Unavailable, tonic::Code::Internal]);
    let labels = settings.server.labels();
    assert_eq!(labels.get("canary").map(String::as_str), Some("false"));
    assert_eq!(labels.get("zone_tag").map(String::as_str), Some("eu"));
    // Client selector labels are a table too, as the server's.
    let echo = settings.client.picker_config("echo").expect("valid");
    assert_eq!(echo.selector().to_string(), "labels canary=true");
}

#[test]
fn an_allowed_network_that_is_not_a_cidr_fails_the_load_naming_the_key() {
    let dir = Dir::new("settings-networks");
    dir.write(
        "default.toml",
        "[client]\nallowed_networks = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n",
    );
    let err = dir.loader().load::<Settings>().expect_err("host bits set");
    let text = err.to_string();
    assert!(text.contains("client.allowed_networks"), "{text}");
    assert!(text.contains("10.0.0.1/8"), "{text}");
}

/// The README's configuration reference names every key the code knows.
#[test]
fn readme_names_every_key() {
    let readme = read_repo_file("README.md");
    let mut keys = Vec::new();
    leaf_keys(
        "",
        &serde_json::to_value(Settings::default()).expect("serializable"),
        &mut keys,
    );
    for (key, _) in keys {
        let leaf = key.rsplit('.').next().unwrap_or(&key);
        let named = readme.contains(&format!("`{leaf}`")) || readme.contains(&format!("[{key}]"));
        assert!(named, "README.md does not name `{key}`");
    }
}

/// No configuration type shows a secret in its `Debug` output: tokens,
/// passwords and private keys planted in every place they can be set.
#[test]
fn debug_output_of_every_config_type_hides_planted_secrets() {
    const SECRET: &str = "planted-secret-4f9c";
    let dir = Dir::new("settings-secrets");
    dir.write(
        "default.toml",
        &format!(
            "[registry]\nusername = \"root\"\npassword = \"{SECRET}\"\n\
             [client]\ntoken = \"{SECRET}-client\"\n\
             [server]\ntoken = \"{SECRET}-server\"\n\
             [server.auth.callers]\nalice = \"{SECRET}-alice\"\n"
        ),
    );
    let settings: Settings = dir.loader().load().expect("loads");
    assert_eq!(settings.registry.user(), Some(("root", SECRET)));
    assert_eq!(settings.client.token(), Some(&*format!("{SECRET}-client")));

    // A client key: loaded TLS settings must not print it either.
    let ca = registry_actor::testing::TestCa::new(&dir.0, "secrets-ca");
    let leaf = ca.leaf("client", &["localhost"]);
    let key = std::fs::read_to_string(&leaf.key).expect("key");
    let key_line = key.lines().nth(1).expect("a line of the key's body");
    let tls = registry_actor::TlsConfig::default()
        .with_ca_file(&ca.ca_file)
        .with_identity(&leaf.cert, &leaf.key);
    let client = settings.client.clone().with_tls(tls.clone());
    let connection = client.connection_settings().expect("files readable");
    let registry = settings.registry.clone().with_tls(tls);
    let auth_layer =
        server_kit::BearerAuthLayer::with_callers(settings.server.token(), settings.server.auth());
    let builder = server_kit::ServeBuilder::new(settings.server.clone()).registry(registry.clone());

    let outputs = [
        ("Settings", format!("{settings:?}")),
        ("ClientConfig", format!("{client:?}")),
        ("ConnectionSettings", format!("{connection:?}")),
        ("ServerConfig", format!("{:?}", settings.server)),
        ("AuthConfig", format!("{:?}", settings.server.auth())),
        ("RegistryConfig", format!("{registry:?}")),
        ("BearerAuthLayer", format!("{auth_layer:?}")),
        ("ServeBuilder", format!("{builder:?}")),
    ];
    // Secret bytes would print as a list of numbers.
    let as_bytes = format!("{:?}", SECRET.as_bytes());
    let as_bytes = as_bytes.trim_start_matches('[').trim_end_matches(']');
    let key_bytes = format!("{:?}", &key.as_bytes()[40..80]);
    let key_bytes = key_bytes.trim_start_matches('[').trim_end_matches(']');
    for (name, text) in outputs {
        assert!(!text.contains(SECRET), "{name} shows a secret: {text}");
        assert!(
            !text.contains(as_bytes),
            "{name} shows secret bytes: {text}"
        );
        assert!(!text.contains(key_line), "{name} shows the key: {text}");
        assert!(!text.contains(key_bytes), "{name} shows key bytes: {text}");
    }
}

#[test]
fn compound_durations_load_from_files_and_the_environment() {
    let dir = Dir::new("humantime");
    dir.write("default.toml", "[registry]\nlease_ttl = \"1m30s\"\n");
    let doc: Doc = dir.loader().load().expect("loads");
    assert_eq!(doc.registry.lease_ttl(), Duration::from_secs(90));
    let doc: Doc = dir
        .loader()
        .with_env_vars(vars(&[("GRPC_CLUSTER__REGISTRY__LEASE_TTL", "2m 15s")]))
        .load()
        .expect("loads");
    assert_eq!(doc.registry.lease_ttl(), Duration::from_secs(135));
}

/// An app's own section, in the same files as ours.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Shop {
    currency: String,
    shelves: u32,
    restock: Option<String>,
}

#[test]
fn an_apps_own_sections_load_from_the_same_files_beside_ours() {
    let dir = Dir::new("app-sections");
    dir.write(
        "default.toml",
        "[registry]\nprefix = \"/shop\"\n[shop]\ncurrency = \"EUR\"\nshelves = 4\n",
    );
    dir.write("local.toml", "[shop]\nshelves = 6\n");
    let refused = dir
        .loader()
        .load::<Settings>()
        .expect_err("an unknown table");
    assert!(refused.to_string().contains("shop"), "{refused}");

    let loader = dir
        .loader()
        .with_env_vars(vars(&[("GRPC_CLUSTER__SHOP__RESTOCK", "daily")]))
        .with_app_sections(["shop"]);
    let settings: Settings = loader.load().expect("ours, ignoring [shop]");
    assert_eq!(settings.registry.prefix(), "/shop");
    let shop: Shop = loader.load_section("shop").expect("the app's");
    assert_eq!(
        shop,
        Shop {
            currency: "EUR".into(),
            shelves: 6,
            restock: Some("daily".into()),
        },
        "every layer applies to the app's section too"
    );

    dir.write("local.toml", "[shop]\nshelves = \"many\"\n");
    let err = loader
        .load_section::<Shop>("shop")
        .expect_err("a bad value");
    let text = err.to_string();
    assert!(
        text.contains("shelves") && text.contains("local.toml"),
        "{text}"
    );

    let missing: Shop = loader.load_section("absent").expect("defaults");
    assert_eq!(missing, Shop::default());
}
