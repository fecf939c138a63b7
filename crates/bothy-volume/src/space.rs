//! What the storage holds on the local disk, and giving room back when that
//! disk is full.
//!
//! The local disk holds dirty chunks (only copy until uploaded), clean
//! chunks (copies of objects, dropped at will) and, in memory for now,
//! unflushed writes that will need room. The storage process turns these
//! numbers into how much a box may still write (see the runtime's space
//! guard); a flush that finds the disk full anyway sheds clean chunks and
//! waits briefly rather than fail (see [`crate::Volume::flush`]).

use std::sync::atomic::Ordering;

use crate::{db, Storage, VolumeError};

/// Bytes the storage holds, or will hold, on the local disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceUse {
    /// Cached chunks that are in the object store too: room on demand.
    pub clean_bytes: u64,
    /// Cached chunks not uploaded yet: a local object store will need as
    /// much again.
    pub dirty_bytes: u64,
    /// Writes to open volumes not flushed yet.
    pub pending_bytes: u64,
}

impl Storage {
    pub fn space_use(&self) -> Result<SpaceUse, VolumeError> {
        let conn = self.inner.db();
        let all = db::cache_totals(&conn, false)?.1;
        let dirty = db::cache_totals(&conn, true)?.1;
        Ok(SpaceUse {
            clean_bytes: all.saturating_sub(dirty),
            dirty_bytes: dirty,
            pending_bytes: self.inner.pending_bytes.load(Ordering::SeqCst),
        })
    }

    /// Drops least recently used clean chunks, whatever the cache budget,
    /// until `bytes` are freed or none is left; returns the bytes freed.
    pub fn shed_clean(&self, bytes: u64) -> Result<u64, VolumeError> {
        self.inner.drop_clean(bytes)
    }
}

/// Whether `e` says the local disk (or the database on it) is full.
pub(crate) fn is_no_space(e: &VolumeError) -> bool {
    match e {
        VolumeError::Io(io) => io.raw_os_error() == Some(nix::libc::ENOSPC),
        VolumeError::Db(rusqlite::Error::SqliteFailure(f, _)) => {
            f.code == rusqlite::ErrorCode::DiskFull
        }
        _ => false,
    }
}
