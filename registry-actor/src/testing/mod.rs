//! Test fixtures: a real etcd on free loopback ports (feature `testing`).
//!
//! * [`EtcdServer::start`] runs the `etcd` binary (Debian `etcd-server`) with a
//!   fresh temporary data directory on two free loopback ports, waits until it
//!   answers and checks it is the member it started (not some other etcd that
//!   took the port). [`EtcdServer::stop`] and [`EtcdServer::restart`] make
//!   outages on the same ports and data, [`EtcdServer::pause`] and
//!   [`EtcdServer::resume`] freeze and thaw it (SIGSTOP / SIGCONT); dropping
//!   it kills the process and deletes the data. [`EtcdServer::start_secured`]
//!   serves it over TLS (certificates of a [`TestCa`] made at start),
//!   optionally requiring client certificates, and with user/password
//!   authentication on ([`EtcdSecurity`]).
//! * [`EtcdCluster::start`] runs N such members as one cluster and injects the
//!   faults of a real cluster: [`kill`](EtcdCluster::kill) (SIGKILL) and
//!   [`restart`](EtcdCluster::restart) of one member,
//!   [`pause`](EtcdCluster::pause) / [`resume`](EtcdCluster::resume) (SIGSTOP /
//!   SIGCONT, a member cut off with its ports still open),
//!   [`wipe_and_restart`](EtcdCluster::wipe_and_restart) (a new cluster with an
//!   empty store on the same endpoints), and finds the [`leader`](EtcdCluster::leader).
//!
//! Members run with a 50 ms heartbeat and a 500 ms election timeout, so a lost
//! leader is replaced within about a second.
//!
//! A test process that dies without dropping its fixtures (a crash, a
//! signal) leaves their etcd processes and directories behind; the first
//! fixture the next test process starts kills and removes them (on Linux,
//! where `/proc` tells which test processes are gone).
//!
//! # Examples
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use registry_actor::testing::{EtcdCluster, EtcdServer};
//!
//! let mut etcd = EtcdServer::start().await?;
//! let config = etcd.registry_config();
//! etcd.stop();
//! etcd.restart().await?;
//!
//! let mut cluster = EtcdCluster::start(3).await?;
//! let leader = cluster.leader().await.expect("a leader");
//! cluster.kill(leader);
//! cluster.restart(leader).await?;
//! # Ok(()) }
//! ```

mod certs;
mod cluster;
mod leftovers;
mod logs;
mod member;
mod security;
mod server;

use std::time::{Duration, Instant};

pub use certs::{Pem, TestCa};
pub use cluster::EtcdCluster;
pub use logs::Logs;
pub use security::{EtcdSecurity, ROOT_USER};
pub use server::EtcdServer;

use crate::RegistryConfig;

/// Registry settings naming a loopback port nothing listens on, with short
/// timeouts and backoff: for tests of what happens while etcd is unreachable.
///
/// # Panics
///
/// When no loopback port can be bound.
pub fn unreachable_registry() -> RegistryConfig {
    let port = member::free_port().expect("a free loopback port");
    RegistryConfig::default()
        .with_endpoints([format!("127.0.0.1:{port}")])
        .with_connect_timeout(Duration::from_millis(200))
        .with_request_timeout(Duration::from_millis(200))
        .with_backoff(Duration::from_millis(10), Duration::from_millis(20))
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns
/// whether it held. The way tests wait for something to happen.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
