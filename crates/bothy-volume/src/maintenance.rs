//! Storage-wide operations for the host's daemon: resizing a new volume,
//! uploading what is pending ahead of a sync barrier.

use rusqlite::params;

use crate::{db, Storage, VolumeError};

impl Storage {
    /// Sets the size of a volume that has no open handle. Shrinking drops the
    /// map entries past the new end. Checkpoints keep the content they had.
    pub fn resize_volume(&self, name: &str, size: u64) -> Result<(), VolumeError> {
        let mut conn = self.inner.db();
        let tx = conn.transaction()?;
        let row = db::volume(&tx, name)?.ok_or_else(|| VolumeError::NoSuchVolume(name.into()))?;
        if size == 0 || size % row.chunk_size != 0 {
            return Err(VolumeError::Geometry(format!(
                "size {size} must be a positive multiple of the chunk size {}",
                row.chunk_size
            )));
        }
        self.inner.freeze_head_checkpoints(&tx, name, || {
            Ok(db::snapshot(&tx, row.head, row.size, row.chunk_size)?.encode())
        })?;
        tx.execute(
            "DELETE FROM map WHERE gen = ?1 AND idx >= ?2",
            params![row.head, (size / row.chunk_size) as i64],
        )?;
        tx.execute(
            "UPDATE volumes SET size = ?1 WHERE name = ?2",
            params![size as i64, name],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Uploads every chunk written locally but not yet in the object store,
    /// without holding any volume: run it before [`crate::Volume::sync`] so
    /// that the barrier itself (which holds the volume) finds little to do.
    /// It gives way to writers like the background uploader (a checkpoint's
    /// barrier must not slow the box's next writes), so it returns once the
    /// volumes were quiet long enough, or enough waited, to drain.
    pub fn upload_pending(&self) -> Result<(), VolumeError> {
        let inner = &self.inner;
        loop {
            if inner.wait_for_quiet()? {
                return Ok(());
            }
            if inner.upload_dirty(true)? {
                return Ok(());
            }
        }
    }
}

/// The storage's own I/O runtime. Dropping a tokio runtime blocks, which
/// tokio forbids inside async code (a daemon drops its storage there): shut
/// it down in the background instead.
pub(crate) struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    pub(crate) fn new(rt: tokio::runtime::Runtime) -> Self {
        Self(Some(rt))
    }
}

impl std::ops::Deref for IoRuntime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Some(rt) => rt,
            // Only Drop takes it, after which nothing can deref.
            None => unreachable!("I/O runtime used after drop"),
        }
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
