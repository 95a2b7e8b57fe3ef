//! This binary run again as a child process, to measure a client alone: the
//! memory and scale sections start a fresh process whose RSS counts nothing
//! the rest of the run allocated. The child prints one line of `key=value`
//! fields for its parent.

use std::time::Duration;

use actix::prelude::*;
use cluster_client::{ClientConfig, ClusterClient};
use registry_actor::RegistryConfig;

use crate::cluster::cluster_client;

/// Runs this binary with `env` set (which makes `main` run that child's job),
/// within `deadline`; the rest of the line starting with `prefix` that it
/// printed.
///
/// # Panics
///
/// When the child cannot start, fails, runs past `deadline` or prints no such
/// line: the section cannot report anything then.
pub(crate) async fn run(env: &[(&str, String)], prefix: &str, deadline: Duration) -> String {
    let exe = std::env::current_exe().expect("current exe");
    let mut command = tokio::process::Command::new(exe);
    command
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    // Not `output()`, which would capture standard error too.
    let child = command.spawn().expect("the child starts");
    let output = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the child ({prefix}) finishes within {deadline:?}"))
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child ({prefix}) failed: {stdout}"
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("the child printed no `{prefix}` line: {stdout}"))
        .to_owned()
}

/// The `key=value` fields of a child's line.
pub(crate) struct Fields<'a>(pub(crate) &'a str);

impl Fields<'_> {
    /// The raw value of `key`, if the line has it.
    pub(crate) fn text(&self, key: &str) -> Option<&str> {
        self.0
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// The value of `key` as a number; `None` when absent or not a number (a
    /// child that could not measure something says so with another value).
    pub(crate) fn number(&self, key: &str) -> Option<f64> {
        self.text(key)?.parse().ok()
    }
}

/// Prints the warnings and errors the client logs (say, why the registry
/// cannot read a service) on standard error, which the parent passes on.
pub(crate) fn log_warnings() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
}

/// The client a child measures: a `ClusterClient` with the default
/// configuration, on the current actix system, of the etcd at `endpoint`.
pub(crate) async fn client(endpoint: &str) -> (RegistryConfig, Addr<ClusterClient>) {
    let registry = RegistryConfig::default().with_endpoints([endpoint]);
    let client = cluster_client(&registry, ClientConfig::default()).await;
    (registry, client)
}
