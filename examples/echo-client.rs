//! `echo-client`: an actix app calling `echo.v1.Echo` through the cluster client
//! (DESIGN §9). It discovers the servers in etcd, picks, and runs the strategy.
//!
//! ```text
//! GRPC_CLUSTER__REGISTRY__ENDPOINTS=127.0.0.1:2379 \
//!     cargo run --example echo-client -- --method say --strategy failover --count 10
//! ```
//!
//! Flags (all optional): `--service` (default `echo`), `--method say|slow|fail`
//! (default `say`; `fail` asks the server for `UNAVAILABLE`), `--strategy
//! failfast|failover|failretry|forking|forking(K)|broadcast|multicast` (default:
//! the configured one), `--balancer NAME`, `--version V` (exact or a range such as
//! `">=1.2, <2"`), `--group G`, `--count N` (default 1), `--concurrency N`
//! (default 1), `--message TEXT` (default `hello`), `--delay-ms N` (for `slow`,
//! default 100), `--timeout-ms N` (default: the configured deadline),
//! `--config-dir DIR` (default `./config` or `GRPC_CLUSTER_CONFIG_DIR`).
//! `broadcast` calls every matching node; `multicast` is a broadcast that needs
//! a selector (`--version` or `--group`).
//!
//! Prints one line per call (node, latency, result), or per node for a
//! broadcast, then `ok=N failed=M`. Exits 0 only when every call (every node, for
//! a broadcast) succeeded; 1 when some failed; 2 on a bad flag or configuration.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::stream::{self, StreamExt};
use grpc_cluster::client::{
    Balancer, Broadcast, Call, CallError, CallOptions, ClusterClient, Reply, Selector, Strategy,
};
use grpc_cluster::config::{ConfigLoader, Settings};
use grpc_cluster::echo::{FailRequest, SayReply, SayRequest, SlowRequest, FAIL, SAY, SLOW};

const USAGE: &str = "usage: echo-client [--service S] [--method say|slow|fail] \
    [--strategy failfast|failover|failretry|forking|forking(K)|broadcast|multicast] \
    [--balancer NAME] [--version V] [--group G] [--count N] [--concurrency N] \
    [--message TEXT] [--delay-ms N] [--timeout-ms N] [--config-dir DIR]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Say,
    Slow,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Call(Option<Strategy>),
    Broadcast,
    Multicast,
}

#[derive(Debug)]
struct Flags {
    service: String,
    method: Method,
    mode: Mode,
    balancer: Option<Balancer>,
    version: Option<String>,
    group: Option<String>,
    count: usize,
    concurrency: usize,
    message: String,
    delay_ms: u64,
    timeout: Option<Duration>,
    config_dir: Option<String>,
}

fn parse_flags(args: impl IntoIterator<Item = String>) -> Result<Flags, String> {
    let mut f = Flags {
        service: "echo".into(),
        method: Method::Say,
        mode: Mode::Call(None),
        balancer: None,
        version: None,
        group: None,
        count: 1,
        concurrency: 1,
        message: "hello".into(),
        delay_ms: 100,
        timeout: None,
        config_dir: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if name == "--help" || name == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: `{v}` is not a number"))
        };
        match name.as_str() {
            "--service" => f.service = value,
            "--method" => {
                f.method = match value.as_str() {
                    "say" => Method::Say,
                    "slow" => Method::Slow,
                    "fail" => Method::Fail,
                    other => return Err(format!("--method: `{other}` is not say, slow or fail")),
                }
            }
            "--strategy" => {
                f.mode = match value.as_str() {
                    "broadcast" => Mode::Broadcast,
                    "multicast" => Mode::Multicast,
                    other => Mode::Call(Some(
                        Strategy::parse(other).map_err(|e| format!("--strategy: {e}"))?,
                    )),
                }
            }
            "--balancer" => {
                f.balancer = Some(value.parse().map_err(|e| format!("--balancer: {e}"))?)
            }
            "--version" => f.version = Some(value),
            "--group" => f.group = Some(value),
            "--count" => f.count = usize::try_from(number(&value)?).map_err(|e| e.to_string())?,
            "--concurrency" => {
                f.concurrency = usize::try_from(number(&value)?)
                    .map_err(|e| e.to_string())?
                    .max(1)
            }
            "--message" => f.message = value,
            "--delay-ms" => f.delay_ms = number(&value)?,
            "--timeout-ms" => f.timeout = Some(Duration::from_millis(number(&value)?)),
            "--config-dir" => f.config_dir = Some(value),
            other => return Err(format!("unknown flag `{other}`\n{USAGE}")),
        }
    }
    if f.mode == Mode::Multicast && f.version.is_none() && f.group.is_none() {
        return Err("--strategy multicast needs a selector: --version or --group".into());
    }
    Ok(f)
}

impl Flags {
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
        if let Mode::Call(Some(strategy)) = self.mode {
            o = o.with_strategy(strategy);
        }
        if let Some(t) = self.timeout {
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
        }
    };
}

/// One call of the chosen method, answered as one printable line.
async fn one_call(
    client: &Addr<ClusterClient>,
    flags: &Flags,
    options: CallOptions,
    i: usize,
) -> (bool, String) {
    let started = Instant::now();
    let message = if flags.count > 1 {
        format!("{} #{i}", flags.message)
    } else {
        flags.message.clone()
    };
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
    let flags = match parse_flags(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
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
        if matches!(flags.mode, Mode::Broadcast | Mode::Multicast) {
            return Some(broadcast(&client, &flags, options).await);
        }
        let flags = &flags;
        let lines = stream::iter(1..=flags.count)
            .map(|i| {
                let (client, options) = (client.clone(), options.clone());
                async move { one_call(&client, flags, options, i).await }
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
