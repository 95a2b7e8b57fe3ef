//! The Registrar against a real etcd: register, lose and heal, pause, deregister.

mod common;

use std::time::Duration;

use common::*;
use registry_actor::testing::{unreachable_registry, Logs};
use registry_actor::{Registrar, RegistrationState};

#[tokio::test]
async fn a_registration_never_made_is_not_reported_as_lost() {
    let (logs, _logging) = Logs::capture();
    let config = unreachable_registry();
    let client = registry_actor::connect(&config).await.expect("lazy client");
    let registrar = Registrar::start(client, node("echo-1", 50051), &config);
    let mut states = registrar.state_changes();
    tokio::time::timeout(
        EVENTUALLY,
        states.wait_for(
            |s| matches!(s, RegistrationState::Retrying { attempt, .. } if *attempt >= 2),
        ),
    )
    .await
    .expect("retrying in time")
    .expect("registrar alive");

    let text = logs.text();
    assert!(text.contains("cannot register; retrying"), "{text}");
    assert!(!text.contains("registration lost"), "{text}");
}

#[actix_rt::test]
async fn registered_node_reaches_subscriber_and_deregister_removes_it() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd.registry_config();
    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    sub.wait_for("the empty initial set", |n| n.is_empty())
        .await;

    let client = registry_actor::connect(&config).await.expect("client");
    let registrar = Registrar::start(client, node("echo-1", 50051).with_version("1.2.0"), &config);
    let added = sub.wait_for("echo-1 to appear", has_ids(&["echo-1"])).await;
    assert_eq!(added.nodes[0].version(), "1.2.0");
    assert_eq!(added.nodes[0].addr(), "127.0.0.1:50051");
    wait_registered(&registrar).await;

    registrar.deregister().await.expect("deregister");
    assert_eq!(registrar.state(), RegistrationState::Deregistered);
    let mut raw = etcd.client().await.expect("raw client");
    assert_eq!(
        key_lease(&mut raw, registrar.key()).await,
        None,
        "key gone when deregister returns"
    );
    let removed = sub.wait_for("echo-1 to leave", |n| n.is_empty()).await;
    assert!(removed.revision > added.revision);
}

#[actix_rt::test]
async fn registrar_that_dies_without_deregistering_is_removed_after_its_ttl() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd.registry_config();
    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;

    let client = registry_actor::connect(&config).await.expect("client");
    let registrar = Registrar::start(client, node("echo-1", 50051), &config);
    wait_registered(&registrar).await;
    sub.wait_for("echo-1 to appear", has_ids(&["echo-1"])).await;
    let key = registrar.key().to_owned();

    // A crash: the keepalives stop, nothing is revoked.
    drop(registrar);
    let mut raw = etcd.client().await.expect("raw client");
    assert!(
        key_lease(&mut raw, &key).await.is_some(),
        "the key outlives the process until the TTL"
    );
    sub.wait_for("echo-1 to expire", |n| n.is_empty()).await;
    assert_eq!(key_lease(&mut raw, &key).await, None);
}

#[actix_rt::test]
async fn key_deleted_by_another_client_is_back_within_one_keepalive_period() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let ttl = Duration::from_secs(6);
    let config = etcd.registry_config().with_lease_ttl(ttl);
    let client = registry_actor::connect(&config).await.expect("client");
    let registrar = Registrar::start(client, node("echo-1", 50051), &config);
    let lease = wait_registered(&registrar).await;

    let mut raw = etcd.client().await.expect("raw client");
    raw.delete(registrar.key(), None).await.expect("delete");
    let back = wait_until(ttl / 3, || {
        let mut raw = raw.clone();
        let key = registrar.key().to_owned();
        async move { key_lease(&mut raw, &key).await.is_some() }
    })
    .await;
    assert!(
        back,
        "key not back within one keepalive period ({:?})",
        ttl / 3
    );
    assert_eq!(
        key_lease(&mut raw, registrar.key()).await,
        Some(lease),
        "put back with the live lease"
    );
    assert!(registrar.state().is_registered());
}

#[actix_rt::test]
async fn pause_takes_the_node_out_and_resume_puts_it_back() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd.registry_config();
    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    let client = registry_actor::connect(&config).await.expect("client");
    let registrar = Registrar::start(client, node("echo-1", 50051), &config);
    sub.wait_for("echo-1 to appear", has_ids(&["echo-1"])).await;

    registrar.pause().await.expect("pause");
    assert_eq!(registrar.state(), RegistrationState::Paused);
    sub.wait_for("echo-1 to leave on pause", |n| n.is_empty())
        .await;

    registrar.resume().await.expect("resume");
    wait_registered(&registrar).await;
    sub.wait_for("echo-1 back on resume", has_ids(&["echo-1"]))
        .await;
    registrar.deregister().await.expect("deregister");
}

#[actix_rt::test]
async fn registrar_started_while_etcd_is_down_registers_once_it_is_up() {
    let mut etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd.registry_config();
    etcd.stop();
    let client = registry_actor::connect(&config)
        .await
        .expect("a lazy client builds while etcd is down");
    let registrar = Registrar::start(client, node("echo-1", 50051), &config);
    let mut states = registrar.state_changes();
    tokio::time::timeout(
        EVENTUALLY,
        states.wait_for(|s| matches!(s, RegistrationState::Retrying { .. })),
    )
    .await
    .expect("retrying while etcd is down")
    .expect("alive");
    etcd.restart().await.expect("restart");
    wait_registered(&registrar).await;
    let mut raw = etcd.client().await.expect("raw client");
    assert!(key_lease(&mut raw, registrar.key()).await.is_some());
}

/// A TTL that is not whole seconds (a configuration that skipped `validate`,
/// which rejects it) is granted rounded up, never cut: "2.9s" gets 3 s.
#[actix_rt::test]
async fn a_fractional_ttl_is_granted_rounded_up() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let config = etcd
        .registry_config()
        .with_lease_ttl(Duration::from_millis(2900));
    assert!(config.validate().is_err(), "validate rejects 2.9s");
    let client = registry_actor::connect(&etcd.registry_config())
        .await
        .expect("client");
    let registrar = Registrar::start(client, node("echo-1", 50051), &config);
    let lease = wait_registered(&registrar).await;
    let mut raw = etcd.client().await.expect("raw client");
    let granted = raw
        .lease_time_to_live(lease, None)
        .await
        .expect("lease TTL")
        .granted_ttl();
    assert_eq!(granted, 3);
    registrar.deregister().await.expect("deregister");
}
