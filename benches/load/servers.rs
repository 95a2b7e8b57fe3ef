//! The echo servers every client of the run calls, in a child process of
//! their own: the CPU this process spends (the cpu section reads it) is then
//! the clients' alone, and the servers' threads do not share a runtime with
//! any client.
//!
//! The child is this binary with [`CHILD`] set to `N:THREADS`: it serves
//! `echo.v1.Echo` (plain tonic, `TCP_NODELAY`, node `i` answering `n{i}`) on
//! `N` loopback ports with a tokio runtime of `THREADS` workers, prints
//! `SERVERS addr…`, and exits when its standard input closes (the parent
//! dropped it, or died). With [`TLS_CERT`] and [`TLS_KEY`] set (PEM files) it
//! serves over TLS.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use futures_util::stream;
use grpc_cluster::echo::EchoService;
use tonic::transport::{Identity, ServerTlsConfig};

/// Set in the server child: `N:THREADS`.
pub(crate) const CHILD: &str = "LOAD_SERVER_CHILD";
/// Set in a TLS server child: the certificate's PEM file.
const TLS_CERT: &str = "LOAD_SERVER_TLS_CERT";
/// Set in a TLS server child: the key's PEM file.
const TLS_KEY: &str = "LOAD_SERVER_TLS_KEY";

/// The running server process; dropping it stops the process.
pub(crate) struct Servers {
    /// Node `i`'s address: `n{i}` answers there.
    pub(crate) addrs: Vec<SocketAddr>,
    child: Child,
}

impl Servers {
    /// Starts `n` servers on `threads` worker threads in a child process and
    /// waits until they listen.
    pub(crate) fn spawn(n: usize, threads: usize) -> Self {
        Self::spawn_with(n, threads, &[])
    }

    /// As [`spawn`](Self::spawn), serving over TLS with this certificate and
    /// key (PEM files).
    pub(crate) fn spawn_tls(n: usize, threads: usize, cert: &Path, key: &Path) -> Self {
        Self::spawn_with(
            n,
            threads,
            &[(TLS_CERT, cert.as_os_str()), (TLS_KEY, key.as_os_str())],
        )
    }

    fn spawn_with(n: usize, threads: usize, env: &[(&str, &OsStr)]) -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .env(CHILD, format!("{n}:{threads}"))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the server process starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the server process answers");
        let addrs: Vec<SocketAddr> = line
            .strip_prefix("SERVERS ")
            .unwrap_or_else(|| panic!("the server process printed `{line}`"))
            .split_whitespace()
            .map(|a| a.parse().expect("a server address"))
            .collect();
        assert_eq!(addrs.len(), n, "the server process started {n} servers");
        Self { addrs, child }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's job: `spec` is `N:THREADS`.
pub(crate) fn serve(spec: &str) {
    let (n, threads) = spec
        .split_once(':')
        .and_then(|(n, t)| Some((n.parse::<usize>().ok()?, t.parse::<usize>().ok()?)))
        .unwrap_or_else(|| panic!("{CHILD}=`{spec}`: expected N:THREADS"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("echo-server")
        .enable_all()
        .build()
        .expect("server runtime");
    let tls = match (std::env::var_os(TLS_CERT), std::env::var_os(TLS_KEY)) {
        (Some(cert), Some(key)) => {
            let read = |path| std::fs::read(path).expect("a TLS file of the server child");
            Some(ServerTlsConfig::new().identity(Identity::from_pem(read(cert), read(key))))
        }
        _ => None,
    };
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| runtime.block_on(start_one(i, tls.clone())))
        .collect();
    let list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    println!("SERVERS {}", list.join(" "));
    // Serve until the parent closes our standard input (or goes away).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(runtime);
}

/// Server `n{i}` on a free loopback port (over TLS with `tls`), serving in
/// a task of the current runtime.
async fn start_one(i: usize, tls: Option<ServerTlsConfig>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = EchoService::new(format!("n{i}")).into_server();
    tokio::spawn(async move {
        let incoming = stream::unfold(listener, |l| async move {
            let next = l.accept().await.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                s
            });
            Some((next, l))
        });
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).expect("the server's TLS settings");
        }
        let _ = builder
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    addr
}
