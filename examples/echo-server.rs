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
//! Flags: `--id`, `--listen`, `--version`, `--group`, `--weight`, `--rps` (global
//! limit, 0 = unlimited), `--config-dir`, `--hang` (accept `Say` calls and
//! never answer them: a node that is up but stuck). Everything else comes from the layered
//! configuration (`config/` or `--config-dir` or `GRPC_CLUSTER_CONFIG_DIR`, then
//! `GRPC_CLUSTER__…` variables): `[registry]` (etcd endpoints, lease TTL) and
//! `[server]` (rate limits, shutdown phases, identity). A flag given on the
//! command line wins over the configuration; without either, the node id is
//! `echo-<pid>`, the service `echo` and the address `127.0.0.1:50051`. The files
//! are watched: an edit of `[server.rate_limit]` applies to the next call.
//!
//! Prints `listening on ADDR as ID` once serving, and the shutdown report when
//! done, followed by `echo totals: processed N, cancelled M` (the service's own
//! counts); exits 0 after a clean graceful shutdown, 1 when the configuration is
//! invalid or serving failed, 2 on a bad flag.

use std::process::ExitCode;

use grpc_cluster::config::ConfigLoader;
use grpc_cluster::echo::EchoService;
use grpc_cluster::server::ServerConfig;
use grpc_cluster::{Serve, ServeError};

const USAGE: &str = "usage: echo-server [--id ID] [--listen IP:PORT] [--version V] [--group G] \
                     [--weight N] [--rps N] [--config-dir DIR] [--hang]";

/// The command line; a flag not given leaves the configured value.
#[derive(Debug, Default)]
struct Flags {
    id: Option<String>,
    listen: Option<String>,
    version: Option<String>,
    group: Option<String>,
    weight: Option<u32>,
    rps: Option<u32>,
    config_dir: Option<String>,
    hang: bool,
}

fn parse_flags(args: impl IntoIterator<Item = String>) -> Result<Flags, String> {
    let mut flags = Flags::default();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (flag.clone(), None),
        };
        if name == "--help" || name == "-h" {
            return Err(USAGE.to_owned());
        }
        if name == "--hang" && inline.is_none() {
            flags.hang = true;
            continue;
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{name} needs a value\n{USAGE}")),
        };
        let number = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("{name}: `{v}` is not a number"))
        };
        match name.as_str() {
            "--id" => flags.id = Some(value),
            "--listen" => flags.listen = Some(value),
            "--version" => flags.version = Some(value),
            "--group" => flags.group = Some(value),
            "--weight" => flags.weight = Some(number(&value)?),
            "--rps" => flags.rps = Some(number(&value)?),
            "--config-dir" => flags.config_dir = Some(value),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    Ok(flags)
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
    let serve = Serve::load(loader)?;
    let id = flags.node_id(&serve.server_config());
    let service = EchoService::new(id.as_str()).with_hang(flags.hang);
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let flags = match parse_flags(std::env::args().skip(1)) {
        Ok(flags) => flags,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(flags).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-server: {e}");
            ExitCode::FAILURE
        }
    }
}
