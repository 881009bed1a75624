//! A node a bench runs as a child process of this executable: what /proc says of it, and the SIGTERM
//! that stops it cleanly.

use std::process::Command;

/// `VmRSS` and `VmHWM` of a process, in bytes.
pub fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// SIGTERM, so the node commits and exits cleanly.
pub(super) fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// `write_bytes` of `/proc/<pid>/io`: bytes this process caused to be written to storage.
pub(super) fn proc_write_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}
