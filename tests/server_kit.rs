//! End-to-end tests of `server_kit` with the echo service: real tonic servers on
//! `127.0.0.1:0`, a real etcd, a real `echo-server` child process and SIGTERM.
//! Rate-limit counts are exact because the servers run on governor's
//! `FakeRelativeClock`; nothing waits by sleeping.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use grpc_cluster::echo::{EchoClient, EchoService, SayRequest};
use grpc_cluster::server::governor::clock::FakeRelativeClock;
use grpc_cluster::server::{
    Deregistration, Phase, RateLimitConfig, Routes, ServeBuilder, ServeHandle, ShutdownConfig,
    ShutdownTrigger,
};
use support::server_kit::*;
use support::{init_tracing, wait_until, EtcdServer, EVENTUALLY};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const SAY: &str = "/echo.v1.Echo/Say";

fn unlimited() -> RateLimitConfig {
    RateLimitConfig::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_is_resource_exhausted_with_pushback_and_admits_exactly_the_quota() {
    init_tracing();
    let clock = FakeRelativeClock::default();
    let config = echo_config(RateLimitConfig::default().with_rps(10).with_burst(5));
    let builder = ServeBuilder::new(config).clock(clock.clone());
    let (serving, stats) = start_echo("limit-1", builder, None).await;
    let mut client = EchoClient::new(channel(serving.local_addr()).await);

    // `admitted` also checks every refusal: RESOURCE_EXHAUSTED, pushback > 0.
    assert_eq!(admitted(&mut client, 20, None).await, 5, "the burst");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        admitted(&mut client, 20, None).await,
        5,
        "a second refills the burst"
    );
    clock.advance(Duration::from_millis(100));
    assert_eq!(
        admitted(&mut client, 20, None).await,
        1,
        "100 ms refill one call"
    );
    assert_eq!(
        stats.processed(),
        11,
        "refused calls never reach the service"
    );

    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_method_and_per_caller_limits_compose() {
    init_tracing();
    let clock = FakeRelativeClock::default();
    let config = echo_config(
        RateLimitConfig::default()
            .with_method(SAY, 8, 0)
            .with_caller_rps(5)
            .with_trust_caller_header(true),
    );
    let builder = ServeBuilder::new(config).clock(clock.clone());
    let (serving, _stats) = start_echo("compose-1", builder, None).await;
    let mut client = EchoClient::new(channel(serving.local_addr()).await);

    // a: its own quota binds (5 of Say's 8).
    assert_eq!(admitted(&mut client, 10, Some("a")).await, 5);
    // b: its quota is 5, but Say has only 3 left.
    assert_eq!(admitted(&mut client, 10, Some("b")).await, 3);
    // Say is exhausted for everybody, a caller quota left or not.
    assert_eq!(admitted(&mut client, 10, Some("c")).await, 0);
    // Other methods are not under Say's limit: Fail(OK) as a caller with quota.
    let mut fail = Request::new(grpc_cluster::echo::FailRequest {
        code: 0,
        message: "ok".into(),
    });
    fail.metadata_mut()
        .insert("x-caller", "d".parse().expect("ascii"));
    client
        .fail(fail)
        .await
        .expect("Fail is not limited by Say's limit");

    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_at_ten_times_its_quota_does_not_reduce_another_callers_admissions() {
    init_tracing();
    let clock = FakeRelativeClock::default();
    // Global room for exactly the two callers' quotas.
    let config = echo_config(
        RateLimitConfig::default()
            .with_caller_rps(5)
            .with_trust_caller_header(true)
            .with_rps(10),
    );
    let builder = ServeBuilder::new(config).clock(clock.clone());
    let (serving, _stats) = start_echo("fair-1", builder, None).await;
    let mut client = EchoClient::new(channel(serving.local_addr()).await);

    for second in 0..3 {
        let greedy = admitted(&mut client, 50, Some("greedy")).await;
        let modest = admitted(&mut client, 5, Some("modest")).await;
        assert_eq!(
            greedy, 5,
            "second {second}: the greedy caller gets its quota"
        );
        assert_eq!(
            modest, 5,
            "second {second}: the modest caller gets all of its own"
        );
        clock.advance(Duration::from_secs(1));
    }

    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rate_limits_apply_to_the_next_call_without_restart_or_dropped_call() {
    init_tracing();
    let clock = FakeRelativeClock::default();
    let builder = ServeBuilder::new(echo_config(unlimited())).clock(clock.clone());
    let (serving, stats) = start_echo("reload-1", builder, None).await;
    let handle = serving.handle();
    let channel = channel(serving.local_addr()).await;
    let mut client = EchoClient::new(channel.clone());
    assert_eq!(admitted(&mut client, 50, None).await, 50);

    let in_flight = tokio::spawn(slow(
        EchoClient::new(channel.clone()),
        Duration::from_millis(300),
    ));
    let h = handle.clone();
    assert!(
        wait_until(EVENTUALLY, || {
            let h = h.clone();
            async move { h.in_flight() == 1 }
        })
        .await
    );

    handle
        .set_rate_limits(RateLimitConfig::default().with_rps(2))
        .expect("valid limits");
    assert_eq!(
        admitted(&mut client, 10, None).await,
        2,
        "the next calls see the new limit"
    );
    let invalid = handle.set_rate_limits(RateLimitConfig::default().with_caller_burst(1));
    assert!(invalid
        .expect_err("invalid")
        .to_string()
        .contains("server.rate_limit.caller_burst"));
    handle.set_rate_limits(unlimited()).expect("valid limits");
    assert_eq!(admitted(&mut client, 10, None).await, 10);

    in_flight
        .await
        .expect("task")
        .expect("the call in flight during the changes completes");
    assert_eq!(stats.cancelled(), 0);
    handle.shutdown();
    serving.wait().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_bearer_token_is_required_except_for_health() {
    init_tracing();
    let config = echo_config(unlimited()).with_token("s3cret");
    let (serving, stats) = start_echo("auth-1", ServeBuilder::new(config), None).await;
    let channel = channel(serving.local_addr()).await;
    let mut client = EchoClient::new(channel.clone());

    let status = say(&mut client, None).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut wrong = Request::new(SayRequest {
        message: "x".into(),
    });
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer guess".parse().expect("ascii"));
    assert_eq!(
        client.say(wrong).await.expect_err("wrong token").code(),
        Code::Unauthenticated
    );
    let mut right = Request::new(SayRequest {
        message: "x".into(),
    });
    right
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().expect("ascii"));
    client
        .say(right)
        .await
        .expect("the right token is admitted");
    assert_eq!(stats.processed(), 1);

    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "echo.v1.Echo".into(),
        })
        .await
        .expect("health needs no token")
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
}

fn instances_are<C: grpc_cluster::server::LimiterClock>(
    handles: &[ServeHandle<C>],
    n: usize,
) -> impl FnMut() -> std::future::Ready<bool> + '_ {
    move || std::future::ready(handles.iter().all(|h| h.rate_limits().instances() == n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rps_is_divided_by_the_live_instances() {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let clock = FakeRelativeClock::default();
    let mut servers = Vec::new();
    for id in ["cluster-1", "cluster-2", "cluster-3"] {
        let config = echo_config(RateLimitConfig::default().with_cluster_rps(300)).with_node_id(id);
        let builder = ServeBuilder::new(config).clock(clock.clone());
        servers.push(
            start_echo(id, builder, Some(etcd.registry_config()))
                .await
                .0,
        );
    }
    let handles: Vec<_> = servers.iter().map(|s| s.handle()).collect();
    assert!(
        wait_until(EVENTUALLY, instances_are(&handles, 3)).await,
        "every server sees 3 instances"
    );
    assert_eq!(handles[0].rate_limits().cluster_share(), Some(100.0));

    let mut first = EchoClient::new(channel(handles[0].local_addr()).await);
    let mut second = EchoClient::new(channel(handles[1].local_addr()).await);
    assert_eq!(admitted(&mut first, 200, None).await, 100, "300 / 3");
    assert_eq!(
        admitted(&mut second, 200, None).await,
        100,
        "each instance its share"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(admitted(&mut first, 200, None).await, 100, "100 per second");

    // One instance leaves.
    let leaving = servers.pop().expect("three servers");
    leaving.handle().shutdown();
    leaving.wait().await.expect("clean shutdown");
    let remaining = &handles[..2];
    assert!(
        wait_until(EVENTUALLY, instances_are(remaining, 2)).await,
        "the others see 2 instances"
    );
    assert_eq!(handles[0].rate_limits().cluster_share(), Some(150.0));
    assert_eq!(admitted(&mut first, 300, None).await, 150, "300 / 2");
    clock.advance(Duration::from_secs(1));
    assert_eq!(admitted(&mut first, 300, None).await, 150, "150 per second");
    assert_eq!(admitted(&mut second, 300, None).await, 150);

    for serving in servers {
        serving.handle().shutdown();
        serving.wait().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_drains_calls_after_deregistering_and_cancels_an_endless_stream() {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let kv = etcd.client().await.expect("etcd client");
    let config = echo_config(unlimited()).with_node_id("drain-1");
    let (serving, stats) = start_echo(
        "drain-1",
        ServeBuilder::new(config),
        Some(etcd.registry_config()),
    )
    .await;
    let handle = serving.handle();
    let addr = serving.local_addr();
    let key = handle.registry_key().expect("registered").to_owned();
    assert!(
        wait_until(EVENTUALLY, key_is(&kv, &key, true)).await,
        "registered"
    );
    let value = key_value(&mut kv.clone(), &key).await.expect("a value");
    assert!(
        value.contains(&format!("\"addr\":\"{addr}\"")),
        "the real port is advertised: {value}"
    );

    // A health Watch, SERVING while up: it gets NOT_SERVING and ends at the
    // drain.
    let channel = channel(addr).await;
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: "echo.v1.Echo".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch
        .message()
        .await
        .expect("a message")
        .expect("not ended");
    assert_eq!(first.status(), ServingStatus::Serving);

    // Load: 8 Slow(500 ms) calls in flight, a call that outlives the drain
    // deadline, plus the watch.
    let endless = tokio::spawn(slow(
        EchoClient::new(channel.clone()),
        grpc_cluster::echo::MAX_SLOW_DELAY,
    ));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(slow(
                EchoClient::new(channel.clone()),
                Duration::from_millis(500),
            ))
        })
        .collect();
    let h = handle.clone();
    assert!(
        wait_until(EVENTUALLY, || {
            let h = h.clone();
            async move { h.in_flight() == 10 }
        })
        .await
    );

    let probe = probe_listener_close(addr, &kv, &key);
    handle.shutdown();

    let update = watch
        .message()
        .await
        .expect("a message")
        .expect("not ended");
    assert_eq!(
        update.status(),
        ServingStatus::NotServing,
        "health reports NOT_SERVING"
    );
    let (closed, key_present_at_close) = probe.await.expect("probe task");
    assert!(closed, "the listener closes");
    assert!(
        !key_present_at_close,
        "the key is gone from etcd before the listener closes"
    );
    // New connections are refused while the calls in flight still run.
    let late = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await;
    assert!(
        late.is_err(),
        "a new connection is refused during the drain"
    );

    for call in calls {
        call.await
            .expect("task")
            .expect("an in-flight Slow call completes");
    }
    let end = watch.message().await;
    assert!(
        matches!(&end, Err(status) if status.code() == Code::Unavailable),
        "the health watch ends with UNAVAILABLE at the drain: {end:?}"
    );
    // The endless call outlives the drain deadline and is cut.
    let cut = endless.await.expect("task");
    assert!(cut.is_err(), "the endless call is cancelled: {cut:?}");

    let report = serving
        .wait()
        .await
        .expect("serve returns after the deadline");
    assert_eq!(report.trigger(), ShutdownTrigger::Handle);
    assert_eq!(report.deregistration(), &Deregistration::Confirmed);
    assert_eq!(report.in_flight_at_drain(), 10);
    assert_eq!(
        report.drained(),
        9,
        "the Slow calls and the watch: {report}"
    );
    assert_eq!(report.cancelled(), 1, "{report}");
    let phases: Vec<Phase> = report.phases().iter().map(|(p, _)| *p).collect();
    assert_eq!(
        phases,
        [
            Phase::NotServing,
            Phase::Deregister,
            Phase::LameDuck,
            Phase::StopAccepting,
            Phase::Drain,
            Phase::Cancel
        ]
    );
    assert_eq!(stats.processed(), 8);
    assert_eq!(stats.cancelled(), 1, "only the endless call was cancelled");
    assert!(!key_exists(&mut kv.clone(), &key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_lame_duck_the_key_is_gone_and_new_calls_are_still_served() {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let kv = etcd.client().await.expect("etcd client");
    let config = echo_config(unlimited())
        .with_node_id("lame-1")
        .with_shutdown(
            ShutdownConfig::default()
                .with_lame_duck(Duration::from_secs(1))
                .with_drain_timeout(Duration::from_secs(2)),
        );
    let (serving, stats) = start_echo(
        "lame-1",
        ServeBuilder::new(config),
        Some(etcd.registry_config()),
    )
    .await;
    let handle = serving.handle();
    let addr = serving.local_addr();
    let key = handle.registry_key().expect("registered").to_owned();
    assert!(
        wait_until(EVENTUALLY, key_is(&kv, &key, true)).await,
        "registered"
    );

    let probe = probe_listener_close(addr, &kv, &key);
    handle.shutdown();
    assert!(
        wait_until(EVENTUALLY, key_is(&kv, &key, false)).await,
        "deregistered"
    );
    // The key is gone, the listener still serves a new connection.
    let mut late = EchoClient::new(channel(addr).await);
    say(&mut late, None)
        .await
        .expect("served during the lame duck");

    let (closed, key_present_at_close) = probe.await.expect("probe task");
    assert!(closed);
    assert!(!key_present_at_close);
    let report = serving.wait().await.expect("clean shutdown");
    assert_eq!(report.deregistration(), &Deregistration::Confirmed);
    assert_eq!(report.cancelled(), 0);
    assert_eq!(stats.processed(), 1);
}

/// Reads the child's stdout lines until one satisfies `pick`.
async fn line_where(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pick: impl Fn(&str) -> bool,
) -> Option<String> {
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if pick(&line) {
                return Some(line);
            }
        }
        None
    };
    tokio::time::timeout(EVENTUALLY, read).await.ok().flatten()
}

/// The number after `label ` in the report line.
fn count_after(report: &str, label: &str) -> Option<u64> {
    let rest = &report[report.find(label)? + label.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_an_echo_server_process_shuts_it_down_in_the_same_order() {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let kv = etcd.client().await.expect("etcd client");
    let mut child = tokio::process::Command::new(example_path("echo-server"))
        .args(["--id", "sigterm-1", "--listen", "127.0.0.1:0"])
        .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", etcd.endpoint())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("echo-server starts");
    let logs = read_to_end(child.stderr.take().expect("stderr"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let listening = line_where(&mut lines, |l| l.starts_with("listening on "))
        .await
        .expect("echo-server says where it listens");
    let addr: SocketAddr = listening
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .expect("listening on ADDR as ID");
    let key = "/grpc-cluster/services/echo/sigterm-1";
    assert!(
        wait_until(EVENTUALLY, key_is(&kv, key, true)).await,
        "registered"
    );

    // Calls long enough to outlast the default 1 s lame duck.
    let channel = channel(addr).await;
    let calls: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(slow(
                EchoClient::new(channel.clone()),
                Duration::from_millis(1500),
            ))
        })
        .collect();
    let probe = probe_listener_close(addr, &kv, key);
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());

    for call in calls {
        call.await
            .expect("task")
            .expect("an in-flight Slow call completes");
    }
    let (closed, key_present_at_close) = probe.await.expect("probe task");
    assert!(closed);
    assert!(
        !key_present_at_close,
        "the key is gone before the listener closes"
    );
    let report = line_where(&mut lines, |l| l.starts_with("shutdown on "))
        .await
        .expect("echo-server prints its shutdown report");
    let status = tokio::time::timeout(EVENTUALLY, child.wait())
        .await
        .expect("echo-server exits")
        .expect("exit status");
    let logs = logs.await.unwrap_or_default();
    assert!(
        status.success(),
        "exit 0 after a clean shutdown: {status}\n{logs}"
    );
    assert!(report.starts_with("shutdown on SIGTERM"), "{report}");
    assert!(
        report.contains("deregistration key gone from etcd"),
        "{report}"
    );
    let in_flight = count_after(&report, "in flight").expect("in flight N");
    assert_eq!(count_after(&report, "drained"), Some(in_flight), "{report}");
    assert_eq!(count_after(&report, "cancelled"), Some(0), "{report}");
    let order = [
        "not-serving=",
        "deregister=",
        "lame-duck=",
        "stop-accepting=",
        "drain=",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|p| report.find(p).unwrap_or_else(|| panic!("{p} in {report}")))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "phases in order: {report}"
    );
}

/// A SIGTERM that comes as soon as `start` returns, before any task of the
/// server has run, starts the ordered shutdown instead of killing the process
/// (with the default action, the whole test binary would die).
#[tokio::test(flavor = "current_thread")]
async fn a_sigterm_right_after_start_starts_the_ordered_shutdown() {
    init_tracing();
    let serving = ServeBuilder::new(echo_config(unlimited()))
        .add_service(EchoService::new("early-1").into_server())
        .start()
        .await
        .expect("server starts");
    // A blocking call on the runtime's only thread: no spawned task runs before
    // the signal is sent.
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let report = tokio::time::timeout(EVENTUALLY, serving.wait())
        .await
        .expect("the server shuts down")
        .expect("an ordered shutdown");
    assert_eq!(report.trigger(), ShutdownTrigger::Signal("SIGTERM"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_serving_shuts_the_server_down() {
    init_tracing();
    let (serving, _stats) =
        start_echo("drop-1", ServeBuilder::new(echo_config(unlimited())), None).await;
    let handle = serving.handle();
    let addr = serving.local_addr();
    drop(serving);
    assert!(handle.is_shutting_down());
    assert!(
        wait_until(EVENTUALLY, || refuses_connections(addr)).await,
        "the listener closes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_while_etcd_is_down_at_start_up_and_registers_once_it_is_back() {
    init_tracing();
    let mut etcd = EtcdServer::start().await.expect("etcd starts");
    etcd.stop();
    let config = echo_config(unlimited()).with_node_id("late-1");
    let (serving, _stats) = start_echo(
        "late-1",
        ServeBuilder::new(config),
        Some(etcd.registry_config()),
    )
    .await;
    let handle = serving.handle();
    let mut client = EchoClient::new(channel(serving.local_addr()).await);
    say(&mut client, None).await.expect("serves without etcd");

    etcd.restart().await.expect("etcd restarts");
    let kv = etcd.client().await.expect("etcd client");
    let key = handle.registry_key().expect("registering").to_owned();
    assert!(
        wait_until(EVENTUALLY, key_is(&kv, &key, true)).await,
        "registered once etcd is back"
    );
    let mut state = handle.registration_changes().expect("registering");
    // `is_ok_and` drops the watch guard at once (it would block the registrar).
    let registered = tokio::time::timeout(EVENTUALLY, state.wait_for(|s| s.is_registered()))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(registered, "registered");
    handle.shutdown();
    let report = serving.wait().await.expect("clean shutdown");
    assert_eq!(report.deregistration(), &Deregistration::Confirmed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_registration_while_etcd_comes_and_goes() {
    let mut etcd = EtcdServer::start().await.expect("etcd");
    let registry = etcd.registry_config();
    let (serving, _) = start_echo(
        "health-reg-1",
        ServeBuilder::new(echo_config(unlimited())),
        Some(registry),
    )
    .await;
    let channel = channel(serving.local_addr()).await;
    let name = grpc_cluster::server::REGISTRATION_HEALTH;
    let registered = wait_until(EVENTUALLY, || async {
        health_of(&channel, name).await == Some(ServingStatus::Serving)
    })
    .await;
    assert!(registered, "SERVING once registered");

    etcd.stop();
    let lost = wait_until(EVENTUALLY, || async {
        health_of(&channel, name).await == Some(ServingStatus::NotServing)
    })
    .await;
    assert!(lost, "NOT_SERVING while the registration is being retried");
    assert_eq!(
        health_of(&channel, "echo.v1.Echo").await,
        Some(ServingStatus::Serving),
        "the service itself still serves"
    );

    etcd.restart().await.expect("etcd restarts");
    let back = wait_until(EVENTUALLY, || async {
        health_of(&channel, name).await == Some(ServingStatus::Serving)
    })
    .await;
    assert!(back, "SERVING again once registered again");
    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
}

/// `Say` to `path` on `addr`: the reply's node, or the status.
async fn say_at(addr: SocketAddr, path: &'static str) -> Result<String, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<SayRequest, grpc_cluster::echo::SayReply>::default();
    let request = Request::new(SayRequest {
        message: "hi".into(),
    });
    let path = http::uri::PathAndQuery::from_static(path);
    let reply = grpc.unary(request, path, codec).await?;
    Ok(reply.into_inner().node_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_naming_no_service_or_method_served_is_unimplemented_and_the_rest_served() {
    init_tracing();
    let (serving, stats) = start_echo(
        "routes-1",
        ServeBuilder::new(echo_config(unlimited())),
        None,
    )
    .await;
    let addr = serving.local_addr();
    assert_eq!(say_at(addr, SAY).await.expect("served"), "routes-1");
    for path in ["/echo.v1.Echo/Nope", "/echo.v9.Nope/Say", "/echo.v1.Echo"] {
        let status = say_at(addr, path).await.expect_err(path);
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
    }
    assert_eq!(
        stats.processed(),
        1,
        "only the served path reached the service"
    );
    let mut health = HealthClient::new(channel(addr).await);
    let check = health
        .check(HealthCheckRequest {
            service: "echo.v1.Echo".into(),
        })
        .await
        .expect("health answers");
    assert_eq!(check.into_inner().status(), ServingStatus::Serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_routes_are_served_behind_the_services_added_by_name() {
    init_tracing();
    let tonic_routes = tonic::service::Routes::new(EchoService::new("from-tonic").into_server());
    let alone = ServeBuilder::new(echo_config(unlimited()))
        .routes(Routes::from_tonic(tonic_routes.clone()))
        .signals(false)
        .start()
        .await
        .expect("server starts");
    assert_eq!(
        say_at(alone.local_addr(), SAY).await.expect("served"),
        "from-tonic"
    );
    let status = say_at(alone.local_addr(), "/echo.v9.Nope/Say")
        .await
        .expect_err("no such service");
    assert_eq!(status.code(), Code::Unimplemented);

    let both = ServeBuilder::new(echo_config(unlimited()))
        .routes(Routes::from_tonic(tonic_routes))
        .add_service(EchoService::new("by-name").into_server())
        .signals(false)
        .start()
        .await
        .expect("server starts");
    assert_eq!(
        say_at(both.local_addr(), SAY).await.expect("served"),
        "by-name"
    );
}
