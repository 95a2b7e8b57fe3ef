use proptest::prelude::*;

use super::*;

const KEY: &str = "/grpc-cluster/services/echo/echo-1";

fn decode(value: &str) -> Result<Node, DecodeError> {
    Node::decode(KEY, "echo", value.as_bytes())
}

#[test]
fn decodes_the_contract_example() {
    let node = decode(
        r#"{"id":"echo-1","service":"echo","addr":"127.0.0.1:50051",
            "version":"v1","group":"blue","weight":100,"zone":"local",
            "labels":{"canary":"false"}}"#,
    )
    .expect("the documented example decodes");
    assert_eq!(node.id(), "echo-1");
    assert_eq!(node.service(), "echo");
    assert_eq!(node.addr(), "127.0.0.1:50051");
    assert_eq!(node.version(), "v1");
    assert_eq!(node.group(), "blue");
    assert_eq!(node.weight(), 100);
    assert_eq!(node.zone(), "local");
    assert_eq!(node.label("canary"), Some("false"));
}

#[test]
fn hand_written_minimal_value_gets_defaults_and_ignores_unknown_fields() {
    let node = decode(r#"{"id":"echo-1","addr":"db.local:9000","owner":"team-x","meta":{"x":1}}"#)
        .expect("minimal value decodes");
    assert_eq!(node.service(), "echo", "service comes from the key");
    assert_eq!(node.version(), "");
    assert_eq!(node.group(), "");
    assert_eq!(node.zone(), "");
    assert_eq!(node.weight(), DEFAULT_WEIGHT);
    assert!(node.labels().is_empty());
}

#[test]
fn weight_zero_and_ipv6_are_valid() {
    let node = decode(r#"{"id":"echo-1","addr":"[::1]:50051","weight":0}"#).expect("valid");
    assert_eq!(node.weight(), 0);
    assert_eq!(node.addr(), "[::1]:50051");
}

type KindCheck = fn(&DecodeErrorKind) -> bool;

#[test]
fn every_kind_of_bad_value_is_rejected_naming_the_key() {
    let cases: &[(&str, KindCheck)] = &[
        ("not json", |k| matches!(k, DecodeErrorKind::Json(_))),
        (r#"{"id":"echo-1"}"#, |k| {
            matches!(k, DecodeErrorKind::MissingField("addr"))
        }),
        (r#"{"addr":"h:1"}"#, |k| {
            matches!(k, DecodeErrorKind::MissingField("id"))
        }),
        (r#"{"id":"","addr":"h:1"}"#, |k| {
            matches!(k, DecodeErrorKind::MissingField("id"))
        }),
        (r#"{"id":"echo-1","addr":"h:99999"}"#, |k| {
            matches!(k, DecodeErrorKind::Addr { .. })
        }),
        (r#"{"id":"echo-1","addr":"h:0"}"#, |k| {
            matches!(k, DecodeErrorKind::Addr { .. })
        }),
        (r#"{"id":"echo-1","addr":"h"}"#, |k| {
            matches!(k, DecodeErrorKind::Addr { .. })
        }),
        (r#"{"id":"echo-1","addr":":80"}"#, |k| {
            matches!(k, DecodeErrorKind::Addr { .. })
        }),
        (r#"{"id":"echo-1","addr":"::1:80"}"#, |k| {
            matches!(k, DecodeErrorKind::Addr { .. })
        }),
        (
            r#"{"id":"echo-1","addr":"0.0.0.0:80"}"#,
            |k| matches!(k, DecodeErrorKind::Addr { why, .. } if why.contains("unspecified")),
        ),
        (
            r#"{"id":"echo-1","addr":"[::]:80"}"#,
            |k| matches!(k, DecodeErrorKind::Addr { why, .. } if why.contains("unspecified")),
        ),
        (r#"{"id":"echo-1","addr":"h:1","weight":-5}"#, |k| {
            matches!(k, DecodeErrorKind::Weight(-5))
        }),
        (r#"{"id":"echo-1","addr":"h:1","weight":1.5}"#, |k| {
            matches!(k, DecodeErrorKind::Json(_))
        }),
        (r#"{"id":"echo-1","addr":"h:1","weight":5000000000}"#, |k| {
            matches!(k, DecodeErrorKind::Weight(_))
        }),
        (r#"{"id":"echo-1","addr":"h:1","service":"other"}"#, |k| {
            matches!(k, DecodeErrorKind::ServiceMismatch { .. })
        }),
        (r#"{"id":"echo-1","addr":"h:1","labels":{"k":1}}"#, |k| {
            matches!(k, DecodeErrorKind::Json(_))
        }),
        (r#"[1,2]"#, |k| matches!(k, DecodeErrorKind::Json(_))),
        (
            r#"{"id":"echo-2","addr":"h:1"}"#,
            |k| matches!(k, DecodeErrorKind::IdMismatch { value, key } if value == "echo-2" && key == "echo-1"),
        ),
    ];
    for (value, expected) in cases {
        let err = decode(value).expect_err(value);
        assert_eq!(err.key(), KEY);
        assert!(expected(err.kind()), "{value}: unexpected {:?}", err.kind());
        assert!(
            err.to_string().contains(KEY),
            "message names the key: {err}"
        );
    }
}

#[test]
fn keys_follow_the_contract() {
    assert_eq!(
        service_prefix("/grpc-cluster/services", "echo"),
        "/grpc-cluster/services/echo/"
    );
    assert_eq!(service_prefix("/p/", "echo"), "/p/echo/");
    let node = Node::new("echo-1", "echo", "127.0.0.1:1").expect("valid");
    assert_eq!(node.key("/grpc-cluster/services"), KEY);
}

#[test]
fn builder_rejects_bad_input() {
    assert!(Node::new("", "echo", "h:1").is_err());
    assert!(Node::new("a", "echo", "h:70000").is_err());
    let node = Node::new("a", "echo", "h:1").expect("valid");
    assert!(node.clone().with_addr("nope").is_err());
    assert_eq!(node.with_addr("h:2").expect("valid").addr(), "h:2");
}

fn arb_node() -> impl Strategy<Value = Node> {
    (
        "[a-z0-9-]{1,12}",
        "[a-z0-9.-]{1,20}",
        1u16..,
        "[ -~]{0,8}",
        "[ -~]{0,8}",
        any::<u32>(),
        "\\PC{0,8}",
        proptest::collection::btree_map("\\PC{0,6}", "\\PC{0,6}", 0..4),
    )
        .prop_map(|(id, host, port, version, group, weight, zone, labels)| {
            let mut node = Node::new(id, "echo", format!("{host}:{port}"))
                .expect("generated node is valid")
                .with_version(version)
                .with_group(group)
                .with_weight(weight)
                .with_zone(zone);
            for (k, v) in labels {
                node = node.with_label(k, v);
            }
            node
        })
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(node in arb_node()) {
        let key = node.key("/grpc-cluster/services");
        let back = Node::decode(&key, "echo", &node.encode()).expect("own encoding decodes");
        prop_assert_eq!(back, node);
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Node::decode(KEY, "echo", &bytes);
    }

    #[test]
    fn decoder_never_panics_on_json_shaped_noise(
        id in proptest::option::of("\\PC{0,10}"),
        addr in proptest::option::of("\\PC{0,24}"),
        weight in proptest::option::of(any::<i64>()),
        extra in "\\PC{0,16}",
    ) {
        let mut obj = serde_json::Map::new();
        if let Some(id) = id { obj.insert("id".into(), id.into()); }
        if let Some(addr) = addr { obj.insert("addr".into(), addr.into()); }
        if let Some(w) = weight { obj.insert("weight".into(), w.into()); }
        obj.insert(extra, serde_json::Value::Null);
        let bytes = serde_json::to_vec(&obj).expect("serializable");
        if let Ok(node) = Node::decode(KEY, "echo", &bytes) {
            prop_assert!(!node.id().is_empty());
            prop_assert!(node.addr().rsplit_once(':').is_some());
        }
    }
}
