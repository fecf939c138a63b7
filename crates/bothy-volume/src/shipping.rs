//! Shipping block-map snapshots of volume heads to the object store.
//!
//! A sync barrier ships the head it just made durable ([`crate::Volume::sync`]).
//! Between barriers, the background uploader ships the head of every volume
//! that changed once its chunks are all uploaded, at most every
//! [`MIN_SHIP_INTERVAL`] per volume: so a host that loses its disk loses at
//! most the writes of the last few seconds, not everything since the last
//! checkpoint. Checkpoints ship only at barriers (one follows each checkpoint).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rusqlite::params;

use crate::{db, snapshot_key, Inner, VolumeError};

/// A head snapshot is the whole map: bound how often a busy volume pays it.
const MIN_SHIP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(crate) struct HeadLog {
    /// Volumes whose head changed since their last shipped snapshot.
    changed: HashSet<String>,
    /// When each volume's head was last shipped by this process.
    shipped_at: HashMap<String, Instant>,
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
            if only_if_clean {
                let dirty: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM map JOIN cache ON cache.hash = map.hash
                     WHERE map.gen = ?1 AND cache.dirty = 1",
                    [row.head],
                    |r| r.get(0),
                )?;
                if dirty > 0 {
                    return Ok(false);
                }
            }
            let blob = db::snapshot(&tx, row.head, row.size, row.chunk_size)?.encode();
            let seq = row.snapshot_seq + 1;
            tx.execute(
                "INSERT INTO shipped_maps (volume, seq, map) VALUES (?1, ?2, ?3)",
                params![volume, seq as i64, &blob],
            )?;
            tx.execute(
                "UPDATE volumes SET snapshot_seq = ?2 WHERE name = ?1",
                params![volume, seq as i64],
            )?;
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
        let older: Vec<i64> = {
            let conn = self.db();
            let mut stmt =
                conn.prepare("SELECT seq FROM shipped_maps WHERE volume = ?1 AND seq < ?2")?;
            let rows = stmt
                .query_map(params![volume, seq as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            rows
        };
        for old_seq in older {
            self.rt.block_on(self.store.delete_object(&snapshot_key(
                volume,
                "head",
                old_seq as u64,
            )))?;
            self.db().execute(
                "DELETE FROM shipped_maps WHERE volume = ?1 AND seq = ?2",
                params![volume, old_seq],
            )?;
        }
        Ok(true)
    }
}
