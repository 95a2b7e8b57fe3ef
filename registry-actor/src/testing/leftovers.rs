//! What test processes that died without dropping their fixtures (a crash,
//! a signal, a timeout's kill) left behind: their etcd processes and data
//! directories, cleaned up by the first fixture the next process starts.
//!
//! A fixture's directory is named `{prefix}-{pid}-…` after the test process
//! that made it, and each member's directory holds its etcd's pid. Where
//! `/proc` says which processes live (Linux), a directory whose test process
//! is gone is removed, and the etcd recorded in it is killed when `/proc`
//! shows it still running on that directory's data. (A test process of
//! another pid namespace sharing the temp dir looks gone from here.)

use std::path::{Path, PathBuf};
use std::process::Command;

/// The name prefix of an [`EtcdServer`](super::EtcdServer)'s directory.
pub(super) const SERVER: &str = "gc-test";
/// The name prefix of an [`EtcdCluster`](super::EtcdCluster)'s directory.
pub(super) const CLUSTER: &str = "gc-cluster";
const PREFIXES: [&str; 2] = [SERVER, CLUSTER];

/// The file in a member's directory holding its etcd's pid.
const PID_FILE: &str = "etcd.pid";

/// Records `pid` as the etcd of the member whose files live in `dir`.
pub(super) fn record_pid(dir: &Path, pid: u32) {
    // Only a later cleanup reads it: failing to write loses nothing else.
    let _ = std::fs::write(dir.join(PID_FILE), pid.to_string());
}

/// [`clean`]s the temp dir, once per process: what dies after that is the
/// next process's to clean.
pub(super) fn clean_once() {
    static CLEANED: std::sync::Once = std::sync::Once::new();
    CLEANED.call_once(|| clean(&std::env::temp_dir()));
}

/// Removes the fixtures' directories under `temp` whose test process is
/// gone, killing the etcd recorded in each first. Does nothing where `/proc`
/// does not list the processes.
pub(super) fn clean(temp: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(owner_of) else {
            continue;
        };
        if owner == std::process::id() || alive(owner) {
            continue;
        }
        let dir = entry.path();
        for member in member_dirs(&dir) {
            if let Some(pid) = recorded_pid(&member).filter(|pid| runs_on(*pid, &member)) {
                kill(pid);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// SIGKILL to `pid`; a failure leaves the process as it was found.
fn kill(pid: u32) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status();
}

/// The test process that made the fixture directory `name`, when `name` is
/// one.
fn owner_of(name: &str) -> Option<u32> {
    PREFIXES.iter().find_map(|prefix| {
        name.strip_prefix(prefix)?
            .strip_prefix('-')?
            .split('-')
            .next()?
            .parse()
            .ok()
    })
}

/// Whether process `pid` runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A fixture directory's member directories: itself (a single server) and
/// its subdirectories (a cluster's members).
fn member_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    dirs
}

fn recorded_pid(member: &Path) -> Option<u32> {
    std::fs::read_to_string(member.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a running etcd serving the data of `member`: not some
/// other process that took the pid since.
fn runs_on(pid: u32, member: &Path) -> bool {
    if !alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let data = member.join("data");
    cmdline
        .split(|b| *b == 0)
        .any(|arg| Path::new(std::str::from_utf8(arg).unwrap_or_default()) == data)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::member::{temp_dir, Member};
    use super::*;

    /// What the test made, killed and removed however it ends.
    struct Made {
        root: PathBuf,
        etcd: Option<u32>,
    }

    impl Drop for Made {
        fn drop(&mut self) {
            if let Some(pid) = self.etcd.filter(|pid| alive(*pid)) {
                kill(pid);
            }
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    /// The pid of a process that has ended.
    fn ended_pid() -> u32 {
        let mut child = Command::new("true").spawn().expect("run `true`");
        let pid = child.id();
        child.wait().expect("reaped");
        pid
    }

    #[test]
    fn fixture_names_give_their_test_process() {
        assert_eq!(owner_of("gc-test-4242-0-1700000000"), Some(4242));
        assert_eq!(owner_of("gc-cluster-17-3-1700000000"), Some(17));
        assert_eq!(owner_of("gc-testing-17-3"), None);
        assert_eq!(owner_of("gc-test-x-3"), None);
        assert_eq!(owner_of("other-17-3"), None);
    }

    #[test]
    fn the_etcd_and_directory_of_a_dead_test_process_are_cleaned_and_others_kept() {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let root = temp_dir("leftovers");
        std::fs::create_dir_all(&root).expect("root");
        let mut made = Made {
            root: root.clone(),
            etcd: None,
        };
        // A fixture of a test process that died: its etcd still runs.
        let dead = root.join(format!("gc-test-{}-0-1", ended_pid()));
        let mut member = Member::new("leftover".into(), dead.clone()).expect("member");
        member
            .spawn(&member.initial_cluster_entry(), "leftover")
            .expect("etcd runs");
        let etcd = member.pid().expect("pid");
        made.etcd = Some(etcd);
        // As a crash leaves it: the process is never killed by its fixture.
        std::mem::forget(member);
        // Its command line shows once its exec is done; polled with a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !runs_on(etcd, &dead) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(runs_on(etcd, &dead), "the etcd {etcd} is found on its data");
        // A fixture of a test process that runs: this one.
        let live = root.join(format!("gc-cluster-{}-0-2", std::process::id()));
        std::fs::create_dir_all(live.join("m0")).expect("live dir");

        clean(&root);

        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(etcd) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(etcd), "the leftover etcd {etcd} still runs");
        assert!(!dead.exists(), "the leftover directory is removed");
        assert!(live.exists(), "a running test's directory is kept");
        drop(made);
    }
}
