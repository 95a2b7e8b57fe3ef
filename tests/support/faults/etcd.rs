//! etcd as the fault suite sees it: a private server or cluster the echo
//! servers register in, and probes of leases and revisions.

use std::path::Path;
use std::time::Duration;

use registry_actor::etcd_client::Client;
use registry_actor::testing::{EtcdCluster, EtcdServer};

/// A private etcd (one server or a cluster) echo-server processes register in.
pub trait EtcdFixture {
    /// Every client endpoint, as `GRPC_CLUSTER__REGISTRY__ENDPOINTS` takes them.
    fn endpoints_env(&self) -> String;
    /// A directory of the fixture's own, removed with it.
    fn scratch_dir(&self) -> &Path;
    /// The lease TTL its `echo-server`s register with, as
    /// `GRPC_CLUSTER__REGISTRY__LEASE_TTL` takes it.
    fn lease_ttl_env(&self) -> &'static str {
        "2s"
    }
}

impl EtcdFixture for EtcdServer {
    fn endpoints_env(&self) -> String {
        self.endpoint()
    }

    fn scratch_dir(&self) -> &Path {
        self.data_dir()
    }
}

impl EtcdFixture for EtcdCluster {
    fn endpoints_env(&self) -> String {
        self.endpoints().join(",")
    }

    fn scratch_dir(&self) -> &Path {
        self.data_dir()
    }

    /// 3 s on a cluster: a registrar notices a frozen member's silence at 2/3
    /// of the TTL and then carries the lease to another member, which takes
    /// an election when the frozen member led; a 2 s lease leaves that 0.67 s,
    /// too little on a busy 2-core machine running three members and three
    /// servers.
    fn lease_ttl_env(&self) -> &'static str {
        "3s"
    }
}
// ---------------------------------------------------------------------------

/// The lease of `key` and its remaining and granted TTL in seconds, when the
/// key exists and its lease is alive.
pub async fn live_lease(etcd: &mut Client, key: &str) -> Option<(i64, i64, i64)> {
    let got = tokio::time::timeout(Duration::from_secs(2), etcd.get(key, None))
        .await
        .ok()?
        .ok()?;
    let lease = got.kvs().first()?.lease();
    if lease == 0 {
        return None;
    }
    let ttl = tokio::time::timeout(Duration::from_secs(2), etcd.lease_time_to_live(lease, None))
        .await
        .ok()?
        .ok()?;
    (ttl.ttl() > 0).then_some((lease, ttl.ttl(), ttl.granted_ttl()))
}

/// The current etcd revision.
pub async fn revision(etcd: &mut Client) -> i64 {
    tokio::time::timeout(Duration::from_secs(10), etcd.get("/", None))
        .await
        .expect("etcd answers in time")
        .expect("etcd answers")
        .header()
        .expect("a header")
        .revision()
}

/// The keys among `keys` that are missing now or were created after revision
/// `since`: a key deleted and put again meanwhile has a newer create
/// revision, so an empty answer means every key stayed present throughout.
pub async fn recreated_since(etcd: &mut Client, keys: &[String], since: i64) -> Vec<String> {
    let mut gone = Vec::new();
    for key in keys {
        let got = tokio::time::timeout(Duration::from_secs(10), etcd.get(key.as_str(), None))
            .await
            .expect("etcd answers in time")
            .expect("etcd answers");
        let kept = got
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() <= since);
        if !kept {
            gone.push(key.clone());
        }
    }
    gone
}
