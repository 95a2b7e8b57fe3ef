//! Hot reload: the settings in a `watch` channel, refreshed when a layer changes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use server_kit::ServerConfig;
use tokio::sync::watch;
use tracing::{error, info};

use super::{ConfigError, ConfigLoader, Section};

/// Loaded settings that follow their files. See the [module docs](super).
///
/// Readers take [`current`](Self::current) or [`subscribe`](Self::subscribe) to a
/// `watch` channel and apply each new value. [`reload`](Self::reload) reloads now;
/// [`watch_files`](Self::watch_files) reloads whenever the content of a layer
/// file changes. A reload that fails keeps the previous settings in force and
/// logs the error.
#[derive(Debug)]
pub struct Reloadable<T> {
    loader: ConfigLoader,
    tx: watch::Sender<Arc<T>>,
    /// The content of each layer file at the last reload (None: absent).
    seen: Mutex<Vec<(PathBuf, Option<Vec<u8>>)>>,
}

impl<T: Section + Send + Sync + 'static> Reloadable<T> {
    /// Loads the settings once.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of the first load: a process should not start on a bad
    /// configuration.
    pub fn load(loader: ConfigLoader) -> Result<Self, ConfigError> {
        let seen = read_layers(&loader);
        let value = loader.load::<T>()?;
        let (tx, _) = watch::channel(Arc::new(value));
        Ok(Self {
            loader,
            tx,
            seen: Mutex::new(seen),
        })
    }

    /// The settings in force.
    pub fn current(&self) -> Arc<T> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every accepted reload.
    pub fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.tx.subscribe()
    }

    /// Reloads every layer now. On success the new settings are published and
    /// returned; on failure the error is logged and returned, and the settings in
    /// force do not change.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of the rejected configuration.
    pub fn reload(&self) -> Result<Arc<T>, ConfigError> {
        let layers = read_layers(&self.loader);
        if let Ok(mut seen) = self.seen.lock() {
            *seen = layers;
        }
        match self.loader.load::<T>() {
            Ok(value) => {
                let value = Arc::new(value);
                self.tx.send_replace(value.clone());
                info!(dir = %self.loader.dir().display(), "configuration reloaded");
                Ok(value)
            }
            Err(e) => {
                error!(error = %e, "configuration reload rejected; the previous configuration stays in force");
                Err(e)
            }
        }
    }

    /// Whether a layer file changed since the last (re)load.
    pub fn files_changed(&self) -> bool {
        let now = read_layers(&self.loader);
        self.seen.lock().map(|seen| *seen != now).unwrap_or(true)
    }

    /// Polls the layer files every `interval` and reloads when one changed.
    /// Stops when the returned handle is aborted or `self` is dropped.
    pub fn watch_files(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                if me.files_changed() {
                    let _ = me.reload();
                }
            }
        })
    }
}

/// Puts the rate limits of `config` in force on `server`, or logs why not.
fn apply_rate_limits<C: server_kit::LimiterClock>(
    server: &server_kit::ServeHandle<C>,
    config: &ServerConfig,
) {
    match server.set_rate_limits(config.rate_limit().clone()) {
        Ok(()) => info!("server rate limits reloaded"),
        Err(e) => {
            error!(error = %e, "reloaded rate limits refused; the old ones stay in force")
        }
    }
}

fn read_layers(loader: &ConfigLoader) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    loader
        .layer_files()
        .into_iter()
        .map(|path| {
            let content = std::fs::read(&path).ok();
            (path, content)
        })
        .collect()
}

impl Reloadable<super::Settings> {
    /// Applies every accepted reload to a running server: its rate limits
    /// (`[server.rate_limit]`) change for the next call, without a restart and
    /// without dropping a call. Other `[server]` keys (listen address, identity)
    /// need a restart; a change to them is logged and ignored. Ends when the
    /// settings or the server are gone.
    pub fn follow_server<C>(
        &self,
        server: server_kit::ServeHandle<C>,
    ) -> tokio::task::JoinHandle<()>
    where
        C: server_kit::LimiterClock + Send + Sync + 'static,
    {
        self.follow_server_with(server, |config| config)
    }

    /// [`follow_server`](Self::follow_server) for a server whose `[server]`
    /// settings are the loaded ones passed through `overrides` (command-line
    /// flags, say): every reloaded `[server]` goes through `overrides` too, so
    /// an override keeps winning over the files. Limits that differ from the
    /// server's when following starts are applied at once.
    pub fn follow_server_with<C, F>(
        &self,
        server: server_kit::ServeHandle<C>,
        overrides: F,
    ) -> tokio::task::JoinHandle<()>
    where
        C: server_kit::LimiterClock + Send + Sync + 'static,
        F: Fn(ServerConfig) -> ServerConfig + Send + 'static,
    {
        let mut changes = self.subscribe();
        tokio::spawn(async move {
            // Each value is cloned out first: the channel's lock is not held
            // while `overrides` runs.
            let loaded = changes.borrow_and_update().server.clone();
            let mut last = overrides(loaded);
            if server.rate_limits().config() != last.rate_limit() {
                apply_rate_limits(&server, &last);
            }
            while changes.changed().await.is_ok() {
                let loaded = changes.borrow_and_update().server.clone();
                let next = overrides(loaded);
                if server.is_shutting_down() {
                    return;
                }
                if next.rate_limit() != last.rate_limit() {
                    apply_rate_limits(&server, &next);
                }
                if next.listen() != last.listen()
                    || next.service() != last.service()
                    || next.node_id() != last.node_id()
                {
                    error!("reloaded [server] identity or listen address ignored: they take effect on restart");
                }
                if next.shedding() != last.shedding() {
                    error!("reloaded [server.shedding] ignored: it takes effect on restart");
                }
                last = next;
            }
        })
    }

    /// Applies every accepted reload to a running client (`[client]`):
    /// strategies, retries, deadlines and budgets from the next call, balancers
    /// and selectors from the next pick. Ends when the settings or the client are
    /// gone. Runs on the current actix arbiter.
    pub fn follow_client(
        &self,
        client: actix::Addr<cluster_client::ClusterClient>,
    ) -> tokio::task::JoinHandle<()> {
        let mut changes = self.subscribe();
        actix::spawn(async move {
            let mut last = changes.borrow_and_update().client.clone();
            while changes.changed().await.is_ok() {
                let next = changes.borrow_and_update().client.clone();
                if next == last {
                    continue;
                }
                match client
                    .send(cluster_client::UpdateConfig(next.clone()))
                    .await
                {
                    Ok(Ok(())) => last = next,
                    Ok(Err(e)) => {
                        error!(error = %e, "reloaded client settings refused; the old ones stay in force")
                    }
                    Err(_) => return,
                }
            }
        })
    }
}
