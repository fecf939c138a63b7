//! Each sprite's network policy, in the state database: a box setting (not
//! disk content), so it survives restarts and checkpoint restores, and goes
//! with the sprite.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS network_policies (
     sprite_id TEXT PRIMARY KEY REFERENCES sprites(id) ON DELETE CASCADE,
     rules TEXT NOT NULL);";

impl Store {
    /// The rules (JSON) of sprite `id`'s policy; `None` if it has none.
    pub async fn network_policy(&self, id: String) -> Result<Option<String>, StoreError> {
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT rules FROM network_policies WHERE sprite_id = ?1",
                [&id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    /// Replaces sprite `id`'s policy with `rules` (JSON).
    pub async fn set_network_policy(&self, id: String, rules: String) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO network_policies (sprite_id, rules) VALUES (?1, ?2)
                 ON CONFLICT (sprite_id) DO UPDATE SET rules = excluded.rules",
                params![id, rules],
            )?;
            Ok(())
        })
        .await
    }

    /// Every sprite's policy: (sprite id, rules as JSON).
    pub async fn all_network_policies(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.run(|c| {
            let mut st = c.prepare("SELECT sprite_id, rules FROM network_policies")?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}
