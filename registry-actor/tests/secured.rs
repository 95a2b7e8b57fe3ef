//! Registration and discovery against an etcd served over TLS, requiring
//! client certificates, with user/password authentication on; and the errors
//! of a wrong password or a CA that does not match.

mod common;

use std::time::Duration;

use common::*;
use registry_actor::testing::{EtcdSecurity, TestCa, ROOT_USER};
use registry_actor::{Registrar, RegistrationState, TlsConfig};

const PASSWORD: &str = "pw-of-root-7f3a";

async fn secured_etcd() -> EtcdServer {
    EtcdServer::start_secured(
        EtcdSecurity::default()
            .with_client_cert_auth()
            .with_root_password(PASSWORD),
    )
    .await
    .expect("secured etcd")
}

#[actix_rt::test]
async fn a_node_registers_and_is_discovered_over_tls_with_a_client_certificate_and_a_password() {
    let etcd = secured_etcd().await;
    let config = etcd.registry_config();
    assert!(config.tls().cert_file().is_some(), "{config:?}");
    assert_eq!(config.user().map(|(user, _)| user), Some(ROOT_USER));

    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    sub.wait_for("the empty initial set", |n| n.is_empty())
        .await;
    let client = registry_actor::connect(&config).await.expect("client");
    let registrar = Registrar::start(client, node("tls-1", 50051), &config);
    wait_registered(&registrar).await;
    sub.wait_for("the node", has_ids(&["tls-1"])).await;

    registrar.deregister().await.expect("deregister");
    sub.wait_for("the node gone", |n| n.is_empty()).await;
}

#[actix_rt::test]
async fn a_client_whose_token_etcd_revoked_authenticates_again() {
    let etcd = secured_etcd().await;
    let config = etcd.registry_config();
    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    sub.wait_for("the empty initial set", |n| n.is_empty())
        .await;
    let client = registry_actor::connect(&config).await.expect("client");
    let first = Registrar::start(client.clone(), node("before", 50051), &config);
    wait_registered(&first).await;
    sub.wait_for("the first node", has_ids(&["before"])).await;

    // As when the token outlived etcd's token TTL while the client was idle:
    // a registration made with it now authenticates again.
    etcd.revoke_tokens().await.expect("tokens revoked");
    let second = Registrar::start(client, node("after", 50052), &config);
    wait_registered(&second).await;
    sub.wait_for("both nodes", has_ids(&["after", "before"]))
        .await;
}

#[actix_rt::test]
async fn a_wrong_password_fails_at_connect_naming_registry_username_and_not_the_password() {
    let etcd = secured_etcd().await;
    let config = etcd
        .registry_config()
        .with_user(ROOT_USER, "not-the-pw-91c2");
    let err = registry_actor::connect(&config)
        .await
        .expect_err("a wrong password");
    let text = err.to_string();
    assert!(text.contains("registry.username"), "{text}");
    assert!(text.contains(ROOT_USER), "{text}");
    assert!(!text.contains("not-the-pw-91c2"), "{text}");
    assert!(!format!("{err:?}").contains("not-the-pw-91c2"), "{err:?}");
}

#[actix_rt::test]
async fn a_ca_that_did_not_sign_etcds_certificate_fails_naming_registry_tls() {
    let etcd = secured_etcd().await;
    let other = TestCa::new(&etcd.data_dir().join("other"), "other-ca");
    let client_cert = etcd.client_cert().expect("client cert").clone();
    let config = etcd.registry_config().with_tls(
        TlsConfig::default()
            .with_ca_file(&other.ca_file)
            .with_identity(&client_cert.cert, &client_cert.key),
    );
    // With a user, connect authenticates at once: the handshake fails there.
    let err = registry_actor::connect(&config)
        .await
        .expect_err("an untrusted etcd");
    let text = err.to_string();
    assert!(text.contains("registry.tls"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

#[actix_rt::test]
async fn without_its_client_certificate_registration_fails_naming_registry_tls() {
    let etcd = secured_etcd().await;
    let ca = etcd.ca().expect("a CA");
    // No user either: connect stays lazy and the registration attempt fails.
    let config = registry_actor::RegistryConfig::default()
        .with_endpoints([etcd.endpoint()])
        .with_tls(TlsConfig::default().with_ca_file(&ca.ca_file))
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50));
    let client = registry_actor::connect(&config).await.expect("lazy client");
    let registrar = Registrar::start(client, node("no-cert", 50051), &config);
    // etcd refuses the certificate after the client's side of the TLS 1.3
    // handshake is done: an attempt that writes first sees a broken pipe, one
    // that reads sees etcd's alert, and that one names the settings.
    let mut states = registrar.state_changes();
    let named = tokio::time::timeout(
        EVENTUALLY,
        states.wait_for(|s| {
            matches!(s, RegistrationState::Retrying { error, .. } if error.contains("registry.tls"))
        }),
    )
    .await;
    assert!(
        named.is_ok(),
        "no attempt named registry.tls; last state: {}",
        registrar.state()
    );
    assert!(!registrar.state().is_registered());
}

#[actix_rt::test]
async fn tls_without_a_ca_file_is_refused_at_connect_naming_the_key() {
    let etcd = secured_etcd().await;
    let cert = etcd.client_cert().expect("client cert");
    let config = etcd
        .registry_config()
        .with_tls(TlsConfig::default().with_identity(&cert.cert, &cert.key));
    let err = registry_actor::connect(&config)
        .await
        .expect_err("no CA to verify etcd with");
    assert!(
        matches!(err, registry_actor::Error::Config(ref bad) if bad.key() == "registry.tls.ca_file"),
        "{err}"
    );
}

/// With a user, connecting authenticates at once: against an endpoint that
/// takes the connection and never answers the TLS handshake, it gives up
/// within the connect and request timeouts, naming the endpoint.
#[actix_rt::test]
async fn connecting_with_a_user_to_an_endpoint_that_never_answers_times_out_naming_it() {
    // The kernel takes the TCP connection; nothing accepts it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dir = std::env::temp_dir().join(format!("gc-silent-etcd-{}", std::process::id()));
    let ca = TestCa::new(&dir, "silent-ca");
    let config = registry_actor::RegistryConfig::default()
        .with_endpoints([format!("https://{addr}")])
        .with_connect_timeout(Duration::from_millis(200))
        .with_request_timeout(Duration::from_millis(300))
        .with_tls(TlsConfig::default().with_ca_file(&ca.ca_file))
        .with_user(ROOT_USER, PASSWORD);
    let made = tokio::time::timeout(Duration::from_secs(15), registry_actor::connect(&config))
        .await
        .expect("connect ends before the test's bound");
    let _ = std::fs::remove_dir_all(&dir);
    let err = made.expect_err("nothing answers").to_string();
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("registry.username"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}
