//! Property tests of the balancers: each against its defining property.

use std::collections::HashMap;

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::least_request::choose_less_loaded;
use super::*;
use crate::hash::HashKey;

fn members(ids: &[String], weights: &[u32]) -> Vec<Member> {
    ids.iter()
        .zip(weights)
        .map(|(id, &weight)| Member {
            id_hash: crate::hash::fnv1a(id.as_bytes()),
            weight,
        })
        .collect()
}

/// `before` less the members at `gone`, with `joining` members (of new ids,
/// with their weights) put in at their positions (each taken modulo the
/// list's length then); and where each member of `before` went (`GONE` for
/// the removed).
fn changed(before: &[Member], gone: &[usize], joining: &[(usize, u32)]) -> (Vec<Member>, Vec<u32>) {
    let gone: std::collections::HashSet<usize> = gone.iter().map(|g| g % before.len()).collect();
    let mut list: Vec<(Option<usize>, Member)> = before
        .iter()
        .enumerate()
        .filter(|(k, _)| !gone.contains(k))
        .map(|(k, &m)| (Some(k), m))
        .collect();
    for (n, (at, weight)) in joining.iter().enumerate() {
        let member = Member {
            id_hash: crate::hash::fnv1a(format!("joining-{n}").as_bytes()),
            weight: *weight,
        };
        list.insert(at % (list.len() + 1), (None, member));
    }
    let mut moved = vec![GONE; before.len()];
    for (to, (from, _)) in list.iter().enumerate() {
        if let Some(from) = from {
            moved[*from] = to as u32;
        }
    }
    (list.into_iter().map(|(_, m)| m).collect(), moved)
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

/// Picks `count` times with nothing excluded and no load.
fn picks(policy: &Policy, rng: &mut SmallRng, count: usize) -> Vec<usize> {
    (0..count)
        .map(|_| {
            policy
                .pick(&mut PickCx {
                    rng: &mut *rng,
                    hash: None,
                    accept: |_| true,
                    load: |_| 0,
                })
                .expect("a candidate")
        })
        .collect()
}

fn build(balancer: Balancer, members: &[Member], rng: &mut SmallRng) -> Policy {
    Policy::build(balancer, members.len(), members, rng)
}

fn counts(picks: &[usize], n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for &p in picks {
        c[p] += 1;
    }
    c
}

/// nginx's smooth weighted round robin, O(n) per pick, as written in
/// `ngx_http_upstream_get_peer`: the reference the weight-class version must equal.
fn nginx_swrr(weights: &[u32], picks: usize) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..picks)
        .map(|_| {
            let mut best: Option<usize> = None;
            for (i, &w) in weights.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                current[i] += i64::from(w);
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let b = best.expect("a positive weight");
            current[b] -= total;
            b
        })
        .collect()
}

/// Asserts every node's share of `picks` is within 2 percentage points of its
/// share of the weights.
fn assert_within_2_percent(picks: &[usize], weights: &[u32]) -> Result<(), TestCaseError> {
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    for (i, &c) in counts(picks, weights.len()).iter().enumerate() {
        let expected = f64::from(weights[i]) / total;
        let observed = c as f64 / picks.len() as f64;
        prop_assert!(
            (observed - expected).abs() <= 0.02,
            "node {i}: observed {observed:.4}, expected {expected:.4}"
        );
    }
    Ok(())
}

#[test]
fn smooth_wrr_5_1_1_gives_the_nginx_sequence() {
    let ids = ids(3);
    let wrr = WrrSchedule::new(&members(&ids, &[5, 1, 1]));
    let mut rng = SmallRng::seed_from_u64(1);
    let names: String = (0..14)
        .map(|_| {
            let p = wrr
                .pick(&mut PickCx {
                    rng: &mut rng,
                    hash: None,
                    accept: |_| true,
                    load: |_| 0,
                })
                .expect("pick");
            ['a', 'b', 'c'][p]
        })
        .collect();
    assert_eq!(names, "aabacaaaabacaa", "a a b a c a a, twice");
}

#[test]
fn a_long_wrr_period_is_scaled_down_keeping_every_share() {
    // Periods past 65536 entries are built over scaled weights.
    let ids = ids(4);
    let weights = [1_000_000, 3_000_000, 7, 1];
    let wrr = WrrSchedule::new(&members(&ids, &weights));
    let mut rng = SmallRng::seed_from_u64(3);
    let seq: Vec<usize> = (0..200_000)
        .map(|_| {
            wrr.pick(&mut PickCx {
                rng: &mut rng,
                hash: None,
                accept: |_| true,
                load: |_| 0,
            })
            .expect("pick")
        })
        .collect();
    let c = counts(&seq, 4);
    assert!(c[2] > 0 && c[3] > 0, "light nodes keep a turn: {c:?}");
    let ratio = c[1] as f64 / c[0] as f64;
    assert!((ratio - 3.0).abs() < 0.01, "3:1 kept: {ratio}");
}

#[test]
fn balancer_names_round_trip_and_unknown_names_list_the_choices() {
    for b in Balancer::ALL {
        assert_eq!(b.name().parse::<Balancer>().expect("known"), b);
        assert_eq!(b.to_string(), b.name());
    }
    let err = "fastest"
        .parse::<Balancer>()
        .expect_err("unknown")
        .to_string();
    assert!(
        err.contains("unknown balancer \"fastest\"; expected one of pick_first"),
        "{err}"
    );
}

#[test]
fn pick_first_takes_the_first_not_excluded() {
    let p = Policy::PickFirst { len: 3 };
    let mut rng = SmallRng::seed_from_u64(1);
    let mut cx = PickCx {
        rng: &mut rng,
        hash: None,
        accept: |i| i != 0,
        load: |_| 0,
    };
    assert_eq!(p.pick(&mut cx), Some(1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_robin_cycles_exactly(n in 1usize..60, rounds in 1usize..6, seed: u64) {
        let ids = ids(n);
        let mut rng = SmallRng::seed_from_u64(seed);
        let p = build(Balancer::RoundRobin, &members(&ids, &vec![100; n]), &mut rng);
        let seq = picks(&p, &mut rng, n * rounds);
        prop_assert!(counts(&seq, n).iter().all(|&c| c == rounds), "every node exactly {rounds} times");
        for w in seq.windows(2) {
            prop_assert_eq!(w[1], (w[0] + 1) % n, "each pick is the next position");
        }
    }

    #[test]
    fn round_robin_skips_excluded_and_keeps_cycling(n in 2usize..40, excluded in 0usize..40, seed: u64) {
        let excluded = excluded % n;
        let mut rng = SmallRng::seed_from_u64(seed);
        let rr = RoundRobin::new(n, &mut rng);
        let seq: Vec<usize> = (0..2 * (n - 1)).map(|_| rr.pick(|i| i != excluded).expect("pick")).collect();
        prop_assert!(!seq.contains(&excluded));
        let c = counts(&seq, n);
        prop_assert!((0..n).filter(|&i| i != excluded).all(|i| c[i] == 2));
    }

    #[test]
    fn weighted_random_is_within_2_percent_of_the_weights(
        weights in prop::collection::vec(1u32..200, 1..9), seed: u64,
    ) {
        let ids = ids(weights.len());
        let mut rng = SmallRng::seed_from_u64(seed);
        let p = build(Balancer::WeightedRandom, &members(&ids, &weights), &mut rng);
        let seq = picks(&p, &mut rng, 100_000);
        assert_within_2_percent(&seq, &weights)?;
    }

    #[test]
    fn alias_tables_built_in_64_bits_equal_those_built_in_128(
        weights in prop::collection::vec(1u32..100_000, 1..400),
    ) {
        let n = weights.len();
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let (mut t64, mut a64) = (vec![1u64 << 32; n], (0..n as u32).collect::<Vec<_>>());
        let (mut t128, mut a128) = (t64.clone(), a64.clone());
        weighted_random::fill(&weights, total, &mut t64, &mut a64);
        weighted_random::fill(&weights, u128::from(total), &mut t128, &mut a128);
        prop_assert_eq!(t64, t128);
        prop_assert_eq!(a64, a128);
    }

    #[test]
    fn alias_table_holds_exactly_the_weights(weights in prop::collection::vec(1u32..u32::MAX, 1..50)) {
        let ids = ids(weights.len());
        let table = AliasTable::new(&members(&ids, &weights));
        let n = weights.len() as f64;
        let mut mass = vec![0f64; weights.len()];
        for (i, (&t, &a)) in table.threshold.iter().zip(table.alias.iter()).enumerate() {
            let keep = t as f64 / 2f64.powi(32);
            mass[i] += keep / n;
            mass[a as usize] += (1.0 - keep) / n;
        }
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        for (i, &w) in weights.iter().enumerate() {
            prop_assert!((mass[i] - f64::from(w) / total).abs() < 1e-6, "node {i}");
        }
    }

    #[test]
    fn weighted_round_robin_is_within_2_percent_and_exact_per_period(
        weights in prop::collection::vec(1u32..200, 1..9), seed: u64,
    ) {
        let ids = ids(weights.len());
        let mut rng = SmallRng::seed_from_u64(seed);
        let p = build(Balancer::WeightedRoundRobin, &members(&ids, &weights), &mut rng);
        let seq = picks(&p, &mut rng, 100_000);
        assert_within_2_percent(&seq, &weights)?;
        let period: usize = weights.iter().map(|&w| w as usize).sum();
        let c = counts(&seq[..period], weights.len());
        prop_assert!(c.iter().zip(&weights).all(|(&c, &w)| c == w as usize), "one period holds each weight exactly");
    }

    #[test]
    fn weighted_round_robin_equals_nginx(
        weights in prop::collection::vec(prop_oneof![Just(1u32), Just(5), 1u32..20], 1..30),
    ) {
        let ids = ids(weights.len());
        let wrr = WrrSchedule::new(&members(&ids, &weights));
        let mut rng = SmallRng::seed_from_u64(0);
        let period: usize = weights.iter().map(|&w| w as usize).sum();
        let ours: Vec<usize> = (0..2 * period + 7)
            .map(|_| wrr.pick(&mut PickCx { rng: &mut rng, hash: None, accept: |_| true, load: |_| 0 }).expect("pick"))
            .collect();
        prop_assert_eq!(ours, nginx_swrr(&weights, 2 * period + 7));
    }

    #[test]
    fn consistent_hash_keeps_a_key_on_its_node_while_the_set_is_unchanged(
        n in 1usize..40, keys in prop::collection::vec(any::<u64>(), 1..200), seed: u64,
    ) {
        let ids = ids(n);
        let weights = vec![100; n];
        let mut rng = SmallRng::seed_from_u64(seed);
        let ring = Ring::new(&members(&ids, &weights));
        let rebuilt = Ring::new(&members(&ids, &weights));
        for &key in &keys {
            let mut cx = PickCx { rng: &mut rng, hash: Some(key), accept: |_| true, load: |_| 0 };
            let first = ring.pick(&mut cx);
            prop_assert_eq!(first, ring.pick(&mut cx), "same ring, same node");
            prop_assert_eq!(first, rebuilt.pick(&mut cx), "rebuilt ring, same node");
        }
    }

    #[test]
    fn a_ring_updated_from_the_one_before_equals_a_ring_built_anew(
        weights in prop::collection::vec(1u32..400, 1..300),
        gone in prop::collection::vec(any::<usize>(), 0..4),
        joining in prop::collection::vec((any::<usize>(), 1u32..400), 0..4),
    ) {
        let ids = ids(weights.len());
        let before = members(&ids, &weights);
        let (list, moved) = changed(&before, &gone, &joining);
        let ring = Ring::new(&before);
        let fresh = Ring::new(&list);
        match ring.updated(&moved, &list) {
            Some(updated) => prop_assert_eq!(updated, fresh),
            // Only when the positions need another width.
            None => prop_assert_ne!(
                list.len().next_power_of_two().max(2),
                before.len().next_power_of_two().max(2)
            ),
        }
    }

    #[test]
    fn consistent_hash_moves_about_one_eleventh_when_an_eleventh_node_joins(prefix in "[a-z]{1,8}") {
        let ten: Vec<String> = (0..10).map(|i| format!("{prefix}-{i}")).collect();
        let mut eleven = ten.clone();
        eleven.push(format!("{prefix}-new"));
        let weights = vec![100; 11];
        let before = Ring::new(&members(&ten, &weights));
        let after = Ring::new(&members(&eleven, &weights));
        let mut rng = SmallRng::seed_from_u64(0);
        let mut moved = 0;
        for k in 0..10_000u32 {
            let hash = Some(HashKey::of(k.to_le_bytes()).get());
            let mut cx = PickCx { rng: &mut rng, hash, accept: |_| true, load: |_| 0 };
            let (a, b) = (before.pick(&mut cx), after.pick(&mut cx));
            if a != b {
                moved += 1;
                prop_assert_eq!(b, Some(10), "a key only ever moves to the new node");
            }
        }
        // The new node owns the arcs of its 160 points: a share of 1/11 with a
        // standard deviation of 1/(11 × sqrt(160)) ≈ 0.72 points, plus the
        // sampling noise of 10,000 keys (≈ 0.29 points). The bound is about
        // six of those deviations above 1/11: any prefix stays within it, a
        // ring that moved keys between old nodes would not.
        prop_assert!(moved as f64 <= 10_000.0 * (1.0 / 11.0 + 0.05), "{moved} of 10000 keys moved");
    }

    #[test]
    fn least_request_picks_the_less_loaded_of_two(loads in prop::collection::vec(0u32..10, 2..3), seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let p = build(Balancer::LeastRequest, &members(&ids(2), &[100, 100]), &mut rng);
        for _ in 0..20 {
            let pick = p.pick(&mut PickCx { rng: &mut rng, hash: None, accept: |_| true, load: |i| loads[i] }).expect("pick");
            prop_assert_eq!(loads[pick], *loads.iter().min().expect("two"));
        }
    }

    #[test]
    fn least_request_never_takes_the_worse_of_its_two(a in 0usize..100, b in 0usize..100, loads in prop::collection::vec(0u32..5, 100)) {
        let chosen = choose_less_loaded(a, b, |i| loads[i]);
        prop_assert!(chosen == a || chosen == b);
        prop_assert_eq!(loads[chosen], loads[a].min(loads[b]));
    }

    #[test]
    fn least_request_never_picks_a_unique_most_loaded_node(n in 3usize..30, hot in 0usize..30, seed: u64) {
        let hot = hot % n;
        let mut rng = SmallRng::seed_from_u64(seed);
        let p = build(Balancer::LeastRequest, &members(&ids(n), &vec![100; n]), &mut rng);
        for _ in 0..200 {
            let pick = p.pick(&mut PickCx { rng: &mut rng, hash: None, accept: |_| true, load: |i| if i == hot { 9 } else { 1 } });
            prop_assert_ne!(pick, Some(hot));
        }
    }

    #[test]
    fn no_balancer_picks_an_excluded_node(
        weights in prop::collection::vec(1u32..50, 1..30),
        excluded in prop::collection::btree_set(0usize..30, 0..30),
        which in 0usize..7, seed: u64, hash: u64,
    ) {
        let balancer = Balancer::ALL[which];
        let n = weights.len();
        let ids = ids(n);
        let mut rng = SmallRng::seed_from_u64(seed);
        let p = build(balancer, &members(&ids, &weights), &mut rng);
        let all_excluded = (0..n).all(|i| excluded.contains(&i));
        for _ in 0..20 {
            let pick = p.pick(&mut PickCx { rng: &mut rng, hash: Some(hash), accept: |i| !excluded.contains(&i), load: |_| 0 });
            match pick {
                Some(i) => prop_assert!(i < n && !excluded.contains(&i), "{balancer} picked excluded {i}"),
                None => prop_assert!(all_excluded, "{balancer} found nothing though some node is left"),
            }
        }
    }

    #[test]
    fn randomized_balancers_reach_every_node(n in 1usize..20, which in prop::sample::select(vec![2usize, 3, 5]), seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let p = build(Balancer::ALL[which], &members(&ids(n), &vec![100; n]), &mut rng);
        let seq = picks(&p, &mut rng, 400 * n);
        let seen: HashMap<usize, usize> = seq.iter().map(|&i| (i, 1)).collect();
        prop_assert_eq!(seen.len(), n);
    }
}

#[test]
fn a_capped_ring_is_updated_for_one_node_and_rebuilt_when_the_cap_rescales() {
    // 3,000 nodes: every node's points are scaled down to fit the cap.
    let ids = ids(3_000);
    let weights: Vec<u32> = (0..3_000).map(|i| 50 + 50 * (i % 3)).collect();
    let before = members(&ids, &weights);
    let ring = Ring::new(&before);
    let (list, moved) = changed(&before, &[1_500], &[(700, 100)]);
    let updated = ring.updated(&moved, &list).expect("the same counts");
    assert_eq!(updated, Ring::new(&list));
    // A heavy node joining scales every other node's points down.
    let (list, moved) = changed(&before, &[], &[(0, 400_000)]);
    assert_eq!(ring.updated(&moved, &list), None);
}

#[test]
fn big_rings_are_capped_and_keep_every_node() {
    let ids = ids(10_000);
    let ring = Ring::new(&members(&ids, &vec![100; 10_000]));
    assert!(ring.len() as u64 <= consistent_hash::MAX_POINTS + 10_000);
    assert!(ring.len() >= 10_000, "every node keeps at least one point");
    let small = Ring::new(&members(&ids[..3], &[100, 200, 0]));
    let per_default = consistent_hash::VNODES_PER_DEFAULT_WEIGHT as usize;
    assert_eq!(
        small.len(),
        3 * per_default,
        "points follow the weight; weight 0 has none"
    );
}
