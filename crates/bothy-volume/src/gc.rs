//! Garbage collection: deleting chunks no map names, from the object store
//! and the cache.
//!
//! GC protocol. A chunk is live if any map (live heads, checkpoints, and the
//! head maps frozen for shipment or shipped to the store) names it. A dead
//! chunk still waiting for its upload is dropped without one: a box that
//! deletes what it just wrote, or is destroyed, costs the object store
//! nothing. `gc` lists and marks without blocking anyone, then sweeps in
//! small batches. Under the fence ([`Inner::fence`]) held exclusively it
//! checks every chunk of a batch again, and for each dead one raises a
//! tombstone ([`Inner::deleting`]) and drops its cache row and cached copy;
//! then it lets go of the fence, deletes the batch's objects concurrently
//! and lifts the tombstones once the deletes are done. `flush` holds the
//! fence shared; an upload holds it shared only while it reads a chunk and
//! while it marks it clean, never across an object-store call. So:
//! - a flush that re-references a chunk GC is about to delete either
//!   commits before the batch's check (and is seen) or after it (and finds
//!   no cache row, so the chunk is staged again as dirty);
//! - the upload of such a chunk waits for its tombstone (a background pass
//!   leaves it for later), so its put comes after the delete: one before it
//!   would find the object still there and skip, and the delete would then
//!   remove the only copy;
//! - an upload marks a chunk clean only if GC dropped no cache row since it
//!   read the chunk ([`Inner::gc_drops`]): a row dropped and made again
//!   meanwhile is not the one it uploaded.
//!
//! A flush thus waits for a batch's checks and cache drops, never for the
//! object store. The fence and the tombstones are per process: only one
//! process may run GC against a store.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use bothy_store::ChunkHash;
use rusqlite::Connection;

use crate::keylocks::KeyGuard;
use crate::snapshot::MapSnapshot;
use crate::storage::Inner;
use crate::{db, GcReport, Storage, VolumeError};

/// Chunks garbage collection checks per hold of the fence, and deletes at
/// once.
const GC_BATCH: usize = 64;

/// The chunks named by frozen maps, as of a count of [`Inner::frozen_maps`].
///
/// GC protocol addendum: a map is frozen from a head inside one hold of the
/// database lock, and the count moves inside that same hold. GC decides a
/// chunk is dead inside one hold too: it reads the count (re-reading the maps
/// if it moved), then the head rows. If it read the new count, it saw the
/// frozen map. If it read the old one, the freeze comes after this hold, so
/// the head still named the chunk when GC looked. A head may drop a chunk
/// without the fence (a restore right after the checkpoint that keeps the
/// replaced state), so checking the count once per batch is not enough.
#[derive(Default)]
struct FrozenChunks {
    seen: Option<u64>,
    hashes: HashSet<ChunkHash>,
}

impl FrozenChunks {
    /// The caller holds the database lock (`conn`).
    fn refresh(&mut self, inner: &Inner, conn: &Connection) -> Result<(), VolumeError> {
        let now = inner.frozen_maps.load(Ordering::SeqCst);
        if self.seen == Some(now) {
            return Ok(());
        }
        let mut hashes = HashSet::new();
        for blob in db::frozen_maps(conn)? {
            for (_, h) in MapSnapshot::decode(&blob)?.entries {
                hashes.insert(h);
            }
        }
        self.hashes = hashes;
        self.seen = Some(now);
        Ok(())
    }
}

impl Storage {
    /// Deletes unreferenced chunks from the object store and the cache.
    pub fn gc(&self) -> Result<GcReport, VolumeError> {
        let inner = &self.inner;
        // Candidates are found without the fence or a long hold of the
        // database, so boxes keep writing meanwhile; each batch is then
        // checked again under the fence and its objects deleted after it
        // (see the GC protocol above), which bounds how long any flush
        // waits.
        let listed = inner.rt.block_on(inner.store.list())?;
        let mut frozen = FrozenChunks::default();
        let live = self.live_chunks(&mut frozen)?;
        let dead_objects: Vec<ChunkHash> =
            listed.into_iter().filter(|h| !live.contains(h)).collect();
        let dead_cached: Vec<ChunkHash> = db::cached_hashes(&inner.db())?
            .into_iter()
            .filter(|h| !live.contains(h))
            .collect();
        let mut report = GcReport::default();
        for batch in dead_objects.chunks(GC_BATCH) {
            let doomed = self.condemn(batch, &mut frozen)?;
            inner.concurrently(&doomed, |tombstone| inner.store.delete(tombstone.key()))?;
            report.deleted_objects += doomed.len();
            // Lifts the tombstones: uploads of these chunks may go on.
            drop(doomed);
        }
        for batch in dead_cached.chunks(GC_BATCH) {
            let _fence = inner.fence.write().unwrap_or_else(|p| p.into_inner());
            for hash in batch {
                if !self.is_live(hash, &mut frozen)? && self.drop_cached(hash)? {
                    report.deleted_cached += 1;
                }
            }
        }
        Ok(report)
    }

    /// Of `batch`, the chunks still dead, checked under the fence: each one
    /// has its tombstone raised and its cache row dropped, and its object is
    /// the caller's to delete before the tombstone goes.
    fn condemn(
        &self,
        batch: &[ChunkHash],
        frozen: &mut FrozenChunks,
    ) -> Result<Vec<KeyGuard<'_, ChunkHash>>, VolumeError> {
        let _fence = self.inner.fence.write().unwrap_or_else(|p| p.into_inner());
        let mut doomed = Vec::with_capacity(batch.len());
        for hash in batch {
            if self.is_live(hash, frozen)? {
                continue;
            }
            // Otherwise another GC of this process is deleting it already.
            let Some(tombstone) = self.inner.deleting.try_lock(hash) else {
                continue;
            };
            // The cache row goes with the object, so a later flush that
            // names this chunk again uploads it again.
            self.drop_cached(hash)?;
            doomed.push(tombstone);
        }
        Ok(doomed)
    }

    /// Chunks some map names.
    fn live_chunks(&self, frozen: &mut FrozenChunks) -> Result<HashSet<ChunkHash>, VolumeError> {
        let conn = self.inner.db();
        frozen.refresh(&self.inner, &conn)?;
        let mut live = frozen.hashes.clone();
        live.extend(db::mapped_hashes(&conn)?);
        Ok(live)
    }

    /// Whether some map names `hash`: frozen maps and head rows are read in
    /// one hold of the database lock (see [`FrozenChunks`]).
    fn is_live(&self, hash: &ChunkHash, frozen: &mut FrozenChunks) -> Result<bool, VolumeError> {
        let conn = self.inner.db();
        frozen.refresh(&self.inner, &conn)?;
        Ok(frozen.hashes.contains(hash) || db::is_mapped(&conn, hash)?)
    }

    /// Removes a dead cached chunk, uploaded or not; whether there was one.
    /// The caller holds the fence, so no upload is reading it or marking it
    /// clean.
    fn drop_cached(&self, hash: &ChunkHash) -> Result<bool, VolumeError> {
        // One hold of the database lock: the row and the cached copy go
        // together (see cache.rs).
        let conn = self.inner.db();
        let dropped = db::delete_cache_row(&conn, hash)?;
        if dropped {
            self.inner.gc_drops.fetch_add(1, Ordering::SeqCst);
            self.inner.cache.remove(hash)?;
        }
        Ok(dropped)
    }
}

impl Inner {
    /// Counts a new frozen map; call it inside the transaction that inserts
    /// the map, holding the database lock (see [`FrozenChunks::refresh`]).
    pub(crate) fn maps_added(&self) {
        self.frozen_maps.fetch_add(1, Ordering::SeqCst);
    }
}
