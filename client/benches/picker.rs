//! Pick cost of every balancer at 10, 1,000 and 10,000 nodes, the cost of a
//! snapshot rebuild at 10,000 nodes, of a one-node change at 100,000 nodes,
//! and one actor round trip for scale.
//!
//! `cargo bench -p cluster-client --bench picker -- --warm-up-time 1 --measurement-time 2`

#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use std::hint::black_box;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cluster_client::{
    Balancer, HashKey, NodeHandle, Pick, Picker, PickerActor, PickerConfig, Selector,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use registry_actor::{Node, NodeSet, NodesChanged, RegistryActor, RegistryConfig};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// `n` nodes in three weight classes (50, 100, 150) and two versions.
fn nodes(n: usize) -> NodeSet {
    (0..n)
        .map(|i| {
            Node::new(
                format!("echo-{i:05}"),
                "echo",
                format!("10.{}.{}.{}:50051", i >> 16, (i >> 8) & 255, i & 255),
            )
            .expect("valid node")
            .with_weight(50 + 50 * (i % 3) as u32)
            .with_version(if i % 2 == 0 { "1.4.0" } else { "2.0.0" })
            .with_group(if i % 4 == 0 { "blue" } else { "green" })
        })
        .collect()
}

fn picker(balancer: Balancer, nodes: NodeSet) -> Picker {
    let mut p = Picker::with_seed("echo", PickerConfig::default().with_balancer(balancer), 42);
    p.update(nodes, 1, Instant::now());
    p
}

/// A different, well-spread key per pick (for `consistent_hash`; others ignore it).
fn next_key(counter: &mut u64) -> HashKey {
    *counter = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
    HashKey::from_hash(*counter)
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for balancer in Balancer::ALL {
        for n in SIZES {
            let mut p = picker(balancer, nodes(n));
            let mut counter = 0u64;
            group.bench_with_input(BenchmarkId::new(balancer.name(), n), &n, |b, _| {
                b.iter(|| black_box(p.pick(None, &[], Some(next_key(&mut counter)))))
            });
        }
    }
    group.finish();
}

fn pick_with_exclusion_and_selector(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_10k");
    let n = 10_000;
    for balancer in Balancer::ALL {
        let mut p = picker(balancer, nodes(n));
        let status = p.status();
        let exclude: Vec<NodeHandle> = status.nodes[..2].iter().map(|s| s.handle).collect();
        let mut counter = 0u64;
        group.bench_function(BenchmarkId::new("excluding_2", balancer.name()), |b| {
            b.iter(|| black_box(p.pick(None, &exclude, Some(next_key(&mut counter)))))
        });
        let selector = Selector::new()
            .with_version(">=1.2, <2")
            .expect("range")
            .with_group("blue");
        group.bench_function(BenchmarkId::new("call_selector", balancer.name()), |b| {
            b.iter(|| black_box(p.pick(Some(&selector), &[], Some(next_key(&mut counter)))))
        });
    }
    group.finish();
}

/// Smooth WRR costs O(distinct weights) per pick: 10,000 nodes in 100 weight
/// classes instead of three.
fn weighted_round_robin_many_weights(c: &mut Criterion) {
    let set: NodeSet = nodes(10_000)
        .iter()
        .enumerate()
        .map(|(i, n)| n.clone().with_weight(1 + (i % 100) as u32))
        .collect();
    let mut p = picker(Balancer::WeightedRoundRobin, set);
    c.bench_function("pick_10k/100_weights/weighted_round_robin", |b| {
        b.iter(|| black_box(p.pick(None, &[], None)))
    });
}

fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild_10k");
    group.sample_size(10);
    let set = nodes(10_000);
    for balancer in Balancer::ALL {
        let mut p = picker(balancer, set.clone());
        let mut revision = 1;
        group.bench_function(balancer.name(), |b| {
            b.iter(|| {
                revision += 1;
                p.update(set.clone(), revision, Instant::now());
            })
        });
    }
    group.finish();
}

/// A node-set change of one node in a set of 100,000: the set alternates
/// between `n` nodes and the same with one more, as a registration and its
/// deregistration arrive (the two sets share every chunk but one, as the
/// registry's consecutive sets do).
fn one_node_change_100k(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_node_change_100k");
    group.sample_size(10);
    let base = nodes(100_000);
    let extra = Node::new("echo-99999-extra", "echo", "10.9.9.9:50051").expect("valid node");
    let more = base.updated([(extra.id().to_owned(), Some(extra))]);
    for balancer in [
        Balancer::RoundRobin,
        Balancer::LeastRequest,
        Balancer::WeightedRandom,
        Balancer::WeightedRoundRobin,
        Balancer::ConsistentHash,
    ] {
        let mut p = picker(balancer, base.clone());
        let mut revision = 1;
        group.bench_function(balancer.name(), |b| {
            b.iter(|| {
                revision += 1;
                let set = if revision % 2 == 0 { &more } else { &base };
                p.update(set.clone(), revision, Instant::now());
            })
        });
    }
    // The same change while calls pick with call selectors: each selector's
    // pool is built into every new snapshot (a pick after each change keeps
    // it in use).
    for (name, selector) in [
        (
            "round_robin/group_selector",
            Selector::new().with_group("blue"),
        ),
        (
            "round_robin/version_range_selector",
            Selector::new().with_version(">=1.2, <2").expect("range"),
        ),
    ] {
        let mut p = picker(Balancer::RoundRobin, base.clone());
        let mut revision = 1;
        p.pick(Some(&selector), &[], None).expect("a match");
        group.bench_function(name, |b| {
            b.iter(|| {
                revision += 1;
                let set = if revision % 2 == 0 { &more } else { &base };
                p.update(set.clone(), revision, Instant::now());
                black_box(p.pick(Some(&selector), &[], None).expect("a match"));
            })
        });
    }
    group.finish();
}

/// After a mass removal held by the panic threshold (15,000 of 20,000 nodes
/// gone at once), the picker's status: each node says whether it is held.
fn status_with_held_nodes(c: &mut Criterion) {
    let all = nodes(20_000);
    let kept: NodeSet = all.iter().take(5_000).cloned().collect();
    let mut p = picker(Balancer::RoundRobin, all);
    p.update(kept, 2, Instant::now());
    assert_eq!(p.status().held(), 15_000);
    let mut group = c.benchmark_group("held_15k_of_20k");
    group.sample_size(10);
    group.bench_function("status", |b| b.iter(|| black_box(p.status())));
    group.finish();
}

fn actor_round_trip(c: &mut Criterion) {
    let system = System::new();
    let picker = system.block_on(async {
        // A registry whose etcd is nowhere: the bench feeds the node set itself.
        let config = RegistryConfig::default().with_endpoints(["127.0.0.1:9"]);
        let client = registry_actor::connect(&config).await.expect("lazy client");
        let registry = RegistryActor::new(client, &config).start();
        let picker = PickerActor::new("echo", PickerConfig::default(), registry).start();
        picker
            .send(NodesChanged {
                service: "echo".into(),
                nodes: nodes(10_000),
                revision: 1,
            })
            .await
            .expect("picker alive");
        picker
    });
    c.bench_function("actor_pick_round_trip/round_robin/10000", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let picked = picker.send(Pick::new()).await.expect("alive");
                    black_box(picked.expect("a node"));
                }
                start.elapsed()
            })
        })
    });
}

criterion_group! {
    name = benches;
    // The bench harness's entry point.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    targets = pick, pick_with_exclusion_and_selector, weighted_round_robin_many_weights, rebuild,
        one_node_change_100k, status_with_held_nodes, actor_round_trip
}
criterion_main!(benches);
