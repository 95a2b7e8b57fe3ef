//! The registrar's background task: grant, put, keep alive, watch our own key,
//! and carry the lease over to another member when one fails.

use std::time::Duration;

use etcd_client::{
    Client, EventType, LeaseKeepAliveStream, LeaseKeeper, PutOptions, WatchOptions, WatchStream,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Command, RegistrationState};
use crate::error::with_timeout;
use crate::etcd::Picked;
use crate::{Backoff, Error, Etcd, RegistryConfig};

/// How a registration session ended.
enum Exit {
    /// Deregistered, or the handle was dropped: the task ends.
    Done,
    /// Resumed after a pause: register again at once.
    Resumed,
}

pub(super) struct RegistrarTask {
    etcd: Etcd,
    key: String,
    value: Vec<u8>,
    /// The TTL asked for, in whole seconds.
    ttl_secs: i64,
    /// The bound of each request while (re-)establishing a registration on a
    /// member: short enough that a frozen member costs little of the TTL.
    step_timeout: Duration,
    backoff: Backoff,
    state: Published,
    commands: mpsc::Receiver<Command>,
    /// The lease the key is (or was last) attached to, while it may be alive,
    /// and the TTL etcd granted it (seconds).
    lease: Option<(i64, i64)>,
}

/// The registration state as published: the watch channel the [`Registrar`]
/// reads, and the `grpc_cluster_registration_up{service,node}` gauge (1 while
/// registered, 0 otherwise), both set on every change.
///
/// [`Registrar`]: super::Registrar
pub(super) struct Published {
    tx: watch::Sender<RegistrationState>,
    up: metrics::Gauge,
}

impl Published {
    /// Publishes through `tx` the state of node `node` of `service`.
    pub(super) fn new(tx: watch::Sender<RegistrationState>, service: &str, node: &str) -> Self {
        let up = metrics::gauge!(
            crate::metrics::REGISTRATION_UP,
            "service" => service.to_owned(),
            "node" => node.to_owned()
        );
        up.set(if tx.borrow().is_registered() {
            1.0
        } else {
            0.0
        });
        Self { tx, up }
    }

    fn send_replace(&self, state: RegistrationState) {
        self.up.set(if state.is_registered() { 1.0 } else { 0.0 });
        self.tx.send_replace(state);
    }

    fn borrow(&self) -> watch::Ref<'_, RegistrationState> {
        self.tx.borrow()
    }
}

impl Drop for Published {
    /// A registrar stopped (its task ended or was aborted) registers nothing.
    fn drop(&mut self) {
        self.up.set(0.0);
    }
}

/// The streams of one session, all on one member.
struct Kept {
    lease: i64,
    /// The TTL etcd granted, seconds.
    ttl_secs: i64,
    keeper: LeaseKeeper,
    answers: LeaseKeepAliveStream,
    own_key: WatchStream,
}

impl RegistrarTask {
    pub(super) fn new(
        etcd: Etcd,
        key: String,
        value: Vec<u8>,
        config: &RegistryConfig,
        state: Published,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        let ttl = config.lease_ttl().max(crate::config::MIN_LEASE_TTL);
        let ttl_secs = whole_seconds(ttl);
        let ttl = Duration::from_secs(ttl_secs.unsigned_abs());
        Self {
            etcd,
            key,
            value,
            ttl_secs,
            // A sixth of the TTL: after 2/3 of it passed in silence, a frozen
            // member tried next still leaves time for a live one.
            step_timeout: config.request_timeout().min(ttl / 6),
            // Retry within a third of the TTL at the latest: a lease outlives
            // its member by at most the TTL, and the key must be kept alive
            // (or put on a new lease) before it runs out, whatever
            // `backoff_max` says.
            backoff: Backoff::new(
                config.backoff_min().min(ttl / 3),
                config.backoff_max().min(ttl / 3),
            ),
            state,
            commands,
            lease: None,
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            let error = match self.session().await {
                Ok(Exit::Done) => return,
                Ok(Exit::Resumed) => continue,
                Err(e) => e,
            };
            let attempt = self.backoff.attempts() + 1;
            // Repeated failures are logged at attempts 1, 2, 4, 8…; the state
            // carries every one.
            if attempt.is_power_of_two() {
                if self.state.borrow().is_registered() {
                    warn!(key = %self.key, attempt, error = %error, "registration not kept alive; trying again");
                } else {
                    warn!(key = %self.key, attempt, error = %error, "cannot register; retrying");
                }
            }
            self.state.send_replace(RegistrationState::Retrying {
                attempt,
                error: error.to_string(),
            });
            let delay = self.backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                cmd = self.commands.recv() => match self.command_while_down(cmd).await {
                    Exit::Done => return,
                    Exit::Resumed => {}
                },
            }
        }
    }

    /// One registration on the preferred member: the current lease carried
    /// over (or a new one), then keepalives until something is lost. `Err`
    /// means "lost, retry"; `Ok` means the task was told what to do next.
    async fn session(&mut self) -> Result<Exit, Error> {
        let member = self.etcd.pick();
        let index = member.index;
        let kept = match self.establish(member).await {
            Ok(kept) => kept,
            Err(e) => {
                self.etcd.failed(index);
                return Err(e);
            }
        };
        let result = self.keep(kept).await;
        if result.is_err() {
            self.etcd.failed(index);
        }
        result
    }

    /// Carries the current lease over to `member`, or grants a new one, and
    /// makes sure the key is there on it.
    async fn establish(&mut self, member: Picked) -> Result<Kept, Error> {
        let timeout = self.step_timeout;
        let mut client = member.client;
        if let Some((lease, granted)) = self.lease {
            // Opening the stream sends the first keepalive and reads its
            // answer: it fails with `LeaseKeepAliveError` when etcd does not
            // know the lease (it expired, or the cluster was rebuilt).
            match tokio::time::timeout(timeout, client.lease_keep_alive(lease)).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        op: "open keepalive stream".into(),
                        timeout,
                    })
                }
                Ok(Ok((keeper, answers))) => {
                    let revision = self.ensure_key(&mut client, lease).await?;
                    let own_key = self.watch_own_key(&mut client, revision).await?;
                    debug!(key = %self.key, lease = format_args!("{lease:x}"), member = %member.endpoint, "lease carried over");
                    return Ok(Kept {
                        lease,
                        ttl_secs: granted,
                        keeper,
                        answers,
                        own_key,
                    });
                }
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => {
                    info!(key = %self.key, lease = format_args!("{lease:x}"), "lease gone; registering anew");
                    self.lease = None;
                }
                Ok(Err(e)) => return Err(Error::etcd("open keepalive stream", e)),
            }
        }
        let grant = with_timeout(
            "grant lease",
            timeout,
            client.lease_grant(self.ttl_secs, None),
        )
        .await?;
        let lease = grant.id();
        self.lease = Some((lease, grant.ttl()));
        if grant.ttl() != self.ttl_secs {
            warn!(key = %self.key, asked = self.ttl_secs, granted = grant.ttl(), "etcd granted another lease TTL than asked");
        }
        let revision = self.put(&mut client, lease).await?;
        let (keeper, answers) = with_timeout(
            "open keepalive stream",
            timeout,
            client.lease_keep_alive(lease),
        )
        .await?;
        let own_key = self.watch_own_key(&mut client, revision).await?;
        Ok(Kept {
            lease,
            ttl_secs: grant.ttl(),
            keeper,
            answers,
            own_key,
        })
    }

    /// Keeps the lease alive until something is lost or a command comes.
    async fn keep(&mut self, kept: Kept) -> Result<Exit, Error> {
        let Kept {
            lease,
            ttl_secs,
            mut keeper,
            mut answers,
            mut own_key,
        } = kept;
        let timeout = self.step_timeout;
        let ttl = Duration::from_secs(ttl_secs.max(1).unsigned_abs());
        self.backoff.reset();
        info!(key = %self.key, lease = format_args!("{lease:x}"), ttl = ?ttl, "registered");
        self.state
            .send_replace(RegistrationState::Registered { lease });

        let period = ttl / 3;
        // Silence for 2/3 of the TTL leaves a third of it to carry the lease
        // over to another member before it can expire.
        let silence = ttl * 2 / 3;
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        let mut last_ack = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    with_timeout("send keepalive", timeout, keeper.keep_alive()).await?;
                }
                () = tokio::time::sleep_until(last_ack + silence) => {
                    return Err(lost(format!("no keepalive answer for lease {lease:x} within {silence:?}")));
                }
                answer = answers.message() => match answer {
                    Ok(Some(r)) if r.ttl() > 0 => last_ack = Instant::now(),
                    Ok(Some(_)) => {
                        self.lease = None;
                        return Err(lost(format!("lease {lease:x} expired")));
                    }
                    Ok(None) => return Err(lost("keepalive stream ended".into())),
                    Err(e) => return Err(Error::etcd("keepalive stream", e)),
                },
                event = own_key.message() => match event {
                    Ok(Some(resp)) if resp.canceled() => {
                        return Err(lost(format!("watch on own key canceled: {}", resp.cancel_reason())));
                    }
                    Ok(Some(resp)) => {
                        if resp.events().iter().any(|e| e.event_type() == EventType::Delete) {
                            warn!(key = %self.key, "our key was deleted by someone else; putting it back");
                            self.put_anywhere(lease).await?;
                        }
                    }
                    Ok(None) => return Err(lost("own-key watch stream ended".into())),
                    Err(e) => return Err(Error::etcd("own-key watch stream", e)),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Resume) => {}
                    other => return Ok(self.command_while_down(other).await),
                },
            }
        }
    }

    /// Puts our key on `lease` unless it is already there with our value;
    /// answers the revision the key is known at.
    async fn ensure_key(&self, client: &mut Client, lease: i64) -> Result<i64, Error> {
        let op = format!("get {}", self.key);
        let got = with_timeout(
            &op,
            self.step_timeout,
            client.get(self.key.as_bytes(), None),
        )
        .await?;
        let ours = got
            .kvs()
            .first()
            .is_some_and(|kv| kv.lease() == lease && kv.value() == self.value.as_slice());
        if ours {
            return Ok(got.header().map_or(0, |h| h.revision()));
        }
        self.put(client, lease).await
    }

    async fn put(&self, client: &mut Client, lease: i64) -> Result<i64, Error> {
        let op = format!("put {}", self.key);
        let options = PutOptions::new().with_lease(lease);
        let resp = with_timeout(
            &op,
            self.step_timeout,
            client.put(self.key.as_bytes(), self.value.clone(), Some(options)),
        )
        .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Puts our key on `lease` through whichever member answers.
    async fn put_anywhere(&self, lease: i64) -> Result<(), Error> {
        let op = format!("put {}", self.key);
        self.etcd
            .call(&op, |mut client| {
                let options = PutOptions::new().with_lease(lease);
                let (key, value) = (self.key.clone(), self.value.clone());
                async move { client.put(key, value, Some(options)).await }
            })
            .await
            .map(drop)
    }

    async fn watch_own_key(
        &self,
        client: &mut Client,
        revision: i64,
    ) -> Result<WatchStream, Error> {
        let options = WatchOptions::new().with_start_revision(revision + 1);
        with_timeout(
            "watch own key",
            self.step_timeout,
            client.watch(self.key.as_bytes(), Some(options)),
        )
        .await
    }

    /// Handles a command that ends or suspends the registration (or a dropped
    /// handle), then, if paused, waits for resume or deregister.
    async fn command_while_down(&mut self, cmd: Option<Command>) -> Exit {
        let mut cmd = cmd;
        loop {
            match cmd {
                None => {
                    debug!(key = %self.key, "registrar handle dropped; stopping without revoking");
                    return Exit::Done;
                }
                Some(Command::Deregister(reply)) => {
                    let result = self.remove().await;
                    match &result {
                        Ok(()) => info!(key = %self.key, "deregistered"),
                        Err(e) => {
                            warn!(key = %self.key, error = %e, "deregister failed; the key expires with its lease")
                        }
                    }
                    self.state.send_replace(RegistrationState::Deregistered);
                    let _ = reply.send(result);
                    return Exit::Done;
                }
                Some(Command::Pause(reply)) => {
                    let result = self.remove().await;
                    info!(key = %self.key, "paused");
                    self.state.send_replace(RegistrationState::Paused);
                    let _ = reply.send(result);
                }
                Some(Command::Resume) => {
                    if *self.state.borrow() == RegistrationState::Paused {
                        info!(key = %self.key, "resumed");
                        self.backoff.reset();
                        return Exit::Resumed;
                    }
                    // Not paused (we are between retries): keep retrying.
                    return Exit::Resumed;
                }
            }
            cmd = self.commands.recv().await;
        }
    }

    /// Revokes the current lease and deletes the key; `Ok` once etcd confirms the
    /// key is gone.
    async fn remove(&mut self) -> Result<(), Error> {
        if let Some((lease, _)) = self.lease.take() {
            // "lease not found" (already expired) is fine; the delete below decides.
            let revoked = self
                .etcd
                .call("revoke lease", |mut c| async move {
                    c.lease_revoke(lease).await
                })
                .await;
            if let Err(e) = revoked {
                debug!(key = %self.key, error = %e, "revoke failed");
            }
        }
        let op = format!("delete {}", self.key);
        let key = self.key.clone();
        self.etcd
            .call(&op, |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await?;
        Ok(())
    }
}

/// `ttl` in whole seconds, a fraction rounded up (etcd grants whole seconds;
/// rounding down would grant less than asked).
fn whole_seconds(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn lost(why: String) -> Error {
    Error::RegistrationLost(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fractional_ttl_is_rounded_up_never_down() {
        assert_eq!(whole_seconds(Duration::from_millis(2900)), 3);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(whole_seconds(Duration::MAX), i64::MAX);
    }
}
