//! `echo-server`: serves the example service `echo.v1.Echo` through
//! [`grpc_cluster::Serve`], the entry point of `grpc_cluster::serve` with the
//! flags as overrides: rate limits, etcd registration, health, and the ordered
//! graceful shutdown on SIGTERM/SIGINT.
//!
//! ```text
//! GRPC_CLUSTER__REGISTRY__ENDPOINTS=127.0.0.1:2379 \
//!     cargo run --example echo-server -- --id echo-1 --listen 127.0.0.1:50051 --rps 100
//! ```
//!
//! `echo-server --help` describes every flag. Everything else comes from the
//! layered configuration (`config/` or `--config-dir` or
//! `GRPC_CLUSTER_CONFIG_DIR`, then `GRPC_CLUSTER__…` variables): `[registry]`
//! (etcd endpoints, lease TTL) and `[server]` (rate limits, shutdown phases,
//! identity). A flag given on the command line wins over the configuration;
//! without either, the node id is `echo-<pid>`, the service `echo` and the
//! address `127.0.0.1:50051`. The files are watched: an edit of
//! `[server.rate_limit]` applies to the next call.
//!
//! TLS comes from the same layers: `[server.tls]` (`cert_file`, `key_file`, and
//! `client_ca_file` to require client certificates), e.g.
//! `GRPC_CLUSTER__SERVER__TLS__CERT_FILE=server.pem`; `[registry.tls]` and
//! `registry.username`/`password` for etcd. The README's "TLS" section makes
//! the certificates.
//!
//! With `--metrics-listen IP:PORT` (or `metrics.listen`) the Prometheus text
//! exposition of the server's metrics is served at `http://IP:PORT/metrics`.
//!
//! Prints `listening on ADDR as ID` once serving, `registered in etcd as ID`
//! once its registration is in etcd, and the shutdown report when
//! done, followed by `echo totals: processed N, cancelled M` (the service's own
//! counts); exits 0 after a clean graceful shutdown, 1 when the configuration is
//! invalid or serving failed, 2 on a bad flag.

#[path = "support/cli.rs"]
mod cli;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use grpc_cluster::config::ConfigLoader;
use grpc_cluster::echo::EchoService;
use grpc_cluster::metrics::MetricsConfig;
use grpc_cluster::server::ServerConfig;
use grpc_cluster::{Serve, ServeError};

/// Serves `echo.v1.Echo` and registers it in etcd (`GRPC_CLUSTER__REGISTRY__ENDPOINTS`
/// or the configuration). Prints `listening on ADDR as ID` once serving and
/// `registered in etcd as ID` once registered; on SIGTERM/SIGINT shuts down in
/// order and prints the report. Exits 0 after a clean shutdown, 1 on a bad
/// configuration or a serving failure, 2 on a bad flag.
///
/// A flag not given leaves the configured value (`[server]`).
#[derive(Debug, Default, Parser)]
#[command(name = "echo-server")]
struct Flags {
    /// The node id registered in etcd. Default: `server.node_id`, else `echo-<pid>`.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// The address to serve on; port 0 picks a free one. Default:
    /// `server.listen`, else `127.0.0.1:50051`.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// The version registered (semver), matched by clients' `--version`.
    #[arg(long, value_name = "V")]
    version: Option<String>,
    /// The group registered, matched by clients' `--group`.
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// The weight registered, used by weighted balancers.
    #[arg(long, value_name = "N")]
    weight: Option<u32>,
    /// The global rate limit in calls per second; 0 is unlimited.
    #[arg(long, value_name = "N")]
    rps: Option<u32>,
    /// The configuration directory. Default: `GRPC_CLUSTER_CONFIG_DIR`, else
    /// `./config`.
    #[arg(long = "config-dir", value_name = "DIR")]
    config_dir: Option<String>,
    /// Accept `Say` calls and never answer them: a node that is up but stuck.
    #[arg(long)]
    hang: bool,
    /// Work on at most N `Slow` calls at once; the others wait in line in the
    /// handler (a server with a capacity its load can exceed).
    #[arg(long = "slow-capacity", value_name = "N")]
    slow_capacity: Option<usize>,
    /// Serve the Prometheus metrics at `http://ADDR/metrics`. Default:
    /// `metrics.listen`, else not served.
    #[arg(long = "metrics-listen", value_name = "IP:PORT")]
    metrics_listen: Option<String>,
}

impl Flags {
    /// The node id: `--id`, else `server.node_id`, else `echo-<pid>`.
    fn node_id(&self, configured: &ServerConfig) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None if configured.node_id().is_empty() => format!("echo-{}", std::process::id()),
            None => configured.node_id().to_owned(),
        }
    }

    /// The loaded `[server]` settings with the flags given put over them, and
    /// the service `echo` when none is configured.
    fn apply(&self, mut config: ServerConfig, id: &str) -> ServerConfig {
        if config.service().is_empty() {
            config = config.with_service("echo");
        }
        config = config.with_node_id(id);
        if let Some(listen) = &self.listen {
            config = config.with_listen(listen);
        }
        if let Some(version) = &self.version {
            config = config.with_version(version);
        }
        if let Some(group) = &self.group {
            config = config.with_group(group);
        }
        if let Some(weight) = self.weight {
            config = config.with_weight(weight);
        }
        if let Some(rps) = self.rps {
            let limits = config.rate_limit().clone().with_rps(rps);
            config = config.with_rate_limit(limits);
        }
        config
    }
}

async fn run(flags: Flags) -> Result<(), ServeError> {
    let mut loader = ConfigLoader::from_env();
    if let Some(dir) = &flags.config_dir {
        loader = loader.with_dir(dir);
    }
    let mut serve = Serve::load(loader)?;
    if let Some(listen) = &flags.metrics_listen {
        serve = serve.with_metrics(MetricsConfig::default().with_listen(listen));
    }
    let id = flags.node_id(&serve.server_config());
    let mut service = EchoService::new(id.as_str()).with_hang(flags.hang);
    if let Some(n) = flags.slow_capacity {
        service = service.with_slow_capacity(n);
    }
    let stats = service.stats();
    let overrides = {
        let id = id.clone();
        move |config| flags.apply(config, &id)
    };
    let serving = serve
        .with_overrides(overrides)
        .start(service.into_server())
        .await?;
    println!("listening on {} as {id}", serving.local_addr());
    if let Some(mut states) = serving.handle().registration_changes() {
        let id = id.clone();
        tokio::spawn(async move {
            if states.wait_for(|s| s.is_registered()).await.is_ok() {
                // Nobody may be reading any more: not worth a panic.
                let _ = writeln!(std::io::stdout(), "registered in etcd as {id}");
            }
        });
    }
    let report = serving.wait().await?;
    println!("{report}");
    // What the service itself counted, for tests that reconcile it with clients.
    println!(
        "echo totals: processed {}, cancelled {}",
        stats.processed(),
        stats.cancelled()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags: Flags = cli::parse();
    cli::init_logs("info");
    match run(flags).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-server: {e}");
            ExitCode::FAILURE
        }
    }
}
