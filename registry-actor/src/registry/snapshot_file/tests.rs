use super::*;

/// A fresh directory under the system's temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gc-snapshot-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("nodes.json")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PREFIX: &str = "/grpc-cluster/services";

fn set(service: &str, revision: i64, ids: &[&str]) -> NodesChanged {
    let nodes: NodeSet = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            Node::new(*id, service, format!("127.0.0.1:{}", 50051 + i))
                .expect("valid node")
                .with_version("1.2.0")
                .with_label("canary", "false")
        })
        .collect();
    NodesChanged {
        service: service.into(),
        nodes,
        revision,
    }
}

fn sets(all: &[NodesChanged]) -> BTreeMap<Arc<str>, NodesChanged> {
    all.iter().map(|s| (s.service.clone(), s.clone())).collect()
}

/// The error of reading `text` as a snapshot file, as a string.
fn read_error(dir: &Dir, text: &[u8]) -> String {
    std::fs::write(dir.file(), text).expect("written");
    read(&dir.file(), PREFIX).expect_err("refused").to_string()
}

#[test]
fn a_written_file_reads_back_every_set_in_key_order() {
    let dir = Dir::new("round-trip");
    let written = [set("echo", 12, &["b", "a", "c"]), set("other", 3, &[])];
    write(&dir.file(), PREFIX, &sets(&written)).expect("written");
    let loaded = read(&dir.file(), PREFIX).expect("valid").expect("present");
    let echo = &loaded.sets["echo"];
    let ids: Vec<&str> = echo.nodes.iter().map(Node::id).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(echo.revision, 12);
    let mut sorted: Vec<Node> = written[0].nodes.to_vec();
    sorted.sort_by(|a, b| a.id().cmp(b.id()));
    assert_eq!(echo.nodes.to_vec(), sorted);
    assert!(loaded.sets["other"].nodes.is_empty());
    let age = SystemTime::now()
        .duration_since(loaded.written)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "written just now: {age:?}");
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .expect("listable")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, ["nodes.json"], "no temporary file is left");
}

#[test]
fn no_file_is_no_snapshot_and_not_an_error() {
    let dir = Dir::new("missing");
    assert!(read(&dir.file(), PREFIX).expect("no error").is_none());
}

#[test]
fn corrupt_foreign_or_mismatched_files_are_errors_naming_the_file() {
    let dir = Dir::new("bad");
    let path = dir.file().display().to_string();
    let good = {
        write(&dir.file(), PREFIX, &sets(&[set("echo", 1, &["a"])])).expect("written");
        std::fs::read_to_string(dir.file()).expect("readable")
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good.as_bytes()[..good.len() / 2].to_vec(), "not JSON"),
        (b"\xff\xfe garbage".to_vec(), "not JSON"),
        (br#"{"hello":"world"}"#.to_vec(), "not a snapshot file"),
        (br#"[1,2,3]"#.to_vec(), "not a snapshot file"),
        (
            good.replace("\"version\":1", "\"version\":7").into_bytes(),
            "version 7",
        ),
        (
            good.replace(PREFIX, "/elsewhere").into_bytes(),
            "written for prefix `/elsewhere`",
        ),
        (
            good.replace("127.0.0.1:50051", "127.0.0.1:99999")
                .into_bytes(),
            "/grpc-cluster/services/echo/a",
        ),
        (
            good.replace("\"revision\":1", "\"revision\":\"x\"")
                .into_bytes(),
            "invalid snapshot: invalid type: string \"x\", expected i64",
        ),
    ];
    for (text, says) in cases {
        let err = read_error(&dir, &text);
        assert!(
            err.contains(&path) && err.contains(says),
            "`{err}` should name {path} and say {says:?}"
        );
    }
    let twice = good.replace(
        "\"nodes\":[",
        "\"nodes\":[{\"id\":\"a\",\"addr\":\"127.0.0.1:1\"},",
    );
    let err = read_error(&dir, twice.as_bytes());
    assert!(err.contains("`a`") && err.contains("twice"), "{err}");
}

#[test]
fn a_file_above_the_limit_is_refused_without_reading_it_all() {
    let dir = Dir::new("large");
    let file = std::fs::File::create(dir.file()).expect("created");
    file.set_len(MAX_FILE_BYTES + 1).expect("sparse file");
    let err = read(&dir.file(), PREFIX)
        .expect_err("too large")
        .to_string();
    assert!(
        err.contains(&dir.file().display().to_string()) && err.contains("larger than the limit"),
        "{err}"
    );
}

#[test]
fn a_write_into_a_missing_directory_is_an_error_naming_the_file() {
    let dir = Dir::new("no-dir");
    let path = dir.0.join("absent").join("nodes.json");
    let err = write(&path, PREFIX, &sets(&[set("echo", 1, &["a"])]))
        .expect_err("no directory")
        .to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("cannot write"),
        "{err}"
    );
}

#[test]
fn the_target_never_writes_older_contents_over_newer_ones() {
    let dir = Dir::new("order");
    let target = Target {
        path: dir.file(),
        prefix: PREFIX.to_owned(),
        written: Mutex::default(),
    };
    let newer = Contents {
        changes: 2,
        sets: sets(&[set("echo", 9, &["new"])]),
    };
    let older = Contents {
        changes: 1,
        sets: sets(&[set("echo", 8, &["old"])]),
    };
    target.write(&newer);
    target.write(&older);
    let loaded = read(&dir.file(), PREFIX).expect("valid").expect("present");
    assert_eq!(loaded.sets["echo"].revision, 9);
    assert_eq!(loaded.sets["echo"].nodes[0].id(), "new");
}

#[test]
fn open_keeps_the_files_other_services_and_records_changes_over_them() {
    let dir = Dir::new("merge");
    write(
        &dir.file(),
        PREFIX,
        &sets(&[set("echo", 1, &["a"]), set("billing", 4, &["b1", "b2"])]),
    )
    .expect("written");
    let file = SnapshotFile::open(&dir.file(), PREFIX);
    let (cached, _) = file.cached("echo").expect("echo is in the file");
    assert_eq!(cached.nodes[0].id(), "a");
    file.record(&set("echo", 7, &["x", "y"]));
    file.flush();
    let loaded = read(&dir.file(), PREFIX).expect("valid").expect("present");
    assert_eq!(loaded.sets["echo"].revision, 7);
    assert_eq!(loaded.sets["echo"].nodes.len(), 2);
    assert_eq!(loaded.sets["billing"].nodes.len(), 2, "kept as read");
    // What was read at start-up stays what a cold start serves.
    assert_eq!(file.cached("echo").expect("kept").0.revision, 1);
}

#[test]
fn open_ignores_an_invalid_file_and_overwrites_it_on_the_first_change() {
    let dir = Dir::new("replace");
    std::fs::write(dir.file(), b"{ not json").expect("written");
    let file = SnapshotFile::open(&dir.file(), PREFIX);
    assert!(file.cached("echo").is_none());
    file.record(&set("echo", 2, &["a"]));
    file.flush();
    let loaded = read(&dir.file(), PREFIX)
        .expect("valid now")
        .expect("present");
    assert_eq!(loaded.sets["echo"].nodes[0].id(), "a");
}

/// The count of changes written, and of writes.
fn written(file: &SnapshotFile) -> (u64, u64) {
    let written = file.target.written.lock().expect("not poisoned");
    (written.changes, written.writes)
}

#[tokio::test(start_paused = true)]
async fn changes_during_the_write_interval_are_written_once_together() {
    let dir = Dir::new("debounce");
    let file = SnapshotFile::open(&dir.file(), PREFIX);
    let writer = tokio::spawn(file.writer());
    file.record(&set("echo", 1, &["a"]));
    // The first change is written at once. Busy waiting keeps the paused
    // clock still: the writer's interval cannot pass meanwhile.
    while written(&file).0 < 1 {
        tokio::task::yield_now().await;
    }
    // Each change gives the writer its turns: a writer without an interval
    // would write many of them.
    for revision in 2..=50 {
        file.record(&set("echo", revision, &["a", "b"]));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(written(&file), (1, 1), "nothing more within the interval");
    // Idle now: the (paused) clock moves on to the end of the interval; the
    // time passing is what is under test, bounded by two intervals.
    let deadline = tokio::time::Instant::now() + 2 * WRITE_INTERVAL;
    while written(&file).0 < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the changes are written within the interval: {:?}",
            written(&file)
        );
        tokio::time::sleep(WRITE_INTERVAL / 10).await;
    }
    assert_eq!(written(&file), (50, 2), "49 changes, one write");
    let loaded = read(&dir.file(), PREFIX).expect("valid").expect("present");
    assert_eq!(loaded.sets["echo"].revision, 50);
    drop(file);
    writer.await.expect("the writer ends with its SnapshotFile");
}

#[test]
fn every_write_has_a_temporary_file_of_its_own_beside_the_file() {
    let dir = Dir::new("temp-names");
    let file = dir.file();
    let (a, b) = (temp_path(&file), temp_path(&file));
    assert_ne!(a, b, "two writes of one file, one temporary name");
    assert_eq!(a.parent(), file.parent());
    assert_eq!(b.parent(), file.parent());
}

#[test]
fn writers_of_one_file_on_many_threads_all_succeed_and_leave_a_whole_file() {
    let dir = Dir::new("many-writers");
    let file = dir.file();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let file = &file;
            scope.spawn(move || {
                for i in 0..25 {
                    let all = sets(&[set("echo", i, &["a", "b"]), set("other", t, &["c"])]);
                    write(file, PREFIX, &all).expect("every write succeeds");
                }
            });
        }
    });
    let loaded = read(&file, PREFIX).expect("readable").expect("a file");
    assert_eq!(loaded.sets.len(), 2);
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
