//! The box lifecycle: create (and fork), get, list, update, destroy, wake,
//! recovery after a crash, stopping every box.
//!
//! Crash safety: create = row `creating` (committed) → runtime create → start →
//! row `ready`; destroy = row `destroying` (committed) → runtime destroy → row
//! deleted. On start, [`Control::recover`] rolls back `creating` rows (the
//! client never got an answer), finishes `destroying` ones and starts every
//! `ready` box (adopting one that kept running).

use std::collections::HashMap;
use std::time::Duration;

use bothy_api::{CreateSpriteRequest, UpdateSpriteRequest};
use bothy_runtime::BoxSpec;
use futures_util::future::join_all;

use crate::boxes::{BoxError, Boxes, DiskSource, Power};
use crate::error::{ControlError, ControlResult};
use crate::events::EventKind;
use crate::sleep::{AwakeHold, SleepPolicy};
use crate::state::{RowState, SpriteRow, StoreError};
use crate::time::now;
use crate::tokens::Caller;
use crate::{validate, Control};

/// Longest a box may take to be created (copying its volume) and started.
pub(crate) const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const DESTROY_TIMEOUT: Duration = Duration::from_secs(120);
/// Bringing a disk back from the object store reads its map snapshots.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(300);
/// Status checks are on the path of list/get: a wedged box must not hang them.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// What a sprite is doing, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpriteStatus {
    Running,
    Warm,
    Cold,
}

impl SpriteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Warm => "warm",
            Self::Cold => "cold",
        }
    }
}

/// A sprite's row and its status.
#[derive(Debug, Clone, PartialEq)]
pub struct SpriteView {
    pub row: SpriteRow,
    pub status: SpriteStatus,
    /// Its idle policy (the daemon's default if it has none of its own).
    pub sleep: SleepPolicy,
    pub last_active_at: Option<String>,
}

/// One page of sprites, with counts over the whole organisation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpriteListing {
    pub sprites: Vec<SpriteView>,
    /// Name to pass as `after` for the next page; `None` on the last.
    pub next_after: Option<String>,
    pub running: u64,
    pub warm: u64,
    pub cold: u64,
}

/// How many of an organisation's sprites are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub running: u64,
    pub warm: u64,
    pub cold: u64,
}

/// Which sprites a list asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: String,
    pub limit: usize,
    /// Names strictly after this one.
    pub after: Option<String>,
}

/// The name prefix a listing of `asked` may use for `caller`: the longer
/// of the two when one extends the other, `None` when no name has both.
fn visible_prefix(caller: &Caller, asked: String) -> Option<String> {
    match caller.limits() {
        None => Some(asked),
        Some(l) if asked.starts_with(&l.prefix) => Some(asked),
        Some(l) if l.prefix.starts_with(&asked) => Some(l.prefix.clone()),
        Some(_) => None,
    }
}

fn count(statuses: &HashMap<String, SpriteStatus>) -> StatusCounts {
    let of = |s: SpriteStatus| statuses.values().filter(|v| **v == s).count() as u64;
    StatusCounts {
        running: of(SpriteStatus::Running),
        warm: of(SpriteStatus::Warm),
        cold: of(SpriteStatus::Cold),
    }
}

pub fn spec_of(row: &SpriteRow) -> BoxSpec {
    BoxSpec {
        id: row.id.clone(),
        hostname: row.name.clone(),
        ram_mb: row.memory_mb(),
        cpus: row.cpus,
        storage_gb: row.storage_gb,
        nesting: row.nesting,
    }
}

/// `fut`, or a timeout error naming `what`.
pub(crate) async fn bounded<T>(
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

impl<B: Boxes> Control<B> {
    /// The sprite `name` of the caller's organisation.
    pub async fn sprite(&self, caller: &Caller, name: &str) -> ControlResult<SpriteRow> {
        if !caller.sees(name) {
            return Err(ControlError::sprite_not_found(name));
        }
        self.store()
            .sprite(caller.org().to_string(), name.to_string())
            .await?
            .ok_or_else(|| ControlError::sprite_not_found(name))
    }

    /// The sprite with box id `id`, whatever its organisation (the in-box
    /// socket knows its box by id).
    pub async fn sprite_by_id(&self, id: &str) -> ControlResult<SpriteRow> {
        self.store()
            .sprite_by_id(id.to_string())
            .await?
            .ok_or_else(|| ControlError::NotFound("this bothy is being destroyed".into()))
    }

    /// The row and its status.
    pub async fn view(&self, row: SpriteRow) -> SpriteView {
        let status = self.status_of(&row.id).await;
        let (sleep, last_active_at) = self
            .sleep_info(&row.id)
            .await
            .unwrap_or_else(|_| (self.default_sleep_policy(), None));
        SpriteView {
            row,
            status,
            sleep,
            last_active_at,
        }
    }

    /// `running`, `warm` or `cold`; a box that does not answer in time
    /// counts as cold.
    pub async fn status_of(&self, id: &str) -> SpriteStatus {
        match bounded(STATUS_TIMEOUT, "status check", self.inner.boxes.power(id)).await {
            Ok(Power::Running) => SpriteStatus::Running,
            Ok(Power::Frozen) => SpriteStatus::Warm,
            Ok(Power::Off) => SpriteStatus::Cold,
            Err(e) => {
                tracing::warn!(box_id = id, error = %e, "status check failed");
                SpriteStatus::Cold
            }
        }
    }

    /// A page of the caller's sprites; the counts cover the whole
    /// organisation. Status checks run concurrently, each bounded.
    pub async fn list(&self, caller: &Caller, q: ListQuery) -> ControlResult<SpriteListing> {
        let org = caller.org().to_string();
        let Some(prefix) = visible_prefix(caller, q.prefix) else {
            return Ok(SpriteListing::default());
        };
        let mut rows = self
            .store()
            .list_sprites(org.clone(), prefix, q.after, q.limit.saturating_add(1))
            .await?;
        let has_more = rows.len() > q.limit;
        rows.truncate(q.limit);
        let next_after = if has_more {
            rows.last().map(|r| r.name.clone())
        } else {
            None
        };
        let statuses = self.visible_statuses(caller).await?;
        let counts = count(&statuses);
        let sleep_rows = self.store().sleep_rows().await?;
        let sprites = rows
            .into_iter()
            .map(|row| {
                let status = statuses.get(&row.id).copied().unwrap_or(SpriteStatus::Cold);
                let (sleep, last_active_at) = self.sleep_info_of(&row.id, sleep_rows.get(&row.id));
                SpriteView {
                    row,
                    status,
                    sleep,
                    last_active_at,
                }
            })
            .collect();
        Ok(SpriteListing {
            sprites,
            next_after,
            running: counts.running,
            warm: counts.warm,
            cold: counts.cold,
        })
    }

    /// How many of the caller's organisation's sprites are in each status.
    pub async fn counts(&self, caller: &Caller) -> ControlResult<StatusCounts> {
        let statuses = self.visible_statuses(caller).await?;
        Ok(count(&statuses))
    }

    /// The status of every sprite the caller sees: its organisation's, or
    /// for a limited token those with its prefix.
    async fn visible_statuses(
        &self,
        caller: &Caller,
    ) -> ControlResult<HashMap<String, SpriteStatus>> {
        let org = caller.org().to_string();
        let Some(limits) = caller.limits() else {
            return self.statuses(org).await;
        };
        let rows = self
            .store()
            .list_sprites(org, limits.prefix.clone(), None, usize::MAX)
            .await?;
        Ok(join_all(
            rows.iter()
                .map(|r| async move { (r.id.clone(), self.status_of(&r.id).await) }),
        )
        .await
        .into_iter()
        .collect())
    }

    /// A limited token creates only names with its prefix, and only while
    /// its organisation has fewer such sprites than its cap. The guard
    /// keeps two such creates from both taking the last place.
    async fn admit_limited(
        &self,
        caller: &Caller,
        name: &str,
    ) -> ControlResult<Option<tokio::sync::MutexGuard<'_, ()>>> {
        let Some(limits) = caller.limits() else {
            return Ok(None);
        };
        if limits.read_only {
            return Err(ControlError::Forbidden(
                "this token is read-only: it cannot create sprites".into(),
            ));
        }
        if !name.starts_with(&limits.prefix) {
            return Err(ControlError::Forbidden(format!(
                "this token may only create sprites whose names start with {:?}; call it {}{name}",
                limits.prefix, limits.prefix
            )));
        }
        let guard = self.inner.limited_creates.lock().await;
        let cap = usize::try_from(limits.max_sprites).unwrap_or(usize::MAX);
        let existing = self
            .store()
            .list_sprites(
                caller.org().to_string(),
                limits.prefix.clone(),
                None,
                cap.saturating_add(1),
            )
            .await?;
        if existing.len() >= cap {
            return Err(ControlError::QuotaExceeded(format!(
                "this token may have at most {} sprites named {}…, and there are {}; destroy one first",
                limits.max_sprites,
                limits.prefix,
                existing.len()
            )));
        }
        Ok(Some(guard))
    }

    /// The status of every sprite of `org`, by box id; the checks run
    /// concurrently, each bounded.
    async fn statuses(&self, org: String) -> ControlResult<HashMap<String, SpriteStatus>> {
        let ids = self.store().sprite_ids(org).await?;
        Ok(join_all(
            ids.iter()
                .map(|id| async move { (id.clone(), self.status_of(id).await) }),
        )
        .await
        .into_iter()
        .collect())
    }

    /// Creates a sprite (a fork when `from_checkpoint` is set) and starts it.
    /// Runs to completion even if the caller goes away.
    pub async fn create(
        &self,
        caller: &Caller,
        req: CreateSpriteRequest,
    ) -> ControlResult<SpriteView> {
        let row = validate::new_row(caller.org(), &req, now())?;
        let _limited = self.admit_limited(caller, &row.name).await?;
        let lifecycle = match &req.lifecycle {
            Some(l) => Some(self.default_sleep_policy().patched(l)?),
            None => None,
        };
        let fork = match &req.from_checkpoint {
            Some(from) => Some(self.fork_source(caller, from).await?),
            None => None,
        };
        let pooled = if fork.is_none() {
            self.take_from_pool(&row).await?
        } else {
            None
        };
        let row = match pooled {
            Some(taken) => taken,
            None => {
                self.create_anew(row.clone(), fork).await?;
                row
            }
        };
        if let Some(l) = &lifecycle {
            self.store()
                .set_sleep_policy(
                    row.id.clone(),
                    l.idle_timeout.map(|d| d.as_secs()),
                    l.cold_after.map(|d| d.as_secs()),
                    l.cpu_activity,
                )
                .await?;
        }
        let row = self.sprite(caller, &row.name).await?;
        Ok(self.view(row).await)
    }

    /// Admits `row`, inserts it and makes its box: from the base image, or a
    /// fork of a checkpoint (its history goes with it).
    async fn create_anew(
        &self,
        row: SpriteRow,
        fork: Option<(DiskSource, Vec<String>)>,
    ) -> ControlResult<()> {
        let admitting = self.inner.admitting.lock().await;
        let existing = self.awake_rows().await?;
        self.admission().check(&row, &existing)?;
        self.admit_by_quota(&row).await?;
        let inserted = self.store().insert_sprite(row.clone()).await;
        drop(admitting);
        match inserted {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(name_taken(&row.name)),
            Err(e) => return Err(e.into()),
        }
        let source = match &fork {
            Some((source, _)) => source.clone(),
            None => DiskSource::Base,
        };
        self.finish_create(row.clone(), source).await?;
        if let Some((_, history)) = fork {
            self.store().set_history(row.id, history).await?;
        }
        Ok(())
    }

    /// Creates and starts the box of a row already inserted as `creating`; on
    /// failure removes what was made and the row.
    pub(crate) async fn finish_create(
        &self,
        row: SpriteRow,
        source: DiskSource,
    ) -> ControlResult<()> {
        self.to_completion(&row.id.clone(), "create", move |control| async move {
            let spec = spec_of(&row);
            let made = async {
                bounded(
                    CREATE_TIMEOUT,
                    "creating the box",
                    control.inner.boxes.create(&spec, &source),
                )
                .await?;
                bounded(
                    START_TIMEOUT,
                    "starting the box",
                    control.inner.boxes.start(&spec),
                )
                .await
            }
            .await;
            match made {
                Ok(()) => {
                    let t = now();
                    control
                        .store()
                        .set_state(row.id.clone(), RowState::Ready, t.clone())
                        .await?;
                    control.store().mark_running(row.id.clone(), t).await?;
                    control.count_state(&row.id, SpriteStatus::Running).await;
                    tracing::info!(box_id = %row.id, name = %row.name, org = %row.org, "sprite created");
                    control.emit(EventKind::Created, &row);
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(box_id = %row.id, error = %e, "create failed; rolling back");
                    if let Err(d) = bounded(
                        DESTROY_TIMEOUT,
                        "cleanup",
                        control.inner.boxes.destroy(&row.id),
                    )
                    .await
                    {
                        tracing::warn!(box_id = %row.id, error = %d, "cleanup after a failed create failed");
                    }
                    control.store().delete_sprite(row.id.clone()).await?;
                    Err(match ControlError::from(e) {
                        ControlError::NotFound(m) => ControlError::NotFound(m),
                        other => ControlError::Unavailable(format!(
                            "could not create the box: {other}; check the daemon's log and host setup, then retry"
                        )),
                    })
                }
            }
        })
        .await
    }

    /// Applies a partial update (url settings, labels).
    pub async fn update(
        &self,
        caller: &Caller,
        name: &str,
        req: UpdateSpriteRequest,
    ) -> ControlResult<SpriteView> {
        let row = self.sprite(caller, name).await?;
        if let Some(u) = &req.url_settings {
            validate::url_settings(u)?;
        }
        if let Some(l) = &req.labels {
            validate::labels(l)?;
        }
        if let Some(l) = &req.lifecycle {
            // Validated before anything changes.
            self.sleep_info(&row.id).await?.0.patched(l)?;
        }
        let url = req.url_settings.map(|u| {
            (
                u.auth.unwrap_or_else(|| row.url_auth.clone()),
                u.private_access.or_else(|| row.url_private_access.clone()),
            )
        });
        self.store()
            .update_sprite(row.id.clone(), url, req.labels, now())
            .await?;
        if let Some(l) = &req.lifecycle {
            self.set_sleep_policy(&row, l).await?;
        }
        let row = self.sprite(caller, name).await?;
        Ok(self.view(row).await)
    }

    /// Destroys a box and deletes its row; like create, finishes even if the
    /// caller goes away. Repeating a destroy that failed resumes it.
    pub async fn destroy(&self, row: SpriteRow) -> ControlResult<()> {
        let id = row.id.clone();
        self.to_completion(&id, "destroy", move |control| async move {
            control
                .store()
                .set_state(row.id.clone(), RowState::Destroying, now())
                .await?;
            bounded(
                DESTROY_TIMEOUT,
                "destroying the box",
                control.inner.boxes.destroy(&row.id),
            )
            .await
            .map_err(|e| match ControlError::from(e) {
                ControlError::Busy(m) => ControlError::Busy(format!(
                    "could not destroy the box yet: {m}; retry the delete, it resumes where it stopped"
                )),
                other => ControlError::Unavailable(format!(
                    "could not destroy the box: {other}; retry the delete, it resumes where it stopped"
                )),
            })?;
            control.store().delete_sprite(row.id.clone()).await?;
            tracing::info!(box_id = %row.id, name = %row.name, org = %row.org, "sprite destroyed");
            control.emit(EventKind::Gone, &row);
            control.collect_garbage_later();
            Ok(())
        })
        .await?;
        self.inner.locks.forget(&id);
        self.inner.activity.forget(&id);
        self.inner.tasks.forget(&id);
        Ok(())
    }

    /// Makes sure the box runs (thawing a warm one, booting a cold one), or
    /// says why it cannot. The box stays awake while the hold lives.
    pub async fn ensure_running(&self, row: &SpriteRow) -> ControlResult<AwakeHold> {
        self.ensure_ready(row)?;
        let awake = self.hold_awake(&row.id);
        self.wake(row).await?;
        Ok(awake)
    }

    /// Refuses a sprite that is still being created or destroyed.
    pub fn ensure_ready(&self, row: &SpriteRow) -> ControlResult<()> {
        match row.state {
            RowState::Ready => Ok(()),
            RowState::Creating => Err(ControlError::Busy(format!(
                "sprite {:?} is still being created; retry in a moment",
                row.name
            ))),
            RowState::Destroying => Err(ControlError::Busy(format!(
                "sprite {:?} is being destroyed (if a destroy failed, DELETE it again)",
                row.name
            ))),
        }
    }

    async fn wake(&self, row: &SpriteRow) -> ControlResult<()> {
        // Cheap path first: a running box needs no lock.
        if self.status_of(&row.id).await == SpriteStatus::Running {
            return Ok(());
        }
        let _guard = self.inner.locks.lock(&row.id, "waking the sprite").await?;
        self.still_ready(row).await?;
        match self.status_of(&row.id).await {
            SpriteStatus::Running => return Ok(()),
            SpriteStatus::Warm => {
                return self.thaw_locked(row).await.map_err(|e| {
                    ControlError::Unavailable(format!(
                        "sprite {:?} could not be woken: {e}; retry, or restart it",
                        row.name
                    ))
                })
            }
            SpriteStatus::Cold => {}
        }
        self.admit_wake(row).await?;
        self.start_locked(row).await.map_err(|reason| {
            ControlError::Unavailable(format!(
                "sprite {:?} could not be started: {reason}; check the daemon's log, or destroy and recreate it",
                row.name
            ))
        })
    }

    /// Under the box's lock: a destroy may have run while the caller waited
    /// for it, and a box whose row is gone is never started.
    pub(crate) async fn still_ready(&self, row: &SpriteRow) -> ControlResult<()> {
        let current = self.store().sprite_by_id(row.id.clone()).await?;
        if current.is_none_or(|c| c.state != RowState::Ready) {
            return Err(ControlError::sprite_not_found(&row.name));
        }
        Ok(())
    }

    /// Stops the box and boots it again on the same disk: its processes and
    /// exec sessions end, its files stay. Like create, it finishes even if
    /// the caller goes away.
    pub async fn restart(&self, row: &SpriteRow) -> ControlResult<()> {
        self.ensure_ready(row)?;
        let row = row.clone();
        self.to_completion(&row.id.clone(), "restart", move |control| async move {
            control.still_ready(&row).await?;
            let restarted = bounded(
                STOP_TIMEOUT + START_TIMEOUT,
                "restarting the box",
                control.inner.boxes.restart(&spec_of(&row)),
            )
            .await;
            control.emit(EventKind::Stopped, &row);
            restarted.map_err(|e| match ControlError::from(e) {
                ControlError::Busy(m) => ControlError::Busy(m),
                other => ControlError::Unavailable(format!(
                    "could not restart sprite {:?}: {other}; the next exec starts it again",
                    row.name
                )),
            })?;
            if let Err(e) = control.store().mark_running(row.id.clone(), now()).await {
                tracing::warn!(box_id = %row.id, error = %e, "could not record last_running_at");
            }
            control.record_state(&row, SpriteStatus::Running).await;
            control.emit(EventKind::Ready, &row);
            tracing::info!(box_id = %row.id, name = %row.name, "sprite restarted");
            Ok(())
        })
        .await
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
                if self.status_of(&row.id).await == SpriteStatus::Running {
                    self.record_state(row, SpriteStatus::Running).await;
                }
                self.emit(EventKind::Ready, row);
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(box_id = %row.id, error = %reason, "box start failed");
                Err(reason)
            }
        }
    }

    /// Brings the boxes back in line with the state database after a
    /// restart. A box that kept running while the daemon was away is
    /// adopted as it is.
    pub async fn recover(&self) -> ControlResult<()> {
        let rows = self.store().all_sprites().await?;
        // Every box's lock first, so a call on a box recovery has not reached
        // yet (its disk may still be in the object store only) waits for it
        // instead of failing.
        let mut guards = Vec::with_capacity(rows.len());
        for row in &rows {
            guards.push(self.inner.locks.lock(&row.id, "recovery").await?);
        }
        for (listed, _guard) in rows.into_iter().zip(guards) {
            // A destroy may have run while recovery reached this box.
            let Some(row) = self.store().sprite_by_id(listed.id.clone()).await? else {
                continue;
            };
            match row.state {
                RowState::Creating | RowState::Destroying => {
                    let what = if row.state == RowState::Creating {
                        "rolling back an unfinished create"
                    } else {
                        "finishing an interrupted destroy"
                    };
                    tracing::info!(box_id = %row.id, name = %row.name, "{what}");
                    match bounded(DESTROY_TIMEOUT, what, self.inner.boxes.destroy(&row.id)).await {
                        Ok(()) => {
                            self.store().delete_sprite(row.id.clone()).await?;
                            self.emit(EventKind::Gone, &row);
                        }
                        Err(e) => {
                            tracing::warn!(box_id = %row.id, error = %e, "{what} failed; will retry on next start")
                        }
                    }
                }
                RowState::Ready => {
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
                    // A box put to cold sleep stays stopped until it is used.
                    if self.recorded_cold(&row.id).await {
                        continue;
                    }
                    // Failures are recorded and reported on exec; keep going.
                    // A frozen (warm) box is adopted frozen.
                    let _ = self.start_locked(&row).await;
                }
            }
        }
        Ok(())
    }

    /// Stops every box, syncing its disk to the object store; returns the
    /// names of those stopped, or which could not be.
    pub(crate) async fn stop_all(&self) -> ControlResult<Vec<String>> {
        let rows = self.store().all_sprites().await?;
        let mut stopped = Vec::new();
        let mut failed = Vec::new();
        for row in rows.iter().filter(|r| r.state == RowState::Ready) {
            let _guard = self.inner.locks.lock(&row.id, "stopping the box").await?;
            match bounded(
                STOP_TIMEOUT,
                "stopping the box",
                self.inner.boxes.stop(&row.id),
            )
            .await
            {
                Ok(()) => {
                    self.emit(EventKind::Stopped, row);
                    stopped.push(row.name.clone());
                }
                Err(e) => {
                    tracing::warn!(box_id = %row.id, error = %e, "stop failed");
                    failed.push(format!("{} ({e})", row.name));
                }
            }
        }
        if failed.is_empty() {
            stopped.sort();
            Ok(stopped)
        } else {
            Err(ControlError::Unavailable(format!(
                "could not stop {}; the others are stopped, drain again to retry",
                failed.join(", ")
            )))
        }
    }

    /// Runs `f` holding box `id`'s lock in a task of its own: once started it
    /// completes, whoever is waiting (a restore asked from inside the box
    /// ends the caller's connection on the way).
    pub(crate) async fn to_completion<T, F, Fut>(
        &self,
        id: &str,
        what: &'static str,
        f: F,
    ) -> ControlResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Control<B>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ControlResult<T>> + Send,
    {
        let control = self.clone();
        let id = id.to_string();
        let task = tokio::spawn(async move {
            let _guard = control.inner.locks.lock(&id, what).await?;
            f(control.clone()).await
        });
        task.await
            .map_err(|e| ControlError::Internal(format!("{what} task failed: {e}")))?
    }
}

/// The answer to a create whose name the organisation already has.
pub(crate) fn name_taken(name: &str) -> ControlError {
    ControlError::Conflict(format!(
        "a sprite named {name:?} already exists in your organization; pick another name or destroy it first"
    ))
}
