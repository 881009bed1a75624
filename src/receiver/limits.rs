//! Descriptors: every connection holds one, and so do the node's own files (WAL segments, sled, the
//! output, the listeners). A node that runs out of them mid-flight cannot create its next WAL segment,
//! so it settles the question at start: [`prepare`] raises the soft `RLIMIT_NOFILE` to the hard one
//! and refuses a `receiver.max_connections` the limit cannot serve beside the node's own needs.
//!
//! The node's own needs are an estimate with a fixed reserve, [`OWN_RESERVE`]: standard streams, the
//! runtime's epoll and event descriptors, the sled store (a handful), the WAL's directory, the segment it
//! writes and the ones a commit or a replay reads, the local output's staging files and directories or
//! the HDFS client's connections, the checkpoint store and the heartbeat (control) connections. An
//! idle node holds about 15; the reserve leaves room for a commit and a takeover in progress. On top of
//! it each listener and each outbound (`raw-connect`) source holds one.

use crate::config::Config;

/// Descriptors kept for the node's own files and connections, whatever `max_connections` is.
pub const OWN_RESERVE: u64 = 128;

/// The open-files limit before and after [`raise_nofile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoFile {
    /// The soft limit the process was started with.
    pub was: u64,
    /// The soft limit now (the hard one, unless raising it failed).
    pub soft: u64,
    pub hard: u64,
}

/// `max_connections` cannot be served with the descriptors this process may have.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid configuration: receiver.max_connections: {max_connections} connections need {needed} \
     descriptors ({max_connections} + {own} for the node itself: WAL segments, sled, output, {listeners} \
     listener(s) and outbound sources, a reserve of {OWN_RESERVE}), but the open-files limit \
     (RLIMIT_NOFILE) is {limit}; set receiver.max_connections to at most {fits} or raise the hard limit \
     (ulimit -Hn, systemd LimitNOFILE=)"
)]
pub struct TooManyConnections {
    pub max_connections: u64,
    pub own: u64,
    pub listeners: u64,
    pub needed: u64,
    pub limit: u64,
    pub fits: u64,
}

/// Descriptors the node needs for itself: the reserve, plus one per listener and outbound source.
pub fn own_descriptors(cfg: &Config) -> (u64, u64) {
    let sockets = cfg.receiver.sources.len() as u64;
    (OWN_RESERVE + sockets, sockets)
}

/// Whether `cfg.receiver.max_connections` fits under an open-files limit of `limit`.
pub fn check(cfg: &Config, limit: u64) -> Result<(), TooManyConnections> {
    let (own, listeners) = own_descriptors(cfg);
    let max_connections = cfg.receiver.max_connections as u64;
    let needed = max_connections.saturating_add(own);
    if needed <= limit {
        return Ok(());
    }
    Err(TooManyConnections {
        max_connections,
        own,
        listeners,
        needed,
        limit,
        fits: limit.saturating_sub(own),
    })
}

/// Raises the soft open-files limit to the hard one (an unprivileged process may). Returns both; on
/// a platform or a failure where it cannot, the limits as they are.
pub fn raise_nofile() -> std::io::Result<NoFile> {
    imp::raise_nofile()
}

#[cfg(target_os = "linux")]
mod imp {
    use super::NoFile;

    pub fn raise_nofile() -> std::io::Result<NoFile> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let was: u64 = lim.rlim_cur;
        let hard: u64 = lim.rlim_max;
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: setrlimit reads the struct we own.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(NoFile {
            was,
            soft: hard,
            hard,
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::NoFile;

    pub fn raise_nofile() -> std::io::Result<NoFile> {
        Ok(NoFile {
            was: u64::MAX,
            soft: u64::MAX,
            hard: u64::MAX,
        })
    }
}

/// Allocations from this size up get their own mapping, given back to the system when freed.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Makes freed block buffers leave the process: glibc's malloc otherwise raises its mmap threshold
/// to the size of the largest buffer freed (up to 32 MiB), after which block-sized buffers come from
/// its arenas and what a flood of large blocks freed stays in the node's RSS ("and it stays there").
/// With a fixed threshold every buffer of a block is its own mapping, grown without copying and
/// unmapped when the block is durable.
pub fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called at start, before the runtime's threads
    // allocate much (and glibc serialises it anyway).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// At start: fixes the allocator's mmap threshold ([`return_large_buffers`]), raises the soft
/// open-files limit (logging both limits) and checks `max_connections` against it.
pub fn prepare(cfg: &Config) -> Result<NoFile, TooManyConnections> {
    return_large_buffers();
    let lim = match raise_nofile() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-files limit; not checking receiver.max_connections against it");
            return Ok(NoFile {
                was: u64::MAX,
                soft: u64::MAX,
                hard: u64::MAX,
            });
        }
    };
    tracing::info!(
        soft_was = lim.was,
        soft = lim.soft,
        hard = lim.hard,
        "open-files limit (RLIMIT_NOFILE): soft raised to the hard limit"
    );
    check(cfg, lim.soft)?;
    Ok(lim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_fits_the_smallest_common_hard_limit() {
        check(&Config::default(), 1024).expect("a node on the defaults starts under a 1024 limit");
    }

    #[test]
    fn max_connections_beyond_the_limit_less_the_reserve_is_refused_naming_key_limit_and_reserve() {
        let mut cfg = Config::default();
        cfg.receiver.max_connections = 1024;
        let err = check(&cfg, 1024).unwrap_err().to_string();
        assert!(
            err.contains("receiver.max_connections")
                && err.contains("limit (RLIMIT_NOFILE) is 1024")
                && err.contains("1024 + 130 for the node itself")
                && err.contains("at most 894"),
            "{err}"
        );
        check(&cfg, 1154).expect("1024 connections and 130 of its own fit 1154");
        cfg.receiver.max_connections = 1 << 20;
        check(&cfg, u64::MAX).expect("an unlimited limit serves anything");
    }
}
