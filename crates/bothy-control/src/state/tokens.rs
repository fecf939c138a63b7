//! Tokens in the state database. Only a token's hash is stored (see
//! `crate::tokens`); its public id (`tok_` + 12 hex digits) is what people
//! list and revoke it by. Expiry times are written by
//! [`crate::time::rfc3339_ms`] only, a fixed-width format, so comparing the
//! strings compares the times (also in SQL).

use bothy_api::TokenLimits;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{Store, StoreError};

/// One token as stored, without its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Public id, `tok_` and 12 hex digits.
    pub id: String,
    pub org: String,
    pub is_admin: bool,
    pub description: Option<String>,
    pub created_at: String,
    /// RFC 3339 with milliseconds; `None` = never.
    pub expires_at: Option<String>,
    /// What a token made for an agent may do; `None`: all its org may.
    pub limits: Option<TokenLimits>,
}

impl TokenRow {
    /// Whether the token has expired at `now` (RFC 3339 with milliseconds).
    pub fn is_expired(&self, now: &str) -> bool {
        self.expires_at.as_deref().is_some_and(|e| e <= now)
    }
}

/// What to store for a new token; the store picks its id.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub hash: String,
    pub org: String,
    pub is_admin: bool,
    pub description: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub limits: Option<TokenLimits>,
}

/// What [`Store::revoke_token`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    Yes(TokenRow),
    /// No token has that id (any more).
    NotFound,
    /// It is the last admin token that has not expired: kept, or nobody
    /// could administer the host.
    LastAdmin,
}

/// A fresh public token id: 48 random bits, enough that ids do not repeat
/// among a host's tokens (and a repeat is caught by the unique index).
pub fn new_token_id() -> String {
    let bytes: [u8; 6] = rand::random();
    format!("tok_{}", crate::tokens::hex(&bytes))
}

/// Runs `write` with fresh ids until one is not taken (a few tries: a
/// repeat of a 48-bit random id is already unlikely once). Returns the id.
pub(super) fn insert_with_fresh_id(
    mut write: impl FnMut(&str) -> rusqlite::Result<usize>,
) -> Result<String, StoreError> {
    const TRIES: usize = 4;
    for _ in 0..TRIES {
        let id = new_token_id();
        match write(&id) {
            Ok(_) => return Ok(id),
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict)
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

const TOKEN_COLUMNS: &str = "id, org, is_admin, description, created, expires_at, \
     limit_max, limit_prefix, limit_read_only";

/// The columns of a token's limits (version 7); `limit_max` NULL: none.
pub(super) const LIMIT_COLUMNS: &[(&str, &str)] = &[
    ("limit_max", "INTEGER"),
    ("limit_prefix", "TEXT"),
    ("limit_read_only", "INTEGER NOT NULL DEFAULT 0"),
];

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    let max: Option<i64> = r.get(6)?;
    let limits = match max {
        Some(max) => Some(TokenLimits {
            // A value the daemon wrote; clamp rather than fail on a bad row.
            max_sprites: u32::try_from(max.max(0)).unwrap_or(u32::MAX),
            prefix: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
            read_only: r.get::<_, i64>(8)? != 0,
        }),
        None => None,
    };
    Ok(TokenRow {
        id: r.get(0)?,
        org: r.get(1)?,
        is_admin: r.get::<_, i64>(2)? != 0,
        description: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        limits,
    })
}

/// Inserts `t` (its org created if new) under a fresh id.
fn insert(c: &mut Connection, t: &NewToken) -> Result<TokenRow, StoreError> {
    let tx = c.transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO orgs (name, created) VALUES (?1, ?2)",
        params![t.org, t.created_at],
    )?;
    let id = insert_with_fresh_id(|id| {
        tx.execute(
            "INSERT INTO tokens (hash, id, org, is_admin, description, created, expires_at,
                                 limit_max, limit_prefix, limit_read_only)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                t.hash,
                id,
                t.org,
                i64::from(t.is_admin),
                t.description,
                t.created_at,
                t.expires_at,
                t.limits.as_ref().map(|l| i64::from(l.max_sprites)),
                t.limits.as_ref().map(|l| l.prefix.clone()),
                i64::from(t.limits.as_ref().is_some_and(|l| l.read_only)),
            ],
        )
    })?;
    tx.commit()?;
    Ok(TokenRow {
        id,
        org: t.org.clone(),
        is_admin: t.is_admin,
        description: t.description.clone(),
        created_at: t.created_at.clone(),
        expires_at: t.expires_at.clone(),
        limits: t.limits.clone(),
    })
}

impl Store {
    /// On first start: the `default` org and an admin token whose hash is given.
    /// Returns false (and changes nothing) when any token already exists.
    pub async fn bootstrap(&self, admin_hash: String, now: String) -> Result<bool, StoreError> {
        self.run(move |c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))?;
            if n > 0 {
                return Ok(false);
            }
            insert(
                c,
                &NewToken {
                    hash: admin_hash,
                    org: "default".into(),
                    is_admin: true,
                    description: Some("admin token made on first start".into()),
                    created_at: now,
                    expires_at: None,
                    limits: None,
                },
            )?;
            Ok(true)
        })
        .await
    }

    /// Another admin token for org `default`.
    pub async fn add_admin_token(&self, hash: String, now: String) -> Result<(), StoreError> {
        self.add_token(NewToken {
            hash,
            org: "default".into(),
            is_admin: true,
            description: Some("admin token made when the state was restored".into()),
            created_at: now,
            expires_at: None,
            limits: None,
        })
        .await
        .map(drop)
    }

    /// Stores a new token, creating its org if it is new; returns it with
    /// its id.
    pub async fn add_token(&self, token: NewToken) -> Result<TokenRow, StoreError> {
        self.run(move |c| insert(c, &token)).await
    }

    pub async fn has_tokens(&self) -> Result<bool, StoreError> {
        self.run(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))?;
            Ok(n > 0)
        })
        .await
    }

    /// The token whose hash is `hash`, expired or not.
    pub async fn token_by_hash(&self, hash: String) -> Result<Option<TokenRow>, StoreError> {
        self.run(move |c| {
            Ok(c.query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"),
                [hash],
                token_from_row,
            )
            .optional()?)
        })
        .await
    }

    pub async fn token_by_id(&self, id: String) -> Result<Option<TokenRow>, StoreError> {
        self.run(move |c| {
            Ok(c.query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
                [id],
                token_from_row,
            )
            .optional()?)
        })
        .await
    }

    /// Tokens of `org` (of every org with `None`), oldest first.
    pub async fn list_tokens(&self, org: Option<String>) -> Result<Vec<TokenRow>, StoreError> {
        self.run(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens
                 WHERE ?1 IS NULL OR org = ?1
                 ORDER BY created, rowid"
            ))?;
            let rows = st
                .query_map([org], token_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Deletes token `id` unless it is the last admin token that has not
    /// expired at `now`. The check and the delete are one transaction, so two
    /// admins revoking each other's tokens at once cannot both succeed.
    pub async fn revoke_token(&self, id: String, now: String) -> Result<Revoked, StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let row = tx
                .query_row(
                    &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
                    [&id],
                    token_from_row,
                )
                .optional()?;
            let Some(row) = row else {
                return Ok(Revoked::NotFound);
            };
            if row.is_admin && !row.is_expired(&now) {
                let others: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM tokens
                     WHERE is_admin = 1 AND id != ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                    params![id, now],
                    |r| r.get(0),
                )?;
                if others == 0 {
                    return Ok(Revoked::LastAdmin);
                }
            }
            tx.execute("DELETE FROM tokens WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(Revoked::Yes(row))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(hash: &str, org: &str, admin: bool, expires_at: Option<&str>) -> NewToken {
        NewToken {
            hash: hash.into(),
            org: org.into(),
            is_admin: admin,
            description: None,
            created_at: "2024-01-01T00:00:00.000Z".into(),
            expires_at: expires_at.map(str::to_string),
            limits: None,
        }
    }

    #[tokio::test]
    async fn ids_are_public_unique_and_found_by_hash() {
        let s = Store::open_in_memory().expect("open");
        let a = s
            .add_token(token("h1", "acme", false, None))
            .await
            .expect("add");
        let b = s
            .add_token(token("h2", "acme", false, None))
            .await
            .expect("add");
        assert!(bothy_api::is_token_id(&a.id), "{}", a.id);
        assert_ne!(a.id, b.id);
        assert_eq!(s.token_by_hash("h1".into()).await.expect("get"), Some(a));
        assert_eq!(s.token_by_hash("nope".into()).await.expect("get"), None);
    }

    #[tokio::test]
    async fn the_last_live_admin_stays_and_expired_admins_do_not_count() {
        let s = Store::open_in_memory().expect("open");
        let now = "2025-01-01T00:00:00.000Z".to_string();
        let live = s
            .add_token(token("a1", "default", true, None))
            .await
            .expect("add");
        let expired = s
            .add_token(token(
                "a2",
                "default",
                true,
                Some("2024-06-01T00:00:00.000Z"),
            ))
            .await
            .expect("add");
        assert_eq!(
            s.revoke_token(live.id.clone(), now.clone())
                .await
                .expect("revoke"),
            Revoked::LastAdmin
        );
        assert_eq!(
            s.revoke_token(expired.id.clone(), now.clone())
                .await
                .expect("revoke"),
            Revoked::Yes(expired)
        );
        assert_eq!(
            s.revoke_token("tok_000000000000".into(), now)
                .await
                .expect("revoke"),
            Revoked::NotFound
        );
    }
}
