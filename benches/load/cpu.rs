//! Section `cpu`: the CPU time a call costs the client, `ClientHandle::call`
//! failfast against raw tonic with the same deadline, one node.
//!
//! The echo servers run in a child process, so this process's CPU clock
//! (user + system time of all its threads, as `getrusage(RUSAGE_SELF)` counts
//! it) holds the clients alone: the calling code, tonic and hyper, the
//! channels' tasks and whatever threads the cluster client runs its I/O on.
//! It is read around every block of sequential calls and every chunk of
//! concurrent ones, so each row is charged for the time its own calls ran.

use std::fmt::Write as _;

use cluster_client::{ClientConfig, Strategy};

use crate::cluster::{listed_client, raw_channel, Setup};
use crate::harness::{
    interleave, Caller, Measure, Row, Via, CONCURRENCY, LATENCY_CALLS, THROUGHPUT_CALLS,
};
use crate::report::{ratio, ratio_text, table_head, value, Report, Target};

pub(crate) async fn run(report: &mut Report, setup: &Setup) {
    let client = listed_client(&setup.registry, ClientConfig::default(), "echo", 1).await;
    let mut rows = [
        Row::new(
            "raw tonic + deadline",
            Caller::Raw(raw_channel(setup.addrs[0]).await, Some(setup.deadline)),
        ),
        Row::new(
            "`ClientHandle::call` failfast",
            Caller::Cluster(Via::handle(&client).await, "echo", Strategy::Failfast),
        ),
    ];
    let rounds = setup.rounds;
    interleave(&mut rows, rounds, "cpu", Measure::BOTH).await;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Client CPU per call\n\n\
         CPU time of this process (user + system, every thread; the servers are in a child \
         process) per call, over {LATENCY_CALLS} sequential calls (c=1) and {THROUGHPUT_CALLS} \
         calls at c={CONCURRENCY} per row and round, the rows taking turns; {rounds} rounds, \
         one node. Medians (range); ratio = median of the per-round ratios to raw tonic + \
         deadline.\n"
    );
    table_head(
        &mut out,
        &format!("| client | CPU µs/call (c={CONCURRENCY}) | ratio | CPU µs/call (c=1) | ratio | calls/s (c={CONCURRENCY}) | p50 µs (c=1) |"),
    );
    let base = &rows[0];
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            value(&row.cpu_c64, 2),
            ratio_text(&row.cpu_c64, &base.cpu_c64),
            value(&row.cpu_c1, 2),
            ratio_text(&row.cpu_c1, &base.cpu_c1),
            value(&row.rps, 0),
            value(&row.p50, 1),
        );
    }
    report.section(out);
    report.target(Target::at_most(
        format!("client CPU per call, `ClientHandle::call` / raw+deadline (c={CONCURRENCY})"),
        ratio(&rows[1].cpu_c64, &base.cpu_c64),
        1.05,
    ));
}
