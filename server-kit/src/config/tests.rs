use std::time::Duration;

use super::*;

#[test]
fn defaults_are_valid_and_documented_values() {
    let config = ServerConfig::default();
    config.validate().expect("defaults valid");
    assert_eq!(config.listen(), "127.0.0.1:50051");
    assert_eq!(config.weight(), 100);
    let rl = config.rate_limit();
    assert!(rl.is_unlimited());
    assert_eq!(rl.caller_key(), "x-caller");
    assert_eq!(rl.max_callers(), 100_000);
    assert_eq!(rl.prune_interval(), Duration::from_secs(10));
    let sd = config.shutdown();
    assert_eq!(sd.drain_timeout(), Duration::from_secs(10));
    assert_eq!(sd.lame_duck(), Duration::from_secs(1));
    assert_eq!(sd.deregister_timeout(), Duration::from_secs(5));
    let shed = config.shedding();
    assert!(!shed.enabled(), "shedding is off by default");
    assert_eq!(shed.window(), Duration::from_secs(5));
    assert_eq!(shed.bucket(), Duration::from_millis(500));
    assert_eq!((shed.min_in_flight(), shed.headroom_percent()), (8, 50));
}

#[test]
fn bad_values_name_their_full_key() {
    let cases = [
        (
            ServerConfig::default().with_listen("localhost"),
            "server.listen",
        ),
        (
            ServerConfig::default().with_advertise(""),
            "server.advertise",
        ),
        (
            ServerConfig::default().with_service("a/b"),
            "server.service",
        ),
        (
            ServerConfig::default().with_node_id("a b"),
            "server.node_id",
        ),
        (ServerConfig::default().with_token(""), "server.token"),
        (
            ServerConfig::default().with_rate_limit(RateLimitConfig::default().with_burst(5)),
            "server.rate_limit.burst",
        ),
        (
            ServerConfig::default()
                .with_rate_limit(RateLimitConfig::default().with_method("Echo/Say", 1, 0)),
            "server.rate_limit.methods.\"Echo/Say\"",
        ),
        (
            ServerConfig::default()
                .with_rate_limit(RateLimitConfig::default().with_method("/a.B/C", 0, 2)),
            "server.rate_limit.methods.\"/a.B/C\".burst",
        ),
        (
            ServerConfig::default()
                .with_rate_limit(RateLimitConfig::default().with_caller_burst(2)),
            "server.rate_limit.caller_burst",
        ),
        (
            ServerConfig::default()
                .with_rate_limit(RateLimitConfig::default().with_caller_key("X-Caller")),
            "server.rate_limit.caller_key",
        ),
        (
            ServerConfig::default()
                .with_rate_limit(RateLimitConfig::default().with_caller_key("grpc-timeout")),
            "server.rate_limit.caller_key",
        ),
        (
            ServerConfig::default().with_rate_limit(RateLimitConfig::default().with_max_callers(0)),
            "server.rate_limit.max_callers",
        ),
        (
            ServerConfig::default()
                .with_rate_limit(RateLimitConfig::default().with_prune_interval(Duration::ZERO)),
            "server.rate_limit.prune_interval",
        ),
        (
            ServerConfig::default()
                .with_shutdown(ShutdownConfig::default().with_deregister_timeout(Duration::ZERO)),
            "server.shutdown.deregister_timeout",
        ),
        (
            ServerConfig::default()
                .with_shutdown(ShutdownConfig::default().with_drain_timeout(Duration::MAX)),
            "server.shutdown.drain_timeout",
        ),
        (
            ServerConfig::default()
                .with_shutdown(ShutdownConfig::default().with_lame_duck(Duration::MAX)),
            "server.shutdown.lame_duck",
        ),
        (
            ServerConfig::default().with_rate_limit(
                RateLimitConfig::default().with_prune_interval(Duration::from_secs(u64::MAX)),
            ),
            "server.rate_limit.prune_interval",
        ),
        (
            ServerConfig::default().with_shedding(ShedConfig::default().with_buckets(0)),
            "server.shedding.buckets",
        ),
        (
            ServerConfig::default().with_shedding(
                ShedConfig::default()
                    .with_window(Duration::from_millis(5))
                    .with_buckets(10),
            ),
            "server.shedding.window",
        ),
        (
            ServerConfig::default().with_shedding(ShedConfig::default().with_min_in_flight(0)),
            "server.shedding.min_in_flight",
        ),
        (
            ServerConfig::default()
                .with_shedding(ShedConfig::default().with_headroom_percent(1001)),
            "server.shedding.headroom_percent",
        ),
        (
            ServerConfig::default()
                .with_shedding(ShedConfig::default().with_min_rtt_window(Duration::ZERO)),
            "server.shedding.min_rtt_window",
        ),
    ];
    for (config, key) in cases {
        let err = config.validate().expect_err(key).to_string();
        assert!(err.contains(key), "`{err}` should name {key}");
    }
}

#[test]
fn an_absurd_duration_is_rejected_at_load_not_a_panic() {
    let err = serde_json::from_value::<ServerConfig>(serde_json::json!({
        "shutdown": {"drain_timeout": "3000000000000000h"}
    }))
    .expect_err("far above 365 days");
    let err = err.to_string();
    assert!(
        err.contains("3000000000000000h") && err.contains("365 days"),
        "{err}"
    );
}

#[test]
fn deserializes_the_server_section_with_fixed_key_names() {
    let config: ServerConfig = serde_json::from_value(serde_json::json!({
        "listen": "0.0.0.0:7000",
        "advertise": "10.0.0.7",
        "service": "echo",
        "version": "1.2.0",
        "labels": {"canary": "true"},
        "rate_limit": {
            "rps": 100,
            "burst": 20,
            "methods": {"/echo.v1.Echo/Slow": {"rps": 5, "burst": 1}},
            "caller_rps": 10,
            "prune_interval": "250ms",
            "cluster_rps": 300
        },
        "shutdown": {"drain_timeout": "2s", "lame_duck": "250ms"}
    }))
    .expect("valid");
    config.validate().expect("valid values");
    let rl = config.rate_limit();
    assert_eq!((rl.rps(), rl.burst(), rl.cluster_rps()), (100, 20, 300));
    assert_eq!(rl.methods()["/echo.v1.Echo/Slow"], MethodLimit::new(5, 1));
    assert_eq!(
        rl.caller().effective_burst(),
        10,
        "burst defaults to the rate"
    );
    assert_eq!(rl.prune_interval(), Duration::from_millis(250));
    assert_eq!(config.shutdown().drain_timeout(), Duration::from_secs(2));
    assert_eq!(
        config.shutdown().deregister_timeout(),
        Duration::from_secs(5)
    );
    assert_eq!(config.labels().len(), 1);

    let unknown = serde_json::from_value::<ServerConfig>(serde_json::json!({
        "rate_limit": {"rsp": 1}
    }))
    .expect_err("unknown key");
    assert!(unknown.to_string().contains("rsp"), "{unknown}");
    let bad_duration = serde_json::from_value::<ServerConfig>(serde_json::json!({
        "shutdown": {"drain_timeout": "10"}
    }))
    .expect_err("no unit");
    assert!(
        bad_duration.to_string().contains("no unit"),
        "{bad_duration}"
    );
}

#[test]
fn the_token_is_never_printed() {
    let config = ServerConfig::default().with_token("s3cret");
    assert!(!format!("{config:?}").contains("s3cret"));
    assert!(!serde_json::to_string(&config)
        .expect("serializes")
        .contains("s3cret"));
}
