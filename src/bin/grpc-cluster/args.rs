//! The command line.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};
use grpc_cluster::config::{ConfigLoader, Settings};

use crate::failure::Failure;

/// Inspect and operate a grpc-cluster registry and its servers.
#[derive(Debug, Parser)]
#[command(name = "grpc-cluster", version)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options of every command.
#[derive(Debug, ClapArgs)]
pub(crate) struct Global {
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// The configuration directory (default `./config`, or
    /// `GRPC_CLUSTER_CONFIG_DIR`).
    #[arg(long, global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// etcd endpoints, comma-separated `host:port` (overrides
    /// `registry.endpoints`).
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT,...",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
}

impl Global {
    /// The layered configuration, with `--endpoints` applied.
    pub(crate) fn settings(&self) -> Result<Settings, Failure> {
        let mut loader = ConfigLoader::from_env();
        if let Some(dir) = &self.config_dir {
            loader = loader.with_dir(dir);
        }
        let mut settings: Settings = loader.load()?;
        if !self.endpoints.is_empty() {
            settings.registry = settings
                .registry
                .clone()
                .with_endpoints(self.endpoints.iter().map(String::as_str));
            settings.registry.validate()?;
        }
        Ok(settings)
    }
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Lists every service that has nodes in the registry, with their count.
    Services,
    /// Lists the nodes of SERVICE: fields, lease TTL left (or `static`), and
    /// the keys whose value is not a valid node.
    Nodes {
        /// The service.
        service: String,
    },
    /// Prints one line per change of SERVICE's nodes until interrupted.
    Watch {
        /// The service.
        service: String,
        /// Stop after this many changes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Writes a static node (no lease: it stays until deregistered).
    Register(NodeArgs),
    /// Deletes a static node. A node kept by a running server is refused: its
    /// server would write it back; pause or stop that server instead.
    Deregister {
        /// The service.
        service: String,
        /// The node id.
        id: String,
    },
    /// Asks a server's grpc.health.v1 service how it is: the server as a
    /// whole (`""`) and its registration (`grpc-cluster.registration`), or
    /// the services named by `--service`.
    Health {
        /// The server, `host:port`.
        addr: String,
        /// A health-service name to check (repeatable).
        #[arg(long = "service", value_name = "NAME")]
        services: Vec<String>,
    },
}

/// The node `register` writes.
#[derive(Debug, ClapArgs)]
pub(crate) struct NodeArgs {
    /// The service.
    pub(crate) service: String,
    /// The node id, unique within the service.
    #[arg(long)]
    pub(crate) id: String,
    /// The address clients dial, `host:port`.
    #[arg(long)]
    pub(crate) addr: String,
    /// The version.
    #[arg(long, default_value = "")]
    pub(crate) version: String,
    /// The group.
    #[arg(long, default_value = "")]
    pub(crate) group: String,
    /// The zone.
    #[arg(long, default_value = "")]
    pub(crate) zone: String,
    /// The weight (0 = never picked by weighted balancers).
    #[arg(long, default_value_t = registry_actor::DEFAULT_WEIGHT)]
    pub(crate) weight: u32,
    /// A label `key=value` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub(crate) labels: Vec<(String, String)>,
    /// Overwrite a node already registered under this id.
    #[arg(long)]
    pub(crate) replace: bool,
}

fn parse_label(label: &str) -> Result<(String, String), String> {
    match label.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{label}` is not key=value")),
    }
}
