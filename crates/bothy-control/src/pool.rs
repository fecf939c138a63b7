//! The warm pool: `bothy daemon --warm-pool N` keeps N booted boxes ready,
//! so a create is a rename. A create of the pool's shape (the default
//! memory, CPUs and disk, no nesting, not a fork) takes one: its row moves
//! into the caller's organisation under the requested name, labels and URL
//! settings, it is woken if the idle pass froze it, its hostname and /etc
//! files are set, and the request's idle policy applied. Anything else, or
//! an empty pool, creates as before.
//!
//! Pooled boxes live in [`POOL_ORG`], which no token can belong to, so no
//! listing, quota or count sees them; the host's admission does (they use
//! memory). They are ordinary rows otherwise, so a daemon restart adopts
//! or rolls them back like any box and nothing leaks; the refill job makes
//! up the number, or destroys the extra ones when the pool was made
//! smaller. Pooled boxes go warm when idle like any box but never cold.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bothy_api::CreateSpriteRequest;

use crate::boxes::{Boxes, DiskSource};
use crate::error::{ControlError, ControlResult};
use crate::events::EventKind;
use crate::lifecycle::{bounded, spec_of, SpriteStatus, STOP_TIMEOUT};
pub use crate::state::pool::POOL_ORG;
use crate::state::{RowState, SpriteRow, StoreError};
use crate::time::now;
use crate::{validate, Control};

/// How often the refill job looks even when nothing woke it.
const REFILL_PERIOD: Duration = Duration::from_secs(5);
/// Largest pool a daemon may keep.
pub const MAX_POOL: usize = 64;

impl<B: Boxes> Control<B> {
    /// Keeps `n` ready boxes from now on (the refill job makes them).
    pub fn set_warm_pool(&self, n: usize) {
        self.inner
            .pool_size
            .store(n.min(MAX_POOL), Ordering::SeqCst);
        self.inner.pool_wake.notify_one();
    }

    pub(crate) fn pool_size(&self) -> usize {
        self.inner.pool_size.load(Ordering::SeqCst)
    }

    /// Takes a pooled box for `row` (a validated new row) if one of its
    /// shape is ready; `None` means create it as usual.
    pub(crate) async fn take_from_pool(&self, row: &SpriteRow) -> ControlResult<Option<SpriteRow>> {
        if self.pool_size() == 0 {
            return Ok(None);
        }
        let admitting = self.inner.admitting.lock().await;
        let Some(pooled) = self.store().pooled_like(row).await? else {
            return Ok(None);
        };
        // It is taken, not added: the host's room already counts it.
        let others: Vec<SpriteRow> = self
            .awake_rows()
            .await?
            .into_iter()
            .filter(|r| r.id != pooled.id)
            .collect();
        self.admission().check(row, &others)?;
        self.admit_by_quota(row).await?;
        let taken = SpriteRow {
            id: pooled.id.clone(),
            state: RowState::Ready,
            ..row.clone()
        };
        match self
            .store()
            .take_pooled(pooled.id.clone(), taken.clone())
            .await
        {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(StoreError::Conflict) => return Err(crate::lifecycle::name_taken(&row.name)),
            Err(e) => return Err(e.into()),
        }
        drop(admitting);
        self.inner.pool_wake.notify_one();
        // The row is the caller's now: the hand-over finishes even if the
        // caller goes away.
        let control = self.clone();
        tokio::spawn(async move { control.hand_over(taken).await })
            .await
            .map_err(|e| ControlError::Internal(format!("handing over a pooled box: {e}")))
    }

    /// Makes a taken box its new owner's; `None` (the box destroyed) when
    /// that fails, so the create goes the usual way.
    async fn hand_over(&self, taken: SpriteRow) -> Option<SpriteRow> {
        if let Err(e) = self.make_yours(&taken).await {
            tracing::warn!(box_id = %taken.id, error = %e, "a pooled box could not be handed over; creating anew");
            if let Err(e) = self.destroy(taken).await {
                tracing::warn!(error = %e, "could not destroy a pooled box that failed its hand-over");
            }
            return None;
        }
        self.count_state(&taken.id, SpriteStatus::Running).await;
        tracing::info!(box_id = %taken.id, name = %taken.name, org = %taken.org, "sprite created from the warm pool");
        self.emit(EventKind::Created, &taken);
        Some(taken)
    }

    /// Wakes a taken box and gives it its new name.
    async fn make_yours(&self, row: &SpriteRow) -> ControlResult<()> {
        let _awake = self.ensure_running(row).await?;
        let _guard = self.inner.locks.lock(&row.id, "naming the sprite").await?;
        bounded(
            STOP_TIMEOUT,
            "naming the box",
            self.inner.boxes.rename(&spec_of(row)),
        )
        .await?;
        Ok(())
    }

    /// Runs until shutdown: keeps the pool at its size.
    pub(crate) async fn pool_job(&self) {
        let mut stop = self.shutdown_signal();
        loop {
            if *stop.borrow() {
                return;
            }
            self.refill_pool().await;
            tokio::select! {
                _ = self.inner.pool_wake.notified() => {}
                _ = tokio::time::sleep(REFILL_PERIOD) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Creates or destroys pooled boxes, one at a time, until there are as
    /// many as the pool's size.
    async fn refill_pool(&self) {
        let stop = self.shutdown_signal();
        loop {
            if *stop.borrow() {
                return;
            }
            let rows = match self.store().all_sprites().await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "warm pool: cannot list boxes");
                    return;
                }
            };
            let pooled: Vec<SpriteRow> = rows
                .into_iter()
                .filter(|r| is_pooled(r) && r.state != RowState::Destroying)
                .collect();
            let want = self.pool_size();
            let done = if pooled.len() < want {
                self.add_pooled().await
            } else if let Some(extra) = pooled
                .iter()
                .filter(|r| r.state == RowState::Ready)
                .nth(want)
            {
                self.remove_pooled(extra).await
            } else {
                return;
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "warm pool: could not refill; retrying in {REFILL_PERIOD:?}");
                return;
            }
        }
    }

    /// Destroys a pooled box no create took meanwhile: it is marked
    /// destroying under the lock creates take pooled boxes with, so none
    /// takes it after.
    async fn remove_pooled(&self, row: &SpriteRow) -> ControlResult<()> {
        {
            let _admitting = self.inner.admitting.lock().await;
            let current = self.store().sprite_by_id(row.id.clone()).await?;
            if !current.is_some_and(|c| is_pooled(&c) && c.state == RowState::Ready) {
                return Ok(());
            }
            self.store()
                .set_state(row.id.clone(), RowState::Destroying, now())
                .await?;
        }
        self.destroy(row.clone()).await
    }

    async fn add_pooled(&self) -> ControlResult<()> {
        self.store().ensure_pool_org(now()).await?;
        let req = CreateSpriteRequest {
            name: format!("pool-{:08x}", rand::random::<u32>()),
            ..Default::default()
        };
        let row = validate::new_row(POOL_ORG, &req, now())?;
        {
            let _admitting = self.inner.admitting.lock().await;
            let existing = self.awake_rows().await?;
            self.admission().check(&row, &existing)?;
            self.store().insert_sprite(row.clone()).await?;
        }
        self.finish_create(row, DiskSource::Base).await
    }

    /// Ready pooled boxes now.
    pub async fn pool_ready(&self) -> ControlResult<usize> {
        Ok(self
            .store()
            .all_sprites()
            .await?
            .iter()
            .filter(|r| is_pooled(r) && r.state == RowState::Ready)
            .count())
    }
}

/// Whether `row` is a pooled box (hidden from everyone).
pub(crate) fn is_pooled(row: &SpriteRow) -> bool {
    row.org == POOL_ORG
}
