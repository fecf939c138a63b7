//! Per-organisation quotas and what an organisation uses, in the state
//! database. A missing row, or a NULL limit, is no limit.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS quotas (
     org TEXT PRIMARY KEY REFERENCES orgs(name),
     max_boxes INTEGER,
     max_running_boxes INTEGER,
     max_storage_gb INTEGER,
     max_checkpoints INTEGER);";

/// An organisation's limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub max_boxes: Option<u64>,
    pub max_running_boxes: Option<u64>,
    pub max_storage_gb: Option<u64>,
    pub max_checkpoints: Option<u64>,
}

/// What an organisation has now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub boxes: u64,
    /// Boxes not last seen cold: running or warm (they hold memory).
    pub running_boxes: u64,
    pub storage_gb: u64,
    pub checkpoints: u64,
}

impl Store {
    pub async fn quota(&self, org: String) -> Result<Quota, StoreError> {
        self.run(move |c| {
            let q = c
                .query_row(
                    "SELECT max_boxes, max_running_boxes, max_storage_gb, max_checkpoints
                     FROM quotas WHERE org = ?1",
                    [&org],
                    |r| {
                        Ok(Quota {
                            max_boxes: r.get(0)?,
                            max_running_boxes: r.get(1)?,
                            max_storage_gb: r.get(2)?,
                            max_checkpoints: r.get(3)?,
                        })
                    },
                )
                .optional()?;
            Ok(q.unwrap_or_default())
        })
        .await
    }

    /// Replaces `org`'s quota; false if there is no such organisation.
    pub async fn set_quota(&self, org: String, q: Quota) -> Result<bool, StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let exists: bool = tx.query_row(
                "SELECT COUNT(*) > 0 FROM orgs WHERE name = ?1",
                [&org],
                |r| r.get(0),
            )?;
            if exists {
                tx.execute(
                    "INSERT INTO quotas (org, max_boxes, max_running_boxes, max_storage_gb, max_checkpoints)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (org) DO UPDATE SET max_boxes = ?2, max_running_boxes = ?3,
                         max_storage_gb = ?4, max_checkpoints = ?5",
                    params![org, q.max_boxes, q.max_running_boxes, q.max_storage_gb, q.max_checkpoints],
                )?;
            }
            tx.commit()?;
            Ok(exists)
        })
        .await
    }

    pub async fn org_exists(&self, org: String) -> Result<bool, StoreError> {
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) > 0 FROM orgs WHERE name = ?1",
                [&org],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Boxes, their disk sizes, and user-made checkpoints of `org`.
    pub async fn usage(&self, org: String) -> Result<Usage, StoreError> {
        self.run(move |c| {
            let (boxes, storage_gb): (u64, u64) = c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(storage_gb), 0) FROM sprites WHERE org = ?1",
                [&org],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let running_boxes: u64 = c.query_row(
                "SELECT COUNT(*) FROM sprites s LEFT JOIN sleep z ON z.sprite_id = s.id
                 WHERE s.org = ?1 AND COALESCE(z.seen_state, 'running') != 'cold'",
                [&org],
                |r| r.get(0),
            )?;
            let checkpoints: u64 = c.query_row(
                "SELECT COUNT(*) FROM checkpoints k JOIN sprites s ON k.sprite_id = s.id
                 WHERE s.org = ?1 AND k.auto = 0",
                [&org],
                |r| r.get(0),
            )?;
            Ok(Usage {
                boxes,
                running_boxes,
                storage_gb,
                checkpoints,
            })
        })
        .await
    }
}
