//! Generated tonic clients over `ClusterChannel`, end to end: real echo
//! servers found through a real etcd, called through `EchoClient`.
//!
//! Each strategy test runs the same scenario through a `Call` and through the
//! channel where the issue asks for "the same as with `Call`", and compares
//! what each saw. A "killed" node is either an `echo-server` process killed
//! with SIGKILL or a server whose whole runtime is shut down at once (its
//! connections dropped without a goodbye), which lets a test know the node
//! received the call before killing it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_client::{
    Balancer, Call, CallError, CallOptions, CallRecord, ClientHandle, ClusterClient, GetHandle,
    MethodConfig, ServiceConfig, ServiceStatus, Strategy,
};
use grpc_cluster::actix::Addr;
use grpc_cluster::echo::{
    CountRequest, Echo, EchoClient, EchoServer, EchoService, FailRequest, ReplyStream, SayReply,
    SayRequest, SlowRequest, FAIL, SLOW,
};
use registry_actor::{Node, Registrar, RegistryConfig};
use support::cluster::{test_config, Cluster};
use support::faults::{one_at_a_time, start_processes};
use support::{init_tracing, wait_until, EtcdServer, PlainEcho, EVENTUALLY};
use tonic::{Code, Request, Response, Status, Streaming};

type Stub = EchoClient<cluster_client::ClusterChannel>;

fn say(message: &str) -> SayRequest {
    SayRequest {
        message: message.into(),
    }
}

fn fail(code: Code, message: &str) -> FailRequest {
    FailRequest {
        code: code as i32,
        message: message.into(),
    }
}

/// A request carrying `options` in its extensions, as a channel reads them.
fn with<T>(message: T, options: CallOptions) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(options);
    request
}

fn strategy(strategy: Strategy) -> CallOptions {
    CallOptions::new().with_strategy(strategy)
}

async fn handle_of(client: &Addr<ClusterClient>) -> ClientHandle {
    client.send(GetHandle).await.expect("client alive")
}

async fn stub(client: &Addr<ClusterClient>) -> Stub {
    EchoClient::new(handle_of(client).await.channel("echo"))
}

/// The call error a channel's status carries as its source.
fn call_error(status: &Status) -> &CallError {
    std::error::Error::source(status)
        .and_then(|e| e.downcast_ref::<CallError>())
        .unwrap_or_else(|| panic!("a channel status carries its CallError: {status:?}"))
}

fn record<T>(response: &Response<T>) -> &CallRecord {
    response
        .extensions()
        .get::<CallRecord>()
        .expect("a channel response carries its CallRecord")
}

fn ids(attempts: &[cluster_client::Attempt]) -> Vec<(String, Code)> {
    attempts
        .iter()
        .map(|a| (a.node.id().to_owned(), a.code))
        .collect()
}

/// An echo server on a runtime of its own, registered as a node of `echo`:
/// [`kill`](Self::kill) shuts the runtime down, dropping its connections
/// at once, as a killed process's are.
struct Killable {
    runtime: Option<tokio::runtime::Runtime>,
    stats: Arc<grpc_cluster::echo::EchoStats>,
    _server: PlainEcho,
    _registrar: Registrar,
}

impl Killable {
    async fn start(registry: &RegistryConfig, service: EchoService) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        let id = service.node_id().to_owned();
        let server = runtime
            .spawn(PlainEcho::serve(service))
            .await
            .expect("server task");
        let registrar = register(registry, Node::new(&id, "echo", server.addr.to_string())).await;
        Self {
            runtime: Some(runtime),
            stats: server.stats.clone(),
            _server: server,
            _registrar: registrar,
        }
    }

    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn register(
    registry: &RegistryConfig,
    node: Result<Node, registry_actor::DecodeError>,
) -> Registrar {
    let etcd = registry_actor::connect(registry)
        .await
        .expect("etcd client");
    let registrar = Registrar::start(etcd, node.expect("node"), registry);
    let mut states = registrar.state_changes();
    tokio::time::timeout(EVENTUALLY, states.wait_for(|s| s.is_registered()))
        .await
        .expect("registered in time")
        .expect("registrar alive");
    registrar
}

/// A cluster of one node "a", its client and a stub over its channel.
async fn one_node() -> (Cluster, Addr<ClusterClient>, Stub) {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    let client = cluster.client(test_config(), 1).await;
    let stub = stub(&client).await;
    (cluster, client, stub)
}

/// What a caller put in its request's extensions.
#[derive(Debug, Clone, PartialEq)]
struct Marker;

#[actix_rt::test]
async fn a_response_carries_its_call_record_and_none_of_the_requests_extensions() {
    let (_cluster, _client, mut stub) = one_node().await;
    let mut request = Request::new(say("marked"));
    request.extensions_mut().insert(Marker);
    let reply = stub.say(request).await.expect("answered");
    assert_eq!(record(&reply).node.id(), "a");
    assert_eq!(reply.extensions().get::<Marker>(), None);
    assert_eq!(reply.into_inner().message, "marked");
}

#[actix_rt::test]
async fn round_robin_spreads_generated_client_calls_evenly_over_three_nodes() {
    let mut cluster = Cluster::start().await;
    for id in ["a", "b", "c"] {
        cluster.add(EchoService::new(id), |n| n).await;
    }
    let config = test_config().with_balancer(Balancer::RoundRobin);
    let client = cluster.client(config, 3).await;
    let mut stub = stub(&client).await;

    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..300 {
        let reply = stub.say(say(&format!("m{i}"))).await.expect("answered");
        let node = record(&reply).node.id().to_owned();
        let reply = reply.into_inner();
        assert_eq!(reply.message, format!("m{i}"));
        assert_eq!(
            reply.node_id, node,
            "the record names the node that answered"
        );
        *per_node.entry(node).or_default() += 1;
    }
    let counts: Vec<usize> = per_node.values().copied().collect();
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    let (min, max) = (counts.iter().min(), counts.iter().max());
    assert!(
        max.zip(min).is_some_and(|(max, min)| max - min <= 1),
        "round_robin spreads evenly: {per_node:?}"
    );
    for id in ["a", "b", "c"] {
        assert_eq!(
            cluster.node(id).stats().processed() as usize,
            per_node[id],
            "the servers saw what the client counted"
        );
    }
}

#[actix_rt::test]
async fn invalid_argument_is_not_retried_and_unavailable_moves_to_untried_nodes() {
    let mut cluster = Cluster::start().await;
    for id in ["a", "b", "c"] {
        cluster.add(EchoService::new(id), |n| n).await;
    }
    let client = cluster.client(test_config(), 3).await;
    let mut stub = stub(&client).await;
    let processed = |cluster: &Cluster| -> u64 {
        ["a", "b", "c"]
            .iter()
            .map(|id| cluster.node(id).stats().processed())
            .sum()
    };

    let options = strategy(Strategy::Failover).with_retries(2);
    let status = stub
        .fail(with(fail(Code::InvalidArgument, "bad"), options.clone()))
        .await
        .expect_err("the node fails it");
    assert_eq!(status.code(), Code::InvalidArgument);
    let err = call_error(&status);
    assert_eq!(err.attempts().len(), 1, "INVALID_ARGUMENT is final: {err}");
    assert_eq!(processed(&cluster), 1, "one node saw it once");

    let status = stub
        .fail(with(fail(Code::Unavailable, "down"), options))
        .await
        .expect_err("every node fails it");
    assert_eq!(status.code(), Code::Unavailable);
    let tried: BTreeSet<String> = call_error(&status)
        .attempts()
        .iter()
        .map(|a| a.node.id().to_owned())
        .collect();
    assert_eq!(tried.len(), 3, "failover tries each node once: {status:?}");
    assert_eq!(processed(&cluster), 4);
}

/// The policy of a channel request is its method's, looked up by the path
/// the generated client sends or by the bare method name.
#[actix_rt::test]
async fn a_method_table_sets_the_policy_of_channel_requests_by_path_or_name() {
    let mut cluster = Cluster::start().await;
    for id in ["a", "b", "c"] {
        cluster.add(EchoService::new(id), |n| n).await;
    }
    let failfast = MethodConfig::default().with_strategy(Strategy::Failfast);
    let configs = [
        (None, 3),
        (Some("/echo.v1.Echo/Fail"), 1),
        (Some("Fail"), 1),
        (Some("Say"), 3),
    ];
    for (key, attempts) in configs {
        let mut config = test_config()
            .with_strategy(Strategy::Failover)
            .with_retries(2);
        if let Some(key) = key {
            let table = ServiceConfig::default().with_method(key, failfast.clone());
            config = config.with_service("echo", table);
        }
        let client = cluster.client(config, 3).await;
        let status = stub(&client)
            .await
            .fail(fail(Code::Unavailable, "down"))
            .await
            .expect_err("every node fails it");
        assert_eq!(
            call_error(&status).attempts().len(),
            attempts,
            "method table {key:?}: {status:?}"
        );
    }
}

#[actix_rt::test]
async fn failretry_over_the_channel_retries_on_the_same_node_as_a_call_does() {
    let mut cluster = Cluster::start().await;
    for id in ["a", "b"] {
        cluster.add(EchoService::new(id), |n| n).await;
    }
    let client = cluster.client(test_config(), 2).await;
    let mut stub = stub(&client).await;
    let options = strategy(Strategy::Failretry).with_retries(2);

    let by_call = client
        .send(
            Call::new("echo", FAIL, fail(Code::Unavailable, "down")).with_options(options.clone()),
        )
        .await
        .expect("client alive")
        .expect_err("the node fails it");
    let status = stub
        .fail(with(fail(Code::Unavailable, "down"), options))
        .await
        .expect_err("the node fails it");
    let by_channel = call_error(&status);

    for err in [&by_call, by_channel] {
        let nodes: BTreeSet<&str> = err.attempts().iter().map(|a| a.node.id()).collect();
        assert_eq!(err.attempts().len(), 3, "{err}");
        assert_eq!(nodes.len(), 1, "failretry stays on its node: {err}");
        assert!(err.attempts().iter().all(|a| a.code == Code::Unavailable));
    }
    assert_eq!(by_call.code(), by_channel.code());
}

#[actix_rt::test]
async fn forking_over_the_channel_takes_the_first_answer_and_cancels_the_rest_as_a_call_does() {
    let mut cluster = Cluster::start().await;
    let slow = Duration::from_secs(30);
    cluster
        .add(EchoService::new("a").with_slow_delay(slow), |n| n)
        .await;
    cluster
        .add(EchoService::new("b").with_slow_delay(slow), |n| n)
        .await;
    cluster.add(EchoService::new("c"), |n| n).await;
    let client = cluster.client(test_config(), 3).await;
    let mut stub = stub(&client).await;
    let request = || SlowRequest {
        message: "fork".into(),
        delay_ms: 0,
    };
    let options = strategy(Strategy::Forking(3));

    let by_call = client
        .send(Call::new("echo", SLOW, request()).with_options(options.clone()))
        .await
        .expect("client alive")
        .expect("the fast node answers");
    assert_eq!(by_call.message.node_id, "c");
    assert_cancelled(&cluster, 1, "the call").await;

    let by_channel = stub
        .slow(with(request(), options))
        .await
        .expect("the fast node answers");
    assert_eq!(ids(&record(&by_channel).attempts), ids(&by_call.attempts));
    assert_eq!(by_channel.into_inner().node_id, "c");
    assert_cancelled(&cluster, 2, "the channel").await;
}

/// Waits until the slow nodes "a" and "b" each saw `n` calls cancelled.
async fn assert_cancelled(cluster: &Cluster, n: u64, by: &str) {
    let cancelled = || {
        (
            cluster.node("a").stats().cancelled(),
            cluster.node("b").stats().cancelled(),
        )
    };
    let both = wait_until(EVENTUALLY, || std::future::ready(cancelled() == (n, n))).await;
    assert!(both, "{by} cancels the slow forks: {:?}", cancelled());
}

/// Hedging over the channel: the first node hangs, a hedge on the other
/// answers, and the hanging attempt is cancelled.
#[actix_rt::test]
async fn hedging_over_the_channel_answers_from_a_hedge_and_cancels_the_hung_attempt() {
    let mut cluster = Cluster::start().await;
    cluster
        .add(EchoService::new("a").with_hang(true), |n| n)
        .await;
    cluster.add(EchoService::new("b"), |n| n).await;
    let config = test_config()
        .with_balancer(Balancer::PickFirst)
        .with_strategy(Strategy::Hedging)
        .with_hedging(Duration::from_millis(50), 2, [Code::Unavailable]);
    let client = cluster.client(config, 2).await;
    let reply = stub(&client)
        .await
        .say(say("hedged"))
        .await
        .expect("the hedge answers");
    assert_eq!(ids(&record(&reply).attempts), [("b".to_owned(), Code::Ok)]);
    assert_eq!(reply.into_inner().node_id, "b");
    let a = cluster.node("a").stats();
    let cancelled = wait_until(EVENTUALLY, || std::future::ready(a.cancelled() == 1)).await;
    assert!(
        cancelled,
        "the hung attempt is cancelled (hung {})",
        a.hung()
    );
}

/// grpc-go's `TestRetryThrottling`, across both paths: a budget of half a
/// token per call and no reserve, so every count is exact; calls through the
/// channel and `Call`s alternate and draw from one budget.
#[actix_rt::test]
async fn the_retry_budget_is_shared_by_calls_and_channel_requests() {
    let mut cluster = Cluster::start().await;
    for id in ["a", "b"] {
        cluster.add(EchoService::new(id), |n| n).await;
    }
    let config = test_config().with_budget(0.5, 0);
    let client = cluster.client(config, 2).await;
    let handle = handle_of(&client).await;
    let mut stub = EchoClient::new(handle.channel("echo"));
    let options = strategy(Strategy::Failover).with_retries(1);
    assert_eq!(handle.budget_tokens("echo"), 0);

    // (through the channel?, attempts, budget refused?, milli-tokens after)
    let script = [
        (true, 1, true, 500),
        (false, 2, false, 0),
        (true, 1, true, 500),
        (false, 2, false, 0),
        (false, 1, true, 500),
        (true, 2, false, 0),
    ];
    for (step, (channel, attempts, refused, tokens)) in script.into_iter().enumerate() {
        let err = if channel {
            let status = stub
                .fail(with(fail(Code::Unavailable, "down"), options.clone()))
                .await
                .expect_err("both nodes fail it");
            call_error(&status).clone()
        } else {
            client
                .send(
                    Call::new("echo", FAIL, fail(Code::Unavailable, "down"))
                        .with_options(options.clone()),
                )
                .await
                .expect("client alive")
                .expect_err("both nodes fail it")
        };
        assert_eq!(err.attempts().len(), attempts, "step {step}: {err}");
        assert_eq!(err.budget_exhausted(), refused, "step {step}: {err}");
        assert_eq!(handle.budget_tokens("echo"), tokens, "step {step}");
    }
}

/// `kill -9` of one of three `echo-server` processes while four tasks call
/// `Say` through the channel with failover: no call fails, and no call tries
/// a node twice.
#[actix_rt::test]
async fn kill_9_of_one_node_under_channel_load_loses_no_call() {
    let _serial = one_at_a_time().await;
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let mut servers = start_processes(&etcd, &["ck-1", "ck-2", "ck-3"]).await;
    let config = test_config().with_strategy(Strategy::Failover);
    let client = ClusterClient::connect(&etcd.registry_config(), config)
        .await
        .expect("client");
    let seen = |n: usize| {
        let client = client.clone();
        move || {
            let client = client.clone();
            async move {
                matches!(client.send(ServiceStatus("echo".into())).await,
                    Ok(Ok(s)) if s.nodes.len() == n)
            }
        }
    };
    assert!(
        wait_until(EVENTUALLY, seen(3)).await,
        "the client sees 3 nodes"
    );
    let handle = handle_of(&client).await;

    type Outcome = Result<Vec<String>, Status>;
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let mut stub = EchoClient::new(handle.channel("echo"));
        let (outcomes, stop) = (outcomes.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            // Bounded: at most 5000 calls per task, whatever happens.
            for i in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut request = Request::new(say(&format!("w{w}-{i}")));
                request.set_timeout(Duration::from_secs(5));
                let outcome = stub.say(request).await.map(|reply| {
                    record(&reply)
                        .attempts
                        .iter()
                        .map(|a| a.node.addr().to_owned())
                        .collect()
                });
                outcomes.lock().expect("outcomes").push(outcome);
            }
        }));
    }
    let calls = || outcomes.lock().map(|o| o.len()).unwrap_or(0);
    let more_calls = |n: usize| {
        let target = calls() + n;
        move || std::future::ready(calls() >= target)
    };
    assert!(
        wait_until(EVENTUALLY, more_calls(100)).await,
        "the load runs"
    );

    let killed = servers[0].kill9();
    let victim = killed.addr.clone();
    let removed = wait_until(Duration::from_secs(30), || {
        let client = client.clone();
        let victim = victim.clone();
        async move {
            matches!(client.send(ServiceStatus("echo".into())).await,
                Ok(Ok(s)) if s.nodes.iter().all(|n| n.addr != victim))
        }
    })
    .await;
    assert!(removed, "the killed node leaves the client's set");
    assert!(
        wait_until(EVENTUALLY, more_calls(100)).await,
        "the load goes on"
    );
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker");
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    let failed: Vec<&Status> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} calls failed: {failed:?}",
        failed.len()
    );
    let mut failed_over = 0;
    for attempts in outcomes.iter().flatten() {
        let distinct: BTreeSet<&String> = attempts.iter().collect();
        assert_eq!(
            distinct.len(),
            attempts.len(),
            "a node tried twice: {attempts:?}"
        );
        if attempts.len() > 1 {
            failed_over += 1;
            assert!(
                attempts[..attempts.len() - 1].iter().all(|a| *a == victim),
                "only the killed node fails: {attempts:?}"
            );
        }
    }
    assert!(
        failed_over > 0,
        "some call met the killed node and failed over"
    );
    eprintln!(
        "CHANNEL kill-9 failover: calls {} failed over {failed_over}",
        outcomes.len()
    );
}

#[actix_rt::test]
async fn server_streaming_count_returns_all_replies_in_order() {
    let (_cluster, _client, mut stub) = one_node().await;

    let response = stub
        .count(CountRequest {
            message: "n".into(),
            n: 50,
            interval_ms: 0,
        })
        .await
        .expect("the stream opens");
    assert_eq!(record(&response).node.id(), "a");
    let mut stream = response.into_inner();
    let mut got = Vec::new();
    while let Some(reply) = stream.message().await.expect("no error") {
        got.push(reply.message);
    }
    let expected: Vec<String> = (1..=50).map(|i| format!("n {i}")).collect();
    assert_eq!(got, expected);
}

/// A killable node `first` and a node "b", called by failover through a stub
/// whose `pick_first` balancer takes `first` while it is listed.
async fn killable_first(first: EchoService) -> (Cluster, Killable, Addr<ClusterClient>, Stub) {
    let mut cluster = Cluster::start().await;
    let killable = Killable::start(&cluster.registry, first).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    let config = test_config()
        .with_balancer(Balancer::PickFirst)
        .with_strategy(Strategy::Failover);
    let client = cluster.client(config, 2).await;
    let stub = stub(&client).await;
    (cluster, killable, client, stub)
}

#[actix_rt::test]
async fn a_node_killed_before_the_response_headers_is_retried_on_another() {
    // pick_first takes "a-hang" first: it accepts Count and never answers.
    let (_cluster, mut hang, _client, mut stub) =
        killable_first(EchoService::new("a-hang").with_hang(true)).await;

    let call = tokio::spawn(async move {
        stub.count(CountRequest {
            message: "c".into(),
            n: 5,
            interval_ms: 0,
        })
        .await
    });
    let received = wait_until(EVENTUALLY, || std::future::ready(hang.stats.hung() == 1)).await;
    assert!(received, "the hanging node received the call");
    hang.kill();

    let response = call.await.expect("task").expect("failed over to b");
    assert_eq!(
        ids(&record(&response).attempts),
        [
            ("a-hang".to_owned(), Code::Unavailable),
            ("b".to_owned(), Code::Ok)
        ]
    );
    let mut stream = response.into_inner();
    let mut got = Vec::new();
    while let Some(reply) = stream.message().await.expect("no error") {
        assert_eq!(reply.node_id, "b");
        got.push(reply.message);
    }
    assert_eq!(got, ["c 1", "c 2", "c 3", "c 4", "c 5"]);
}

/// An open stream counts as a call in flight on its node (what
/// `least_request` balances on) until it ends.
#[actix_rt::test]
async fn an_open_stream_counts_in_flight_until_it_ends() {
    let (_cluster, client, mut stub) = one_node().await;
    let in_flight = || {
        let client = client.clone();
        async move {
            match client.send(ServiceStatus("echo".into())).await {
                Ok(Ok(status)) => status.node("a").map(|n| n.in_flight),
                _ => None,
            }
        }
    };
    let response = stub
        .count(CountRequest {
            message: "c".into(),
            n: 2,
            interval_ms: 200,
        })
        .await
        .expect("the stream opens");
    assert_eq!(in_flight().await, Some(1), "the open stream is in flight");
    let mut stream = response.into_inner();
    let mut got = 0;
    while stream.message().await.expect("no error").is_some() {
        got += 1;
    }
    assert_eq!(got, 2);
    let ended = wait_until(EVENTUALLY, || async { in_flight().await == Some(0) }).await;
    assert!(ended, "an ended stream is not counted in flight");
}

#[actix_rt::test]
async fn a_node_killed_mid_stream_gives_the_error_to_the_caller() {
    let (cluster, mut victim, _client, mut stub) = killable_first(EchoService::new("a")).await;

    let n = 1000;
    let response = stub
        .count(CountRequest {
            message: "c".into(),
            n,
            interval_ms: 10,
        })
        .await
        .expect("the stream opens on a");
    assert_eq!(record(&response).node.id(), "a");
    let mut stream = response.into_inner();
    for i in 1..=3 {
        let reply = stream.message().await.expect("ok").expect("a reply");
        assert_eq!(reply.message, format!("c {i}"));
    }
    victim.kill();
    let mut received = 3;
    let error = loop {
        match stream.message().await {
            Ok(Some(reply)) => {
                assert_eq!(reply.node_id, "a", "no reply from elsewhere");
                received += 1;
            }
            Ok(None) => panic!("the stream ended cleanly after {received} replies"),
            Err(status) => break status,
        }
    };
    assert!(received < n, "the stream broke before its end");
    assert_ne!(error.code(), Code::Ok);
    assert_eq!(
        cluster.node("b").stats().processed(),
        0,
        "nothing was replayed on b"
    );
}

type Lines = futures_util::stream::Iter<std::vec::IntoIter<SayRequest>>;

/// Chats 20 lines on one node's stub, the request made by `request` from
/// its outbound stream; checks every line comes back and the node
/// processed each.
async fn chat_echoes_every_line(request: impl FnOnce(Lines) -> Request<Lines>) {
    let (cluster, _client, mut stub) = one_node().await;
    let messages: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
    let lines = futures_util::stream::iter(messages.iter().map(|m| say(m)).collect::<Vec<_>>());
    let response = stub.chat(request(lines)).await.expect("the stream opens");
    let mut stream: Streaming<SayReply> = response.into_inner();
    let mut got = Vec::new();
    while let Some(reply) = stream.message().await.expect("no error") {
        got.push(reply.message);
    }
    assert_eq!(got, messages);
    assert_eq!(cluster.node("a").stats().processed(), 20);
}

#[actix_rt::test]
async fn bidi_chat_echoes_every_message() {
    chat_echoes_every_line(Request::new).await;
}

/// A failfast request sends its body once, as the caller streams it, with
/// nothing kept for another attempt.
#[actix_rt::test]
async fn bidi_chat_over_a_failfast_request_echoes_every_message() {
    chat_echoes_every_line(|lines| with(lines, strategy(Strategy::Failfast))).await;
}

#[actix_rt::test]
async fn a_request_body_over_the_retry_buffer_is_sent_once() {
    let mut cluster = Cluster::start().await;
    for id in ["a", "b"] {
        cluster.add(EchoService::new(id), |n| n).await;
    }
    let config = test_config().with_retry_buffer(1024);
    let client = cluster.client(config, 2).await;
    let mut stub = stub(&client).await;
    let options = strategy(Strategy::Failover).with_retries(1);
    let processed = |cluster: &Cluster| -> u64 {
        ["a", "b"]
            .iter()
            .map(|id| cluster.node(id).stats().processed())
            .sum()
    };

    let small = stub
        .fail(with(fail(Code::Unavailable, "small"), options.clone()))
        .await
        .expect_err("both nodes fail it");
    assert_eq!(
        call_error(&small).attempts().len(),
        2,
        "a small body is retried"
    );
    assert_eq!(processed(&cluster), 2);

    let big = "x".repeat(4096);
    let status = stub
        .fail(with(fail(Code::Unavailable, &big), options))
        .await
        .expect_err("the node fails it");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        call_error(&status).attempts().len(),
        1,
        "a body past the buffer is not sent again"
    );
    assert_eq!(processed(&cluster), 3, "sent once");
}

/// What the middle service of a chain saw and did.
#[derive(Debug, Default, Clone)]
struct Hop {
    grpc_timeout: Option<Duration>,
    request_id: Option<String>,
    /// Its own remaining deadline when it called on.
    remaining_at_send: Option<Duration>,
}

/// Echo A of the chain: answers `Say` by calling `Say` on the `echo-b`
/// service through a channel, with the options inherited from its caller.
struct Relay {
    handle: ClientHandle,
    seen: Arc<Mutex<Hop>>,
}

/// A `grpc-timeout` value as sent by tonic and this client (`u`, `m`, `S`).
fn parse_timeout(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "u" => Some(Duration::from_micros(n)),
        "m" => Some(Duration::from_millis(n)),
        "S" => Some(Duration::from_secs(n)),
        _ => None,
    }
}

fn header(request_metadata: &tonic::metadata::MetadataMap, key: &str) -> Option<String> {
    request_metadata
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tonic::async_trait]
impl Echo for Relay {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let options = CallOptions::inherit(&request);
        let started = Instant::now();
        let grpc_timeout =
            header(request.metadata(), "grpc-timeout").and_then(|t| parse_timeout(&t));
        let request_id = header(request.metadata(), "x-request-id");
        let mut outbound = Request::new(request.into_inner());
        outbound.extensions_mut().insert(options);
        {
            let mut seen = self.seen.lock().expect("seen");
            seen.grpc_timeout = grpc_timeout;
            seen.request_id = request_id;
            seen.remaining_at_send = grpc_timeout.map(|t| t.saturating_sub(started.elapsed()));
        }
        EchoClient::new(self.handle.channel("echo-b"))
            .say(outbound)
            .await
    }

    async fn slow(&self, _: Request<SlowRequest>) -> Result<Response<SayReply>, Status> {
        Err(Status::unimplemented("relay"))
    }

    async fn fail(&self, _: Request<FailRequest>) -> Result<Response<SayReply>, Status> {
        Err(Status::unimplemented("relay"))
    }

    type CountStream = ReplyStream;

    async fn count(&self, _: Request<CountRequest>) -> Result<Response<ReplyStream>, Status> {
        Err(Status::unimplemented("relay"))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        _: Request<Streaming<SayRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        Err(Status::unimplemented("relay"))
    }
}

/// Serves `relay` on a fresh loopback port until the sender is dropped.
async fn serve_relay(relay: Relay) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    });
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(EchoServer::new(relay))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    (addr, stop)
}

#[actix_rt::test]
async fn a_two_hop_chain_keeps_the_deadline_request_id_and_trace() {
    let cluster = Cluster::start().await;
    let b = EchoService::new("b").with_header_log(true);
    let b_stats = b.stats();
    let b_server = PlainEcho::serve(b).await;
    let _b_registration = register(
        &cluster.registry,
        Node::new("b", "echo-b", b_server.addr.to_string()),
    )
    .await;
    // One client for both hops: the test's calls and the relay's.
    let config = test_config().with_request_id(true);
    let client = cluster.client(config, 0).await;
    let seen = Arc::new(Mutex::new(Hop::default()));
    let relay = Relay {
        handle: handle_of(&client).await,
        seen: seen.clone(),
    };
    let (a_addr, _stop_a) = serve_relay(relay).await;
    let _a_registration = register(
        &cluster.registry,
        Node::new("a", "echo", a_addr.to_string()),
    )
    .await;
    let sees_a = wait_until(EVENTUALLY, || {
        let client = client.clone();
        async move {
            matches!(client.send(ServiceStatus("echo".into())).await,
                Ok(Ok(s)) if s.nodes.len() == 1)
        }
    })
    .await;
    assert!(sees_a, "the client sees A");
    let mut stub = stub(&client).await;

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = Request::new(say("through"));
    request.set_timeout(Duration::from_secs(2));
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("value"));
    let reply = stub.say(request).await.expect("the chain answers");
    assert_eq!(reply.into_inner().node_id, "b");

    let hop = seen.lock().expect("seen").clone();
    let a_timeout = hop.grpc_timeout.expect("A got a deadline");
    assert!(a_timeout <= Duration::from_secs(2), "{hop:?}");
    let b_timeouts = b_stats.grpc_timeouts();
    let b_timeout = b_timeouts
        .first()
        .and_then(|t| parse_timeout(t))
        .expect("B got a deadline");
    let remaining = hop.remaining_at_send.expect("A's remaining deadline");
    assert!(
        b_timeout <= remaining,
        "B's deadline ({b_timeout:?}) is no later than A's remaining one ({remaining:?})"
    );
    let a_id = hop.request_id.clone().expect("A got a request id");
    assert_eq!(b_stats.request_ids(), [a_id], "B sees A's request id");
    assert_eq!(
        b_stats.traceparents(),
        [traceparent],
        "B sees the caller's trace"
    );
}
