//! Layered configuration reloaded into running servers and clients.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cluster_client::{Call, ClusterClient};
use grpc_cluster::config::{ConfigLoader, Reloadable, Settings};
use grpc_cluster::echo::{EchoClient, EchoService, FailRequest, FAIL};
use grpc_cluster::server::ServeBuilder;
use support::cluster::Cluster;
use support::server_kit::{channel, echo_config, say, start_echo};
use support::{wait_until, EVENTUALLY};
use tonic::Code;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gc-reload-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn local(&self, body: &str) {
        std::fs::write(self.0.join("local.toml"), body).expect("write local.toml");
    }

    fn settings(&self) -> Reloadable<Settings> {
        let loader = ConfigLoader::from_env()
            .with_dir(&self.0)
            .with_env_name(None)
            .with_env_vars(HashMap::new());
        Reloadable::load(loader).expect("valid configuration")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn reloaded_rate_limit_applies_to_the_next_call_and_a_bad_edit_keeps_it() {
    let dir = Dir::new("server");
    dir.local("[server.rate_limit]\nrps = 10000\nburst = 10000\n");
    let settings = dir.settings();
    let config = echo_config(settings.current().server.rate_limit().clone());
    let (serving, _) = start_echo("reload-1", ServeBuilder::new(config), None).await;
    let handle = serving.handle();
    let follower = settings.follow_server(handle.clone());
    let mut client = EchoClient::new(channel(serving.local_addr()).await);
    for _ in 0..20 {
        say(&mut client, None).await.expect("far under the limit");
    }

    dir.local("[server.rate_limit]\nrps = 1\nburst = 2\n");
    settings.reload().expect("a valid edit");
    let applied = wait_until(EVENTUALLY, || {
        let handle = handle.clone();
        async move { handle.rate_limits().config().rps() == 1 }
    })
    .await;
    assert!(applied, "the reloaded limit reached the running server");
    let mut refused = None;
    for _ in 0..5 {
        if let Err(status) = say(&mut client, None).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("the new limit of 1/s with a burst of 2 refuses within 5 calls");
    assert_eq!(refused.code(), Code::ResourceExhausted);

    dir.local("[server.rate_limit]\nrps = \"lots\"\n");
    let err = settings.reload().expect_err("an invalid edit");
    assert!(err.to_string().contains("server.rate_limit.rps"), "{err}");
    assert_eq!(
        settings.current().server.rate_limit().rps(),
        1,
        "the old settings stay"
    );
    assert_eq!(
        handle.rate_limits().config().rps(),
        1,
        "the server keeps the old limit"
    );
    follower.abort();
    handle.shutdown();
    serving.wait().await.expect("clean shutdown");
}

#[actix_rt::test]
async fn reloaded_strategy_applies_to_the_next_call_and_a_bad_edit_keeps_it() {
    let mut cluster = Cluster::start().await;
    cluster.add(EchoService::new("a"), |n| n).await;
    cluster.add(EchoService::new("b"), |n| n).await;
    let dir = Dir::new("client");
    dir.local("[client]\nstrategy = \"failfast\"\n");
    let settings = Arc::new(dir.settings());
    let client: actix::Addr<ClusterClient> =
        cluster.client(settings.current().client.clone(), 2).await;
    let _follower = settings.follow_client(client.clone());
    let unavailable = || FailRequest {
        code: Code::Unavailable as i32,
        message: "down".into(),
    };
    let attempts = |client: actix::Addr<ClusterClient>| async move {
        client
            .send(Call::new("echo", FAIL, unavailable()))
            .await
            .expect("alive")
            .expect_err("always fails")
            .attempts()
            .len()
    };
    assert_eq!(
        attempts(client.clone()).await,
        1,
        "failfast from the first load"
    );

    dir.local("[client]\nstrategy = \"failover\"\nretries = 1\n");
    settings.reload().expect("a valid edit");
    let switched = wait_until(EVENTUALLY, || {
        let client = client.clone();
        async move { attempts(client).await == 2 }
    })
    .await;
    assert!(switched, "failover with one retry after the reload");

    dir.local("[client]\nstrategy = \"sometimes\"\n");
    let err = settings.reload().expect_err("an invalid edit");
    assert!(err.to_string().contains("client.strategy"), "{err}");
    assert_eq!(
        attempts(client.clone()).await,
        2,
        "the old strategy stays in force"
    );
}
