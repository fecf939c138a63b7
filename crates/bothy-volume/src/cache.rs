//! The local chunk cache: one file per chunk, named by its hash, with an LRU
//! byte budget that only ever evicts chunks already in the object store.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use bothy_store::ChunkHash;

use crate::VolumeError;

#[derive(Debug)]
pub struct ChunkCache {
    dir: PathBuf,
}

impl ChunkCache {
    pub fn open(dir: &Path) -> Result<Self, VolumeError> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, hash: &ChunkHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    /// Writes a chunk file durably (data fsynced; call [`ChunkCache::sync_dir`]
    /// once after a batch to make the names durable too).
    pub fn write(&self, hash: &ChunkHash, data: &[u8]) -> Result<(), VolumeError> {
        let path = self.path(hash);
        let tmp = self.dir.join(format!("{}.tmp", hash.to_hex()));
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(())
    }

    pub fn sync_dir(&self) -> Result<(), VolumeError> {
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// The chunk's bytes if cached and intact; a damaged file is removed and
    /// reported as absent so the caller refetches it.
    pub fn read(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, VolumeError> {
        match fs::read(self.path(hash)) {
            Ok(data) if ChunkHash::of(&data) == *hash => Ok(Some(data)),
            Ok(_) => {
                tracing::warn!(%hash, "cached chunk is damaged; dropping it");
                let _ = fs::remove_file(self.path(hash));
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn remove(&self, hash: &ChunkHash) -> Result<(), VolumeError> {
        match fs::remove_file(self.path(hash)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
