//! Section `tls`: one node, plaintext against TLS (`[server.tls]` on the
//! server, `[client.tls]` in the client), for raw tonic + deadline and for
//! `ClientHandle::call` failfast: p50/p99 at concurrency 1, calls/s at 64. No
//! target: the rows show what TLS costs.
//!
//! The TLS server is a second server process (as [`Servers`], with a
//! certificate made at start by a [`TestCa`]); the plaintext rows call node
//! `n0` of the run's servers. Both processes have the same worker threads.

use std::fmt::Write as _;
use std::net::SocketAddr;

use cluster_client::{ClientConfig, Strategy};
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
    report.section(out);
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
