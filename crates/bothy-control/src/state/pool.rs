//! The warm pool's rows: ready boxes kept in an organisation no token can
//! belong to ([`POOL_ORG`]), so no list, quota or API call sees them. A
//! create takes one by moving its row into the caller's organisation.

use rusqlite::params;

use super::{labels_json, sprite_from_row, SpriteRow, Store, StoreError, SPRITE_COLUMNS};

/// Not a valid organisation name (those are lowercase letters, digits and
/// `-`), so no token is ever minted for it.
pub const POOL_ORG: &str = ".pool";

impl Store {
    /// Makes the pool's organisation (rows need it).
    pub async fn ensure_pool_org(&self, now: String) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO orgs (name, created) VALUES (?1, ?2)",
                params![POOL_ORG, now],
            )?;
            Ok(())
        })
        .await
    }

    /// A ready pooled box of `want`'s shape (memory, CPUs, disk size,
    /// nesting), if there is one.
    pub async fn pooled_like(&self, want: &SpriteRow) -> Result<Option<SpriteRow>, StoreError> {
        let w = want.clone();
        self.run(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {SPRITE_COLUMNS} FROM sprites WHERE org = ?1 AND state = 'ready'
                 AND ram_mb = ?2 AND cpus = ?3 AND storage_gb = ?4 AND nesting = ?5
                 AND memory_policy_mb IS NULL ORDER BY created_at LIMIT 1"
            ))?;
            let mut rows =
                st.query(params![POOL_ORG, w.ram_mb, w.cpus, w.storage_gb, w.nesting])?;
            match rows.next()? {
                Some(r) => Ok(Some(sprite_from_row(r)?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// Moves pooled box `id` into `to`'s organisation under `to`'s name,
    /// labels and URL settings, as new: its idle policy, sleep state and
    /// counted time start over. `Ok(false)` if it is no longer pooled and
    /// ready; [`StoreError::Conflict`] if the name is taken.
    pub async fn take_pooled(&self, id: String, to: SpriteRow) -> Result<bool, StoreError> {
        self.run(move |c| {
            let labels = labels_json(&to.labels)?;
            let tx = c.transaction()?;
            let moved = tx.execute(
                "UPDATE sprites SET org = ?2, name = ?3, url_auth = ?4, url_private_access = ?5,
                   labels = ?6, created_at = ?7, updated_at = ?7
                 WHERE id = ?1 AND org = ?8 AND state = 'ready'",
                params![
                    id,
                    to.org,
                    to.name,
                    to.url_auth,
                    to.url_private_access,
                    labels,
                    to.created_at,
                    POOL_ORG
                ],
            );
            let moved = match moved {
                Ok(n) => n,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                {
                    return Err(StoreError::Conflict)
                }
                Err(e) => return Err(e.into()),
            };
            if moved == 0 {
                return Ok(false);
            }
            tx.execute("DELETE FROM sleep WHERE sprite_id = ?1", [&id])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}
