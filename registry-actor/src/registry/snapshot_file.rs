//! The snapshot file (`registry.snapshot_file`): the last known node set of
//! every watched service on disk, so that a registry started while etcd cannot
//! be read still knows where the servers are.
//!
//! The file is one JSON object:
//!
//! ```json
//! {"format":"grpc-cluster registry snapshot","version":1,
//!  "prefix":"/grpc-cluster/services","written_ms":1764650000000,
//!  "services":{"echo":{"revision":12,"nodes":[{"id":"echo-1","addr":"127.0.0.1:50051", …}]}}}
//! ```
//!
//! Nodes are in the registry's value format and are checked on reading like
//! values read from etcd; one that is not valid makes the whole file invalid.
//! A file of another format, another version or another prefix is refused, as
//! is one above [`MAX_FILE_BYTES`].
//!
//! Writing: each change of a set is recorded in memory; a writer task writes
//! the file at once on the first change, then at most once per
//! [`WRITE_INTERVAL`], always ending with the newest sets. Each write goes to a
//! temporary file beside the target, is synced, then renamed over it: a
//! reader finds the old file or the new one, never part of one. Services of
//! the file that this registry does not watch are written back as they were
//! read at start-up; two programs running at once on one file overwrite each
//! other's changes, so each program has a file of its own.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info};

use super::messages::NodesChanged;
use crate::node::node_key;
use crate::{Error, Node, NodeSet};

/// The largest snapshot file read or written: 64 MiB, room for several
/// hundred thousand nodes.
pub(crate) const MAX_FILE_BYTES: u64 = 64 << 20;

/// The shortest time between two writes of the file.
pub(crate) const WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// The `format` field that marks a snapshot file.
const FORMAT: &str = "grpc-cluster registry snapshot";

/// The version of the layout this code reads and writes.
const VERSION: u64 = 1;

#[derive(Serialize)]
struct FileOut<'a> {
    format: &'static str,
    version: u64,
    prefix: &'a str,
    written_ms: u64,
    services: BTreeMap<&'a str, ServiceOut<'a>>,
}

#[derive(Serialize)]
struct ServiceOut<'a> {
    revision: i64,
    nodes: &'a NodeSet,
}

#[derive(Deserialize)]
struct FileIn {
    prefix: String,
    written_ms: u64,
    services: BTreeMap<String, ServiceIn>,
}

#[derive(Deserialize)]
struct ServiceIn {
    revision: i64,
    nodes: Vec<serde_json::Value>,
}

/// The sets read from a snapshot file, and when it was written.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) written: SystemTime,
    pub(crate) sets: BTreeMap<Arc<str>, NodesChanged>,
}

/// Reads the snapshot file at `path`, written for keys under `prefix`.
/// `Ok(None)` when there is no file.
///
/// # Errors
///
/// [`Error::SnapshotFile`] naming `path` when it cannot be read, is above
/// [`MAX_FILE_BYTES`], is not a snapshot file of this version and prefix, or
/// holds a node that is not valid.
pub(crate) fn read(path: &Path, prefix: &str) -> Result<Option<Loaded>, Error> {
    let bad = |reason: String| Error::SnapshotFile {
        path: path.to_owned(),
        reason,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(format!("cannot open it: {e}"))),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(bad(format!(
            "larger than the limit of {MAX_FILE_BYTES} bytes"
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("not JSON ({e}); not a snapshot file")))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(bad(format!(
            "not a snapshot file (no \"format\": \"{FORMAT}\")"
        )));
    }
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    if version != Some(VERSION) {
        return Err(bad(format!(
            "version {} is not the version read here ({VERSION})",
            value.get("version").unwrap_or(&serde_json::Value::Null)
        )));
    }
    let file: FileIn =
        serde_json::from_value(value).map_err(|e| bad(format!("invalid snapshot: {e}")))?;
    if file.prefix != prefix {
        return Err(bad(format!(
            "written for prefix `{}`, not registry.prefix `{prefix}`",
            file.prefix
        )));
    }
    let mut sets = BTreeMap::new();
    for (service, set) in file.services {
        let nodes = decode_set(prefix, &service, set.nodes).map_err(bad)?;
        let service: Arc<str> = service.into();
        let changed = NodesChanged {
            service: service.clone(),
            nodes,
            revision: set.revision,
        };
        sets.insert(service, changed);
    }
    Ok(Some(Loaded {
        written: UNIX_EPOCH + Duration::from_millis(file.written_ms),
        sets,
    }))
}

/// The nodes of one service, checked like values from etcd, in key order.
fn decode_set(
    prefix: &str,
    service: &str,
    values: Vec<serde_json::Value>,
) -> Result<NodeSet, String> {
    let mut nodes = BTreeMap::new();
    for value in values {
        let Some(id) = value.get("id").and_then(|id| id.as_str()) else {
            return Err(format!("a node of service `{service}` has no id"));
        };
        let key = node_key(prefix, service, id);
        let bytes = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
        let node = Node::decode(&key, service, &bytes).map_err(|e| e.to_string())?;
        if nodes.insert(id.to_owned(), node).is_some() {
            return Err(format!(
                "node `{id}` of service `{service}` is listed twice"
            ));
        }
    }
    Ok(nodes.into_values().collect::<Vec<_>>().into())
}

/// Writes `sets` to `path` atomically: a temporary file beside it, synced,
/// then renamed over it.
fn write(path: &Path, prefix: &str, sets: &BTreeMap<Arc<str>, NodesChanged>) -> Result<(), Error> {
    let bad = |reason: String| Error::SnapshotFile {
        path: path.to_owned(),
        reason,
    };
    let written_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let out = FileOut {
        format: FORMAT,
        version: VERSION,
        prefix,
        written_ms,
        services: sets
            .iter()
            .map(|(service, set)| {
                let set = ServiceOut {
                    revision: set.revision,
                    nodes: &set.nodes,
                };
                (&**service, set)
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&out).map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(bad(format!(
            "not written: {} bytes is above the limit of {MAX_FILE_BYTES}",
            bytes.len()
        )));
    }
    let temp = temp_path(path);
    let written = std::fs::File::create(&temp)
        .and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        bad(format!("cannot write it: {e}"))
    })
}

/// `dir/.name.PID.N.tmp` beside `path`: the same file system, so the rename
/// is atomic; a name of its own for every write, even by two registries of
/// one process given the same file.
fn temp_path(path: &Path) -> PathBuf {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map_or_else(|| "snapshot".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// The sets to write, and a count of the changes recorded in them.
#[derive(Debug, Clone, Default)]
struct Contents {
    changes: u64,
    sets: BTreeMap<Arc<str>, NodesChanged>,
}

/// Where the sets go, and how far the file is written.
#[derive(Debug)]
struct Target {
    path: PathBuf,
    prefix: String,
    /// Writes take turns under this lock (they run on blocking threads or
    /// when the registry goes away, never in async code).
    written: Mutex<Written>,
}

/// How far the file is written.
#[derive(Debug, Default)]
struct Written {
    /// The count of changes the file holds.
    changes: u64,
    /// Successful writes so far.
    writes: u64,
    /// Whether the last write failed (logged once per run of failures).
    failing: bool,
}

impl Target {
    /// Writes `contents` unless the file already holds them or newer ones.
    fn write(&self, contents: &Contents) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if contents.changes <= written.changes {
            return;
        }
        match write(&self.path, &self.prefix, &contents.sets) {
            Ok(()) => {
                if written.failing {
                    info!(file = %self.path.display(), "snapshot file written again");
                }
                written.changes = contents.changes;
                written.writes += 1;
                written.failing = false;
            }
            Err(e) => {
                if !written.failing {
                    error!(error = %e, "cannot keep the snapshot file");
                }
                written.failing = true;
            }
        }
    }
}

/// The snapshot file of one registry: the sets read from it at start-up, and
/// the sets to write. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    target: Arc<Target>,
    loaded: Option<Loaded>,
    contents: watch::Sender<Contents>,
}

impl SnapshotFile {
    /// Reads the file at `path` (an error is logged, naming the file, and the
    /// file is ignored); the sets it holds are kept and written back.
    pub(crate) fn open(path: &Path, prefix: &str) -> Self {
        let loaded = match read(path, prefix) {
            Ok(loaded) => loaded,
            Err(e) => {
                error!(error = %e, "ignoring the snapshot file");
                None
            }
        };
        let contents = Contents {
            changes: 0,
            sets: loaded.as_ref().map(|l| l.sets.clone()).unwrap_or_default(),
        };
        Self {
            target: Arc::new(Target {
                path: path.to_owned(),
                prefix: prefix.to_owned(),
                written: Mutex::default(),
            }),
            loaded,
            contents: watch::channel(contents).0,
        }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.target.path
    }

    /// The file's set of `service` as read at start-up, and the file's age.
    pub(crate) fn cached(&self, service: &str) -> Option<(NodesChanged, SystemTime)> {
        let loaded = self.loaded.as_ref()?;
        Some((loaded.sets.get(service)?.clone(), loaded.written))
    }

    /// Records a set delivered by etcd, to be written.
    pub(crate) fn record(&self, changed: &NodesChanged) {
        self.contents.send_modify(|c| {
            c.changes += 1;
            c.sets.insert(changed.service.clone(), changed.clone());
        });
    }

    /// The writer: writes each recorded change, at once after a quiet
    /// [`WRITE_INTERVAL`], else when that interval has passed; ends when this
    /// `SnapshotFile` is dropped.
    pub(crate) fn writer(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut changes = self.contents.subscribe();
        let target = self.target.clone();
        async move {
            while changes.changed().await.is_ok() {
                let contents = changes.borrow_and_update().clone();
                let target = target.clone();
                let _ = tokio::task::spawn_blocking(move || target.write(&contents)).await;
                tokio::time::sleep(WRITE_INTERVAL).await;
            }
        }
    }

    /// Writes what the writer has not written yet, now, on this thread.
    pub(crate) fn flush(&self) {
        let contents = self.contents.borrow().clone();
        self.target.write(&contents);
    }
}

impl Drop for SnapshotFile {
    /// A registry that goes away (its actor stopped, its system or process
    /// ending) before the writer's next turn leaves its newest sets written.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests;
