//! `registry.snapshot_file`: a registry keeps each watched set in the file, and
//! one started while etcd is down serves the file's set until etcd answers.
//! Against a real etcd, stopped and restarted.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use registry_actor::testing::Logs;
use registry_actor::{RegistryActor, RegistryConfig, WatchState, WatchStatus};

/// A fresh directory for the snapshot file, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The node ids of `service` in the snapshot file, sorted; `None` while the
/// file is absent or holds no such service.
fn file_ids(file: &Path, service: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(file).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let nodes = value["services"][service]["nodes"].as_array()?;
    let mut ids: Vec<String> = nodes
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    Some(ids)
}

async fn watch_state(registry: &actix::Addr<RegistryActor>, service: &str) -> WatchStatus {
    registry
        .send(WatchState {
            service: service.into(),
        })
        .await
        .expect("registry alive")
        .expect("the service is watched")
}

/// Waits until the watch of `service` has reported a failure.
async fn wait_failed(registry: &actix::Addr<RegistryActor>, service: &str) -> WatchStatus {
    let failed = wait_until(EVENTUALLY, || async {
        watch_state(registry, service).await.last_error.is_some()
    })
    .await;
    let state = watch_state(registry, service).await;
    assert!(failed, "the watch reports no failure: {state:?}");
    state
}

/// Runs a registry on an actix system of its own (another thread, as another
/// process would): it sees `a`, then `a` and `c` (each written to the file
/// while it runs), then `a` again, and stops: that last set is written at the
/// latest when the registry goes away.
fn run_first_registry(config: RegistryConfig, file: PathBuf) {
    let thread = std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let registry = start_registry(&config).await;
            let mut sub = Subscriber::start(&registry, "echo").await;
            sub.wait_for("a", has_ids(&["a"])).await;
            let written = wait_until(EVENTUALLY, || {
                let ids = file_ids(&file, "echo");
                async move { ids.as_deref() == Some(&["a".to_owned()][..]) }
            })
            .await;
            assert!(written, "the set is written: {:?}", file_ids(&file, "echo"));
            let mut raw = registry_actor::connect(&config)
                .await
                .expect("etcd")
                .client();
            raw_put(&mut raw, &config, "c", r#"{"id":"c","addr":"127.0.0.1:3"}"#).await;
            sub.wait_for("a, c", has_ids(&["a", "c"])).await;
            let written = wait_until(EVENTUALLY, || {
                let ids = file_ids(&file, "echo");
                async move { ids == Some(vec!["a".to_owned(), "c".to_owned()]) }
            })
            .await;
            assert!(
                written,
                "the change is written: {:?}",
                file_ids(&file, "echo")
            );
            raw_delete(&mut raw, &config, "c").await;
            sub.wait_for("a", has_ids(&["a"])).await;
        });
    });
    thread.join().expect("the first registry ran");
}

#[actix_rt::test]
async fn a_registry_started_while_etcd_is_down_serves_the_snapshot_file_until_etcd_answers() {
    let (logs, _guard) = Logs::capture();
    let mut etcd = EtcdServer::start().await.expect("etcd");
    let dir = TempDir::new("snapshot-cold-start");
    let file = dir.0.join("nodes.json");
    let config = etcd.registry_config().with_snapshot_file(&file);
    let mut raw = etcd.client().await.expect("raw client");
    raw_put(&mut raw, &config, "a", r#"{"id":"a","addr":"127.0.0.1:1"}"#).await;

    run_first_registry(config.clone(), file.clone());
    // The system stopped with `a` as the last set: the file says so.
    assert_eq!(file_ids(&file, "echo"), Some(vec!["a".to_owned()]));

    // etcd moves on to `b`, then goes down.
    raw_delete(&mut raw, &config, "a").await;
    raw_put(&mut raw, &config, "b", r#"{"id":"b","addr":"127.0.0.1:2"}"#).await;
    etcd.stop();

    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    sub.wait_for("a, from the file", has_ids(&["a"])).await;
    let state = watch_state(&registry, "echo").await;
    assert!(state.discovered && state.nodes == 1, "{state:?}");
    let text = std::fs::read_to_string(&file).expect("the file");
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let written_ms = value["written_ms"].as_u64().expect("written_ms");
    let written = std::time::UNIX_EPOCH + std::time::Duration::from_millis(written_ms);
    assert_eq!(
        state.snapshot_file_written,
        Some(written),
        "the set in force is the file's, with the file's time"
    );
    assert!(state.snapshot_file_age().is_some(), "{state:?}");
    let cause = state.last_error.expect("etcd's failure is kept");
    assert!(cause.contains(&etcd.endpoint()), "{cause}");
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("serving the service from the snapshot file"))
        .unwrap_or_else(|| panic!("the cold start is logged: {text}"));
    assert!(
        line.contains(&file.display().to_string()) && line.contains("s ago"),
        "the log line names the file and its age: {line}"
    );

    etcd.restart().await.expect("restart");
    sub.wait_for("b, from etcd", has_ids(&["b"])).await;
    let state = watch_state(&registry, "echo").await;
    assert_eq!(state.snapshot_file_written, None, "{state:?}");
    let written = wait_until(EVENTUALLY, || {
        let ids = file_ids(&file, "echo");
        async move { ids == Some(vec!["b".to_owned()]) }
    })
    .await;
    assert!(
        written,
        "etcd's set is written: {:?}",
        file_ids(&file, "echo")
    );
}

#[actix_rt::test]
async fn an_unreadable_snapshot_file_is_an_error_naming_it_and_is_ignored() {
    let (logs, _guard) = Logs::capture();
    let mut etcd = EtcdServer::start().await.expect("etcd");
    let dir = TempDir::new("snapshot-corrupt");
    let file = dir.0.join("nodes.json");
    std::fs::write(
        &file,
        br#"{"format":"grpc-cluster registry snapshot","version":1,"#,
    )
    .expect("written");
    let config = etcd.registry_config().with_snapshot_file(&file);
    let mut raw = etcd.client().await.expect("raw client");
    raw_put(&mut raw, &config, "a", r#"{"id":"a","addr":"127.0.0.1:1"}"#).await;
    etcd.stop();

    let registry = start_registry(&config).await;
    let mut sub = Subscriber::start(&registry, "echo").await;
    let state = wait_failed(&registry, "echo").await;
    assert!(
        !state.discovered,
        "nothing served from a broken file: {state:?}"
    );
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("ignoring the snapshot file")
                && l.contains(&file.display().to_string())
                && l.contains("not JSON")),
        "{text}"
    );

    etcd.restart().await.expect("restart");
    sub.wait_for("a, from etcd", has_ids(&["a"])).await;
    let written = wait_until(EVENTUALLY, || {
        let ids = file_ids(&file, "echo");
        async move { ids == Some(vec!["a".to_owned()]) }
    })
    .await;
    assert!(written, "the broken file is replaced by a good one");
}

#[actix_rt::test]
async fn a_watch_that_cannot_reach_etcd_keeps_a_one_line_cause_naming_the_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let config = RegistryConfig::default().with_endpoints([endpoint.as_str()]);
    let registry = start_registry(&config).await;
    let _sub = Subscriber::start(&registry, "echo").await;
    let state = wait_failed(&registry, "echo").await;
    let cause = state.last_error.expect("a cause");
    assert_eq!(
        &*cause,
        format!("etcd get /grpc-cluster/services/echo/ at {endpoint} failed: connection refused"),
    );
}
