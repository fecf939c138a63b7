//! Shipping block-map snapshots of volume heads to the object store, and
//! the `sync` barrier that ships a volume's head and checkpoints at once.
//!
//! A sync barrier ships the head it just made durable ([`crate::Volume::sync`]).
//! Between barriers, the background uploader ships the head of every volume
//! that changed once its chunks are all uploaded, at most every
//! [`MIN_SHIP_INTERVAL`] per volume: so a host that loses its disk loses at
//! most the writes of the last few seconds, not everything since the last
//! checkpoint. Checkpoints ship only at barriers (one follows each checkpoint).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::storage::Inner;
use crate::{db, snapshot_key, Volume, VolumeError};

/// A head snapshot is the whole map: bound how often a busy volume pays it.
const MIN_SHIP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct HeadLog {
    /// Volumes whose head changed since their last shipped snapshot.
    changed: HashSet<String>,
    /// When each volume's head was last shipped by this process.
    shipped_at: HashMap<String, Instant>,
}

impl Volume {
    /// Barrier: returns once every write so far, the map and all checkpoints
    /// are durable in the object store.
    pub fn sync(&mut self) -> Result<(), VolumeError> {
        self.flush()?;
        let inner = self.inner.clone();
        inner.upload_dirty(false)?;
        // Checkpoints first, so a recovered head never names a checkpoint
        // that is missing.
        {
            let mut conn = inner.db();
            let tx = conn.transaction()?;
            self.freeze_checkpoints(&tx)?;
            tx.commit()?;
        }
        let unshipped = db::unshipped_checkpoints(&inner.db(), &self.name)?;
        for id in unshipped {
            let blob = db::checkpoint_map(&inner.db(), &self.name, id)?.ok_or(
                VolumeError::NoSuchCheckpoint {
                    volume: self.name.clone(),
                    id: id as u64,
                },
            )?;
            inner.put_object(&snapshot_key(&self.name, "checkpoints", id as u64), blob)?;
            db::mark_checkpoint_shipped(&inner.db(), &self.name, id)?;
        }
        inner.ship_head(&self.name, false)?;
        inner.head_shipped_by_barrier(&self.name);
        Ok(())
    }
}

impl Inner {
    fn head_log(&self) -> std::sync::MutexGuard<'_, HeadLog> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn head_changed(&self, volume: &str) {
        let mut log = self.head_log();
        if !log.changed.contains(volume) {
            log.changed.insert(volume.to_string());
        }
    }

    /// A barrier shipped `volume`'s head while holding the volume, so no
    /// change can have slipped in: nothing left for the background.
    pub(crate) fn head_shipped_by_barrier(&self, volume: &str) {
        self.head_log().changed.remove(volume);
    }

    /// Ships the heads that changed, whose chunks are all in the store and
    /// which were not shipped in the last [`MIN_SHIP_INTERVAL`]; the others
    /// stay marked for a later pass.
    pub(crate) fn ship_changed_heads(&self) -> Result<(), VolumeError> {
        let due: Vec<String> = {
            let log = self.head_log();
            log.changed
                .iter()
                .filter(|v| {
                    log.shipped_at
                        .get(*v)
                        .is_none_or(|t| t.elapsed() >= MIN_SHIP_INTERVAL)
                })
                .cloned()
                .collect()
        };
        for volume in due {
            // Unmarked first: a flush during the shipment marks it again.
            self.head_log().changed.remove(&volume);
            match self.ship_head(&volume, true) {
                Ok(true) => {}
                Ok(false) => self.head_changed(&volume),
                Err(e) => {
                    self.head_changed(&volume);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Ships a snapshot of `volume`'s head, then removes the ones it
    /// supersedes. With `only_if_clean` it ships nothing (returning `false`)
    /// while a chunk the head names is not uploaded yet; without, the caller
    /// uploaded them and keeps the head from changing. A volume deleted
    /// meanwhile needs nothing.
    pub(crate) fn ship_head(&self, volume: &str, only_if_clean: bool) -> Result<bool, VolumeError> {
        let _one = self.ship_lock.lock().unwrap_or_else(|p| p.into_inner());
        // Kept as a frozen "shipped" map before the upload, so its chunks are
        // protected from GC from the moment the snapshot can exist in the
        // store.
        let (seq, blob) = {
            let mut conn = self.db();
            let tx = conn.transaction()?;
            let Some(row) = db::volume(&tx, volume)? else {
                return Ok(true);
            };
            if only_if_clean && db::names_dirty_chunks(&tx, row.head)? {
                return Ok(false);
            }
            let blob = db::snapshot(&tx, row.head, row.size, row.chunk_size)?.encode();
            let seq = row.snapshot_seq + 1;
            db::insert_shipped_map(&tx, volume, seq, &blob)?;
            db::set_snapshot_seq(&tx, volume, seq)?;
            self.maps_added();
            tx.commit()?;
            (seq, blob)
        };
        self.put_object(&snapshot_key(volume, "head", seq), blob)?;
        self.head_log()
            .shipped_at
            .insert(volume.to_string(), Instant::now());
        // Older head snapshots are superseded: remove them remotely, then
        // their protecting copies locally.
        let older = db::shipped_maps_before(&self.db(), volume, seq)?;
        for old_seq in older {
            self.rt.block_on(
                self.store
                    .delete_object(&snapshot_key(volume, "head", old_seq)),
            )?;
            db::delete_shipped_map(&self.db(), volume, old_seq)?;
        }
        Ok(true)
    }
}
