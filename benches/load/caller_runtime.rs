//! Section `caller_runtime`: calls made from an app's own tokio runtime of 2
//! worker threads (`new_multi_thread().worker_threads(2)`), as a tonic or
//! axum app makes them: `ClientHandle::call` failfast against raw tonic with
//! the same deadline whose channel was created on that runtime. Calls/s at
//! concurrency 64, one node.
//!
//! The load is 64 tasks spawned on that runtime, each making its calls one
//! after the other, so both workers call. The cluster client itself is
//! created on the actix system of the run (its pickers live there) and
//! handed to the runtime as a `ClientHandle`. The servers are in a child
//! process.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_client::{ClientConfig, ClientHandle, GetHandle, Strategy};

use crate::cluster::{listed_client, raw_channel, Setup};
use crate::harness::{Caller, Row, Via, CHUNKS, CONCURRENCY, THROUGHPUT_CALLS};
use crate::report::{ratio, ratio_text, table_head, value, Report, Target};

/// Worker threads of the callers' runtime.
const WORKERS: usize = 2;
/// Calls per row before the first round: connections, allocators, caches.
const WARM_UP_CALLS: usize = 1_000;

pub(crate) async fn run(report: &mut Report, setup: &Setup) {
    let client = listed_client(&setup.registry, ClientConfig::default(), "echo", 1).await;
    let handle = client.send(GetHandle).await.expect("client alive");
    let (addr, deadline, rounds) = (setup.addrs[0], setup.deadline, setup.rounds);
    // The actix thread stays free (its pickers and connections serve the
    // handle) while another thread runs the callers' runtime.
    let (done, rows) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("caller-runtime".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKERS)
                .enable_all()
                .build()
                .expect("callers' runtime");
            let rows = runtime.block_on(measure(handle, addr, deadline, rounds));
            let _ = done.send(rows);
        })
        .expect("thread");
    let rows = rows
        .await
        .expect("the callers' runtime finished its rounds");
    thread.join().expect("callers' runtime thread");

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Calls from an app's tokio runtime of {WORKERS} workers\n\n\
         {THROUGHPUT_CALLS} calls per row and round by {CONCURRENCY} tasks spawned on a \
         multi-thread runtime of {WORKERS} workers (in {CHUNKS} chunks, the rows taking turns \
         chunk by chunk); {rounds} rounds, one node. Raw tonic's channel is created on that \
         runtime and its calls carry `Request::set_timeout({deadline:?})`; the cluster client \
         lives on the actix system and is called through a `ClientHandle`. Medians (range); \
         ratio = median of the per-round ratios to raw tonic + deadline.\n"
    );
    table_head(
        &mut out,
        &format!("| client | calls/s (c={CONCURRENCY}) | throughput ratio |"),
    );
    let base = &rows[0].rps;
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            row.name,
            value(&row.rps, 0),
            ratio_text(&row.rps, base),
        );
    }
    report.section(out);
    report.target(Target::at_least(
        format!("{WORKERS}-worker caller runtime, `ClientHandle::call` / raw+deadline throughput"),
        ratio(&rows[1].rps, base),
        0.95,
    ));
}

/// The rounds, on the callers' runtime.
async fn measure(
    handle: ClientHandle,
    addr: SocketAddr,
    deadline: Duration,
    rounds: usize,
) -> Vec<Row> {
    let mut rows = vec![
        Row::new(
            "raw tonic + deadline",
            Caller::Raw(raw_channel(addr).await, Some(deadline)),
        ),
        Row::new(
            "`ClientHandle::call` failfast",
            Caller::Cluster(Via::Handle(handle), "echo", Strategy::Failfast),
        ),
    ];
    for row in &rows {
        spawned_chunk(row, WARM_UP_CALLS).await;
    }
    let n = rows.len();
    for round in 0..rounds {
        eprintln!("[load] caller_runtime: round {}/{rounds}", round + 1);
        let mut took = vec![Duration::ZERO; n];
        for c in 0..CHUNKS {
            for k in 0..n {
                let j = (k + c + round) % n;
                took[j] += spawned_chunk(&rows[j], THROUGHPUT_CALLS / CHUNKS).await;
            }
        }
        for (row, took) in rows.iter_mut().zip(took) {
            row.rps.push(THROUGHPUT_CALLS as f64 / took.as_secs_f64());
        }
    }
    rows
}

/// `calls` calls by [`CONCURRENCY`] spawned tasks, each calling in turn; the
/// time they took.
async fn spawned_chunk(row: &Row, calls: usize) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (caller, next) = (row.caller.clone(), next.clone());
            tokio::spawn(async move {
                let mut failed = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= calls {
                        return failed;
                    }
                    if caller.call(i).await.is_none() {
                        failed += 1;
                    }
                }
            })
        })
        .collect();
    let mut failed = 0;
    for task in tasks {
        failed += task.await.expect("caller task");
    }
    let took = started.elapsed();
    assert_eq!(failed, 0, "{}: calls failed", row.name);
    took
}
