//! Section `tls`: one node, plaintext against TLS (`[server.tls]` on the
//! server, `[client.tls]` in the client), for raw tonic + deadline and for
//! `ClientHandle::call` failfast: p50/p99 at concurrency 1, calls/s at 64. No
//! target: the rows show what TLS costs.
//!
//! The TLS server is a second server process (as [`Servers`], with a
//! certificate made at start by a [`TestCa`]); the plaintext rows call node
//! `n0` of the run's servers. Both processes have the same worker threads.
//!
//! Then the time to make a TLS connection, to a tonic server in this process
//! that serves its own listener's connections (`serve_with_incoming`, which
//! leaves Nagle's algorithm on): tonic's `Endpoint::connect` against
//! [`ClientTls::check_server`], the handshake a node's channel makes and its
//! wait for the server's first bytes.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use cluster_client::{ClientConfig, ClientTls, Strategy};
use registry_actor::testing::TestCa;
use registry_actor::TlsConfig;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::cluster::{echo_nodes, listed_client, put_static, raw_channel, Setup};
use crate::harness::{
    interleave, Caller, Measure, Row, Via, CHUNKS, CONCURRENCY, LATENCY_CALLS, THROUGHPUT_CALLS,
};
use crate::report::{median, ratio_text, table_head, value, Report};
use crate::servers::Servers;

/// The service the TLS server is registered as.
const SERVICE: &str = "echo-tls";

pub(crate) async fn run(report: &mut Report, setup: &Setup, server_threads: usize) {
    let dir = std::env::temp_dir().join(format!("gc-load-tls-{}", std::process::id()));
    let ca = TestCa::new(&dir, "load-ca");
    let cert = ca.server();
    let servers = Servers::spawn_tls(1, server_threads, &cert.cert, &cert.key);
    let tls_addr = servers.addrs[0];
    let kv = registry_actor::connect(&setup.registry)
        .await
        .expect("etcd");
    put_static(
        &kv,
        setup.registry.prefix(),
        &echo_nodes(SERVICE, &[tls_addr]),
    )
    .await;

    let (plain_addr, registry, deadline) = (setup.addrs[0], &setup.registry, setup.deadline);
    let trust = TlsConfig::default().with_ca_file(&ca.ca_file);
    let plain_client = listed_client(registry, ClientConfig::default(), "echo", 1).await;
    let tls_client = listed_client(
        registry,
        ClientConfig::default().with_tls(trust),
        SERVICE,
        1,
    )
    .await;
    let mut rows = [
        Row::new(
            "raw tonic + deadline, plaintext",
            Caller::Raw(raw_channel(plain_addr).await, Some(deadline)),
        ),
        Row::new(
            "raw tonic + deadline, TLS",
            Caller::Raw(tls_channel(tls_addr, &ca).await, Some(deadline)),
        ),
        Row::new(
            "`ClientHandle::call` failfast, plaintext",
            Caller::Cluster(Via::handle(&plain_client).await, "echo", Strategy::Failfast),
        ),
        Row::new(
            "`ClientHandle::call` failfast, TLS",
            Caller::Cluster(Via::handle(&tls_client).await, SERVICE, Strategy::Failfast),
        ),
    ];
    let rounds = setup.rounds;
    interleave(&mut rows, rounds, "tls", Measure::BOTH).await;
    drop(servers);
    let connects = connect_times(&ca, rounds).await;
    let _ = std::fs::remove_dir_all(&dir);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## TLS on vs off, 1 node\n\n\
         The same echo server behind plaintext and behind TLS (ECDSA P-256 certificate, \
         rustls with ring, TLS 1.3; no client certificate), each in a server process of its \
         own. Per row and round: {LATENCY_CALLS} sequential calls (c=1) and {THROUGHPUT_CALLS} \
         calls at c={CONCURRENCY} (in {CHUNKS} chunks), the rows taking turns; every row on a \
         connection of its own, made before measuring (the handshake is not timed); {rounds} \
         rounds. A ratio is the median of the per-round ratios of the TLS row to the \
         plaintext row of the same client.\n"
    );
    table_head(
        &mut out,
        &format!("| client | p50 µs (c=1) | p99 µs (c=1) | calls/s (c={CONCURRENCY}) | TLS/plaintext p50 | TLS/plaintext throughput |"),
    );
    for (i, row) in rows.iter().enumerate() {
        let (p50, rps) = if i % 2 == 1 {
            let plain = &rows[i - 1];
            (
                ratio_text(&row.p50, &plain.p50),
                ratio_text(&row.rps, &plain.rps),
            )
        } else {
            ("".to_owned(), "".to_owned())
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} | {p50} | {rps} |",
            row.name,
            value(&row.p50, 1),
            median(&row.p99),
            value(&row.rps, 0),
        );
    }
    let [tonic, ours] = &connects;
    let _ = writeln!(
        out,
        "\nMaking a TLS connection to a tonic server that leaves Nagle's algorithm on \
         (`serve_with_incoming`), {CONNECTS} connections per round, the two taking turns, \
         {rounds} rounds; each connection closed once made.\n"
    );
    table_head(&mut out, "| connect | median µs | ratio to tonic |");
    let _ = writeln!(
        out,
        "| tonic's `Endpoint::connect` (TCP, TLS, HTTP/2 handshake) | {} | |",
        value(tonic, 0)
    );
    let _ = writeln!(
        out,
        "| a node's channel (`ClientTls::check_server`: TCP, TLS, the connection preface, the server's first bytes) | {} | {} |",
        value(ours, 0),
        ratio_text(ours, tonic)
    );
    report.section(out);
}

/// Connections made per round and way in [`connect_times`].
const CONNECTS: usize = 10;

/// Per round, the median time in µs to make a TLS connection, tonic's way
/// and a node channel's way, to a tonic server that serves its own
/// listener's connections (Nagle's algorithm on).
async fn connect_times(ca: &TestCa, rounds: usize) -> [Vec<f64>; 2] {
    use tonic::transport::{Identity, Server, ServerTlsConfig};

    let pem = ca.server();
    let identity = Identity::from_pem(
        std::fs::read(&pem.cert).expect("certificate"),
        std::fs::read(&pem.key).expect("key"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let incoming = futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .tls_config(ServerTlsConfig::new().identity(identity))
            .expect("server TLS")
            .add_service(grpc_cluster::echo::EchoService::new("connect").into_server())
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );

    let files = TlsConfig::default()
        .with_ca_file(&ca.ca_file)
        .read("client.tls")
        .expect("CA file")
        .expect("TLS on");
    let ours = ClientTls::from_files(&files, "client.tls").expect("client TLS");
    let pem = std::fs::read(&ca.ca_file).expect("CA file");
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tcp_nodelay(true)
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        .expect("TLS settings");
    let (mut tonic_us, mut ours_us) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..CONNECTS {
            let start = Instant::now();
            let channel = endpoint.connect().await.expect("tonic connects");
            a.push(start.elapsed().as_secs_f64() * 1e6);
            drop(channel);
            let start = Instant::now();
            ours.check_server(&addr.to_string())
                .await
                .expect("the node's handshake");
            b.push(start.elapsed().as_secs_f64() * 1e6);
        }
        tonic_us.push(median(&a));
        ours_us.push(median(&b));
    }
    let _ = stop.send(());
    let _ = server.await;
    [tonic_us, ours_us]
}

/// A raw tonic channel to `addr` over TLS, trusting `ca`, connected.
async fn tls_channel(addr: SocketAddr, ca: &TestCa) -> Channel {
    let pem = std::fs::read(&ca.ca_file).expect("CA file");
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tcp_nodelay(true)
        .tls_config(tls)
        .expect("TLS settings")
        .connect()
        .await
        .expect("TLS connect")
}
