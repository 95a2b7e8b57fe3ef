//! Section `propagation`: how fast a registration and a deregistration reach
//! the client's picker, through a private etcd.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cluster_client::{ClientConfig, ClusterClient, PickerStatus, ServiceStatus};
use registry_actor::{Node, Registrar};

use crate::cluster::{listed_client, put_static, Setup};
use crate::report::{ms, percentile, table_head, Report, Target};

/// Registrations (each followed by its deregistration).
const EVENTS: usize = 100;
/// Static nodes the service keeps, so one node leaving stays far below the
/// client's panic threshold (50 % of the nodes at once).
const BASE: usize = 10;
/// How often the client is asked for its node set.
const POLL: Duration = Duration::from_millis(1);
/// Longest wait for one event to reach the picker.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);

/// Polls the client's node set of `service` every [`POLL`] until `seen`
/// holds; the time since `started`.
async fn poll_until(
    client: &Addr<ClusterClient>,
    service: &str,
    started: Instant,
    seen: impl Fn(&PickerStatus) -> bool,
) -> Duration {
    loop {
        if let Ok(Ok(status)) = client.send(ServiceStatus(service.into())).await {
            if seen(&status) {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < EVENT_DEADLINE,
            "propagation took more than {EVENT_DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

pub(crate) async fn run(report: &mut Report, setup: &Setup) {
    let registry = &setup.registry;
    let kv = registry_actor::connect(registry).await.expect("etcd");
    let base: Vec<Node> = (0..BASE)
        .map(|i| {
            Node::new(
                format!("base{i}"),
                "prop",
                format!("127.0.0.1:{}", 9_000 + i),
            )
            .expect("node")
        })
        .collect();
    put_static(&kv, registry.prefix(), &base).await;
    let client = listed_client(registry, ClientConfig::default(), "prop", BASE).await;

    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for i in 0..EVENTS {
        if i % 25 == 0 {
            eprintln!("[load] propagation: event {}/{EVENTS}", i + 1);
        }
        let id = format!("p{i}");
        let node = Node::new(&id, "prop", format!("127.0.0.1:{}", 10_000 + i)).expect("node");
        // From just before the registrar starts (its lease grant and put) to the
        // first poll at which the client's picker has the node, pickable.
        let started = Instant::now();
        let registrar = Registrar::start(kv.clone(), node, registry);
        added.push(
            poll_until(&client, "prop", started, |s| {
                s.node(&id).is_some_and(|n| !n.held && !n.ejected)
            })
            .await,
        );
        registrar
            .state_changes()
            .wait_for(|s| s.is_registered())
            .await
            .expect("registered");
        // From the deregistration (lease revoked) to the first poll at which the
        // picker lacks it.
        let started = Instant::now();
        registrar.deregister().await.expect("deregister");
        removed.push(poll_until(&client, "prop", started, |s| s.node(&id).is_none()).await);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Discovery propagation\n\n\
         {EVENTS} registrations and deregistrations, one at a time, of a service with {BASE} \
         static nodes, through a private etcd (loopback). Measured to the first poll of the \
         client's picker (`ServiceStatus`, every {} ms) that lists the node as pickable / no \
         longer lists it: registry watch → `RegistryActor` → `PickerActor` rebuild.\n",
        POLL.as_millis()
    );
    table_head(&mut out, "| event | n | p50 ms | p99 ms | max ms |");
    let mut p99s = Vec::new();
    for (name, mut samples) in [
        ("`Registrar` start → first pick", added),
        ("`deregister` → last pick", removed),
    ] {
        samples.sort();
        let p99 = percentile(&samples, 0.99);
        p99s.push(ms(p99));
        let _ = writeln!(
            out,
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            samples.len(),
            ms(percentile(&samples, 0.5)),
            ms(p99),
            ms(samples[samples.len() - 1]),
        );
    }
    report.section(out);
    report.target(Target::new(
        "propagation p99 (register; deregister)",
        format!("{:.1} ms; {:.1} ms", p99s[0], p99s[1]),
        "≤ 100 ms",
        p99s.iter().all(|p| *p <= 100.0),
    ));
}
