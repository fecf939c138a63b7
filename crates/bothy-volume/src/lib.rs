//! Sparse chunked volumes over a content-addressed object store.
//!
//! A volume is a virtual disk of `size` bytes cut into `chunk_size` chunks. Its
//! block map (SQLite, [`db`]) maps chunk index → BLAKE3 hash; an absent entry
//! is zeros. Chunks live in the object store ([`bothy_store`]); local disk is a
//! cache ([`cache`]) with an LRU byte budget.
//!
//! Where things are: [`Storage`] (opening it; creating, opening and
//! deleting volumes; stats) in `storage.rs`; [`Volume`] (read, write, punch, flush) in `volume.rs`;
//! checkpoints, restore and clone in `checkpoint.rs`; chunk upload in
//! `upload.rs`; map snapshots and the `sync` barrier in `shipping.rs`;
//! garbage collection in `gc.rs`; recovery from the object store alone in
//! `recovery.rs`; every SQL statement in [`db`]. Tests: `tests/volume.rs`
//! against a model, `tests/concurrency.rs` for what runs beside what,
//! `tests/s3_recovery.rs` over a real S3 server.
//!
//! Durability ladder:
//! - `write` lands in memory;
//! - `flush` writes changed chunks to the cache, fsyncs them and commits the
//!   map: after it returns, a crash loses nothing;
//! - a background thread uploads flushed chunks once no volume has flushed
//!   for 250 ms, or a quarter of the cache budget waits, or a flushed chunk
//!   has waited 5 s (`upload.rs`); and it ships a snapshot of each changed
//!   head, frozen before an upload pass and put in the store once every
//!   chunk it names is uploaded, at most every 5 s per volume
//!   (`shipping.rs`): from then on the object store alone can bring those
//!   writes back. So even a box that writes and fsyncs without ever pausing
//!   has each flushed write in the store within 5 s of its flush, and named
//!   by a head snapshot there within 10 s (at most 5 s until its volume's
//!   head is due to be frozen again, then at most 5 s waiting for writers
//!   to pause), each plus the time the uploads queued before it take and
//!   any pause for a barrier or a checkpoint. A host that loses its disk
//!   loses at most that window of acknowledged writes;
//! - `sync` uploads everything still dirty and ships a map snapshot
//!   ([`snapshot`]) of the head and of every checkpoint: after it returns,
//!   the object store alone can bring the volume and its checkpoints back
//!   ([`Storage::recover_volume`]). [`Volume::checkpoint_states`] tells
//!   which checkpoints are there already.
//!
//! A barrier of one volume waits for the barrier of another (one upload
//! pass at a time), but no flush, clone, delete or open waits for any
//! object-store call: locks held across those calls are per volume
//! (shipping, deletion) or per chunk (GC's deletes, see `gc.rs`). A
//! storage-wide barrier is left to the caller: it runs `sync` on each
//! volume, through an open handle or one opened for the call.
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
//! A chunk is live if any map (live heads, checkpoints, and the head maps
//! frozen for shipment or shipped to the store) names it; `gc.rs` states
//! the protocol that keeps GC from deleting a chunk a flush names again.

pub mod cache;
mod checkpoint;
pub mod db;
mod gc;
mod keylocks;
mod maintenance;
mod recovery;
mod shipping;
pub mod snapshot;
mod space;
mod storage;
mod upload;
mod usage;
mod volume;

use std::time::Duration;

use bothy_store::StoreError;

pub use space::SpaceUse;
pub use storage::Storage;
pub use upload::UploadPause;
pub use usage::VolumeUsage;
pub use volume::{Volume, MAX_PENDING_BYTES};

/// Measured on the whole stack (ext4 on a loop device on this crate's FUSE
/// file): 256 KiB chunks did 35-71 fsynced random 4 KiB writes per second
/// where 1 MiB did 24-33 and 4 MiB 11-12, and untarred small files fastest,
/// at similar sequential throughput; a synced small write rewrites a whole
/// chunk. The price is a map of 4 rows per MiB written.
pub const DEFAULT_CHUNK_SIZE: u64 = 256 << 10;

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

/// The object-store key of a map snapshot (see [`snapshot`]).
fn snapshot_key(volume: &str, kind: &str, n: u64) -> String {
    format!("maps/{volume}/{kind}/{n:020}")
}
