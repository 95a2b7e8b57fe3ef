//! [`HealthWatch`]: following the `grpc.health.v1` status of a node's server
//! over the node's own channel.
//!
//! The watch is a `Health/Watch` stream on the channel calls use, so what it
//! sees is what calls would meet. The node is reported as not serving, and so
//! taken out of picking at once, when
//!
//! * the server says anything but `SERVING` for the watched service (a
//!   server kit shutting down says `NOT_SERVING` before anything else);
//! * the stream cannot be opened or breaks in the transport (the connection
//!   was refused, reset or closed, as after a GOAWAY and the server's exit).
//!
//! A stream that brings no first status within 3 s counts as broken too.
//! After either, the stream is dropped (so a server draining its calls is
//! not held open by it) and opened again after a backoff (50 ms doubling to
//! 1 s, with jitter), on a fresh connection if the old one closed; the first
//! `SERVING` brings the node back. A server without the health service
//! (`UNIMPLEMENTED`) is taken to serve, and not watched further. Any other
//! answer (the server answered, so it is up) leaves the node as it was and
//! the stream is opened again after the backoff.

use std::sync::Arc;
use std::time::Duration;

use registry_actor::Backoff;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tonic::transport::Endpoint;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tracing::{debug, warn};

use super::classify::is_transport_failure;
use super::report::Report;
use super::tcp::TcpConnector;
use super::transport::NodeChannel;

/// First wait before the stream is opened again.
const RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest wait before the stream is opened again.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How long a new stream may take to bring its first status (on a connection
/// that may first have to be made): past it, the stream counts as broken.
const FIRST_ANSWER: Duration = Duration::from_secs(3);

/// The watch of one node's health, running as a task on the runtime of the
/// channel it uses; stopped when dropped.
#[derive(Debug)]
pub(crate) struct HealthWatch {
    task: AbortHandle,
}

impl HealthWatch {
    /// Starts watching `service` (`""`: the whole server) on `channel`,
    /// reporting changes to `report`, as a task on `runtime`. `node` names the
    /// node in logs.
    pub(crate) fn start(
        runtime: &Handle,
        channel: NodeChannel,
        service: Arc<str>,
        node: String,
        report: Box<dyn Report>,
    ) -> Self {
        let watcher = Watcher {
            channel,
            service,
            node,
            report,
            serving: true,
        };
        let task = runtime.spawn(watcher.run()).abort_handle();
        Self { task }
    }
}

impl HealthWatch {
    /// Whether the watch has ended: only when its runtime stopped (or it
    /// found no health service to watch).
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for HealthWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one `Watch` stream ended.
enum Ended {
    /// The server said the service does not serve (or is unknown to it).
    NotServing(ServingStatus),
    /// The stream could not be opened, broke, or ended: the transport failed
    /// or the server went away.
    Broken(String),
    /// The server answered with an error that says nothing of its health.
    Refused(Status),
    /// The server has no health service.
    Unimplemented,
}

struct Watcher {
    channel: NodeChannel,
    service: Arc<str>,
    node: String,
    report: Box<dyn Report>,
    /// What the picker was last told; a node starts out pickable.
    serving: bool,
}

impl Watcher {
    async fn run(mut self) {
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut warned = false;
        loop {
            match self.follow(&mut backoff).await {
                Ended::Unimplemented => {
                    warn!(node = %self.node, "the node's server has no grpc.health.v1 service; \
                        taking it to serve (client.health_check)");
                    self.tell(true);
                    return;
                }
                Ended::NotServing(status) => {
                    if status == ServingStatus::ServiceUnknown && !warned {
                        warned = true;
                        warn!(node = %self.node, service = %self.service,
                            "the node's health service does not know this service \
                             (client.health_service); the node is not picked");
                    }
                    debug!(node = %self.node, ?status, "health: not serving");
                    self.tell(false);
                }
                Ended::Broken(why) => {
                    debug!(node = %self.node, reason = %why, "health watch broke");
                    self.tell(false);
                }
                Ended::Refused(status) => {
                    if !warned {
                        warned = true;
                        warn!(node = %self.node, code = ?status.code(), message = status.message(),
                            "the node refused the health watch; retrying");
                    }
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Opens one `Watch` stream and follows it while the service serves.
    async fn follow(&mut self, backoff: &mut Backoff) -> Ended {
        let mut client = HealthClient::new(self.channel.clone());
        let request = HealthCheckRequest {
            service: self.service.to_string(),
        };
        let opened = tokio::time::timeout(FIRST_ANSWER, async {
            let mut stream = client.watch(request).await?.into_inner();
            let first = stream.message().await;
            Ok::<_, Status>((stream, first))
        });
        let (mut stream, mut next) = match opened.await {
            Ok(Ok(opened)) => opened,
            Ok(Err(status)) => return ended_by(status),
            Err(_) => return Ended::Broken(format!("no status within {FIRST_ANSWER:?}")),
        };
        loop {
            match next {
                Ok(Some(update)) => match update.status() {
                    ServingStatus::Serving => {
                        self.tell(true);
                        backoff.reset();
                    }
                    other => return Ended::NotServing(other),
                },
                Ok(None) => return Ended::Broken("the server ended the stream".into()),
                Err(status) => return ended_by(status),
            }
            next = stream.message().await;
        }
    }

    fn tell(&mut self, serving: bool) {
        if self.serving != serving {
            self.serving = serving;
            self.report.serving(serving);
        }
    }
}

/// Whether the server at `endpoint` answers a gRPC call (a health check, on
/// a connection of its own) within `within`: any answer but a broken
/// transport counts, `UNIMPLEMENTED` included. A listener that accepts
/// connections without serving them does not answer.
pub(crate) async fn answers(endpoint: &Endpoint, within: Duration) -> bool {
    let check = async {
        let mut client = HealthClient::new(endpoint.connect_with_connector_lazy(TcpConnector));
        client.check(HealthCheckRequest::default()).await
    };
    match tokio::time::timeout(within, check).await {
        Ok(Ok(_)) => true,
        Ok(Err(status)) => !matches!(ended_by(status), Ended::Broken(_)),
        Err(_) => false,
    }
}

/// A watch that ends (its runtime stopped, or the node left) takes its
/// verdict with it: a node it took out is not left out with no one watching.
impl Drop for Watcher {
    fn drop(&mut self) {
        if !self.serving {
            self.report.serving(true);
        }
    }
}

/// What an error on the `Watch` stream means for the node's health.
fn ended_by(status: Status) -> Ended {
    if status.code() == Code::Unimplemented {
        Ended::Unimplemented
    } else if status.code() == Code::Unavailable || is_transport_failure(&status) {
        Ended::Broken(status.message().to_owned())
    } else {
        Ended::Refused(status)
    }
}
