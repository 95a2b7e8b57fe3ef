//! Calls the echo service found through etcd, once through the client actor and
//! once through a handle. Reads `./config` (or `GRPC_CLUSTER_CONFIG_DIR`), then
//! `GRPC_CLUSTER__…` variables, e.g. `GRPC_CLUSTER__REGISTRY__ENDPOINTS=127.0.0.1:2379`.

use grpc_cluster::client::{Call, CallOptions, GetHandle, Strategy};
use grpc_cluster::config::Settings;
use grpc_cluster::echo::{SayRequest, SAY}; // or Method::from_static("/pkg.Svc/Method")

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The client's actors need an actix system: `run` starts one.
    grpc_cluster::run(async {
        let client = Settings::load()?.connect_client().await?;

        let say = SayRequest {
            message: "hi".into(),
        };
        let failover = CallOptions::new().with_strategy(Strategy::Failover);
        let call = Call::new("echo", SAY, say).with_options(failover);
        let reply = client.send(call).await??;
        println!(
            "{} answered {:?} after {} attempt(s)",
            reply.node.id(),
            reply.message.message,
            reply.attempts.len()
        );

        // The same call without the actor's mailbox: the strategy runs in this
        // task. The handle is Send + Sync and cheap to clone.
        let handle = client.send(GetHandle).await?;
        let say = SayRequest {
            message: "hi again".into(),
        };
        let reply = handle.call(Call::new("echo", SAY, say)).await?;
        println!("{} answered {:?}", reply.node.id(), reply.message.message);
        Ok(())
    })
}
