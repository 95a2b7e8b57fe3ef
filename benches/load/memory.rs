//! Section `memory`: the resident memory of a client process watching a
//! service of 10,000 nodes, measured in a child process so that nothing else
//! the run allocated is counted.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use actix::prelude::*;
use registry_actor::Node;

use crate::child::{self, Fields};
use crate::cluster::{put_static, wait_listed, Setup, TXN_OPS};
use crate::report::{ms, table_head, Report, Target};
use crate::usage::vm_kib;

/// Nodes of the section's service.
const NODES: usize = 10_000;
/// Set in the section's child process: the etcd endpoint to watch.
pub(crate) const CHILD: &str = "LOAD_MEMORY_CHILD";
/// Longest run of the child.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// The child's job: a cluster client watching the `mem` service of the etcd
/// at `endpoint`, until it lists every node; prints one line for the parent.
pub(crate) fn child(endpoint: &str) {
    let at_start = vm_kib("VmRSS");
    child::log_warnings();
    System::new().block_on(async move {
        let before = vm_kib("VmRSS");
        let (_, client) = child::client(endpoint).await;
        let took = wait_listed(&client, "mem", NODES).await;
        let after = vm_kib("VmRSS");
        println!(
            "MEMORY start_kib={at_start} before_kib={before} after_kib={after} peak_kib={} list_ms={:.0}",
            vm_kib("VmHWM"),
            ms(took)
        );
    });
}

pub(crate) async fn run(report: &mut Report, setup: &Setup) {
    let registry = &setup.registry;
    let kv = registry_actor::connect(registry).await.expect("etcd");
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            Node::new(
                format!("mem-{i:05}"),
                "mem",
                format!("10.{}.{}.{}:50051", i >> 16, (i >> 8) & 255, i & 255),
            )
            .expect("node")
        })
        .collect();
    eprintln!("[load] memory: writing {NODES} node keys");
    let t = Instant::now();
    put_static(&kv, registry.prefix(), &nodes).await;
    let write = t.elapsed();
    eprintln!("[load] memory: starting the client process");
    let endpoint = registry.endpoints()[0].clone();
    let line = child::run(&[(CHILD, endpoint)], "MEMORY ", CHILD_DEADLINE).await;
    let fields = Fields(&line);
    let field = |key: &str| fields.number(key).expect("a field of the memory report");
    let mib = |kib: f64| kib / 1024.0;
    let (before, after, peak) = (field("before_kib"), field("after_kib"), field("peak_kib"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Memory of a client watching {NODES} nodes\n\n\
         {NODES} static node keys written in transactions of {TXN_OPS} puts ({:.1} s); then a \
         fresh process starts an actix `System`, a `ClusterClient` (registry actor, etcd watch) \
         and its picker for the service (`ServiceStatus`), and waits until the picker lists \
         every node. `VmRSS` from `/proc/self/status`.\n",
        write.as_secs_f64()
    );
    table_head(
        &mut out,
        &format!("| RSS at process start MiB | before the client MiB | with {NODES} nodes listed MiB | delta MiB | peak (VmHWM) MiB | time to list |"),
    );
    let _ = writeln!(
        out,
        "| {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} ms |",
        mib(field("start_kib")),
        mib(before),
        mib(after),
        mib(after - before),
        mib(peak),
        field("list_ms"),
    );
    report.section(out);
    report.target(Target::new(
        format!("RSS of a client watching {NODES} nodes"),
        format!(
            "{:.1} MiB total ({:.1} MiB delta)",
            mib(after),
            mib(after - before)
        ),
        "≤ 50 MB",
        after * 1024.0 <= 50e6,
    ));
}
