//! What this process uses: CPU time and resident memory.

use std::time::Duration;

/// CPU time (user + system) of every thread of this process so far, living or
/// ended: what `getrusage(RUSAGE_SELF)` adds up, read from the process CPU
/// clock (nanosecond resolution). Zero with `LOAD_NO_CPU` set: the clock is
/// read through the vDSO, which valgrind cannot run.
pub(crate) fn process_cpu() -> Duration {
    if std::env::var_os("LOAD_NO_CPU").is_some() {
        return Duration::ZERO;
    }
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// A `Vm*` line of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB; 0 when
/// absent.
pub(crate) fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The load average (1, 5 and 15 minutes) of the machine.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
