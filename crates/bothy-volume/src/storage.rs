//! [`Storage`]: the volumes of one host, and the state they share.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bothy_store::{ChunkHash, ChunkStore, StoreError};
use bytes::Bytes;
use rusqlite::Connection;

use crate::cache::ChunkCache;
use crate::db::{self, VolumeRow};
use crate::keylocks::KeyLocks;
use crate::{check_name, maintenance, shipping, upload, StorageConfig, Volume, VolumeError};

/// Most object-store calls [`Inner::concurrently`] makes at once.
const CONCURRENT_CALLS: usize = 64;
/// How long opening a storage waits for a previous process to let go of it
/// (a daemon restarted right after a crash).
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// All volumes of one host: one SQLite file, one cache directory, one store.
pub struct Storage {
    pub(crate) inner: Arc<Inner>,
    uploader: Option<JoinHandle<()>>,
}

pub(crate) struct Inner {
    /// One process (one `Storage`) per directory: the cache's slot
    /// allocation lives in memory. Released when the last user goes.
    _lock: nix::fcntl::Flock<std::fs::File>,
    pub(crate) db: Mutex<Connection>,
    pub(crate) cache: ChunkCache,
    pub(crate) store: ChunkStore,
    pub(crate) rt: maintenance::IoRuntime,
    pub(crate) budget: u64,
    pub(crate) clock: AtomicI64,
    /// The fence of the GC protocol (see gc.rs).
    pub(crate) fence: RwLock<()>,
    /// One upload pass at a time, so no chunk is uploaded twice. Only upload
    /// passes wait for it: a barrier waits for another volume's barrier,
    /// never a flush, clone, delete or open.
    pub(crate) upload_lock: Mutex<()>,
    pub(crate) wake: Mutex<upload::Wake>,
    pub(crate) wake_cv: Condvar,
    pub(crate) interval: Duration,
    /// LRU clock values of cache hits not yet written to the cache table:
    /// a committed SQLite update per read would cost an fsync per read.
    pub(crate) touched: Mutex<HashMap<ChunkHash, i64>>,
    /// How many frozen maps (checkpoints, shipped heads) were ever inserted
    /// by this process: GC re-reads them when it changes.
    pub(crate) frozen_maps: AtomicU64,
    /// When volumes flushed, for the uploader's rules (see upload.rs).
    pub(crate) flushes: Mutex<upload::Flushes>,
    /// Dirty bytes past which background uploads stop waiting for quiet, so a
    /// box that never pauses still reaches the object store.
    pub(crate) dirty_high_water: u64,
    /// Foreground work background uploads give way to at once: barrier
    /// passes waiting for the upload lock (a barrier may hold a volume,
    /// stalling its box) and checkpoints under way ([`Storage::pause_uploads`]).
    pub(crate) priority: AtomicUsize,
    /// Volumes whose head changed since it was last frozen for shipment,
    /// and the frozen heads waiting to ship (see shipping.rs).
    pub(crate) heads: Mutex<shipping::HeadLog>,
    /// One shipment of map snapshots, or deletion, per volume at a time.
    pub(crate) ship_locks: KeyLocks<String>,
    /// Chunks whose objects GC is deleting, outside the fence: their upload
    /// waits for the delete (see gc.rs).
    pub(crate) deleting: KeyLocks<ChunkHash>,
    /// Moves whenever GC drops cache rows (under the fence): an upload marks
    /// a chunk clean only if it did not move since it read the chunk.
    pub(crate) gc_drops: AtomicU64,
    /// Bytes written to open volumes and not flushed yet: the local disk
    /// still has to make room for them (see space.rs).
    pub(crate) pending_bytes: AtomicU64,
}

impl Storage {
    /// Opens (creating if needed) `dir/volumes.db` and `dir/cache/`.
    pub fn open(dir: &Path, store: ChunkStore, config: StorageConfig) -> Result<Self, VolumeError> {
        std::fs::create_dir_all(dir)?;
        let lock = lock_dir(dir)?;
        let conn = db::open(&dir.join("volumes.db"))?;
        let clock = db::max_last_used(&conn)?;
        let dirty = db::cache_totals(&conn, true)?.0 > 0;
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
            wake: Mutex::new(upload::Wake::default()),
            wake_cv: Condvar::new(),
            interval: config.upload_interval,
            touched: Mutex::new(HashMap::new()),
            frozen_maps: AtomicU64::new(0),
            flushes: Mutex::new(upload::Flushes::after_open(dirty)),
            dirty_high_water: config.cache_budget / 4,
            priority: AtomicUsize::new(0),
            heads: Mutex::new(shipping::HeadLog::default()),
            ship_locks: KeyLocks::default(),
            deleting: KeyLocks::default(),
            gc_drops: AtomicU64::new(0),
            pending_bytes: AtomicU64::new(0),
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
        let row = VolumeRow {
            size,
            chunk_size,
            head,
            snapshot_seq: 0,
        };
        db::insert_volume(&tx, name, &row)?;
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
            counted: 0,
        })
    }

    /// Names of all volumes on this host, sorted.
    pub fn volume_names(&self) -> Result<Vec<String>, VolumeError> {
        db::volume_names(&self.inner.db())
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
        // A shipment of this volume racing this could leave a snapshot of a
        // deleted volume.
        let _volume = inner.ship_locks.lock(&name.to_string());
        let keys = inner
            .rt
            .block_on(inner.store.list_objects(&format!("maps/{name}/")))?;
        inner.concurrently(&keys, |key| inner.store.delete_object(key))?;
        let existed = {
            let mut conn = inner.db();
            let tx = conn.transaction()?;
            let existed = db::volume(&tx, name)?.is_some();
            db::delete_volume_rows(&tx, name)?;
            tx.commit()?;
            existed
        };
        inner.head_deleted(name);
        if existed {
            Ok(())
        } else {
            Err(VolumeError::NoSuchVolume(name.into()))
        }
    }

    /// Sequence number of the newest head snapshot of `volume` shipped to
    /// the object store (0 before the first).
    pub fn head_snapshot_seq(&self, volume: &str) -> Result<u64, VolumeError> {
        Ok(db::volume(&self.inner.db(), volume)?
            .ok_or_else(|| VolumeError::NoSuchVolume(volume.into()))?
            .snapshot_seq)
    }

    /// Number of chunks written locally but not yet in the object store.
    pub fn dirty_chunks(&self) -> Result<u64, VolumeError> {
        Ok(db::cache_totals(&self.inner.db(), true)?.0)
    }

    /// Bytes of chunks held in the local cache.
    pub fn cached_bytes(&self) -> Result<u64, VolumeError> {
        Ok(db::cache_totals(&self.inner.db(), false)?.1)
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
    pub(crate) fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next value of the cache's LRU clock.
    pub(crate) fn tick(&self) -> i64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn put_object(&self, key: &str, body: Vec<u8>) -> Result<(), VolumeError> {
        Ok(self
            .rt
            .block_on(self.store.put_object(key, Bytes::from(body)))?)
    }

    /// Runs `call` on every item, [`CONCURRENT_CALLS`] at a time, so that a
    /// batch of object-store calls costs about one round trip; the first
    /// error, once all are done.
    pub(crate) fn concurrently<'a, T, Fut>(
        &self,
        items: &'a [T],
        call: impl Fn(&'a T) -> Fut,
    ) -> Result<(), VolumeError>
    where
        Fut: Future<Output = Result<(), StoreError>>,
    {
        for group in items.chunks(CONCURRENT_CALLS) {
            let results = self
                .rt
                .block_on(futures::future::join_all(group.iter().map(&call)));
            results.into_iter().collect::<Result<(), _>>()?;
        }
        Ok(())
    }
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
