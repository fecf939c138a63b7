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

use crate::boxes::{BoxError, Boxes};
use crate::error::ApiError;
use crate::store::{RowState, SpriteRow, Store};

/// Longest a box may take to be created (copying its volume) and started.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const DESTROY_TIMEOUT: Duration = Duration::from_secs(60);
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
}

/// Now as RFC 3339 with milliseconds, the precision every other timestamp has.
pub fn now() -> String {
    let ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    rfc3339_ms(u64::try_from(ms).unwrap_or(0))
}

/// Milliseconds since the epoch as RFC 3339.
pub fn rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
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
    pub async fn finish_create(&self, row: SpriteRow) -> Result<(), ApiError> {
        let app = self.clone();
        let task = tokio::spawn(async move {
            let lock = app.lock_of(&row.id);
            let _guard = lock.lock().await;
            let spec = spec_of(&row);
            let made = async {
                bounded(
                    CREATE_TIMEOUT,
                    "creating the box",
                    app.inner.boxes.create(&spec),
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
                    // Failures are recorded and reported on exec; keep going.
                    let _ = self.start_locked(&row).await;
                }
            }
        }
        Ok(())
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
