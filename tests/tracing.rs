//! Spans end to end: the client's `call` and `attempt` spans over a real
//! etcd and real servers, and W3C trace context across two hops exported
//! through OpenTelemetry (in memory, no collector).

mod support;

use std::time::Duration;

use cluster_client::{
    Balancer, Call, CallOptions, ClientConfig, ClientHandle, GetHandle, ServiceConfig, Strategy,
};
use grpc_cluster::echo::{
    CountRequest, Echo, EchoClient, EchoServer, EchoService, FailRequest, ReplyStream, SayReply,
    SayRequest, SlowRequest, SAY,
};
use grpc_cluster::server::{RateLimitConfig, ServeBuilder};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::cluster::Cluster;
use support::server_kit::echo_config;
use support::spans::Captured;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

fn say(message: &str) -> Call<SayRequest, SayReply> {
    Call::new(
        "echo",
        SAY,
        SayRequest {
            message: message.into(),
        },
    )
}

/// `pick_first`, so the node first in id order is tried first.
fn pick_first() -> ClientConfig {
    ClientConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_retries(2)
        .with_service(
            "echo",
            ServiceConfig::default()
                .with_balancer(Balancer::PickFirst)
                .with_budget(1.0, 1000),
        )
}

#[actix_rt::test]
async fn a_failover_call_has_one_attempt_span_per_attempt_under_its_call_span() {
    let mut cluster = Cluster::start().await;
    cluster.add_dead("a-dead").await;
    cluster.add(EchoService::new("b-live"), |n| n).await;
    let client = cluster.client(pick_first(), 2).await;
    let handle = client.send(GetHandle).await.expect("client alive");
    let live_addr = cluster
        .node("b-live")
        .server
        .as_ref()
        .expect("live")
        .addr
        .to_string();

    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.layer(&["cluster_client"]));
    let _guard = tracing::subscriber::set_default(subscriber);
    let reply = handle
        .call(say("hi").with_options(CallOptions::new().with_strategy(Strategy::Failover)))
        .await
        .expect("failover reaches the live node");
    assert_eq!(reply.attempts.len(), 2, "{:?}", reply.attempts);

    let calls = captured.named("call");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    let field = |k: &str| call.fields.get(k).map(String::as_str);
    assert_eq!(field("rpc.system"), Some("grpc"));
    assert_eq!(field("rpc.service"), Some("echo.v1.Echo"));
    assert_eq!(field("rpc.method"), Some("Say"));
    assert_eq!(field("service"), Some("echo"));
    assert_eq!(field("strategy"), Some("failover"));
    assert_eq!(field("attempts"), Some("2"));
    assert_eq!(field("code"), Some("OK"));

    let attempts = captured.named("attempt");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    for a in &attempts {
        assert_eq!(a.parent, Some(call.id), "an attempt is a child of its call");
    }
    let fields: Vec<_> = attempts
        .iter()
        .map(|a| {
            let f = |k: &str| a.fields.get(k).cloned().unwrap_or_default();
            (f("node"), f("attempt"), f("kind"), f("code"))
        })
        .collect();
    assert_eq!(
        fields,
        [
            (
                "a-dead".into(),
                "1".into(),
                "first".into(),
                "UNAVAILABLE".into()
            ),
            ("b-live".into(), "2".into(), "retry".into(), "OK".into()),
        ]
    );
    // `server.address` is the node's address.
    assert_eq!(attempts[1].fields["server.address"], live_addr);
    let dead_addr = &attempts[0].fields["server.address"];
    assert!(
        dead_addr.starts_with("127.0.0.1:") && *dead_addr != live_addr,
        "{dead_addr}"
    );
}

/// A generated client's request through a `ClusterChannel` runs the same
/// observed plan as a `Call`: one `call` span, one `attempt` child per
/// attempt.
#[actix_rt::test]
async fn a_channel_request_has_the_same_call_and_attempt_spans() {
    let mut cluster = Cluster::start().await;
    cluster.add_dead("a-dead").await;
    cluster.add(EchoService::new("b-live"), |n| n).await;
    let client = cluster.client(pick_first(), 2).await;
    let handle = client.send(GetHandle).await.expect("client alive");
    let channel = handle
        .channel("echo")
        .with_options(CallOptions::new().with_strategy(Strategy::Failover));

    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.layer(&["cluster_client"]));
    let _guard = tracing::subscriber::set_default(subscriber);
    let reply = EchoClient::new(channel)
        .say(SayRequest {
            message: "hi".into(),
        })
        .await
        .expect("failover reaches the live node")
        .into_inner();
    assert_eq!(reply.node_id, "b-live");

    let calls = captured.named("call");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    let field = |k: &str| call.fields.get(k).map(String::as_str);
    assert_eq!(field("rpc.service"), Some("echo.v1.Echo"));
    assert_eq!(field("rpc.method"), Some("Say"));
    assert_eq!(field("service"), Some("echo"));
    assert_eq!(field("strategy"), Some("failover"));
    assert_eq!(field("attempts"), Some("2"));

    let attempts = captured.named("attempt");
    let fields: Vec<_> = attempts
        .iter()
        .map(|a| {
            assert_eq!(a.parent, Some(call.id), "an attempt is a child of its call");
            let f = |k: &str| a.fields.get(k).cloned().unwrap_or_default();
            (f("node"), f("kind"), f("code"))
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("a-dead".into(), "first".into(), "UNAVAILABLE".into()),
            ("b-live".into(), "retry".into(), "OK".into()),
        ]
    );
}

#[actix_rt::test]
async fn a_hedge_that_wins_cancels_the_first_attempt_and_its_span_says_so() {
    let mut cluster = Cluster::start().await;
    cluster
        .add(EchoService::new("a-hang").with_hang(true), |n| n)
        .await;
    cluster.add(EchoService::new("b-live"), |n| n).await;
    let config =
        pick_first().with_hedging(Duration::from_millis(20), 2, [tonic::Code::Unavailable]);
    let client = cluster.client(config, 2).await;
    let handle = client.send(GetHandle).await.expect("client alive");

    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.layer(&["cluster_client"]));
    let _guard = tracing::subscriber::set_default(subscriber);
    let reply = handle
        .call(say("hedged").with_options(CallOptions::new().with_strategy(Strategy::Hedging)))
        .await
        .expect("the hedge answers");
    assert_eq!(reply.node.id(), "b-live");

    let calls = captured.named("call");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(
        calls[0].fields.get("strategy").map(String::as_str),
        Some("hedging")
    );
    assert_eq!(calls[0].fields.get("code").map(String::as_str), Some("OK"));
    let attempts: Vec<_> = captured
        .named("attempt")
        .iter()
        .map(|a| {
            assert_eq!(a.parent, Some(calls[0].id));
            let f = |k: &str| a.fields.get(k).cloned().unwrap_or_default();
            (f("node"), f("kind"), f("code"))
        })
        .collect();
    assert_eq!(
        attempts,
        [
            ("a-hang".into(), "first".into(), "CANCELLED".into()),
            ("b-live".into(), "hedge".into(), "OK".into()),
        ],
        "the first attempt, still waiting when the hedge won, was cancelled"
    );
}

/// Relays `Say` to the `back` service through a cluster client, in its
/// request's span.
struct Relay {
    client: ClientHandle,
}

#[tonic::async_trait]
impl Echo for Relay {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let call = Call::new("back", SAY, request.into_inner());
        let reply = self.client.call(call).await.map_err(Status::from)?;
        Ok(Response::new(reply.message))
    }

    async fn slow(&self, _: Request<SlowRequest>) -> Result<Response<SayReply>, Status> {
        Err(Status::unimplemented("relay only says"))
    }

    async fn fail(&self, _: Request<FailRequest>) -> Result<Response<SayReply>, Status> {
        Err(Status::unimplemented("relay only says"))
    }

    type CountStream = ReplyStream;

    async fn count(&self, _: Request<CountRequest>) -> Result<Response<ReplyStream>, Status> {
        Err(Status::unimplemented("relay only says"))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        _: Request<tonic::Streaming<SayRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        Err(Status::unimplemented("relay only says"))
    }
}

#[actix_rt::test]
async fn a_trace_continues_across_two_hops() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("two-hops")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let cluster = Cluster::start().await;
    let config = ClientConfig::default().with_timeout(Duration::from_secs(5));
    let handle = cluster
        .start_client(config)
        .await
        .send(GetHandle)
        .await
        .expect("client alive");

    // back: an echo server; front: a relay to back. Both register themselves.
    let serve = |id: &str, service: &str| {
        echo_config(RateLimitConfig::default())
            .with_service(service)
            .with_node_id(id)
    };
    let back = ServeBuilder::new(serve("back-1", "back"))
        .add_service(EchoService::new("back-1").into_server())
        .signals(false)
        .registry(cluster.registry.clone())
        .start()
        .await
        .expect("back serves");
    let front = ServeBuilder::new(serve("front-1", "front"))
        .add_service(EchoServer::new(Relay {
            client: handle.clone(),
        }))
        .signals(false)
        .registry(cluster.registry.clone())
        .start()
        .await
        .expect("front serves");

    // The call is made inside the test's span, as an app's handler would.
    let call = Call::new(
        "front",
        SAY,
        SayRequest {
            message: "two hops".into(),
        },
    );
    let reply = async { handle.call(call).await }
        .instrument(tracing::info_span!("test"))
        .await
        .expect("the call goes through both hops");
    assert_eq!(reply.message.node_id, "back-1");
    drop(front);
    drop(back);

    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("exported spans");
    let named = |name: &str, attr: (&str, &str)| -> Vec<&SpanData> {
        spans
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == attr.0 && kv.value.as_str() == attr.1)
            })
            .collect()
    };
    let root = spans
        .iter()
        .find(|s| s.name == "test")
        .expect("the test's span");
    let trace = root.span_context.trace_id();
    let front_call = named("call", ("service", "front"));
    let back_call = named("call", ("service", "back"));
    let front_request = named("request", ("method", "/echo.v1.Echo/Say"));
    assert_eq!(front_call.len(), 1, "{spans:#?}");
    assert_eq!(back_call.len(), 1, "{spans:#?}");
    assert_eq!(
        front_request.len(),
        2,
        "one request span per hop: {spans:#?}"
    );
    for span in front_call.iter().chain(&back_call).chain(&front_request) {
        assert_eq!(
            span.span_context.trace_id(),
            trace,
            "{} {:?} is in the test's trace",
            span.name,
            span.attributes
        );
    }
    // Each server's request span is the child of the client attempt that
    // sent it: its parent came in the `traceparent`.
    let attempts: Vec<&SpanData> = spans.iter().filter(|s| s.name == "attempt").collect();
    for request in &front_request {
        assert!(
            attempts
                .iter()
                .any(|a| a.span_context.span_id() == request.parent_span_id),
            "the request span's parent is an attempt span: {request:#?}"
        );
    }
}
