//! Shared pieces of the end-to-end tests: a private etcd, echo servers on
//! `127.0.0.1:0`, logging. Each area's tests add their own helpers in a file of
//! this folder.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used
)]

pub mod certs;
pub mod cluster;
pub mod downstream;
pub mod exposition;
pub mod faults;
pub mod server_kit;
pub mod spans;

use std::net::SocketAddr;
use std::time::Duration;

use grpc_cluster::echo::{EchoService, EchoStats};
pub use registry_actor::testing::{wait_until, EtcdServer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The repository's root (the facade package's directory), found at run time.
pub fn repo_root() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    )
}

/// The text of the repository file `path` (relative to the package root,
/// found at run time); a failure names its full path.
pub fn read_repo_file(path: &str) -> String {
    let full = repo_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A plain tonic echo server on `127.0.0.1:0` (no server kit), stopped on drop.
pub struct PlainEcho {
    pub addr: SocketAddr,
    pub stats: std::sync::Arc<EchoStats>,
    stop: Option<oneshot::Sender<()>>,
}

impl PlainEcho {
    pub async fn start(node_id: &str) -> Self {
        Self::serve(EchoService::new(node_id)).await
    }

    /// Serves `service` (a plain tonic server) on a fresh loopback port.
    pub async fn serve(service: EchoService) -> Self {
        Self::serve_over(service, None).await
    }

    /// Serves `service` on a fresh loopback port, over `tls` when set.
    pub async fn serve_over(
        service: EchoService,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        Self::serve_with(service, listener, tls)
    }

    /// Serves `service` on `addr` (e.g. where a stopped server was), binding
    /// it as soon as it is free, within [`EVENTUALLY`].
    pub async fn serve_on(service: EchoService, addr: SocketAddr) -> Self {
        Self::serve_on_over(service, addr, None).await
    }

    /// As [`serve_on`](Self::serve_on), over `tls` when set.
    pub async fn serve_on_over(
        service: EchoService,
        addr: SocketAddr,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Self {
        let deadline = std::time::Instant::now() + EVENTUALLY;
        loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => return Self::serve_with(service, listener, tls),
                Err(e) if std::time::Instant::now() > deadline => panic!("bind {addr}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn serve_with(
        service: EchoService,
        listener: TcpListener,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let stats = service.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).expect("usable server TLS");
        }
        tokio::spawn(async move {
            let incoming = tokio_stream_from(listener);
            let _ = builder
                .add_service(service.into_server())
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            stats,
            stop: Some(stop),
        }
    }
}

impl Drop for PlainEcho {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The connections `listener` accepts, as the stream tonic serves.
pub fn tokio_stream_from(
    listener: TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    })
}

/// The `GRPC_CLUSTER…` variables of this process: a child process started by a
/// test removes them, so no developer's settings leak in.
pub fn cluster_env_vars() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.to_string_lossy().starts_with("GRPC_CLUSTER"))
        .collect()
}

/// The deadline tests give a distributed event to happen.
pub const EVENTUALLY: Duration = Duration::from_secs(10);
