//! The scale section's tables and targets.

use std::fmt::Write as _;
use std::time::Duration;

use super::client::{CHANGES, CHURN, LIST_DEADLINE, QUIET};
use super::nodes::PROBE_GROUP;
use super::picks::{PickRun, PICK_EVERY, REBUILDS, REBUILD_GAP};
use crate::child::Fields;
use crate::cluster::TXN_OPS;
use crate::report::{ms, percentile, table_head, us, Report, Target};

fn pick_row(out: &mut String, name: &str, samples: &[Duration]) -> Option<f64> {
    if samples.is_empty() {
        let _ = writeln!(out, "| {name} | 0 | – | – | – |");
        return None;
    }
    let mut s = samples.to_vec();
    s.sort();
    let p99 = us(percentile(&s, 0.99));
    let _ = writeln!(
        out,
        "| {name} | {} | {:.2} | {p99:.2} | {:.1} |",
        s.len(),
        us(percentile(&s, 0.5)),
        us(s[s.len() - 1]),
    );
    Some(p99)
}

pub(super) fn write(
    report: &mut Report,
    n: usize,
    child: &Fields<'_>,
    write: Duration,
    picks: &PickRun,
) {
    let mib = |key: &str| child.number(key).map(|kib| kib / 1024.0);
    let shown = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
    };
    let listed_ms = child.number("listed_ms");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## {n} nodes\n\n\
         {} static node keys written to a private etcd in transactions of {TXN_OPS} puts \
         ({:.1} s). Then a fresh process starts an actix `System` and a `ClusterClient`; its \
         first `ClientHandle::call` (failfast, selector group `{PROBE_GROUP}`, strict) waits \
         for the registry to list the service and the picker to take it, then calls the probe \
         node. `VmRSS`/`VmHWM` from `/proc/self/status`.\n",
        n + 1,
        write.as_secs_f64()
    );
    table_head(&mut out, "| RSS at start MiB | before the client MiB | listed MiB | peak MiB | first call answered | nodes listed |");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} |",
        shown(mib("start_kib"), 1),
        shown(mib("before_kib"), 1),
        shown(mib("listed_kib"), 1),
        shown(mib("peak_kib"), 1),
        listed_ms.map_or_else(
            || format!("not within {LIST_DEADLINE:?}"),
            |v| format!("{v:.0} ms")
        ),
        shown(child.number("count"), 0),
    );
    let change = child.number("change_ms");
    let _ = writeln!(
        out,
        "\nOne-node change: the probe put again with a new version, {CHANGES} times; timed \
         from etcd's acknowledgement of the put (from the put itself in brackets) to the first \
         call answered by the node with that version (calls back to back on the actix \
         thread).\n"
    );
    table_head(&mut out, "| p50 ms | p90 ms | max ms |");
    let _ = writeln!(
        out,
        "| {} ({}) | {} | {} |",
        shown(change, 2),
        shown(child.number("change_total_ms"), 2),
        shown(child.number("change_p90_ms"), 2),
        shown(child.number("change_max_ms"), 2),
    );
    let _ = writeln!(
        out,
        "\nCalls during rebuilds: probe calls one after the other from a tokio runtime of 2 \
         workers on another thread, {QUIET:?} with no change, then {CHURN:?} while the actix \
         thread puts the probe back to back ({} puts; each makes the registry publish a set of \
         {} nodes and the picker build a snapshot of it). Each call includes its RPC.\n",
        shown(child.number("puts"), 0),
        n + 1,
    );
    table_head(
        &mut out,
        "| calls | answered | failed | p50 µs | p99 µs | max µs |",
    );
    for (name, key) in [("no change", "quiet"), ("puts back to back", "churn")] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            shown(child.number(&format!("{key}_n")), 0),
            shown(child.number(&format!("{key}_failed")), 0),
            shown(child.number(&format!("{key}_p50_us")), 0),
            shown(child.number(&format!("{key}_p99_us")), 0),
            shown(child.number(&format!("{key}_max_us")), 0),
        );
    }
    let mut rebuilds = picks.rebuilds.clone();
    rebuilds.sort();
    let _ = writeln!(
        out,
        "\nPicks during a rebuild, through a `PickerActor` and its `PickerView` (what calls \
         pick from): one thread sends the actor {REBUILDS} node sets of {n} nodes (each a \
         one-node change from the last, sharing its other chunks as the registry's sets \
         do; from the send to the answer took {:.1} ms p50, \
         {:.1} ms max), pausing {REBUILD_GAP:?} after each, while another picks \
         (round_robin) every {PICK_EVERY:?} and times each pick. A pick overlapping a \
         rebuild started while one was in progress, or saw one start before it ended.\n",
        ms(percentile(&rebuilds, 0.5)),
        ms(rebuilds[rebuilds.len() - 1]),
    );
    table_head(&mut out, "| picks | n | p50 µs | p99 µs | max µs |");
    pick_row(&mut out, "no rebuild at all", &picks.quiet);
    pick_row(&mut out, "between rebuilds", &picks.between);
    let during = pick_row(&mut out, "overlapping a rebuild", &picks.during);
    report.section(out);

    let listed_kib = child.number("listed_kib");
    let why = "the client did not list the service";
    report.target(match (listed_ms, listed_kib) {
        (Some(_), Some(kib)) => Target::new(
            format!("RSS of a client with {n} nodes listed"),
            format!("{:.1} MiB", kib / 1024.0),
            "≤ 120 MiB",
            kib <= 120.0 * 1024.0,
        ),
        _ => Target::unmeasured(
            format!("RSS of a client with {n} nodes listed"),
            "≤ 120 MiB",
            why,
        ),
    });
    report.target(match listed_ms {
        Some(v) => Target::new(
            format!("{n} nodes listed (first call answered)"),
            format!("{:.2} s", v / 1e3),
            "≤ 2 s",
            v <= 2_000.0,
        ),
        None => Target::unmeasured(format!("{n} nodes listed"), "≤ 2 s", why),
    });
    report.target(match change {
        Some(v) => Target::new(
            format!("one-node change at {n} nodes, put acknowledged → seen (p50 of {CHANGES})"),
            format!("{v:.2} ms"),
            "≤ 5 ms",
            v <= 5.0,
        ),
        None => Target::unmeasured(format!("one-node change at {n} nodes"), "≤ 5 ms", why),
    });
    report.target(match during {
        Some(p99) => Target::new(
            format!("pick p99 during a rebuild of {n} nodes (`PickerView`)"),
            format!("{p99:.2} µs"),
            "≤ 2 µs",
            p99 <= 2.0,
        ),
        None => Target::unmeasured(
            format!("pick p99 during a rebuild of {n} nodes"),
            "≤ 2 µs",
            "no pick started during a rebuild",
        ),
    });
}
