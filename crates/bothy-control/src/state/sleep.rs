//! Each sprite's idle policy and the sleep state it should be in after a
//! restart of the daemon. No row: the daemon's default policy, running.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sleep (
     sprite_id TEXT PRIMARY KEY REFERENCES sprites(id) ON DELETE CASCADE,
     idle_timeout_s INTEGER,
     cold_after_s INTEGER,
     cpu_activity INTEGER,
     policy_set INTEGER NOT NULL DEFAULT 0,
     state TEXT NOT NULL DEFAULT 'running',
     since TEXT,
     last_active_at TEXT);";

/// A duration in seconds, or never (`None`).
pub type Secs = Option<u64>;

/// A sprite's row of the `sleep` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SleepRow {
    /// The policy the sprite was given, if any: (idle timeout, cold after,
    /// CPU activity counts).
    pub policy: Option<(Secs, Secs, bool)>,
    /// `running`, `warm` or `cold`.
    pub state: String,
    /// RFC 3339: when it went into that state.
    pub since: Option<String>,
    pub last_active_at: Option<String>,
}

fn secs(v: Option<i64>) -> Secs {
    v.map(|s| s.max(0) as u64)
}

/// A row's columns from `at` on: idle_timeout_s, cold_after_s,
/// cpu_activity, policy_set, state, since, last_active_at.
fn read_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<SleepRow> {
    let set: i64 = r.get(at + 3)?;
    Ok(SleepRow {
        policy: (set != 0).then(|| {
            (
                secs(r.get(at).ok().flatten()),
                secs(r.get(at + 1).ok().flatten()),
                r.get::<_, Option<i64>>(at + 2).ok().flatten().unwrap_or(1) != 0,
            )
        }),
        state: r.get(at + 4)?,
        since: r.get(at + 5)?,
        last_active_at: r.get(at + 6)?,
    })
}

impl Store {
    pub async fn sleep_row(&self, id: String) -> Result<Option<SleepRow>, StoreError> {
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT idle_timeout_s, cold_after_s, cpu_activity, policy_set, state, since, last_active_at
                 FROM sleep WHERE sprite_id = ?1",
                [&id],
                |r| read_row(r, 0),
            )
            .optional()?)
        })
        .await
    }

    /// Every sprite's row, by sprite id.
    pub async fn sleep_rows(
        &self,
    ) -> Result<std::collections::HashMap<String, SleepRow>, StoreError> {
        self.run(|c| {
            let mut st = c.prepare(
                "SELECT sprite_id, idle_timeout_s, cold_after_s, cpu_activity, policy_set, state, since, last_active_at FROM sleep",
            )?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, read_row(r, 1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Gives sprite `id` its own idle policy.
    pub async fn set_sleep_policy(
        &self,
        id: String,
        idle_timeout: Secs,
        cold_after: Secs,
        cpu_activity: bool,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO sleep (sprite_id, idle_timeout_s, cold_after_s, cpu_activity, policy_set)
                 VALUES (?1, ?2, ?3, ?4, 1)
                 ON CONFLICT (sprite_id) DO UPDATE SET idle_timeout_s = excluded.idle_timeout_s,
                   cold_after_s = excluded.cold_after_s, cpu_activity = excluded.cpu_activity,
                   policy_set = 1",
                params![
                    id,
                    idle_timeout.map(|s| s as i64),
                    cold_after.map(|s| s as i64),
                    i64::from(cpu_activity)
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Records that sprite `id` went `state` (`running`, `warm`, `cold`) at
    /// `at`.
    pub async fn set_sleep_state(
        &self,
        id: String,
        state: &'static str,
        at: String,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO sleep (sprite_id, state, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sprite_id) DO UPDATE SET state = excluded.state, since = excluded.since",
                params![id, state, at],
            )?;
            Ok(())
        })
        .await
    }

    /// Records the last activity seen in sprite `id`.
    pub async fn set_last_active(&self, id: String, at: String) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO sleep (sprite_id, last_active_at) VALUES (?1, ?2)
                 ON CONFLICT (sprite_id) DO UPDATE SET last_active_at = excluded.last_active_at",
                params![id, at],
            )?;
            Ok(())
        })
        .await
    }
}
