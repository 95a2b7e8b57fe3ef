//! The example binaries as a user runs them: `echo-server` processes registered
//! in a private etcd, and `echo-client` with every strategy.

mod support;

use std::process::{Output, Stdio};

use registry_actor::etcd_client::GetOptions;
use support::exposition::{free_port, scrape, Exposition};
use support::server_kit::example_path;
use support::{wait_until, EtcdServer, EVENTUALLY};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// An `echo-server` process, killed if still running when dropped.
struct Server {
    _child: Child,
}

async fn start_server(etcd: &str, id: &str, version: &str, group: &str) -> Server {
    start_server_with(etcd, id, &["--version", version, "--group", group]).await
}

/// Starts `echo-server --id ID --listen 127.0.0.1:0 EXTRA…`.
async fn start_server_with(etcd: &str, id: &str, extra: &[&str]) -> Server {
    let mut child = Command::new(example_path("echo-server"))
        .args(["--id", id, "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", etcd)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("echo-server starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(EVENTUALLY, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("listening on") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "{id} printed its listening line");
    Server { _child: child }
}

/// Waits until `count` echo servers are registered in `etcd`.
async fn wait_registered(etcd: &EtcdServer, count: usize) {
    let raw = etcd.client().await.expect("etcd client");
    let registered = wait_until(EVENTUALLY, || {
        let mut raw = raw.clone();
        async move {
            raw.get(
                "/grpc-cluster/services/echo/",
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .is_ok_and(|r| r.kvs().len() == count)
        }
    })
    .await;
    assert!(registered, "the {count} servers registered");
}

/// Runs `echo-client ARGS` against `etcd` and answers its output.
async fn echo_client(etcd: &str, args: &[&str]) -> Output {
    Command::new(example_path("echo-client"))
        .args(args)
        .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", etcd)
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .output()
        .await
        .expect("echo-client runs")
}

fn lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Checks one line per call, `call N: node=ID latency=… attempts=K ok …`, and the
/// summary.
fn assert_calls(output: &Output, count: usize, what: &str) {
    let lines = lines(output);
    assert_eq!(
        lines.len(),
        count + 1,
        "{what}: one line per call and a summary: {lines:#?}"
    );
    for (i, line) in lines[..count].iter().enumerate() {
        assert!(
            line.starts_with(&format!("call {}: node=echo-", i + 1)),
            "{what}: {line}"
        );
        assert!(
            line.contains(" latency=") && line.contains(" ok message="),
            "{what}: {line}"
        );
    }
    assert_eq!(lines[count], format!("ok={count} failed=0"), "{what}");
    assert!(
        output.status.success(),
        "{what}: exit status {:?}",
        output.status
    );
}

/// Checks one line per node, `node=ID latency=… ok …`, and the summary.
fn assert_nodes(output: &Output, nodes: &[&str], what: &str) {
    let lines = lines(output);
    assert_eq!(
        lines.len(),
        nodes.len() + 1,
        "{what}: one line per node and a summary: {lines:#?}"
    );
    for (line, node) in lines.iter().zip(nodes) {
        assert!(
            line.starts_with(&format!("node={node} latency=")),
            "{what}: {line}"
        );
        assert!(line.contains(" ok message="), "{what}: {line}");
    }
    assert_eq!(
        lines[nodes.len()],
        format!("ok={} failed=0", nodes.len()),
        "{what}"
    );
    assert!(
        output.status.success(),
        "{what}: exit status {:?}",
        output.status
    );
}

#[tokio::test]
async fn echo_client_prints_one_line_per_call_or_node_for_every_strategy() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let endpoint = etcd.endpoint();
    let _servers = [
        start_server(&endpoint, "echo-1", "1.0.0", "blue").await,
        start_server(&endpoint, "echo-2", "1.0.0", "blue").await,
        start_server(&endpoint, "echo-3", "2.0.0", "green").await,
    ];
    wait_registered(&etcd, 3).await;

    for strategy in ["failfast", "failover", "failretry", "forking", "forking(3)"] {
        let out = echo_client(&endpoint, &["--strategy", strategy, "--count", "3"]).await;
        assert_calls(&out, 3, strategy);
    }
    let out = echo_client(
        &endpoint,
        &[
            "--method",
            "slow",
            "--delay-ms",
            "10",
            "--count",
            "4",
            "--concurrency",
            "2",
        ],
    )
    .await;
    assert_calls(&out, 4, "slow, 2 at a time");

    // The same calls through the generated client over a ClusterChannel.
    for strategy in ["failfast", "failover", "forking(2)"] {
        let args = ["--api", "stub", "--strategy", strategy, "--count", "3"];
        let out = echo_client(&endpoint, &args).await;
        assert_calls(&out, 3, &format!("stub {strategy}"));
    }
    let args = [
        "--api",
        "stub",
        "--method",
        "count",
        "--replies",
        "4",
        "--delay-ms",
        "1",
    ];
    let out = echo_client(&endpoint, &args).await;
    assert_calls(&out, 1, "stub count");
    assert!(
        lines(&out)[0].contains(r#"ok message=["hello 1", "hello 2", "hello 3", "hello 4"]"#),
        "{:?}",
        lines(&out)
    );
    let out = echo_client(&endpoint, &["--method", "count"]).await;
    assert_eq!(out.status.code(), Some(2), "a Call cannot stream");

    let out = echo_client(&endpoint, &["--strategy", "broadcast"]).await;
    assert_nodes(&out, &["echo-1", "echo-2", "echo-3"], "broadcast");
    let out = echo_client(&endpoint, &["--strategy", "multicast", "--group", "blue"]).await;
    assert_nodes(&out, &["echo-1", "echo-2"], "multicast to blue");
    let out = echo_client(
        &endpoint,
        &["--strategy", "multicast", "--version", ">=2, <3"],
    )
    .await;
    assert_nodes(&out, &["echo-3"], "multicast to 2.x");

    // A multicast whose selector matches nothing fails, whatever the unicast
    // fallback says, and names what exists.
    let out = Command::new(example_path("echo-client"))
        .args(["--strategy", "multicast", "--version", ">=9"])
        .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", &endpoint)
        .env("GRPC_CLUSTER__CLIENT__FALLBACK", "any")
        .env("RUST_LOG", "error")
        .output()
        .await
        .expect("echo-client runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("ok message="), "no node was called: {text}");
    for exists in ["1.0.0", "2.0.0", "blue", "green"] {
        assert!(text.contains(exists), "names {exists}: {text}");
    }

    // A failing call: its line names the code and every attempt; exit status 1.
    let out = echo_client(&endpoint, &["--method", "fail", "--strategy", "failover"]).await;
    let text = lines(&out);
    assert!(
        text[0].starts_with("call 1: node=echo-")
            && text[0].contains("failed")
            && text[0].contains("Unavailable"),
        "{text:?}"
    );
    assert_eq!(text.last().map(String::as_str), Some("ok=0 failed=1"));
    assert_eq!(out.status.code(), Some(1));

    // A bad flag: exit status 2 and the usage.
    let out = echo_client(&endpoint, &["--strategy", "sometimes"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown strategy"));
    let out = echo_client(&endpoint, &["--strategy", "multicast"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "multicast without a selector is refused"
    );
}

/// Runs `echo-client ARGS` with no etcd configured.
async fn run_echo_client(args: &[&str]) -> Output {
    Command::new(example_path("echo-client"))
        .args(args)
        .output()
        .await
        .expect("echo-client runs")
}

/// Runs example `name` against `etcd`; answers its stdout once it exited 0.
async fn run_example_ok(name: &str, etcd: &str) -> String {
    let out = Command::new(example_path(name))
        .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", etcd)
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name}: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test]
async fn tokio_app_calls_through_a_spawned_client() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let endpoint = etcd.endpoint();
    let _server = start_server(&endpoint, "echo-t", "1.0.0", "blue").await;
    let text = run_example_ok("tokio-app", &endpoint).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        (0..3)
            .map(|i| format!("echo-t answered \"hello {i}\""))
            .collect::<Vec<_>>(),
        "{text}"
    );
}

#[tokio::test]
async fn the_demo_runs_every_section_and_exits_0_only_when_every_check_held() {
    let out = Command::new(example_path("demo"))
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .output()
        .await
        .expect("demo runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let checks: Vec<&str> = text.lines().filter(|l| l.contains("check: ")).collect();
    assert_eq!(
        checks.len(),
        15,
        "every section checks what it shows:\n{text}"
    );
    let failed: Vec<&&str> = checks.iter().filter(|l| l.ends_with("FAILED")).collect();
    assert_eq!(
        out.status.success(),
        failed.is_empty(),
        "exit status 0 exactly when no check failed: {failed:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(failed.is_empty(), "{text}");
    assert!(text.contains("every check held."), "{text}");
}

#[tokio::test]
async fn echo_client_help_describes_every_flag_and_an_unknown_flag_is_named() {
    let out = run_echo_client(&["--help"]).await;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--service",
        "--method",
        "--api",
        "--replies",
        "--strategy",
        "--balancer",
        "--version",
        "--group",
        "--count",
        "--concurrency",
        "--message",
        "--delay-ms",
        "--timeout-ms",
        "--config-dir",
        "--metrics-file",
    ] {
        assert!(help.contains(flag), "--help describes {flag}: {help}");
    }
    let strategies =
        "failfast, failover, failretry, forking, forking(K), hedging, broadcast, multicast";
    assert!(help.contains(strategies), "{help}");

    let out = run_echo_client(&["--bogus"]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown flag `--bogus`"), "{stderr}");

    // The strategy error lists the same strategies as the help.
    let out = run_echo_client(&["--strategy", "sometimes"]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(strategies), "{stderr}");
}

#[tokio::test]
async fn echo_client_with_etcd_unreachable_names_the_endpoint() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let out = Command::new(example_path("echo-client"))
        .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", &endpoint)
        .env("GRPC_CLUSTER__CLIENT__DISCOVERY_TIMEOUT", "1s")
        .env("RUST_LOG", "off")
        .kill_on_drop(true)
        .output()
        .await
        .expect("echo-client runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("not discovered") && text.contains(&endpoint),
        "the error names etcd's address {endpoint}: {text}"
    );
    assert!(
        text.contains(&format!("(last error: etcd get /grpc-cluster/services/echo/ at {endpoint} failed: connection refused)")),
        "the error names etcd's last failure: {text}"
    );
    for line in text.lines() {
        assert!(line.chars().count() < 400, "one short line: {line}");
    }
}

#[tokio::test]
async fn echo_server_exits_2_on_a_bad_flag_and_1_on_a_bad_configuration() {
    let out = Command::new(example_path("echo-server"))
        .args(["--weight", "heavy"])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(example_path("echo-server"))
        .args(["--id", "x"])
        .env("GRPC_CLUSTER__REGISTRY__LEASE_TTL", "1s")
        .stdout(Stdio::null())
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("registry.lease_ttl") && stderr.contains("environment"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_client_started_while_etcd_is_down_calls_the_servers_in_its_snapshot_file() {
    let mut etcd = EtcdServer::start().await.expect("etcd");
    let endpoint = etcd.endpoint();
    let _servers = [
        start_server(&endpoint, "echo-1", "1.0.0", "blue").await,
        start_server(&endpoint, "echo-2", "1.0.0", "blue").await,
    ];
    let dir = std::env::temp_dir().join(format!("gc-cold-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("nodes.json");
    let run = |args: &'static [&'static str]| {
        Command::new(example_path("echo-client"))
            .args(args)
            .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", &endpoint)
            .env("GRPC_CLUSTER__REGISTRY__SNAPSHOT_FILE", &file)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output()
    };
    let listed = |text: &str| ["echo-1", "echo-2"].map(|id| text.contains(&format!("\"{id}\"")));

    // A first run with etcd up, once both servers are registered, leaves
    // both in the file.
    wait_registered(&etcd, 2).await;
    let first = run(&["--count", "2"]).await.expect("echo-client runs");
    assert_calls(&first, 2, "etcd up");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    assert_eq!(
        listed(&text),
        [true, true],
        "{} lists both servers: {text}",
        file.display()
    );

    // etcd goes down; the servers stay up. A new client process starts.
    etcd.stop();
    let out = run(&["--count", "4", "--strategy", "failover"])
        .await
        .expect("echo-client runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert_calls(&out, 4, "etcd down, nodes from the snapshot file");
    let answered = lines(&out);
    for id in ["echo-1", "echo-2"] {
        assert!(
            answered.iter().any(|l| l.contains(&format!("node={id} "))),
            "{id} answered: {answered:#?}"
        );
    }
    assert!(
        stderr.contains("serving the service from the snapshot file")
            && stderr.contains(&file.display().to_string())
            && stderr.contains(&endpoint),
        "the client says where its nodes come from, and why: {stderr}"
    );
}

#[tokio::test]
async fn the_examples_export_the_metrics_of_their_calls() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let endpoint = etcd.endpoint();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let _server = start_server_with(&endpoint, "m-1", &["--metrics-listen", &metrics_addr]).await;
    let file =
        std::env::temp_dir().join(format!("echo-client-metrics-{}.prom", std::process::id()));
    let path = file.to_str().expect("utf-8 temp dir");
    let out = echo_client(&endpoint, &["--count", "5", "--metrics-file", path]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = std::fs::read_to_string(&file).expect("the client wrote its metrics");
    let _ = std::fs::remove_file(&file);
    let client = Exposition::parse(&text);
    let say = [
        ("service", "echo"),
        ("method", "/echo.v1.Echo/Say"),
        ("code", "OK"),
    ];
    assert_eq!(
        client.value("grpc_cluster_client_calls_total", &say),
        Some(5.0),
        "{text}"
    );

    let addr = metrics_addr.parse().expect("addr");
    let mut served = Exposition::default();
    let seen = wait_until(EVENTUALLY, || {
        served = Exposition::parse(&scrape(addr).1);
        let requests = served.value(
            "grpc_cluster_server_requests_total",
            &[("method", "/echo.v1.Echo/Say"), ("code", "OK")],
        );
        std::future::ready(requests == Some(5.0))
    })
    .await;
    assert!(seen, "the server counts the 5 calls: {served:?}");
    assert_eq!(
        served.value(
            "grpc_cluster_registration_up",
            &[("service", "echo"), ("node", "m-1")]
        ),
        Some(1.0)
    );
}
