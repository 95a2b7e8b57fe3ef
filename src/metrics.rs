//! Prometheus metrics: the `[metrics]` section and the recorder every crate's
//! metrics go to.
//!
//! The three crates record through the `metrics` facade (names and labels in
//! [`registry_actor::metrics`]); nothing is recorded until a recorder is
//! installed. [`install`] installs a Prometheus recorder (latency histograms
//! with buckets from 100 µs to 10 s) and, when `[metrics] listen` is set,
//! serves the text exposition at `http://{listen}/metrics` from a thread of
//! its own. Install it before the first call or served request: metric
//! handles are resolved when first used.
//!
//! # Examples
//!
//! ```no_run
//! use grpc_cluster::metrics::MetricsConfig;
//!
//! let metrics = grpc_cluster::metrics::install(
//!     &MetricsConfig::default().with_listen("127.0.0.1:9090"),
//! )?;
//! // … serve and call …
//! println!("{}", metrics.render());
//! # Ok::<(), grpc_cluster::metrics::MetricsError>(())
//! ```

use std::net::SocketAddr;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use registry_actor::config::InvalidValue;
use registry_actor::metrics::LATENCY_BUCKETS;
use serde::{Deserialize, Serialize};

/// `[metrics]`: where the Prometheus exposition is served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    listen: Option<String>,
}

impl MetricsConfig {
    /// Serves `/metrics` on `addr` (`ip:port`; default: not served).
    pub fn with_listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// The address `/metrics` is served on, if any.
    ///
    /// # Errors
    ///
    /// `metrics.listen` is not an `ip:port`.
    pub fn listen(&self) -> Result<Option<SocketAddr>, InvalidValue> {
        let Some(listen) = self.listen.as_deref() else {
            return Ok(None);
        };
        listen.trim().parse().map(Some).map_err(|_| {
            InvalidValue::new(
                "metrics.listen",
                format!("`{listen}` is not an ip:port such as 127.0.0.1:9090"),
            )
        })
    }

    /// Checks every value.
    ///
    /// # Errors
    ///
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        self.listen().map(|_| ())
    }
}

/// Why [`install`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A bad `[metrics]` value.
    #[error(transparent)]
    Config(#[from] InvalidValue),
    /// The listen address could not be bound, or the exporter not built.
    #[error("cannot serve metrics on {addr}: {reason}")]
    Serve {
        /// `metrics.listen`.
        addr: SocketAddr,
        /// What the exporter said.
        reason: String,
    },
    /// A recorder is installed already (one per process).
    #[error("a metrics recorder is installed already")]
    AlreadyInstalled,
    /// The exporter's thread or runtime could not start.
    #[error("cannot start the metrics exporter: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The installed Prometheus recorder.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    listen: Option<SocketAddr>,
}

impl Metrics {
    /// The text exposition of every metric recorded so far.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Where `/metrics` is served, if it is.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen
    }
}

/// Installs the process's Prometheus recorder and, with `metrics.listen`
/// set, serves `/metrics` there; see the [module docs](self).
///
/// # Errors
///
/// A bad `metrics.listen`, an address that cannot be bound, a recorder
/// installed already.
pub fn install(config: &MetricsConfig) -> Result<Metrics, MetricsError> {
    let listen = config.listen()?;
    let builder = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)
        .map_err(|e| MetricsError::Runtime(std::io::Error::other(e.to_string())))?;
    // The exporter and the recorder's upkeep run on a runtime of their own, so
    // they outlive whatever runtime the application stops.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MetricsError::Runtime)?;
    let (recorder, exporter) = {
        let _enter = runtime.enter();
        match listen {
            Some(addr) => {
                let (recorder, exporter) =
                    builder
                        .with_http_listener(addr)
                        .build()
                        .map_err(|e| MetricsError::Serve {
                            addr,
                            reason: e.to_string(),
                        })?;
                (recorder, Some(exporter))
            }
            None => {
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                runtime.spawn(async move {
                    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
                    loop {
                        every.tick().await;
                        handle.run_upkeep();
                    }
                });
                (recorder, None)
            }
        }
    };
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    std::thread::Builder::new()
        .name("metrics-exporter".into())
        .spawn(move || {
            runtime.block_on(async move {
                match exporter {
                    Some(exporter) => {
                        if let Err(e) = exporter.await {
                            tracing::error!(error = ?e, "the metrics exporter stopped");
                        }
                    }
                    None => std::future::pending().await,
                }
            });
        })
        .map_err(MetricsError::Runtime)?;
    if let Some(addr) = listen {
        tracing::info!(%addr, "serving metrics at /metrics");
    }
    Ok(Metrics { handle, listen })
}
