//! `grpc-cluster`: what is registered, and hands on it, for operators.
//!
//! ```text
//! grpc-cluster services                      every service with nodes in the registry
//! grpc-cluster nodes SERVICE                 its nodes: fields, lease TTL left or `static`
//! grpc-cluster watch SERVICE                 one line per change, until interrupted
//! grpc-cluster register SERVICE --id --addr  writes a static node
//! grpc-cluster deregister SERVICE ID         deletes a static node
//! grpc-cluster health ADDR                   grpc.health.v1 of a server
//! ```
//!
//! Tables for people by default; `--json` prints JSON (one document, or one
//! object per line for `watch`). The registry comes from the layered
//! configuration, as for every part of grpc-cluster (`--config-dir`,
//! `GRPC_CLUSTER__…` variables), `--endpoints` overriding
//! `registry.endpoints`; TLS and credentials from `[registry.tls]`,
//! `registry.username`/`password` and, for `health`, `[client.tls]`.
//! The exit status is 0 on success, 1 on any error (printed on stderr), 2 on
//! bad usage, and 3 when `health` reaches a server that is not serving.
//! Logs go to stderr, errors only unless `RUST_LOG` asks for more
//! (`RUST_LOG=info` shows the configuration files read).

mod args;
mod failure;
mod health;
mod nodes;
mod output;
mod registry;
mod watch;

use std::process::ExitCode;

use clap::Parser;

use args::{Args, Command};
use failure::Failure;

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&Failure::new(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(failure) => fail(&failure),
    }
}

/// Prints `failure` on stderr and answers exit status 1.
fn fail(failure: &Failure) -> ExitCode {
    eprintln!("grpc-cluster: error: {failure}");
    ExitCode::FAILURE
}

async fn run(args: Args) -> Result<ExitCode, Failure> {
    let settings = args.global.settings()?;
    let json = args.global.json;
    match args.command {
        Command::Services => {
            registry::services(&settings.registry, json).await?;
        }
        Command::Nodes { service } => {
            nodes::list(&settings.registry, &service, json).await?;
        }
        Command::Watch { service, count } => {
            watch::run(&settings.registry, &service, count, json).await?;
        }
        Command::Register(node) => {
            registry::register(&settings.registry, node, json).await?;
        }
        Command::Deregister { service, id } => {
            registry::deregister(&settings.registry, &service, &id, json).await?;
        }
        Command::Health { addr, services } => {
            return health::check(&settings.client, &addr, services, json).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
