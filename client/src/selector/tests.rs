use proptest::prelude::*;
use registry_actor::Node;

use super::*;

fn node(version: &str) -> Node {
    Node::new("n", "svc", "127.0.0.1:1")
        .expect("node")
        .with_version(version)
}

#[test]
fn a_semver_range_matches_lenient_versions() {
    let s = Selector::new().with_version(">=1.2, <2").expect("range");
    for v in ["1.2.0", "v1.2", "1.9.9", "V1.4", "1.10.3"] {
        assert!(s.matches(&node(v)), "{v} is in >=1.2, <2");
    }
    for v in [
        "1.1.9",
        "2.0.0",
        "v2",
        "",
        "latest",
        "1.5.0-rc.1",
        "1.2.3.4",
    ] {
        assert!(!s.matches(&node(v)), "{v} is not in >=1.2, <2");
    }
}

#[test]
fn a_plain_version_is_exact() {
    let s = Selector::new().with_version("v1").expect("exact");
    assert!(s.matches(&node("v1")));
    assert!(!s.matches(&node("v1.0")));
    assert!(!s.matches(&node("1")));
}

#[test]
fn bad_versions_are_errors_naming_the_input() {
    for bad in ["", "  ", ">=one", "<2,,"] {
        let err = Selector::new()
            .with_version(bad)
            .expect_err(bad)
            .to_string();
        assert!(err.contains("invalid selector"), "{err}");
    }
}

#[test]
fn group_zone_and_labels_must_all_match() {
    let s = Selector::new()
        .with_group("blue")
        .with_zone("z1")
        .with_label_pair("canary=false")
        .expect("k=v");
    let n = node("v1")
        .with_group("blue")
        .with_zone("z1")
        .with_label("canary", "false")
        .with_label("extra", "x");
    assert!(s.matches(&n));
    assert!(!s.matches(&n.clone().with_group("green")));
    assert!(!s.matches(&n.clone().with_zone("z2")));
    assert!(!s.matches(&n.clone().with_label("canary", "true")));
    assert!(
        !s.matches(&node("v1").with_group("blue").with_zone("z1")),
        "label missing"
    );
    assert!(Selector::new().with_label_pair("novalue").is_err());
    assert!(Selector::new().with_label_pair("=x").is_err());
}

#[test]
fn a_call_selector_overrides_only_what_it_names() {
    let service = Selector::new()
        .with_zone("z1")
        .with_group("blue")
        .with_label("a", "1");
    let call = Selector::new()
        .with_group("green")
        .with_label("b", "2")
        .with_fallback(Fallback::Strict);
    let merged = call.merged_over(&service);
    assert_eq!(merged.to_string(), "group green, zone z1, labels a=1,b=2");
    assert_eq!(merged.fallback(), Some(Fallback::Strict));
    assert_eq!(Selector::new().to_string(), "any");
    assert!(Selector::new().is_empty());
}

proptest! {
    #[test]
    fn lenient_parsing_agrees_with_semver_on_full_versions(
        major in 0u64..100, minor in 0u64..100, patch in 0u64..100, v: bool,
    ) {
        let text = format!("{}{major}.{minor}.{patch}", if v { "v" } else { "" });
        prop_assert_eq!(parse_version_lenient(&text), Some(Version::new(major, minor, patch)));
        let short = format!("{major}.{minor}");
        prop_assert_eq!(parse_version_lenient(&short), Some(Version::new(major, minor, 0)));
    }

    #[test]
    fn lenient_parsing_never_panics(text in "\\PC{0,20}") {
        let _ = parse_version_lenient(&text);
        let _ = Selector::new().with_version(&text);
    }
}

#[test]
fn equal_criteria_make_equal_selectors_however_built() {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};
    fn hash(s: &Selector) -> u64 {
        let mut h = DefaultHasher::new();
        s.hash(&mut h);
        h.finish()
    }
    let a = Selector::new()
        .with_label("x", "1")
        .with_label("y", "2")
        .with_group("g");
    let b = Selector::new()
        .with_group("g")
        .with_label("y", "2")
        .with_label("x", "1");
    let c = Selector::new()
        .with_label("y", "2")
        .merged_over(&Selector::new().with_group("g").with_label("x", "1"));
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(hash(&a), hash(&b));
    assert_eq!(hash(&a), hash(&c));
    assert_eq!(
        Selector::new(),
        Selector::new().merged_over(&Selector::default())
    );
    assert_ne!(a, a.clone().with_zone("z"));
}
