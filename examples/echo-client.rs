//! `echo-client`: an actix app calling `echo.v1.Echo` through the cluster client.
//! It discovers the servers in etcd, picks, and runs the strategy.
//!
//! ```text
//! GRPC_CLUSTER__REGISTRY__ENDPOINTS=127.0.0.1:2379 \
//!     cargo run --example echo-client -- --method say --strategy failover --count 10
//! ```
//!
//! `--api stub` makes the same calls through the generated `EchoClient` over a
//! `ClusterChannel` (the default `--api call` sends `Call` messages to the
//! client actor); `--method count` (a server stream) needs it.
//!
//! `echo-client --help` describes every flag. `broadcast` calls every matching
//! node; `multicast` is a broadcast that needs a selector (`--version` or
//! `--group`), and a selector matching no node is an error naming the versions
//! and groups that exist.
//!
//! Settings come from the layered configuration (`config/` or `--config-dir`,
//! then `GRPC_CLUSTER__…` variables), TLS included: `[client.tls]` (`ca_file`,
//! and `cert_file`/`key_file` for servers requiring client certificates), e.g.
//! `GRPC_CLUSTER__CLIENT__TLS__CA_FILE=ca.pem`; `[registry.tls]` for etcd.
//!
//! With `--metrics-file PATH` the client's metrics (Prometheus text
//! exposition) are written to PATH at exit.
//!
//! Prints one line per call (node, latency, result), or per node for a
//! broadcast, then `ok=N failed=M`. Exits 0 only when every call (every node, for
//! a broadcast) succeeded; 1 when some failed; 2 on a bad flag or configuration.

#[path = "support/cli.rs"]
mod cli;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use actix::prelude::*;
use clap::{Parser, ValueEnum};
use futures_util::stream::{self, StreamExt};
use grpc_cluster::client::{
    Balancer, Broadcast, Call, CallError, CallOptions, CallRecord, ClusterChannel, ClusterClient,
    GetHandle, Reply, Selector, Strategy,
};
use grpc_cluster::config::{ConfigLoader, Settings};
use grpc_cluster::echo::{
    CountRequest, EchoClient, FailRequest, SayReply, SayRequest, SlowRequest, FAIL, SAY, SLOW,
};

/// Every strategy `--strategy` takes: the configuration's names, then the
/// two fan-outs.
macro_rules! strategies {
    () => {
        "failfast, failover, failretry, forking, forking(K), hedging, broadcast, multicast"
    };
}
const STRATEGIES: &str = strategies!();

/// The method of `echo.v1.Echo` to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Method {
    /// Echoes the message back.
    Say,
    /// Echoes the message after `--delay-ms` milliseconds.
    Slow,
    /// Asks the server to fail with `UNAVAILABLE`.
    Fail,
    /// A server stream of `--replies` replies, `--delay-ms` apart (`--api stub`).
    Count,
}

/// How calls reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Api {
    /// `Call` messages to the client actor.
    Call,
    /// The generated `EchoClient` over a `ClusterChannel`.
    Stub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Call(Option<Strategy>),
    Broadcast,
    Multicast,
}

/// Parses a `--strategy` value: one of [`STRATEGIES`].
fn parse_mode(value: &str) -> Result<Mode, String> {
    match value.trim() {
        "broadcast" => Ok(Mode::Broadcast),
        "multicast" => Ok(Mode::Multicast),
        other => Strategy::parse(other)
            .map(|s| Mode::Call(Some(s)))
            .map_err(|_| format!("unknown strategy `{other}`; expected one of {STRATEGIES}")),
    }
}

/// Calls `echo.v1.Echo` through the cluster client: discovers the servers in
/// etcd (`GRPC_CLUSTER__REGISTRY__ENDPOINTS` or the configuration), picks a node
/// and runs the strategy. Prints one line per call (or per node for a
/// broadcast) and `ok=N failed=M`; exits 0 when every call succeeded, 1 when
/// some failed, 2 on a bad flag or configuration.
#[derive(Debug, Parser)]
#[command(name = "echo-client")]
struct Flags {
    /// The service name the servers registered as.
    #[arg(long, value_name = "NAME", default_value = "echo")]
    service: String,
    /// The method to call (`fail` asks the server for `UNAVAILABLE`; `count`
    /// needs `--api stub`).
    #[arg(long, value_enum, default_value_t = Method::Say)]
    method: Method,
    /// How calls are made: `Call` messages, or the generated client over a
    /// `ClusterChannel`.
    #[arg(long, value_enum, default_value_t = Api::Call)]
    api: Api,
    /// With `--method count`: how many replies the server streams.
    #[arg(long, value_name = "N", default_value_t = 3)]
    replies: u32,
    /// How the call is carried out. Default: the configured strategy.
    #[arg(
        long,
        value_name = "STRATEGY",
        value_parser = parse_mode,
        long_help = concat!(
            "How the call is carried out: one of ",
            strategies!(),
            ". broadcast calls every matching node; multicast is a broadcast that needs \
             --version or --group. Default: the configured strategy (client.strategy)"
        )
    )]
    strategy: Option<Mode>,
    /// The balancer picking a node (as in `client.balancer`). Default: the
    /// configured one.
    #[arg(long, value_name = "NAME", value_parser = parse_balancer)]
    balancer: Option<Balancer>,
    /// Only nodes of this version: exact (`1.2.0`) or a range (`">=1.2, <2"`).
    #[arg(long, value_name = "V")]
    version: Option<String>,
    /// Only nodes of this group.
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// How many calls to make.
    #[arg(long, value_name = "N", default_value_t = 1)]
    count: usize,
    /// How many calls run at once (at least 1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    concurrency: usize,
    /// The message sent; with --count above 1 each call appends ` #i`.
    #[arg(long, value_name = "TEXT", default_value = "hello")]
    message: String,
    /// With `--method slow`: how long the server waits before answering; with
    /// `--method count`: the time between replies.
    #[arg(long = "delay-ms", value_name = "N", default_value_t = 100)]
    delay_ms: u64,
    /// The deadline of each call in milliseconds. Default: the configured one.
    #[arg(long = "timeout-ms", value_name = "N")]
    timeout_ms: Option<u64>,
    /// The configuration directory. Default: `GRPC_CLUSTER_CONFIG_DIR`, else
    /// `./config`.
    #[arg(long = "config-dir", value_name = "DIR")]
    config_dir: Option<String>,
    /// Write the client's metrics (Prometheus text exposition) to this file
    /// at exit.
    #[arg(long = "metrics-file", value_name = "PATH")]
    metrics_file: Option<std::path::PathBuf>,
}

fn parse_balancer(value: &str) -> Result<Balancer, String> {
    value.parse().map_err(|e| format!("{e}"))
}

impl Flags {
    fn mode(&self) -> Mode {
        self.strategy.unwrap_or(Mode::Call(None))
    }

    /// The message of call `i`: `--message`, numbered when there are several calls.
    fn message(&self, i: usize) -> String {
        if self.count > 1 {
            format!("{} #{i}", self.message)
        } else {
            self.message.clone()
        }
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }

    fn selector(&self) -> Result<Option<Selector>, String> {
        if self.version.is_none() && self.group.is_none() {
            return Ok(None);
        }
        let mut s = Selector::new();
        if let Some(v) = &self.version {
            s = s.with_version(v).map_err(|e| format!("--version: {e}"))?;
        }
        if let Some(g) = &self.group {
            s = s.with_group(g.clone());
        }
        Ok(Some(s))
    }

    fn options(&self, selector: &Option<Selector>) -> CallOptions {
        let mut o = CallOptions::new();
        if let Mode::Call(Some(strategy)) = self.mode() {
            o = o.with_strategy(strategy);
        }
        if let Some(t) = self.timeout() {
            o = o.with_timeout(t);
        }
        if let Some(s) = selector {
            o = o.with_selector(s.clone());
        }
        o
    }
}

/// Binds `$method` and `$request` to the chosen method's typed descriptor and
/// request, then evaluates `$body` (each method has its own request type).
macro_rules! with_method {
    ($flags:expr, $message:expr, |$method:ident, $request:ident| $body:expr) => {
        match $flags.method {
            Method::Say => {
                let ($method, $request) = (SAY, SayRequest { message: $message });
                $body
            }
            Method::Slow => {
                let $method = SLOW;
                let $request = SlowRequest {
                    message: $message,
                    delay_ms: $flags.delay_ms,
                };
                $body
            }
            Method::Fail => {
                let $method = FAIL;
                let $request = FailRequest {
                    code: tonic::Code::Unavailable as i32,
                    message: $message,
                };
                $body
            }
            // Refused before any call is made: a `Call` is unary.
            Method::Count => unreachable!("--method count needs --api stub"),
        }
    };
}

/// The line of a call that failed with `status` (the cluster's error, when it
/// carries one).
fn failed_line(i: usize, status: &tonic::Status, started: Instant) -> String {
    let error = std::error::Error::source(status).and_then(|e| e.downcast_ref::<CallError>());
    match error {
        Some(e) => {
            let node = e.attempts().last().map_or("-", |a| a.node.id());
            format!(
                "call {i}: node={node} latency={:.3?} failed {e}",
                started.elapsed()
            )
        }
        None => format!(
            "call {i}: node=- latency={:.3?} failed {:?}: {}",
            started.elapsed(),
            status.code(),
            status.message()
        ),
    }
}

/// One call of the chosen method through the generated client, answered as
/// one printable line.
async fn one_stub_call(
    channel: ClusterChannel,
    flags: &Flags,
    options: CallOptions,
    i: usize,
) -> (bool, String) {
    let started = Instant::now();
    let message = flags.message(i);
    let mut stub = EchoClient::new(channel);
    fn with<T>(message: T, options: CallOptions) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(options);
        request
    }
    let unary = match flags.method {
        Method::Say => stub.say(with(SayRequest { message }, options)).await,
        Method::Slow => {
            let request = SlowRequest {
                message,
                delay_ms: flags.delay_ms,
            };
            stub.slow(with(request, options)).await
        }
        Method::Fail => {
            let request = FailRequest {
                code: tonic::Code::Unavailable as i32,
                message,
            };
            stub.fail(with(request, options)).await
        }
        Method::Count => {
            let request = CountRequest {
                message,
                n: flags.replies,
                interval_ms: flags.delay_ms,
            };
            return match stub.count(with(request, options)).await {
                Ok(response) => {
                    let record = response.extensions().get::<CallRecord>().cloned();
                    let mut replies = response.into_inner();
                    let mut got = Vec::new();
                    loop {
                        match replies.message().await {
                            Ok(Some(reply)) => got.push(reply.message),
                            Ok(None) => break,
                            Err(status) => return (false, failed_line(i, &status, started)),
                        }
                    }
                    let (node, attempts) = record.map_or(("-".to_owned(), 0), |r| {
                        (r.node.id().to_owned(), r.attempts.len())
                    });
                    (
                        true,
                        format!(
                            "call {i}: node={node} latency={:.3?} attempts={attempts} ok \
                             message={got:?}",
                            started.elapsed()
                        ),
                    )
                }
                Err(status) => (false, failed_line(i, &status, started)),
            };
        }
    };
    match unary {
        Ok(response) => {
            let record = response.extensions().get::<CallRecord>().cloned();
            let (node, attempts) = record.map_or(("-".to_owned(), 0), |r| {
                (r.node.id().to_owned(), r.attempts.len())
            });
            (
                true,
                format!(
                    "call {i}: node={node} latency={:.3?} attempts={attempts} ok message={:?}",
                    started.elapsed(),
                    response.into_inner().message
                ),
            )
        }
        Err(status) => (false, failed_line(i, &status, started)),
    }
}

/// One call of the chosen method, answered as one printable line.
async fn one_call(
    client: &Addr<ClusterClient>,
    flags: &Flags,
    options: CallOptions,
    i: usize,
) -> (bool, String) {
    let started = Instant::now();
    let message = flags.message(i);
    let service = flags.service.clone();
    let result: Result<Result<Reply<SayReply>, CallError>, MailboxError> =
        with_method!(flags, message, |method, request| {
            client
                .send(Call::new(service, method, request).with_options(options))
                .await
        });
    match result {
        Ok(Ok(reply)) => (
            true,
            format!(
                "call {i}: node={} latency={:.3?} attempts={} ok message={:?}",
                reply.node.id(),
                reply.latency,
                reply.attempts.len(),
                reply.message.message
            ),
        ),
        Ok(Err(e)) => {
            let node = e.attempts().last().map_or("-", |a| a.node.id());
            (
                false,
                format!(
                    "call {i}: node={node} latency={:.3?} failed {e}",
                    started.elapsed()
                ),
            )
        }
        Err(e) => (false, format!("call {i}: failed: the client stopped ({e})")),
    }
}

/// A broadcast of the chosen method, one printed line per node; answers
/// (succeeded, failed) node counts.
async fn broadcast(
    client: &Addr<ClusterClient>,
    flags: &Flags,
    options: CallOptions,
) -> (usize, usize) {
    let service = flags.service.clone();
    let message = flags.message.clone();
    let answer = with_method!(flags, message, |method, request| {
        client
            .send(Broadcast::new(service, method, request).with_options(options))
            .await
    });
    match answer {
        Ok(Ok(reply)) => {
            for n in &reply.nodes {
                match &n.result {
                    Ok(r) => println!(
                        "node={} latency={:.3?} ok message={:?}",
                        n.node.id(),
                        n.latency,
                        r.message
                    ),
                    Err(s) => println!(
                        "node={} latency={:.3?} failed {:?}: {}",
                        n.node.id(),
                        n.latency,
                        s.code(),
                        s.message()
                    ),
                }
            }
            let ok = reply.successes();
            (ok, reply.nodes.len() - ok)
        }
        Ok(Err(e)) => {
            println!("broadcast failed {e}");
            (0, 1)
        }
        Err(e) => {
            println!("broadcast failed: the client stopped ({e})");
            (0, 1)
        }
    }
}

fn main() -> ExitCode {
    let mut flags: Flags = cli::parse();
    flags.concurrency = flags.concurrency.max(1);
    let fan_out = matches!(flags.mode(), Mode::Broadcast | Mode::Multicast);
    if flags.api == Api::Call && flags.method == Method::Count {
        eprintln!("--method count (a server stream) needs --api stub");
        return ExitCode::from(2);
    }
    if flags.api == Api::Stub && fan_out {
        eprintln!(
            "--api stub sends each call to one node: broadcast and multicast need --api call"
        );
        return ExitCode::from(2);
    }
    if flags.mode() == Mode::Multicast && flags.version.is_none() && flags.group.is_none() {
        eprintln!("--strategy multicast needs a selector: --version or --group");
        return ExitCode::from(2);
    }
    cli::init_logs("warn");
    let mut loader = ConfigLoader::from_env();
    if let Some(dir) = &flags.config_dir {
        loader = loader.with_dir(dir);
    }
    let settings: Settings = match loader.load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let selector = match flags.selector() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Installed before the client starts: metric handles bind on first use.
    let wants_metrics =
        flags.metrics_file.is_some() || settings.metrics.listen().is_ok_and(|l| l.is_some());
    let metrics = match wants_metrics.then(|| grpc_cluster::metrics::install(&settings.metrics)) {
        Some(Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
        Some(Ok(m)) => Some(m),
        None => None,
    };
    let metrics_file = flags.metrics_file.clone();
    let mut client_config = settings.client.clone();
    if let Some(b) = flags.balancer {
        client_config = client_config.with_balancer(b);
    }
    let system = System::new();
    let outcome = system.block_on(async move {
        let client = match ClusterClient::connect(&settings.registry, client_config).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return None;
            }
        };
        let options = flags.options(&selector);
        if matches!(flags.mode(), Mode::Broadcast | Mode::Multicast) {
            return Some(broadcast(&client, &flags, options).await);
        }
        let channel = match flags.api {
            Api::Stub => match client.send(GetHandle).await {
                Ok(handle) => Some(handle.channel(flags.service.as_str())),
                Err(e) => {
                    eprintln!("the client stopped: {e}");
                    return None;
                }
            },
            Api::Call => None,
        };
        let flags = &flags;
        let lines = stream::iter(1..=flags.count)
            .map(|i| {
                let (client, options, channel) = (client.clone(), options.clone(), channel.clone());
                async move {
                    match channel {
                        Some(channel) => one_stub_call(channel, flags, options, i).await,
                        None => one_call(&client, flags, options, i).await,
                    }
                }
            })
            .buffered(flags.concurrency);
        let (ok, failed) = lines
            .fold((0, 0), |(ok, failed), (success, line)| async move {
                println!("{line}");
                if success {
                    (ok + 1, failed)
                } else {
                    (ok, failed + 1)
                }
            })
            .await;
        Some((ok, failed))
    });
    if let (Some(path), Some(metrics)) = (&metrics_file, &metrics) {
        if let Err(e) = std::fs::write(path, metrics.render()) {
            eprintln!("cannot write the metrics to {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    match outcome {
        Some((ok, failed)) => {
            println!("ok={ok} failed={failed}");
            if failed == 0 && ok > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        None => ExitCode::from(2),
    }
}
