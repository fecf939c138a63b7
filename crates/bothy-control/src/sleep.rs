//! Idle sleep and wake.
//!
//! A box nobody uses goes `warm` after its idle timeout (its processes frozen
//! in their cgroup, memory and network kept), then `cold` after `cold_after`
//! more (stopped, its disk synced to the object store and detached). Any
//! call that needs it wakes it ([`Control::ensure_running`]): a warm box is
//! thawed (the same processes go on), a cold one booted.
//!
//! Activity is what keeps a box awake: an attached exec, console or attach
//! client ([`AwakeHold`], taken before the box is woken, so the idle pass can
//! never freeze a box a caller is about to use), and, with `cpu_activity`,
//! processes in the box using CPU (more than [`CPU_BUSY`] of one CPU between
//! two passes): a build or a test run keeps its box awake, an idle shell
//! does not.
//!
//! The state a box should be in is recorded, so a restarted daemon keeps a
//! warm box frozen and a cold box stopped. How long a box has been idle or
//! warm is counted from the daemon's start when the daemon restarted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bothy_api::Lifecycle;

use crate::boxes::{BoxError, Boxes};
use crate::error::{ControlError, ControlResult};
use crate::lifecycle::{bounded, SpriteStatus, STOP_TIMEOUT};
use crate::state::sleep::{Secs, SleepRow};
use crate::state::{RowState, SpriteRow};
use crate::time::{now, now_ms};
use crate::Control;

/// How often the idle pass looks at every box.
pub(crate) const IDLE_PASS: Duration = Duration::from_secs(1);
/// CPU use, as a share of one CPU between two looks, that counts as activity.
const CPU_BUSY: f64 = 0.05;
/// Longest idle timeout or cold-after: a week.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// When a box goes to sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepPolicy {
    /// `None`: never goes warm by itself.
    pub idle_timeout: Option<Duration>,
    /// `None`: a warm box never goes cold by itself.
    pub cold_after: Option<Duration>,
    /// Whether processes using CPU keep the box awake.
    pub cpu_activity: bool,
}

impl Default for SleepPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(30)),
            cold_after: Some(Duration::from_secs(600)),
            cpu_activity: true,
        }
    }
}

impl SleepPolicy {
    /// `self` changed by what `patch` sets.
    pub fn patched(self, patch: &Lifecycle) -> ControlResult<Self> {
        let field = |v: &Option<String>, name: &str, old| match v {
            None => Ok(old),
            Some(s) => parse_duration(s)
                .map_err(|e| ControlError::invalid(format!("lifecycle.{name}: {e}"))),
        };
        Ok(Self {
            idle_timeout: field(&patch.idle_timeout, "idle_timeout", self.idle_timeout)?,
            cold_after: field(&patch.cold_after, "cold_after", self.cold_after)?,
            cpu_activity: patch.cpu_activity.unwrap_or(self.cpu_activity),
        })
    }

    pub fn to_api(self) -> Lifecycle {
        Lifecycle {
            idle_timeout: Some(format_duration(self.idle_timeout)),
            cold_after: Some(format_duration(self.cold_after)),
            cpu_activity: Some(self.cpu_activity),
        }
    }

    fn from_stored(stored: (Secs, Secs, bool)) -> Self {
        Self {
            idle_timeout: stored.0.map(Duration::from_secs),
            cold_after: stored.1.map(Duration::from_secs),
            cpu_activity: stored.2,
        }
    }
}

/// `30s`, `5m`, `2h`, `1d`, a number of seconds, or `never` (`None`).
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_lowercase()),
        _ => (s, 's'),
    };
    let per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return Err(format!("{s:?}: use a duration like 30s, 5m, 2h, or never")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: use a duration like 30s, 5m, 2h, or never"))?;
    let d = Duration::from_secs(n.saturating_mul(per));
    if d.is_zero() || d > MAX_DURATION {
        return Err(format!(
            "{s:?}: must be at least 1s and at most 7d (or never)"
        ));
    }
    Ok(Some(d))
}

/// The shortest of `30s`, `10m`, `2h`, `1d` that says `d` exactly.
pub fn format_duration(d: Option<Duration>) -> String {
    let Some(d) = d else {
        return "never".into();
    };
    let s = d.as_secs();
    for (unit, per) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if s >= per && s % per == 0 {
            return format!("{}{unit}", s / per);
        }
    }
    format!("{s}s")
}

/// What the idle pass knows of one box.
struct Seen {
    /// Clients attached now.
    holds: usize,
    last_active: Instant,
    last_active_wall: String,
    /// CPU used by the box at the last look, and when.
    cpu: Option<(Duration, Instant)>,
    warm_since: Option<Instant>,
}

impl Seen {
    fn new() -> Self {
        Self {
            holds: 0,
            last_active: Instant::now(),
            last_active_wall: now(),
            cpu: None,
            warm_since: None,
        }
    }

    fn touch(&mut self) {
        self.last_active = Instant::now();
        self.last_active_wall = now();
    }
}

/// Live activity of every box, in memory.
#[derive(Default)]
pub(crate) struct Activity(Mutex<HashMap<String, Seen>>);

impl Activity {
    fn with<R>(&self, id: &str, f: impl FnOnce(&mut Seen) -> R) -> R {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(id.to_string()).or_insert_with(Seen::new))
    }

    pub(crate) fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Keeps a box awake while it lives: an attached client.
pub struct AwakeHold {
    activity: Arc<Activity>,
    id: String,
}

impl Drop for AwakeHold {
    fn drop(&mut self) {
        self.activity.with(&self.id, |s| {
            s.holds = s.holds.saturating_sub(1);
            s.touch();
        });
    }
}

impl<B: Boxes> Control<B> {
    /// Counts a client attached to box `id` until the hold is dropped. Take
    /// it before waking the box.
    pub fn hold_awake(&self, id: &str) -> AwakeHold {
        self.inner.activity.with(id, |s| {
            s.holds += 1;
            s.touch();
        });
        AwakeHold {
            activity: Arc::clone(&self.inner.activity),
            id: id.to_string(),
        }
    }

    /// The idle policy boxes without their own get.
    pub fn set_default_sleep_policy(&self, policy: SleepPolicy) {
        *self
            .inner
            .default_sleep
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = policy;
    }

    pub(crate) fn default_sleep_policy(&self) -> SleepPolicy {
        *self
            .inner
            .default_sleep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sprite `id`'s idle policy and when it was last active.
    pub async fn sleep_info(&self, id: &str) -> ControlResult<(SleepPolicy, Option<String>)> {
        let row = self.store().sleep_row(id.to_string()).await?;
        Ok(self.sleep_info_of(id, row.as_ref()))
    }

    pub(crate) fn sleep_info_of(
        &self,
        id: &str,
        row: Option<&SleepRow>,
    ) -> (SleepPolicy, Option<String>) {
        let policy = row
            .and_then(|r| r.policy)
            .map(SleepPolicy::from_stored)
            .unwrap_or_else(|| self.default_sleep_policy());
        let live = {
            let map = self
                .inner
                .activity
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.get(id).map(|s| s.last_active_wall.clone())
        };
        (
            policy,
            live.or_else(|| row.and_then(|r| r.last_active_at.clone())),
        )
    }

    /// Gives sprite `row` the policy `patch` makes of its current one.
    pub async fn set_sleep_policy(
        &self,
        row: &SpriteRow,
        patch: &Lifecycle,
    ) -> ControlResult<SleepPolicy> {
        let (current, _) = self.sleep_info(&row.id).await?;
        let policy = current.patched(patch)?;
        self.store()
            .set_sleep_policy(
                row.id.clone(),
                policy.idle_timeout.map(|d| d.as_secs()),
                policy.cold_after.map(|d| d.as_secs()),
                policy.cpu_activity,
            )
            .await?;
        // A new timeout counts from now.
        self.inner.activity.with(&row.id, Seen::touch);
        Ok(policy)
    }

    /// Puts the box to sleep now: warm, or cold with `cold`. A cold box
    /// stays cold; a warm one asked to go cold goes.
    pub async fn sleep(&self, row: &SpriteRow, cold: bool) -> ControlResult<SpriteStatus> {
        self.ensure_ready(row)?;
        let _guard = self
            .inner
            .locks
            .lock(&row.id, "putting the sprite to sleep")
            .await?;
        self.still_ready(row).await?;
        let status = self.status_of(&row.id).await;
        match (status, cold) {
            (SpriteStatus::Cold, _) | (SpriteStatus::Warm, false) => Ok(status),
            (_, true) => {
                self.go_cold(row).await?;
                Ok(SpriteStatus::Cold)
            }
            (SpriteStatus::Running, false) => {
                self.go_warm(row).await?;
                Ok(SpriteStatus::Warm)
            }
        }
    }

    /// Under the box's lock.
    async fn go_warm(&self, row: &SpriteRow) -> ControlResult<()> {
        bounded(
            STOP_TIMEOUT,
            "freezing the box",
            self.inner.boxes.freeze(&row.id),
        )
        .await?;
        self.inner
            .activity
            .with(&row.id, |s| s.warm_since = Some(Instant::now()));
        self.record_state(row, SpriteStatus::Warm).await;
        tracing::info!(box_id = %row.id, name = %row.name, "sprite went warm");
        Ok(())
    }

    /// Under the box's lock.
    async fn go_cold(&self, row: &SpriteRow) -> ControlResult<()> {
        bounded(
            STOP_TIMEOUT,
            "stopping the box",
            self.inner.boxes.stop(&row.id),
        )
        .await?;
        self.inner.activity.with(&row.id, |s| s.warm_since = None);
        self.record_state(row, SpriteStatus::Cold).await;
        self.emit(crate::EventKind::Stopped, row);
        tracing::info!(box_id = %row.id, name = %row.name, "sprite went cold");
        Ok(())
    }

    /// Under the box's lock: thaws a warm box.
    pub(crate) async fn thaw_locked(&self, row: &SpriteRow) -> Result<(), BoxError> {
        bounded(
            STOP_TIMEOUT,
            "thawing the box",
            self.inner.boxes.thaw(&row.id),
        )
        .await?;
        self.inner.activity.with(&row.id, |s| {
            s.warm_since = None;
            s.touch();
        });
        self.record_state(row, SpriteStatus::Running).await;
        Ok(())
    }

    pub(crate) async fn record_state(&self, row: &SpriteRow, status: SpriteStatus) {
        let last = self.sleep_info_of(&row.id, None).1.unwrap_or_else(now);
        let store = self.store();
        self.count_state(&row.id, status).await;
        if let Err(e) = store
            .set_sleep_state(row.id.clone(), status.as_str(), now())
            .await
        {
            tracing::warn!(box_id = %row.id, error = %e, "could not record the sleep state");
        }
        if let Err(e) = store.set_last_active(row.id.clone(), last).await {
            tracing::warn!(box_id = %row.id, error = %e, "could not record the last activity");
        }
    }

    /// Counts box `id`'s time in `status` from now on (see [`Control::usage`]).
    pub(crate) async fn count_state(&self, id: &str, status: SpriteStatus) {
        if let Err(e) = self
            .store()
            .count_state(id.to_string(), status.as_str(), now_ms())
            .await
        {
            tracing::warn!(box_id = %id, error = %e, "could not count the time in a state");
        }
    }

    /// Whether the box was last put to sleep cold (so a restarted daemon
    /// leaves it stopped).
    pub(crate) async fn recorded_cold(&self, id: &str) -> bool {
        matches!(self.store().sleep_row(id.to_string()).await, Ok(Some(r)) if r.state == "cold")
    }

    /// One look at every box: idle running boxes go warm, long-warm ones
    /// cold.
    pub(crate) async fn idle_pass(&self) {
        let rows = match self.store().all_sprites().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "idle pass: cannot list sprites");
                return;
            }
        };
        // One read of every box's policy per pass, not one per box.
        let policies = self.store().sleep_rows().await.unwrap_or_default();
        for row in rows.into_iter().filter(|r| r.state == RowState::Ready) {
            let stored = policies.get(&row.id);
            let (policy, _) = self.sleep_info_of(&row.id, stored);
            let status = self.status_of(&row.id).await;
            // Whatever stopped or froze it (a crash, a restart, another
            // daemon's run), its time is counted in the state it is in.
            if stored.and_then(|s| s.seen_state.as_deref()) != Some(status.as_str()) {
                self.count_state(&row.id, status).await;
            }
            match status {
                SpriteStatus::Running => self.maybe_warm(&row, policy).await,
                SpriteStatus::Warm => self.maybe_cold(&row, policy).await,
                SpriteStatus::Cold => {}
            }
        }
    }

    async fn maybe_warm(&self, row: &SpriteRow, policy: SleepPolicy) {
        let cpu = policy
            .cpu_activity
            .then(|| self.inner.boxes.cpu_used(&row.id))
            .flatten();
        let idle_for = self.inner.activity.with(&row.id, |s| {
            s.warm_since = None;
            if let Some(used) = cpu {
                let busy = s.cpu.is_some_and(|(before, at)| {
                    let wall = at.elapsed().as_secs_f64().max(0.001);
                    used.saturating_sub(before).as_secs_f64() / wall > CPU_BUSY
                });
                s.cpu = Some((used, Instant::now()));
                if busy {
                    s.touch();
                }
            }
            (s.holds == 0).then(|| s.last_active.elapsed())
        });
        // A live task keeps the box awake like an attached client.
        if self.inner.tasks.live(&row.id) > 0 {
            self.inner.activity.with(&row.id, Seen::touch);
            return;
        }
        let (Some(idle_for), Some(timeout)) = (idle_for, policy.idle_timeout) else {
            return;
        };
        if idle_for < timeout {
            return;
        }
        let Ok(_guard) = self.inner.locks.try_lock(&row.id) else {
            return;
        };
        if self.still_ready(row).await.is_err() {
            return;
        }
        if let Err(e) = self.go_warm(row).await {
            tracing::warn!(box_id = %row.id, error = %e, "could not put an idle sprite to sleep");
            return;
        }
        // A client that attached while the box froze must find it running.
        if self.inner.activity.with(&row.id, |s| s.holds) > 0 {
            if let Err(e) = self.thaw_locked(row).await {
                tracing::warn!(box_id = %row.id, error = %e, "could not thaw a sprite a client attached to");
            }
        }
    }

    async fn maybe_cold(&self, row: &SpriteRow, policy: SleepPolicy) {
        let warm_for = self.inner.activity.with(&row.id, |s| {
            s.warm_since.get_or_insert_with(Instant::now).elapsed()
        });
        // A pooled box stays booted: taking it must not wait for a boot.
        if crate::pool::is_pooled(row) {
            return;
        }
        let Some(after) = policy.cold_after else {
            return;
        };
        if self.inner.tasks.live(&row.id) > 0 {
            return;
        }
        if warm_for < after {
            return;
        }
        let Ok(_guard) = self.inner.locks.try_lock(&row.id) else {
            return;
        };
        if self.still_ready(row).await.is_err()
            || self.status_of(&row.id).await != SpriteStatus::Warm
        {
            return;
        }
        if let Err(e) = self.go_cold(row).await {
            tracing::warn!(box_id = %row.id, error = %e, "could not put a warm sprite to cold sleep");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        for (text, secs) in [
            ("30s", 30),
            ("5m", 300),
            ("2h", 7200),
            ("1d", 86400),
            ("90", 90),
        ] {
            let d = parse_duration(text).expect(text);
            assert_eq!(d, Some(Duration::from_secs(secs)), "{text}");
        }
        assert_eq!(parse_duration("never"), Ok(None));
        assert_eq!(format_duration(Some(Duration::from_secs(90))), "90s");
        assert_eq!(format_duration(Some(Duration::from_secs(600))), "10m");
        assert_eq!(format_duration(None), "never");
        for bad in ["", "0s", "-5m", "5x", "8d", "1.5h", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let p = SleepPolicy::default()
            .patched(&Lifecycle {
                idle_timeout: Some("5m".into()),
                cold_after: None,
                cpu_activity: Some(false),
            })
            .expect("valid");
        assert_eq!(p.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(p.cold_after, SleepPolicy::default().cold_after);
        assert!(!p.cpu_activity);
        let bad = SleepPolicy::default().patched(&Lifecycle {
            idle_timeout: Some("soon".into()),
            ..Lifecycle::default()
        });
        assert!(
            matches!(bad, Err(ControlError::Invalid { message, .. }) if message.contains("idle_timeout"))
        );
    }
}
