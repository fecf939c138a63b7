//! Shipping block-map snapshots of volume heads to the object store, and
//! the `sync` barrier that ships a volume's head and checkpoints at once.
//!
//! A sync barrier ships the head it just made durable ([`crate::Volume::sync`]).
//! Between barriers, the background uploader ships the head of every volume
//! that changed, in two steps around an upload pass. Before the pass lists
//! the dirty chunks, it freezes the head (a `shipped_maps` row, which keeps
//! the head's chunks from GC from then on), at most every
//! [`MIN_SHIP_INTERVAL`] per volume. Once none of the chunks a frozen head
//! names is dirty, which the pass that follows the freeze sees to unless it
//! gives way to writers, it puts the snapshot in the store. So a volume
//! that never stops writing still ships: what it flushes after the freeze
//! is for the next snapshot. A host that loses its disk loses at most the
//! writes of the last few seconds (the exact bound is in the crate docs),
//! not everything since the last checkpoint. Checkpoints ship only at
//! barriers (one follows each checkpoint).
//!
//! A shipment and a volume's deletion hold that volume's lock
//! ([`Inner::ship_locks`]) across their object-store calls, so neither
//! leaves a snapshot of a deleted volume behind, and neither waits for the
//! object-store calls of any other volume.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bothy_store::ChunkHash;

use crate::snapshot::MapSnapshot;
use crate::storage::Inner;
use crate::{db, snapshot_key, Volume, VolumeError};

/// A head snapshot is the whole map: bound how often a busy volume pays it.
const MIN_SHIP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct HeadLog {
    /// Volumes whose head changed since it was last frozen for shipment.
    changed: HashSet<String>,
    /// When each volume's head was last frozen by this process.
    frozen_at: HashMap<String, Instant>,
    /// Heads frozen but not shipped yet: the sequence number of each one's
    /// `shipped_maps` row.
    frozen: HashMap<String, u64>,
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
        inner.ship_head(&self.name)
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

    /// Forgets a deleted volume.
    pub(crate) fn head_deleted(&self, volume: &str) {
        let mut log = self.head_log();
        log.changed.remove(volume);
        log.frozen_at.remove(volume);
        log.frozen.remove(volume);
    }

    /// How long until a changed head is due to be frozen, if one waits.
    pub(crate) fn next_freeze_in(&self) -> Option<Duration> {
        let log = self.head_log();
        log.changed
            .iter()
            .filter(|v| !log.frozen.contains_key(*v))
            .map(|v| {
                log.frozen_at.get(v).map_or(Duration::ZERO, |t| {
                    MIN_SHIP_INTERVAL.saturating_sub(t.elapsed())
                })
            })
            .min()
    }

    /// Whether a frozen head waits for an upload pass to go through.
    pub(crate) fn heads_waiting(&self) -> bool {
        !self.head_log().frozen.is_empty()
    }

    /// Freezes the heads that changed, have no frozen head waiting and were
    /// not frozen in the last [`MIN_SHIP_INTERVAL`]; call it before the
    /// upload pass that is to upload their chunks.
    pub(crate) fn freeze_changed_heads(&self) -> Result<(), VolumeError> {
        let due: Vec<String> = {
            let log = self.head_log();
            log.changed
                .iter()
                .filter(|v| {
                    !log.frozen.contains_key(*v)
                        && log
                            .frozen_at
                            .get(*v)
                            .is_none_or(|t| t.elapsed() >= MIN_SHIP_INTERVAL)
                })
                .cloned()
                .collect()
        };
        for volume in due {
            // Unmarked first: a flush during the freeze marks it again.
            self.head_log().changed.remove(&volume);
            let frozen = self.freeze_head(&volume);
            let mut log = self.head_log();
            // Also after a failure, so it is tried again in an interval
            // rather than at once.
            log.frozen_at.insert(volume.clone(), Instant::now());
            match frozen {
                Ok(Some((seq, _))) => {
                    log.frozen.insert(volume, seq);
                }
                // Deleted meanwhile.
                Ok(None) => {}
                Err(e) => {
                    log.changed.insert(volume);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Ships the frozen heads none of whose chunks is dirty any more; the
    /// others wait for a later pass.
    pub(crate) fn ship_frozen_heads(&self) -> Result<(), VolumeError> {
        let frozen: Vec<(String, u64)> = self
            .head_log()
            .frozen
            .iter()
            .map(|(v, s)| (v.clone(), *s))
            .collect();
        if frozen.is_empty() {
            return Ok(());
        }
        // Read once for all: a chunk a frozen head names that is not dirty
        // now is in the store for good (GC keeps it), so a stale read only
        // overstates what waits.
        let dirty: HashSet<ChunkHash> = db::cached_chunks(&self.db(), true)?
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        for (volume, seq) in frozen {
            if self.ship_frozen_head(&volume, seq, &dirty)? {
                let mut log = self.head_log();
                if log.frozen.get(&volume) == Some(&seq) {
                    log.frozen.remove(&volume);
                }
            }
        }
        Ok(())
    }

    /// Ships head snapshot `seq` of `volume`, frozen earlier, unless it
    /// names a chunk in `dirty`. Whether it needs nothing more: shipped,
    /// superseded by a barrier's, or its volume deleted.
    fn ship_frozen_head(
        &self,
        volume: &str,
        seq: u64,
        dirty: &HashSet<ChunkHash>,
    ) -> Result<bool, VolumeError> {
        let _volume = self.ship_locks.lock(&volume.to_string());
        let Some(blob) = db::shipped_map(&self.db(), volume, seq)? else {
            return Ok(true);
        };
        let snap = MapSnapshot::decode(&blob)?;
        if snap.entries.iter().any(|(_, h)| dirty.contains(h)) {
            return Ok(false);
        }
        self.publish_head(volume, seq, blob)?;
        Ok(true)
    }

    /// Ships a snapshot of `volume`'s head now: the caller (a barrier)
    /// uploaded every chunk it names and holds the volume, so it cannot
    /// change meanwhile. A volume deleted meanwhile needs nothing.
    pub(crate) fn ship_head(&self, volume: &str) -> Result<(), VolumeError> {
        let _volume = self.ship_locks.lock(&volume.to_string());
        let Some((seq, blob)) = self.freeze_head(volume)? else {
            return Ok(());
        };
        self.publish_head(volume, seq, blob)?;
        // No change can have slipped in: nothing left for the background.
        let mut log = self.head_log();
        log.changed.remove(volume);
        log.frozen_at.insert(volume.to_string(), Instant::now());
        Ok(())
    }

    /// Freezes `volume`'s head as a `shipped_maps` row not shipped yet,
    /// before its upload, so its chunks are protected from GC from the
    /// moment the snapshot can exist in the store. Its sequence number and
    /// encoding, or `None` if the volume is gone.
    fn freeze_head(&self, volume: &str) -> Result<Option<(u64, Vec<u8>)>, VolumeError> {
        let mut conn = self.db();
        let tx = conn.transaction()?;
        let Some(row) = db::volume(&tx, volume)? else {
            return Ok(None);
        };
        let blob = db::snapshot(&tx, row.head, row.size, row.chunk_size)?.encode();
        let seq = db::next_shipped_seq(&tx, volume)?;
        db::insert_shipped_map(&tx, volume, seq, &blob)?;
        self.maps_added();
        tx.commit()?;
        Ok(Some((seq, blob)))
    }

    /// Puts head snapshot `seq` in the store, then removes the ones it
    /// supersedes: remotely, then their protecting copies locally. The
    /// caller holds the volume's ship lock.
    fn publish_head(&self, volume: &str, seq: u64, blob: Vec<u8>) -> Result<(), VolumeError> {
        self.put_object(&snapshot_key(volume, "head", seq), blob)?;
        db::set_snapshot_seq(&self.db(), volume, seq)?;
        let older = db::shipped_maps_before(&self.db(), volume, seq)?;
        self.concurrently(&older, |old| {
            let key = snapshot_key(volume, "head", *old);
            async move { self.store.delete_object(&key).await }
        })?;
        for old in older {
            db::delete_shipped_map(&self.db(), volume, old)?;
        }
        Ok(())
    }
}
