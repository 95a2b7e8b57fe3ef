//! Helpers of the fault-injection suites (`tests/faults.rs`,
//! `tests/etcd_faults.rs`), by concern:
//!
//! * [`EchoProcess`] — an `echo-server` child process, killed (SIGKILL) and
//!   reaped when dropped, so a failing test leaves no server behind; SIGKILL and
//!   SIGTERM on demand; its shutdown report and its own processed count on exit.
//! * [`Load`] — a paced, bounded load from a `ClusterClient` (a rate, a count
//!   and a time limit) in which every call ends as a [`Record`]: a success with
//!   its node and attempts, an error with its code and attempts, or a hang (no
//!   answer within the call's deadline plus [`HANG_MARGIN`]).
//! * [`InProcessEchoes`] — echo servers on their own runtime, registered in etcd.
//! * [`EtcdFixture`] — the etcd a scenario runs on (one server or a cluster),
//!   and probes of leases, revisions and history.
//! * [`Scenario`] — the set-up every process scenario starts from.

mod etcd;
mod load;
mod process;
mod scenario;

use std::time::Duration;

pub use etcd::*;
pub use load::*;
pub use process::*;
pub use scenario::*;

/// How long a child process may take to start serving, or to exit after
/// SIGTERM (deregister + lame duck + drain, with etcd possibly slow).
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(30);

/// How long past its own deadline a call may stay unanswered before the load
/// records it as hung.
pub const HANG_MARGIN: Duration = Duration::from_secs(5);

/// The fault tests run one at a time: each starts processes and a load whose
/// accounting must not depend on what a neighbour test does to the 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the other fault tests to finish; hold the guard for the whole test
/// (a panicking test releases it while unwinding).
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}
