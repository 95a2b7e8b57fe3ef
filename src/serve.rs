//! [`serve`]: a tonic server as a cluster member, set up by the layered
//! configuration and following its edits; [`Serve`], the same with a say in
//! between; [`ServeError`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use server_kit::{Routes, ServeBuilder, ServeHandle, ServerConfig, Serving, ShutdownReport};

use crate::config::{ConfigError, ConfigLoader, Reloadable, Settings};
use crate::metrics::{MetricsConfig, MetricsError};

/// How often [`Serve`] checks the configuration files for edits, unless told
/// otherwise.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Serves `routes` (a generated server such as `EchoServer::new(svc)`, or
/// [`Routes`] of several) as a cluster member until SIGTERM or SIGINT, then
/// shuts down in order. A server's whole `main`:
///
/// ```no_run
/// use grpc_cluster::echo::{EchoServer, EchoService};
/// use grpc_cluster::server::ShutdownReport;
/// use grpc_cluster::ServeError;
///
/// #[tokio::main]
/// async fn main() -> Result<ShutdownReport, ServeError> {
///     grpc_cluster::serve(EchoServer::new(EchoService::new("echo-1"))).await
/// }
/// ```
///
/// It loads the configuration as every part of grpc-cluster does
/// (`config/default.toml`, `config/{GRPC_CLUSTER_ENV}.toml`, `config/local.toml`
/// from `./config` or `GRPC_CLUSTER_CONFIG_DIR`, then `GRPC_CLUSTER__…`
/// variables; see [`config`](crate::config)), serves through
/// [`server_kit::serve`]'s sequence (bind `server.listen`, register in etcd
/// unless `server.service` is empty, rate limits, health, the ordered shutdown
/// on SIGTERM/SIGINT), and applies edits of `[server.rate_limit]` in the files
/// to the running server (checked every second). It is
/// `Serve::from_env()?.serve(routes).await`.
///
/// Logs go through `tracing`; install a subscriber (such as
/// `tracing_subscriber::fmt().init()`) to see them.
///
/// # Return value
///
/// The [`ShutdownReport`] after an ordered shutdown: a `main` returning it
/// exits with status 0.
///
/// # Errors
///
/// A [`ServeError`] naming the culprit: [`ServeError::Config`] with the key and
/// the file (or the environment) of a bad setting, [`ServeError::Server`] with
/// the setting or address the server could not start with, or why it failed.
/// Its `Debug` output is that message, so a `main` returning the error prints
/// it and exits with status 1.
pub async fn serve(routes: impl Into<Routes>) -> Result<ShutdownReport, ServeError> {
    Serve::from_env()?.serve(routes).await
}

/// The loaded configuration of a server, ready to serve: [`serve`] with a
/// say in between (another directory, overrides of the loaded settings, the
/// running server's handle). Build it with [`from_env`](Self::from_env) or
/// [`load`](Self::load), adjust it, then [`serve`](Self::serve) or
/// [`start`](Self::start).
///
/// # Examples
///
/// ```no_run
/// # async fn run(listen: Option<String>) -> Result<(), grpc_cluster::ServeError> {
/// use grpc_cluster::config::ConfigLoader;
/// use grpc_cluster::echo::{EchoServer, EchoService};
/// use grpc_cluster::Serve;
///
/// let serve = Serve::load(ConfigLoader::from_env().with_dir("/etc/echo"))?
///     .with_overrides(move |server| match &listen {
///         Some(listen) => server.with_listen(listen),
///         None => server,
///     });
/// let serving = serve.start(EchoServer::new(EchoService::new("echo-1"))).await?;
/// println!("listening on {}", serving.local_addr());
/// let report = serving.wait().await?;
/// println!("{report}");
/// # Ok(()) }
/// ```
pub struct Serve {
    settings: Arc<Reloadable<Settings>>,
    overrides: Overrides,
    reload_interval: Duration,
    builder: Option<Customize>,
    /// `[metrics]` as given in code, over the loaded one.
    metrics: Option<MetricsConfig>,
}

/// Changes to the server builder: layers, tonic options.
type Customize = Box<dyn FnOnce(ServeBuilder) -> ServeBuilder + Send>;

/// Changes to the loaded `[server]` settings, applied to every reload too.
type Overrides = Arc<dyn Fn(ServerConfig) -> ServerConfig + Send + Sync>;

impl Serve {
    /// Loads the configuration from `./config` or `GRPC_CLUSTER_CONFIG_DIR`,
    /// `GRPC_CLUSTER_ENV` and the `GRPC_CLUSTER__…` variables.
    ///
    /// # Errors
    ///
    /// [`ServeError::Config`] naming the key and where it was set.
    pub fn from_env() -> Result<Self, ServeError> {
        Self::load(ConfigLoader::from_env())
    }

    /// Loads the configuration through `loader` (another directory, say).
    ///
    /// # Errors
    ///
    /// [`ServeError::Config`] naming the key and where it was set.
    pub fn load(loader: ConfigLoader) -> Result<Self, ServeError> {
        Ok(Self {
            settings: Arc::new(Reloadable::load(loader)?),
            overrides: Arc::new(|server| server),
            reload_interval: RELOAD_INTERVAL,
            builder: None,
            metrics: None,
        })
    }

    /// Passes the loaded `[server]` settings through `overrides` before serving,
    /// and every reloaded version too, so the overrides keep winning over the
    /// files (default: none). For command-line flags.
    pub fn with_overrides(
        mut self,
        overrides: impl Fn(ServerConfig) -> ServerConfig + Send + Sync + 'static,
    ) -> Self {
        self.overrides = Arc::new(overrides);
        self
    }

    /// Passes the [`ServeBuilder`] through `customize` before starting
    /// (default: none): your own tower layers ([`ServeBuilder::layer`]),
    /// tonic server options ([`ServeBuilder::server_options`]), no signal
    /// handling in tests ([`ServeBuilder::signals`]).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), grpc_cluster::ServeError> {
    /// # use grpc_cluster::echo::{EchoServer, EchoService};
    /// use grpc_cluster::Serve;
    ///
    /// Serve::from_env()?
    ///     .with_builder(|b| b.server_options(|s| s.max_concurrent_streams(Some(256))))
    ///     .serve(EchoServer::new(EchoService::new("echo-1")))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn with_builder(
        mut self,
        customize: impl FnOnce(ServeBuilder) -> ServeBuilder + Send + 'static,
    ) -> Self {
        self.builder = Some(Box::new(customize));
        self
    }

    /// How often the files are checked for edits (default 1 s);
    /// `Duration::ZERO` does not follow them.
    pub fn with_reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// Uses `metrics` instead of the loaded `[metrics]` (default: the loaded
    /// one). For command-line flags.
    pub fn with_metrics(mut self, metrics: MetricsConfig) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Every loaded section (`[registry]`, `[client]`, `[server]`,
    /// `[metrics]`), without the overrides.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.current()
    }

    /// The `[server]` settings the server will start with: the loaded ones
    /// through the overrides.
    pub fn server_config(&self) -> ServerConfig {
        (self.overrides)(self.settings.current().server.clone())
    }

    /// Binds, starts serving and registers; returns once the listener accepts.
    /// With `metrics.listen` set, installs the Prometheus recorder first and
    /// serves `/metrics` there (see [`metrics`](crate::metrics)).
    /// The returned [`Serving`] gives the address and a handle, and
    /// [`Serving::wait`] the shutdown report after SIGTERM, SIGINT or
    /// [`ServeHandle::shutdown`]. Edits of the rate limits in the files are
    /// applied until the shutdown starts.
    ///
    /// # Errors
    ///
    /// [`ServeError::Server`] naming the bad setting, or the address that could
    /// not be bound; [`ServeError::Metrics`] when `/metrics` cannot be served.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub async fn start(self, routes: impl Into<Routes>) -> Result<Serving, ServeError> {
        let settings = self.settings.current();
        let metrics = self.metrics.as_ref().unwrap_or(&settings.metrics);
        if metrics.listen().map_err(MetricsError::from)?.is_some() {
            crate::metrics::install(metrics)?;
        }
        let mut builder = ServeBuilder::new((self.overrides)(settings.server.clone()))
            .routes(routes)
            .registry(settings.registry.clone());
        if let Some(customize) = self.builder {
            builder = customize(builder);
        }
        let serving = builder.start().await?;
        if !self.reload_interval.is_zero() {
            follow(
                self.settings,
                serving.handle(),
                self.overrides,
                self.reload_interval,
            );
        }
        Ok(serving)
    }

    /// [`start`](Self::start)s, then waits for the shutdown and returns its
    /// report.
    ///
    /// # Errors
    ///
    /// [`ServeError::Server`] when the server cannot start or fails.
    pub async fn serve(self, routes: impl Into<Routes>) -> Result<ShutdownReport, ServeError> {
        Ok(self.start(routes).await?.wait().await?)
    }
}

impl fmt::Debug for Serve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("settings", &self.settings)
            .field("reload_interval", &self.reload_interval)
            .field("builder", &self.builder.is_some())
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

/// Watches the files and applies the rate limits to `server` until its
/// shutdown starts.
fn follow(
    settings: Arc<Reloadable<Settings>>,
    server: ServeHandle,
    overrides: Overrides,
    interval: Duration,
) {
    tokio::spawn(async move {
        let watcher = settings.watch_files(interval);
        let follower = settings.follow_server_with(server.clone(), move |c| overrides(c));
        server.shutdown_started().await;
        watcher.abort();
        follower.abort();
    });
}

/// Why [`serve`] did not end with a shutdown report. Each variant names the
/// culprit; `Debug` prints the same message as `Display` (`{:#?}` the
/// structure), so a `main` returning it prints a readable line.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The layered configuration did not load: the key, and the file or the
    /// environment that set it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server could not start (a bad setting, an address that cannot be
    /// bound, bad registry settings) or failed while serving.
    #[error(transparent)]
    Server(#[from] server_kit::Error),
    /// `/metrics` could not be served (a bad address, a port in use).
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

impl fmt::Debug for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return fmt::Display::fmt(self, f);
        }
        match self {
            Self::Config(e) => f.debug_tuple("Config").field(e).finish(),
            Self::Server(e) => f.debug_tuple("Server").field(e).finish(),
            Self::Metrics(e) => f.debug_tuple("Metrics").field(e).finish(),
        }
    }
}
