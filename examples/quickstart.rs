//! Calls the echo service found through etcd: through its generated client over
//! a `ClusterChannel`, then as a `Call` message and through a handle. Reads
//! `./config` (or `GRPC_CLUSTER_CONFIG_DIR`), then `GRPC_CLUSTER__…` variables,
//! e.g. `GRPC_CLUSTER__REGISTRY__ENDPOINTS=127.0.0.1:2379`.

use grpc_cluster::client::{Call, CallOptions, GetHandle, Strategy};
use grpc_cluster::config::Settings;
use grpc_cluster::echo::{EchoClient, SayRequest, SAY}; // or Method::from_static("/pkg.Svc/Method")

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The client's actors need an actix system: `run` starts one.
    grpc_cluster::run(async {
        let client = Settings::load()?.connect_client().await?;
        // A handle runs calls in this task; it is Send + Sync and cheap to clone.
        let handle = client.send(GetHandle).await?;

        // Your generated client, on every node of `echo`: each request is
        // picked, balanced, retried and budgeted by the policy of its method.
        let mut echo = EchoClient::new(handle.channel("echo"));
        let reply = echo
            .say(SayRequest {
                message: "hi".into(),
            })
            .await?
            .into_inner();
        println!("{} answered {:?}", reply.node_id, reply.message);

        // The same call as a `Call` message to the client actor ...
        let say = SayRequest {
            message: "hi again".into(),
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

        // ... or through the handle, without the actor's mailbox.
        let say = SayRequest {
            message: "and again".into(),
        };
        let reply = handle.call(Call::new("echo", SAY, say)).await?;
        println!("{} answered {:?}", reply.node.id(), reply.message.message);
        Ok(())
    })
}
