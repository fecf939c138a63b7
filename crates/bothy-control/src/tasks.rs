//! Tasks: holds that keep a box running (it neither goes warm nor cold)
//! until they are released or expire. A task is taken with a time to live
//! of at most an hour and extended by a heartbeat; taking one wakes the
//! box. Tasks live in the daemon's memory: a restart of the daemon lets
//! them go (their holders' next heartbeat answers 404).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{ControlError, ControlResult};
use crate::sleep::parse_duration;
use crate::state::SpriteRow;
use crate::time::{now_ms, rfc3339_ms};
use crate::{Boxes, Control};

/// Longest time to live of a task.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Most tasks one box may hold.
const MAX_TASKS: usize = 64;

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    pub expires_at: String,
}

struct Task {
    name: String,
    expires: Instant,
    expires_ms: u64,
}

/// Every box's tasks.
#[derive(Default)]
pub(crate) struct Tasks(Mutex<HashMap<String, HashMap<String, Task>>>);

impl Tasks {
    /// Live tasks of box `id` (expired ones are dropped).
    pub(crate) fn live(&self, id: &str) -> usize {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tasks) = map.get_mut(id) else {
            return 0;
        };
        tasks.retain(|_, t| t.expires > Instant::now());
        tasks.len()
    }

    pub(crate) fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// `10m`, `30s`, `1h` (at most an hour).
pub fn parse_ttl(s: &str) -> ControlResult<Duration> {
    match parse_duration(s) {
        Ok(Some(d)) if d <= MAX_TTL => Ok(d),
        Ok(_) => Err(ControlError::invalid(format!("ttl {s:?}: at most 1h"))),
        Err(e) => Err(ControlError::invalid(format!("ttl: {e}"))),
    }
}

fn view(id: &str, t: &Task) -> TaskView {
    TaskView {
        id: id.to_string(),
        name: t.name.clone(),
        expires_at: rfc3339_ms(t.expires_ms),
    }
}

impl<B: Boxes> Control<B> {
    /// Takes a task on the box (waking it).
    pub async fn hold_task(
        &self,
        row: &SpriteRow,
        name: Option<String>,
        ttl: Duration,
    ) -> ControlResult<TaskView> {
        let name = name.unwrap_or_else(|| "task".into());
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(ControlError::invalid(
                "task name: 1-128 printable characters",
            ));
        }
        let _awake = self.ensure_running(row).await?;
        let id = format!("task_{:016x}", rand::random::<u64>());
        let task = Task {
            name,
            expires: Instant::now() + ttl,
            expires_ms: now_ms() + ttl.as_millis() as u64,
        };
        let mut map = self.inner.tasks.0.lock().unwrap_or_else(|p| p.into_inner());
        let tasks = map.entry(row.id.clone()).or_default();
        tasks.retain(|_, t| t.expires > Instant::now());
        if tasks.len() >= MAX_TASKS {
            return Err(ControlError::Conflict(format!(
                "{MAX_TASKS} tasks hold this sprite already; release some first"
            )));
        }
        let shown = view(&id, &task);
        tasks.insert(id, task);
        Ok(shown)
    }

    /// Extends a live task to `ttl` from now.
    pub fn extend_task(&self, row: &SpriteRow, id: &str, ttl: Duration) -> ControlResult<TaskView> {
        let mut map = self.inner.tasks.0.lock().unwrap_or_else(|p| p.into_inner());
        let task = map
            .get_mut(&row.id)
            .and_then(|t| t.get_mut(id))
            .filter(|t| t.expires > Instant::now())
            .ok_or_else(|| {
                ControlError::NotFound(format!("no live task {id:?}: it expired or was released"))
            })?;
        task.expires = Instant::now() + ttl;
        task.expires_ms = now_ms() + ttl.as_millis() as u64;
        Ok(view(id, task))
    }

    pub fn release_task(&self, row: &SpriteRow, id: &str) -> ControlResult<()> {
        let mut map = self.inner.tasks.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(&row.id)
            .and_then(|t| t.remove(id))
            .map(drop)
            .ok_or_else(|| ControlError::NotFound(format!("no task {id:?}")))
    }

    pub fn tasks(&self, row: &SpriteRow) -> Vec<TaskView> {
        self.inner.tasks.live(&row.id);
        let map = self.inner.tasks.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<TaskView> = map
            .get(&row.id)
            .map(|t| t.iter().map(|(id, t)| view(id, t)).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then(a.id.cmp(&b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_bounded() {
        assert_eq!(parse_ttl("10m").ok(), Some(Duration::from_secs(600)));
        assert!(parse_ttl("2h").is_err() && parse_ttl("never").is_err() && parse_ttl("x").is_err());
    }
}
