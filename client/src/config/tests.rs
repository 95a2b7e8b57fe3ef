//! Tests of the client configuration.

use std::time::Duration;

use tonic::Code;

use super::*;
use crate::policy::Strategy;
use crate::{Balancer, Fallback};

fn parse(json: &str) -> ClientConfig {
    serde_json::from_str(json).expect("valid json config")
}

#[test]
fn defaults_are_valid_and_documented_values() {
    let config = ClientConfig::default();
    config.validate().expect("defaults valid");
    let p = config.picker_config("any-service").expect("defaults");
    assert_eq!(p.balancer(), Balancer::RoundRobin);
    assert_eq!(p.fallback(), Fallback::Any);
    assert_eq!(p.ejection().failures(), 5);
    assert_eq!(p.ejection().base_time(), Duration::from_secs(10));
    assert_eq!(p.ejection().max_time(), Duration::from_secs(300));
    assert_eq!(p.ejection().max_share(), 0.5);
    assert_eq!(p.panic_threshold(), 0.5);
    assert_eq!(p.panic_grace(), Duration::from_secs(30));
    assert!(p.selector().is_empty());
    assert_eq!(p, PickerConfig::default());
}

#[test]
fn service_tables_override_the_defaults_key_by_key() {
    let config = parse(
        r#"{"balancer": "random", "ejection": {"failures": 3, "base_time": "1s"},
                "services": {"echo": {"version": "v1", "group": "blue", "zone": "z",
                  "labels": {"canary": "false"}, "fallback": "strict",
                  "ejection": {"max_share": 0.25}, "panic_grace": "2s"}}}"#,
    );
    config.validate().expect("valid");
    let p = config.picker_config("echo").expect("echo");
    assert_eq!(p.balancer(), Balancer::Random);
    assert_eq!(p.fallback(), Fallback::Strict);
    assert_eq!(
        p.selector().to_string(),
        "version v1, group blue, zone z, labels canary=false"
    );
    assert_eq!(p.ejection().failures(), 3, "from [client.ejection]");
    assert_eq!(p.ejection().base_time(), Duration::from_secs(1));
    assert_eq!(p.ejection().max_share(), 0.25, "from the service");
    assert_eq!(p.panic_grace(), Duration::from_secs(2));
}

#[test]
fn bad_values_name_their_full_key_path() {
    let cases = [
        (
            r#"{"services": {"echo": {"balancer": "foo"}}}"#,
            r#"client.services.echo.balancer: unknown balancer "foo"; expected one of pick_first, round_robin, random, weighted_random, weighted_round_robin, least_request, consistent_hash"#,
        ),
        (
            r#"{"balancer": "rr"}"#,
            "client.balancer: unknown balancer \"rr\"",
        ),
        (
            r#"{"services": {"echo": {"fallback": "maybe"}}}"#,
            "client.services.echo.fallback: unknown fallback \"maybe\"",
        ),
        (
            r#"{"services": {"echo": {"version": ">=one"}}}"#,
            "client.services.echo.version: invalid selector `>=one`",
        ),
        (
            r#"{"services": {"echo": {"labels": {"": "x"}}}}"#,
            "client.services.echo.labels: a label name is empty",
        ),
        (
            r#"{"ejection": {"failures": 0}}"#,
            "client.ejection.failures",
        ),
        (
            r#"{"ejection": {"base_time": "0"}}"#,
            "client.ejection.base_time",
        ),
        (
            r#"{"services": {"echo": {"ejection": {"max_time": "1s"}}}}"#,
            "client.services.echo.ejection.max_time: 1s is below base_time 10s",
        ),
        (
            r#"{"services": {"echo": {"ejection": {"max_share": 1.5}}}}"#,
            "client.services.echo.ejection.max_share",
        ),
        (r#"{"panic_threshold": -0.1}"#, "client.panic_threshold"),
    ];
    for (json, expected) in cases {
        let err = parse(json).validate().expect_err(json).to_string();
        assert!(
            err.contains(expected),
            "`{err}` should contain `{expected}`"
        );
    }
}

#[test]
fn unknown_keys_and_bad_durations_are_rejected_at_load() {
    let err =
        serde_json::from_str::<ClientConfig>(r#"{"services": {"echo": {"balancr": "random"}}}"#)
            .expect_err("unknown key");
    assert!(err.to_string().contains("balancr"), "{err}");
    let err = serde_json::from_str::<ClientConfig>(r#"{"panic_grace": "5"}"#).expect_err("no unit");
    assert!(err.to_string().contains("no unit"), "{err}");
}

#[test]
fn method_tables_match_by_full_path_or_name_and_the_full_path_wins() {
    let config = parse(
        r#"{"services": {"echo": {"retries": 1, "methods": {
                "Say": {"retries": 3, "timeout": "2s"},
                "/echo.v1.Echo/Say": {"retries": 5},
                "/echo.v1.Echo/Slow": {"strategy": "failfast"}}}}}"#,
    );
    config.validate().expect("valid");
    let say = config
        .call_policy("echo", "/echo.v1.Echo/Say")
        .expect("say");
    assert_eq!(say.retries(), 5, "the full path's table wins");
    assert_eq!(
        say.timeout(),
        Duration::from_secs(5),
        "not merged with `Say`"
    );
    let other = config
        .call_policy("echo", "/other.v1.Other/Say")
        .expect("say");
    assert_eq!(other.retries(), 3, "by name for another package");
    let slow = config
        .call_policy("echo", "/echo.v1.Echo/Slow")
        .expect("slow");
    assert_eq!(slow.strategy(), Strategy::Failfast);
    assert_eq!(slow.retries(), 1, "from the service");

    let resolved = config.resolve_service("echo").expect("resolved");
    assert_eq!(resolved.call("/echo.v1.Echo/Say").retries(), 5);
    assert_eq!(resolved.call("/pkg.Other/Say").retries(), 3);
    assert_eq!(resolved.call("/echo.v1.Echo/Fail").retries(), 1);
    assert_eq!(
        resolved.call("/echo.v1.Echo/Slow").strategy(),
        Strategy::Failfast
    );
}

#[test]
fn attempt_timeouts_resolve_per_method_and_zero_is_refused_by_key() {
    let config = parse(
        r#"{"attempt_timeout": "300ms", "services": {"echo": {"attempt_timeout": "200ms",
                "methods": {"Say": {"attempt_timeout": "50ms"}}}}}"#,
    );
    config.validate().expect("valid");
    let at = |service: &str, method: &str| {
        config
            .call_policy(service, method)
            .expect("valid")
            .attempt_timeout()
    };
    assert_eq!(at("echo", "Say"), Some(Duration::from_millis(50)));
    assert_eq!(at("echo", "Slow"), Some(Duration::from_millis(200)));
    assert_eq!(at("other", "Say"), Some(Duration::from_millis(300)));
    assert_eq!(
        ClientConfig::default()
            .call_policy("echo", "Say")
            .expect("ok")
            .attempt_timeout(),
        None
    );
    for (json, key) in [
        (r#"{"attempt_timeout": "0"}"#, "client.attempt_timeout"),
        (
            r#"{"services": {"echo": {"methods": {"Say": {"attempt_timeout": "0"}}}}}"#,
            "client.services.echo.methods.Say.attempt_timeout",
        ),
    ] {
        let err = parse(json).validate().expect_err(json).to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn hedging_settings_resolve_per_method_and_bad_ones_name_their_key() {
    let config = parse(
        r#"{"strategy": "hedging", "hedging_delay": "30ms", "services": {"echo": {
                "max_attempts": 4, "methods": {"Say": {"non_fatal_codes": ["UNAVAILABLE", "INTERNAL"]}}}}}"#,
    );
    config.validate().expect("valid");
    let say = config.call_policy("echo", "Say").expect("valid");
    assert_eq!(say.strategy(), Strategy::Hedging);
    assert_eq!(say.hedging().delay(), Duration::from_millis(30));
    assert_eq!(say.hedging().max_attempts(), 4);
    assert_eq!(
        &say.hedging().non_fatal_codes()[..],
        [Code::Unavailable, Code::Internal]
    );
    let other = ClientConfig::default()
        .call_policy("x", "Say")
        .expect("valid");
    assert_eq!(
        (other.hedging().delay(), other.hedging().max_attempts()),
        (Duration::from_millis(50), 3)
    );
    assert_eq!(&other.hedging().non_fatal_codes()[..], [Code::Unavailable]);
    for (json, key) in [
        (r#"{"max_attempts": 0}"#, "client.max_attempts"),
        (
            r#"{"services": {"echo": {"methods": {"Say": {"max_attempts": 0}}}}}"#,
            "client.services.echo.methods.Say.max_attempts",
        ),
        (r#"{"non_fatal_codes": ["NOPE"]}"#, "client.non_fatal_codes"),
        (
            r#"{"ejection": {"codes": ["NOPE"]}}"#,
            "client.ejection.codes",
        ),
    ] {
        let err = parse(json).validate().expect_err(json).to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn budgets_and_backoffs_are_overridable_per_service() {
    let config = parse(
        r#"{"budget_ratio": 0.2, "services": {"echo": {"budget_ratio": 0.5,
                "budget_min_per_sec": 3, "retry_backoff": "5ms", "retry_backoff_max": "20ms"}}}"#,
    );
    config.validate().expect("valid");
    assert_eq!(config.budget("echo"), (0.5, 3));
    assert_eq!(config.budget("other"), (0.2, 10));
    let echo = config.call_policy("echo", "Say").expect("echo");
    assert_eq!(
        echo.backoff(),
        (Duration::from_millis(5), Duration::from_millis(20))
    );
    let bad = parse(r#"{"services": {"echo": {"budget_ratio": 2.0}}}"#);
    let err = bad.validate().expect_err("ratio above 1").to_string();
    assert!(err.contains("client.services.echo.budget_ratio"), "{err}");
}

#[test]
fn throttling_is_off_by_default_and_overridable_per_service() {
    assert_eq!(ClientConfig::default().throttling("echo"), None);
    let config = parse(
        r#"{"throttling": {"k": 3.0, "window": "10s"},
            "services": {"echo": {"throttling": {"enabled": true, "buckets": 5}}}}"#,
    );
    config.validate().expect("valid");
    assert_eq!(config.throttling("other"), None, "off unless enabled");
    assert_eq!(
        config.throttling("echo"),
        Some(Throttling {
            k: 3.0,
            window: Duration::from_secs(10),
            buckets: 5,
            min_requests: 10,
        }),
        "the service's keys over [client.throttling]'s over the defaults"
    );
    for (json, key) in [
        (r#"{"throttling": {"k": 0.5}}"#, "client.throttling.k"),
        (
            r#"{"services": {"echo": {"throttling": {"window": "0s"}}}}"#,
            "client.services.echo.throttling.window",
        ),
        (
            r#"{"services": {"echo": {"throttling": {"buckets": 0}}}}"#,
            "client.services.echo.throttling.buckets",
        ),
    ] {
        let err = parse(json).validate().expect_err(json).to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn health_checks_and_success_rates_resolve_per_service_and_bad_ones_name_their_key() {
    let config = parse(
        r#"{"health_check": true, "ejection": {"success_rate_interval": "5s"},
            "services": {
                "echo": {"health_service": "echo.v1.Echo",
                         "ejection": {"success_rate_stdev_factor": 1.0}},
                "quiet": {"health_check": false}}}"#,
    );
    config.validate().expect("valid");
    let echo = config.picker_config("echo").expect("echo");
    assert_eq!(echo.health_check().map(|s| &**s), Some("echo.v1.Echo"));
    let ejection = echo.ejection();
    assert_eq!(
        ejection.success_rate_interval(),
        Some(Duration::from_secs(5)),
        "from [client.ejection]"
    );
    assert_eq!(ejection.success_rate_stdev_factor(), 1.0);
    assert_eq!(ejection.success_rate_min_requests(), 100);
    assert_eq!(ejection.success_rate_min_nodes(), 5);
    let other = config.picker_config("other").expect("other");
    assert_eq!(
        other.health_check().map(|s| &**s),
        Some(""),
        "the whole server"
    );
    assert_eq!(
        config.picker_config("quiet").expect("quiet").health_check(),
        None
    );
    let defaults = ClientConfig::default().picker_config("echo").expect("echo");
    assert_eq!(defaults.health_check(), None, "off by default");
    assert_eq!(defaults.ejection().success_rate_interval(), None);

    let cases = [
        (
            r#"{"ejection": {"success_rate_interval": "0s"}}"#,
            "client.ejection.success_rate_interval",
        ),
        (
            r#"{"services": {"echo": {"ejection": {"success_rate_stdev_factor": -1}}}}"#,
            "client.services.echo.ejection.success_rate_stdev_factor",
        ),
        (
            r#"{"ejection": {"success_rate_min_requests": 0}}"#,
            "client.ejection.success_rate_min_requests",
        ),
        (
            r#"{"ejection": {"success_rate_min_nodes": 1}}"#,
            "client.ejection.success_rate_min_nodes",
        ),
    ];
    for (json, expected) in cases {
        let err = parse(json).validate().expect_err(json).to_string();
        assert!(
            err.contains(expected),
            "`{err}` should contain `{expected}`"
        );
    }
}

#[test]
fn round_trips_through_serde() {
    let config = ClientConfig::default().with_service(
        "echo",
        ServiceConfig::default()
            .with_balancer(Balancer::ConsistentHash)
            .with_labels([("a", "b")])
            .with_ejection(EjectionConfig::default().with_failures(2))
            .with_panic_grace(Duration::from_millis(1500)),
    );
    let json = serde_json::to_string(&config).expect("serialize");
    let back: ClientConfig = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, config);
}

#[test]
fn locality_resolves_per_service_as_a_selector_or_a_preference() {
    let config = parse(
        r#"{"locality": "prefer", "zone": "a", "locality_min_healthy": 2,
            "zone_priority": ["c"],
            "services": {"strict": {"locality": "strict"},
                         "off": {"locality": "off"},
                         "own": {"zone": "b", "locality_min_healthy": 1,
                                 "zone_priority": []}}}"#,
    );
    config.validate().expect("valid");
    let default = config.picker_config("other").expect("other");
    assert!(default.selector().is_empty(), "prefer is no selector");
    assert_eq!(
        default.locality(),
        Some(
            &ZonePreference::new("a")
                .with_min_healthy(2)
                .with_priority(["c"])
        )
    );
    let strict = config.picker_config("strict").expect("strict");
    assert_eq!(strict.selector().zone(), Some("a"));
    assert_eq!(strict.locality(), None);
    let off = config.picker_config("off").expect("off");
    assert!(off.selector().is_empty());
    assert_eq!(off.locality(), None);
    let own = config.picker_config("own").expect("own");
    assert_eq!(own.locality(), Some(&ZonePreference::new("b")));

    // The default locality keeps a service's zone a selector.
    let legacy = parse(r#"{"services": {"echo": {"zone": "z"}}}"#);
    let echo = legacy.picker_config("echo").expect("echo");
    assert_eq!(echo.selector().zone(), Some("z"));
    assert_eq!(echo.locality(), None);
}

#[test]
fn bad_locality_values_name_their_key() {
    let cases = [
        (
            r#"{"locality": "near"}"#,
            "client.locality: unknown locality \"near\"",
        ),
        (
            r#"{"services": {"echo": {"locality": "near"}}}"#,
            "client.services.echo.locality: unknown locality",
        ),
        (
            r#"{"locality": "prefer"}"#,
            "client.zone: is empty, but client.locality is \"prefer\"",
        ),
        (
            r#"{"zone": "a", "services": {"echo": {"locality": "prefer", "zone": ""}}}"#,
            "client.services.echo.zone: is empty, but client.services.echo.locality",
        ),
        (
            r#"{"locality_min_healthy": 0}"#,
            "client.locality_min_healthy: must be at least 1",
        ),
        (
            r#"{"services": {"echo": {"locality_min_healthy": 0}}}"#,
            "client.services.echo.locality_min_healthy",
        ),
    ];
    for (json, expected) in cases {
        let err = parse(json).validate().expect_err(json).to_string();
        assert!(
            err.contains(expected),
            "`{err}` should contain `{expected}`"
        );
    }
}
