//! Certificates made at test time: registry-actor's fixtures.

pub use registry_actor::testing::{Pem, TestCa};

/// tonic's server TLS with `ca`'s server certificate (for `127.0.0.1` and
/// `localhost`).
pub fn server_tls(ca: &TestCa) -> tonic::transport::ServerTlsConfig {
    let pem = ca.server();
    let read = |path: &std::path::Path| std::fs::read(path).expect("PEM");
    tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
        read(&pem.cert),
        read(&pem.key),
    ))
}
