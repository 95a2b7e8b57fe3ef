//! Section `broadcast`: `Broadcast` to eight nodes against what a tonic user
//! writes for it (one call with the deadline on each of eight channels,
//! joined), and one `Call` for scale: p50/p99 at concurrency 1.

use std::fmt::Write as _;

use cluster_client::{ClientConfig, Strategy};

use crate::cluster::{listed_client, raw_channel, Setup};
use crate::harness::{interleave, Caller, Measure, Row, Via, LATENCY_BLOCK, LATENCY_CALLS};
use crate::report::{median, ratio, ratio_text, table_head, value, Report, Target};

/// Nodes of the section (service `echo8`).
const NODES: usize = 8;

pub(crate) async fn run(report: &mut Report, setup: &Setup) {
    let addrs = &setup.addrs[..NODES];
    let mut channels = Vec::new();
    for a in addrs {
        channels.push(raw_channel(*a).await);
    }
    let client = listed_client(&setup.registry, ClientConfig::default(), "echo8", NODES).await;
    let mut rows = [
        Row::new(
            "raw tonic + deadline: one call on each of 8 channels, joined",
            Caller::RawFanOut(channels, setup.deadline),
        ),
        Row::new(
            "`Broadcast` to 8 nodes, completion all (`ClientHandle`)",
            Caller::Broadcast(Via::handle(&client).await, "echo8", NODES),
        ),
        Row::new(
            "one `Call` (failfast, round_robin over the 8)",
            Caller::Cluster(Via::handle(&client).await, "echo8", Strategy::Failfast),
        ),
    ];
    let rounds = setup.rounds;
    interleave(&mut rows, rounds, "broadcast", Measure::LATENCY).await;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Broadcast to {NODES} nodes vs raw tonic's fan-out\n\n\
         {LATENCY_CALLS} sequential calls (c=1) per row and round, the rows taking turns in \
         blocks of {LATENCY_BLOCK}; {rounds} rounds. Medians (range); ratio = median of the \
         per-round p50 ratios to the raw fan-out, whose calls carry \
         `Request::set_timeout({:?})` as the broadcast's do.\n",
        setup.deadline
    );
    table_head(&mut out, "| call | p50 µs | p99 µs | p50 ratio |");
    let base = &rows[0].p50;
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} |",
            row.name,
            value(&row.p50, 1),
            median(&row.p99),
            ratio_text(&row.p50, base),
        );
    }
    let _ = writeln!(
        out,
        "\n`Broadcast` / one `Call` p50: {:.3}.",
        ratio(&rows[1].p50, &rows[2].p50)
    );
    report.section(out);
    report.target(Target::at_most(
        "broadcast(8) / raw+deadline fan-out p50",
        ratio(&rows[1].p50, base),
        1.03,
    ));
}
