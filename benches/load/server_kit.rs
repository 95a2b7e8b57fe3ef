//! Section `server_kit`: plain tonic server against `server_kit::serve` with
//! limits that never refuse and the Prometheus recorder installed (the measurement is `benches/support/server_kit.rs`,
//! shared with `cargo bench --bench server_kit`).

use std::fmt::Write as _;

use crate::kit;
use crate::report::{median, spread, table_head, value, Report, Target};

/// Runs on a runtime of its own: call it outside any other runtime.
pub(crate) fn run(report: &mut Report, rounds: usize) {
    eprintln!("[load] server_kit: {rounds} paired rounds");
    let run = kit::run(rounds, kit::ROUND, false, false);
    eprintln!("[load] server_kit: {}", run.shutdown);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Server: plain tonic vs `server_kit::serve` (limits never refusing, metrics on)\n\n\
         The Prometheus recorder is installed: the kit's requests are counted and timed. \
         Closed loop of {} `Say` calls over 4 connections per server (kept across windows), \
         {} ms per server and round, {rounds} paired rounds (alternating which goes first), on \
         a runtime of {} worker threads carrying servers and load; ratio = median of the \
         per-round ratios.\n",
        kit::CONCURRENCY,
        kit::ROUND.as_millis(),
        kit::WORKER_THREADS
    );
    table_head(&mut out, "| server | calls/s | ratio |");
    let _ = writeln!(out, "| plain tonic | {} | 1.000 |", value(&run.plain, 0));
    let _ = writeln!(
        out,
        "| `server_kit::serve` | {} | {:.3} ({}) |",
        value(&run.kit, 0),
        median(&run.ratios),
        spread(&run.ratios, 2)
    );
    report.section(out);
    report.target(Target::at_least(
        "server_kit::serve / plain tonic throughput",
        median(&run.ratios),
        0.97,
    ));
}
