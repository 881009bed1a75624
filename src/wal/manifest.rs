//! The WAL manifest: a small file *outside* the segment directory that records which log the
//! directory holds and how far it reaches, so that recovery can tell a log that lost segments
//! (or synced records) from one that never had them. The layout and the rules are in the module
//! documentation of [`super`], section "Manifest".

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::segment::{io_err, sync_dir};
use super::{Lsn, WalError};

const SLOT_MAGIC: [u8; 8] = *b"HIWALMAN";
const MARK_MAGIC: [u8; 8] = *b"HIWALDUR";
const VERSION: u32 = 1;
const SLOT_LEN: usize = 64;
/// Two manifest slots, then the durable mark.
pub(crate) const MANIFEST_LEN: u64 = 3 * SLOT_LEN as u64;
const MARK_AT: u64 = 2 * SLOT_LEN as u64;

/// What the manifest says about the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub wal_id: u64,
    /// The first LSN (the segment id) of the oldest segment the log keeps.
    pub first_segment: Lsn,
    /// The segment id of the newest segment the log created.
    pub last_segment: Lsn,
}

/// The durable mark: the highest LSN a completed fdatasync covers, and where it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Mark {
    pub wal_id: u64,
    pub lsn: Lsn,
    pub segment: Lsn,
    pub offset: u64,
}

/// What a manifest file held when the log was opened.
#[derive(Clone, Debug, Default)]
pub(crate) struct Found {
    pub extent: Option<Extent>,
    pub mark: Option<Mark>,
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn dword(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// `magic | version u32 | reserved u32 | a u64 | b u64 | c u64 | d u64 | reserved (12) | crc32 u32`
fn encode(magic: [u8; 8], fields: [u64; 4]) -> [u8; SLOT_LEN] {
    let mut buf = [0u8; SLOT_LEN];
    buf[0..8].copy_from_slice(&magic);
    buf[8..12].copy_from_slice(&VERSION.to_le_bytes());
    for (i, f) in fields.iter().enumerate() {
        buf[16 + 8 * i..24 + 8 * i].copy_from_slice(&f.to_le_bytes());
    }
    let crc = crc32fast::hash(&buf[..SLOT_LEN - 4]);
    buf[SLOT_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn decode(magic: [u8; 8], buf: &[u8]) -> Option<[u64; 4]> {
    if buf.len() < SLOT_LEN
        || buf[0..8] != magic
        || word(buf, 8) != VERSION
        || word(buf, SLOT_LEN - 4) != crc32fast::hash(&buf[..SLOT_LEN - 4])
    {
        return None;
    }
    Some([
        dword(buf, 16),
        dword(buf, 24),
        dword(buf, 32),
        dword(buf, 40),
    ])
}

/// The open manifest file.
pub(crate) struct Manifest {
    path: PathBuf,
    file: File,
    generation: u64,
    extent: Extent,
}

/// Reads the manifest at `path`: Ok(None) if there is none, an error naming the file if it is
/// unreadable or neither slot is intact.
pub(crate) fn read(path: &Path) -> Result<Option<Found>, WalError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "read WAL manifest")(e)),
    };
    let slot = |i: usize| {
        bytes
            .get(i * SLOT_LEN..(i + 1) * SLOT_LEN)
            .and_then(|b| decode(SLOT_MAGIC, b))
    };
    let best = [slot(0), slot(1)]
        .into_iter()
        .flatten()
        .max_by_key(|f| f[0]);
    let Some([_, wal_id, first_segment, last_segment]) = best else {
        return Err(WalError::Manifest {
            path: path.to_path_buf(),
            reason: format!(
                "neither copy of the log's extent is intact ({} bytes)",
                bytes.len()
            ),
        });
    };
    let mark = bytes
        .get(MARK_AT as usize..MARK_AT as usize + SLOT_LEN)
        .and_then(|b| decode(MARK_MAGIC, b))
        .map(|[wal_id, lsn, segment, offset]| Mark {
            wal_id,
            lsn,
            segment,
            offset,
        });
    Ok(Some(Found {
        extent: Some(Extent {
            wal_id,
            first_segment,
            last_segment,
        }),
        mark,
    }))
}

impl Manifest {
    /// Creates a manifest for `extent` with `mark` (write to `<path>.tmp`, fdatasync, rename,
    /// fsync the directory), replacing any file at `path`.
    pub(crate) fn create(path: &Path, extent: Extent, mark: Mark) -> Result<Manifest, WalError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp, "create WAL manifest"))?;
        let mut buf = Vec::with_capacity(MANIFEST_LEN as usize);
        let slot = encode(
            SLOT_MAGIC,
            [1, extent.wal_id, extent.first_segment, extent.last_segment],
        );
        // Generation g lives in slot g % 2: the first in slot 1, its successor over slot 0.
        buf.extend_from_slice(&[0u8; SLOT_LEN]);
        buf.extend_from_slice(&slot);
        buf.extend_from_slice(&encode_mark(mark));
        let written = file
            .write_all_at(&buf, 0)
            .and_then(|()| file.sync_data())
            .map_err(io_err(&tmp, "write WAL manifest"));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, path).map_err(io_err(path, "rename WAL manifest into place"))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            file,
            generation: 1,
            extent,
        })
    }

    /// Opens an existing, intact manifest for updates in place.
    pub(crate) fn open(path: &Path, found: &Found) -> Result<Manifest, WalError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path, "open WAL manifest"))?;
        let bytes = fs::read(path).map_err(io_err(path, "read WAL manifest"))?;
        let generation = (0..2)
            .filter_map(|i| bytes.get(i * SLOT_LEN..(i + 1) * SLOT_LEN))
            .filter_map(|b| decode(SLOT_MAGIC, b))
            .map(|f| f[0])
            .max()
            .unwrap_or(0);
        let extent = found.extent.ok_or_else(|| WalError::Manifest {
            path: path.to_path_buf(),
            reason: "no extent".into(),
        })?;
        Ok(Manifest {
            path: path.to_path_buf(),
            file,
            generation,
            extent,
        })
    }

    pub(crate) fn extent(&self) -> Extent {
        self.extent
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Records a new extent durably: written over the older of the two slots, then fdatasync'd,
    /// so a torn write leaves the other slot intact. Needs no free space.
    pub(crate) fn set_extent(&mut self, extent: Extent) -> Result<(), WalError> {
        if extent == self.extent {
            return Ok(());
        }
        let generation = self.generation + 1;
        let slot = encode(
            SLOT_MAGIC,
            [
                generation,
                extent.wal_id,
                extent.first_segment,
                extent.last_segment,
            ],
        );
        let at = (generation % 2) * SLOT_LEN as u64;
        self.file
            .write_all_at(&slot, at)
            .and_then(|()| self.file.sync_data())
            .map_err(io_err(&self.path, "update WAL manifest"))?;
        self.generation = generation;
        self.extent = extent;
        Ok(())
    }

    /// Records the durable mark; not synced (see the module docs: a stale mark is conservative).
    pub(crate) fn set_mark(&self, mark: Mark) -> io::Result<()> {
        self.file.write_all_at(&encode_mark(mark), MARK_AT)
    }

    /// Records the durable mark and fdatasyncs it (at open).
    pub(crate) fn sync_mark(&self, mark: Mark) -> Result<(), WalError> {
        self.set_mark(mark)
            .and_then(|()| self.file.sync_data())
            .map_err(io_err(&self.path, "write WAL durable mark"))
    }
}

fn encode_mark(m: Mark) -> [u8; SLOT_LEN] {
    encode(MARK_MAGIC, [m.wal_id, m.lsn, m.segment, m.offset])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_survives_a_torn_slot() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("wal.manifest");
        assert!(read(&path).unwrap().is_none());
        let e1 = Extent {
            wal_id: 7,
            first_segment: 1,
            last_segment: 1,
        };
        let mark = Mark {
            wal_id: 7,
            lsn: 0,
            segment: 1,
            offset: 32,
        };
        let mut m = Manifest::create(&path, e1, mark).unwrap();
        let e2 = Extent {
            last_segment: 4097,
            ..e1
        };
        m.set_extent(e2).unwrap();
        let m2 = Mark {
            lsn: 4100,
            segment: 4097,
            offset: 999,
            ..mark
        };
        m.set_mark(m2).unwrap();
        let found = read(&path).unwrap().unwrap();
        assert_eq!((found.extent, found.mark), (Some(e2), Some(m2)));
        // Tear the newest slot (generation 2 lives in slot 0): the older one is used.
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(read(&path).unwrap().unwrap().extent, Some(e1));
        bytes[SLOT_LEN + 20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("wal.manifest") && err.contains("intact"),
            "{err}"
        );
    }
}
