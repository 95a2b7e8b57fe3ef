//! The node decoder against generated hostile values: random bytes, JSON-ish
//! token soup, bit-flipped, truncated and spliced valid values, and objects
//! whose fields hold tricky addresses, numbers and strings. It never panics; an
//! accepted value is a valid node that survives encode → decode unchanged; a
//! rejected one names its key.

use proptest::prelude::*;

use super::*;

const KEY: &str = "/grpc-cluster/services/echo/fuzz";

const FIELDS: &[&str] = &[
    "id", "service", "addr", "version", "group", "weight", "zone", "labels", "owner", "",
];

const ADDRS: &[&str] = &[
    "127.0.0.1:50051",
    "h:1",
    "db.local:65535",
    "[::1]:80",
    "[::1]:0",
    "::1:80",
    ":80",
    "h:",
    "h",
    "h:65536",
    "h:-1",
    "h:+1",
    "h: 1",
    "h :1",
    "a:b:c",
    "[::1]",
    "[]:1",
    "[:1",
    "ünï.cödé:443",
    "h:99999999999999999999",
    "",
    ":",
    "\\u0000:1",
];

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u",
    "\\ud800",
    "null",
    "true",
    "false",
    "-",
    "0",
    "1e999",
    "-1",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775809",
    "4294967296",
    "1.5",
    " ",
    "\n",
    "\u{feff}",
    "\"id\"",
    "\"addr\"",
    "\"weight\"",
    "\"labels\"",
];

const STRING_PIECES: &[&str] = &[
    "a",
    "fuzz",
    "",
    " ",
    "\\\"",
    "\\\\",
    "\\n",
    "\\u0000",
    "\\ud83d\\ude00",
    "\\ud800",
    "é",
    "日本",
    "\u{10FFFF}",
    ":",
    "127.0.0.1:1",
    "[::1]:1",
    "/",
    "=",
];

fn json_string() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(STRING_PIECES), 0..5)
        .prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

fn json_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        json_string(),
        proptest::sample::select(ADDRS).prop_map(|a| format!("\"{a}\"")),
        proptest::sample::select(&TOKENS[10..22]).prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..1000).prop_map(|n| (f64::from(n) / 7.0).to_string()),
        Just("null".to_owned()),
    ]
}

fn json_value() -> impl Strategy<Value = String> {
    json_scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(","))),
            proptest::collection::vec((json_string(), inner), 0..4).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// An object whose keys are mostly node fields, with values chosen to hit the
/// decoder's checks.
fn node_like_object() -> impl Strategy<Value = Vec<u8>> {
    let member = (
        prop_oneof![
            4 => proptest::sample::select(FIELDS).prop_map(|f| format!("\"{f}\"")),
            1 => json_string(),
        ],
        json_value(),
        proptest::sample::select(ADDRS),
    )
        .prop_map(|(key, value, addr)| {
            if key == "\"addr\"" && value.len() % 4 != 0 {
                format!("{key}:\"{addr}\"")
            } else if key == "\"id\"" && value.len() % 3 == 0 {
                format!("{key}:\"fuzz\"")
            } else {
                format!("{key}:{value}")
            }
        });
    proptest::collection::vec(member, 0..10)
        .prop_map(|members| format!("{{{}}}", members.join(",")).into_bytes())
}

/// A valid value for the fuzz key, with random fields.
fn valid_value() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..=255,
        1u16..,
        any::<u32>(),
        "[0-9]\\.[0-9]",
        proptest::collection::btree_map("k[0-9]", "\\PC{0,4}", 0..3),
    )
        .prop_map(|(octet, port, weight, version, labels)| {
            let mut node = Node::new("fuzz", "echo", format!("127.0.0.{octet}:{port}"))
                .expect("valid")
                .with_weight(weight)
                .with_version(version);
            for (k, v) in labels {
                node = node.with_label(k, v);
            }
            node.encode()
        })
}

fn hostile_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        proptest::collection::vec(proptest::sample::select(TOKENS), 0..24)
            .prop_map(|t| t.concat().into_bytes()),
        (
            valid_value(),
            proptest::collection::vec((any::<usize>(), 0u8..8), 1..4)
        )
            .prop_map(|(mut v, flips)| {
                for (at, bit) in flips {
                    let at = at % v.len();
                    v[at] ^= 1 << bit;
                }
                v
            }),
        (valid_value(), any::<usize>()).prop_map(|(mut v, at)| {
            v.truncate(at % (v.len() + 1));
            v
        }),
        node_like_object(),
        (
            valid_value(),
            any::<usize>(),
            proptest::sample::select(TOKENS)
        )
            .prop_map(|(mut v, at, token)| {
                let at = at % (v.len() + 1);
                v.splice(at..at, token.bytes());
                v
            }),
        valid_value(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn hostile_values_are_decoded_or_rejected_naming_the_key(value in hostile_value()) {
        match Node::decode(KEY, "echo", &value) {
            Ok(node) => {
                prop_assert_eq!(node.id(), "fuzz");
                prop_assert_eq!(node.service(), "echo");
                prop_assert!(validate_addr(node.addr()).is_ok());
                let again = Node::decode(KEY, "echo", &node.encode());
                prop_assert_eq!(again.as_ref(), Ok(&node), "encode → decode round trip");
            }
            Err(e) => {
                prop_assert_eq!(e.key(), KEY);
                prop_assert!(e.to_string().contains(KEY));
            }
        }
    }
}
