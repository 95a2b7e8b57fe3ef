//! Security end to end: TLS and mutual TLS between real clients and servers
//! (certificates made at test time), servers and clients sharing an etcd
//! served over TLS with a password, callers named by their bearer tokens,
//! the caller header ignored unless trusted, and the bearer token kept off
//! plaintext hops to other hosts.

mod support;

use std::ffi::OsStr;
use std::time::Duration;

use actix::Addr;
use cluster_client::{
    Balancer, Call, CallError, CallOptions, ClientConfig, ClusterClient, Strategy,
};
use grpc_cluster::echo::{EchoClient, SayRequest, SAY};
use grpc_cluster::server::governor::clock::FakeRelativeClock;
use grpc_cluster::server::{AuthConfig, RateLimitConfig, ServeBuilder, ServerTlsConfig};
use registry_actor::testing::EtcdSecurity;
use registry_actor::{Node, Registrar, TlsConfig};
use support::certs::{Pem, TestCa};
use support::cluster::test_config;
use support::faults::{start_client, wait_listed, EchoProcess};
use support::server_kit::{echo_config, start_echo};
use support::{init_tracing, wait_until, EtcdServer, EVENTUALLY};
use tonic::transport::Channel;
use tonic::{Code, Request};

fn say() -> SayRequest {
    SayRequest {
        message: "hi".into(),
    }
}

async fn call(client: &Addr<ClusterClient>, strategy: Strategy) -> Result<String, CallError> {
    client
        .send(
            Call::new("echo", SAY, say()).with_options(CallOptions::new().with_strategy(strategy)),
        )
        .await
        .expect("client alive")
        .map(|reply| reply.message.node_id)
}

/// The server side of one TLS mode, as `echo-server` environment variables.
fn server_env<'a>(server: &'a Pem, client_ca: Option<&'a TestCa>) -> Vec<(&'a str, &'a OsStr)> {
    let mut env = vec![
        (
            "GRPC_CLUSTER__SERVER__TLS__CERT_FILE",
            server.cert.as_os_str(),
        ),
        (
            "GRPC_CLUSTER__SERVER__TLS__KEY_FILE",
            server.key.as_os_str(),
        ),
    ];
    if let Some(ca) = client_ca {
        env.push((
            "GRPC_CLUSTER__SERVER__TLS__CLIENT_CA_FILE",
            ca.ca_file.as_os_str(),
        ));
    }
    env
}

/// Round robin over two `echo-server` processes, then failover after one is
/// killed with SIGKILL, all over TLS (`mutual`: with client certificates).
async fn round_robin_and_failover(mutual: bool) {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd");
    let ca = TestCa::new(&etcd.data_dir().join("certs"), "ca");
    let server = ca.server();
    let env = server_env(&server, mutual.then_some(&ca));
    let mut a = EchoProcess::start_with_env(&etcd, "tls-a", &env).await;
    let b = EchoProcess::start_with_env(&etcd, "tls-b", &env).await;

    let mut tls = TlsConfig::default().with_ca_file(&ca.ca_file);
    if mutual {
        let client = ca.leaf("client", &["client.test"]);
        tls = tls.with_identity(client.cert, client.key);
    }
    let config = test_config()
        .with_balancer(Balancer::RoundRobin)
        .with_tls(tls);
    let (_registry, client) = start_client(&etcd.registry_config(), config).await;
    wait_listed(&client, &[&a, &b]).await;

    let mut served = Vec::new();
    for _ in 0..4 {
        served.push(call(&client, Strategy::Failfast).await.expect("TLS call"));
    }
    let to_a = served.iter().filter(|id| *id == "tls-a").count();
    assert_eq!(
        (to_a, served.len() - to_a),
        (2, 2),
        "round robin: {served:?}"
    );

    a.kill9();
    for i in 0..4 {
        let id = call(&client, Strategy::Failover)
            .await
            .unwrap_or_else(|e| panic!("call {i} after the kill: {e}"));
        assert_eq!(id, "tls-b");
    }
}

#[actix_rt::test]
async fn round_robin_and_failover_over_tls() {
    round_robin_and_failover(false).await;
}

#[actix_rt::test]
async fn round_robin_and_failover_over_mutual_tls() {
    round_robin_and_failover(true).await;
}

/// Server TLS with `ca`'s server certificate (for `127.0.0.1` and `localhost`).
fn identity_of(ca: &TestCa) -> ServerTlsConfig {
    let server = ca.server();
    ServerTlsConfig::default().with_identity(&server.cert, &server.key)
}

/// A TLS server registered in `etcd`, serving `echo` in this process.
async fn tls_server(
    etcd: &EtcdServer,
    id: &str,
    tls: ServerTlsConfig,
) -> (
    grpc_cluster::server::Serving,
    std::sync::Arc<grpc_cluster::echo::EchoStats>,
) {
    let config = echo_config(RateLimitConfig::default()).with_tls(tls);
    start_echo(id, ServeBuilder::new(config), Some(etcd.registry_config())).await
}

#[actix_rt::test]
async fn a_client_trusting_another_ca_fails_unavailable_naming_the_certificate() {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd");
    let dir = etcd.data_dir().join("certs");
    let ca = TestCa::new(&dir, "ca");
    let other = TestCa::new(&dir, "other");
    let (_serving, stats) = tls_server(&etcd, "tls-1", identity_of(&ca)).await;
    let config = test_config().with_tls(TlsConfig::default().with_ca_file(&other.ca_file));
    let (_registry, client) = start_client(&etcd.registry_config(), config).await;

    let err = call_when_listed(&client)
        .await
        .expect_err("an untrusted server");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let text = err.to_string().to_lowercase();
    assert!(text.contains("certificate"), "{text}");
    assert_eq!(stats.processed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_spawned_on_its_own_thread_calls_a_tls_server() {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd");
    let ca = TestCa::new(&etcd.data_dir().join("certs"), "ca");
    let (_serving, stats) = tls_server(&etcd, "spawned-tls-1", identity_of(&ca)).await;
    let config = test_config().with_tls(TlsConfig::default().with_ca_file(&ca.ca_file));
    let client = ClusterClient::spawn(&etcd.registry_config(), config).expect("the client starts");

    let reply = client
        .call(Call::new("echo", SAY, say()))
        .await
        .expect("a call over TLS");
    assert_eq!(reply.message.node_id, "spawned-tls-1");
    assert_eq!(stats.processed(), 1);
}

/// A call to a mutual-TLS server, from a client presenting `identity` (a
/// certificate of a CA the server does not trust) or none: refused before
/// the service, `UNAVAILABLE`, naming what to change in `[client.tls]`.
async fn refused_by_a_mutual_tls_server(foreign_identity: bool, names: &[&str]) {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd");
    let dir = etcd.data_dir().join("certs");
    let ca = TestCa::new(&dir, "ca");
    let (_serving, stats) = tls_server(
        &etcd,
        "mtls-1",
        identity_of(&ca).with_client_ca_file(&ca.ca_file),
    )
    .await;
    let mut tls = TlsConfig::default().with_ca_file(&ca.ca_file);
    if foreign_identity {
        let client = TestCa::new(&dir, "other").leaf("client", &["client.test"]);
        tls = tls.with_identity(client.cert, client.key);
    }
    let config = test_config().with_tls(tls);
    let (_registry, client) = start_client(&etcd.registry_config(), config).await;

    let err = call_when_listed(&client)
        .await
        .expect_err("refused by the server");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let text = err.to_string();
    for name in names {
        assert!(text.contains(name), "`{name}` in: {text}");
    }
    assert_eq!(stats.processed(), 0, "the call never reached the service");
}

#[actix_rt::test]
async fn a_client_without_a_certificate_is_refused_by_a_mutual_tls_server_and_told_to_set_one() {
    refused_by_a_mutual_tls_server(
        false,
        &["requires a client certificate", "client.tls.cert_file"],
    )
    .await;
}

#[actix_rt::test]
async fn a_client_whose_certificate_the_server_does_not_trust_is_told_so() {
    refused_by_a_mutual_tls_server(
        true,
        &["refused this client's certificate", "client.tls.cert_file"],
    )
    .await;
}

/// A TLS 1.3 front that sends nothing until the client's HTTP/2 connection
/// preface has arrived, as a proxy that makes its HTTP/2 codec on a
/// connection's first bytes does, then passes the connection on to the
/// cleartext server at `backend`. Its address.
async fn quiet_tls_front(ca: &TestCa, backend: std::net::SocketAddr) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject};

    let pem = ca.server();
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&pem.cert)
        .expect("certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pem.key).expect("key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server identity");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut front) = acceptor.accept(stream).await else {
                    return;
                };
                let mut preface = [0u8; 24];
                if front.read_exact(&mut preface).await.is_err() {
                    return;
                }
                let Ok(mut back) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                if back.write_all(&preface).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut front, &mut back).await;
                }
            });
        }
    });
    addr
}

#[actix_rt::test]
async fn a_tls_server_that_answers_only_after_the_client_preface_is_called() {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd");
    let ca = TestCa::new(&etcd.data_dir().join("certs"), "ca");
    let (backend, stats) = start_echo(
        "quiet-1",
        ServeBuilder::new(echo_config(RateLimitConfig::default())),
        None,
    )
    .await;
    let front = quiet_tls_front(&ca, backend.local_addr()).await;
    let _registered = register(&etcd.registry_config(), "quiet-1", &front.to_string()).await;
    let config = test_config().with_tls(TlsConfig::default().with_ca_file(&ca.ca_file));
    let (_registry, client) = start_client(&etcd.registry_config(), config).await;

    let served = call_when_listed(&client)
        .await
        .expect("a call over TLS 1.3");
    assert_eq!(served, "quiet-1");
    assert_eq!(stats.processed(), 1);
}

/// Registers node `far` of `echo` at a documentation address (TEST-NET-1,
/// `192.0.2.1:50051`): nothing is there, and tests check it is never dialled.
async fn register_far(registry: &registry_actor::RegistryConfig) -> Registrar {
    register(registry, "far", "192.0.2.1:50051").await
}

/// Registers node `id` of `echo` at `addr`, waiting until it is registered.
async fn register(registry: &registry_actor::RegistryConfig, id: &str, addr: &str) -> Registrar {
    let node = Node::new(id, "echo", addr).expect("node");
    let registrar = Registrar::start(
        registry_actor::connect(registry)
            .await
            .expect("etcd client"),
        node,
        registry,
    );
    let mut states = registrar.state_changes();
    tokio::time::timeout(EVENTUALLY, states.wait_for(|s| s.is_registered()))
        .await
        .expect("registered in time")
        .expect("registrar alive");
    registrar
}

/// The first call once the client sees one node of `echo` (failfast: one
/// attempt, its own error).
async fn call_when_listed(client: &Addr<ClusterClient>) -> Result<String, CallError> {
    let listed =
        support::faults::wait_status(client, support::EVENTUALLY, |s| s.nodes.len() == 1).await;
    assert!(listed.is_some(), "the client never listed the node");
    call(client, Strategy::Failfast).await
}

/// `Say` with `authorization: Bearer token` and `x-caller: claimed`, as set.
async fn say_as(
    client: &mut EchoClient<Channel>,
    token: Option<&str>,
    claimed: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut request = Request::new(say());
    let md = request.metadata_mut();
    if let Some(token) = token {
        md.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    if let Some(claimed) = claimed {
        md.insert("x-caller", claimed.parse().expect("ascii"));
    }
    client.say(request).await.map(drop)
}

async fn admitted_as(
    client: &mut EchoClient<Channel>,
    n: usize,
    token: Option<&str>,
    claimed: Option<&str>,
) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        match say_as(client, token, claimed).await {
            Ok(()) => ok += 1,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tokens_are_two_callers_and_claiming_another_name_changes_nothing() {
    init_tracing();
    let config = echo_config(RateLimitConfig::default().with_caller_rps(3)).with_auth(
        AuthConfig::default()
            .with_caller("alice", "token-of-alice")
            .with_caller("bob", "token-of-bob"),
    );
    let builder = ServeBuilder::new(config).clock(FakeRelativeClock::default());
    let (serving, _stats) = start_echo("auth-1", builder, None).await;
    let mut client = EchoClient::new(support::server_kit::channel(serving.local_addr()).await);

    // Alice claims to be bob, and to be someone new: still alice, 3 calls.
    assert_eq!(
        admitted_as(&mut client, 5, Some("token-of-alice"), Some("bob")).await,
        3
    );
    assert_eq!(
        admitted_as(&mut client, 5, Some("token-of-alice"), Some("fresh")).await,
        0
    );
    // Bob, on the same connection, has his whole bucket.
    assert_eq!(
        admitted_as(&mut client, 5, Some("token-of-bob"), None).await,
        3
    );
    // Without a valid token: refused before any limit.
    let err = say_as(&mut client, Some("token-of-carol"), Some("alice"))
        .await
        .expect_err("unknown token");
    assert_eq!(err.code(), Code::Unauthenticated);

    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_header_counts_only_when_trusted() {
    init_tracing();
    for (trusted, want) in [(false, 3), (true, 5)] {
        let config = echo_config(
            RateLimitConfig::default()
                .with_caller_rps(3)
                .with_trust_caller_header(trusted),
        );
        let builder = ServeBuilder::new(config).clock(FakeRelativeClock::default());
        let (serving, _stats) = start_echo("hdr-1", builder, None).await;
        let mut client = EchoClient::new(support::server_kit::channel(serving.local_addr()).await);
        // One peer, a new name on every call.
        let mut ok = 0;
        for i in 0..5 {
            let name = format!("rotated-{i}");
            ok += usize::from(say_as(&mut client, None, Some(&name)).await.is_ok());
        }
        assert_eq!(ok, want, "trusted: {trusted}");
        serving.handle().shutdown();
        serving.wait().await.expect("clean shutdown");
    }
}

#[actix_rt::test]
async fn a_token_is_not_sent_in_plaintext_to_a_non_loopback_address() {
    init_tracing();
    let etcd = EtcdServer::start().await.expect("etcd");
    let registry = etcd.registry_config();
    let _far = register_far(&registry).await;

    let config: ClientConfig = test_config()
        .with_token("s3cret-token")
        .with_connect_timeout(Duration::from_secs(30));
    let (_registry, client) = start_client(&registry, config).await;
    let err = call_when_listed(&client).await.expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("far") && text.contains("192.0.2.1:50051"),
        "{text}"
    );
    assert!(text.contains("client.allow_plaintext_token"), "{text}");
    assert!(!text.contains("s3cret-token"), "{text}");
    // Nothing was dialled: the node is neither failed nor ejected.
    let status = support::faults::echo_status(&client).await;
    assert_eq!(status.nodes.len(), 1);
    assert!(!status.nodes[0].ejected, "{:?}", status.nodes[0]);
    assert_eq!(status.nodes[0].consecutive_failures, 0);
}

#[actix_rt::test]
async fn servers_and_a_client_share_an_etcd_served_over_tls_with_a_password() {
    init_tracing();
    let etcd = EtcdServer::start_secured(
        EtcdSecurity::default()
            .with_client_cert_auth()
            .with_root_password("pw-of-root-2b1e"),
    )
    .await
    .expect("secured etcd");
    let registry = etcd.registry_config();
    let mut servers = Vec::new();
    for id in ["sec-1", "sec-2"] {
        let config = echo_config(RateLimitConfig::default().with_cluster_rps(300)).with_node_id(id);
        let builder = ServeBuilder::new(config);
        servers.push(start_echo(id, builder, Some(registry.clone())).await.0);
    }
    // Registration, and the cluster quota's watch of the live instances.
    let handles: Vec<_> = servers.iter().map(|s| s.handle()).collect();
    let counted = wait_until(EVENTUALLY, || {
        std::future::ready(handles.iter().all(|h| h.rate_limits().instances() == 2))
    })
    .await;
    assert!(counted, "each server counts 2 instances through etcd");

    // Discovery by a client through the same etcd.
    let config = test_config().with_balancer(Balancer::RoundRobin);
    let (_registry, client) = start_client(&registry, config).await;
    let listed = support::faults::wait_status(&client, EVENTUALLY, |s| s.nodes.len() == 2).await;
    assert!(listed.is_some(), "the client lists both servers");
    let mut served = Vec::new();
    for _ in 0..2 {
        served.push(call(&client, Strategy::Failfast).await.expect("call"));
    }
    served.sort();
    assert_eq!(served, ["sec-1", "sec-2"]);

    for serving in servers {
        serving.handle().shutdown();
        serving.wait().await.expect("clean shutdown");
    }
}

#[actix_rt::test]
async fn a_node_outside_the_allowed_networks_is_left_out_and_never_dialled() {
    init_tracing();
    let (logs, _logging) = registry_actor::testing::Logs::capture();
    let etcd = EtcdServer::start().await.expect("etcd");
    let registry = etcd.registry_config();
    let config = echo_config(RateLimitConfig::default()).with_node_id("near");
    let (serving, stats) =
        start_echo("near", ServeBuilder::new(config), Some(registry.clone())).await;
    let _far = register_far(&registry).await;

    let config = test_config().with_allowed_networks(["127.0.0.0/8"]);
    let (_registry, client) = start_client(&registry, config).await;
    let status = support::faults::wait_status(&client, EVENTUALLY, |s| {
        s.refused == 1 && s.nodes.len() == 1
    })
    .await
    .expect("far left out, near listed");
    assert_eq!(status.nodes[0].id, "near");
    for i in 0..4 {
        let id = call(&client, Strategy::Failfast)
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(id, "near");
    }
    assert_eq!(stats.processed(), 4);
    let text = logs.text();
    assert!(
        text.contains("far")
            && text.contains("192.0.2.1")
            && text.contains("client.allowed_networks"),
        "{text}"
    );

    // Nothing inside the networks: nothing to pick, nothing dialled.
    let config = test_config().with_allowed_networks(["10.0.0.0/8"]);
    let (_registry, client) = start_client(&registry, config).await;
    support::faults::wait_status(&client, EVENTUALLY, |s| s.refused == 2)
        .await
        .expect("both left out");
    let err = call(&client, Strategy::Failover)
        .await
        .expect_err("no node");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert_eq!(stats.processed(), 4, "near was not called");

    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
}

/// In short-connection mode over TLS each call makes its own TLS
/// connection (tonic's channel over the client's TCP connector), and is
/// answered.
#[actix_rt::test]
async fn short_connections_over_tls_are_answered() {
    use support::cluster::Cluster;

    let mut cluster = Cluster::start().await;
    let ca = TestCa::new(&cluster.etcd.data_dir().join("certs"), "short-ca");
    let tls = support::certs::server_tls(&ca);
    cluster
        .add_over(
            grpc_cluster::echo::EchoService::new("short"),
            Some(tls),
            |n| n,
        )
        .await;
    let config = test_config()
        .with_short_connection(true)
        .with_tls(TlsConfig::default().with_ca_file(&ca.ca_file));
    let client = cluster.client(config, 1).await;
    for _ in 0..3 {
        let id = call(&client, Strategy::Failfast)
            .await
            .expect("answered over TLS");
        assert_eq!(id, "short");
    }
}
