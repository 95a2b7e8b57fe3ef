//! The one-call entry points end to end: `grpc_cluster::serve` in a child
//! process configured by a temporary directory and the environment, and
//! `server_kit::serve` in this process with configurations built in code. Each
//! is registered in a real etcd, called through a `ClusterClient`, rate limited,
//! and stopped by a real SIGTERM: deregistered before its listener closes, with
//! a `Slow` call in flight drained.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cluster_client::{CallError, CallOptions, ClientHandle, GetHandle, Strategy};
use grpc_cluster::echo::{EchoServer, EchoService, SayRequest, SlowRequest, SAY, SLOW};
use grpc_cluster::server::{
    Deregistration, Phase, RateLimitConfig, ServerConfig, ShutdownConfig, ShutdownTrigger,
};
use registry_actor::etcd_client::Client;
use support::cluster::{test_config, Cluster};
use support::server_kit::{example_path, key_is, probe_listener_close, read_to_end};
use support::{cluster_env_vars, init_tracing, wait_until, EVENTUALLY};
use tonic::Code;

/// How long a child process may take to exit after SIGTERM: deregistration,
/// lame duck, and the drain of a `Slow` call.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// The `Slow` call in flight at the SIGTERM: long enough to outlast the
/// deregistration and the lame duck, far shorter than the drain timeout.
const SLOW_DELAY: Duration = Duration::from_secs(5);

/// `[server]` of the child's configuration directory, with a limit of `rps`
/// and `burst` on `Say` (`Slow` is not limited).
fn server_toml(rps: u32, burst: u32) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
service = "echo"
node_id = "minimal-1"
version = "1.2.3"
group = "blue"
zone = "local"
labels = {{ canary = "false" }}

[server.rate_limit.methods]
"/echo.v1.Echo/Say" = {{ rps = {rps}, burst = {burst} }}

[server.shutdown]
lame_duck = "300ms"
"#
    )
}

/// Replaces `dir/default.toml` in one step (a watcher never reads half a file).
fn write_config(dir: &Path, body: &str) {
    let staged = dir.join("default.toml.new");
    std::fs::write(&staged, body).expect("write the staged config");
    std::fs::rename(&staged, dir.join("default.toml")).expect("replace default.toml");
}

/// Waits until `key` is in etcd, checks that its value is the registry's JSON
/// for the node the configuration describes and that it is held by a live
/// lease of `lease_ttl` seconds; answers the advertised address.
async fn registered(etcd: &Client, key: &str, id: &str, lease_ttl: i64) -> SocketAddr {
    assert!(
        wait_until(EVENTUALLY, key_is(etcd, key, true)).await,
        "{key} registered"
    );
    let mut etcd = etcd.clone();
    let got = etcd.get(key, None).await.expect("etcd answers");
    let kv = got.kvs().first().expect("the key");
    let value: serde_json::Value =
        serde_json::from_slice(kv.value()).expect("the value is one JSON object");
    assert_eq!(value["id"], id, "{value}");
    assert_eq!(value["service"], "echo", "{value}");
    assert_eq!(value["version"], "1.2.3", "{value}");
    assert_eq!(value["group"], "blue", "{value}");
    assert_eq!(value["weight"], 100, "{value}");
    assert_eq!(value["zone"], "local", "{value}");
    assert_eq!(value["labels"]["canary"], "false", "{value}");
    let addr: SocketAddr = value["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("addr is host:port: {value}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the bound port is advertised");

    assert_ne!(kv.lease(), 0, "written with a lease");
    let lease = etcd
        .lease_time_to_live(kv.lease(), None)
        .await
        .expect("etcd answers");
    assert_eq!(lease.granted_ttl(), lease_ttl, "the configured lease TTL");
    assert!(lease.ttl() > 0, "the lease is alive");
    addr
}

/// A handle of a cluster client that sees the one `echo` node.
async fn client(cluster: &Cluster) -> ClientHandle {
    let client = cluster.client(test_config(), 1).await;
    client.send(GetHandle).await.expect("client alive")
}

/// One `Say` through the cluster client, with no retry: a refusal comes back
/// as it is.
async fn say(handle: &ClientHandle) -> Result<String, CallError> {
    let call = cluster_client::Call::new(
        "echo",
        SAY,
        SayRequest {
            message: "hi".into(),
        },
    )
    .with_options(CallOptions::new().with_strategy(Strategy::Failfast));
    let reply = handle.call(call).await?;
    assert_eq!(reply.message.message, "hi");
    Ok(reply.node.id().to_owned())
}

/// Whether `n` `Say` calls in a row are all admitted.
async fn all_admitted(handle: &ClientHandle, n: usize) -> bool {
    for _ in 0..n {
        if say(handle).await.is_err() {
            return false;
        }
    }
    true
}

/// Checks that the limit of 1 `Say` per second refuses one of five calls sent
/// back to back, as `RESOURCE_EXHAUSTED` naming the limit.
async fn assert_limited(handle: &ClientHandle, node: &str) {
    let mut refusal = None;
    for _ in 0..5 {
        match say(handle).await {
            Ok(answered) => assert_eq!(answered, node),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("1 call/s refuses one of five calls in a row");
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal}");
    assert!(refusal.message().contains("per-method"), "{refusal}");
}

/// A `Slow` call through the cluster client, in its own task.
fn slow(handle: &ClientHandle) -> tokio::task::JoinHandle<Result<String, CallError>> {
    let call = cluster_client::Call::new(
        "echo",
        SLOW,
        SlowRequest {
            message: "drained".into(),
            delay_ms: u64::try_from(SLOW_DELAY.as_millis()).expect("small"),
        },
    )
    .with_options(
        CallOptions::new()
            .with_strategy(Strategy::Failfast)
            .with_timeout(EXIT_DEADLINE),
    );
    let handle = handle.clone();
    tokio::spawn(async move {
        let reply = handle.call(call).await?;
        Ok(reply.message.message)
    })
}

/// Sends SIGTERM to `pid` with a `Slow` call in flight and checks the order:
/// the key is gone from etcd before the listener at `addr` refuses
/// connections, the call is still running then, and it is answered.
async fn sigterm_drains_after_deregistering(
    pid: u32,
    handle: &ClientHandle,
    etcd: &Client,
    key: &str,
    addr: SocketAddr,
) {
    let in_flight = slow(handle);
    let probe = probe_listener_close(addr, etcd, key);
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -TERM {pid}");

    let (closed, key_present_at_close) = probe.await.expect("probe task");
    assert!(closed, "the listener closes");
    assert!(
        !key_present_at_close,
        "the key is gone from etcd before the listener closes"
    );
    assert!(
        !in_flight.is_finished(),
        "the Slow call is still in flight when the listener closes"
    );
    let answer = in_flight.await.expect("task");
    assert_eq!(
        answer.expect("the call in flight is drained, not cancelled"),
        "drained"
    );
}

#[actix_rt::test]
async fn grpc_cluster_serve_alone_registers_limits_follows_its_file_and_drains_on_sigterm() {
    init_tracing();
    let cluster = Cluster::start().await;
    let etcd = cluster.etcd.client().await.expect("etcd client");
    // The child's own configuration directory (removed with the etcd data): no
    // developer's config/ or GRPC_CLUSTER… variable leaks in.
    let dir = cluster.etcd.data_dir().join("serve-minimal-config");
    std::fs::create_dir_all(&dir).expect("config dir");
    write_config(&dir, &server_toml(1, 1));
    let mut command = tokio::process::Command::new(example_path("serve-minimal"));
    for name in cluster_env_vars() {
        command.env_remove(name);
    }
    let mut child = command
        .env("GRPC_CLUSTER_CONFIG_DIR", &dir)
        .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", cluster.etcd.endpoint())
        .env("GRPC_CLUSTER__REGISTRY__LEASE_TTL", "3s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve-minimal starts");
    let stderr = read_to_end(child.stderr.take().expect("piped stderr"));

    // Identity and listen address from the file, lease TTL from the environment.
    let key = "/grpc-cluster/services/echo/minimal-1";
    let addr = registered(&etcd, key, "minimal-1", 3).await;
    let handle = client(&cluster).await;
    assert_limited(&handle, "minimal-1").await;

    // An edit of the file reaches the running server: 20 calls in a row pass,
    // which 1 call/s would take 19 s to allow.
    write_config(&dir, &server_toml(10_000, 10_000));
    let raised = wait_until(EVENTUALLY, || {
        let handle = handle.clone();
        async move { all_admitted(&handle, 20).await }
    })
    .await;
    assert!(raised, "the edited limit applies without a restart");

    let pid = child.id().expect("running");
    sigterm_drains_after_deregistering(pid, &handle, &etcd, key, addr).await;
    let status = tokio::time::timeout(EXIT_DEADLINE, child.wait())
        .await
        .expect("serve-minimal exits after SIGTERM")
        .expect("exit status");
    let stderr = stderr.await.unwrap_or_default();
    assert!(
        status.success(),
        "exit 0 after the ordered shutdown: {status}\n{stderr}"
    );
}

#[actix_rt::test]
async fn server_kit_serve_with_configs_in_code_registers_limits_and_drains_on_sigterm() {
    init_tracing();
    let cluster = Cluster::start().await;
    let etcd = cluster.etcd.client().await.expect("etcd client");
    let server = ServerConfig::default()
        .with_listen("127.0.0.1:0")
        .with_service("echo")
        .with_node_id("kit-1")
        .with_version("1.2.3")
        .with_group("blue")
        .with_zone("local")
        .with_label("canary", "false")
        .with_rate_limit(RateLimitConfig::default().with_method("/echo.v1.Echo/Say", 1, 1))
        .with_shutdown(ShutdownConfig::default().with_lame_duck(Duration::from_millis(300)));
    let registry = cluster.registry.clone();
    let service = EchoService::new("kit-1");
    let stats = service.stats();
    let serving = tokio::spawn(grpc_cluster::server::serve(
        EchoServer::new(service),
        server,
        registry,
    ));

    let key = "/grpc-cluster/services/echo/kit-1";
    let addr = registered(&etcd, key, "kit-1", 2).await;
    let handle = client(&cluster).await;
    assert_limited(&handle, "kit-1").await;

    // The signal goes to this process: `serve` handles it (no other server of
    // this test binary listens for signals).
    sigterm_drains_after_deregistering(std::process::id(), &handle, &etcd, key, addr).await;
    let report = tokio::time::timeout(EXIT_DEADLINE, serving)
        .await
        .expect("serve returns after SIGTERM")
        .expect("task")
        .expect("an ordered shutdown");
    assert_eq!(report.trigger(), ShutdownTrigger::Signal("SIGTERM"));
    assert_eq!(report.deregistration(), &Deregistration::Confirmed);
    assert_eq!(report.in_flight_at_drain(), 1, "{report}");
    assert_eq!(report.drained(), 1, "{report}");
    assert_eq!(report.cancelled(), 0, "{report}");
    let phases: Vec<Phase> = report.phases().iter().map(|(p, _)| *p).collect();
    assert_eq!(
        phases,
        [
            Phase::NotServing,
            Phase::Deregister,
            Phase::LameDuck,
            Phase::StopAccepting,
            Phase::Drain
        ]
    );
    assert_eq!(stats.cancelled(), 0);
}
