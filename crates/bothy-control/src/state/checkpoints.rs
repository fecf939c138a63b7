//! Checkpoint records in the state database. The disk content of a checkpoint
//! lives in the volume layer (`volume_checkpoint` names it there); the record
//! adds what the API shows: the `vN` id, comment, time, lineage.
//!
//! Ids count up per sprite and are never reused, even after a delete.
//! `lineage.history` is the chain of checkpoints the sprite's current disk
//! descends from (set by restore and fork); a new checkpoint copies it.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    pub seq: u64,
    pub volume_checkpoint: u64,
    pub comment: Option<String>,
    pub created_at: String,
    pub auto: bool,
    pub history: Vec<String>,
    /// Not stored: whether the checkpoint is in the object store yet, as
    /// control found when it listed it (false as read from the database).
    pub in_object_store: bool,
}

impl CheckpointRow {
    pub fn id(&self) -> String {
        format!("v{}", self.seq)
    }
}

fn history_json(h: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(h).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_history(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("checkpoint history: {e}")))
}

fn lineage(c: &rusqlite::Connection, sprite_id: &str) -> Result<(u64, Vec<String>), StoreError> {
    let row: Option<(i64, String)> = c
        .query_row(
            "SELECT next_seq, history FROM lineage WHERE sprite_id = ?1",
            [sprite_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        Some((next, h)) => Ok((next as u64, parse_history(&h)?)),
        None => Ok((1, Vec::new())),
    }
}

fn set_lineage(
    c: &rusqlite::Connection,
    sprite_id: &str,
    next_seq: u64,
    history: &[String],
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO lineage (sprite_id, next_seq, history) VALUES (?1, ?2, ?3)
         ON CONFLICT (sprite_id) DO UPDATE SET next_seq = ?2, history = ?3",
        params![sprite_id, next_seq as i64, history_json(history)?],
    )?;
    Ok(())
}

impl Store {
    /// Records a checkpoint the volume layer has made; returns its row.
    pub async fn add_checkpoint(
        &self,
        sprite_id: String,
        volume_checkpoint: u64,
        comment: Option<String>,
        auto: bool,
        now: String,
    ) -> Result<CheckpointRow, StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let (next, history) = lineage(&tx, &sprite_id)?;
            tx.execute(
                "INSERT INTO checkpoints (sprite_id, seq, volume_checkpoint, comment, created_at, auto, history)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    sprite_id,
                    next as i64,
                    volume_checkpoint as i64,
                    comment,
                    now,
                    auto as i64,
                    history_json(&history)?
                ],
            )?;
            set_lineage(&tx, &sprite_id, next + 1, &history)?;
            tx.commit()?;
            Ok(CheckpointRow {
                seq: next,
                volume_checkpoint,
                comment,
                created_at: now,
                auto,
                history,
                in_object_store: false,
            })
        })
        .await
    }

    pub async fn checkpoints(&self, sprite_id: String) -> Result<Vec<CheckpointRow>, StoreError> {
        self.run(move |c| {
            let mut st = c.prepare(
                "SELECT seq, volume_checkpoint, comment, created_at, auto, history
                 FROM checkpoints WHERE sprite_id = ?1 ORDER BY seq",
            )?;
            let mut rows = st.query([&sprite_id])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(CheckpointRow {
                    seq: r.get::<_, i64>(0)? as u64,
                    volume_checkpoint: r.get::<_, i64>(1)? as u64,
                    comment: r.get(2)?,
                    created_at: r.get(3)?,
                    auto: r.get::<_, i64>(4)? != 0,
                    history: parse_history(&r.get::<_, String>(5)?)?,
                    in_object_store: false,
                });
            }
            Ok(out)
        })
        .await
    }

    pub async fn checkpoint(
        &self,
        sprite_id: String,
        seq: u64,
    ) -> Result<Option<CheckpointRow>, StoreError> {
        Ok(self
            .checkpoints(sprite_id)
            .await?
            .into_iter()
            .find(|c| c.seq == seq))
    }

    pub async fn delete_checkpoint(&self, sprite_id: String, seq: u64) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "DELETE FROM checkpoints WHERE sprite_id = ?1 AND seq = ?2",
                params![sprite_id, seq as i64],
            )?;
            Ok(())
        })
        .await
    }

    /// After a restore to (or a fork from) checkpoint `from`: the sprite's
    /// disk now descends from it.
    pub async fn set_history(
        &self,
        sprite_id: String,
        history: Vec<String>,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let (next, _) = lineage(&tx, &sprite_id)?;
            set_lineage(&tx, &sprite_id, next, &history)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::{RowState, SpriteRow};

    pub(crate) async fn store_with_sprite() -> Store {
        let s = Store::open_in_memory().expect("store");
        s.bootstrap("h".into(), "t".into())
            .await
            .expect("bootstrap");
        s.insert_sprite(SpriteRow {
            id: "b1".into(),
            org: "default".into(),
            name: "dev".into(),
            ram_mb: 1,
            cpus: 1,
            storage_gb: 1,
            url_auth: "sprite".into(),
            url_private_access: None,
            labels: vec![],
            state: RowState::Ready,
            created_at: "t".into(),
            updated_at: "t".into(),
            last_running_at: None,
            nesting: false,
            memory_policy_mb: None,
        })
        .await
        .expect("insert");
        s
    }

    #[tokio::test]
    async fn ids_count_up_and_are_never_reused() {
        let s = store_with_sprite().await;
        let a = s
            .add_checkpoint("b1".into(), 7, Some("x".into()), false, "t".into())
            .await
            .expect("add");
        let b = s
            .add_checkpoint("b1".into(), 8, None, true, "t".into())
            .await
            .expect("add");
        assert_eq!((a.id(), b.id()), ("v1".to_string(), "v2".to_string()));
        s.delete_checkpoint("b1".into(), 2).await.expect("delete");
        let c = s
            .add_checkpoint("b1".into(), 9, None, false, "t".into())
            .await
            .expect("add");
        assert_eq!(c.id(), "v3");
        let all = s.checkpoints("b1".into()).await.expect("list");
        assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(all[0].comment.as_deref(), Some("x"));
    }

    #[tokio::test]
    async fn history_follows_restores() {
        let s = store_with_sprite().await;
        s.add_checkpoint("b1".into(), 1, None, false, "t".into())
            .await
            .expect("add");
        s.set_history("b1".into(), vec!["v1".into()])
            .await
            .expect("history");
        let c = s
            .add_checkpoint("b1".into(), 2, None, false, "t".into())
            .await
            .expect("add");
        assert_eq!(
            (c.id(), c.history),
            ("v2".to_string(), vec!["v1".to_string()])
        );
    }
}
