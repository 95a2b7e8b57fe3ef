//! Helpers of the server-kit end-to-end tests: echo servers through
//! `server_kit`, clients, etcd probes, the example binaries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use grpc_cluster::echo::{EchoClient, EchoService, EchoStats, SayRequest, SlowRequest};
use grpc_cluster::server::{
    LimiterClock, RateLimitConfig, ServeBuilder, ServerConfig, Serving, ShutdownConfig,
};
use registry_actor::etcd_client::{Client, GetOptions};
use registry_actor::RegistryConfig;
use tonic::transport::Channel;
use tonic::{Code, Request};

use super::{wait_until, EVENTUALLY};

/// A config for an echo server on `127.0.0.1:0` with quick shutdown steps.
pub fn echo_config(rate_limit: RateLimitConfig) -> ServerConfig {
    ServerConfig::default()
        .with_listen("127.0.0.1:0")
        .with_service("echo")
        .with_rate_limit(rate_limit)
        .with_shutdown(
            ShutdownConfig::default()
                .with_lame_duck(Duration::ZERO)
                .with_drain_timeout(Duration::from_secs(2)),
        )
}

/// Starts `EchoService` through the server kit, without signal handling.
pub async fn start_echo<C: LimiterClock>(
    node_id: &str,
    builder: ServeBuilder<C>,
    registry: Option<RegistryConfig>,
) -> (Serving<C>, Arc<EchoStats>) {
    let service = EchoService::new(node_id);
    let stats = service.stats();
    let mut builder = builder.add_service(service.into_server()).signals(false);
    if let Some(registry) = registry {
        builder = builder.registry(registry);
    }
    let serving = builder.start().await.expect("server starts");
    (serving, stats)
}

/// A channel to `addr` (its own HTTP/2 connection).
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects")
}

/// `Say` as `caller` (the `x-caller` metadata), or anonymous.
pub async fn say(
    client: &mut EchoClient<Channel>,
    caller: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut request = Request::new(SayRequest {
        message: "hi".into(),
    });
    if let Some(caller) = caller {
        request
            .metadata_mut()
            .insert("x-caller", caller.parse().expect("ascii"));
    }
    client.say(request).await.map(drop)
}

/// `Slow` for `delay`.
pub async fn slow(mut client: EchoClient<Channel>, delay: Duration) -> Result<(), tonic::Status> {
    let request = SlowRequest {
        message: "slow".into(),
        delay_ms: u64::try_from(delay.as_millis()).expect("small"),
    };
    client.slow(request).await.map(drop)
}

/// Sends `n` `Say` calls one after the other; returns how many were admitted,
/// checking that every refusal is `RESOURCE_EXHAUSTED` with a positive pushback.
pub async fn admitted(client: &mut EchoClient<Channel>, n: usize, caller: Option<&str>) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        match say(client, caller).await {
            Ok(()) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let pushback: u64 = status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .expect("a refusal carries grpc-retry-pushback-ms")
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("milliseconds");
                assert!(pushback > 0, "pushback {pushback}");
            }
        }
    }
    ok
}

/// Whether etcd has `key`.
pub async fn key_exists(etcd: &mut Client, key: &str) -> bool {
    let resp = etcd
        .get(key, Some(GetOptions::new().with_count_only()))
        .await
        .expect("etcd answers");
    resp.count() > 0
}

/// The value at `key`, when present.
pub async fn key_value(etcd: &mut Client, key: &str) -> Option<String> {
    let resp = etcd.get(key, None).await.expect("etcd answers");
    resp.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

/// Whether a new TCP connection to `addr` is refused (the listener is closed).
pub async fn refuses_connections(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

/// Whether `key` is in etcd, as a `wait_until` condition.
pub fn key_is<'a>(
    etcd: &'a registry_actor::etcd_client::Client,
    key: &'a str,
    present: bool,
) -> impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> + 'a {
    move || {
        let mut etcd = etcd.clone();
        Box::pin(async move { key_exists(&mut etcd, key).await == present })
    }
}

/// Waits until `addr` refuses connections, then says whether `key` was still in
/// etcd at that moment.
pub fn probe_listener_close(
    addr: SocketAddr,
    etcd: &registry_actor::etcd_client::Client,
    key: &str,
) -> tokio::task::JoinHandle<(bool, bool)> {
    let mut etcd = etcd.clone();
    let key = key.to_owned();
    tokio::spawn(async move {
        let closed = wait_until(EVENTUALLY, || refuses_connections(addr)).await;
        let key_present = key_exists(&mut etcd, &key).await;
        (closed, key_present)
    })
}

/// Reads `pipe` (a child's stderr, say) to its end in a task of its own, so a
/// full pipe never blocks the child; answers everything read.
pub fn read_to_end(
    mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut all = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut all).await;
        all
    })
}

/// The path of an example binary built by `cargo test`
/// (`target/debug/examples/NAME`), found from this test binary's location
/// (`target/debug/deps/…`).
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let debug_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug/deps/<test>");
    let path = debug_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds examples before tests",
        path.display()
    );
    path
}

/// The health status of `service` as the server reports it now.
pub async fn health_of(
    channel: &tonic::transport::Channel,
    service: &str,
) -> Option<tonic_health::pb::health_check_response::ServingStatus> {
    let answer = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    Some(answer.into_inner().status())
}
