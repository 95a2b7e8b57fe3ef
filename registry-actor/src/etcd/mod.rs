//! A connection to every member of an etcd cluster, and the way each kind of
//! request moves between members.
//!
//! [`connect`] opens one client per endpoint of `registry.endpoints` (lazily:
//! nothing is dialled before the first request), each with
//!
//! * require-leader: a member that has lost its leader (cut off, or the
//!   cluster lost quorum) fails requests and cancels streams at once instead of
//!   answering from a stale view or staying silent;
//! * HTTP/2 keepalive (10 s / 5 s) as the last resort against a silent TCP
//!   connection;
//! * a decoding limit that fits the largest page of a full read;
//! * with `registry.username`, authentication at connect (a wrong password
//!   fails there) and again whenever etcd refuses the token (a restarted
//!   member forgets the tokens it issued).
//!
//! One member is *preferred*; it starts at a random member, so that many
//! clients spread over the cluster. Every request and stream starts there;
//! a member that fails, times out or falls silent hands the preference to the
//! next one. Reads are hedged: when the preferred member has not answered
//! within [`HEDGE_DELAY`], the same read goes to the next member too, and the
//! first answer wins — a frozen member (its port open, nothing answering)
//! costs a read 100 ms, not a request timeout. Writes go to one member at a
//! time, each bounded by `registry.request_timeout`, and move on to the next
//! after a failure.

mod page;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, KeyValue, KvClient, WatchClient};
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::Rng;

use crate::error::with_timeout;
use crate::{Error, RegistryConfig};

pub(crate) use page::{read_prefix, ClusterIdentity, PAGE_KEYS};

/// HTTP/2 keepalive towards etcd. A frozen etcd otherwise hangs watch and
/// keepalive streams for ever; etcd cuts clients that ping faster than its
/// `--grpc-keepalive-min-time` (5 s), so 10 s / 5 s is as tight as it goes.
/// Watches and registrations notice a silent member much sooner by their own
/// probes.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a read waits for one member before it asks the next one too.
pub const HEDGE_DELAY: Duration = Duration::from_millis(100);

/// Room for a key and the message framing beside each value of a page.
const KEY_ALLOWANCE: usize = 1024;

/// The smallest decoding limit: gRPC's default, 4 MiB.
const MIN_DECODING_LIMIT: usize = 4 << 20;

/// A connection to every member of one etcd cluster. Cheap to clone; clones
/// share the members and the preference. See the [module docs](self).
///
/// It dereferences to a plain [`Client`] over every endpoint (etcd-client's
/// own balancing), for requests this crate does not make: that client does
/// not move off a frozen member, so put a timeout on every request.
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
    balanced: Client,
}

struct Inner {
    members: Vec<Member>,
    preferred: AtomicUsize,
    request_timeout: Duration,
}

impl std::ops::Deref for Etcd {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.balanced
    }
}

impl std::ops::DerefMut for Etcd {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.balanced
    }
}

struct Member {
    endpoint: String,
    client: Client,
    kv: KvClient,
    watch: WatchClient,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints())
            .field("preferred", &self.preferred())
            .finish_non_exhaustive()
    }
}

/// Opens a connection to every member of `config.endpoints()`.
///
/// The connections are lazy: this succeeds while etcd is down and the first
/// request fails instead, so a server started before etcd keeps retrying
/// rather than exiting. With `registry.username` set it authenticates at once
/// instead, so a wrong password fails here, naming the user (never the
/// password) — and so does an etcd that cannot be reached, or does not answer
/// within `connect_timeout` + `request_timeout`. No overall request timeout is
/// set on the channels (it would cut watch streams); every unary call of this
/// crate carries its own.
///
/// # Errors
///
/// [`Error::Config`] when the settings are invalid or a `[registry.tls]` file
/// cannot be read; [`Error::Etcd`] when a client cannot be built from an
/// endpoint or, with a user, etcd refuses the password or cannot be reached
/// (a failed TLS handshake names `registry.tls`); [`Error::Timeout`] when,
/// with a user, a connection and its authentication take longer than
/// `connect_timeout` + `request_timeout`.
pub async fn connect(config: &RegistryConfig) -> Result<Etcd, Error> {
    config.validate()?;
    let tls = config.tls().load("registry.tls")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let urls: Vec<String> = config.endpoints().iter().map(|e| url(e, scheme)).collect();
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout())
        .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let Some(tls) = tls {
        options = options.with_tls(tls);
    }
    let who = match config.user() {
        Some((user, password)) => {
            // etcd's tokens live in the memory of the member that issued them:
            // after a restart every request is refused as `invalid auth token`
            // until the client authenticates again.
            options = options
                .with_user(user, password)
                .with_auto_token_refresh(true);
            format!(" as registry.username `{user}`")
        }
        None => String::new(),
    };
    let limit = decoding_limit(config.max_value_bytes());
    // With a user, connecting authenticates: a connection and a request.
    let within = config.connect_timeout() + config.request_timeout();
    let mut members = Vec::with_capacity(urls.len());
    for (endpoint, url) in config.endpoints().iter().zip(&urls) {
        let op = format!("connect to {endpoint}{who}");
        let client = bounded(within, op, Client::connect([url], Some(options.clone()))).await?;
        members.push(Member {
            endpoint: endpoint.clone(),
            kv: client.kv_client().max_decoding_message_size(limit),
            watch: client.watch_client().max_decoding_message_size(limit),
            client,
        });
    }
    let op = format!("connect to {:?}{who}", config.endpoints());
    let balanced = bounded(within, op, Client::connect(&urls, Some(options))).await?;
    let first = rand::rng().random_range(0..members.len().max(1));
    Ok(Etcd {
        inner: Arc::new(Inner {
            members,
            preferred: AtomicUsize::new(first),
            request_timeout: config.request_timeout(),
        }),
        balanced,
    })
}

/// `connect` (named `op` in errors) within `limit`.
async fn bounded<T>(
    limit: Duration,
    op: String,
    connect: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, connect).await {
        Ok(made) => made.map_err(|e| Error::etcd(op, e)),
        Err(_) => Err(Error::Timeout { op, timeout: limit }),
    }
}

/// `endpoint` as a URL: as written when it has a scheme, else with `scheme`.
fn url(endpoint: &str, scheme: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("{scheme}://{endpoint}")
    }
}

/// The decoding limit that fits a page of [`PAGE_KEYS`] values of up to
/// `max_value_bytes` each, and never less than gRPC's default.
fn decoding_limit(max_value_bytes: usize) -> usize {
    PAGE_KEYS
        .saturating_mul(max_value_bytes.saturating_add(KEY_ALLOWANCE))
        .max(MIN_DECODING_LIMIT)
}

/// One member picked for a request or stream: its number and its clients.
#[derive(Clone)]
pub(crate) struct Picked {
    pub(crate) index: usize,
    pub(crate) endpoint: String,
    pub(crate) client: Client,
    pub(crate) watch: WatchClient,
}

impl Etcd {
    /// Every member's endpoint, in configuration order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .members
            .iter()
            .map(|m| m.endpoint.clone())
            .collect()
    }

    /// The endpoint requests start at right now.
    pub fn preferred(&self) -> String {
        let i = self.inner.preferred.load(Ordering::Relaxed);
        self.inner.members[i].endpoint.clone()
    }

    /// The plain etcd client over every endpoint that this dereferences to.
    pub fn client(&self) -> Client {
        self.balanced.clone()
    }

    /// Every key under `prefix` with its value, read page by page at one
    /// revision (a consistent snapshot of any size), hedged over the members
    /// like every read of this crate; answers them in key order and that
    /// revision.
    ///
    /// # Errors
    ///
    /// When no member answers a page in time.
    pub async fn list_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), Error> {
        let mut keys = Vec::new();
        let identity = read_prefix(self, prefix, |kv| keys.push(kv.clone())).await?;
        Ok((keys, identity.revision))
    }

    /// Whether `key` is in etcd: a linearizable read, hedged over the members
    /// like every read of this crate.
    ///
    /// # Errors
    ///
    /// When no member answers in time.
    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        let op = format!("get {key}");
        let resp = self
            .read(&op, |mut kv| {
                let key = key.to_owned();
                async move {
                    kv.get(key, Some(etcd_client::GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await?;
        Ok(resp.count() > 0)
    }

    /// The timeout of each unary request.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The preferred member.
    pub(crate) fn pick(&self) -> Picked {
        let index = self.inner.preferred.load(Ordering::Relaxed) % self.inner.members.len();
        let m = &self.inner.members[index];
        Picked {
            index,
            endpoint: m.endpoint.clone(),
            client: m.client.clone(),
            watch: m.watch.clone(),
        }
    }

    /// Member `index` failed, timed out or fell silent: when it is still the
    /// preferred one, the next member takes over.
    pub(crate) fn failed(&self, index: usize) {
        let next = (index + 1) % self.inner.members.len();
        let _ = self.inner.preferred.compare_exchange(
            index,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Member `index` answered: it becomes the preferred one.
    fn answered(&self, index: usize) {
        self.inner.preferred.store(index, Ordering::Relaxed);
    }

    /// A hedged read: `read` on the preferred member; when it has not answered
    /// within [`HEDGE_DELAY`] (or failed), on the next member too, and so on.
    /// The first success wins and its member becomes the preferred one.
    ///
    /// # Errors
    ///
    /// The last member's error when every member failed or timed out.
    pub(crate) async fn read<T, F, Fut>(&self, op: &str, read: F) -> Result<T, Error>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.inner.members.len();
        let first = self.inner.preferred.load(Ordering::Relaxed);
        let timeout = self.inner.request_timeout;
        let attempt = |index: usize| {
            let member = &self.inner.members[index];
            let answer = with_timeout(op, timeout, read(member.kv.clone()));
            async move { (index, answer.await.map_err(|e| e.at(&member.endpoint))) }
        };
        let mut pending = FuturesUnordered::new();
        let mut started = 0;
        let mut last_error = None;
        loop {
            if started < n && pending.is_empty() {
                pending.push(attempt((first + started) % n));
                started += 1;
            }
            let hedge = tokio::time::sleep(HEDGE_DELAY);
            tokio::select! {
                done = pending.next() => match done {
                    Some((index, Ok(value))) => {
                        self.answered(index);
                        return Ok(value);
                    }
                    Some((index, Err(e))) => {
                        self.failed(index);
                        last_error = Some(e);
                    }
                    None => break,
                },
                () = hedge, if started < n => {
                    pending.push(attempt((first + started) % n));
                    started += 1;
                }
            }
            if pending.is_empty() && started >= n {
                break;
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Timeout {
            op: op.to_owned(),
            timeout,
        }))
    }

    /// A write (or any request that should go to one member at a time):
    /// `call` on the preferred member, then on each next one after a failure,
    /// each bounded by the request timeout.
    ///
    /// # Errors
    ///
    /// The last member's error when every member failed or timed out.
    pub(crate) async fn call<T, F, Fut>(&self, op: &str, call: F) -> Result<T, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last_error = None;
        for _ in 0..self.inner.members.len() {
            let picked = self.pick();
            match with_timeout(op, self.inner.request_timeout, call(picked.client)).await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    self.failed(picked.index);
                    last_error = Some(e.at(&picked.endpoint));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Timeout {
            op: op.to_owned(),
            timeout: self.inner.request_timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_limit_fits_a_full_page_and_never_drops_below_the_grpc_default() {
        assert_eq!(decoding_limit(0), MIN_DECODING_LIMIT);
        assert_eq!(
            decoding_limit(64 << 10),
            PAGE_KEYS * ((64 << 10) + KEY_ALLOWANCE)
        );
        assert_eq!(decoding_limit(usize::MAX), usize::MAX);
    }
}
