//! Operating a running server: pausing it out of discovery and back, and a
//! shutdown that health watchers do not hold open.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grpc_cluster::echo::EchoClient;
use grpc_cluster::registry::RegistrationState;
use grpc_cluster::server::{Phase, ServeBuilder, ShutdownConfig, REGISTRATION_HEALTH};
use support::server_kit::*;
use support::{init_tracing, wait_until, EtcdServer, EVENTUALLY};
use tonic::body::Body;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_takes_the_key_out_and_health_shows_it_while_calls_are_served_and_resume_puts_it_back(
) {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let kv = etcd.client().await.expect("etcd client");
    let (serving, stats) = start_echo(
        "pause-1",
        ServeBuilder::new(echo_config(Default::default())),
        Some(etcd.registry_config()),
    )
    .await;
    let handle = serving.handle();
    let key = handle.registry_key().expect("registered").to_owned();
    let channel = channel(serving.local_addr()).await;
    assert!(
        wait_until(EVENTUALLY, key_is(&kv, &key, true)).await,
        "registered"
    );
    assert!(
        wait_until(EVENTUALLY, || async {
            health_of(&channel, REGISTRATION_HEALTH).await == Some(ServingStatus::Serving)
        })
        .await,
        "registration SERVING before the pause"
    );

    handle.pause().await.expect("pause");
    assert!(
        !key_exists(&mut kv.clone(), &key).await,
        "the key is gone once pause returns"
    );
    assert_eq!(handle.registration_state(), Some(RegistrationState::Paused));
    assert!(
        wait_until(EVENTUALLY, || async {
            health_of(&channel, REGISTRATION_HEALTH).await == Some(ServingStatus::NotServing)
        })
        .await,
        "registration NOT_SERVING while paused"
    );
    assert_eq!(
        health_of(&channel, "").await,
        Some(ServingStatus::Serving),
        "the server itself still serves"
    );
    let mut client = EchoClient::new(channel.clone());
    say(&mut client, None)
        .await
        .expect("a direct call is served while paused");
    assert_eq!(stats.processed(), 1);

    handle.resume().await.expect("resume");
    assert!(
        wait_until(EVENTUALLY, key_is(&kv, &key, true)).await,
        "back in etcd"
    );
    assert!(
        wait_until(EVENTUALLY, || async {
            health_of(&channel, REGISTRATION_HEALTH).await == Some(ServingStatus::Serving)
        })
        .await,
        "registration SERVING after resume"
    );

    handle.shutdown();
    serving.wait().await.expect("clean shutdown");
    assert!(
        handle.resume().await.is_err(),
        "no resume after the shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_without_a_registry_is_an_error_naming_why() {
    let (serving, _) = start_echo(
        "pause-standalone",
        ServeBuilder::new(echo_config(Default::default())),
        None,
    )
    .await;
    let err = serving
        .handle()
        .pause()
        .await
        .expect_err("nothing to pause");
    assert!(err.to_string().contains("not registered"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_watch_does_not_hold_the_drain_open() {
    init_tracing();
    // A drain deadline far beyond the test's patience: only a drain that
    // does not wait for the watch lets the shutdown end in time.
    let config = echo_config(Default::default()).with_shutdown(
        ShutdownConfig::default()
            .with_lame_duck(Duration::ZERO)
            .with_drain_timeout(Duration::from_secs(3600)),
    );
    let (serving, _) = start_echo("watch-drain-1", ServeBuilder::new(config), None).await;
    let handle = serving.handle();
    let mut watch = HealthClient::new(channel(serving.local_addr()).await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("a message").expect("open");
    assert_eq!(first.status(), ServingStatus::Serving);
    let h = handle.clone();
    assert!(
        wait_until(EVENTUALLY, || {
            let h = h.clone();
            async move { h.in_flight() == 1 }
        })
        .await,
        "the watch counts as in flight"
    );

    handle.shutdown();
    let update = watch.message().await.expect("a message").expect("open");
    assert_eq!(update.status(), ServingStatus::NotServing);
    let end = tokio::time::timeout(EVENTUALLY, watch.message())
        .await
        .expect("the watch ends at the drain");
    assert!(
        matches!(&end, Err(status) if status.code() == Code::Unavailable),
        "the watch ends with UNAVAILABLE: {end:?}"
    );
    let report = tokio::time::timeout(EVENTUALLY, serving.wait())
        .await
        .expect("the shutdown does not wait for the drain deadline")
        .expect("clean shutdown");
    assert_eq!(report.in_flight_at_drain(), 1, "{report}");
    assert_eq!(
        report.drained(),
        1,
        "the watch ended within the drain: {report}"
    );
    assert_eq!(report.cancelled(), 0, "{report}");
    assert!(
        !report.phases().iter().any(|(p, _)| *p == Phase::Cancel),
        "nothing left to cancel: {report}"
    );
}

/// A user layer that records the path of every request it sees.
#[derive(Clone, Default)]
struct RecordLayer(Arc<Mutex<Vec<String>>>);

#[derive(Clone)]
struct Record<S> {
    inner: S,
    seen: Arc<Mutex<Vec<String>>>,
}

impl<S> tower::Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            seen: self.0.clone(),
        }
    }
}

impl<S: tower::Service<http::Request<Body>>> tower::Service<http::Request<Body>> for Record<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> S::Future {
        let path = request.uri().path().to_owned();
        self.seen.lock().expect("lock").push(path);
        self.inner.call(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_layer_sees_every_admitted_request_inside_the_kits_layers() {
    let seen = RecordLayer::default();
    let config = echo_config(Default::default()).with_token("secret");
    let (serving, stats) = start_echo(
        "layer-1",
        ServeBuilder::new(config).layer(seen.clone()),
        None,
    )
    .await;
    let channel = channel(serving.local_addr()).await;
    let mut client = EchoClient::new(channel.clone());
    for _ in 0..3 {
        let mut request = tonic::Request::new(grpc_cluster::echo::SayRequest {
            message: "hi".into(),
        });
        request
            .metadata_mut()
            .insert("authorization", "Bearer secret".parse().expect("ascii"));
        client.say(request).await.expect("an authorized call");
    }
    assert_eq!(health_of(&channel, "").await, Some(ServingStatus::Serving));
    let refused = say(&mut client, None).await.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(stats.processed(), 3);
    assert_eq!(
        *seen.0.lock().expect("lock"),
        [
            "/echo.v1.Echo/Say",
            "/echo.v1.Echo/Say",
            "/echo.v1.Echo/Say",
            "/grpc.health.v1.Health/Check"
        ],
        "every admitted call, the health check too; the refused one never reaches it"
    );
    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
}

/// How long the `Slow` call of [`say_after_slow`] takes on the server.
const SLOW: Duration = Duration::from_millis(1500);

/// Starts a `Slow` call and, once it runs, a `Say` on the same connection;
/// answers when the `Say` was answered, counted from the `Slow` call's start.
/// The `Slow` call cannot be answered before [`SLOW`] has passed, so a `Say`
/// that waits for it is answered later than that.
async fn say_after_slow(builder: ServeBuilder) -> Duration {
    let (serving, _) = start_echo("streams-1", builder, None).await;
    let channel = channel(serving.local_addr()).await;
    let slow_channel = channel.clone();
    let started = Instant::now();
    let slow_call = tokio::spawn(slow(EchoClient::new(slow_channel), SLOW));
    let h = serving.handle();
    assert!(
        wait_until(EVENTUALLY, || {
            let h = h.clone();
            async move { h.in_flight() == 1 }
        })
        .await,
        "the slow call runs"
    );
    say(&mut EchoClient::new(channel), None)
        .await
        .expect("the Say succeeds");
    let answered = started.elapsed();
    slow_call
        .await
        .expect("the slow call's task")
        .expect("the Slow call succeeds");
    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_options_reach_tonic_max_concurrent_streams_one_serializes_a_connection() {
    let limited = ServeBuilder::new(echo_config(Default::default()))
        .server_options(|server| server.max_concurrent_streams(1));
    let answered = say_after_slow(limited).await;
    assert!(
        answered >= SLOW,
        "with one stream per connection the Say waits for the Slow call: answered after {answered:?}"
    );
    let open = ServeBuilder::new(echo_config(Default::default()));
    let answered = say_after_slow(open).await;
    assert!(
        answered < SLOW,
        "without the option the Say passes the Slow call: answered after {answered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_cluster_serve_takes_user_layers_through_with_builder() {
    let dir = std::env::temp_dir().join(format!("gc-serve-builder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("default.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\nservice = \"\"\n",
    )
    .expect("write");
    let loader = grpc_cluster::config::ConfigLoader::from_env()
        .with_dir(&dir)
        .with_env_vars(Default::default());
    let seen = RecordLayer::default();
    let layer = seen.clone();
    let serving = grpc_cluster::Serve::load(loader)
        .expect("loads")
        .with_reload_interval(Duration::ZERO)
        .with_builder(move |b| b.layer(layer).signals(false))
        .start(grpc_cluster::echo::EchoService::new("serve-layer-1").into_server())
        .await
        .expect("starts");
    let _ = std::fs::remove_dir_all(&dir);
    let mut client = EchoClient::new(channel(serving.local_addr()).await);
    say(&mut client, None).await.expect("a call");
    assert_eq!(*seen.0.lock().expect("lock"), ["/echo.v1.Echo/Say"]);
    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
}
