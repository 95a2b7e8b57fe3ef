//! [`EtcdServer`]: a private etcd of one member.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use etcd_client::Client;

use super::certs::{Pem, TestCa};
use super::member::{temp_dir, Member};
use super::security::{enable_auth, EtcdSecurity, ROOT_USER};
use crate::RegistryConfig;

/// A private etcd process for tests. See the [module docs](super).
#[derive(Debug)]
pub struct EtcdServer {
    member: Member,
    dir: PathBuf,
}

impl EtcdServer {
    /// Starts etcd on free loopback ports with a fresh data directory and waits
    /// until it serves requests.
    ///
    /// # Errors
    ///
    /// When `etcd` is not installed (run `scripts/bootstrap`) or does not become
    /// ready within 20 s on any of three port pairs.
    pub async fn start() -> io::Result<Self> {
        Self::start_secured(EtcdSecurity::default()).await
    }

    /// Starts etcd secured as `security` says: over TLS with certificates of
    /// its own CA (see [`ca`](Self::ca)), requiring client certificates, and
    /// with authentication on for user `root`. Once it serves requests,
    /// [`registry_config`](Self::registry_config) and [`client`](Self::client)
    /// carry the TLS settings and the user.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start), and when authentication cannot be turned on.
    pub async fn start_secured(security: EtcdSecurity) -> io::Result<Self> {
        super::leftovers::clean_once();
        let mut last_err = None;
        for _ in 0..3 {
            let name = unique_name(super::leftovers::SERVER);
            let dir = temp_dir(&name);
            let mut member = Member::new(name, dir.clone())?;
            member.access.tls = security.tls_files(&dir);
            let mut server = Self { member, dir };
            match server.spawn_and_wait().await {
                Ok(()) => {}
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            }
            if let Some(password) = security.root_password() {
                let mut client = server.client().await.map_err(io::Error::other)?;
                enable_auth(&mut client, password).await?;
                server.member.access.user = Some((ROOT_USER.to_owned(), password.to_owned()));
            }
            return Ok(server);
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    /// Invalidates every authentication token etcd has issued, as an expired
    /// token TTL (`--auth-token-ttl`, 5 min idle by default) or an operator
    /// turning auth off and on do: auth disable as root, then auth enable.
    /// Clients must authenticate again.
    ///
    /// # Errors
    ///
    /// When authentication is off or etcd refuses.
    pub async fn revoke_tokens(&self) -> io::Result<()> {
        if self.member.access.user.is_none() {
            return Err(io::Error::other("etcd authentication is off"));
        }
        let failed = |what: &str, e: etcd_client::Error| io::Error::other(format!("{what}: {e}"));
        let mut root = self
            .member
            .client_as(true)
            .await
            .map_err(|e| failed("connect as root", e))?;
        root.auth_disable()
            .await
            .map_err(|e| failed("auth disable", e))?;
        let mut anonymous = self
            .member
            .client_as(false)
            .await
            .map_err(|e| failed("connect", e))?;
        anonymous
            .auth_enable()
            .await
            .map_err(|e| failed("auth enable", e))?;
        Ok(())
    }

    /// The CA that signed the server's and the client's certificates, when
    /// etcd serves TLS.
    pub fn ca(&self) -> Option<&TestCa> {
        self.member.access.tls.as_ref().map(|tls| &tls.ca)
    }

    /// A client certificate signed by [`ca`](Self::ca) (common name
    /// `client`), when etcd serves TLS.
    pub fn client_cert(&self) -> Option<&Pem> {
        self.member.access.tls.as_ref().map(|tls| &tls.client)
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.member.endpoint()
    }

    /// A registry configuration pointing at this etcd, with a 2 s lease TTL and a
    /// short backoff (100 ms to 1 s) so that tests recover quickly; with
    /// `[registry.tls]` (the CA, and the client certificate when etcd requires
    /// one) and the root user when etcd is secured.
    pub fn registry_config(&self) -> RegistryConfig {
        self.member
            .access
            .secure(test_registry_config([self.endpoint()]))
    }

    /// An etcd client for this server (secured as the server is), for tests
    /// that act as "another tool".
    ///
    /// # Errors
    ///
    /// When the client cannot be built.
    pub async fn client(&self) -> Result<Client, etcd_client::Error> {
        self.member.client().await
    }

    /// The data directory (kept across [`stop`](Self::stop) and
    /// [`restart`](Self::restart)).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.member.is_running()
    }

    /// Kills the process (SIGKILL, like a crash) and waits for it; the data stays.
    pub fn stop(&mut self) {
        self.member.kill();
    }

    /// Freezes the process (SIGSTOP): its port stays open and nothing
    /// answers, as with a server cut off by a partition. Watches and
    /// keepalives hang until it is [resumed](Self::resume).
    ///
    /// # Errors
    ///
    /// When it is not running or the signal fails.
    pub fn pause(&self) -> io::Result<()> {
        self.member.signal("STOP")
    }

    /// Thaws a process frozen by [`pause`](Self::pause) (SIGCONT).
    ///
    /// # Errors
    ///
    /// When it is not running or the signal fails.
    pub fn resume(&self) -> io::Result<()> {
        self.member.signal("CONT")
    }

    /// Starts etcd again on the same ports and data directory and waits until it
    /// serves requests.
    ///
    /// # Errors
    ///
    /// When it does not become ready within 20 s.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> io::Result<()> {
        let initial = self.member.initial_cluster_entry();
        self.member.spawn(&initial, &self.member.name.clone())?;
        let expected = [self.member.name.clone()];
        self.member.wait_ready(&expected).await
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.member.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `{prefix}-{pid}-{sequence}`: unique within this machine while we run.
pub(super) fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{seq}", std::process::id())
}

/// The registry settings of tests: these endpoints, a 2 s lease TTL and a
/// 100 ms–1 s backoff.
pub(super) fn test_registry_config<I, S>(endpoints: I) -> RegistryConfig
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    RegistryConfig::default()
        .with_endpoints(endpoints)
        .with_lease_ttl(Duration::from_secs(2))
        .with_backoff(Duration::from_millis(100), Duration::from_secs(1))
}
