//! A tokio app (no actix anywhere in it) calling the echo service through the
//! cluster: `ClusterClient::spawn` runs the client's actors on a thread of
//! their own and hands back a `ClientHandle` whose calls run right here, on
//! this runtime. Reads the layered configuration like every example, e.g.
//! `GRPC_CLUSTER__REGISTRY__ENDPOINTS=127.0.0.1:2379`.

use std::process::ExitCode;

use grpc_cluster::client::{Call, ClusterClient};
use grpc_cluster::config::Settings;
use grpc_cluster::echo::{SayRequest, SAY};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio-app: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    // The thread stops when the last clone of the handle is dropped.
    let client = ClusterClient::spawn(&settings.registry, settings.client.clone())?;
    let calls = (0..3).map(|i| {
        // Clones are cheap; each call runs in the task that awaits it.
        let client = client.clone();
        tokio::spawn(async move {
            let say = SayRequest {
                message: format!("hello {i}"),
            };
            client.call(Call::new("echo", SAY, say)).await
        })
    });
    for call in calls.collect::<Vec<_>>() {
        let reply = call.await??;
        println!("{} answered {:?}", reply.node.id(), reply.message.message);
    }
    Ok(())
}
