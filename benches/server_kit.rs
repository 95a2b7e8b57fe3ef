//! Throughput of `server_kit::serve` against a plain tonic server, same run.
//!
//! The measurement lives in `support/server_kit.rs` (see its docs), shared with
//! the load harness (`cargo bench --bench load`, section `server_kit`); this binary runs
//! it alone: 40 paired rounds of 250 ms, each printed, then the medians.
//!
//! `cargo bench --bench server_kit -- shedding` compares the kit with
//! `[server.shedding]` off and on instead, at a load it admits whole.
//!
//! `cargo bench --bench server_kit -- profile kit N` (or `profile plain N`)
//! only serves N calls on that one server and stops, for a profiler.
//!
//! `cargo bench --bench server_kit` (a `harness = false` binary). Loopback only.

use std::time::Duration;

#[path = "support/server_kit.rs"]
mod kit;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "profile") {
        let kit = args.get(at + 1).is_some_and(|which| which == "kit");
        let calls = args
            .get(at + 2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        kit::profile(kit, calls);
        return;
    }
    // `cargo test --benches` runs benches once in test mode: keep that quick.
    let quick = std::env::args().any(|a| a == "--test");
    let shedding = std::env::args().any(|a| a == "shedding");
    let names = match shedding {
        true => ("shedding off", "shedding on"),
        false => ("plain tonic", "server_kit::serve"),
    };
    let (rounds, round) = if quick {
        (1, Duration::from_millis(200))
    } else {
        (kit::ROUNDS, kit::ROUND)
    };
    println!(
        "{rounds} paired rounds of {round:?}, {} calls in flight, {} runtime worker threads",
        kit::CONCURRENCY,
        kit::WORKER_THREADS
    );
    let run = kit::run(rounds, round, true, shedding);
    let (p, s) = (median(run.plain), median(run.kit));
    println!(
        "medians: {} {p:.0} calls/s, {} {s:.0} calls/s",
        names.0, names.1
    );
    println!(
        "throughput ratio {} / {}: {:.3} (median of {rounds} paired rounds; target >= 0.97)",
        names.1,
        names.0,
        median(run.ratios)
    );
    println!("{}", run.shutdown);
}
