//! Bringing a volume back from the object store alone, for a host whose
//! local disk was lost.

use crate::db::{self, VolumeRow};
use crate::snapshot::MapSnapshot;
use crate::{check_name, Storage, Volume, VolumeError};

impl Storage {
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
        let row = VolumeRow {
            size: head_snap.size,
            chunk_size: head_snap.chunk_size,
            head,
            snapshot_seq: latest.0,
        };
        db::insert_volume(&tx, name, &row)?;
        db::insert_shipped_map(&tx, name, latest.0, &head_body)?;
        for (id, body) in &checkpoints {
            db::insert_checkpoint_map(&tx, name, *id as i64, true, body)?;
        }
        inner.maps_added();
        tx.commit()?;
        drop(conn);
        self.open_volume(name)
    }
}
