//! Free space: what the node's disk reserve (`wal.min_free`) is checked against, and how an I/O
//! error says the disk is full.

use std::io;
use std::path::Path;

/// Bytes an unprivileged writer may still use on the file system holding `path` (statvfs
/// `f_bavail * f_frsize`). `path` may not exist yet: its nearest existing ancestor is asked.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let mut at = path;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => {
                at = Path::new(".");
                break;
            }
        }
    }
    statvfs_available(at)
}

#[cfg(target_os = "linux")]
fn statvfs_available(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(target_os = "linux"))]
fn statvfs_available(_path: &Path) -> io::Result<u64> {
    Ok(u64::MAX)
}

/// Whether an I/O error says the disk or the quota is full (ENOSPC, EDQUOT).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_reported_for_a_path_that_does_not_exist_yet() {
        let tmp = tempfile::tempdir().unwrap();
        let here = free_space(tmp.path()).unwrap();
        assert!(here > 0);
        assert!(free_space(&tmp.path().join("not/yet")).unwrap() > 0);
    }

    #[test]
    fn enospc_and_edquot_are_no_space_and_other_errors_are_not() {
        assert!(is_no_space(&io::Error::from_raw_os_error(28)));
        assert!(is_no_space(&io::Error::from_raw_os_error(122)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(5)));
    }
}
