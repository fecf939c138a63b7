//! Storage-wide operations for the host's daemon: resizing a new volume,
//! and the storage's own I/O runtime.

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
        db::truncate_map(&tx, row.head, size / row.chunk_size)?;
        db::set_volume_size(&tx, name, size)?;
        tx.commit()?;
        Ok(())
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
