//! The local chunk cache: one file per chunk, named by its hash, with an LRU
//! byte budget that only ever evicts chunks already in the object store.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use bothy_store::ChunkHash;

use crate::VolumeError;

#[derive(Debug)]
pub struct ChunkCache {
    dir: PathBuf,
    /// Chunks whose file this process wrote or hashed whole. Only those are
    /// read by range: a partial read cannot be checked against the hash, and
    /// hashing a whole chunk for every 4 KiB read is what made small reads slow.
    verified: Mutex<HashSet<ChunkHash>>,
}

impl ChunkCache {
    pub fn open(dir: &Path) -> Result<Self, VolumeError> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            verified: Mutex::new(HashSet::new()),
        })
    }

    fn verified(&self) -> MutexGuard<'_, HashSet<ChunkHash>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, hash: &ChunkHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    /// Writes a chunk file durably (data fsynced; call [`ChunkCache::sync_dir`]
    /// once after a batch to make the names durable too).
    pub fn write(&self, hash: &ChunkHash, data: &[u8]) -> Result<(), VolumeError> {
        let path = self.path(hash);
        // Unique per write: two threads fetching the same chunk at once must
        // not rename each other's half-written file away.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!("{}.{n}.tmp", hash.to_hex()));
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        self.verified().insert(*hash);
        Ok(())
    }

    /// Whether the chunk has a file in the cache (not checked for damage).
    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.path(hash).exists()
    }

    pub fn sync_dir(&self) -> Result<(), VolumeError> {
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// The chunk's bytes if cached and intact; a damaged file is removed and
    /// reported as absent so the caller refetches it. A file this process
    /// already verified or wrote is not hashed again.
    pub fn read(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, VolumeError> {
        // Hashed once per process, like the range reads trust it after that.
        let trusted = self.verified().contains(hash);
        match fs::read(self.path(hash)) {
            Ok(data) if trusted || ChunkHash::of(&data) == *hash => {
                self.verified().insert(*hash);
                Ok(Some(data))
            }
            Ok(_) => {
                self.verified().remove(hash);
                tracing::warn!(%hash, "cached chunk is damaged; dropping it");
                let _ = fs::remove_file(self.path(hash));
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
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
        let res = File::open(self.path(hash)).and_then(|f| f.read_exact_at(dst, offset));
        match res {
            Ok(()) => Ok(true),
            // Evicted meanwhile, or truncated behind our back: the whole-chunk
            // path refetches or reports it.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                self.verified().remove(hash);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn remove(&self, hash: &ChunkHash) -> Result<(), VolumeError> {
        self.verified().remove(hash);
        match fs::remove_file(self.path(hash)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
