//! [`ClusterClient::spawn`]: a cluster client on its own actix system thread,
//! for apps that run no actix system (tokio, tonic servers, axum).

use std::sync::{mpsc, Arc};
use std::thread;

use actix::prelude::*;
use registry_actor::{RegistryActor, RegistryConfig};

use super::actor::ClusterClient;
use super::handle::ClientHandle;
use super::system::SystemThread;
use crate::{ClientConfig, Error};

/// The name of the thread that runs a spawned client's actors.
pub const CLIENT_THREAD_NAME: &str = "cluster-client";

impl ClusterClient {
    /// Starts a client on a new thread running its own actix system, and
    /// returns a [`ClientHandle`] on it: for apps that run no actix system.
    /// The handle is `Send + Sync`; its calls run in the caller's task, on
    /// the caller's runtime (a `#[tokio::main]`, say), and only the registry
    /// watch, pickers and connection actors live on the client's thread.
    ///
    /// The thread stops when the last clone of the handle (and the last call
    /// made through one) is dropped, or at [`ClientHandle::shutdown`].
    /// It returns as soon as the thread runs: etcd is dialled on the first
    /// call, as by [`connect`](Self::connect).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use cluster_client::{ClientConfig, ClusterClient};
    /// # use registry_actor::RegistryConfig;
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let registry = RegistryConfig::default().with_endpoints(["127.0.0.1:2379"]);
    ///     let client = ClusterClient::spawn(&registry, ClientConfig::default())?;
    ///     // client.call(Call::new("echo", "/echo.v1.Echo/Say", request)).await?
    ///     # let _ = client;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// An invalid registry or client setting; [`Error::Spawn`] when the
    /// thread cannot be started.
    pub fn spawn(registry: &RegistryConfig, config: ClientConfig) -> Result<ClientHandle, Error> {
        registry.validate()?;
        let connection = config.validated()?;
        let registry = registry.clone();
        let (made, ready) = mpsc::sync_channel(1);
        thread::Builder::new()
            .name(CLIENT_THREAD_NAME.to_owned())
            .spawn(move || {
                let system = System::new();
                let handle = system.block_on(async move {
                    let etcd = registry_actor::connect(&registry).await?;
                    let endpoints: Arc<str> = registry.endpoints().join(",").into();
                    let registry = RegistryActor::new(etcd, &registry).start();
                    ClientHandle::from_validated(registry, config, connection, Some(endpoints))
                        .map(|handle| (handle, System::current()))
                });
                let started = handle.is_ok();
                if made.send(handle).is_ok() && started {
                    // Until `System::stop`, by the last handle or `shutdown`.
                    let _ = system.run();
                }
            })
            .map_err(|e| Error::Spawn(e.to_string()))?;
        let (handle, system) = ready
            .recv()
            .map_err(|_| Error::Spawn("the thread ended before the client started".into()))??;
        Ok(handle.owning(SystemThread::new(system)))
    }
}
