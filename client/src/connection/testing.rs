//! Loopback parts for the connection modules' tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use registry_actor::testing::TestCa;
use registry_actor::TlsConfig;
use tokio::net::TcpStream;

use super::ClientTls;

/// TLS trusting a CA made for the call (its files are removed once read).
pub(super) fn client_tls() -> ClientTls {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("gc-conn-tls-{}-{n}", std::process::id()));
    let ca = TestCa::new(&dir, "conn-test-ca");
    let files = TlsConfig::default()
        .with_ca_file(&ca.ca_file)
        .read("client.tls")
        .expect("readable")
        .expect("TLS on");
    let _ = std::fs::remove_dir_all(&dir);
    ClientTls::from_files(&files, "client.tls").expect("a usable CA")
}

/// A loopback listener that completes no more connections: its accept
/// queue (of one) is full, so the kernel drops further SYNs and a
/// connect hangs. Answers its address and what must stay open.
pub(super) async fn full_listener() -> (
    std::net::SocketAddr,
    Vec<TcpStream>,
    tokio::net::TcpListener,
) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the accept queue never filled"
        );
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(stream) => held.push(stream.expect("a queued connection")),
            Err(_) => return (addr, held, listener),
        }
    }
}
