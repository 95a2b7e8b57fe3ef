//! Metrics end to end: a scripted run through a real etcd, a node that refuses
//! connections and a server-kit node, then `/metrics` scraped over HTTP and
//! every counter checked against the script.
//!
//! The process's global recorder belongs to the scripted run; the other test
//! records on a recorder of its own.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cluster_client::{
    Balancer, Call, CallOptions, ClientConfig, EjectionConfig, GetHandle, ServiceConfig, Strategy,
};
use grpc_cluster::echo::{SayRequest, SlowRequest, SAY, SLOW};
use grpc_cluster::metrics::MetricsConfig;
use grpc_cluster::server::governor::clock::FakeRelativeClock;
use grpc_cluster::server::{RateLimitConfig, ServeBuilder};
use registry_actor::metrics as names;
use support::cluster::Cluster;
use support::exposition::{free_port, scrape, Exposition};
use support::server_kit::{echo_config, start_echo};
use support::{wait_until, EVENTUALLY};
use tonic::Code;

/// A series (name, labels) and the value the script gives it.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], usize);

const SAY_PATH: &str = "/echo.v1.Echo/Say";
const SLOW_PATH: &str = "/echo.v1.Echo/Slow";

/// Calls retried once (the dead node first, then the live one): as many as
/// the dead node's failures that eject it.
const RETRIED: usize = 3;
/// Calls after the ejection, straight to the live node.
const DIRECT: usize = 4;
/// `Slow` calls the method limit admits (its burst; the limiter's clock never moves).
const ADMITTED: usize = 2;
/// `Slow` calls past it, refused.
const RATE_LIMITED: usize = 3;

#[actix_rt::test]
async fn a_scripted_run_exports_exactly_its_counts() {
    let metrics = grpc_cluster::metrics::install(
        &MetricsConfig::default().with_listen(format!("127.0.0.1:{}", free_port())),
    )
    .expect("the recorder installs and the listener binds");
    let addr = metrics.listen_addr().expect("served");

    let mut cluster = Cluster::start().await;
    // A value no decoder accepts, read by both watches of `echo` (the
    // client's and the server's own instance count).
    let mut etcd = cluster.etcd.client().await.expect("etcd client");
    etcd.put(
        format!("{}/echo/broken", cluster.registry.prefix()),
        "not json",
        None,
    )
    .await
    .expect("put");
    // `pick_first` takes nodes in id order: the dead one while it is pickable.
    cluster.add_dead("a-dead").await;
    let server = ServeBuilder::new(
        echo_config(RateLimitConfig::default().with_method(SLOW_PATH, 1, ADMITTED as u32))
            .with_node_id("b-live"),
    )
    .clock(FakeRelativeClock::default());
    let (serving, _) = start_echo("b-live", server, Some(cluster.registry.clone())).await;

    let service = ServiceConfig::default()
        .with_balancer(Balancer::PickFirst)
        .with_budget(1.0, 1000)
        .with_ejection(
            EjectionConfig::default()
                .with_failures(RETRIED as u32)
                .with_base_time(Duration::from_secs(600))
                .with_max_time(Duration::from_secs(600))
                .with_max_share(0.5),
        );
    let config = ClientConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_retries(1)
        .with_service("echo", service);
    let client = cluster.client(config, 2).await;
    let handle = client.send(GetHandle).await.expect("client alive");

    let say = || {
        Call::new(
            "echo",
            SAY,
            SayRequest {
                message: "hi".into(),
            },
        )
        .with_options(CallOptions::new().with_strategy(Strategy::Failover))
    };
    for i in 0..RETRIED {
        let reply = handle
            .call(say())
            .await
            .expect("failover reaches the live node");
        let tried: Vec<_> = reply
            .attempts
            .iter()
            .map(|a| (a.node.id(), a.code))
            .collect();
        assert_eq!(
            tried,
            [("a-dead", Code::Unavailable), ("b-live", Code::Ok)],
            "call {i}"
        );
    }
    let ejected = wait_until(EVENTUALLY, || {
        let handle = handle.clone();
        async move {
            handle
                .status("echo")
                .await
                .is_ok_and(|s| s.nodes.iter().any(|n| n.id == "a-dead" && n.ejected))
        }
    })
    .await;
    assert!(ejected, "the dead node is ejected after {RETRIED} failures");
    for _ in 0..DIRECT {
        let reply = handle.call(say()).await.expect("the live node answers");
        assert_eq!(reply.attempts.len(), 1);
    }
    let slow = || {
        Call::new(
            "echo",
            SLOW,
            SlowRequest {
                message: "slow".into(),
                delay_ms: 0,
            },
        )
        .with_options(CallOptions::new().with_strategy(Strategy::Failfast))
    };
    for _ in 0..ADMITTED {
        handle.call(slow()).await.expect("within the burst");
    }
    for _ in 0..RATE_LIMITED {
        let err = handle.call(slow()).await.expect_err("past the burst");
        assert_eq!(err.code(), Code::ResourceExhausted);
    }

    // The server records a request when its response ends, just after the
    // client has it: poll until the last one is in.
    let total_requests = (RETRIED + DIRECT + ADMITTED + RATE_LIMITED) as f64;
    let mut exposition = Exposition::default();
    let complete = wait_until(EVENTUALLY, || {
        let (status, body) = scrape(addr);
        assert!(status.contains(" 200"), "{status}");
        exposition = Exposition::parse(&body);
        let served: f64 = exposition
            .named(names::SERVER_REQUESTS)
            .map(|s| s.value)
            .sum();
        std::future::ready(served >= total_requests)
    })
    .await;
    assert!(
        complete,
        "the server records every request: {:?}",
        exposition.named(names::SERVER_REQUESTS).collect::<Vec<_>>()
    );
    let e = &exposition;
    let count = |suffix: &str| format!("{suffix}_count");

    // Client.
    let client_counts: [Expected<'_>; 13] = [
        (
            names::CLIENT_CALLS,
            &[("service", "echo"), ("method", SAY_PATH), ("code", "OK")],
            RETRIED + DIRECT,
        ),
        (
            names::CLIENT_CALLS,
            &[("service", "echo"), ("method", SLOW_PATH), ("code", "OK")],
            ADMITTED,
        ),
        (
            names::CLIENT_CALLS,
            &[
                ("service", "echo"),
                ("method", SLOW_PATH),
                ("code", "RESOURCE_EXHAUSTED"),
            ],
            RATE_LIMITED,
        ),
        (
            names::CLIENT_ATTEMPTS,
            &[
                ("service", "echo"),
                ("method", SAY_PATH),
                ("code", "UNAVAILABLE"),
                ("kind", "first"),
            ],
            RETRIED,
        ),
        (
            names::CLIENT_ATTEMPTS,
            &[
                ("service", "echo"),
                ("method", SAY_PATH),
                ("code", "OK"),
                ("kind", "retry"),
            ],
            RETRIED,
        ),
        (
            names::CLIENT_ATTEMPTS,
            &[
                ("service", "echo"),
                ("method", SAY_PATH),
                ("code", "OK"),
                ("kind", "first"),
            ],
            DIRECT,
        ),
        (
            names::CLIENT_ATTEMPTS,
            &[
                ("service", "echo"),
                ("method", SLOW_PATH),
                ("code", "OK"),
                ("kind", "first"),
            ],
            ADMITTED,
        ),
        (
            names::CLIENT_ATTEMPTS,
            &[
                ("service", "echo"),
                ("method", SLOW_PATH),
                ("code", "RESOURCE_EXHAUSTED"),
                ("kind", "first"),
            ],
            RATE_LIMITED,
        ),
        (
            &count(names::CLIENT_CALL_DURATION),
            &[("service", "echo"), ("method", SAY_PATH)],
            RETRIED + DIRECT,
        ),
        (
            &count(names::CLIENT_CALL_DURATION),
            &[("service", "echo"), ("method", SLOW_PATH)],
            ADMITTED + RATE_LIMITED,
        ),
        (names::CLIENT_EJECTIONS, &[("service", "echo")], 1),
        (
            names::CLIENT_NODES,
            &[("service", "echo"), ("state", "pickable")],
            1,
        ),
        (
            names::CLIENT_NODES,
            &[("service", "echo"), ("state", "ejected")],
            1,
        ),
    ];
    // Server and registry.
    let server_counts: [Expected<'_>; 14] = [
        (
            names::CLIENT_NODES,
            &[("service", "echo"), ("state", "held")],
            0,
        ),
        (
            names::SERVER_REQUESTS,
            &[("method", SAY_PATH), ("code", "OK")],
            RETRIED + DIRECT,
        ),
        (
            names::SERVER_REQUESTS,
            &[("method", SLOW_PATH), ("code", "OK")],
            ADMITTED,
        ),
        (
            names::SERVER_REQUESTS,
            &[("method", SLOW_PATH), ("code", "RESOURCE_EXHAUSTED")],
            RATE_LIMITED,
        ),
        (
            &count(names::SERVER_REQUEST_DURATION),
            &[("method", SAY_PATH)],
            RETRIED + DIRECT,
        ),
        (
            &count(names::SERVER_REQUEST_DURATION),
            &[("method", SLOW_PATH)],
            ADMITTED + RATE_LIMITED,
        ),
        (
            names::SERVER_RATE_LIMITED,
            &[("method", SLOW_PATH), ("scope", "method")],
            RATE_LIMITED,
        ),
        (names::SERVER_IN_FLIGHT, &[], 0),
        (
            names::REGISTRATION_UP,
            &[("service", "echo"), ("node", "a-dead")],
            1,
        ),
        (
            names::REGISTRATION_UP,
            &[("service", "echo"), ("node", "b-live")],
            1,
        ),
        (names::REGISTRY_DECODE_ERRORS, &[("service", "echo")], 2),
        (names::REGISTRY_RECONNECTS, &[("service", "echo")], 0),
        (names::REGISTRY_RESYNCS, &[("service", "echo")], 0),
        (
            names::CLIENT_CALLS,
            &[
                ("service", "echo"),
                ("method", SAY_PATH),
                ("code", "UNAVAILABLE"),
            ],
            0,
        ),
    ];
    let mut wrong = Vec::new();
    for (name, labels, want) in client_counts.iter().chain(&server_counts) {
        let got = e.value(name, labels).unwrap_or(0.0);
        if got != *want as f64 {
            wrong.push(format!("{name}{labels:?} = {got}, expected {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Only the series the script made: every exported series of these
    // families is one of those listed (and no budget refusal happened).
    let listed: Vec<(String, BTreeMap<String, String>)> = client_counts
        .iter()
        .chain(&server_counts)
        .filter(|(_, _, want)| *want > 0)
        .map(|(name, labels, _)| (name.to_string(), label_map(labels)))
        .collect();
    for family in [
        names::CLIENT_CALLS,
        names::CLIENT_ATTEMPTS,
        names::SERVER_REQUESTS,
        names::SERVER_RATE_LIMITED,
    ] {
        for s in e.named(family) {
            let key = (family.to_owned(), s.labels.clone());
            assert!(
                listed.contains(&key),
                "unexpected series {family}{:?} = {}",
                s.labels,
                s.value
            );
        }
    }
    assert_eq!(e.named(names::CLIENT_BUDGET_EXHAUSTED).count(), 0);

    // The label sets are those of the contract.
    let label_sets: [(&str, &[&str]); 14] = [
        (names::CLIENT_CALLS, &["code", "method", "service"]),
        (
            names::CLIENT_ATTEMPTS,
            &["code", "kind", "method", "service"],
        ),
        (&count(names::CLIENT_CALL_DURATION), &["method", "service"]),
        (
            &format!("{}_bucket", names::CLIENT_CALL_DURATION),
            &["le", "method", "service"],
        ),
        (names::CLIENT_NODES, &["service", "state"]),
        (names::CLIENT_EJECTIONS, &["service"]),
        (names::SERVER_REQUESTS, &["code", "method"]),
        (
            &format!("{}_bucket", names::SERVER_REQUEST_DURATION),
            &["le", "method"],
        ),
        (names::SERVER_RATE_LIMITED, &["method", "scope"]),
        (names::SERVER_IN_FLIGHT, &[]),
        (names::REGISTRATION_UP, &["node", "service"]),
        (names::REGISTRY_RECONNECTS, &["service"]),
        (names::REGISTRY_RESYNCS, &["service"]),
        (names::REGISTRY_DECODE_ERRORS, &["service"]),
    ];
    for (name, keys) in label_sets {
        let mut seen = 0;
        for s in e.named(name) {
            let got: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            assert_eq!(got, keys, "labels of {name}");
            seen += 1;
        }
        assert!(seen > 0, "{name} is exported");
    }
    // Buckets from 100 µs to 10 s.
    let bounds: BTreeSet<String> = e
        .named(&format!("{}_bucket", names::CLIENT_CALL_DURATION))
        .map(|s| s.labels["le"].clone())
        .collect();
    for le in ["0.0001", "10", "+Inf"] {
        assert!(bounds.contains(le), "bucket {le} in {bounds:?}");
    }

    drop(serving);
}

fn label_map(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `registration_up` follows the registrar: 1 once registered, 0 when paused,
/// and 0 when the registrar is dropped without deregistering. Recorded on a
/// recorder of this test's own (the handle binds when the registrar starts).
#[actix_rt::test]
async fn registration_up_follows_the_registrar_to_its_end() {
    use metrics_exporter_prometheus::PrometheusBuilder;
    use registry_actor::{Node, Registrar};

    let etcd = support::EtcdServer::start().await.expect("etcd");
    let registry = etcd.registry_config();
    let client = registry_actor::connect(&registry)
        .await
        .expect("etcd client");
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let node = Node::new("up-1", "gauged", "127.0.0.1:1").expect("node");
    let registrar =
        metrics::with_local_recorder(&recorder, || Registrar::start(client, node, &registry));
    let up = || {
        Exposition::parse(&handle.render()).value(
            names::REGISTRATION_UP,
            &[("service", "gauged"), ("node", "up-1")],
        )
    };
    let mut states = registrar.state_changes();
    tokio::time::timeout(EVENTUALLY, states.wait_for(|s| s.is_registered()))
        .await
        .expect("registered in time")
        .expect("registrar alive");
    assert_eq!(up(), Some(1.0));
    registrar.pause().await.expect("paused");
    let paused = wait_until(EVENTUALLY, || std::future::ready(up() == Some(0.0))).await;
    assert!(paused, "a paused registration is down: {:?}", up());
    registrar.resume().await.expect("resumed");
    tokio::time::timeout(EVENTUALLY, states.wait_for(|s| s.is_registered()))
        .await
        .expect("registered again in time")
        .expect("registrar alive");
    assert_eq!(up(), Some(1.0));
    drop(registrar);
    let down = wait_until(EVENTUALLY, || std::future::ready(up() == Some(0.0))).await;
    assert!(down, "a dropped registrar's gauge falls to 0: {:?}", up());
}
