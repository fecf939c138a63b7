//! The handful of object-store operations chunk storage needs.
//!
//! A trait of our own (rather than `object_store::ObjectStore` directly) keeps
//! the failure-injecting test wrapper small and lets the error mapping
//! (transient vs permanent) live in one place.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{path::Path, ObjectStore, PutPayload};

use crate::StoreError;

#[async_trait]
pub trait Blobs: Send + Sync + std::fmt::Debug {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Deleting an absent object succeeds: deletes are retried and must be idempotent.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Every key under `prefix`, in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}

/// [`Blobs`] over any `object_store` backend (memory, local files, S3).
#[derive(Debug, Clone)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
}

impl ObjectBlobs {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }
}

fn map_err(key: &str, e: object_store::Error) -> StoreError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => StoreError::NotFound(key.to_string()),
        E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. } => StoreError::Permanent(format!("{key}: {e}")),
        // Generic errors carry network failures, 5xx and throttling from the
        // cloud backends; treating them as transient costs a few retries at worst.
        other => StoreError::Transient(format!("{key}: {other}")),
    }
}

#[async_trait]
impl Blobs for ObjectBlobs {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.store
            .put(&Path::from(key), PutPayload::from_bytes(body))
            .await
            .map(|_| ())
            .map_err(|e| map_err(key, e))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let result = self
            .store
            .get(&Path::from(key))
            .await
            .map_err(|e| map_err(key, e))?;
        result.bytes().await.map_err(|e| map_err(key, e))
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.store.head(&Path::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(map_err(key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix_path = Path::from(prefix);
        self.store
            .list(Some(&prefix_path))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| map_err(prefix, e))
    }
}
