//! Sparse chunked volumes over a content-addressed object store.
//!
//! A volume is a virtual disk of `size` bytes cut into `chunk_size` chunks. Its
//! block map (SQLite, [`db`]) maps chunk index → BLAKE3 hash; an absent entry
//! is zeros. Chunks live in the object store ([`bothy_store`]); local disk is a
//! cache ([`cache`]) with an LRU byte budget.
//!
//! Durability ladder:
//! - `write` lands in memory;
//! - `flush` writes changed chunks to the cache, fsyncs them and commits the
//!   map: after it returns, a crash loses nothing;
//! - a background thread uploads flushed chunks once no volume has flushed
//!   for [`UPLOAD_QUIET`] (or a quarter of the cache budget waits), and at
//!   least every `upload_interval` otherwise; then it ships a snapshot of
//!   each changed head whose chunks are all uploaded (at most every few
//!   seconds per volume, [`shipping`]): from then on the object store alone
//!   can bring those writes back;
//! - `sync` uploads everything still dirty and ships a map snapshot
//!   ([`snapshot`]): after it returns, the object store alone can bring the
//!   volume and its checkpoints back ([`Storage::recover_volume`]).
//!
//! Costs. A read fetches a chunk whole once per process (to check its
//! hash); after that reads of any size take only their range from the
//! cache file. A write edits the chunk in memory; the flush after it hashes
//! and writes the whole chunk (plus an fsync of it, of the cache directory
//! and of the map), so small synced writes cost a chunk each: that is what
//! bounds [`DEFAULT_CHUNK_SIZE`].
//!
//! The API is synchronous on purpose: its callers are FUSE request threads,
//! which are plain threads. Calls that touch the object store block on an
//! internal runtime, so they must not be made from inside an async task (use
//! `spawn_blocking`).
//!
//! GC protocol. A chunk is live if any map (live heads, checkpoints, and the
//! map snapshots last shipped to the store) names it. A dead chunk still
//! waiting for its upload is dropped without one: a box that deletes what it
//! just wrote, or is destroyed, costs the object store nothing. `gc` lists and marks without blocking anyone, then sweeps in small
//! batches, each under the upload fence held exclusively: it checks every
//! chunk of the batch again and deletes the dead ones (object and clean cache
//! row together); `flush` and uploads hold the fence shared. So a flush that
//! re-references a chunk GC is about to delete either commits before the
//! batch's check (and is seen) or after the batch (and finds no cache row, so
//! the chunk is uploaded again). The fence is per process: only one process
//! may run GC against a store.

pub mod cache;
pub mod db;
mod maintenance;
mod shipping;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bothy_store::{ChunkHash, ChunkStore, StoreError};
use bytes::Bytes;
use rusqlite::{params, Connection};

use cache::ChunkCache;
use snapshot::MapSnapshot;

/// Measured on the whole stack (ext4 on a loop device on this crate's FUSE
/// file): 256 KiB chunks did 35-71 fsynced random 4 KiB writes per second
/// where 1 MiB did 24-33 and 4 MiB 11-12, and untarred small files fastest,
/// at similar sequential throughput; a synced small write rewrites a whole
/// chunk. The price is a map of 4 rows per MiB written.
pub const DEFAULT_CHUNK_SIZE: u64 = 256 << 10;
/// Chunks garbage collection checks and deletes per hold of the fence.
const GC_BATCH: usize = 64;
/// Unflushed writes are flushed early past this, bounding memory per volume.
const MAX_PENDING_BYTES: u64 = 64 << 20;
/// How long opening a storage waits for a previous process to let go of it
/// (a daemon restarted right after a crash).
const LOCK_PATIENCE: Duration = Duration::from_secs(10);
/// Background uploads wait until no volume has flushed for this long: on a
/// small host they take the CPU and disk bandwidth a burst of writes needs
/// (measured: they were half of the daemon's CPU during a 1 GiB write).
const UPLOAD_QUIET: Duration = Duration::from_millis(250);
/// How often paused background uploads look whether they may go on.
const PRIORITY_POLL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("local storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("block map database failed: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("map snapshot in the object store is corrupt: {0}")]
    CorruptSnapshot(String),
    #[error("range {offset}+{len} is outside the volume of {size} bytes")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("volume {0:?} already exists")]
    Exists(String),
    #[error("volume {0:?} does not exist")]
    NoSuchVolume(String),
    #[error("the volume storage in {0:?} is in use by another process (is another bothy daemon running on this data dir?)")]
    InUse(std::path::PathBuf),
    #[error("volume {volume:?} has no checkpoint {id}")]
    NoSuchCheckpoint { volume: String, id: u64 },
    #[error("invalid volume geometry: {0}")]
    Geometry(String),
    #[error("invalid volume name {0:?}: use 1-63 characters from a-z A-Z 0-9 . _ -, not starting with a dot")]
    BadName(String),
    #[error("chunk {hash} has {len} bytes but the volume's chunks have {want}; the block map is corrupt")]
    ChunkLength { hash: String, len: usize, want: u64 },
    #[error("dirty chunk {0} is missing from the cache; the cache directory was tampered with")]
    LostDirtyChunk(String),
}

/// A checkpoint of one volume; ids count up from 1 per volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckpointId(pub u64);

#[derive(Debug, Clone, Copy)]
pub struct StorageConfig {
    /// Byte budget of the local cache (dirty chunks may exceed it).
    pub cache_budget: u64,
    /// How often the background uploader looks for dirty chunks unprompted.
    pub upload_interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            cache_budget: 10 << 30,
            upload_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    pub deleted_objects: usize,
    pub deleted_cached: usize,
}

/// All volumes of one host: one SQLite file, one cache directory, one store.
pub struct Storage {
    inner: Arc<Inner>,
    uploader: Option<JoinHandle<()>>,
}

struct Inner {
    /// One process (one `Storage`) per directory: the cache's slot
    /// allocation lives in memory. Released when the last user goes.
    _lock: nix::fcntl::Flock<std::fs::File>,
    db: Mutex<Connection>,
    cache: ChunkCache,
    store: ChunkStore,
    rt: maintenance::IoRuntime,
    budget: u64,
    clock: AtomicI64,
    fence: RwLock<()>,
    /// One upload pass at a time: a pass that ran concurrently with another
    /// could find a chunk the other just uploaded and evicted.
    upload_lock: Mutex<()>,
    wake: Mutex<Wake>,
    wake_cv: Condvar,
    interval: Duration,
    /// LRU clock values of cache hits not yet written to the cache table:
    /// a committed SQLite update per read would cost an fsync per read.
    touched: Mutex<HashMap<ChunkHash, i64>>,
    /// How many frozen maps (checkpoints, shipped heads) were ever inserted
    /// by this process: GC re-reads them when it changes.
    frozen_maps: AtomicU64,
    /// When a volume last flushed; background uploads wait for a quiet spell.
    last_flush: Mutex<Option<Instant>>,
    /// Dirty bytes past which background uploads stop waiting for quiet, so a
    /// box that never pauses still reaches the object store.
    dirty_high_water: u64,
    /// Foreground work background uploads give way to at once: barrier
    /// passes waiting for the upload lock (a barrier may hold a volume,
    /// stalling its box) and checkpoints under way ([`Storage::pause_uploads`]).
    priority: AtomicUsize,
    /// Volumes whose head changed since its snapshot was last shipped, and
    /// when each was last shipped (see shipping.rs).
    heads: Mutex<shipping::HeadLog>,
    /// One shipment of map snapshots (or volume deletion) at a time.
    ship_lock: Mutex<()>,
}

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
        let mut stmt =
            conn.prepare("SELECT map FROM checkpoint_maps UNION ALL SELECT map FROM shipped_maps")?;
        for blob in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
            for (_, h) in MapSnapshot::decode(&blob?)?.entries {
                hashes.insert(h);
            }
        }
        self.hashes = hashes;
        self.seen = Some(now);
        Ok(())
    }
}

#[derive(Default)]
struct Wake {
    kicked: bool,
    shutdown: bool,
}

impl Storage {
    /// Opens (creating if needed) `dir/volumes.db` and `dir/cache/`.
    pub fn open(dir: &Path, store: ChunkStore, config: StorageConfig) -> Result<Self, VolumeError> {
        std::fs::create_dir_all(dir)?;
        let lock = lock_dir(dir)?;
        let conn = db::open(&dir.join("volumes.db"))?;
        let clock: i64 =
            conn.query_row("SELECT COALESCE(MAX(last_used), 0) FROM cache", [], |r| {
                r.get(0)
            })?;
        let cache = ChunkCache::open(&dir.join("cache"), &db::cached_rows(&conn)?)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bothy-volume-io")
            .enable_all()
            .build()?;
        let inner = Arc::new(Inner {
            _lock: lock,
            db: Mutex::new(conn),
            cache,
            store,
            rt: maintenance::IoRuntime::new(rt),
            budget: config.cache_budget,
            clock: AtomicI64::new(clock),
            fence: RwLock::new(()),
            upload_lock: Mutex::new(()),
            wake: Mutex::new(Wake::default()),
            wake_cv: Condvar::new(),
            interval: config.upload_interval,
            touched: Mutex::new(HashMap::new()),
            frozen_maps: AtomicU64::new(0),
            last_flush: Mutex::new(None),
            dirty_high_water: config.cache_budget / 4,
            priority: AtomicUsize::new(0),
            heads: Mutex::new(shipping::HeadLog::default()),
            ship_lock: Mutex::new(()),
        });
        let bg = inner.clone();
        let uploader = std::thread::Builder::new()
            .name("bothy-volume-upload".into())
            .spawn(move || bg.upload_loop())?;
        Ok(Self {
            inner,
            uploader: Some(uploader),
        })
    }

    pub fn create_volume(
        &self,
        name: &str,
        size: u64,
        chunk_size: u64,
    ) -> Result<Volume, VolumeError> {
        if chunk_size == 0
            || chunk_size > bothy_store::format::MAX_CHUNK_LEN
            || size % chunk_size != 0
        {
            return Err(VolumeError::Geometry(format!(
                "size {size} must be a multiple of a chunk size between 1 byte and 64 MiB (got {chunk_size})"
            )));
        }
        let mut conn = self.inner.db();
        let tx = conn.transaction()?;
        if db::volume(&tx, name)?.is_some() {
            return Err(VolumeError::Exists(name.into()));
        }
        let head = db::new_generation(&tx, name)?;
        tx.execute(
            "INSERT INTO volumes (name, size, chunk_size, head) VALUES (?1, ?2, ?3, ?4)",
            params![name, size as i64, chunk_size as i64, head],
        )?;
        tx.commit()?;
        drop(conn);
        self.open_volume(name)
    }

    /// Opens a volume; only one handle per volume may be open at a time.
    pub fn open_volume(&self, name: &str) -> Result<Volume, VolumeError> {
        let (row, map) = {
            let conn = self.inner.db();
            let row =
                db::volume(&conn, name)?.ok_or_else(|| VolumeError::NoSuchVolume(name.into()))?;
            (row, db::entries(&conn, row.head)?.into_iter().collect())
        };
        Ok(Volume {
            inner: self.inner.clone(),
            name: name.into(),
            size: row.size,
            chunk_size: row.chunk_size,
            head: row.head,
            map,
            pending: BTreeMap::new(),
        })
    }

    /// Rebuilds a volume and its checkpoints from the snapshots its last
    /// `sync` shipped, for a host whose local disk was lost.
    pub fn recover_volume(&self, name: &str) -> Result<Volume, VolumeError> {
        check_name(name)?;
        let inner = &self.inner;
        let heads = inner
            .rt
            .block_on(inner.store.list_objects(&format!("maps/{name}/head/")))?;
        let latest = heads
            .iter()
            .filter_map(|k| k.rsplit('/').next()?.parse::<u64>().ok().map(|s| (s, k)))
            .max()
            .ok_or_else(|| VolumeError::NoSuchVolume(name.into()))?;
        let head_body = inner.rt.block_on(inner.store.get_object(latest.1))?;
        let head_snap = MapSnapshot::decode(&head_body)?;
        let mut checkpoints = Vec::new();
        for key in inner.rt.block_on(
            inner
                .store
                .list_objects(&format!("maps/{name}/checkpoints/")),
        )? {
            let Some(id) = key.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let body = inner.rt.block_on(inner.store.get_object(&key))?;
            MapSnapshot::decode(&body)?;
            checkpoints.push((id, body));
        }
        let mut conn = inner.db();
        let tx = conn.transaction()?;
        if db::volume(&tx, name)?.is_some() {
            return Err(VolumeError::Exists(name.into()));
        }
        let head = db::new_generation(&tx, name)?;
        db::replace_rows(&tx, head, &head_snap)?;
        tx.execute(
            "INSERT INTO volumes (name, size, chunk_size, head, snapshot_seq) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, head_snap.size as i64, head_snap.chunk_size as i64, head, latest.0 as i64],
        )?;
        tx.execute(
            "INSERT INTO shipped_maps (volume, seq, map) VALUES (?1, ?2, ?3)",
            params![name, latest.0 as i64, &head_body[..]],
        )?;
        for (id, body) in &checkpoints {
            tx.execute(
                "INSERT INTO checkpoint_maps (volume, id, shipped, map) VALUES (?1, ?2, 1, ?3)",
                params![name, *id as i64, &body[..]],
            )?;
        }
        inner.maps_added();
        tx.commit()?;
        drop(conn);
        self.open_volume(name)
    }

    /// Names of all volumes on this host, sorted.
    pub fn volume_names(&self) -> Result<Vec<String>, VolumeError> {
        let conn = self.inner.db();
        let mut stmt = conn.prepare("SELECT name FROM volumes ORDER BY name")?;
        let names = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(names)
    }

    /// Deletes a volume: its map snapshots in the object store first (head
    /// and checkpoints, so the store never names chunks GC may free), then
    /// its head map, checkpoints and their maps here. Its chunks are freed by
    /// the next [`Storage::gc`] (chunks still dirty in the cache are uploaded
    /// first, then freed by a later GC). Deleting a volume that is open is
    /// the caller's mistake: that handle's later flushes write rows no
    /// volume owns. Repeating it is harmless and returns `NoSuchVolume`.
    pub fn delete_volume(&self, name: &str) -> Result<(), VolumeError> {
        check_name(name)?;
        let inner = &self.inner;
        // A shipment racing this could leave a snapshot of a deleted volume.
        let _ship = inner.ship_lock.lock().unwrap_or_else(|p| p.into_inner());
        let keys = inner
            .rt
            .block_on(inner.store.list_objects(&format!("maps/{name}/")))?;
        for key in keys {
            inner.rt.block_on(inner.store.delete_object(&key))?;
        }
        let mut conn = inner.db();
        let tx = conn.transaction()?;
        let existed = db::volume(&tx, name)?.is_some();
        tx.execute(
            "DELETE FROM map WHERE gen IN (SELECT gen FROM generations WHERE volume = ?1)",
            [name],
        )?;
        tx.execute("DELETE FROM checkpoint_maps WHERE volume = ?1", [name])?;
        tx.execute("DELETE FROM head_checkpoints WHERE volume = ?1", [name])?;
        tx.execute("DELETE FROM shipped_maps WHERE volume = ?1", [name])?;
        tx.execute("DELETE FROM generations WHERE volume = ?1", [name])?;
        tx.execute("DELETE FROM volumes WHERE name = ?1", [name])?;
        tx.commit()?;
        if existed {
            Ok(())
        } else {
            Err(VolumeError::NoSuchVolume(name.into()))
        }
    }

    /// Deletes unreferenced chunks from the object store and the cache.
    pub fn gc(&self) -> Result<GcReport, VolumeError> {
        let inner = &self.inner;
        // Candidates are found without the fence or a long hold of the
        // database, so boxes keep writing meanwhile; each batch is then
        // checked again and removed under the fence (see the GC protocol
        // above), which bounds how long any flush waits.
        let listed = inner.rt.block_on(inner.store.list())?;
        let mut frozen = FrozenChunks::default();
        let live = self.live_chunks(&mut frozen)?;
        let dead_objects: Vec<ChunkHash> =
            listed.into_iter().filter(|h| !live.contains(h)).collect();
        let dead_cached: Vec<ChunkHash> = {
            let conn = inner.db();
            let mut stmt = conn.prepare("SELECT hash FROM cache")?;
            let rows: Vec<Vec<u8>> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            rows.iter()
                .map(|h| db::to_hash(h))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|h| !live.contains(h))
                .collect()
        };
        let mut report = GcReport::default();
        for batch in dead_objects.chunks(GC_BATCH) {
            let _fence = inner.fence.write().unwrap_or_else(|p| p.into_inner());
            for hash in batch {
                if self.is_live(hash, &mut frozen)? {
                    continue;
                }
                // The cache row goes with the object, so a later flush that
                // names this chunk again uploads it again.
                self.drop_cached(hash)?;
                inner.rt.block_on(inner.store.delete(hash))?;
                report.deleted_objects += 1;
            }
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

    /// Chunks some map names.
    fn live_chunks(&self, frozen: &mut FrozenChunks) -> Result<HashSet<ChunkHash>, VolumeError> {
        let conn = self.inner.db();
        frozen.refresh(&self.inner, &conn)?;
        let mut stmt = conn.prepare("SELECT DISTINCT hash FROM map")?;
        let mut live = frozen.hashes.clone();
        for h in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
            live.insert(db::to_hash(&h?)?);
        }
        Ok(live)
    }

    /// Whether some map names `hash`: frozen maps and head rows are read in
    /// one hold of the database lock (see [`FrozenChunks`]).
    fn is_live(&self, hash: &ChunkHash, frozen: &mut FrozenChunks) -> Result<bool, VolumeError> {
        use rusqlite::OptionalExtension;
        let conn = self.inner.db();
        frozen.refresh(&self.inner, &conn)?;
        if frozen.hashes.contains(hash) {
            return Ok(true);
        }
        let key = &hash.as_bytes()[..];
        Ok(conn
            .query_row("SELECT 1 FROM map WHERE hash = ?1 LIMIT 1", [key], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// Removes a dead cached chunk, uploaded or not (the caller holds the
    /// fence, so no upload pass is under way); whether there was one.
    fn drop_cached(&self, hash: &ChunkHash) -> Result<bool, VolumeError> {
        // One hold of the database lock: the row and the cached copy go
        // together (see cache.rs).
        let conn = self.inner.db();
        let n = conn.execute("DELETE FROM cache WHERE hash = ?1", [&hash.as_bytes()[..]])?;
        if n > 0 {
            self.inner.cache.remove(hash)?;
        }
        Ok(n > 0)
    }

    /// Sequence number of the newest head snapshot of `volume` shipped to
    /// the object store (0 before the first).
    pub fn head_snapshot_seq(&self, volume: &str) -> Result<u64, VolumeError> {
        Ok(db::volume(&self.inner.db(), volume)?
            .ok_or_else(|| VolumeError::NoSuchVolume(volume.into()))?
            .snapshot_seq)
    }

    /// Keeps background uploads (and [`Storage::upload_pending`]) off the
    /// disk until the guard drops: a checkpoint's few small flushes would
    /// otherwise queue behind a backlog of uploads.
    pub fn pause_uploads(&self) -> UploadPause<'_> {
        self.inner.priority.fetch_add(1, Ordering::SeqCst);
        UploadPause(&self.inner)
    }

    /// Number of chunks written locally but not yet in the object store.
    pub fn dirty_chunks(&self) -> Result<u64, VolumeError> {
        Ok(self
            .inner
            .db()
            .query_row("SELECT COUNT(*) FROM cache WHERE dirty = 1", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// Bytes of chunks held in the local cache.
    pub fn cached_bytes(&self) -> Result<u64, VolumeError> {
        Ok(self
            .inner
            .db()
            .query_row("SELECT COALESCE(SUM(len), 0) FROM cache", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }
}

/// See [`Storage::pause_uploads`].
pub struct UploadPause<'a>(&'a Inner);

impl Drop for UploadPause<'_> {
    fn drop(&mut self) {
        self.0.priority.fetch_sub(1, Ordering::SeqCst);
        self.0.kick();
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.inner.lock_wake().shutdown = true;
        self.inner.wake_cv.notify_all();
        if let Some(t) = self.uploader.take() {
            let _ = t.join();
        }
    }
}

impl Inner {
    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_wake(&self) -> MutexGuard<'_, Wake> {
        self.wake.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kick(&self) {
        self.lock_wake().kicked = true;
        self.wake_cv.notify_all();
    }

    fn upload_loop(&self) {
        loop {
            {
                let mut w = self.lock_wake();
                if !w.kicked && !w.shutdown {
                    w = self.wait_wake(w, self.interval);
                }
                if w.shutdown {
                    return;
                }
                w.kicked = false;
            }
            match self.wait_for_quiet() {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(%e, "reading the cache index failed; will retry"),
            }
            match self.upload_dirty(true) {
                // Writers came back: wait for the next quiet spell.
                Ok(false) => self.kick(),
                Ok(true) => {
                    if let Err(e) = self.ship_changed_heads() {
                        tracing::warn!(%e, "shipping block-map snapshots failed; will retry");
                    }
                }
                Err(e) => tracing::warn!(%e, "background upload failed; will retry"),
            }
        }
    }

    fn wait_wake<'a>(&self, w: MutexGuard<'a, Wake>, timeout: Duration) -> MutexGuard<'a, Wake> {
        self.wake_cv
            .wait_timeout(w, timeout)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0)
    }

    /// Time since the last flush of any volume, if it is shorter than
    /// [`UPLOAD_QUIET`] and less than the high-water mark is waiting.
    fn writers_busy(&self, waiting: u64) -> Option<Duration> {
        let since = self
            .last_flush
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())?;
        (since < UPLOAD_QUIET && waiting < self.dirty_high_water).then_some(since)
    }

    /// Sleeps until writers have been quiet for [`UPLOAD_QUIET`] (or too much
    /// is waiting). Whether the storage is shutting down.
    fn wait_for_quiet(&self) -> Result<bool, VolumeError> {
        loop {
            let wait = if self.priority.load(Ordering::SeqCst) > 0 {
                PRIORITY_POLL
            } else {
                let waiting = self.dirty_bytes()?;
                let Some(since) = self.writers_busy(waiting) else {
                    return Ok(false);
                };
                UPLOAD_QUIET - since
            };
            let w = self.wait_wake(self.lock_wake(), wait);
            if w.shutdown {
                return Ok(true);
            }
        }
    }

    fn dirty_bytes(&self) -> Result<u64, VolumeError> {
        Ok(self.db().query_row(
            "SELECT COALESCE(SUM(len), 0) FROM cache WHERE dirty = 1",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Uploads every dirty chunk and marks it clean. A background pass
    /// (`background`) stops early, returning `false`, when a volume flushes
    /// meanwhile or a barrier pass wants the upload lock.
    fn upload_dirty(&self, background: bool) -> Result<bool, VolumeError> {
        if !background {
            self.priority.fetch_add(1, Ordering::SeqCst);
        }
        let _one_pass = self.upload_lock.lock().unwrap_or_else(|p| p.into_inner());
        if !background {
            self.priority.fetch_sub(1, Ordering::SeqCst);
        }
        let _fence = self.fence.read().unwrap_or_else(|p| p.into_inner());
        let dirty: Vec<(Vec<u8>, i64)> = {
            let conn = self.db();
            let mut stmt = conn.prepare("SELECT hash, len FROM cache WHERE dirty = 1")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            rows
        };
        let mut waiting: u64 = dirty.iter().map(|(_, len)| *len as u64).sum();
        for (h, len) in dirty {
            if background
                && (self.writers_busy(waiting).is_some()
                    || self.priority.load(Ordering::SeqCst) > 0)
            {
                self.evict()?;
                return Ok(false);
            }
            waiting = waiting.saturating_sub(len as u64);
            let hash = db::to_hash(&h)?;
            let data = self
                .cache
                .read(&hash)?
                .ok_or_else(|| VolumeError::LostDirtyChunk(hash.to_hex()))?;
            self.rt.block_on(self.store.put_with_hash(hash, &data))?;
            self.db()
                .execute("UPDATE cache SET dirty = 0 WHERE hash = ?1", [&h])?;
        }
        self.evict()?;
        Ok(true)
    }

    /// Counts a new frozen map; call it inside the transaction that inserts
    /// the map, holding the database lock (see [`FrozenChunks::refresh`]).
    fn maps_added(&self) {
        self.frozen_maps.fetch_add(1, Ordering::SeqCst);
    }

    /// Freezes `volume`'s checkpoints taken since its head last changed
    /// (see [`db::freeze_head_checkpoints`]); call it inside the transaction
    /// that changes the head, before the change.
    fn freeze_head_checkpoints(
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

    fn tick(&self) -> i64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A chunk's content, through the cache.
    fn fetch(&self, hash: &ChunkHash) -> Result<Vec<u8>, VolumeError> {
        if let Some(data) = self.cache.read(hash)? {
            self.touch(hash);
            return Ok(data);
        }
        let data = self.rt.block_on(self.store.get(hash))?.to_vec();
        // A clean copy needs no sync: a damaged one is found and fetched
        // again.
        let staged = self.cache.stage(hash, &data)?;
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
        self.evict()?;
        Ok(data)
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
    fn read_range(
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
    fn chunk_data(&self, hash: &ChunkHash, chunk_size: u64) -> Result<Vec<u8>, VolumeError> {
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
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE cache SET last_used = MAX(last_used, ?2) WHERE hash = ?1",
            )?;
            for (hash, tick) in &touched {
                stmt.execute(params![&hash.as_bytes()[..], tick])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops least-recently-used clean chunks until the cache fits its budget.
    fn evict(&self) -> Result<(), VolumeError> {
        let mut conn = self.db();
        self.save_touched(&mut conn)?;
        let mut total: i64 =
            conn.query_row("SELECT COALESCE(SUM(len), 0) FROM cache", [], |r| r.get(0))?;
        if total as u64 <= self.budget {
            return Ok(());
        }
        let mut stmt =
            conn.prepare("SELECT hash, len FROM cache WHERE dirty = 0 ORDER BY last_used")?;
        let victims: Vec<(Vec<u8>, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        for (h, len) in victims {
            if total as u64 <= self.budget {
                break;
            }
            conn.execute("DELETE FROM cache WHERE hash = ?1 AND dirty = 0", [&h])?;
            self.cache.remove(&db::to_hash(&h)?)?;
            total -= len;
        }
        Ok(())
    }

    fn put_object(&self, key: &str, body: Vec<u8>) -> Result<(), VolumeError> {
        Ok(self
            .rt
            .block_on(self.store.put_object(key, Bytes::from(body)))?)
    }
}

/// Records a staged chunk in the cache table; the caller holds the database
/// lock (inside its transaction, if any) and, if this returns `true`,
/// publishes the chunk before letting go of it, else discards it. A chunk
/// cached already keeps its copy; a row whose copy was dropped (damaged)
/// gets the new one and keeps its dirty flag: the bytes are the same chunk.
fn adopt(
    cache: &ChunkCache,
    conn: &Connection,
    staged: &cache::Staged,
    dirty: bool,
    tick: i64,
) -> Result<bool, VolumeError> {
    use rusqlite::OptionalExtension;
    let key = &staged.hash.as_bytes()[..];
    let exists = conn
        .prepare_cached("SELECT 1 FROM cache WHERE hash = ?1")?
        .query_row([key], |_| Ok(()))
        .optional()?
        .is_some();
    if !exists {
        conn.prepare_cached(
            "INSERT INTO cache (hash, len, dirty, last_used, slot) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            key,
            staged.len as i64,
            i64::from(dirty),
            tick,
            staged.slot as i64
        ])?;
        return Ok(true);
    }
    if cache.contains(&staged.hash) {
        conn.prepare_cached("UPDATE cache SET last_used = ?2 WHERE hash = ?1")?
            .execute(params![key, tick])?;
        return Ok(false);
    }
    conn.prepare_cached("UPDATE cache SET len = ?2, slot = ?3, last_used = ?4 WHERE hash = ?1")?
        .execute(params![key, staged.len as i64, staged.slot as i64, tick])?;
    Ok(true)
}

/// Most chunks a flush hashes and writes to the cache at once.
const FLUSH_THREADS: usize = 4;

/// Hashes changed chunks and stages them in the cache (see cache.rs), in
/// parallel when there are several. Gives each index with its staged chunk
/// (`None` for a hole). On error nothing stays staged.
fn store_chunks(
    cache: &ChunkCache,
    pending: &[(u64, Option<&Vec<u8>>)],
) -> Result<Vec<(u64, Option<cache::Staged>)>, VolumeError> {
    let one = |(idx, data): &(u64, Option<&Vec<u8>>)| -> Result<_, VolumeError> {
        Ok((
            *idx,
            match data {
                Some(d) => Some(cache.stage(&ChunkHash::of(d), d)?),
                None => None,
            },
        ))
    };
    let busy = pending.iter().filter(|(_, d)| d.is_some()).count();
    let results: Vec<Result<_, VolumeError>> = if busy <= 1 {
        pending.iter().map(one).collect()
    } else {
        let per = pending.len().div_ceil(FLUSH_THREADS.min(busy));
        std::thread::scope(|scope| {
            let workers: Vec<_> = pending
                .chunks(per)
                .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| {
                    w.join().unwrap_or_else(|_| {
                        vec![Err(std::io::Error::other("a flush worker panicked").into())]
                    })
                })
                .collect()
        })
    };
    let mut out = Vec::with_capacity(results.len());
    let mut failed = None;
    for r in results {
        match r {
            Ok(item) => out.push(item),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    match failed {
        None => Ok(out),
        Some(e) => {
            for staged in out.into_iter().filter_map(|(_, s)| s) {
                cache.discard(staged);
            }
            Err(e)
        }
    }
}

fn is_zero(data: &[u8]) -> bool {
    // Word-sized compares (vectorised by the compiler): this runs over every
    // changed chunk at flush.
    let mut words = data.chunks_exact(8);
    words
        .by_ref()
        .all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}

/// Takes `dir/lock` exclusively, waiting up to [`LOCK_PATIENCE`].
fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, VolumeError> {
    use nix::fcntl::{Flock, FlockArg};
    let deadline = Instant::now() + LOCK_PATIENCE;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                // Polled: flock has no wait with a timeout.
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(VolumeError::InUse(dir.to_path_buf()))
            }
            Err((_, e)) => return Err(std::io::Error::from(e).into()),
        }
    }
}

/// Names end up in object-store keys, so they are kept to one plain segment.
fn check_name(name: &str) -> Result<(), VolumeError> {
    let ok = (1..=63).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(VolumeError::BadName(name.into()))
    }
}

fn snapshot_key(volume: &str, kind: &str, n: u64) -> String {
    format!("maps/{volume}/{kind}/{n:020}")
}

/// One open volume. Reads see this handle's own unflushed writes.
pub struct Volume {
    inner: Arc<Inner>,
    name: String,
    size: u64,
    chunk_size: u64,
    head: i64,
    /// The committed head map (the rows of `head`), in memory: every read and
    /// write looks a chunk up, and a checkpoint copies it whole. Only this
    /// handle changes the head while it is open.
    map: BTreeMap<u64, ChunkHash>,
    /// Chunk index → new content since the last flush (`None` = zeros).
    pending: BTreeMap<u64, Option<Vec<u8>>>,
}

impl Volume {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(VolumeError::OutOfRange {
                offset,
                len,
                size: self.size,
            }),
        }
    }

    /// Calls `f(chunk index, offset in chunk, offset in the caller's range, len)`
    /// for each chunk piece of a range.
    fn pieces(&self, offset: u64, len: u64) -> Vec<(u64, usize, usize, usize)> {
        let mut out = Vec::new();
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let idx = pos / self.chunk_size;
            let within = pos % self.chunk_size;
            let n = (self.chunk_size - within).min(len - done);
            out.push((idx, within as usize, done as usize, n as usize));
            done += n;
        }
        out
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        self.check_range(offset, buf.len() as u64)?;
        for (idx, within, at, n) in self.pieces(offset, buf.len() as u64) {
            let dst = &mut buf[at..at + n];
            if let Some(p) = self.pending.get(&idx) {
                match p {
                    Some(data) => dst.copy_from_slice(&data[within..within + n]),
                    None => dst.fill(0),
                }
                continue;
            }
            match self.map.get(&idx) {
                Some(hash) => self.inner.read_range(hash, self.chunk_size, within, dst)?,
                None => dst.fill(0),
            }
        }
        Ok(())
    }

    /// Applies `src` (bytes, or zeros for `None`) to `len` bytes at
    /// `offset`. Changed chunks are edited in place in `pending`, so a small
    /// write costs a copy of its own bytes once the chunk is loaded; chunks
    /// that end up all zeros are found at flush time.
    fn modify_range(
        &mut self,
        offset: u64,
        len: u64,
        src: Option<&[u8]>,
    ) -> Result<(), VolumeError> {
        self.check_range(offset, len)?;
        let cs = self.chunk_size as usize;
        for (idx, within, at, n) in self.pieces(offset, len) {
            let piece = src.map(|d| &d[at..at + n]);
            if n == cs {
                self.pending.insert(idx, piece.map(<[u8]>::to_vec));
                continue;
            }
            let slot = match self.pending.get_mut(&idx) {
                Some(slot) => slot,
                None => {
                    let current = match self.map.get(&idx) {
                        Some(hash) => Some(self.inner.chunk_data(hash, self.chunk_size)?),
                        // Zeroing a range of an unmapped chunk changes nothing.
                        None if piece.is_none() => continue,
                        None => None,
                    };
                    self.pending.entry(idx).or_insert(current)
                }
            };
            match (slot.as_mut(), piece) {
                (Some(data), Some(p)) => data[within..within + n].copy_from_slice(p),
                (Some(data), None) => data[within..within + n].fill(0),
                (None, Some(p)) => {
                    let mut data = vec![0u8; cs];
                    data[within..within + n].copy_from_slice(p);
                    *slot = Some(data);
                }
                (None, None) => {}
            }
        }
        if self.pending.len() as u64 * self.chunk_size > MAX_PENDING_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes `data` at `offset`; durable after the next [`Volume::flush`].
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        self.modify_range(offset, data.len() as u64, Some(data))
    }

    /// Zeros a range; chunks that become all zeros are dropped from the map
    /// and cost nothing.
    pub fn punch_hole(&mut self, offset: u64, len: u64) -> Result<(), VolumeError> {
        self.modify_range(offset, len, None)
    }

    /// Number of chunks that hold data (the rest are holes), counting
    /// unflushed writes. Cost grows with the map.
    pub fn allocated_chunks(&self) -> Result<u64, VolumeError> {
        let mut n = self.map.len() as i64;
        for (idx, p) in &self.pending {
            let mapped = self.map.contains_key(idx);
            let data = p.as_ref().is_some_and(|d| !is_zero(d));
            n += i64::from(data) - i64::from(mapped);
        }
        Ok(n.max(0) as u64)
    }

    /// Makes every write so far durable on local disk.
    pub fn flush(&mut self) -> Result<(), VolumeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let chunks = self.pending.len();
        let inner = self.inner.clone();
        let _fence = inner.fence.read().unwrap_or_else(|p| p.into_inner());
        let pending: Vec<(u64, Option<&Vec<u8>>)> = self
            .pending
            .iter()
            .map(|(idx, data)| (*idx, data.as_ref().filter(|d| !is_zero(d))))
            .collect();
        let staged = store_chunks(&inner.cache, &pending)?;
        let committed = self.commit_flush(&inner, &staged);
        if committed.is_err() {
            for s in staged.iter().filter_map(|(_, s)| *s) {
                inner.cache.discard(s);
            }
        }
        committed?;
        for (idx, chunk) in &staged {
            match chunk {
                Some(s) => self.map.insert(*idx, s.hash),
                None => self.map.remove(idx),
            };
        }
        self.pending.clear();
        *inner.last_flush.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        inner.head_changed(&self.name);
        inner.kick();
        tracing::debug!(volume = %self.name, chunks, us = started.elapsed().as_micros() as u64, "flushed");
        Ok(())
    }

    /// Makes staged chunks durable, then commits them and the map in one
    /// transaction, publishing the chunks before the database lock goes (see
    /// [`adopt`]). Nothing is published on error.
    fn commit_flush(
        &self,
        inner: &Inner,
        staged: &[(u64, Option<cache::Staged>)],
    ) -> Result<(), VolumeError> {
        inner.cache.sync()?;
        let mut conn = inner.db();
        let tx = conn.transaction()?;
        self.freeze_checkpoints(&tx)?;
        let mut decided = Vec::with_capacity(staged.len());
        for (idx, chunk) in staged {
            match chunk {
                None => {
                    tx.prepare_cached("DELETE FROM map WHERE gen = ?1 AND idx = ?2")?
                        .execute(params![self.head, *idx as i64])?;
                }
                Some(s) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO map (gen, idx, hash) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![
                        self.head,
                        *idx as i64,
                        &s.hash.as_bytes()[..]
                    ])?;
                    decided.push((*s, adopt(&inner.cache, &tx, s, true, inner.tick())?));
                }
            }
        }
        tx.commit()?;
        for (s, keep) in decided {
            if keep {
                inner.cache.publish(s);
            } else {
                inner.cache.discard(s);
            }
        }
        drop(conn);
        Ok(())
    }

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
        let unshipped: Vec<i64> = {
            let conn = inner.db();
            let mut stmt =
                conn.prepare("SELECT id FROM checkpoint_maps WHERE volume = ?1 AND shipped = 0")?;
            let rows = stmt
                .query_map([&self.name], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            rows
        };
        for id in unshipped {
            let blob: Vec<u8> = inner.db().query_row(
                "SELECT map FROM checkpoint_maps WHERE volume = ?1 AND id = ?2",
                params![self.name, id],
                |r| r.get(0),
            )?;
            inner.put_object(&snapshot_key(&self.name, "checkpoints", id as u64), blob)?;
            inner.db().execute(
                "UPDATE checkpoint_maps SET shipped = 1 WHERE volume = ?1 AND id = ?2",
                params![self.name, id],
            )?;
        }
        inner.ship_head(&self.name, false)?;
        inner.head_shipped_by_barrier(&self.name);
        Ok(())
    }

    fn head_snapshot(&self) -> MapSnapshot {
        MapSnapshot {
            size: self.size,
            chunk_size: self.chunk_size,
            entries: self.map.iter().map(|(i, h)| (*i, *h)).collect(),
        }
    }

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
        tx.execute(
            "INSERT INTO head_checkpoints (volume, id) VALUES (?1, ?2)",
            params![self.name, id],
        )?;
        tx.commit()?;
        tracing::debug!(volume = %self.name, id, us = started.elapsed().as_micros() as u64, "checkpoint recorded");
        Ok(CheckpointId(id as u64))
    }

    /// Freezes the checkpoints taken since the head last changed; call it
    /// inside the transaction that changes the head or reads their maps.
    fn freeze_checkpoints(&self, conn: &Connection) -> Result<(), VolumeError> {
        self.inner
            .freeze_head_checkpoints(conn, &self.name, || Ok(self.head_snapshot().encode()))
    }

    fn checkpoint_map(
        &self,
        conn: &Connection,
        id: CheckpointId,
    ) -> Result<MapSnapshot, VolumeError> {
        use rusqlite::OptionalExtension;
        let blob: Vec<u8> = conn
            .query_row(
                "SELECT map FROM checkpoint_maps WHERE volume = ?1 AND id = ?2",
                params![self.name, id.0 as i64],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(VolumeError::NoSuchCheckpoint {
                volume: self.name.clone(),
                id: id.0,
            })?;
        MapSnapshot::decode(&blob)
    }

    pub fn checkpoints(&self) -> Result<Vec<CheckpointId>, VolumeError> {
        let conn = self.inner.db();
        let mut stmt = conn.prepare(
            "SELECT id FROM checkpoint_maps WHERE volume = ?1
             UNION SELECT id FROM head_checkpoints WHERE volume = ?1 ORDER BY id",
        )?;
        let ids = stmt
            .query_map([&self.name], |r| r.get::<_, i64>(0))?
            .map(|r| r.map(|id| CheckpointId(id as u64)))
            .collect::<Result<_, _>>()?;
        Ok(ids)
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
        tx.execute(
            "INSERT INTO volumes (name, size, chunk_size, head) VALUES (?1, ?2, ?3, ?4)",
            params![new_name, self.size as i64, self.chunk_size as i64, head],
        )?;
        tx.commit()?;
        drop(conn);
        self.inner.head_changed(new_name);
        Ok(())
    }

    /// Deletes a checkpoint: its snapshot in the store first (so the store
    /// never names chunks GC may free), then its map.
    pub fn delete_checkpoint(&mut self, id: CheckpointId) -> Result<(), VolumeError> {
        // One still recorded as the head was never shipped nor frozen.
        let unfrozen = self.inner.db().execute(
            "DELETE FROM head_checkpoints WHERE volume = ?1 AND id = ?2",
            params![self.name, id.0 as i64],
        )?;
        if unfrozen > 0 {
            return Ok(());
        }
        self.checkpoint_map(&self.inner.db(), id)?;
        let inner = self.inner.clone();
        inner.rt.block_on(inner.store.delete_object(&snapshot_key(
            &self.name,
            "checkpoints",
            id.0,
        )))?;
        inner.db().execute(
            "DELETE FROM checkpoint_maps WHERE volume = ?1 AND id = ?2",
            params![self.name, id.0 as i64],
        )?;
        Ok(())
    }
}
