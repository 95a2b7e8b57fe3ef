//! Discovery propagation: the time from a `Registrar`'s start to a
//! subscriber's delivery of the new set (from then on a client can pick the
//! node), and from `deregister` to the delivery of the removal, over 100
//! registrations — against a private single etcd, then against a private
//! 3-member cluster (registry and registrars over every endpoint). Prints
//! p50/p99/max. Run: `cargo bench -p registry-actor --bench propagation`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use actix::prelude::*;
use registry_actor::testing::{EtcdCluster, EtcdServer};
use registry_actor::{Node, NodesChanged, Registrar, RegistryActor, RegistryConfig, Subscribe};
use tokio::sync::mpsc;

struct Forward(mpsc::UnboundedSender<(Instant, NodesChanged)>);

impl Actor for Forward {
    type Context = Context<Self>;
}

impl Handler<NodesChanged> for Forward {
    type Result = ();
    fn handle(&mut self, msg: NodesChanged, _: &mut Context<Self>) {
        let _ = self.0.send((Instant::now(), msg));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what:<28} n={:<4} p50={:>8.3?} p99={:>8.3?} max={:>8.3?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<(Instant, NodesChanged)>,
    pred: impl Fn(&NodesChanged) -> bool,
) -> Instant {
    loop {
        let (at, changed) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("delivery within 10 s")
            .expect("subscription open");
        if pred(&changed) {
            return at;
        }
    }
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less args; only run
    // the measurement when invoked by `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("propagation: run with `cargo bench` to measure");
        return;
    }
    actix::System::new().block_on(async {
        let etcd = EtcdServer::start().await.expect("etcd");
        measure("a single etcd", &etcd.registry_config()).await;
        drop(etcd);
        let cluster = EtcdCluster::start(3).await.expect("etcd cluster");
        measure("a 3-member etcd cluster", &cluster.registry_config()).await;
    });
}

async fn measure(over: &str, config: &RegistryConfig) {
    let client = registry_actor::connect(config).await.expect("client");
    let registry = RegistryActor::new(client.clone(), config).start();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let forward = Forward(tx).start();
    registry
        .send(Subscribe::new("echo", forward.recipient()))
        .await
        .expect("subscribe");
    wait_for(&mut rx, |c| c.nodes.is_empty()).await;

    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for i in 0..100u16 {
        let id = format!("n{i}");
        let node = Node::new(&id, "echo", format!("127.0.0.1:{}", 10_000 + i)).expect("node");
        let registrar = Registrar::start(client.clone(), node, config);
        let mut states = registrar.state_changes();
        // The registrar turns Registered right after its put and the set-up of its
        // keepalive; the put itself is what the subscriber sees, so measure from
        // just before the start.
        let started = Instant::now();
        let seen = wait_for(&mut rx, |c| c.nodes.iter().any(|n| n.id() == id)).await;
        added.push(seen - started);
        states
            .wait_for(|s| s.is_registered())
            .await
            .expect("registered");

        let started = Instant::now();
        registrar.deregister().await.expect("deregister");
        let seen = wait_for(&mut rx, |c| c.nodes.iter().all(|n| n.id() != id)).await;
        removed.push(seen - started);
    }
    println!("discovery propagation over {over} (loopback), 100 registrations");
    report("register -> delivered", added);
    report("deregister -> delivered", removed);
}
