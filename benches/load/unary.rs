//! Section `unary`: one node, raw tonic with the cluster call's deadline
//! against the cluster client (`ClientHandle::call` failfast and failover,
//! `Addr::send` failfast): p50/p99 at concurrency 1, calls/s at 64.

use std::fmt::Write as _;

use cluster_client::{ClientConfig, Strategy};

use crate::cluster::{listed_client, raw_channel, Setup};
use crate::harness::{
    interleave, Caller, Measure, Row, Via, CHUNKS, CONCURRENCY, LATENCY_BLOCK, LATENCY_CALLS,
    THROUGHPUT_CALLS,
};
use crate::report::{median, ratio, ratio_text, table_head, value, Report, Target};

pub(crate) async fn run(report: &mut Report, setup: &Setup) {
    let (addr, registry, deadline) = (setup.addrs[0], &setup.registry, setup.deadline);
    let client = || listed_client(registry, ClientConfig::default(), "echo", 1);
    // Every row has a connection of its own: a row whose call follows a call
    // on the same connection would find it warm, and look faster than it is.
    let mut rows = [
        Row::new(
            "raw tonic + deadline",
            Caller::Raw(raw_channel(addr).await, Some(deadline)),
        ),
        Row::new(
            "raw tonic, no deadline",
            Caller::Raw(raw_channel(addr).await, None),
        ),
        Row::new(
            "`ClientHandle::call` failfast",
            Caller::Cluster(
                Via::handle(&client().await).await,
                "echo",
                Strategy::Failfast,
            ),
        ),
        Row::new(
            "`ClientHandle::call` failover",
            Caller::Cluster(
                Via::handle(&client().await).await,
                "echo",
                Strategy::Failover,
            ),
        ),
        Row::new(
            "`Call` failfast via `Addr::send`",
            Caller::Cluster(Via::Actor(client().await), "echo", Strategy::Failfast),
        ),
    ];
    let rounds = setup.rounds;
    interleave(&mut rows, rounds, "unary", Measure::BOTH).await;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Unary call, 1 node: raw tonic + deadline vs the cluster client\n\n\
         The baseline is raw tonic generic unary with `Request::set_timeout({deadline:?})`, the \
         deadline every cluster call carries by default. Per row and round: {LATENCY_CALLS} \
         sequential calls (c=1, the rows taking turns in blocks of {LATENCY_BLOCK}, in a random \
         order per turn) and {THROUGHPUT_CALLS} calls at c={CONCURRENCY} (in {CHUNKS} chunks, \
         the rows taking turns chunk by chunk); every row on a connection of its own; {rounds} \
         rounds. Medians over rounds (range over rounds); a ratio is the median of the \
         per-round ratios to raw tonic + deadline.\n"
    );
    write_table(&mut out, &rows);
    report.section(out);
    let base = &rows[0];
    for (row, p50_goal, rps_goal) in [(&rows[2], 1.03, 0.97), (&rows[4], 1.05, 0.95)] {
        add_targets(report, row, base, "raw+deadline", p50_goal, rps_goal);
    }
}

/// The table of `rows` (p50, p99, calls/s, and their ratios to the first row).
pub(crate) fn write_table(out: &mut String, rows: &[Row]) {
    table_head(
        out,
        &format!("| client | p50 µs (c=1) | p99 µs (c=1) | calls/s (c={CONCURRENCY}) | p50 ratio | throughput ratio |"),
    );
    let (base_p50, base_rps) = (&rows[0].p50, &rows[0].rps);
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} | {} | {} |",
            row.name,
            value(&row.p50, 1),
            median(&row.p99),
            value(&row.rps, 0),
            ratio_text(&row.p50, base_p50),
            ratio_text(&row.rps, base_rps),
        );
    }
}

/// The targets of `row` against `base` (named `base_name`): its p50 ratio at
/// most `p50_goal`, its throughput ratio at least `rps_goal`.
pub(crate) fn add_targets(
    report: &mut Report,
    row: &Row,
    base: &Row,
    base_name: &str,
    p50_goal: f64,
    rps_goal: f64,
) {
    report.target(Target::at_most(
        format!("{} / {base_name} p50", row.name),
        ratio(&row.p50, &base.p50),
        p50_goal,
    ));
    report.target(Target::at_least(
        format!("{} / {base_name} throughput (c={CONCURRENCY})", row.name),
        ratio(&row.rps, &base.rps),
        rps_goal,
    ));
}
