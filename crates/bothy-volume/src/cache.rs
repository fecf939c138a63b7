//! The local chunk cache, with an LRU byte budget that only ever evicts
//! chunks already in the object store (the budget and the LRU order live in
//! the `cache` table; see [`crate::db`]).
//!
//! Chunks live in slab files, one per chunk length (`slab-<len>`), each cut
//! into slots of that length; the `cache` table names each chunk's slot. A
//! file per chunk cost an inode allocation, a rename and a directory fsync
//! per chunk written: on ext4 those dominated the daemon's CPU during a
//! sequential write (measured), where a slot costs one `pwrite`, and a
//! flush one `fdatasync` of the slab. Freed slots are punched out (the
//! space goes back to the file system) and reused.
//!
//! Writing is two-phase, so that what the table names is always durable
//! ([`ChunkCache::stage`] into a free slot, [`ChunkCache::sync`], commit the
//! row, then [`ChunkCache::publish`] or [`ChunkCache::discard`]). A staged
//! slot nobody committed is free again after a restart, because free slots
//! are the ones no row names.
//!
//! Reads find a chunk's slot in an in-memory index and hold the index lock
//! (shared) while they read it; [`ChunkCache::remove`] takes it alone before
//! it frees the slot. So a reader never reads a slot after it was given to
//! another chunk.
//!
//! Caches from before slabs have one file per chunk, named by its hash; they
//! are still read and evicted ([`Loc::File`]), never written.
//!
//! Volumes read through the cache: a chunk not cached is fetched from the
//! object store, checked, and kept as a clean row; every fetch and upload
//! pass then evicts the least recently used clean chunks past the budget.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bothy_store::ChunkHash;
use rusqlite::Connection;

use crate::storage::Inner;
use crate::{db, VolumeError};

/// Where a cached chunk's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// Slot `slot` of the slab for chunks of `len` bytes.
    Slot { len: u64, slot: u64 },
    /// A file named by the hash (caches written before slabs).
    File,
}

/// A row of the `cache` table, as the cache needs it at open.
#[derive(Debug, Clone, Copy)]
pub struct CachedRow {
    pub hash: ChunkHash,
    pub len: u64,
    /// `None` for a chunk in a file of its own.
    pub slot: Option<u64>,
}

/// A chunk written to a free slot, not yet visible to readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a staged slot must be published or discarded"]
pub struct Staged {
    pub hash: ChunkHash,
    pub len: u64,
    pub slot: u64,
}

#[derive(Debug)]
struct Slab {
    file: Arc<File>,
    free: BTreeSet<u64>,
    next: u64,
}

#[derive(Debug)]
pub struct ChunkCache {
    dir: PathBuf,
    index: RwLock<HashMap<ChunkHash, Loc>>,
    slabs: Mutex<HashMap<u64, Slab>>,
    /// Chunks whose bytes this process wrote or hashed whole. Only those are
    /// read by range: a partial read cannot be checked against the hash, and
    /// hashing a whole chunk for every 4 KiB read is what made small reads slow.
    verified: Mutex<HashSet<ChunkHash>>,
}

impl ChunkCache {
    /// Opens the cache in `dir` holding the chunks of `rows` (the `cache`
    /// table). Slots no row names are free.
    pub fn open(dir: &Path, rows: &[CachedRow]) -> Result<Self, VolumeError> {
        fs::create_dir_all(dir)?;
        remove_partial_files(dir)?;
        let mut index = HashMap::with_capacity(rows.len());
        let mut used: HashMap<u64, HashSet<u64>> = HashMap::new();
        for row in rows {
            let loc = match row.slot {
                Some(slot) => {
                    // Two rows naming one slot (a slot freed as damaged, then
                    // reused, before the first row was fixed): neither is
                    // trusted; both chunks are fetched or written again.
                    if !used.entry(row.len).or_default().insert(slot) {
                        index.retain(|_, l| *l != Loc::Slot { len: row.len, slot });
                        continue;
                    }
                    Loc::Slot { len: row.len, slot }
                }
                None => Loc::File,
            };
            index.insert(row.hash, loc);
        }
        let mut slabs = HashMap::new();
        for (len, slots) in used {
            let next = slots.iter().max().map_or(0, |m| m + 1);
            let free = (0..next).filter(|s| !slots.contains(s)).collect();
            slabs.insert(
                len,
                Slab {
                    file: Arc::new(open_slab(dir, len)?),
                    free,
                    next,
                },
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            index: RwLock::new(index),
            slabs: Mutex::new(slabs),
            verified: Mutex::new(HashSet::new()),
        })
    }

    fn index(&self) -> RwLockReadGuard<'_, HashMap<ChunkHash, Loc>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, HashMap<ChunkHash, Loc>> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn slabs(&self) -> MutexGuard<'_, HashMap<u64, Slab>> {
        self.slabs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn verified(&self) -> MutexGuard<'_, HashSet<ChunkHash>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn file_path(&self, hash: &ChunkHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    fn slab_file(&self, len: u64) -> Option<Arc<File>> {
        self.slabs().get(&len).map(|s| s.file.clone())
    }

    /// Writes a chunk to a free slot. It is durable after the next
    /// [`ChunkCache::sync`], and visible after [`ChunkCache::publish`].
    pub fn stage(&self, hash: &ChunkHash, data: &[u8]) -> Result<Staged, VolumeError> {
        let len = data.len() as u64;
        let (file, slot) = {
            let mut slabs = self.slabs();
            let slab = match slabs.entry(len) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(Slab {
                    file: Arc::new(open_slab(&self.dir, len)?),
                    free: BTreeSet::new(),
                    next: 0,
                }),
            };
            let slot = match slab.free.pop_first() {
                Some(slot) => slot,
                None => {
                    slab.next += 1;
                    slab.next - 1
                }
            };
            (slab.file.clone(), slot)
        };
        let staged = Staged {
            hash: *hash,
            len,
            slot,
        };
        if let Err(e) = file.write_all_at(data, slot * len) {
            self.discard(staged);
            return Err(e.into());
        }
        Ok(staged)
    }

    /// Makes every staged write durable (one `fdatasync` per slab).
    pub fn sync(&self) -> Result<(), VolumeError> {
        let files: Vec<Arc<File>> = self.slabs().values().map(|s| s.file.clone()).collect();
        for f in files {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Makes a staged chunk readable; its row is committed.
    pub fn publish(&self, staged: Staged) {
        let loc = Loc::Slot {
            len: staged.len,
            slot: staged.slot,
        };
        let old = self.index_mut().insert(staged.hash, loc);
        self.verified().insert(staged.hash);
        if let Some(old) = old.filter(|o| *o != loc) {
            self.release(&staged.hash, old);
        }
    }

    /// Frees a staged slot that no committed row names.
    pub fn discard(&self, staged: Staged) {
        self.free_slot(staged.len, staged.slot);
    }

    /// Whether the chunk is cached (not checked for damage).
    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.index().contains_key(hash)
    }

    /// The chunk's bytes if cached and intact; a damaged copy is dropped and
    /// reported as absent so the caller fetches it again. A chunk this
    /// process already verified or wrote is not hashed again.
    pub fn read(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, VolumeError> {
        let trusted = self.verified().contains(hash);
        let (loc, data) = {
            let index = self.index();
            let Some(loc) = index.get(hash).copied() else {
                return Ok(None);
            };
            let data = match loc {
                Loc::File => match fs::read(self.file_path(hash)) {
                    Ok(d) => Some(d),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e.into()),
                },
                Loc::Slot { len, slot } => {
                    let mut buf = vec![0u8; len as usize];
                    match self.read_slot(len, slot, 0, &mut buf)? {
                        true => Some(buf),
                        false => None,
                    }
                }
            };
            (loc, data)
        };
        match data {
            Some(d) if trusted || ChunkHash::of(&d) == *hash => {
                self.verified().insert(*hash);
                Ok(Some(d))
            }
            _ => {
                tracing::warn!(%hash, "cached chunk is missing or damaged; dropping it");
                // Only the copy just read: a fresh one may have replaced it.
                // Its slot is not freed: the row still names it until a
                // fresh copy is adopted, and a slot two rows name would be
                // trusted by neither after a restart. Reopening frees it.
                let mut index = self.index_mut();
                if index.get(hash) == Some(&loc) {
                    index.remove(hash);
                    drop(index);
                    self.verified().remove(hash);
                    if loc == Loc::File {
                        self.release(hash, loc);
                    }
                }
                Ok(None)
            }
        }
    }

    /// `false` if the slab is shorter than the slot (a slot staged but not
    /// synced before a crash).
    fn read_slot(
        &self,
        len: u64,
        slot: u64,
        offset: u64,
        dst: &mut [u8],
    ) -> Result<bool, VolumeError> {
        let Some(file) = self.slab_file(len) else {
            return Ok(false);
        };
        match file.read_exact_at(dst, slot * len + offset) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Fills `dst` from `offset` of a cached chunk without reading the rest of
    /// it. `false` when the chunk is not cached or not yet verified whole: the
    /// caller then reads it whole with [`ChunkCache::read`].
    pub fn read_range(
        &self,
        hash: &ChunkHash,
        offset: u64,
        dst: &mut [u8],
    ) -> Result<bool, VolumeError> {
        if !self.verified().contains(hash) {
            return Ok(false);
        }
        let index = self.index();
        match index.get(hash).copied() {
            None => Ok(false),
            Some(Loc::Slot { len, slot }) => self.read_slot(len, slot, offset, dst),
            Some(Loc::File) => {
                let res =
                    File::open(self.file_path(hash)).and_then(|f| f.read_exact_at(dst, offset));
                match res {
                    Ok(()) => Ok(true),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                        ) =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Drops a chunk from the cache and frees its space. Its row must be gone
    /// (or be rewritten before it is used again).
    pub fn remove(&self, hash: &ChunkHash) -> Result<(), VolumeError> {
        self.verified().remove(hash);
        let old = self.index_mut().remove(hash);
        if let Some(loc) = old {
            self.release(hash, loc);
        }
        Ok(())
    }

    /// Frees the space of a location no reader can find any more.
    fn release(&self, hash: &ChunkHash, loc: Loc) {
        match loc {
            Loc::Slot { len, slot } => self.free_slot(len, slot),
            Loc::File => {
                if let Err(e) = fs::remove_file(self.file_path(hash)) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(%hash, %e, "cannot remove a cached chunk file");
                    }
                }
            }
        }
    }

    fn free_slot(&self, len: u64, slot: u64) {
        let mut slabs = self.slabs();
        let Some(slab) = slabs.get_mut(&len) else {
            return;
        };
        // Gives the space back; a failure only costs disk space until the
        // slot is written again.
        if let Err(e) = punch_hole(&slab.file, slot * len, len) {
            tracing::debug!(%e, "cannot punch a freed cache slot");
        }
        if slot + 1 == slab.next {
            slab.next -= 1;
            while slab.next > 0 && slab.free.remove(&(slab.next - 1)) {
                slab.next -= 1;
            }
        } else {
            slab.free.insert(slot);
        }
    }
}

/// Files a crash left half-written when chunks had files of their own.
fn remove_partial_files(dir: &Path) -> Result<(), VolumeError> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn open_slab(dir: &Path, len: u64) -> Result<File, VolumeError> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(format!("slab-{len}")))?)
}

fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    nix::fcntl::fallocate(
        file,
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset as i64,
        len as i64,
    )
    .map_err(std::io::Error::from)
}

// Reading through the cache, and keeping it within its budget.

impl Inner {
    /// A chunk's content, through the cache.
    pub(crate) fn fetch(&self, hash: &ChunkHash) -> Result<Vec<u8>, VolumeError> {
        if let Some(data) = self.cache.read(hash)? {
            self.touch(hash);
            return Ok(data);
        }
        let data = self.rt.block_on(self.store.get(hash))?.to_vec();
        // Keeping a copy is an optimisation: a local disk that is full (or
        // failing) must not turn a read the object store answered into an
        // error, which the box's ext4 would take for a dead disk.
        if let Err(e) = self.keep_clean_copy(hash, &data) {
            tracing::warn!(chunk = %hash.to_hex(), error = %e, "could not cache a fetched chunk; served it uncached");
        }
        Ok(data)
    }

    /// Adds a chunk fetched from the object store to the cache. A clean copy
    /// needs no sync: a damaged one is found and fetched again.
    fn keep_clean_copy(&self, hash: &ChunkHash, data: &[u8]) -> Result<(), VolumeError> {
        let staged = self.cache.stage(hash, data)?;
        {
            let conn = self.db();
            match adopt(&self.cache, &conn, &staged, false, self.tick()) {
                Ok(true) => self.cache.publish(staged),
                Ok(false) => self.cache.discard(staged),
                Err(e) => {
                    self.cache.discard(staged);
                    return Err(e);
                }
            }
        }
        self.evict()
    }

    fn touch(&self, hash: &ChunkHash) {
        let tick = self.tick();
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*hash, tick);
    }

    /// Fills `dst` from `within` of chunk `hash` (of `chunk_size` bytes),
    /// reading only that range when the cache can.
    pub(crate) fn read_range(
        &self,
        hash: &ChunkHash,
        chunk_size: u64,
        within: usize,
        dst: &mut [u8],
    ) -> Result<(), VolumeError> {
        if self.cache.read_range(hash, within as u64, dst)? {
            self.touch(hash);
            return Ok(());
        }
        let data = self.chunk_data(hash, chunk_size)?;
        dst.copy_from_slice(&data[within..within + dst.len()]);
        Ok(())
    }

    /// A whole chunk, checked to have the volume's chunk size.
    pub(crate) fn chunk_data(
        &self,
        hash: &ChunkHash,
        chunk_size: u64,
    ) -> Result<Vec<u8>, VolumeError> {
        let data = self.fetch(hash)?;
        // A map recovered from the store could name a valid chunk of another
        // size; slicing it would panic.
        if data.len() as u64 != chunk_size {
            return Err(VolumeError::ChunkLength {
                hash: hash.to_hex(),
                len: data.len(),
                want: chunk_size,
            });
        }
        Ok(data)
    }

    /// Writes the LRU clock of recent cache hits to the cache table in one
    /// transaction.
    fn save_touched(&self, conn: &mut Connection) -> Result<(), VolumeError> {
        let touched = std::mem::take(&mut *self.touched.lock().unwrap_or_else(|p| p.into_inner()));
        if touched.is_empty() {
            return Ok(());
        }
        let tx = conn.transaction()?;
        db::advance_last_used(&tx, &touched)?;
        tx.commit()?;
        Ok(())
    }

    /// Drops least-recently-used clean chunks until the cache fits its budget.
    pub(crate) fn evict(&self) -> Result<(), VolumeError> {
        let excess = {
            let mut conn = self.db();
            self.save_touched(&mut conn)?;
            db::cache_totals(&conn, false)?
                .1
                .saturating_sub(self.budget)
        };
        if excess > 0 {
            self.drop_clean(excess)?;
        }
        Ok(())
    }

    /// Drops least-recently-used clean chunks until `bytes` are freed or
    /// none is left; returns the bytes freed.
    pub(crate) fn drop_clean(&self, bytes: u64) -> Result<u64, VolumeError> {
        let conn = self.db();
        let mut freed = 0;
        for (hash, len) in db::cached_chunks(&conn, false)? {
            if freed >= bytes {
                break;
            }
            db::delete_clean_cache_row(&conn, &hash)?;
            self.cache.remove(&hash)?;
            freed += len;
        }
        Ok(freed)
    }
}

/// Records a staged chunk in the cache table; the caller holds the database
/// lock (inside its transaction, if any) and, if this returns `true`,
/// publishes the chunk before letting go of it, else discards it. A chunk
/// cached already keeps its copy; a row whose copy was dropped (damaged)
/// gets the new one and keeps its dirty flag: the bytes are the same chunk.
pub(crate) fn adopt(
    cache: &ChunkCache,
    conn: &Connection,
    staged: &Staged,
    dirty: bool,
    tick: i64,
) -> Result<bool, VolumeError> {
    if !db::is_cached(conn, &staged.hash)? {
        db::insert_cache_row(conn, staged, dirty, tick)?;
        return Ok(true);
    }
    if cache.contains(&staged.hash) {
        db::set_last_used(conn, &staged.hash, tick)?;
        return Ok(false);
    }
    db::move_cache_row(conn, staged, tick)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(byte: u8) -> Vec<u8> {
        vec![byte; 4096]
    }

    #[test]
    fn staged_chunks_are_invisible_until_published() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = ChunkCache::open(dir.path(), &[]).expect("open");
        let data = chunk(1);
        let h = ChunkHash::of(&data);
        let staged = cache.stage(&h, &data).expect("stage");
        assert!(!cache.contains(&h));
        assert_eq!(cache.read(&h).expect("read"), None);
        cache.sync().expect("sync");
        cache.publish(staged);
        assert_eq!(cache.read(&h).expect("read"), Some(data.clone()));
        let mut part = [0u8; 10];
        assert!(cache.read_range(&h, 100, &mut part).expect("range"));
        assert_eq!(part, [1u8; 10]);
    }

    #[test]
    fn freed_slots_are_reused_and_reopening_finds_committed_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = ChunkCache::open(dir.path(), &[]).expect("open");
        let (a, b, c) = (chunk(1), chunk(2), chunk(3));
        let (ha, hb, hc) = (ChunkHash::of(&a), ChunkHash::of(&b), ChunkHash::of(&c));
        let sa = cache.stage(&ha, &a).expect("a");
        let sb = cache.stage(&hb, &b).expect("b");
        assert_ne!(sa.slot, sb.slot);
        cache.publish(sa);
        cache.publish(sb);
        cache.remove(&ha).expect("remove a");
        let sc = cache.stage(&hc, &c).expect("c");
        assert_eq!(sc.slot, sa.slot, "a's slot is reused");
        cache.publish(sc);
        cache.sync().expect("sync");
        drop(cache);

        let rows = [
            CachedRow {
                hash: hb,
                len: 4096,
                slot: Some(sb.slot),
            },
            CachedRow {
                hash: hc,
                len: 4096,
                slot: Some(sc.slot),
            },
        ];
        let cache = ChunkCache::open(dir.path(), &rows).expect("reopen");
        assert_eq!(cache.read(&hb).expect("b"), Some(b));
        assert_eq!(cache.read(&hc).expect("c"), Some(c));
        assert!(!cache.contains(&ha));
        let d = chunk(4);
        let sd = cache.stage(&ChunkHash::of(&d), &d).expect("d");
        assert_eq!(sd.slot, 2, "slots named by rows stay taken");
        cache.discard(sd);
    }

    #[test]
    fn a_damaged_slot_reads_as_absent_once_nothing_vouches_for_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = chunk(7);
        let h = ChunkHash::of(&data);
        {
            let cache = ChunkCache::open(dir.path(), &[]).expect("open");
            let s = cache.stage(&h, &data).expect("stage");
            cache.sync().expect("sync");
            cache.publish(s);
        }
        let slab = dir.path().join("slab-4096");
        let f = OpenOptions::new().write(true).open(&slab).expect("slab");
        f.write_all_at(b"xx", 10).expect("damage");
        let rows = [CachedRow {
            hash: h,
            len: 4096,
            slot: Some(0),
        }];
        let cache = ChunkCache::open(dir.path(), &rows).expect("reopen");
        let mut part = [0u8; 4];
        assert!(
            !cache.read_range(&h, 0, &mut part).expect("range"),
            "unverified"
        );
        assert_eq!(cache.read(&h).expect("read"), None, "damage is detected");
        assert!(!cache.contains(&h));
    }

    #[test]
    fn chunks_in_files_of_their_own_are_still_read_and_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = chunk(9);
        let h = ChunkHash::of(&data);
        fs::write(dir.path().join(h.to_hex()), &data).expect("legacy file");
        let partial = dir.path().join(format!("{}.17.tmp", h.to_hex()));
        fs::write(&partial, b"half").expect("partial file");
        let rows = [CachedRow {
            hash: h,
            len: 4096,
            slot: None,
        }];
        let cache = ChunkCache::open(dir.path(), &rows).expect("open");
        assert_eq!(cache.read(&h).expect("read"), Some(data));
        assert!(!partial.exists(), "a crash's half-written file is gone");
        cache.remove(&h).expect("remove");
        assert!(!dir.path().join(h.to_hex()).exists());
    }
}
