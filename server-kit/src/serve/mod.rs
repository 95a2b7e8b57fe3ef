//! Serving tonic services as a cluster member: [`serve`], [`ServeBuilder`],
//! [`Serving`] and [`ServeHandle`]. The crate docs describe start-up and the
//! ordered shutdown.
//!
//! # Examples
//!
//! ```no_run
//! # use std::convert::Infallible;
//! # use tonic::{body::Body, server::NamedService};
//! # async fn run<S>(my_service: S) -> Result<(), server_kit::Error>
//! # where
//! #     S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
//! #         + NamedService + Clone + Send + Sync + 'static,
//! #     S::Future: Send + 'static,
//! # {
//! use registry_actor::RegistryConfig;
//! use server_kit::{RateLimitConfig, Routes, ServeBuilder, ServerConfig};
//!
//! let config = ServerConfig::default()
//!     .with_listen("127.0.0.1:0")
//!     .with_service("echo")
//!     .with_rate_limit(RateLimitConfig::default().with_rps(1000));
//! let serving = ServeBuilder::new(config)
//!     .routes(Routes::new(my_service))
//!     .registry(RegistryConfig::default())
//!     .start()
//!     .await?;
//! let handle = serving.handle();
//! println!("listening on {}", handle.local_addr());
//! // Later, e.g. from a config reload: handle.set_rate_limits(..)?;
//! let report = serving.wait().await?; // returns after SIGTERM / handle.shutdown()
//! println!("{report}");
//! # Ok(()) }
//! ```

mod dispatch;
mod handle;
mod layers;
mod routes;
mod shutdown;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use governor::clock::MonotonicClock;
use registry_actor::{Node, Registrar, RegistrationState, RegistryConfig};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tower::{Service, ServiceBuilder};
use tracing::{info, warn};

pub use handle::ServeHandle;
pub use layers::LayeredService;
pub use routes::Routes;
pub use shutdown::{Deregistration, Phase, ShutdownReport, ShutdownTrigger};

use crate::auth::BearerAuthLayer;
use crate::cluster::InstanceWatch;
use crate::drain::{Connections, DrainSignal, InFlight, TrackLayer};
use crate::observe::ObserveLayer;
use crate::rate_limit::{LimiterClock, RateLimitLayer, RateLimits};
use crate::shedding::Shedder;
use crate::{Error, ServerConfig};
use dispatch::DispatchLayer;
use layers::{ServerOptions, UserLayers};

/// Serves `routes` as a cluster member until SIGTERM or SIGINT, then shuts down
/// in order and returns what the shutdown did. The whole server kit in one call:
///
/// 1. binds `server.listen` (with port 0, the real port is advertised);
/// 2. registers the node in etcd with `registry`: a lease, kept alive, written
///    again after any loss; etcd down at start-up is retried, not fatal. An
///    empty `server.service` serves without registering (logged);
/// 3. checks every call against the rate limits of `server.rate_limit`, then
///    the adaptive in-flight limit of `server.shedding` (when on);
/// 4. serves the gRPC health service;
/// 5. on SIGTERM or SIGINT: `NOT_SERVING`, deregister, lame duck, stop
///    accepting, drain, cancel the rest (see the [crate docs](crate)).
///
/// It is `ServeBuilder::new(server).routes(routes).registry(registry)`, started
/// and waited for. Use [`ServeBuilder`] for a [`ServeHandle`] (a shutdown
/// without a signal, new rate limits at run time, the registration state) or to
/// serve without a registry.
///
/// # Errors
///
/// [`Error::Config`] naming the key of a bad setting, [`Error::Registry`] for
/// bad registry settings, [`Error::Bind`] when the address cannot be bound,
/// [`Error::Serve`]/[`Error::Task`] when the server fails.
///
/// # Examples
///
/// ```no_run
/// # use std::convert::Infallible;
/// # use tonic::{body::Body, server::NamedService};
/// # async fn run<S>(my_server: S) -> Result<(), server_kit::Error>
/// # where
/// #     S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
/// #         + NamedService + Clone + Send + Sync + 'static,
/// #     S::Future: Send + 'static,
/// # {
/// use registry_actor::RegistryConfig;
/// use server_kit::{RateLimitConfig, ServerConfig};
///
/// let server = ServerConfig::default()
///     .with_listen("127.0.0.1:50051")
///     .with_service("echo")
///     .with_rate_limit(RateLimitConfig::default().with_rps(1000));
/// let registry = RegistryConfig::default().with_endpoints(["127.0.0.1:2379"]);
/// let report = server_kit::serve(my_server, server, registry).await?;
/// println!("{report}");
/// # Ok(()) }
/// ```
pub async fn serve(
    routes: impl Into<Routes>,
    server: ServerConfig,
    registry: RegistryConfig,
) -> Result<ShutdownReport, Error> {
    ServeBuilder::new(server)
        .routes(routes)
        .registry(registry)
        .start()
        .await?
        .wait()
        .await
}

/// Builds a server: services, settings, an optional registry. See the
/// [crate docs](crate) for what starting and shutting down do.
pub struct ServeBuilder<C: LimiterClock = MonotonicClock> {
    config: ServerConfig,
    registry: Option<RegistryConfig>,
    routes: Routes,
    signals: bool,
    clock: C,
    layers: UserLayers,
    options: Option<ServerOptions>,
}

impl ServeBuilder<MonotonicClock> {
    /// A server with `config`, no service yet, no registry, stopped by SIGTERM
    /// and SIGINT.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            registry: None,
            routes: Routes::default(),
            signals: true,
            clock: MonotonicClock,
            layers: UserLayers::default(),
            options: None,
        }
    }
}

impl<C: LimiterClock> ServeBuilder<C> {
    /// Adds a service (default: none; the health service is always added).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(service);
        self
    }

    /// Replaces the services with `routes`.
    pub fn routes(mut self, routes: impl Into<Routes>) -> Self {
        self.routes = routes.into();
        self
    }

    /// Registers the server in this registry once bound (default: no registry,
    /// a standalone server). An empty `server.service` means "do not register"
    /// (logged).
    pub fn registry(mut self, registry: RegistryConfig) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Whether SIGTERM and SIGINT start the shutdown (default `true`). Tests
    /// running several servers in one process turn it off.
    pub fn signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// The clock of the rate limiters (default governor's `MonotonicClock`;
    /// tests use `FakeRelativeClock` for exact counts).
    pub fn clock<C2: LimiterClock>(self, clock: C2) -> ServeBuilder<C2> {
        ServeBuilder {
            config: self.config,
            registry: self.registry,
            routes: self.routes,
            signals: self.signals,
            clock,
            layers: self.layers,
            options: self.options,
        }
    }

    /// Adds a tower layer around the services (default: none). Every call
    /// passes, from the outside in: bearer auth → rate limits → load
    /// shedding → in-flight tracking → the layers added here, the first added outermost → the
    /// service. So a layer sees only admitted calls, its time counts as in
    /// flight for the drain, and it also wraps the health service.
    ///
    /// The layer wraps a [`LayeredService`]; its service may answer any
    /// body and error: an error is answered as the gRPC status it converts
    /// to (`UNKNOWN` with its message unless it is a [`tonic::Status`]).
    pub fn layer<L, S, B>(mut self, layer: L) -> Self
    where
        L: tower::Layer<LayeredService, Service = S> + Send + Sync + 'static,
        S: Service<http::Request<Body>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<tower::BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
        B::Error: Into<tower::BoxError>,
    {
        self.layers.push(layer);
        self
    }

    /// Changes tonic's server builder before the server starts (default: as
    /// tonic makes it): HTTP/2 keepalive, max concurrent
    /// streams, timeouts, frame and window sizes, and so on. For example
    /// `.server_options(|s| s.http2_keepalive_interval(Some(d)).max_concurrent_streams(100))`.
    ///
    /// The kit's own settings come after it: `[server.tls]`, when set,
    /// replaces a TLS configuration made here, and its layers and routes are
    /// added last. Message size limits belong to each generated service
    /// (`EchoServer::new(svc).max_decoding_message_size(n)`), not here.
    pub fn server_options(
        mut self,
        options: impl FnOnce(tonic::transport::Server) -> tonic::transport::Server + Send + 'static,
    ) -> Self {
        self.options = Some(Box::new(options));
        self
    }

    /// Binds, starts serving, then registers; returns once the listener accepts.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad setting (also: `listen` on every interface
    /// without `advertise` when registering),
    /// [`Error::Registry`] for bad registry settings, [`Error::Bind`] when the
    /// address cannot be bound.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub async fn start(self) -> Result<Serving<C>, Error> {
        let Self {
            config,
            registry,
            routes,
            signals,
            clock,
            layers,
            options,
        } = self;
        config.validate()?;
        // Listening from here on: a signal during start-up starts the shutdown
        // as soon as the server runs, instead of killing the process.
        let signals = signals.then(shutdown::Signals::listen);
        let registry = match registry {
            Some(_) if config.service().is_empty() => {
                warn!("server.service is empty: serving without registering");
                None
            }
            other => other,
        };
        if let Some(registry) = &registry {
            registry.validate().map_err(|e| match e {
                registry_actor::Error::Config(invalid) => Error::Config(invalid),
                other => Error::Registry(other),
            })?;
        }
        let limits = RateLimits::with_clock(config.rate_limit(), clock)?;
        let tls = config.tls().load()?;

        let listen = config.listen_addr()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
        let advertised = advertised_addr(&config, local_addr, registry.is_some())?;
        let node_id = if config.node_id().is_empty() {
            advertised.clone()
        } else {
            config.node_id().to_owned()
        };
        // Everything that can fail comes before the server starts.
        let etcd = match &registry {
            Some(registry) => Some((
                node(&config, &node_id, &advertised)?,
                registry_actor::connect(registry).await?,
            )),
            None => None,
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        let (mut services, fallback, names) = routes.into_parts();
        for name in &names {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let watches = DrainSignal::new();
        services.insert(watches.end_watches(health_service));

        let counters = Arc::new(InFlight::new());
        let connections = Arc::new(Connections::new());
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true)).map({
            let connections = connections.clone();
            move |accepted| accepted.map(|stream| connections.wrap(stream))
        });
        let stack = ServiceBuilder::new()
            .layer(BearerAuthLayer::with_callers(config.token(), config.auth()))
            .layer(ObserveLayer::default())
            .layer(RateLimitLayer::new(limits.clone()))
            .layer(Shedder::new(config.shedding()).layer())
            .layer(TrackLayer::new(counters.clone()))
            .into_inner();
        let (goaway, goaway_rx) = oneshot::channel::<()>();
        let mut builder = tonic::transport::Server::builder();
        if let Some(options) = options {
            builder = options(builder);
        }
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(|e| {
                Error::invalid(
                    "server.tls",
                    format!("the certificate, key or client CA is not usable: {e}"),
                )
            })?;
        }
        let server = tokio::spawn(
            builder
                .layer(stack)
                .layer(layers)
                .layer(DispatchLayer::new(services))
                .add_routes(fallback)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = goaway_rx.await;
                }),
        );
        info!(%local_addr, %advertised, services = ?names, "serving");

        let mut background = vec![tokio::spawn(prune_callers(limits.clone())).abort_handle()];
        let (trigger, trigger_rx) = watch::channel(None);
        if let Some(signals) = signals {
            let trigger = trigger.clone();
            background.push(
                tokio::spawn(async move {
                    let name = signals.recv().await;
                    info!(signal = name, "signal received");
                    handle::trigger(&trigger, ShutdownTrigger::Signal(name));
                })
                .abort_handle(),
            );
        }

        // Registration comes last: the listener is bound and serving.
        let (registrar, etcd) = match (&registry, etcd) {
            (Some(registry), Some((node, client))) => {
                let registrar = Arc::new(Registrar::start(client.clone(), node, registry));
                background.push(
                    tokio::spawn(report_registration(
                        registrar.state_changes(),
                        health.clone(),
                    ))
                    .abort_handle(),
                );
                let watch = InstanceWatch::new(
                    client.clone(),
                    registry,
                    config.service(),
                    &node_id,
                    limits.clone(),
                );
                background.push(tokio::spawn(watch.run()).abort_handle());
                (Some(registrar), Some(client))
            }
            _ => (None, None),
        };
        if registry.is_none() && config.rate_limit().cluster_rps() > 0 {
            warn!("server.rate_limit.cluster_rps is set without a registry: this server takes all of it");
        }

        let handle = ServeHandle::new(handle::Inner {
            trigger,
            limits,
            local_addr,
            advertised,
            node_id,
            registry_key: registrar.as_ref().map(|r| r.key().to_owned()),
            registration: registrar.as_ref().map(|r| r.state_changes()),
            registrar: registrar.clone(),
            counters: counters.clone(),
        });
        let driver = shutdown::Shutdown {
            config: config.shutdown().clone(),
            trigger: trigger_rx,
            registrar,
            etcd,
            health,
            names,
            watches,
            goaway: Some(goaway),
            server,
            counters,
            connections,
            background,
        };
        let driver = tokio::spawn(driver.run());
        Ok(Serving {
            handle,
            driver: Some(driver),
        })
    }
}

impl<C: LimiterClock> std::fmt::Debug for ServeBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeBuilder")
            .field("config", &self.config)
            .field("registry", &self.registry)
            .field("routes", &self.routes)
            .field("signals", &self.signals)
            .field("clock", &self.clock)
            .field("layers", &self.layers.len())
            .field("server_options", &self.options.is_some())
            .finish()
    }
}

/// A running server. [`wait`](Self::wait) for its [`ShutdownReport`]; control it
/// through its [`ServeHandle`].
///
/// Dropping it without waiting starts the ordered shutdown, as dropping tonic's
/// serve future stops its server (but here in order, draining): a server is
/// never left running unowned.
#[derive(Debug)]
pub struct Serving<C: LimiterClock = MonotonicClock> {
    handle: ServeHandle<C>,
    driver: Option<tokio::task::JoinHandle<Result<ShutdownReport, Error>>>,
}

impl<C: LimiterClock> Serving<C> {
    /// A handle to control the server.
    pub fn handle(&self) -> ServeHandle<C> {
        self.handle.clone()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Waits until the server has shut down, and returns what the shutdown did.
    ///
    /// # Errors
    ///
    /// [`Error::Serve`] or [`Error::Task`] when the server ended without a
    /// shutdown (it is deregistered all the same).
    pub async fn wait(mut self) -> Result<ShutdownReport, Error> {
        let driver = self
            .driver
            .take()
            .ok_or_else(|| Error::Task("already waited for".into()))?;
        driver
            .await
            .map_err(|e| Error::Task(format!("shutdown task: {e}")))?
    }
}

impl<C: LimiterClock> Drop for Serving<C> {
    fn drop(&mut self) {
        if self.driver.is_some() {
            self.handle.shutdown();
        }
    }
}

/// The node written to the registry.
fn node(config: &ServerConfig, id: &str, addr: &str) -> Result<Node, Error> {
    let mut node = Node::new(id, config.service(), addr)
        .map_err(|e| Error::invalid("server.advertise", e.to_string()))?
        .with_version(config.version())
        .with_group(config.group())
        .with_weight(config.weight())
        .with_zone(config.zone());
    for (k, v) in config.labels() {
        node = node.with_label(k, v);
    }
    Ok(node)
}

/// `host:port` for the registry: `server.advertise` (a host gets the bound
/// port), else the bound address, which must not be every interface when
/// `registering`.
fn advertised_addr(
    config: &ServerConfig,
    local: SocketAddr,
    registering: bool,
) -> Result<String, Error> {
    let port = local.port();
    let Some(advertise) = config.advertise() else {
        if registering && local.ip().is_unspecified() {
            return Err(Error::invalid(
                "server.advertise",
                format!(
                    "required when server.listen binds every interface ({}); \
                     set the host other nodes reach this one at",
                    config.listen()
                ),
            ));
        }
        return Ok(local.to_string());
    };
    if let Some(rest) = advertise.strip_prefix('[') {
        // [v6] or [v6]:port
        return match rest.split_once(']') {
            Some((_, "")) => Ok(format!("{advertise}:{port}")),
            Some((_, p))
                if p.strip_prefix(':')
                    .is_some_and(|p| p.parse::<u16>().is_ok()) =>
            {
                Ok(advertise.to_owned())
            }
            _ => Err(Error::invalid(
                "server.advertise",
                format!("`{advertise}` is not [ipv6] or [ipv6]:port"),
            )),
        };
    }
    match advertise.matches(':').count() {
        0 => Ok(format!("{advertise}:{port}")),
        1 => Ok(advertise.to_owned()),
        _ => Ok(format!("[{advertise}]:{port}")), // a bare IPv6 address
    }
}

/// Prunes idle callers every `prune_interval` (re-read each time: hot reload).
async fn prune_callers<C: LimiterClock>(limits: RateLimits<C>) {
    loop {
        tokio::time::sleep(limits.prune_interval()).await;
        limits.prune();
    }
}

/// The health-service name that reports the node's registration in etcd:
/// `SERVING` while registered, `NOT_SERVING` while registering, retrying,
/// paused or deregistered. Present only when serving with a registry.
pub const REGISTRATION_HEALTH: &str = "grpc-cluster.registration";

/// Follows the registrar's state into the health service.
async fn report_registration(
    mut states: watch::Receiver<RegistrationState>,
    health: HealthReporter,
) {
    loop {
        // Read and release the guard before awaiting: a held guard blocks the
        // registrar.
        let registered = states.borrow_and_update().is_registered();
        let status = if registered {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status(REGISTRATION_HEALTH, status).await;
        if states.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertises_the_bound_port_on_the_configured_host() {
        let local: SocketAddr = "127.0.0.1:4321".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:4321".parse().expect("addr");
        let cases = [
            (ServerConfig::default(), local, Ok("127.0.0.1:4321")),
            (ServerConfig::default(), any, Err("server.advertise")),
            (
                ServerConfig::default().with_advertise("[::1]x"),
                any,
                Err("server.advertise"),
            ),
            (
                ServerConfig::default().with_advertise("10.1.2.3"),
                any,
                Ok("10.1.2.3:4321"),
            ),
            (
                ServerConfig::default().with_advertise("node-a:80"),
                any,
                Ok("node-a:80"),
            ),
            (
                ServerConfig::default().with_advertise("[::1]"),
                any,
                Ok("[::1]:4321"),
            ),
            (
                ServerConfig::default().with_advertise("[::1]:80"),
                any,
                Ok("[::1]:80"),
            ),
            (
                ServerConfig::default().with_advertise("fe80::1"),
                any,
                Ok("[fe80::1]:4321"),
            ),
            (
                ServerConfig::default().with_advertise("[::1]x"),
                any,
                Err("server.advertise"),
            ),
        ];
        let standalone = advertised_addr(&ServerConfig::default(), any, false);
        assert_eq!(
            standalone.ok().as_deref(),
            Some("0.0.0.0:4321"),
            "not registering"
        );
        for (config, local, want) in cases {
            let got = advertised_addr(&config, local, true);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(e), Err(key)) => assert!(e.to_string().contains(key), "{e}"),
                (got, want) => panic!("{config:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
