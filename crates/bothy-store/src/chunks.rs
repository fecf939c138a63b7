//! The chunk store: put/get/delete/list of verified, compressed chunks, plus
//! plain named objects (block-map snapshots) under other prefixes.

use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;

use crate::{format, Blobs, ChunkHash, ObjectBlobs, RetryPolicy, StoreError, CHUNK_PREFIX};

#[derive(Debug, Clone)]
pub struct ChunkStore {
    blobs: Arc<dyn Blobs>,
    retry: RetryPolicy,
}

impl ChunkStore {
    pub fn new(blobs: Arc<dyn Blobs>, retry: RetryPolicy) -> Self {
        Self { blobs, retry }
    }

    pub fn from_object_store(store: Arc<dyn ObjectStore>) -> Self {
        Self::new(Arc::new(ObjectBlobs::new(store)), RetryPolicy::default())
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Stores `data` and returns its hash. Idempotent: a chunk already present
    /// is not uploaded again (content addressing makes the copy identical).
    pub async fn put(&self, data: &[u8]) -> Result<ChunkHash, StoreError> {
        let hash = ChunkHash::of(data);
        self.put_with_hash(hash, data).await?;
        Ok(hash)
    }

    /// As [`ChunkStore::put`] when the caller already hashed `data`; the hash
    /// is checked, so a wrong one is an error rather than a poisoned object.
    pub async fn put_with_hash(&self, hash: ChunkHash, data: &[u8]) -> Result<(), StoreError> {
        let key = hash.key();
        if self
            .retry
            .run("chunk exists", || self.blobs.exists(&key))
            .await?
        {
            return Ok(());
        }
        let (computed, body) = format::encode(data)?;
        if computed != hash {
            return Err(StoreError::Corrupt {
                hash: hash.to_hex(),
                why: "the data given to put does not have this hash".into(),
            });
        }
        self.retry
            .run("chunk put", || self.blobs.put(&key, body.clone()))
            .await
    }

    /// Fetches and verifies a chunk.
    pub async fn get(&self, hash: &ChunkHash) -> Result<Bytes, StoreError> {
        let key = hash.key();
        let body = self.retry.run("chunk get", || self.blobs.get(&key)).await?;
        format::decode(hash, &body)
    }

    pub async fn contains(&self, hash: &ChunkHash) -> Result<bool, StoreError> {
        let key = hash.key();
        self.retry
            .run("chunk exists", || self.blobs.exists(&key))
            .await
    }

    pub async fn delete(&self, hash: &ChunkHash) -> Result<(), StoreError> {
        let key = hash.key();
        self.retry
            .run("chunk delete", || self.blobs.delete(&key))
            .await
    }

    /// Every chunk in the store. Objects under `chunks/` with foreign names are
    /// skipped, not reported as chunks (GC must never act on a guess).
    pub async fn list(&self) -> Result<Vec<ChunkHash>, StoreError> {
        let keys = self
            .retry
            .run("chunk list", || self.blobs.list(CHUNK_PREFIX))
            .await?;
        let mut hashes: Vec<ChunkHash> =
            keys.iter().filter_map(|k| ChunkHash::from_key(k)).collect();
        hashes.sort();
        Ok(hashes)
    }

    /// Stores a named object that is not a chunk (e.g. `maps/…`). The name must
    /// not be under `chunks/`.
    pub async fn put_object(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        check_object_key(key)?;
        self.retry
            .run("object put", || self.blobs.put(key, body.clone()))
            .await
    }

    pub async fn get_object(&self, key: &str) -> Result<Bytes, StoreError> {
        check_object_key(key)?;
        self.retry.run("object get", || self.blobs.get(key)).await
    }

    pub async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        check_object_key(key)?;
        self.retry
            .run("object delete", || self.blobs.delete(key))
            .await
    }

    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        check_object_key(prefix)?;
        let mut keys = self
            .retry
            .run("object list", || self.blobs.list(prefix))
            .await?;
        keys.sort();
        Ok(keys)
    }
}

fn check_object_key(key: &str) -> Result<(), StoreError> {
    if key == CHUNK_PREFIX || key.starts_with(&format!("{CHUNK_PREFIX}/")) || key.is_empty() {
        return Err(StoreError::Permanent(format!(
            "object name {key:?} is reserved for chunks"
        )));
    }
    Ok(())
}
