//! A crate outside this workspace that depends on grpc-cluster by path, as a
//! user's crate does, built by cargo into this workspace's own target
//! directory so that it reuses the dependencies built for the tests.
//!
//! Reuse needs the same resolved versions (the workspace's `Cargo.lock` is
//! copied), the same profile (the workspace's `[profile.…]` tables are
//! copied, and grpc-cluster's own packages, members there and dependencies
//! here, get the members' settings), an environment without the variables
//! cargo sets for tests (see [`set_for_tests`]), and the same features. The
//! features differ once: the tests' tokio has those of the dev-dependencies
//! (`process`, `io-util`, `test-util`), a user's crate only those of
//! grpc-cluster's dependencies, so the first such build in a target directory
//! compiles tokio and the packages above it again (about 25 packages); later
//! builds compile the downstream crate alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::repo_root;

/// The workspace's packages, built with the members' profile.
const OWN_PACKAGES: [&str; 4] = [
    "grpc-cluster",
    "registry-actor",
    "cluster-client",
    "server-kit",
];

/// A downstream crate in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct Downstream {
    dir: PathBuf,
}

/// The outcome of building a [`Downstream`] crate.
#[derive(Debug)]
pub struct Built {
    /// Whether cargo succeeded.
    pub ok: bool,
    /// How long `cargo build` took.
    pub elapsed: Duration,
    /// The packages cargo compiled (`Compiling NAME vX`), in order.
    pub compiled: Vec<String>,
    /// Everything cargo printed.
    pub stderr: String,
}

impl Downstream {
    /// A crate named `name` whose `[dependencies]` table is `dependencies`
    /// (`{repo}` stands for this repository's path), with a binary
    /// `src/bin/{bin}.rs` per `(bin, source)`.
    pub fn new(name: &str, dependencies: &str, bins: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("gc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src/bin")).expect("crate dir");
        let root = repo_root();
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
        let profiles = workspace_profiles(&workspace);
        let members: String = OWN_PACKAGES
            .iter()
            .map(|p| format!("\n[profile.dev.package.{p}]\ndebug = \"line-tables-only\"\n"))
            .collect();
        let dependencies = dependencies.replace("{repo}", &root.display().to_string());
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dependencies]\n{dependencies}\n\n\
             # Its own workspace, not the enclosing directory's.\n[workspace]\n\n{profiles}{members}"
        );
        std::fs::write(dir.join("Cargo.toml"), manifest).expect("Cargo.toml written");
        std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("Cargo.lock copied");
        for (bin, source) in bins {
            std::fs::write(dir.join("src/bin").join(format!("{bin}.rs")), source)
                .expect("source written");
        }
        Self { dir }
    }

    /// Runs `cargo build --offline` with this workspace's target directory.
    pub fn build(&self) -> Built {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        for (name, _) in std::env::vars_os() {
            if set_for_tests(&name.to_string_lossy()) {
                command.env_remove(name);
            }
        }
        let started = Instant::now();
        let out = command
            .args(["build", "--offline", "--bins"])
            .current_dir(&self.dir)
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .expect("cargo runs");
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let compiled = stderr
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("Compiling "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        Built {
            ok: out.status.success(),
            elapsed,
            compiled,
            stderr,
        }
    }

    /// The path of binary `bin` once built.
    pub fn binary(&self, bin: &str) -> PathBuf {
        target_dir().join("debug").join(bin)
    }

    /// The crate's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `name` is a variable cargo sets for the test binary itself
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, `OUT_DIR`…). A cargo run from the
/// test must not inherit them: build scripts watch some of them (ring's
/// watches `CARGO_MANIFEST_DIR`, `CARGO_PKG_*` and `OUT_DIR` in cargo's own
/// environment), so with them set every such package and all that depend on
/// it are rebuilt, and rebuilt again by the workspace's next build.
fn set_for_tests(name: &str) -> bool {
    const EXACT: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    EXACT.contains(&name) || name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_BIN_EXE_")
}

/// Every `[profile.…]` table of the workspace manifest, as written.
fn workspace_profiles(manifest: &str) -> String {
    let mut inside = false;
    let mut out = String::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            inside = line.starts_with("[profile.");
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// This workspace's target directory: `CARGO_TARGET_DIR`, else the one this
/// test binary was built into (`target/debug/deps/…`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .expect("target/debug/deps/<test>")
        .to_owned()
}
