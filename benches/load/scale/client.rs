//! The scale section's client process: listing, one-node changes, calls
//! during rebuilds.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cluster_client::{
    Call, CallError, CallOptions, ClientHandle, Fallback, GetHandle, Reply, Selector, Strategy,
};
use grpc_cluster::echo::{SayReply, SayRequest, SAY};

use super::nodes::{probe, PROBE_GROUP, SERVICE};
use crate::child;
use crate::report::{ms, percentile, us};
use crate::usage::vm_kib;

/// Longest wait for the first call (the whole service listed).
pub(super) const LIST_DEADLINE: Duration = Duration::from_secs(30);
/// One-node changes timed.
pub(super) const CHANGES: usize = 20;
/// Longest wait for one change to reach a call.
const CHANGE_DEADLINE: Duration = Duration::from_secs(10);
/// How long calls run without puts, then with puts keeping the picker busy.
pub(super) const QUIET: Duration = Duration::from_secs(1);
pub(super) const CHURN: Duration = Duration::from_secs(2);

/// The one call the child makes: `Say` to the probe.
async fn probe_call(handle: &ClientHandle) -> Result<Reply<SayReply>, CallError> {
    let selector = Selector::new()
        .with_group(PROBE_GROUP)
        .with_fallback(Fallback::Strict);
    let options = CallOptions::new()
        .with_strategy(Strategy::Failfast)
        .with_selector(selector);
    let request = SayRequest {
        message: "probe".into(),
    };
    handle
        .call(Call::new(SERVICE, SAY, request).with_options(options))
        .await
}

/// The child's job; prints one `SCALE` line for the parent. A value it could
/// not measure is `none`, with the reason on standard error.
pub(crate) fn child(endpoint: &str, probe_addr: &str) {
    let at_start = vm_kib("VmRSS");
    child::log_warnings();
    System::new().block_on(async move {
        let before = vm_kib("VmRSS");
        let (registry, client) = child::client(endpoint).await;
        let handle = client.send(GetHandle).await.expect("client alive");
        let mut line = format!("start_kib={at_start} before_kib={before}");
        let started = Instant::now();
        let listed = loop {
            match probe_call(&handle).await {
                Ok(_) => break Some(started.elapsed()),
                Err(e) if started.elapsed() >= LIST_DEADLINE => {
                    eprintln!("[load] scale: not listed in {LIST_DEADLINE:?}; last error: {e}");
                    break None;
                }
                // Not discovered yet: the call waited for the node set and gave up.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let Some(listed) = listed else {
            println!("SCALE {line} listed_ms=none");
            return;
        };
        let _ = write!(
            line,
            " listed_kib={} peak_kib={} listed_ms={:.1}",
            vm_kib("VmRSS"),
            vm_kib("VmHWM"),
            ms(listed)
        );
        let count = handle.status(SERVICE).await.map_or(0, |s| s.listed);
        let _ = write!(line, " count={count}");
        let kv = registry_actor::connect(&registry).await.expect("etcd");
        let changes = one_node_changes(&handle, kv.client(), registry.prefix(), probe_addr).await;
        let _ = write!(line, " {changes}");
        let calls =
            calls_during_rebuilds(&handle, kv.client(), registry.prefix(), probe_addr).await;
        println!("SCALE {line} {calls}");
    });
}

/// Puts the probe with versions 1..=[`CHANGES`], one at a time, and times
/// each until a call is answered by the node with that version: from the
/// put, and from etcd's acknowledgement of it.
async fn one_node_changes(
    handle: &ClientHandle,
    mut kv: registry_actor::etcd_client::Client,
    prefix: &str,
    addr: &str,
) -> String {
    let (mut total, mut after_ack) = (Vec::new(), Vec::new());
    for k in 1..=CHANGES {
        let node = probe(addr, k);
        let started = Instant::now();
        kv.put(node.key(prefix), node.encode(), None)
            .await
            .expect("etcd put");
        let acked = started.elapsed();
        loop {
            if let Ok(reply) = probe_call(handle).await {
                if reply.node.version() == node.version() {
                    break;
                }
            }
            tokio::task::yield_now().await;
            if started.elapsed() > CHANGE_DEADLINE {
                eprintln!("[load] scale: change {k} not seen in {CHANGE_DEADLINE:?}");
                return "change_ms=none".into();
            }
        }
        let seen = started.elapsed();
        total.push(seen);
        after_ack.push(seen - acked);
    }
    total.sort();
    after_ack.sort();
    format!(
        "change_ms={:.2} change_p90_ms={:.2} change_max_ms={:.2} change_total_ms={:.2}",
        ms(percentile(&after_ack, 0.5)),
        ms(percentile(&after_ack, 0.9)),
        ms(after_ack[after_ack.len() - 1]),
        ms(percentile(&total, 0.5)),
    )
}

/// Sequential probe calls from a tokio runtime of 2 workers on another
/// thread, for [`QUIET`] with no change, then for [`CHURN`] while this task
/// puts the probe again and again (every put makes the registry publish a
/// new set and the picker build a new snapshot of it).
async fn calls_during_rebuilds(
    handle: &ClientHandle,
    mut kv: registry_actor::etcd_client::Client,
    prefix: &str,
    addr: &str,
) -> String {
    let quiet = calls_for(handle.clone(), QUIET).await;
    let calls = calls_for(handle.clone(), CHURN);
    let puts = async {
        let started = Instant::now();
        let mut k = CHANGES;
        while started.elapsed() < CHURN {
            k += 1;
            let node = probe(addr, k);
            kv.put(node.key(prefix), node.encode(), None)
                .await
                .expect("etcd put");
        }
        k - CHANGES
    };
    let (churn, puts) = futures_util::future::join(calls, puts).await;
    let text = |name: &str, (mut lat, failed): (Vec<Duration>, usize)| {
        if lat.is_empty() {
            return format!("{name}_n=0 {name}_failed={failed}");
        }
        lat.sort();
        format!(
            "{name}_n={} {name}_failed={failed} {name}_p50_us={:.0} {name}_p99_us={:.0} {name}_max_us={:.0}",
            lat.len(),
            us(percentile(&lat, 0.5)),
            us(percentile(&lat, 0.99)),
            us(lat[lat.len() - 1]),
        )
    };
    format!(
        "{} {} puts={puts}",
        text("quiet", quiet),
        text("churn", churn)
    )
}

/// Probe calls one after the other for `length`, from a runtime of 2 worker
/// threads on a thread of its own; the latencies of those answered, and how
/// many failed.
async fn calls_for(handle: ClientHandle, length: Duration) -> (Vec<Duration>, usize) {
    let (done, latencies) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("callers' runtime");
        let latencies = runtime.block_on(async move {
            let (mut latencies, mut failed) = (Vec::new(), 0usize);
            let started = Instant::now();
            while started.elapsed() < length {
                let t = Instant::now();
                match probe_call(&handle).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(_) => failed += 1,
                }
            }
            (latencies, failed)
        });
        let _ = done.send(latencies);
    });
    latencies.await.expect("the callers' thread")
}
