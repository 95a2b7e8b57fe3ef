//! Tests of the zone preference's choice of candidates.

use registry_actor::Node;

use super::*;

fn zoned(zones: &[&str]) -> Vec<Node> {
    zones
        .iter()
        .enumerate()
        .map(|(i, z)| {
            Node::new(format!("n{i}"), "echo", format!("127.0.0.1:{}", 2000 + i))
                .expect("valid node")
                .with_zone(*z)
        })
        .collect()
}

#[test]
fn parses_every_mode_and_names_a_bad_one() {
    for mode in [Locality::Off, Locality::Prefer, Locality::Strict] {
        assert_eq!(mode.name().parse::<Locality>().ok(), Some(mode));
    }
    let err = "nearby"
        .parse::<Locality>()
        .expect_err("unknown mode")
        .to_string();
    assert!(err.contains("unknown locality \"nearby\""), "{err}");
    assert_eq!(Locality::default(), Locality::Strict);
}

#[test]
fn keeps_the_own_zone_while_it_has_enough_pickable_nodes() {
    let nodes = zoned(&["a", "a", "b", "b"]);
    let pref = ZonePreference::new("a").with_min_healthy(2);
    assert_eq!(pref.narrow(&nodes, &[0, 1, 2, 3]), Some(vec![0, 1]));
}

#[test]
fn adds_the_next_zone_when_too_few_own_nodes_are_pickable() {
    let nodes = zoned(&["a", "a", "b", "b", "c"]);
    let pref = ZonePreference::new("a").with_min_healthy(2);
    // Node 1 is not pickable: a has one, b brings the count to 3.
    assert_eq!(pref.narrow(&nodes, &[0, 2, 3, 4]), Some(vec![0, 2, 3]));
    // No node of a is pickable: b alone is enough.
    assert_eq!(pref.narrow(&nodes, &[2, 3, 4]), Some(vec![2, 3]));
}

#[test]
fn spills_over_in_priority_order_then_by_zone_name() {
    let nodes = zoned(&["a", "c", "b", "d"]);
    let by_name = ZonePreference::new("a");
    assert_eq!(by_name.narrow(&nodes, &[1, 2, 3]), Some(vec![2]));
    let listed = ZonePreference::new("a").with_priority(["d", "c"]);
    assert_eq!(listed.narrow(&nodes, &[1, 2, 3]), Some(vec![3]));
    assert_eq!(listed.narrow(&nodes, &[1, 2]), Some(vec![1]));
}

#[test]
fn leaves_the_candidates_alone_when_every_zone_is_needed() {
    let nodes = zoned(&["a", "b"]);
    let pref = ZonePreference::new("a").with_min_healthy(2);
    assert_eq!(pref.narrow(&nodes, &[0, 1]), None);
    assert_eq!(pref.narrow(&nodes, &[1]), None);
    assert_eq!(pref.narrow(&nodes, &[]), None);
    // Only the own zone exists: nothing to narrow.
    let single = zoned(&["a", "a"]);
    assert_eq!(ZonePreference::new("a").narrow(&single, &[0, 1]), None);
}
