//! Shared state of the API and the box lifecycle (create, destroy, wake,
//! recovery after a crash, shutdown).
//!
//! Crash safety: create = row `creating` (committed) → runtime create → start →
//! row `ready`; destroy = row `destroying` (committed) → runtime destroy → row
//! deleted. On start, [`App::recover`] rolls back `creating` rows (the client
//! never got an answer), finishes `destroying` ones and starts every `ready` box.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bothy_runtime::BoxSpec;
use tokio::sync::watch;

use crate::boxes::{BoxError, Boxes, DiskSource};
use crate::checkpoint_store::CheckpointRow;
use crate::envsock::EnvSockets;
use crate::error::ApiError;
use crate::store::{RowState, SpriteRow, Store};

/// Longest a box may take to be created (copying its volume) and started.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const DESTROY_TIMEOUT: Duration = Duration::from_secs(60);
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(60);
/// When the second garbage-collection pass after a delete runs (see
/// `collect_garbage_later`): after ext4's periodic commit (5 s) and the next
/// head shipment (at most every 5 s per volume).
const GC_SECOND_PASS_AFTER: Duration = Duration::from_secs(15);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bringing a disk back from the object store reads its map snapshots.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(300);
/// Status checks are on the path of list/get: a wedged box must not hang them.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

pub struct App<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for App<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<B> {
    store: Store,
    boxes: B,
    /// One async lock per box id, so create/destroy/wake of a box never race.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    shutdown: watch::Receiver<bool>,
    env: EnvSockets,
}

/// Now as RFC 3339 with milliseconds, the precision every other timestamp has.
pub fn now() -> String {
    let ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    rfc3339_ms(u64::try_from(ms).unwrap_or(0))
}

/// Milliseconds since the epoch as RFC 3339.
pub fn rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    // Always three fraction digits, so that the strings sort like the times.
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into())
}

pub fn spec_of(row: &SpriteRow) -> BoxSpec {
    BoxSpec {
        id: row.id.clone(),
        hostname: row.name.clone(),
        ram_mb: row.ram_mb,
        cpus: row.cpus,
        storage_gb: row.storage_gb,
    }
}

async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, BoxError>>,
) -> Result<T, BoxError> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(BoxError::Timeout(format!(
            "{what} took longer than {limit:?}"
        )))
    })
}

impl<B: Boxes> App<B> {
    pub fn new(store: Store, boxes: B, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                boxes,
                locks: Mutex::new(HashMap::new()),
                shutdown,
                env: EnvSockets::default(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn boxes(&self) -> &B {
        &self.inner.boxes
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.clone()
    }

    fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(id.to_string()).or_default())
    }

    fn forget_lock(&self, id: &str) {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.remove(id);
    }

    /// `running` or `cold`; a box that does not answer in time counts as cold.
    pub async fn status_of(&self, id: &str) -> &'static str {
        match bounded(
            STATUS_TIMEOUT,
            "status check",
            self.inner.boxes.is_running(id),
        )
        .await
        {
            Ok(true) => "running",
            Ok(false) => "cold",
            Err(e) => {
                tracing::warn!(box_id = id, error = %e, "status check failed");
                "cold"
            }
        }
    }

    /// Creates and starts the box of a row already inserted as `creating`; on
    /// failure removes what was made and the row. Runs to completion even if the
    /// caller goes away, so the row never stays half-made while the daemon runs.
    pub async fn finish_create(&self, row: SpriteRow, source: DiskSource) -> Result<(), ApiError> {
        let app = self.clone();
        let task = tokio::spawn(async move {
            let lock = app.lock_of(&row.id);
            let _guard = lock.lock().await;
            let spec = spec_of(&row);
            let made = async {
                bounded(
                    CREATE_TIMEOUT,
                    "creating the box",
                    app.inner.boxes.create(&spec, &source),
                )
                .await?;
                bounded(
                    START_TIMEOUT,
                    "starting the box",
                    app.inner.boxes.start(&spec),
                )
                .await
            }
            .await;
            match made {
                Ok(()) => {
                    let t = now();
                    app.store()
                        .set_state(row.id.clone(), RowState::Ready, t.clone())
                        .await?;
                    app.store().mark_running(row.id.clone(), t).await?;
                    app.serve_env(&row.id);
                    tracing::info!(box_id = %row.id, name = %row.name, org = %row.org, "sprite created");
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(box_id = %row.id, error = %e, "create failed; rolling back");
                    if let Err(d) =
                        bounded(DESTROY_TIMEOUT, "cleanup", app.inner.boxes.destroy(&row.id)).await
                    {
                        tracing::warn!(box_id = %row.id, error = %d, "cleanup after a failed create failed");
                    }
                    app.store().delete_sprite(row.id.clone()).await?;
                    Err(ApiError::Internal(format!(
                        "could not create the box: {e}; check the daemon's log and host setup, then retry"
                    )))
                }
            }
        });
        task.await
            .map_err(|e| ApiError::Internal(format!("create task failed: {e}")))?
    }

    /// Destroys a box and deletes its row; like create, finishes even if the
    /// caller goes away.
    pub async fn destroy(&self, row: SpriteRow) -> Result<(), ApiError> {
        let id = row.id.clone();
        let app = self.clone();
        let task = tokio::spawn(async move {
            let lock = app.lock_of(&row.id);
            let _guard = lock.lock().await;
            app.store()
                .set_state(row.id.clone(), RowState::Destroying, now())
                .await?;
            app.inner.env.remove(&row.id);
            bounded(
                DESTROY_TIMEOUT,
                "destroying the box",
                app.inner.boxes.destroy(&row.id),
            )
            .await
            .map_err(|e| {
                ApiError::Internal(format!(
                    "could not destroy the box: {e}; retry the delete, it resumes where it stopped"
                ))
            })?;
            app.store().delete_sprite(row.id.clone()).await?;
            tracing::info!(box_id = %row.id, name = %row.name, org = %row.org, "sprite destroyed");
            app.collect_garbage_later();
            Ok(())
        });
        let res = task
            .await
            .map_err(|e| ApiError::Internal(format!("destroy task failed: {e}")))?;
        if res.is_ok() {
            self.forget_lock(&id);
        }
        res
    }

    /// Makes sure the box runs (waking a cold one), or says why it cannot.
    pub async fn ensure_running(&self, row: &SpriteRow) -> Result<(), ApiError> {
        self.ensure_ready(row)?;
        self.wake(row).await
    }

    /// Refuses a sprite that is still being created or destroyed.
    pub fn ensure_ready(&self, row: &SpriteRow) -> Result<(), ApiError> {
        match row.state {
            RowState::Ready => {}
            RowState::Creating => {
                return Err(ApiError::Unavailable(format!(
                    "sprite {:?} is still being created; retry in a moment",
                    row.name
                )))
            }
            RowState::Destroying => {
                return Err(ApiError::Unavailable(format!(
                    "sprite {:?} is being destroyed (if a destroy failed, DELETE it again)",
                    row.name
                )))
            }
        }
        Ok(())
    }

    async fn wake(&self, row: &SpriteRow) -> Result<(), ApiError> {
        let lock = self.lock_of(&row.id);
        let _guard = lock.lock().await;
        // A destroy may have run while this waited for the lock: never start a
        // box whose row is gone.
        let current = self
            .store()
            .sprite(row.org.clone(), row.name.clone())
            .await?;
        if current.is_none_or(|c| c.id != row.id || c.state != RowState::Ready) {
            return Err(ApiError::not_found(&row.name));
        }
        if let Ok(true) = bounded(
            STATUS_TIMEOUT,
            "status check",
            self.inner.boxes.is_running(&row.id),
        )
        .await
        {
            return Ok(());
        }
        self.start_locked(row).await.map_err(|reason| {
            ApiError::Unavailable(format!(
                "sprite {:?} could not be started: {reason}; check the daemon's log, or destroy and recreate it",
                row.name
            ))
        })
    }

    async fn start_locked(&self, row: &SpriteRow) -> Result<(), String> {
        match bounded(
            START_TIMEOUT,
            "starting the box",
            self.inner.boxes.start(&spec_of(row)),
        )
        .await
        {
            Ok(()) => {
                if let Err(e) = self.store().mark_running(row.id.clone(), now()).await {
                    tracing::warn!(box_id = %row.id, error = %e, "could not record last_running_at");
                }
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(box_id = %row.id, error = %reason, "box start failed");
                Err(reason)
            }
        }
    }

    /// Brings the boxes back in line with the state database after a restart.
    pub async fn recover(&self) -> Result<(), ApiError> {
        let rows = self.store().all_sprites().await?;
        for row in rows {
            let lock = self.lock_of(&row.id);
            let _guard = lock.lock().await;
            match row.state {
                RowState::Creating | RowState::Destroying => {
                    let what = if row.state == RowState::Creating {
                        "rolling back an unfinished create"
                    } else {
                        "finishing an interrupted destroy"
                    };
                    tracing::info!(box_id = %row.id, name = %row.name, "{what}");
                    match bounded(DESTROY_TIMEOUT, what, self.inner.boxes.destroy(&row.id)).await {
                        Ok(()) => self.store().delete_sprite(row.id.clone()).await?,
                        Err(e) => {
                            tracing::warn!(box_id = %row.id, error = %e, "{what} failed; will retry on next start")
                        }
                    }
                }
                RowState::Ready => {
                    self.serve_env(&row.id);
                    match bounded(
                        RECOVER_TIMEOUT,
                        "recovering the disk",
                        self.inner.boxes.recover_disk(&row.id),
                    )
                    .await
                    {
                        Ok(true) => {
                            tracing::info!(box_id = %row.id, name = %row.name, "disk recovered from the object store")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(box_id = %row.id, name = %row.name, error = %e, "cannot recover the disk from the object store")
                        }
                    }
                    if let Err(e) = self.reconcile_checkpoints(&row).await {
                        tracing::warn!(box_id = %row.id, error = %e, "cannot reconcile checkpoints");
                    }
                    // Failures are recorded and reported on exec; keep going.
                    let _ = self.start_locked(&row).await;
                }
            }
        }
        Ok(())
    }

    /// Makes checkpoint records and the volume's checkpoints agree after a
    /// crash, so that a checkpoint exists whole or not at all and restore
    /// never loses work: a volume checkpoint without a record (a checkpoint
    /// or a restore's safety copy whose record a crash prevented) is kept as
    /// an automatic one; a record whose data is gone (state restored from a
    /// snapshot newer than the disk's last sync) is dropped.
    async fn reconcile_checkpoints(&self, row: &SpriteRow) -> Result<(), ApiError> {
        let records = self.store().checkpoints(row.id.clone()).await?;
        let found = bounded(
            CHECKPOINT_TIMEOUT,
            "listing checkpoints",
            self.inner.boxes.volume_checkpoints(&row.id),
        )
        .await?;
        for gone in records
            .iter()
            .filter(|c| !found.contains(&c.volume_checkpoint))
        {
            tracing::warn!(box_id = %row.id, checkpoint = %gone.id(), "checkpoint record without data; dropping it");
            self.store()
                .delete_checkpoint(row.id.clone(), gone.seq)
                .await?;
        }
        let known: std::collections::HashSet<u64> =
            records.iter().map(|c| c.volume_checkpoint).collect();
        for n in found.into_iter().filter(|n| !known.contains(n)) {
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

    /// Checkpoints the box's disk while it runs.
    pub async fn checkpoint(
        &self,
        row: &SpriteRow,
        comment: Option<String>,
    ) -> Result<CheckpointRow, ApiError> {
        let started = std::time::Instant::now();
        self.ensure_running(row).await?;
        let woke = started.elapsed();
        let row = row.clone();
        self.locked_to_completion(&row.id.clone(), "checkpoint", move |app| async move {
            let locked = started.elapsed();
            let n = bounded(
                CHECKPOINT_TIMEOUT,
                "checkpointing the box",
                app.inner.boxes.checkpoint(&row.id),
            )
            .await
            .map_err(|e| ApiError::Internal(format!("could not checkpoint {:?}: {e}", row.name)))?;
            let made = app
                .store()
                .add_checkpoint(row.id.clone(), n, comment, false, now())
                .await?;
            tracing::info!(box_id = %row.id, checkpoint = %made.id(), "checkpoint created");
            tracing::debug!(
                wake_ms = woke.as_millis() as u64,
                locked_ms = locked.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "checkpoint timing"
            );
            app.sync_later(&row.id);
            Ok(made)
        })
        .await
    }

    /// Runs `f` holding box `id`'s lock in a task of its own: once started it
    /// completes, whoever is waiting (a restore asked from inside the box
    /// ends the caller's connection on the way).
    async fn locked_to_completion<T, F, Fut>(
        &self,
        id: &str,
        what: &str,
        f: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(App<B>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, ApiError>> + Send,
    {
        let app = self.clone();
        let id = id.to_string();
        let task = tokio::spawn(async move {
            let lock = app.lock_of(&id);
            let _guard = lock.lock().await;
            f(app.clone()).await
        });
        task.await
            .map_err(|e| ApiError::Internal(format!("{what} task failed: {e}")))?
    }

    /// Brings the box back to checkpoint `seq`, keeping the state it replaces
    /// as an automatic checkpoint (returned).
    pub async fn restore(&self, row: &SpriteRow, seq: u64) -> Result<CheckpointRow, ApiError> {
        let target = self.checkpoint_of(row, seq).await?;
        let row = row.clone();
        self.locked_to_completion(&row.id.clone(), "restore", move |app| async move {
            let safety = bounded(
                RESTORE_TIMEOUT,
                "restoring the box",
                app.inner.boxes.restore(&spec_of(&row), target.volume_checkpoint),
            )
            .await
            .map_err(|e| {
                ApiError::Internal(format!(
                    "could not restore {:?} to {}: {e}; its disk is unchanged or kept as an automatic checkpoint (checkpoint list --include-auto)",
                    row.name,
                    target.id()
                ))
            })?;
            let kept = app
                .store()
                .add_checkpoint(
                    row.id.clone(),
                    safety,
                    Some(format!("automatic, before restoring {}", target.id())),
                    true,
                    now(),
                )
                .await?;
            let mut history = target.history.clone();
            history.push(target.id());
            app.store().set_history(row.id.clone(), history).await?;
            if let Err(e) = app.store().mark_running(row.id.clone(), now()).await {
                tracing::warn!(box_id = %row.id, error = %e, "could not record last_running_at");
            }
            tracing::info!(box_id = %row.id, to = %target.id(), kept = %kept.id(), "box restored");
            Ok(kept)
        })
        .await
    }

    pub async fn checkpoint_of(
        &self,
        row: &SpriteRow,
        seq: u64,
    ) -> Result<CheckpointRow, ApiError> {
        self.store()
            .checkpoint(row.id.clone(), seq)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "sprite {:?} has no checkpoint v{seq}; `checkpoint list --include-auto` shows the ones it has",
                    row.name
                ))
            })
    }

    pub async fn delete_checkpoint(&self, row: &SpriteRow, seq: u64) -> Result<(), ApiError> {
        let target = self.checkpoint_of(row, seq).await?;
        let row = row.clone();
        self.locked_to_completion(&row.id.clone(), "delete", move |app| async move {
            // The record goes first: a crash in between leaves a volume
            // checkpoint that recovery adopts again, never a record without
            // its data.
            app.store().delete_checkpoint(row.id.clone(), seq).await?;
            bounded(
                CHECKPOINT_TIMEOUT,
                "deleting the checkpoint",
                app.inner
                    .boxes
                    .delete_checkpoint(&row.id, target.volume_checkpoint),
            )
            .await
            .map_err(|e| ApiError::Internal(format!("could not delete {}: {e}", target.id())))?;
            app.collect_garbage_later();
            Ok(())
        })
        .await
    }

    /// Serves the box's own control socket (bothy-env), if boxes have one.
    fn serve_env(&self, id: &str) {
        if let Some(path) = self.inner.boxes.env_socket(id) {
            self.inner.env.ensure(self, id, path);
        }
    }

    /// Ships a box's disk and checkpoints to the object store in the
    /// background: the checkpoint is already durable locally.
    fn sync_later(&self, id: &str) {
        let app = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = app.inner.boxes.sync(&id).await {
                tracing::warn!(box_id = %id, error = %e, "syncing to the object store failed; retried at the next checkpoint or shutdown");
            }
        });
    }

    /// Frees unreferenced chunks in the background, in two passes. Some
    /// chunks are still named for a few seconds after a delete: by a box's
    /// head until discards that ext4 sends after a checkpoint's syncfs are
    /// flushed, and by the head snapshot last shipped to the object store
    /// until the next one replaces it. The second pass frees those.
    fn collect_garbage_later(&self) {
        let app = self.clone();
        tokio::spawn(async move {
            for pass in 0..2 {
                if pass > 0 {
                    tokio::time::sleep(GC_SECOND_PASS_AFTER).await;
                }
                if let Err(e) = app.inner.boxes.collect_garbage().await {
                    tracing::warn!(error = %e, "garbage collection failed; it runs again after the next delete");
                    return;
                }
            }
        });
    }

    /// Collects garbage every `period` until shutdown. Deletes trigger a
    /// collection, but a box that keeps rewriting its files makes garbage
    /// without any: the chunks it overwrote. The task ends at shutdown.
    pub fn collect_garbage_every(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        let mut stop = self.shutdown_signal();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = app.inner.boxes.collect_garbage().await {
                    tracing::warn!(error = %e, "periodic garbage collection failed; it runs again in {period:?}");
                }
            }
        })
    }

    /// Stops every box (on SIGTERM/SIGINT).
    pub async fn stop_all(&self) -> Result<(), ApiError> {
        let rows = self.store().all_sprites().await?;
        for row in rows.iter().filter(|r| r.state == RowState::Ready) {
            let lock = self.lock_of(&row.id);
            let _guard = lock.lock().await;
            if let Err(e) = bounded(
                STOP_TIMEOUT,
                "stopping the box",
                self.inner.boxes.stop(&row.id),
            )
            .await
            {
                tracing::warn!(box_id = %row.id, error = %e, "stop failed");
            }
        }
        Ok(())
    }
}
