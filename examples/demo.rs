//! The grpc-cluster demo: one command, a private cluster, a readable report.
//!
//! Starts a private etcd on free loopback ports and `echo-server` processes (two
//! `1.0.0` in group `blue`, two `2.0.0` in group `green`), then shows with real,
//! measured numbers: balancing, version routing, multicast, broadcast, failover
//! while a server is killed, rate limiting with pushback, a hung server worked
//! around by hedging and by attempt timeouts, a graceful shutdown under load,
//! one hop over mutual TLS (certificates made at start), an overload shed by
//! a server's adaptive limit, and a zone failing over to another, and ends
//! with the client's own counters from its metrics. Everything it started is
//! stopped at the end, also on Ctrl-C or a failure.
//!
//! Each section checks what it shows (every call answered, only the selected
//! nodes, no failed call while a server is killed or shuts down, refusals
//! with a pushback) and prints `check: …: held` or `FAILED`. The exit status
//! is 0 only when every check held; otherwise 1, naming the failed checks.
//!
//! Run it with `scripts/demo` (which installs etcd and protoc when missing and
//! builds the examples in release mode, so its numbers are the bench's kind),
//! or `cargo build --release --examples && cargo run --release --example demo`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::stream::{self, StreamExt};
use grpc_cluster::client::{
    Broadcast, Call, CallOptions, ClientConfig, ClusterClient, Locality, Selector, ServiceStatus,
    Strategy,
};
use grpc_cluster::echo::{SayRequest, SlowRequest, SAY, SLOW};
use grpc_cluster::metrics::MetricsConfig;
use grpc_cluster::registry::RegistryConfig;
use registry_actor::testing::{EtcdServer, TestCa};
use registry_actor::TlsConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

type Result<T> = std::result::Result<T, String>;

/// An `echo-server` process; killed (SIGKILL) if still running when dropped.
struct Server {
    id: String,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(etcd: &str, id: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(etcd, id, extra, &[]).await
    }

    /// As [`start`](Self::start), with more `GRPC_CLUSTER__…` settings.
    async fn start_with_env(
        etcd: &str,
        id: &str,
        extra: &[&str],
        env: &[(&str, &OsStr)],
    ) -> Result<Self> {
        let bin = example_binary("echo-server")?;
        let mut child = Command::new(&bin)
            .args(["--id", id, "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .env("GRPC_CLUSTER__REGISTRY__ENDPOINTS", etcd)
            .env("GRPC_CLUSTER__REGISTRY__LEASE_TTL", "2s")
            .env("GRPC_CLUSTER__SERVER__SHUTDOWN__LAME_DUCK", "1s")
            .env("GRPC_CLUSTER__SERVER__SHUTDOWN__DRAIN_TIMEOUT", "5s")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            let sink = output.clone();
            actix::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut all) = sink.lock() {
                        all.push(line);
                    }
                }
            });
        }
        let server = Self {
            id: id.to_owned(),
            child,
            output,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.said("listening on") {
            if Instant::now() > deadline {
                return Err(format!("{id} did not start within 20 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(server)
    }

    fn said(&self, what: &str) -> bool {
        self.output
            .lock()
            .map(|o| o.iter().any(|l| l.contains(what)))
            .unwrap_or(false)
    }

    fn pid(&self) -> Result<u32> {
        self.child
            .id()
            .ok_or_else(|| format!("{} has no pid", self.id))
    }

    fn sigterm(&self) -> Result<()> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid()?.to_string()])
            .status()
            .map_err(|e| format!("kill -TERM: {e}"))?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("kill -TERM {} failed", self.id))
    }

    /// Waits for the process to exit; answers its exit code and its output.
    async fn exited(&mut self, within: Duration) -> Result<(Option<i32>, Vec<String>)> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .map_err(|_| format!("{} did not exit within {within:?}", self.id))?
            .map_err(|e| format!("waiting for {}: {e}", self.id))?;
        // Let the reader take the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let lines = self.output.lock().map(|o| o.clone()).unwrap_or_default();
        Ok((status.code(), lines))
    }
}

fn example_binary(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me.parent().ok_or("no directory for the demo binary")?;
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is not built; run `cargo build --examples` (scripts/demo does)",
            path.display()
        ))
    }
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn step(what: &str) {
    println!("   .. {what}");
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// What the demo claims in each section, and which claims did not hold.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    /// Records `claim`, printed under its section as held or not.
    fn expect(&mut self, held: bool, claim: &str) {
        if held {
            println!("   check: {claim}: held");
        } else {
            println!("   check: {claim}: FAILED");
            self.failed.push(claim.to_owned());
        }
    }
}

/// The outcome of a batch of calls.
#[derive(Default)]
struct Batch {
    per_node: BTreeMap<String, usize>,
    latencies: Vec<Duration>,
    ok: usize,
    failed: BTreeMap<String, usize>,
    retried: usize,
}

impl Batch {
    fn failures(&self) -> usize {
        self.failed.values().sum()
    }

    /// Whether every call was answered by a node of `allowed`.
    fn only_on(&self, allowed: &[&str]) -> bool {
        self.per_node.keys().all(|n| allowed.contains(&n.as_str()))
    }

    fn line(&self) -> String {
        let nodes: Vec<String> = self
            .per_node
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect();
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(c, n)| format!("{n} {c}"))
            .collect();
        format!(
            "ok={} failed={}{} | per node {} | p50 {:.2?} p99 {:.2?}",
            self.ok,
            self.failed.values().sum::<usize>(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(" ({})", failed.join(", "))
            },
            nodes.join(", "),
            percentile(self.latencies.clone(), 0.5),
            percentile(self.latencies.clone(), 0.99),
        )
    }
}

/// Sends `count` Say calls, `concurrency` at a time; `on_done(n)` runs after
/// each `n`-th completion (to inject a fault mid-load).
async fn say_batch(
    client: &Addr<ClusterClient>,
    count: usize,
    concurrency: usize,
    options: CallOptions,
    mut on_done: impl FnMut(usize),
) -> Batch {
    let mut batch = Batch::default();
    let mut calls = stream::iter(0..count)
        .map(|i| {
            let (client, options) = (client.clone(), options.clone());
            async move {
                let call = Call::new(
                    "echo",
                    SAY,
                    SayRequest {
                        message: format!("m{i}"),
                    },
                )
                .with_options(options);
                client.send(call).await
            }
        })
        .buffer_unordered(concurrency);
    let mut done = 0;
    while let Some(answer) = calls.next().await {
        done += 1;
        match answer {
            Ok(Ok(reply)) => {
                batch.ok += 1;
                *batch
                    .per_node
                    .entry(reply.node.id().to_owned())
                    .or_default() += 1;
                batch.latencies.push(reply.latency);
                batch.retried += usize::from(reply.attempts.len() > 1);
            }
            Ok(Err(e)) => {
                if std::env::var_os("DEMO_DEBUG").is_some() {
                    eprintln!("failed: {e}");
                }
                *batch.failed.entry(format!("{:?}", e.code())).or_default() += 1
            }
            Err(e) => {
                *batch
                    .failed
                    .entry(format!("client stopped: {e}"))
                    .or_default() += 1
            }
        }
        on_done(done);
    }
    batch
}

/// A client of `registry` with `config`, once it lists `n` nodes of `echo`,
/// none ejected; with how long that took.
async fn client_seeing(
    registry: &RegistryConfig,
    config: ClientConfig,
    n: usize,
) -> Result<(Addr<ClusterClient>, Duration)> {
    let client = ClusterClient::connect(registry, config)
        .await
        .map_err(|e| e.to_string())?;
    let seen = wait_nodes(&client, n).await?;
    Ok((client, seen))
}

async fn wait_nodes(client: &Addr<ClusterClient>, n: usize) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(Ok(status)) = client.send(ServiceStatus("echo".into())).await {
            if status.nodes.len() == n && status.ejected() == 0 {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!("the client did not see {n} nodes within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn options(strategy: Strategy) -> CallOptions {
    CallOptions::new().with_strategy(strategy)
}

async fn demo() -> Result<()> {
    println!(
        "grpc-cluster demo: a private etcd, echo servers as real processes, one cluster client."
    );
    section("Setting up");
    // Before the client starts: metric handles bind to the recorder on first use.
    let metrics = grpc_cluster::metrics::install(&MetricsConfig::default())
        .map_err(|e| format!("metrics: {e}"))?;
    let started = Instant::now();
    let etcd = EtcdServer::start()
        .await
        .map_err(|e| format!("etcd: {e}"))?;
    let endpoint = etcd.endpoint();
    step(&format!(
        "private etcd on {endpoint} ready in {:.2?}",
        started.elapsed()
    ));
    let mut servers = Vec::new();
    for (id, version, group) in [
        ("echo-1", "1.0.0", "blue"),
        ("echo-2", "1.0.0", "blue"),
        ("echo-3", "2.0.0", "green"),
        ("echo-4", "2.0.0", "green"),
    ] {
        let t = Instant::now();
        servers
            .push(Server::start(&endpoint, id, &["--version", version, "--group", group]).await?);
        step(&format!(
            "{id} (version {version}, group {group}) serving in {:.2?}",
            t.elapsed()
        ));
    }
    let registry = RegistryConfig::default()
        .with_endpoints([endpoint.clone()])
        .with_lease_ttl(Duration::from_secs(2));
    let config = ClientConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_caller("demo")
        // Hedging (used where a call asks for it): a new attempt every 20 ms.
        .with_hedging(Duration::from_millis(20), 3, [tonic::Code::Unavailable])
        // Room for the extra attempts of the hung-server section.
        .with_budget(0.5, 20);
    let (client, seen) = client_seeing(&registry, config, 4).await?;
    step(&format!("cluster client discovered 4 nodes in {seen:.2?}"));
    let mut checks = Checks::default();

    section("Balancing: 400 Say calls, round_robin, 8 at a time");
    let b = say_batch(&client, 400, 8, options(Strategy::Failfast), |_| {}).await;
    println!("   {}", b.line());
    checks.expect(
        b.failures() == 0 && b.per_node.len() == 4,
        "every call answered, by all 4 nodes",
    );

    section("Version routing: 200 calls with version \">=2, <3\"");
    let v2 = Selector::new()
        .with_version(">=2, <3")
        .map_err(|e| e.to_string())?;
    let b = say_batch(
        &client,
        200,
        8,
        options(Strategy::Failfast).with_selector(v2),
        |_| {},
    )
    .await;
    println!("   {}", b.line());
    checks.expect(
        b.failures() == 0 && b.only_on(&["echo-3", "echo-4"]),
        "every call answered by a 2.x node",
    );

    section("Multicast to group blue");
    let blue = CallOptions::new().with_selector(Selector::new().with_group("blue"));
    let m = client
        .send(
            Broadcast::new(
                "echo",
                SAY,
                SayRequest {
                    message: "blue only".into(),
                },
            )
            .with_options(blue),
        )
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    for n in &m.nodes {
        println!(
            "   node={} latency={:.2?} {}",
            n.node.id(),
            n.latency,
            if n.result.is_ok() { "ok" } else { "failed" }
        );
    }
    let mut blue: Vec<&str> = m.nodes.iter().map(|n| n.node.id()).collect();
    blue.sort_unstable();
    checks.expect(
        m.nodes.iter().all(|n| n.result.is_ok()) && blue == ["echo-1", "echo-2"],
        "echo-1 and echo-2 (group blue) answered, no other node",
    );

    section("Broadcast: Slow(100 ms) to every node at once");
    let slow = SlowRequest {
        message: "everyone".into(),
        delay_ms: 100,
    };
    let b = client
        .send(Broadcast::new("echo", SLOW, slow))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    for n in &b.nodes {
        println!(
            "   node={} latency={:.2?} {}",
            n.node.id(),
            n.latency,
            if n.result.is_ok() { "ok" } else { "failed" }
        );
    }
    println!(
        "   {} of {} answered; the whole broadcast took {:.2?} (one call is 100 ms: they ran in parallel)",
        b.successes(),
        b.nodes.len(),
        b.latency
    );
    checks.expect(
        b.nodes.len() == 4 && b.successes() == 4,
        "all 4 nodes answered",
    );

    section("Failover while a server is killed: 2000 Say calls, failover, 16 at a time; kill -9 echo-2 after 400");
    let victim = Arc::new(Mutex::new(None::<u32>));
    if let Some(s) = servers.iter().find(|s| s.id == "echo-2") {
        *victim.lock().map_err(|_| "lock")? = Some(s.pid()?);
    }
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let (v, k) = (victim.clone(), killed_at.clone());
    let b = say_batch(
        &client,
        2000,
        16,
        options(Strategy::Failover),
        move |done| {
            if done == 400 {
                if let Ok(Some(pid)) = v.lock().map(|p| *p) {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                    if let Ok(mut k) = k.lock() {
                        *k = Some(Instant::now());
                    }
                }
            }
        },
    )
    .await;
    println!("   {}", b.line());
    println!(
        "   {} calls met the dead server and succeeded on another node",
        b.retried
    );
    checks.expect(b.failures() == 0, "no call failed while echo-2 was killed");
    if let Some(pos) = servers.iter().position(|s| s.id == "echo-2") {
        let mut dead = servers.remove(pos);
        let (code, _) = dead.exited(Duration::from_secs(5)).await?;
        println!(
            "   echo-2 exit status: {} (killed)",
            code.map_or("signal".to_owned(), |c| c.to_string())
        );
    }

    section(
        "Rate limiting with pushback: echo-5 limited to 20 calls/s, 100 calls as fast as they go",
    );
    let mut limited = Server::start(
        &endpoint,
        "echo-5",
        &["--version", "1.0.0", "--group", "limited", "--rps", "20"],
    )
    .await?;
    wait_node(&client, "echo-5").await?;
    let only = CallOptions::new()
        .with_strategy(Strategy::Failfast)
        .with_selector(Selector::new().with_group("limited"));
    let mut admitted = 0;
    let mut pushbacks = Vec::new();
    let mut other = 0;
    for i in 0..100 {
        let call = Call::new(
            "echo",
            SAY,
            SayRequest {
                message: format!("r{i}"),
            },
        )
        .with_options(only.clone());
        match client.send(call).await.map_err(|e| e.to_string())? {
            Ok(_) => admitted += 1,
            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                let status: tonic::Status = e.into();
                let ms = status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                pushbacks.push(ms.map(Duration::from_millis).unwrap_or_default());
            }
            Err(_) => other += 1,
        }
    }
    println!(
        "   admitted {admitted}, refused RESOURCE_EXHAUSTED {}, other errors {other}; pushback p50 {:.0?}, max {:.0?}",
        pushbacks.len(),
        percentile(pushbacks.clone(), 0.5),
        percentile(pushbacks.clone(), 1.0)
    );
    checks.expect(
        admitted > 0
            && !pushbacks.is_empty()
            && other == 0
            && pushbacks.iter().all(|p| !p.is_zero()),
        "calls over the limit refused with RESOURCE_EXHAUSTED and a pushback, the rest admitted",
    );
    limited.sigterm()?;
    limited.exited(Duration::from_secs(15)).await?;

    hung_server(&client, &endpoint, &mut checks).await?;

    section("Graceful shutdown under load: 800 Slow(20 ms) calls, failfast, 16 at a time; SIGTERM echo-1 after 200");
    let pid = servers
        .iter()
        .find(|s| s.id == "echo-1")
        .map(Server::pid)
        .transpose()?;
    let mut sent_term = false;
    let mut calls = stream::iter(0..800)
        .map(|i| {
            let client = client.clone();
            async move {
                let request = SlowRequest {
                    message: format!("s{i}"),
                    delay_ms: 20,
                };
                client
                    .send(
                        Call::new("echo", SLOW, request).with_options(options(Strategy::Failfast)),
                    )
                    .await
            }
        })
        .buffer_unordered(16);
    let (mut ok, mut failed, mut done) = (0usize, 0usize, 0usize);
    let mut on_victim = 0usize;
    while let Some(answer) = calls.next().await {
        done += 1;
        match answer {
            Ok(Ok(reply)) => {
                ok += 1;
                on_victim += usize::from(reply.node.id() == "echo-1");
            }
            _ => failed += 1,
        }
        if done == 200 && !sent_term {
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
                sent_term = true;
            }
        }
    }
    println!("   ok={ok} failed={failed}; echo-1 answered {on_victim} of them before it left");
    checks.expect(failed == 0, "no call failed while echo-1 shut down");
    if let Some(pos) = servers.iter().position(|s| s.id == "echo-1") {
        let mut leaving = servers.remove(pos);
        let (code, lines) = leaving.exited(Duration::from_secs(20)).await?;
        println!(
            "   echo-1 exited with status {}; its shutdown report:",
            code.map_or("signal".to_owned(), |c| c.to_string())
        );
        for line in lines.iter().skip_while(|l| !l.contains("shutdown")) {
            println!("     | {line}");
        }
        checks.expect(
            code == Some(0),
            "echo-1 exited 0 after its graceful shutdown",
        );
    }

    tls_hop(&etcd, &mut checks).await?;
    overload_shed(&etcd, &mut checks).await?;
    zone_failover(&etcd, &mut checks).await?;

    section("Summary");
    println!("   every section above ran against real processes over loopback and a real etcd.");
    let exposition = metrics.render();
    step("the client's own counters (its Prometheus metrics):");
    for (family, label) in [
        ("grpc_cluster_client_calls_total", "code"),
        ("grpc_cluster_client_attempts_total", "kind"),
        ("grpc_cluster_client_ejections_total", "service"),
        ("grpc_cluster_client_budget_exhausted_total", "service"),
    ] {
        let totals = totals_by(&exposition, family, label);
        let text: Vec<String> = totals.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "     {family} by {label}: {}",
            if text.is_empty() {
                "none".to_owned()
            } else {
                text.join(" ")
            }
        );
    }
    drop(servers);
    drop(etcd);
    if checks.failed.is_empty() {
        println!("   every check held.");
        Ok(())
    } else {
        Err(format!(
            "{} check(s) failed: {}",
            checks.failed.len(),
            checks.failed.join("; ")
        ))
    }
}

/// One hop over mutual TLS: an `echo-server` with a certificate from a CA made
/// here, requiring client certificates (`[server.tls]` from the environment),
/// registered under its own prefix; a cluster client with `[client.tls]` calls
/// it, and one without a certificate is refused.
async fn tls_hop(etcd: &EtcdServer, checks: &mut Checks) -> Result<()> {
    section("TLS: 200 Say calls over mutual TLS, failfast, 8 at a time");
    let ca = TestCa::new(&etcd.data_dir().join("demo-certs"), "demo-ca");
    let cert = ca.server();
    let client_cert = ca.leaf("demo-client", &["demo.client"]);
    let prefix = "/grpc-cluster/tls-demo";
    let env: [(&str, &OsStr); 4] = [
        ("GRPC_CLUSTER__REGISTRY__PREFIX", prefix.as_ref()),
        (
            "GRPC_CLUSTER__SERVER__TLS__CERT_FILE",
            cert.cert.as_os_str(),
        ),
        ("GRPC_CLUSTER__SERVER__TLS__KEY_FILE", cert.key.as_os_str()),
        (
            "GRPC_CLUSTER__SERVER__TLS__CLIENT_CA_FILE",
            ca.ca_file.as_os_str(),
        ),
    ];
    let t = Instant::now();
    let _server = Server::start_with_env(&etcd.endpoint(), "echo-tls", &[], &env).await?;
    step(&format!(
        "echo-tls serving over TLS (client certificates required) in {:.2?}",
        t.elapsed()
    ));
    let registry = RegistryConfig::default()
        .with_endpoints([etcd.endpoint()])
        .with_prefix(prefix);
    let trust = TlsConfig::default().with_ca_file(&ca.ca_file);
    let config = ClientConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_tls(
            trust
                .clone()
                .with_identity(&client_cert.cert, &client_cert.key),
        );
    let (client, _) = client_seeing(&registry, config, 1).await?;
    let b = say_batch(&client, 200, 8, options(Strategy::Failfast), |_| {}).await;
    println!("   {}", b.line());
    checks.expect(b.failures() == 0, "every call over mutual TLS succeeded");

    let config = ClientConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_tls(trust);
    let (anonymous, _) = client_seeing(&registry, config, 1).await?;
    let hello = SayRequest {
        message: "hello".into(),
    };
    let call = Call::new("echo", SAY, hello).with_options(options(Strategy::Failfast));
    let refused = match anonymous.send(call).await {
        Ok(Ok(reply)) => {
            println!(
                "   {} answered a client without a certificate",
                reply.node.id()
            );
            false
        }
        Ok(Err(e)) => {
            println!(
                "   a client without a certificate is refused: {:?}",
                e.code()
            );
            true
        }
        Err(e) => return Err(format!("the client stopped: {e}")),
    };
    checks.expect(refused, "a client without a certificate was refused");
    Ok(())
}

/// The samples of `family` in a text exposition, summed by the value of `label`.
fn totals_by(exposition: &str, family: &str, label: &str) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    let key = format!("{label}=\"");
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(family).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        let of = rest
            .split_once(&key)
            .and_then(|(_, v)| v.split_once('"'))
            .map(|(v, _)| v);
        if let (Some(of), Some(value)) = (of, value) {
            // Counters are whole numbers.
            *totals.entry(of.to_owned()).or_insert(0) += value as u64;
        }
    }
    totals
}

/// Adaptive shedding: an `echo-server` whose `Slow` handler works on 4 calls
/// at once (40 calls/s at 100 ms each), with `[server.shedding]` on and no
/// rate limit, gets 800 calls at 400 a second for 2 s, each with a 1 s
/// deadline: 10 times what it can serve. It answers what it can in time and
/// refuses the rest at once, instead of queueing every call past its
/// deadline.
async fn overload_shed(etcd: &EtcdServer, checks: &mut Checks) -> Result<()> {
    section("Overload: 800 Slow calls (100 ms) at 400/s to a server that serves 4 at a time (40/s), shedding on");
    let prefix = "/grpc-cluster/shed-demo";
    let env: [(&str, &OsStr); 2] = [
        ("GRPC_CLUSTER__REGISTRY__PREFIX", prefix.as_ref()),
        ("GRPC_CLUSTER__SERVER__SHEDDING__ENABLED", "true".as_ref()),
    ];
    let _server = Server::start_with_env(
        &etcd.endpoint(),
        "echo-busy",
        &["--slow-capacity", "4"],
        &env,
    )
    .await?;
    let registry = RegistryConfig::default()
        .with_endpoints([etcd.endpoint()])
        .with_prefix(prefix);
    let (client, _) = client_seeing(&registry, ClientConfig::default(), 1).await?;
    let once = CallOptions::new()
        .with_strategy(Strategy::Failfast)
        .with_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let mut calls = stream::iter(0..800u32)
        .map(|i| {
            let (client, once) = (client.clone(), once.clone());
            async move {
                // The load's schedule: call i starts at i × 2.5 ms.
                tokio::time::sleep_until((started + Duration::from_micros(2500) * i).into()).await;
                let slow = SlowRequest {
                    message: format!("o{i}"),
                    delay_ms: 100,
                };
                client
                    .send(Call::new("echo", SLOW, slow).with_options(once))
                    .await
            }
        })
        .buffer_unordered(800);
    let (mut answered, mut latencies) = (0usize, Vec::new());
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(answer) = calls.next().await {
        match answer.map_err(|e| e.to_string())? {
            Ok(reply) => {
                answered += 1;
                latencies.push(reply.latency);
            }
            Err(e) => *refused.entry(format!("{:?}", e.code())).or_default() += 1,
        }
    }
    let timed_out = refused.get("DeadlineExceeded").copied().unwrap_or(0);
    let shed = refused.get("ResourceExhausted").copied().unwrap_or(0);
    println!(
        "   in {:.2?}: {answered} answered (p99 {:.0?}), refused by code {refused:?}",
        started.elapsed(),
        if latencies.is_empty() {
            Duration::ZERO
        } else {
            percentile(latencies, 0.99)
        }
    );
    println!(
        "   a refusal is immediate: the server sheds what it cannot serve in time with \
         RESOURCE_EXHAUSTED and a pushback, rather than queueing it past its deadline"
    );
    checks.expect(
        answered > 0 && shed > 0 && timed_out == 0,
        "the overloaded server shed calls and no call timed out",
    );
    Ok(())
}

/// Zone locality: two nodes in zone `a` and two in `b`; a client in zone `a`
/// with `locality = "prefer"` calls only its own zone, and when both `a`
/// nodes are killed its calls go to `b` without a failed call.
async fn zone_failover(etcd: &EtcdServer, checks: &mut Checks) -> Result<()> {
    section(
        "Zones: a client in zone a (locality prefer), nodes a-1 a-2 b-1 b-2; kill -9 both a nodes",
    );
    let prefix = "/grpc-cluster/zone-demo";
    let mut servers = Vec::new();
    for (id, zone) in [("a-1", "a"), ("a-2", "a"), ("b-1", "b"), ("b-2", "b")] {
        let env: [(&str, &OsStr); 2] = [
            ("GRPC_CLUSTER__REGISTRY__PREFIX", prefix.as_ref()),
            ("GRPC_CLUSTER__SERVER__ZONE", zone.as_ref()),
        ];
        servers.push(Server::start_with_env(&etcd.endpoint(), id, &[], &env).await?);
    }
    let registry = RegistryConfig::default()
        .with_endpoints([etcd.endpoint()])
        .with_prefix(prefix);
    let config = ClientConfig::default()
        .with_timeout(Duration::from_secs(5))
        .with_locality(Locality::Prefer)
        .with_zone("a");
    let (client, _) = client_seeing(&registry, config, 4).await?;
    let before = say_batch(&client, 200, 8, options(Strategy::Failover), |_| {}).await;
    println!("   zone a up:     {}", before.line());
    checks.expect(
        before.failures() == 0 && before.only_on(&["a-1", "a-2"]),
        "with zone a up, every call was answered in zone a",
    );
    // Dropping a server kills it (SIGKILL).
    servers.retain(|s| !s.id.starts_with("a-"));
    let after = say_batch(&client, 400, 8, options(Strategy::Failover), |_| {}).await;
    println!("   zone a killed: {}", after.line());
    checks.expect(
        after.failures() == 0 && after.per_node.keys().any(|n| n.starts_with("b-")),
        "with zone a killed, calls went to zone b and none failed",
    );
    drop(servers);
    Ok(())
}

/// Waits until the client lists node `id`.
async fn wait_node(client: &Addr<ClusterClient>, id: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(Ok(status)) = client.send(ServiceStatus("echo".into())).await {
            if status.node(id).is_some() {
                return Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!("the client did not see {id} within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server that accepts calls and never answers them (`echo-server --hang`)
/// joins the cluster: hedging answers from another node one delay later,
/// failover with an attempt timeout moves on after it and ejects the node.
async fn hung_server(
    client: &Addr<ClusterClient>,
    endpoint: &str,
    checks: &mut Checks,
) -> Result<()> {
    section("A hung server: echo-6 accepts Say and never answers (--hang)");
    let mut hung = Server::start(
        endpoint,
        "echo-6",
        &["--version", "1.0.0", "--group", "hung", "--hang"],
    )
    .await?;
    wait_node(client, "echo-6").await?;
    let alone = CallOptions::new()
        .with_strategy(Strategy::Failfast)
        .with_timeout(Duration::from_millis(300))
        .with_selector(Selector::new().with_group("hung"));
    let t = Instant::now();
    let call = Call::new(
        "echo",
        SAY,
        SayRequest {
            message: "alone".into(),
        },
    )
    .with_options(alone);
    let outcome = match client.send(call).await.map_err(|e| e.to_string())? {
        Ok(_) => "an answer (unexpected)".to_owned(),
        Err(e) => format!("{:?}", e.code()),
    };
    step(&format!(
        "a failfast call to echo-6 alone (300 ms deadline) ends with {outcome} after {:.0?}: \
         without a bound per attempt, every call that meets echo-6 waits for its deadline",
        t.elapsed()
    ));

    let hedged = say_batch(client, 300, 8, options(Strategy::Hedging), |_| {}).await;
    step("hedging, a new attempt on another node every 20 ms: 300 Say calls, 8 at a time");
    println!("   {}", hedged.line());
    checks.expect(
        hedged.failures() == 0,
        "no hedged call failed on the hung server",
    );

    let bounded = options(Strategy::Failover).with_attempt_timeout(Duration::from_millis(100));
    let failover = say_batch(client, 300, 8, bounded, |_| {}).await;
    step("failover with attempt_timeout = 100 ms: 300 Say calls, 8 at a time");
    println!("   {}", failover.line());
    checks.expect(
        failover.failures() == 0,
        "no failover call with an attempt timeout failed on the hung server",
    );
    let status = client
        .send(ServiceStatus("echo".into()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let ejected = status.node("echo-6").is_some_and(|n| n.ejected);
    println!(
        "   {} calls moved on after a timed-out attempt; echo-6 {}",
        failover.retried,
        if ejected {
            "was ejected after 5 timeouts in a row and got no more attempts"
        } else {
            "is not ejected (fewer than 5 timeouts in a row)"
        }
    );
    hung.sigterm()?;
    let (_, lines) = hung.exited(Duration::from_secs(15)).await?;
    if let Some(totals) = lines.iter().find(|l| l.starts_with("echo totals")) {
        println!(
            "   echo-6 at exit, {totals}: every call it got was a losing hedge or a timed-out \
             attempt, cancelled by the client"
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let system = System::new();
    let outcome = system.block_on(async {
        tokio::select! {
            result = demo() => result,
            _ = tokio::signal::ctrl_c() => Err("interrupted: stopping everything".to_owned()),
        }
    });
    // The etcd and every server were owned by `demo`: dropping it stopped them.
    match outcome {
        Ok(()) => {
            println!("\nEverything the demo started has been stopped.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo: {e}\nEverything the demo started has been stopped.");
            ExitCode::FAILURE
        }
    }
}
