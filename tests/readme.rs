//! The README's example blocks (the example binaries, TLS), run as a user
//! pastes them: extracted from README.md, pointed at free ports and a
//! temporary directory, and run by `bash`; every line a block prints is held to
//! the expected output shown below it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::downstream::{Built, Downstream};
use support::faults::EchoProcess;
use support::server_kit::example_path;
use support::{cluster_env_vars, read_repo_file, EtcdServer};
use tokio::process::Command;

/// How long a whole block may take: etcd, two servers, four clients, and
/// the servers' graceful shutdowns.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);

/// The first ``` block of `kind` after `from` in `text`, and where it ends.
fn fenced_block<'a>(text: &'a str, kind: &str, from: usize) -> (&'a str, usize) {
    let open = format!("```{kind}\n");
    let start = text[from..]
        .find(&open)
        .map(|i| from + i + open.len())
        .unwrap_or_else(|| panic!("README.md: no ```{kind} block after byte {from}"));
    let end = text[start..]
        .find("```")
        .map(|i| start + i)
        .unwrap_or_else(|| panic!("README.md: the ```{kind} block is not closed"));
    (&text[start..end], end)
}

/// A loopback port free right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether `line` is `pattern` with each `…` standing for a non-empty run of
/// characters without spaces.
fn matches(pattern: &str, line: &str) -> bool {
    match pattern.split_once('…') {
        None => pattern == line,
        Some((literal, rest)) => {
            let Some(after) = line.strip_prefix(literal) else {
                return false;
            };
            // Try every length of the run, shortest first.
            after
                .char_indices()
                .skip(1)
                .map(|(i, _)| i)
                .chain(std::iter::once(after.len()))
                .take_while(|&i| !after[..i].contains(' '))
                .any(|i| matches(rest, &after[i..]))
        }
    }
}

/// The block as a script for this test: no build step (cargo built the
/// examples), the binaries where cargo put them, private ports, and `dir`
/// instead of the block's directory `placeholder`.
fn script(block: &str, examples: &Path, placeholder: &str, dir: &Path) -> String {
    let body: String = block
        .lines()
        .filter(|l| l.trim() != "cargo build --examples")
        .map(|l| format!("{l}\n"))
        .collect();
    let mut script = body
        .replace(
            "target/debug/examples/",
            &format!("{}/", examples.display()),
        )
        .replace(placeholder, &dir.display().to_string());
    for port in ["2379", "2380", "50051", "50052"] {
        script = script.replace(&format!(":{port}"), &format!(":{}", free_port()));
    }
    script
}

#[tokio::test]
async fn the_readme_example_block_prints_what_the_readme_says() {
    run_block(
        "### The example binaries",
        "/tmp/gc-demo",
        &["echo-1", "echo-2"],
    )
    .await;
}

#[tokio::test]
async fn the_readme_tls_block_makes_certificates_that_work_and_prints_what_it_says() {
    run_block("### TLS", "/tmp/gc-tls", &["echo-tls"]).await;
}

/// Runs the first `sh` block of README section `heading` (its files under
/// `placeholder`), holds what it prints to the `text` block after it, and
/// checks each of `servers` registered and shut down cleanly (its
/// `{placeholder}/{id}.out`).
async fn run_block(heading: &str, placeholder: &str, servers: &[&str]) {
    let readme = read_repo_file("README.md");
    let section = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README.md has no {heading:?} section"));
    let (block, end) = fenced_block(&readme, "sh", section);
    let (expected, _) = fenced_block(&readme, "text", end);

    let name = placeholder.rsplit('/').next().unwrap_or("block");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("gc-readme-{name}-{}", std::process::id()));
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir).expect("temp dir");
    let echo_client = example_path("echo-client");
    let examples = echo_client.parent().expect("examples dir");
    let script = script(block, examples, placeholder, &dir.join("demo"));

    let mut command = Command::new("bash");
    for name in cluster_env_vars() {
        command.env_remove(name);
    }
    let child = command
        .arg("-c")
        .arg(&script)
        // No developer's config/local.toml leaks in.
        .env("GRPC_CLUSTER_CONFIG_DIR", &config_dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("bash runs");
    let group = child.id().expect("running");
    let out = tokio::time::timeout(SCRIPT_DEADLINE, child.wait_with_output()).await;
    let logs =
        |name: &str| std::fs::read_to_string(dir.join("demo").join(name)).unwrap_or_default();
    let Ok(out) = out else {
        // Stop the script's background processes (etcd, servers) too.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .status();
        let _ = std::fs::remove_dir_all(&dir);
        panic!(
            "the README block did not finish within {SCRIPT_DEADLINE:?}:\n{script}\n--- etcd.log ---\n{}",
            logs("etcd.log")
        );
    };
    let out = out.expect("bash ran");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let diagnostics = format!(
        "--- script ---\n{script}\n--- stdout ---\n{printed}\n--- stderr ---\n{}\n--- {}.log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        servers[0],
        logs(&format!("{}.log", servers[0]))
    );
    // The script's own status is `wait`'s for etcd, stopped by a signal: not
    // something the README states. What it states of the servers' files is.
    let server_outputs: Vec<String> = servers
        .iter()
        .map(|id| logs(&format!("{id}.out")))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    for (id, output) in servers.iter().zip(&server_outputs) {
        assert!(
            output.contains(&format!("registered in etcd as {id}\n")),
            "{id}.out: {output}\n{diagnostics}"
        );
        let last = output.lines().rev().nth(1).unwrap_or_default();
        assert!(
            last.starts_with("shutdown on SIGTERM: deregistration key gone from etcd;"),
            "{id}.out ends with the shutdown report (then the totals): {output}\n{diagnostics}"
        );
    }
    let printed: Vec<&str> = printed.lines().collect();
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(
        printed.len(),
        expected.len(),
        "as many lines as the README shows\n{diagnostics}"
    );
    for (line, pattern) in printed.iter().zip(&expected) {
        assert!(
            matches(pattern, line),
            "README says `{pattern}`, printed `{line}`\n{diagnostics}"
        );
    }
}

#[test]
fn the_readme_usage_example_is_examples_quickstart_verbatim() {
    let readme = read_repo_file("README.md");
    let quickstart = read_repo_file("examples/quickstart.rs");
    let section = readme
        .find("## Using it")
        .unwrap_or_else(|| panic!("README.md has no \"## Using it\" section"));
    let (block, _) = fenced_block(&readme, "rust", section);
    assert_eq!(
        block, quickstart,
        "README.md's usage example differs from examples/quickstart.rs"
    );
}

#[test]
fn the_wildcard_stands_for_one_run_without_spaces() {
    assert!(matches("node=echo-… ok", "node=echo-12 ok"));
    assert!(matches("in …, in …)", "in 2.8ms, in 1.9ms)"));
    assert!(!matches("node=echo-… ok", "node=echo- ok"));
    assert!(!matches("a … b", "a x y b"));
    assert!(!matches("exit status 1", "exit status 0"));
}

/// Builds `krate`, printing how long it took and what cargo compiled (a build
/// that reuses the workspace's dependencies compiles the crate alone).
fn build(krate: &Downstream, what: &str) -> Built {
    let built = krate.build();
    println!(
        "{what}: cargo build took {:.1?} and compiled {} package(s): {}",
        built.elapsed,
        built.compiled.len(),
        built.compiled.join(", ")
    );
    assert!(built.ok, "{what} does not build:\n{}", built.stderr);
    built
}

#[tokio::test]
async fn a_crate_depending_only_on_grpc_cluster_builds_the_quickstart_and_gets_replies() {
    let quickstart = read_repo_file("examples/quickstart.rs");
    let krate = Downstream::new(
        "downstream-quickstart",
        r#"grpc-cluster = { path = "{repo}" }"#,
        &[("downstream-quickstart", &quickstart)],
    );
    build(&krate, "a crate with examples/quickstart.rs");

    let etcd = EtcdServer::start().await.expect("etcd");
    let _server = EchoProcess::start(&etcd, "echo-d").await;
    let mut command = Command::new(krate.binary("downstream-quickstart"));
    for name in cluster_env_vars() {
        command.env_remove(name);
    }
    let out = command
        // No ./config there: the defaults, then the environment.
        .current_dir(krate.dir())
        .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", etcd.endpoint())
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the quickstart runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "echo-d answered \"hi\"",
            "echo-d answered \"hi again\" after 1 attempt(s)",
            "echo-d answered \"and again\""
        ],
        "{text}"
    );
}

#[test]
fn the_readme_rust_blocks_build_with_the_dependencies_the_readme_names() {
    let readme = read_repo_file("README.md");
    assert!(
        !readme.contains("```rust,"),
        "README.md: every Rust block is built by this test, none is marked otherwise"
    );
    let serving = readme
        .find("## Serving")
        .unwrap_or_else(|| panic!("README.md has no \"## Serving\" section"));
    let (toml, _) = fenced_block(&readme, "toml", serving);
    let dependencies = toml
        .strip_prefix("[dependencies]\n")
        .unwrap_or_else(|| panic!("README.md's Serving toml block is not a [dependencies] table"))
        .replace("../grpc-cluster", "{repo}");
    let mut blocks = Vec::new();
    let mut from = 0;
    while let Some(at) = readme[from..].find("```rust\n") {
        let (block, end) = fenced_block(&readme, "rust", from + at);
        blocks.push((format!("readme-{}", blocks.len() + 1), block.to_owned()));
        from = end;
    }
    assert!(
        blocks.len() >= 2,
        "the usage example and the server's main: {blocks:#?}"
    );
    let bins: Vec<(&str, &str)> = blocks
        .iter()
        .map(|(name, block)| (name.as_str(), block.as_str()))
        .collect();
    let krate = Downstream::new("downstream-readme", &dependencies, &bins);
    build(&krate, "README.md's Rust blocks");
}

/// The dashboard queries the metric names the crates export, and every one of them.
#[test]
fn the_dashboard_queries_every_exported_metric_and_no_other() {
    use registry_actor::metrics as names;
    let exported = [
        names::CLIENT_CALLS,
        names::CLIENT_ATTEMPTS,
        names::CLIENT_CALL_DURATION,
        names::CLIENT_BUDGET_EXHAUSTED,
        names::CLIENT_THROTTLED,
        names::CLIENT_NODES,
        names::CLIENT_EJECTIONS,
        names::SERVER_REQUESTS,
        names::SERVER_REQUEST_DURATION,
        names::SERVER_RATE_LIMITED,
        names::SERVER_SHED,
        names::SERVER_IN_FLIGHT,
        names::REGISTRATION_UP,
        names::REGISTRY_RECONNECTS,
        names::REGISTRY_RESYNCS,
        names::REGISTRY_DECODE_ERRORS,
    ];
    let text = read_repo_file("dashboards/grpc-cluster.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queried = std::collections::BTreeSet::new();
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("grpc_cluster_") {
                    continue;
                }
                let name = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .filter(|base| base.ends_with("_seconds"))
                    .unwrap_or(word);
                assert!(
                    exported.contains(&name),
                    "panel {:?} queries {word}, which nothing exports",
                    panel["title"]
                );
                queried.insert(name.to_owned());
            }
        }
    }
    for name in exported {
        assert!(queried.contains(name), "no panel shows {name}");
    }
    // The README's table names every metric too.
    let readme = read_repo_file("README.md");
    for name in exported {
        let short = name
            .strip_prefix("grpc_cluster_registry")
            .map(|r| format!("…{r}"));
        assert!(
            readme.contains(name) || short.is_some_and(|s| readme.contains(&s)),
            "the README lists {name}"
        );
    }
}
