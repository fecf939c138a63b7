//! Box disks as the runtime uses them: every call goes to the storage
//! process ([`crate::storage`]), which serves the disks and outlives the
//! daemon.
//!
//! A disk counts as attached only while the storage process that attached
//! it lives: if that process died, the box's disk is dead and the box must
//! boot again (on a disk a new storage process serves).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::storage::client::StorageClient;
use crate::storage::proto::{self, Request};
use crate::RuntimeError;

/// Where a new box's disk starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// A checkpoint of the base image's volume.
    Base,
    /// Checkpoint `checkpoint` of box `box_id`'s volume (a fork).
    Checkpoint { box_id: String, checkpoint: u64 },
}

/// A checkpoint of a box's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskCheckpoint {
    pub id: u64,
    /// Its map and every chunk it names are in the object store.
    pub in_object_store: bool,
}

pub(crate) struct Disks {
    client: StorageClient,
    base_volume: String,
    /// Box id → pid of the storage process that attached its disk.
    attached: Mutex<HashMap<String, i32>>,
}

impl Disks {
    pub(crate) fn new(client: StorageClient, base_volume: String) -> Self {
        Self {
            client,
            base_volume,
            attached: Mutex::default(),
        }
    }

    pub(crate) fn client(&self) -> &StorageClient {
        &self.client
    }

    fn attached(&self) -> std::sync::MutexGuard<'_, HashMap<String, i32>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the disk is attached by a storage process that still lives.
    pub(crate) fn is_attached(&self, id: &str) -> bool {
        let Some(by) = self.attached().get(id).copied() else {
            return false;
        };
        self.client.live_pid() == Some(by)
    }

    /// Makes box `id`'s disk a clone of `source`, `size` bytes large.
    pub(crate) async fn create(
        &self,
        id: &str,
        source: DiskSource,
        size: u64,
    ) -> Result<(), RuntimeError> {
        let (from, checkpoint) = match source {
            DiskSource::Base => (self.base_volume.clone(), 1),
            DiskSource::Checkpoint { box_id, checkpoint } => (box_id, checkpoint),
        };
        self.client
            .call(&Request::Create {
                volume: id.into(),
                from,
                checkpoint,
                size,
            })
            .await
    }

    /// Attaches the disk and mounts its filesystem; returns the mount point.
    pub(crate) async fn attach(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        let a: proto::Attached = self
            .client
            .call(&Request::Attach { volume: id.into() })
            .await?;
        if let Some(pid) = self.client.live_pid() {
            self.attached().insert(id.to_string(), pid);
        }
        Ok(a.root)
    }

    /// Takes over a disk the storage process still serves (the daemon was
    /// restarted under a running box); whether it does.
    pub(crate) async fn adopt(&self, id: &str) -> Result<bool, RuntimeError> {
        let served: proto::Served = self.client.call(&Request::Served).await?;
        if !served.volumes.iter().any(|v| v == id) {
            return Ok(false);
        }
        match self.client.live_pid() {
            Some(pid) => {
                self.attached().insert(id.to_string(), pid);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Unmounts and stops serving; with `sync`, makes the disk whole in the
    /// object store. Idempotent.
    pub(crate) async fn detach(&self, id: &str, sync: bool) -> Result<(), RuntimeError> {
        self.client
            .call::<()>(&Request::Detach {
                volume: id.into(),
                sync,
            })
            .await?;
        self.attached().remove(id);
        Ok(())
    }

    pub(crate) async fn checkpoint(&self, id: &str) -> Result<u64, RuntimeError> {
        let m: proto::Made = self
            .client
            .call(&Request::Checkpoint { volume: id.into() })
            .await?;
        Ok(m.checkpoint)
    }

    pub(crate) async fn checkpoints(&self, id: &str) -> Result<Vec<DiskCheckpoint>, RuntimeError> {
        let l: proto::CheckpointList = self
            .client
            .call(&Request::Checkpoints { volume: id.into() })
            .await?;
        Ok(l.checkpoints
            .iter()
            .map(|n| DiskCheckpoint {
                id: *n,
                in_object_store: l.in_object_store.contains(n),
            })
            .collect())
    }

    pub(crate) async fn usage(&self, id: &str) -> Result<proto::DiskUsage, RuntimeError> {
        self.client
            .call(&Request::Usage { volume: id.into() })
            .await
    }

    /// Keeps the detached disk's state as a new checkpoint (returned) and
    /// brings it back to `checkpoint`.
    pub(crate) async fn restore(&self, id: &str, checkpoint: u64) -> Result<u64, RuntimeError> {
        let m: proto::Made = self
            .client
            .call(&Request::Restore {
                volume: id.into(),
                checkpoint,
            })
            .await?;
        Ok(m.checkpoint)
    }

    pub(crate) async fn delete_checkpoint(
        &self,
        id: &str,
        checkpoint: u64,
    ) -> Result<(), RuntimeError> {
        self.client
            .call(&Request::DeleteCheckpoint {
                volume: id.into(),
                checkpoint,
            })
            .await
    }

    /// Detaches and deletes the disk. Idempotent.
    pub(crate) async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        self.client
            .call::<()>(&Request::Destroy { volume: id.into() })
            .await?;
        self.attached().remove(id);
        Ok(())
    }

    /// The barrier: the disk's writes and checkpoints are in the object store.
    pub(crate) async fn sync(&self, id: &str) -> Result<(), RuntimeError> {
        self.client.call(&Request::Sync { volume: id.into() }).await
    }

    pub(crate) async fn recover(&self, id: &str) -> Result<bool, RuntimeError> {
        let r: proto::Recovered = self
            .client
            .call(&Request::Recover { volume: id.into() })
            .await?;
        Ok(r.recovered)
    }

    pub(crate) async fn gc(&self) -> Result<(usize, usize), RuntimeError> {
        let c: proto::Collected = self.client.call(&Request::CollectGarbage).await?;
        Ok((c.objects, c.cached))
    }
}
