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

/// Added in version 6: the state last seen (`running`, `warm`, `cold`),
/// since when (ms since the epoch), and the milliseconds counted in each
/// state before that.
pub(super) const TIME_COLUMNS: &[(&str, &str)] = &[
    ("seen_state", "TEXT"),
    ("seen_since_ms", "INTEGER"),
    ("running_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("warm_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("cold_ms", "INTEGER NOT NULL DEFAULT 0"),
];

/// Milliseconds a sprite spent in each state, up to a moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateTimes {
    pub running_ms: u64,
    pub warm_ms: u64,
    pub cold_ms: u64,
}

impl StateTimes {
    fn add(&mut self, state: &str, ms: u64) {
        match state {
            "running" => self.running_ms += ms,
            "warm" => self.warm_ms += ms,
            "cold" => self.cold_ms += ms,
            _ => {}
        }
    }
}

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
    /// The state last counted (see [`Store::count_state`]).
    pub seen_state: Option<String>,
}

fn secs(v: Option<i64>) -> Secs {
    v.map(|s| s.max(0) as u64)
}

/// A row's columns from `at` on: idle_timeout_s, cold_after_s,
/// cpu_activity, policy_set, state, since, last_active_at, seen_state.
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
        seen_state: r.get(at + 7)?,
    })
}

impl Store {
    pub async fn sleep_row(&self, id: String) -> Result<Option<SleepRow>, StoreError> {
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT idle_timeout_s, cold_after_s, cpu_activity, policy_set, state, since, last_active_at, seen_state
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
                "SELECT sprite_id, idle_timeout_s, cold_after_s, cpu_activity, policy_set, state, since, last_active_at, seen_state FROM sleep",
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

    /// Counts that sprite `id` is in `state` from `at_ms` on: the time since
    /// the state last counted goes to that state. Nothing changes when the
    /// state is the same.
    pub async fn count_state(
        &self,
        id: String,
        state: &'static str,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let seen = counted(&tx, &id)?;
            if seen.as_ref().is_some_and(|s| s.state.as_deref() == Some(state)) {
                return Ok(());
            }
            let times = seen.map(|s| s.until(at_ms)).unwrap_or_default();
            tx.execute(
                "INSERT INTO sleep (sprite_id, seen_state, seen_since_ms, running_ms, warm_ms, cold_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (sprite_id) DO UPDATE SET seen_state = excluded.seen_state,
                   seen_since_ms = excluded.seen_since_ms, running_ms = excluded.running_ms,
                   warm_ms = excluded.warm_ms, cold_ms = excluded.cold_ms",
                params![
                    id,
                    state,
                    at_ms as i64,
                    times.running_ms as i64,
                    times.warm_ms as i64,
                    times.cold_ms as i64
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The time sprite `id` spent in each state up to `now_ms`, counting the
    /// current one.
    pub async fn state_times(&self, id: String, now_ms: u64) -> Result<StateTimes, StoreError> {
        self.run(move |c| {
            Ok(counted(c, &id)?
                .map(|s| s.until(now_ms))
                .unwrap_or_default())
        })
        .await
    }
}

/// What is counted of a sprite's time.
struct Counted {
    state: Option<String>,
    since_ms: Option<u64>,
    before: StateTimes,
}

impl Counted {
    /// The times with the current state counted up to `at_ms`.
    fn until(self, at_ms: u64) -> StateTimes {
        let mut times = self.before;
        if let (Some(state), Some(since)) = (self.state, self.since_ms) {
            times.add(&state, at_ms.saturating_sub(since));
        }
        times
    }
}

fn counted(c: &rusqlite::Connection, id: &str) -> Result<Option<Counted>, StoreError> {
    let ms = |v: i64| v.max(0) as u64;
    Ok(c.query_row(
        "SELECT seen_state, seen_since_ms, running_ms, warm_ms, cold_ms
         FROM sleep WHERE sprite_id = ?1",
        [id],
        |r| {
            Ok(Counted {
                state: r.get(0)?,
                since_ms: r.get::<_, Option<i64>>(1)?.map(ms),
                before: StateTimes {
                    running_ms: ms(r.get(2)?),
                    warm_ms: ms(r.get(3)?),
                    cold_ms: ms(r.get(4)?),
                },
            })
        },
    )
    .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::checkpoints::tests::store_with_sprite;

    #[tokio::test]
    async fn time_goes_to_the_state_it_was_spent_in() {
        let s = store_with_sprite().await;
        let times = |at| s.state_times("b1".into(), at);
        assert_eq!(times(5_000).await.expect("times"), StateTimes::default());
        s.count_state("b1".into(), "running", 1_000)
            .await
            .expect("count");
        // The same state again changes nothing: it is still counted from 1 s.
        s.count_state("b1".into(), "running", 3_000)
            .await
            .expect("count");
        s.count_state("b1".into(), "warm", 4_000)
            .await
            .expect("count");
        s.count_state("b1".into(), "cold", 4_500)
            .await
            .expect("count");
        assert_eq!(
            times(10_000).await.expect("times"),
            StateTimes {
                running_ms: 3_000,
                warm_ms: 500,
                cold_ms: 5_500
            }
        );
        s.count_state("b1".into(), "running", 11_000)
            .await
            .expect("count");
        let t = times(11_250).await.expect("times");
        assert_eq!((t.running_ms, t.cold_ms), (3_250, 6_500));
        // A clock that went back counts nothing rather than a negative.
        assert_eq!(times(0).await.expect("times").running_ms, 3_000);
        // A policy or last-activity write keeps the counts.
        s.set_last_active("b1".into(), "t".into())
            .await
            .expect("touch");
        s.set_sleep_policy("b1".into(), Some(5), None, true)
            .await
            .expect("policy");
        assert_eq!(times(11_250).await.expect("times"), t);
    }
}
