//! Section `stub`: one node, the generated `EchoClient` on a raw tonic
//! `Channel` with the cluster call's deadline against the same client on a
//! `ClusterChannel` (failfast and failover): p50/p99 at concurrency 1,
//! calls/s at 64.

use std::fmt::Write as _;

use cluster_client::{CallOptions, ClientConfig, GetHandle, Strategy};
use grpc_cluster::echo::EchoClient;

use crate::cluster::{listed_client, raw_channel, Setup};
use crate::harness::{
    interleave, Caller, Measure, Row, CHUNKS, CONCURRENCY, LATENCY_BLOCK, LATENCY_CALLS,
    THROUGHPUT_CALLS,
};
use crate::report::Report;
use crate::unary::{add_targets, write_table};

pub(crate) async fn run(report: &mut Report, setup: &Setup) {
    let (addr, registry, deadline) = (setup.addrs[0], &setup.registry, setup.deadline);
    // A client (and so a connection) of its own per row.
    let cluster_stub = |strategy: Strategy| async move {
        let client = listed_client(registry, ClientConfig::default(), "echo", 1).await;
        let handle = client.send(GetHandle).await.expect("client alive");
        let channel = handle
            .channel("echo")
            .with_options(CallOptions::new().with_strategy(strategy));
        Caller::ClusterStub(EchoClient::new(channel), deadline)
    };
    let mut rows = [
        Row::new(
            "`EchoClient` on raw tonic + deadline",
            Caller::RawStub(EchoClient::new(raw_channel(addr).await), deadline),
        ),
        Row::new(
            "`EchoClient` on `ClusterChannel` failfast",
            cluster_stub(Strategy::Failfast).await,
        ),
        Row::new(
            "`EchoClient` on `ClusterChannel` failover",
            cluster_stub(Strategy::Failover).await,
        ),
    ];
    let rounds = setup.rounds;
    interleave(&mut rows, rounds, "stub", Measure::BOTH).await;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Generated client, 1 node: raw tonic `Channel` + deadline vs `ClusterChannel`\n\n\
         The same generated `EchoClient::say`, with `Request::set_timeout({deadline:?})`, on a \
         raw tonic `Channel` to the node and on a `ClusterChannel` to its service. Per row and \
         round: {LATENCY_CALLS} sequential calls (c=1, the rows taking turns in blocks of \
         {LATENCY_BLOCK}, in a random order per turn) and {THROUGHPUT_CALLS} calls at \
         c={CONCURRENCY} (in {CHUNKS} chunks, the rows taking turns chunk by chunk); every row \
         on a connection of its own; {rounds} rounds. Medians over rounds (range over rounds); \
         a ratio is the median of the per-round ratios to the raw channel.\n"
    );
    write_table(&mut out, &rows);
    report.section(out);
    add_targets(report, &rows[1], &rows[0], "raw stub", 1.03, 0.97);
}
