//! The registrar's background task: grant, put, keep alive, watch our own key.

use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, PutOptions, WatchOptions};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::{Command, RegistrationState};
use crate::error::with_timeout;
use crate::{Backoff, Error, RegistryConfig};

/// How a registration session ended.
enum Exit {
    /// Deregistered, or the handle was dropped: the task ends.
    Done,
    /// Resumed after a pause: register again at once.
    Resumed,
}

pub(super) struct RegistrarTask {
    client: Client,
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    request_timeout: Duration,
    backoff: Backoff,
    state: watch::Sender<RegistrationState>,
    commands: mpsc::Receiver<Command>,
    lease: Option<i64>,
}

impl RegistrarTask {
    pub(super) fn new(
        client: Client,
        key: String,
        value: Vec<u8>,
        config: &RegistryConfig,
        state: watch::Sender<RegistrationState>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        let ttl = config.lease_ttl().max(crate::config::MIN_LEASE_TTL);
        Self {
            client,
            key,
            value,
            ttl,
            request_timeout: config.request_timeout(),
            // Retry within a third of the TTL at the latest: after etcd restarts it
            // restores our old lease with a fresh TTL, and the key must be put on a
            // new lease before that one runs out, whatever `backoff_max` says.
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
                    warn!(key = %self.key, attempt, error = %error, "registration lost; registering again");
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
                _ = tokio::time::sleep(delay) => {}
                cmd = self.commands.recv() => match self.command_while_down(cmd).await {
                    Exit::Done => return,
                    Exit::Resumed => {}
                },
            }
        }
    }

    /// One registration: grant, put, then keep alive until something is lost.
    /// `Err` means "lost, retry"; `Ok` means the task was told what to do next.
    async fn session(&mut self) -> Result<Exit, Error> {
        let ttl_secs = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let timeout = self.request_timeout;
        let grant = with_timeout(
            "grant lease",
            timeout,
            self.client.lease_grant(ttl_secs, None),
        )
        .await?;
        let lease = grant.id();
        self.lease = Some(lease);
        let put_revision = self.put(lease).await?;
        let (mut keeper, mut keepalives) = with_timeout(
            "open keepalive stream",
            timeout,
            self.client.lease_keep_alive(lease),
        )
        .await?;
        let watch_options = WatchOptions::new().with_start_revision(put_revision + 1);
        let mut own_key = with_timeout(
            "watch own key",
            timeout,
            self.client.watch(self.key.as_bytes(), Some(watch_options)),
        )
        .await?;

        self.backoff.reset();
        info!(key = %self.key, lease = format_args!("{lease:x}"), ttl = ?self.ttl, "registered");
        self.state
            .send_replace(RegistrationState::Registered { lease });

        let period = self.ttl / 3;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut last_ack = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if last_ack.elapsed() > self.ttl {
                        return Err(lost(format!("no keepalive answer for lease {lease:x} within {:?}", self.ttl)));
                    }
                    with_timeout("send keepalive", timeout, keeper.keep_alive()).await?;
                }
                answer = keepalives.message() => match answer {
                    Ok(Some(r)) if r.ttl() > 0 => last_ack = Instant::now(),
                    Ok(Some(_)) => return Err(lost(format!("lease {lease:x} expired"))),
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
                            self.put(lease).await?;
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

    async fn put(&mut self, lease: i64) -> Result<i64, Error> {
        let op = format!("put {}", self.key);
        let options = PutOptions::new().with_lease(lease);
        let resp = with_timeout(
            &op,
            self.request_timeout,
            self.client
                .put(self.key.as_bytes(), self.value.clone(), Some(options)),
        )
        .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
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
        let timeout = self.request_timeout;
        if let Some(lease) = self.lease.take() {
            // "lease not found" (already expired) is fine; the delete below decides.
            if let Err(e) =
                with_timeout("revoke lease", timeout, self.client.lease_revoke(lease)).await
            {
                debug!(key = %self.key, error = %e, "revoke failed");
            }
        }
        let op = format!("delete {}", self.key);
        with_timeout(&op, timeout, self.client.delete(self.key.as_bytes(), None)).await?;
        Ok(())
    }
}

fn lost(why: String) -> Error {
    Error::RegistrationLost(why)
}
