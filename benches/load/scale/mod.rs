//! Section `scale`: a service of 100,000 nodes (`LOAD_SCALE_NODES`) in a
//! real etcd (a private one, so no other section's client watches it).
//!
//! * In a child process (nothing else of the run counted in its RSS;
//!   `client.rs`): a `ClusterClient` whose first `ClientHandle::call` has to
//!   list the whole service — the time until that call is answered, and
//!   `VmRSS` before and after; then one-node changes (a put of one key) timed
//!   until a call sees them; then calls made from another thread while puts
//!   keep the picker rebuilding, against the same calls without puts.
//! * In this process (`picks.rs`): picks during a rebuild of 100,000 nodes,
//!   through the public `Picker` shared the way the client shares it, since
//!   the client's own shared picker state is not public.
//!
//! Every node but one has a loopback address where nothing listens (port 9)
//! and is never called: calls select the one node of group `probe`, which is
//! the echo server `n0`. A one-node change is a put of that node with a new
//! version; a call answered by the node with that version has seen it.

mod client;
mod nodes;
mod picks;
mod summary;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use registry_actor::testing::EtcdServer;
use registry_actor::Node;

use crate::child::{self, Fields};
use crate::cluster::put_static;
use crate::report::Report;

pub(crate) use client::child;

/// Nodes of the service besides the probe, unless `LOAD_SCALE_NODES` says
/// otherwise.
pub(crate) const DEFAULT_NODES: usize = 100_000;
/// Set in the child: the etcd endpoint.
pub(crate) const CHILD: &str = "LOAD_SCALE_CHILD";
/// Set in the child: the probe node's address (an echo server).
pub(crate) const PROBE: &str = "LOAD_SCALE_PROBE";
/// Longest run of the child.
const CHILD_DEADLINE: Duration = Duration::from_secs(180);

/// Measures a service of `n` nodes (and the probe).
pub(crate) async fn run(report: &mut Report, probe_addr: SocketAddr, n: usize) {
    let etcd = EtcdServer::start().await.expect("etcd");
    let registry = etcd.registry_config();
    let kv = registry_actor::connect(&registry).await.expect("etcd");
    let mut all: Vec<Node> = (0..n).map(nodes::node).collect();
    all.push(nodes::probe(&probe_addr.to_string(), 0));
    eprintln!("[load] scale: writing {} node keys", all.len());
    let t = Instant::now();
    put_static(&kv, registry.prefix(), &all).await;
    let write = t.elapsed();
    drop(all);
    eprintln!("[load] scale: starting the client process");
    let env = [
        (CHILD, registry.endpoints()[0].clone()),
        (PROBE, probe_addr.to_string()),
    ];
    let line = child::run(&env, "SCALE ", CHILD_DEADLINE).await;
    eprintln!("[load] scale: picks during rebuilds");
    let picks = tokio::task::spawn_blocking(move || picks::during_rebuilds(n))
        .await
        .expect("the pick measurement");
    summary::write(report, n, &Fields(&line), write, &picks);
}
