//! Checkpoints of a volume: taking, listing, restoring, cloning into a new
//! volume and deleting them, and freezing a checkpoint's map when the head
//! moves on (see [`crate::db`] for how a checkpoint is recorded).

use rusqlite::Connection;

use crate::db::{self, VolumeRow};
use crate::snapshot::MapSnapshot;
use crate::storage::Inner;
use crate::{snapshot_key, CheckpointId, Volume, VolumeError};

impl Volume {
    /// Freezes the current content as a checkpoint. Metadata only, and the
    /// same cost on any disk: after a flush it records that the checkpoint's
    /// map is the head as it is. The head's next change (a flush, restore or
    /// barrier) first copies the map into a blob, inside its own transaction.
    /// It reaches the object store with the next [`Volume::sync`].
    pub fn checkpoint(&mut self) -> Result<CheckpointId, VolumeError> {
        self.flush()?;
        let started = std::time::Instant::now();
        let inner = self.inner.clone();
        let mut conn = inner.db();
        let tx = conn.transaction()?;
        let id = db::next_checkpoint_id(&tx, &self.name)?;
        db::insert_head_checkpoint(&tx, &self.name, id)?;
        tx.commit()?;
        tracing::debug!(volume = %self.name, id, us = started.elapsed().as_micros() as u64, "checkpoint recorded");
        Ok(CheckpointId(id as u64))
    }

    pub(crate) fn head_snapshot(&self) -> MapSnapshot {
        MapSnapshot {
            size: self.size,
            chunk_size: self.chunk_size,
            entries: self.map.iter().map(|(i, h)| (*i, *h)).collect(),
        }
    }

    /// Freezes the checkpoints taken since the head last changed; call it
    /// inside the transaction that changes the head or reads their maps.
    pub(crate) fn freeze_checkpoints(&self, conn: &Connection) -> Result<(), VolumeError> {
        self.inner
            .freeze_head_checkpoints(conn, &self.name, || Ok(self.head_snapshot().encode()))
    }

    fn checkpoint_map(
        &self,
        conn: &Connection,
        id: CheckpointId,
    ) -> Result<MapSnapshot, VolumeError> {
        let blob = db::checkpoint_map(conn, &self.name, id.0 as i64)?.ok_or(
            VolumeError::NoSuchCheckpoint {
                volume: self.name.clone(),
                id: id.0,
            },
        )?;
        MapSnapshot::decode(&blob)
    }

    pub fn checkpoints(&self) -> Result<Vec<CheckpointId>, VolumeError> {
        Ok(self
            .checkpoint_states()?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Every checkpoint, ascending, with whether it is in the object store
    /// yet (so a host that loses its disk keeps it): a barrier
    /// ([`Volume::sync`]) uploads every chunk a checkpoint names, then ships
    /// its map; checkpoints taken since the last barrier are not.
    pub fn checkpoint_states(&self) -> Result<Vec<(CheckpointId, bool)>, VolumeError> {
        let states = db::checkpoint_states(&self.inner.db(), &self.name)?;
        Ok(states
            .into_iter()
            .map(|(id, shipped)| (CheckpointId(id as u64), shipped))
            .collect())
    }

    /// Brings the whole volume back to a checkpoint, discarding unflushed
    /// writes. The checkpoint itself is kept.
    pub fn restore(&mut self, id: CheckpointId) -> Result<(), VolumeError> {
        let mut conn = self.inner.db();
        let tx = conn.transaction()?;
        self.freeze_checkpoints(&tx)?;
        let snap = self.checkpoint_map(&tx, id)?;
        db::replace_rows(&tx, self.head, &snap)?;
        tx.commit()?;
        drop(conn);
        self.map = snap.entries.into_iter().collect();
        self.inner.head_changed(&self.name);
        self.pending.clear();
        self.count_pending();
        Ok(())
    }

    /// A new volume whose content starts as checkpoint `id` (metadata only;
    /// chunks are shared).
    pub fn clone_from_checkpoint(
        &self,
        id: CheckpointId,
        new_name: &str,
    ) -> Result<(), VolumeError> {
        let mut conn = self.inner.db();
        let tx = conn.transaction()?;
        if db::volume(&tx, new_name)?.is_some() {
            return Err(VolumeError::Exists(new_name.into()));
        }
        self.freeze_checkpoints(&tx)?;
        let snap = self.checkpoint_map(&tx, id)?;
        let head = db::new_generation(&tx, new_name)?;
        db::replace_rows(&tx, head, &snap)?;
        let row = VolumeRow {
            size: self.size,
            chunk_size: self.chunk_size,
            head,
            snapshot_seq: 0,
        };
        db::insert_volume(&tx, new_name, &row)?;
        tx.commit()?;
        drop(conn);
        self.inner.head_changed(new_name);
        Ok(())
    }

    /// Deletes a checkpoint: its snapshot in the store first (so the store
    /// never names chunks GC may free), then its map.
    pub fn delete_checkpoint(&mut self, id: CheckpointId) -> Result<(), VolumeError> {
        // One still recorded as the head was never shipped nor frozen.
        if db::delete_head_checkpoint(&self.inner.db(), &self.name, id.0 as i64)? {
            return Ok(());
        }
        self.checkpoint_map(&self.inner.db(), id)?;
        let inner = self.inner.clone();
        inner.rt.block_on(inner.store.delete_object(&snapshot_key(
            &self.name,
            "checkpoints",
            id.0,
        )))?;
        db::delete_checkpoint_map(&inner.db(), &self.name, id.0 as i64)?;
        Ok(())
    }
}

impl Inner {
    /// Freezes `volume`'s checkpoints taken since its head last changed
    /// (see [`db::freeze_head_checkpoints`]); call it inside the transaction
    /// that changes the head, before the change.
    pub(crate) fn freeze_head_checkpoints(
        &self,
        conn: &Connection,
        volume: &str,
        blob: impl FnOnce() -> Result<Vec<u8>, VolumeError>,
    ) -> Result<(), VolumeError> {
        if db::freeze_head_checkpoints(conn, volume, blob)? {
            self.maps_added();
        }
        Ok(())
    }
}
