//! `ClusterClient::spawn` from a plain tokio runtime: no actix system in the
//! caller, calls succeed, and the client's thread lives exactly as long as
//! its handles.

mod support;

use grpc_cluster::client::{Call, ClientConfig, ClusterClient, CLIENT_THREAD_NAME};
use grpc_cluster::echo::{SayRequest, SAY};
use grpc_cluster::server::ServeBuilder;
use support::server_kit::{echo_config, start_echo};
use support::{wait_until, EtcdServer, EVENTUALLY};

/// Threads of this process named as a spawned client's thread.
fn client_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.trim_end() == CLIENT_THREAD_NAME)
        })
        .count()
}

fn say(message: &str) -> Call<SayRequest, grpc_cluster::echo::SayReply> {
    Call::new(
        "echo",
        SAY,
        SayRequest {
            message: message.into(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_client_serves_a_tokio_app_and_its_thread_ends_with_the_last_handle() {
    assert!(
        actix::System::try_current().is_none(),
        "the caller runs no actix system"
    );
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let (serving, stats) = start_echo(
        "spawn-1",
        ServeBuilder::new(echo_config(Default::default()).with_node_id("spawn-1")),
        Some(etcd.registry_config()),
    )
    .await;
    assert_eq!(client_threads(), 0);

    let client = ClusterClient::spawn(&etcd.registry_config(), ClientConfig::default())
        .expect("the client starts");
    assert_eq!(client_threads(), 1, "one thread of its own");
    let other = client.clone();
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.call(say(&format!("hi {i}"))).await })
        })
        .collect();
    for call in calls {
        let reply = call
            .await
            .expect("task")
            .expect("a call through the cluster");
        assert_eq!(reply.node.id(), "spawn-1");
    }
    assert_eq!(stats.processed(), 4);

    drop(client);
    let reply = other
        .call(say("still"))
        .await
        .expect("a clone keeps it running");
    assert_eq!(reply.message.message, "still");
    assert_eq!(client_threads(), 1);
    drop(other);
    assert!(
        wait_until(EVENTUALLY, || async { client_threads() == 0 }).await,
        "the thread ends with the last handle"
    );

    let stopped = ClusterClient::spawn(&etcd.registry_config(), ClientConfig::default())
        .expect("the client starts");
    stopped.call(say("before")).await.expect("a call");
    stopped.shutdown();
    assert!(
        wait_until(EVENTUALLY, || async { client_threads() == 0 }).await,
        "shutdown ends the thread"
    );
    let after = tokio::time::timeout(EVENTUALLY, stopped.call(say("after")))
        .await
        .expect("a call after shutdown ends");
    assert!(after.is_err(), "a call after shutdown fails: {after:?}");

    serving.handle().shutdown();
    serving.wait().await.expect("clean shutdown");
}
