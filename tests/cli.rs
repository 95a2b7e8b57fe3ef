//! The `grpc-cluster` operator binary against a real etcd and real servers.

mod support;

use std::process::{Output, Stdio};

use grpc_cluster::registry::etcd_client::{Client, PutOptions, Txn, TxnOp};
use grpc_cluster::server::{ServeBuilder, ServerTlsConfig, REGISTRATION_HEALTH};
use serde_json::Value;
use support::server_kit::{echo_config, key_exists, start_echo};
use support::{init_tracing, wait_until, EtcdServer, EVENTUALLY};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const PREFIX: &str = "/grpc-cluster/services";

/// `grpc-cluster ARGS` against `etcd`.
fn cli(etcd: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_grpc-cluster"));
    command
        .args(["--endpoints", etcd])
        .env_remove("GRPC_CLUSTER__REGISTRY__ENDPOINTS")
        .kill_on_drop(true);
    command
}

async fn run(etcd: &str, args: &[&str]) -> Output {
    cli(etcd)
        .args(args)
        .output()
        .await
        .expect("grpc-cluster runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}): {}", stdout(output)))
}

/// The line of `text` whose first column is `id`.
fn row<'a>(text: &'a str, id: &str) -> Vec<&'a str> {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&id))
        .unwrap_or_else(|| panic!("a row for {id} in:\n{text}"))
}

/// Starts `grpc-cluster ARGS` (a `watch`) and returns once it announced on
/// stderr that its watch is open.
async fn start_watch(etcd: &str, args: &[&str]) -> tokio::process::Child {
    let mut watch = cli(etcd)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch starts");
    let mut notes = BufReader::new(watch.stderr.take().expect("piped")).lines();
    let watching = tokio::time::timeout(EVENTUALLY, async {
        while let Ok(Some(line)) = notes.next_line().await {
            if line.contains("watching") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(watching, Ok(true), "watch announces its start");
    watch
}

/// Three keys of service `echo` as other tools write them: one with a lease
/// of 60 s, one static, one malformed.
async fn seed(kv: &mut Client) {
    let lease = kv.lease_grant(60, None).await.expect("lease").id();
    kv.put(
        format!("{PREFIX}/echo/echo-1"),
        r#"{"id":"echo-1","addr":"127.0.0.1:50051","version":"v1","group":"blue","zone":"z1","weight":7,"labels":{"canary":"true"}}"#,
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("put leased");
    kv.put(
        format!("{PREFIX}/echo/echo-2"),
        r#"{"id":"echo-2","addr":"127.0.0.1:50052"}"#,
        None,
    )
    .await
    .expect("put static");
    kv.put(format!("{PREFIX}/echo/bad"), "{not json", None)
        .await
        .expect("put malformed");
    kv.put(
        format!("{PREFIX}/other/o-1"),
        r#"{"id":"o-1","addr":"127.0.0.1:6000"}"#,
        None,
    )
    .await
    .expect("put other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_lists_fields_and_lease_ttls_and_flags_the_malformed_key() {
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let endpoint = etcd.endpoint();
    seed(&mut etcd.client().await.expect("client")).await;

    let out = run(&endpoint, &["nodes", "echo"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let leased = row(&text, "echo-1");
    assert_eq!(
        leased[..7],
        [
            "echo-1",
            "127.0.0.1:50051",
            "v1",
            "blue",
            "z1",
            "7",
            "canary=true"
        ],
        "{text}"
    );
    let ttl: u64 = leased[7]
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a TTL in seconds: {text}"));
    assert!((1..=60).contains(&ttl), "{text}");
    assert_eq!(
        row(&text, "echo-2"),
        [
            "echo-2",
            "127.0.0.1:50052",
            "-",
            "-",
            "-",
            "100",
            "-",
            "static"
        ]
    );
    assert_eq!(row(&text, "bad")[1], "MALFORMED", "{text}");
    assert!(
        text.contains(&format!("MALFORMED {PREFIX}/echo/bad: bad JSON")),
        "the reason is given: {text}"
    );

    let out = run(&endpoint, &["--json", "nodes", "echo"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    let nodes = doc["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{doc}");
    let by_key = |id: &str| {
        nodes
            .iter()
            .find(|n| n["key"] == format!("{PREFIX}/echo/{id}"))
            .unwrap_or_else(|| panic!("{id} in {doc}"))
    };
    let leased = by_key("echo-1");
    assert_eq!(leased["node"]["version"], "v1");
    assert_eq!(leased["node"]["weight"], 7);
    assert_eq!(leased["node"]["labels"]["canary"], "true");
    assert_eq!(leased["static"], false);
    let ttl = leased["lease"]["ttl_secs"].as_i64().expect("ttl");
    assert!((1..=60).contains(&ttl), "{leased}");
    assert_eq!(by_key("echo-2")["static"], true);
    let bad = by_key("bad");
    assert!(
        bad["malformed"]
            .as_str()
            .is_some_and(|m| m.contains("bad JSON")),
        "{bad}"
    );

    let out = run(&endpoint, &["--json", "services"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    let services: Vec<(String, u64)> = doc["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap_or("").to_owned(),
                s["keys"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(services, [("echo".to_owned(), 3), ("other".to_owned(), 1)]);
    let out = run(&endpoint, &["services"]).await;
    assert_eq!(row(&stdout(&out), "echo"), ["echo", "3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_deregister_round_trip_and_watch_prints_both() {
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let endpoint = etcd.endpoint();
    let mut kv = etcd.client().await.expect("client");
    let key = format!("{PREFIX}/echo/static-1");

    let watch = start_watch(&endpoint, &["watch", "echo", "--count", "2"]).await;

    let out = run(
        &endpoint,
        &[
            "register",
            "echo",
            "--id",
            "static-1",
            "--addr",
            "127.0.0.1:7001",
            "--version",
            "v2",
            "--label",
            "tier=gold",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(key_exists(&mut kv, &key).await, "registered in etcd");
    let stored = kv.get(key.as_str(), None).await.expect("get");
    let stored = stored.kvs().first().expect("a value");
    assert_eq!(stored.lease(), 0, "a static node has no lease");
    let value: Value = serde_json::from_slice(stored.value()).expect("json value");
    assert_eq!(value["addr"], "127.0.0.1:7001");
    assert_eq!(value["labels"]["tier"], "gold");

    let again = run(
        &endpoint,
        &[
            "register",
            "echo",
            "--id",
            "static-1",
            "--addr",
            "127.0.0.1:7002",
        ],
    )
    .await;
    assert!(
        !again.status.success(),
        "a second register without --replace fails"
    );
    assert!(stderr(&again).contains("--replace"), "{}", stderr(&again));

    let out = run(&endpoint, &["deregister", "echo", "static-1"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!key_exists(&mut kv, &key).await, "deregistered from etcd");

    let watched = tokio::time::timeout(EVENTUALLY, watch.wait_with_output())
        .await
        .expect("watch stops after 2 changes")
        .expect("watch output");
    assert!(watched.status.success());
    let lines: Vec<String> = stdout(&watched).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("added static-1 127.0.0.1:7001 version=v2")
            && lines[0].ends_with("static"),
        "{lines:?}"
    );
    assert!(lines[1].ends_with("removed static-1"), "{lines:?}");

    let missing = run(&endpoint, &["deregister", "echo", "static-1"]).await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no node `static-1`"),
        "{}",
        stderr(&missing)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_validates_as_the_registry_does_and_refuses_a_servers_node() {
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let endpoint = etcd.endpoint();
    let mut kv = etcd.client().await.expect("client");
    let bad = run(
        &endpoint,
        &["register", "echo", "--id", "x", "--addr", "127.0.0.1:0"],
    )
    .await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("port must be 1..=65535"),
        "{}",
        stderr(&bad)
    );
    assert!(!key_exists(&mut kv, &format!("{PREFIX}/echo/x")).await);

    seed(&mut kv).await;
    let leased = run(&endpoint, &["deregister", "echo", "echo-1"]).await;
    assert_eq!(leased.status.code(), Some(1));
    assert!(
        stderr(&leased).contains("kept by a running server"),
        "{}",
        stderr(&leased)
    );
    assert!(key_exists(&mut kv, &format!("{PREFIX}/echo/echo-1")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_json_prints_one_object_per_change() {
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let endpoint = etcd.endpoint();
    let watch = start_watch(&endpoint, &["--json", "watch", "echo", "--count", "2"]).await;
    let mut kv = etcd.client().await.expect("client");
    kv.put(format!("{PREFIX}/echo/bad"), "{not json", None)
        .await
        .expect("put");
    kv.delete(format!("{PREFIX}/echo/bad"), None)
        .await
        .expect("delete");
    let out = tokio::time::timeout(EVENTUALLY, watch.wait_with_output())
        .await
        .expect("stops")
        .expect("output");
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["change"], "added");
    assert!(lines[0]["malformed"].is_string(), "{}", lines[0]);
    assert_eq!(lines[1]["change"], "removed");
    assert_eq!(lines[1]["id"], "bad");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_and_not_serving_of_a_real_echo_server() {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let endpoint = etcd.endpoint();
    let (serving, _) = start_echo(
        "health-cli-1",
        ServeBuilder::new(echo_config(Default::default())),
        Some(etcd.registry_config()),
    )
    .await;
    let addr = serving.local_addr().to_string();
    let handle = serving.handle();
    let mut state = handle.registration_changes().expect("registering");
    let registered = tokio::time::timeout(EVENTUALLY, state.wait_for(|s| s.is_registered()))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(registered);

    let out = run(&endpoint, &["health", &addr]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(row(&text, "(server)"), ["(server)", "SERVING"], "{text}");
    assert_eq!(
        row(&text, REGISTRATION_HEALTH),
        [REGISTRATION_HEALTH, "SERVING"]
    );

    handle.pause().await.expect("pause");
    let paused = wait_until(EVENTUALLY, || async {
        let out = run(&endpoint, &["--json", "health", &addr]).await;
        let doc = json(&out);
        out.status.code() == Some(3)
            && doc["serving"] == false
            && doc["services"][1]["status"] == "NOT_SERVING"
            && doc["services"][0]["status"] == "SERVING"
    })
    .await;
    assert!(
        paused,
        "a paused server: registration NOT_SERVING, exit status 3"
    );

    let out = run(&endpoint, &["health", &addr, "--service", "echo.v1.Echo"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        row(&stdout(&out), "echo.v1.Echo"),
        ["echo.v1.Echo", "SERVING"]
    );

    handle.shutdown();
    serving.wait().await.expect("clean shutdown");
    let gone = run(&endpoint, &["health", &addr]).await;
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).contains(&format!("cannot connect to {addr}")),
        "{}",
        stderr(&gone)
    );
}

/// A server that takes the connection and never answers the TLS handshake:
/// `health` gives up within its timeout, naming the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_of_a_server_that_never_answers_the_tls_handshake_fails_naming_it() {
    let etcd = EtcdServer::start().await.expect("etcd starts");
    // The kernel takes the TCP connection; nothing accepts it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let ca = support::certs::TestCa::new(&etcd.data_dir().join("certs"), "health-ca");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        cli(&etcd.endpoint())
            .env("GRPC_CLUSTER__CLIENT__TLS__CA_FILE", &ca.ca_file)
            .args(["health", &addr])
            .output(),
    )
    .await
    .expect("health ends before the test's bound")
    .expect("grpc-cluster runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot connect to {addr}")),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_endpoint_exits_non_zero_naming_it() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    for args in [
        &["nodes", "echo"][..],
        &["services"],
        &["--json", "watch", "echo"],
    ] {
        let out = cli(&endpoint)
            .args(args)
            .env("GRPC_CLUSTER__REGISTRY__REQUEST_TIMEOUT", "2s")
            .output()
            .await
            .expect("runs");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "nothing on stdout: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.starts_with("grpc-cluster: error: "), "{err}");
        assert!(
            err.contains(&format!("etcd at {endpoint}")),
            "the endpoint is named: {err}"
        );
    }
    let out = cli("not an endpoint")
        .args(["services"])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("registry.endpoints"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_read_every_page_of_a_large_service() {
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let endpoint = etcd.endpoint();
    let mut kv = etcd.client().await.expect("client");
    // More nodes than one page of a full read (1000 keys); etcd takes 128
    // operations per transaction.
    let ids: Vec<String> = (0..1500).map(|i| format!("n-{i:04}")).collect();
    for chunk in ids.chunks(100) {
        let puts: Vec<TxnOp> = chunk
            .iter()
            .map(|id| {
                TxnOp::put(
                    format!("{PREFIX}/big/{id}"),
                    format!(r#"{{"id":"{id}","addr":"127.0.0.1:7000"}}"#),
                    None,
                )
            })
            .collect();
        kv.txn(Txn::new().and_then(puts)).await.expect("puts");
    }
    let out = run(&endpoint, &["--json", "services"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["services"][0]["keys"], 1500);
    let out = run(&endpoint, &["--json", "nodes", "big"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    let listed: Vec<&str> = doc["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["node"]["id"].as_str())
        .collect();
    assert_eq!(listed, ids, "every node, once, in key order");
}

/// A mutual-TLS server: without a client certificate (refused after a TLS 1.3
/// handshake) `health` says what to set; with one, it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_of_a_mutual_tls_server_says_to_set_a_client_certificate_and_answers_with_one() {
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let ca = support::certs::TestCa::new(&etcd.data_dir().join("certs"), "ca");
    let server = ca.server();
    let (serving, stats) = start_echo(
        "mtls-cli",
        ServeBuilder::new(
            echo_config(Default::default()).with_tls(
                ServerTlsConfig::default()
                    .with_identity(&server.cert, &server.key)
                    .with_client_ca_file(&ca.ca_file),
            ),
        ),
        None,
    )
    .await;
    let addr = serving.local_addr().to_string();
    let out = cli(&etcd.endpoint())
        .env("GRPC_CLUSTER__CLIENT__TLS__CA_FILE", &ca.ca_file)
        .args(["health", &addr])
        .output()
        .await
        .expect("grpc-cluster runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot connect to {addr}")), "{err}");
    assert!(err.contains("client.tls.cert_file"), "{err}");
    assert_eq!(stats.processed(), 0);

    // With a certificate of the server's CA, the same check is answered.
    let client = ca.leaf("client", &["client.test"]);
    let out = cli(&etcd.endpoint())
        .env("GRPC_CLUSTER__CLIENT__TLS__CA_FILE", &ca.ca_file)
        .env("GRPC_CLUSTER__CLIENT__TLS__CERT_FILE", &client.cert)
        .env("GRPC_CLUSTER__CLIENT__TLS__KEY_FILE", &client.key)
        .args(["health", &addr])
        .output()
        .await
        .expect("grpc-cluster runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(row(&text, "(server)"), ["(server)", "SERVING"], "{text}");
}
