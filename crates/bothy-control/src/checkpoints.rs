//! Checkpoints: a record in the state database (the `vN` id, comment, time,
//! lineage) for data the volume layer keeps. Create, list, get, restore,
//! delete, and the checkpoint a fork starts from.

use std::time::Duration;

use bothy_api::CheckpointRef;

use crate::boxes::{Boxes, DiskSource};
use crate::error::{ControlError, ControlResult};
use crate::events::EventKind;
use crate::lifecycle::{bounded, spec_of, SpriteStatus};
use crate::state::{CheckpointRow, SpriteRow};
use crate::time::now;
use crate::tokens::Caller;
use crate::{validate, Control};

const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(60);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(180);

/// What a checkpoint list asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointListQuery {
    /// Also list automatic checkpoints (made before each restore).
    pub include_auto: bool,
    /// Only checkpoints descending from this one (`vN`).
    pub history: Option<String>,
}

impl<B: Boxes> Control<B> {
    /// Checkpoints the box's disk while it runs. With `durable`, answers
    /// only once the checkpoint is in the object store (a sync barrier).
    pub async fn checkpoint(
        &self,
        row: &SpriteRow,
        comment: Option<String>,
        durable: bool,
    ) -> ControlResult<CheckpointRow> {
        validate::comment(comment.as_deref())?;
        self.check_quota(
            &row.org,
            crate::quotas::Adding {
                checkpoints: 1,
                ..Default::default()
            },
        )
        .await?;
        let _awake = self.ensure_running(row).await?;
        let made = {
            let row = row.clone();
            self.to_completion(&row.id.clone(), "checkpoint", move |control| async move {
                let n = bounded(
                    CHECKPOINT_TIMEOUT,
                    "checkpointing the box",
                    control.inner.boxes.checkpoint(&row.id),
                )
                .await
                .map_err(|e| match ControlError::from(e) {
                    ControlError::Internal(m) => {
                        ControlError::Internal(format!("could not checkpoint {:?}: {m}", row.name))
                    }
                    other => other,
                })?;
                let made = control
                    .store()
                    .add_checkpoint(row.id.clone(), n, comment, false, now())
                    .await?;
                control.record_committed(&row.id, made.seq);
                tracing::info!(box_id = %row.id, checkpoint = %made.id(), "checkpoint created");
                control.emit(EventKind::Checkpointed, &row);
                if !durable {
                    control.sync_later(&row.id);
                }
                Ok(made)
            })
            .await?
        };
        if !durable {
            return Ok(made);
        }
        self.sync_sprite(row).await?;
        self.checkpoint_named(row, &made.id()).await
    }

    /// The sprite's checkpoints as `q` asks, oldest first, each saying
    /// whether it is in the object store yet.
    pub async fn checkpoints(
        &self,
        row: &SpriteRow,
        q: &CheckpointListQuery,
    ) -> ControlResult<Vec<CheckpointRow>> {
        let all = self.store().checkpoints(row.id.clone()).await?;
        let wanted: Vec<CheckpointRow> = all
            .into_iter()
            .filter(|c| q.include_auto || !c.auto)
            .filter(|c| q.history.as_ref().is_none_or(|h| c.history.contains(h)))
            .collect();
        self.with_store_state(row, wanted).await
    }

    /// Checkpoint `id` (`vN`) of the sprite.
    pub async fn checkpoint_named(
        &self,
        row: &SpriteRow,
        id: &str,
    ) -> ControlResult<CheckpointRow> {
        let seq = validate::checkpoint_id(id)?;
        let found = self.checkpoint_of(row, seq).await?;
        let mut with = self.with_store_state(row, vec![found]).await?;
        with.pop()
            .ok_or_else(|| ControlError::Internal("a checkpoint went missing".into()))
    }

    /// Fills in whether each record and its data are in the object store.
    /// A disk that cannot be asked (its storage is down) says no.
    async fn with_store_state(
        &self,
        row: &SpriteRow,
        mut records: Vec<CheckpointRow>,
    ) -> ControlResult<Vec<CheckpointRow>> {
        if records.is_empty() {
            return Ok(records);
        }
        let stored: std::collections::HashSet<u64> = match bounded(
            CHECKPOINT_TIMEOUT,
            "listing checkpoints",
            self.inner.boxes.volume_checkpoints(&row.id),
        )
        .await
        {
            Ok(list) => list
                .into_iter()
                .filter(|c| c.in_object_store)
                .map(|c| c.id)
                .collect(),
            Err(e) => {
                tracing::warn!(box_id = %row.id, error = %e, "cannot ask the disk which checkpoints are in the object store");
                Default::default()
            }
        };
        for c in &mut records {
            c.in_object_store = stored.contains(&c.volume_checkpoint)
                && self.record_in_object_store(&row.id, c.seq);
        }
        Ok(records)
    }

    async fn checkpoint_of(&self, row: &SpriteRow, seq: u64) -> ControlResult<CheckpointRow> {
        self.store()
            .checkpoint(row.id.clone(), seq)
            .await?
            .ok_or_else(|| ControlError::checkpoint_not_found(&row.name, &format!("v{seq}")))
    }

    /// Brings the box back to checkpoint `id`, keeping the state it replaces
    /// as an automatic checkpoint (returned). When it fails, the box runs
    /// on its disk as it was.
    pub async fn restore(&self, row: &SpriteRow, id: &str) -> ControlResult<CheckpointRow> {
        self.ensure_ready(row)?;
        let target = self.checkpoint_named(row, id).await?;
        let row = row.clone();
        self.to_completion(&row.id.clone(), "restore", move |control| async move {
            let safety = bounded(
                RESTORE_TIMEOUT,
                "restoring the box",
                control
                    .inner
                    .boxes
                    .restore(&spec_of(&row), target.volume_checkpoint),
            )
            .await
            .map_err(|e| match ControlError::from(e) {
                ControlError::Internal(m) | ControlError::Unavailable(m) => {
                    ControlError::Unavailable(format!(
                        "could not restore {:?} to {}: {m}; its disk is as it was, retry the restore",
                        row.name,
                        target.id()
                    ))
                }
                other => other,
            })?;
            let kept = control
                .store()
                .add_checkpoint(
                    row.id.clone(),
                    safety,
                    Some(format!("automatic, before restoring {}", target.id())),
                    true,
                    now(),
                )
                .await?;
            control.record_committed(&row.id, kept.seq);
            let mut history = target.history.clone();
            history.push(target.id());
            control.store().set_history(row.id.clone(), history).await?;
            if let Err(e) = control.store().mark_running(row.id.clone(), now()).await {
                tracing::warn!(box_id = %row.id, error = %e, "could not record last_running_at");
            }
            tracing::info!(box_id = %row.id, to = %target.id(), kept = %kept.id(), "box restored");
            control.record_state(&row, SpriteStatus::Running).await;
            control.emit(EventKind::Restored, &row);
            Ok(kept)
        })
        .await
    }

    pub async fn delete_checkpoint(&self, row: &SpriteRow, id: &str) -> ControlResult<()> {
        let target = self.checkpoint_named(row, id).await?;
        let row = row.clone();
        self.to_completion(&row.id.clone(), "delete", move |control| async move {
            // The record goes first: a crash in between leaves a volume
            // checkpoint that recovery adopts again, never a record without
            // its data.
            control
                .store()
                .delete_checkpoint(row.id.clone(), target.seq)
                .await?;
            match bounded(
                CHECKPOINT_TIMEOUT,
                "deleting the checkpoint",
                control
                    .inner
                    .boxes
                    .delete_checkpoint(&row.id, target.volume_checkpoint),
            )
            .await
            {
                // Its data was already gone: what the caller asked for holds.
                Ok(()) | Err(crate::BoxError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            control.collect_garbage_later();
            Ok(())
        })
        .await
    }

    /// The disk a fork starts from, and its history (`src@vN` and before).
    pub(crate) async fn fork_source(
        &self,
        caller: &Caller,
        from: &CheckpointRef,
    ) -> ControlResult<(DiskSource, Vec<String>)> {
        let seq = bothy_api::parse_checkpoint_id(&from.checkpoint).ok_or_else(|| {
            ControlError::invalid(format!(
                "from_checkpoint.checkpoint {:?} is not a checkpoint id; use v1, v2, ...",
                from.checkpoint.chars().take(64).collect::<String>()
            ))
        })?;
        validate::sprite_name(&from.sprite).map_err(|e| ControlError::Invalid {
            code: "invalid_name",
            message: format!("from_checkpoint.sprite: {e}"),
        })?;
        let src = self.sprite(caller, &from.sprite).await?;
        let ckpt = self.checkpoint_of(&src, seq).await?;
        let mut history: Vec<String> = ckpt
            .history
            .iter()
            .map(|h| format!("{}@{h}", src.name))
            .collect();
        history.push(format!("{}@{}", src.name, ckpt.id()));
        Ok((
            DiskSource::Checkpoint {
                box_id: src.id,
                checkpoint: ckpt.volume_checkpoint,
            },
            history,
        ))
    }

    /// Makes checkpoint records and the volume's checkpoints agree after a
    /// crash, so that a checkpoint exists whole or not at all and restore
    /// never loses work: a volume checkpoint without a record (a checkpoint
    /// or a restore's safety copy whose record a crash prevented) is kept as
    /// an automatic one; a record whose data is gone (state restored from a
    /// snapshot newer than the disk's last sync) is dropped.
    pub(crate) async fn reconcile_checkpoints(&self, row: &SpriteRow) -> ControlResult<()> {
        let records = self.store().checkpoints(row.id.clone()).await?;
        let found = bounded(
            CHECKPOINT_TIMEOUT,
            "listing checkpoints",
            self.inner.boxes.volume_checkpoints(&row.id),
        )
        .await?;
        for gone in records
            .iter()
            .filter(|c| !found.iter().any(|f| f.id == c.volume_checkpoint))
        {
            tracing::warn!(box_id = %row.id, checkpoint = %gone.id(), "checkpoint record without data; dropping it");
            self.store()
                .delete_checkpoint(row.id.clone(), gone.seq)
                .await?;
        }
        let known: std::collections::HashSet<u64> =
            records.iter().map(|c| c.volume_checkpoint).collect();
        for n in found
            .into_iter()
            .map(|c| c.id)
            .filter(|n| !known.contains(n))
        {
            tracing::info!(box_id = %row.id, volume_checkpoint = n, "keeping a checkpoint made just before a crash");
            self.store()
                .add_checkpoint(
                    row.id.clone(),
                    n,
                    Some("made just before the daemon stopped unexpectedly".into()),
                    true,
                    now(),
                )
                .await?;
        }
        Ok(())
    }
}
