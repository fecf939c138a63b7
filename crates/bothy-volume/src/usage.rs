//! How much a volume stores: the distinct chunks its disk refers to, and
//! those only its checkpoints keep. What a box is billed for, so counted
//! from the committed maps in the database (unflushed writes are not in yet)
//! and the same whether the volume is served or not.

use std::collections::HashSet;

use bothy_store::ChunkHash;

use crate::snapshot::MapSnapshot;
use crate::{db, Storage, VolumeError};

/// Bytes, counted in whole chunks of the volume's chunk size (what a chunk
/// holds before compression). Chunks shared with other volumes (the base
/// image, forks) count for each of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeUsage {
    /// Distinct chunks the current disk refers to.
    pub disk_bytes: u64,
    /// Distinct chunks the checkpoints refer to and the disk does not.
    pub checkpoint_bytes: u64,
    pub checkpoints: u64,
}

impl Storage {
    pub fn volume_usage(&self, name: &str) -> Result<VolumeUsage, VolumeError> {
        let conn = self.inner.db();
        let row = db::volume(&conn, name)?.ok_or_else(|| VolumeError::NoSuchVolume(name.into()))?;
        let head: HashSet<ChunkHash> = db::entries(&conn, row.head)?
            .into_iter()
            .map(|(_, h)| h)
            .collect();
        let mut kept = HashSet::new();
        let mut checkpoints = 0;
        for (id, _) in db::checkpoint_states(&conn, name)? {
            checkpoints += 1;
            // Checkpoints taken since the head last changed are the head.
            let Some(blob) = db::checkpoint_map(&conn, name, id)? else {
                continue;
            };
            let map = MapSnapshot::decode(&blob)?;
            kept.extend(
                map.entries
                    .into_iter()
                    .map(|(_, h)| h)
                    .filter(|h| !head.contains(h)),
            );
        }
        Ok(VolumeUsage {
            disk_bytes: head.len() as u64 * row.chunk_size,
            checkpoint_bytes: kept.len() as u64 * row.chunk_size,
            checkpoints,
        })
    }
}
