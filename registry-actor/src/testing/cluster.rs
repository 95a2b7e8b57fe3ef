//! [`EtcdCluster`]: a private etcd cluster of several members.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::Client;

use super::member::{temp_dir, Member};
use super::server::{test_registry_config, unique_name};
use crate::RegistryConfig;

/// A private etcd cluster of N members on loopback, for fault tests. See the
/// [module docs](super).
///
/// Members are numbered `0..N` in the order of [`endpoints`](Self::endpoints).
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: PathBuf,
    generation: u32,
}

impl EtcdCluster {
    /// Starts `size` members on free loopback ports with fresh data directories
    /// and waits until every one of them serves requests under an elected leader.
    ///
    /// # Errors
    ///
    /// When `etcd` is not installed, or the cluster is not ready within 20 s on
    /// any of three sets of ports.
    pub async fn start(size: usize) -> io::Result<Self> {
        super::leftovers::clean_once();
        let mut last_err = None;
        for _ in 0..3 {
            let name = unique_name(super::leftovers::CLUSTER);
            let dir = temp_dir(&name);
            let members = (0..size)
                .map(|i| Member::new(format!("{name}-m{i}"), dir.join(format!("m{i}"))))
                .collect::<io::Result<Vec<_>>>()?;
            let mut cluster = Self {
                members,
                dir,
                generation: 0,
            };
            match cluster.spawn_all().await {
                Ok(()) => return Ok(cluster),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("etcd cluster did not start")))
    }

    /// The directory holding every member's data and log (deleted on drop).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// How many members the cluster has.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Every member's client endpoint, `127.0.0.1:PORT`, by member number.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// The number of the member serving `endpoint` (as in
    /// [`endpoints`](Self::endpoints)).
    pub fn member_of(&self, endpoint: &str) -> Option<usize> {
        self.members.iter().position(|m| m.endpoint() == endpoint)
    }

    /// A registry configuration with every endpoint, a 2 s lease TTL and a short
    /// backoff (100 ms to 1 s).
    pub fn registry_config(&self) -> RegistryConfig {
        test_registry_config(self.endpoints())
    }

    /// A plain etcd client over every member, for tests that act as "another
    /// tool".
    ///
    /// # Errors
    ///
    /// When the client cannot be built.
    pub async fn client(&self) -> Result<Client, etcd_client::Error> {
        let urls: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("http://{e}"))
            .collect();
        Client::connect(urls, None).await
    }

    /// A plain etcd client of member `member` alone.
    ///
    /// # Errors
    ///
    /// When the client cannot be built.
    ///
    /// # Panics
    ///
    /// When there is no such member.
    pub async fn member_client(&self, member: usize) -> Result<Client, etcd_client::Error> {
        self.members[member].client().await
    }

    /// The member that is the leader right now, as the running members see it
    /// (`None` when none of them knows one).
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            if self.members[i].pid().is_none() {
                continue;
            }
            let Ok(mut client) = self.members[i].client().await else {
                continue;
            };
            let status = tokio::time::timeout(Duration::from_millis(500), client.status()).await;
            let Ok(Ok(status)) = status else { continue };
            let leader = status.leader();
            if leader == 0 {
                continue;
            }
            let Ok(Ok(list)) =
                tokio::time::timeout(Duration::from_millis(500), client.member_list()).await
            else {
                continue;
            };
            let name = list
                .members()
                .iter()
                .find(|m| m.id() == leader)
                .map(|m| m.name().to_owned());
            if let Some(name) = name {
                return self.members.iter().position(|m| m.name == name);
            }
        }
        None
    }

    /// Hands the leadership to member `to` and waits until it leads.
    ///
    /// # Errors
    ///
    /// When there is no leader, etcd refuses, or `to` does not lead within 20 s.
    ///
    /// # Panics
    ///
    /// When there is no such member.
    pub async fn move_leader(&self, to: usize) -> io::Result<()> {
        let leader = self
            .leader()
            .await
            .ok_or_else(|| io::Error::other("no leader"))?;
        if leader == to {
            return Ok(());
        }
        let mut client = self.members[leader]
            .client()
            .await
            .map_err(io::Error::other)?;
        let list = client.member_list().await.map_err(io::Error::other)?;
        let target = list
            .members()
            .iter()
            .find(|m| m.name() == self.members[to].name)
            .map(|m| m.id())
            .ok_or_else(|| io::Error::other("the target is not a member"))?;
        client.move_leader(target).await.map_err(io::Error::other)?;
        let moved = super::wait_until(super::member::START_DEADLINE, || async {
            self.leader().await == Some(to)
        })
        .await;
        if moved {
            Ok(())
        } else {
            Err(io::Error::other(format!("member {to} does not lead")))
        }
    }

    /// SIGKILL of one member (like a crash); its data stays.
    ///
    /// # Panics
    ///
    /// When there is no such member.
    pub fn kill(&mut self, member: usize) {
        self.members[member].kill();
    }

    /// Starts a killed member again on its ports and data and waits until it
    /// serves requests under a leader (it rejoined).
    ///
    /// # Errors
    ///
    /// When it is not ready within 20 s.
    ///
    /// # Panics
    ///
    /// When there is no such member.
    pub async fn restart(&mut self, member: usize) -> io::Result<()> {
        let (initial, token, names) = self.cluster_args();
        let m = &mut self.members[member];
        m.kill();
        m.spawn(&initial, &token)?;
        m.wait_ready(&names).await
    }

    /// Freezes one member (SIGSTOP): its ports stay open and nothing answers, as
    /// with a member cut off by a partition.
    ///
    /// # Errors
    ///
    /// When it is not running or the signal fails.
    ///
    /// # Panics
    ///
    /// When there is no such member.
    pub fn pause(&self, member: usize) -> io::Result<()> {
        self.members[member].signal("STOP")
    }

    /// Thaws a member frozen by [`pause`](Self::pause) (SIGCONT).
    ///
    /// # Errors
    ///
    /// When it is not running or the signal fails.
    ///
    /// # Panics
    ///
    /// When there is no such member.
    pub fn resume(&self, member: usize) -> io::Result<()> {
        self.members[member].signal("CONT")
    }

    /// Whether member `member` runs (a frozen member runs).
    ///
    /// # Panics
    ///
    /// When there is no such member.
    pub fn is_running(&mut self, member: usize) -> bool {
        self.members[member].is_running()
    }

    /// Replaces the cluster by a new one on the same endpoints: every member is
    /// killed, its data deleted, and a cluster with a new cluster id and an empty
    /// store (its revisions start again from 1) is started. Like a registry
    /// rebuilt from scratch.
    ///
    /// # Errors
    ///
    /// When the new cluster is not ready within 20 s.
    pub async fn wipe_and_restart(&mut self) -> io::Result<()> {
        for m in &mut self.members {
            m.kill();
            let data = m.dir.join("data");
            if data.exists() {
                std::fs::remove_dir_all(&data)?;
            }
        }
        self.generation += 1;
        self.spawn_all().await
    }

    /// `--initial-cluster`, the cluster token of this generation, and every
    /// member's name.
    fn cluster_args(&self) -> (String, String, Vec<String>) {
        let initial = self
            .members
            .iter()
            .map(Member::initial_cluster_entry)
            .collect::<Vec<_>>()
            .join(",");
        let names: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
        let token = format!(
            "{}-g{}",
            names.first().map_or("", String::as_str),
            self.generation
        );
        (initial, token, names)
    }

    async fn spawn_all(&mut self) -> io::Result<()> {
        let (initial, token, names) = self.cluster_args();
        for m in &mut self.members {
            m.spawn(&initial, &token)?;
        }
        for m in &mut self.members {
            m.wait_ready(&names).await?;
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
