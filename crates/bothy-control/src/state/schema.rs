//! The state database's tables and their migrations.
//!
//! `CREATE_V1` is the schema as the first release wrote it; every later
//! change is a step in [`migrate`]. A new database and one written by an
//! older bothy take the same path (create what is missing, then migrate),
//! so they cannot drift apart. Each step checks what is there rather than
//! trusting the version number, and the whole of it is one transaction: a
//! start that dies half-way leaves the database as it was, and the next
//! start does it again.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::tokens::insert_with_fresh_id;
use super::StoreError;

/// Bumped with every schema change. 2: tokens have a public id and an
/// optional expiry. 3: sprites have `nesting` and `memory_policy_mb`;
/// organisations have quotas. 4: sprites have network policies. 5: sprites
/// have idle policies and sleep states. 6: the time each sprite spent
/// running, warm and cold.
pub(super) const SCHEMA_VERSION: i64 = 7;

const CREATE_V1: &str = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
     CREATE TABLE IF NOT EXISTS orgs (
         name TEXT PRIMARY KEY,
         created TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS tokens (
         hash TEXT PRIMARY KEY,
         org TEXT NOT NULL REFERENCES orgs(name),
         is_admin INTEGER NOT NULL,
         description TEXT,
         created TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS sprites (
         id TEXT PRIMARY KEY,
         org TEXT NOT NULL REFERENCES orgs(name),
         name TEXT NOT NULL,
         ram_mb INTEGER NOT NULL,
         cpus INTEGER NOT NULL,
         storage_gb INTEGER NOT NULL,
         url_auth TEXT NOT NULL,
         url_private_access TEXT,
         labels TEXT NOT NULL,
         state TEXT NOT NULL,
         created_at TEXT NOT NULL,
         updated_at TEXT NOT NULL,
         last_running_at TEXT,
         UNIQUE (org, name));
     CREATE TABLE IF NOT EXISTS checkpoints (
         sprite_id TEXT NOT NULL REFERENCES sprites(id) ON DELETE CASCADE,
         seq INTEGER NOT NULL,
         volume_checkpoint INTEGER NOT NULL,
         comment TEXT,
         created_at TEXT NOT NULL,
         auto INTEGER NOT NULL,
         history TEXT NOT NULL,
         PRIMARY KEY (sprite_id, seq));
     CREATE TABLE IF NOT EXISTS lineage (
         sprite_id TEXT PRIMARY KEY REFERENCES sprites(id) ON DELETE CASCADE,
         next_seq INTEGER NOT NULL,
         history TEXT NOT NULL);";

/// Creates what is missing and brings the schema up to [`SCHEMA_VERSION`].
/// A database from a newer bothy is refused before anything is written.
pub(super) fn prepare(conn: &mut Connection) -> Result<(), StoreError> {
    // IMMEDIATE: the write lock from the start, so no reader sees a
    // half-migrated schema.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(CREATE_V1)?;
    let version: Option<i64> = tx
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    if let Some(v) = version.filter(|v| *v > SCHEMA_VERSION) {
        return Err(StoreError::TooNew(v));
    }
    migrate(&tx)?;
    if version != Some(SCHEMA_VERSION) {
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [SCHEMA_VERSION],
        )?;
        if let Some(old) = version {
            tracing::info!(from = old, to = SCHEMA_VERSION, "state database migrated");
        }
    }
    tx.commit()?;
    Ok(())
}

fn migrate(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tokens_have_ids_and_expiry(tx)?;
    sprites_have_settings_and_orgs_quotas(tx)?;
    sprites_have_network_policies(tx)?;
    sprites_sleep(tx)?;
    sprites_count_time_in_states(tx)?;
    tokens_have_limits(tx)
}

/// Version 7: a token's limits (`limit_max` NULL: an unlimited token).
fn tokens_have_limits(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let tokens = columns(tx, "tokens")?;
    for (column, kind) in super::tokens::LIMIT_COLUMNS {
        if !tokens.contains(*column) {
            tx.execute(
                &format!("ALTER TABLE tokens ADD COLUMN {column} {kind}"),
                [],
            )?;
        }
    }
    Ok(())
}

/// Version 6: `sleep` counts milliseconds spent running, warm and cold, from
/// the state last seen and since when (no row: nothing counted yet).
fn sprites_count_time_in_states(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let sleep = columns(tx, "sleep")?;
    for (column, kind) in super::sleep::TIME_COLUMNS {
        if !sleep.contains(*column) {
            tx.execute(&format!("ALTER TABLE sleep ADD COLUMN {column} {kind}"), [])?;
        }
    }
    Ok(())
}

/// Version 5: the `sleep` table (no row: the daemon's idle policy, running).
fn sprites_sleep(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(super::sleep::SCHEMA)?;
    Ok(())
}

/// Version 4: the `network_policies` table (no row: no rules, all allowed).
fn sprites_have_network_policies(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(super::policies::SCHEMA)?;
    Ok(())
}

/// Version 3: `sprites.nesting` (boxes made before have none),
/// `sprites.memory_policy_mb` (NULL: the create-time `ram_mb` holds) and the
/// `quotas` table (no row: no limits).
fn sprites_have_settings_and_orgs_quotas(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let sprites = columns(tx, "sprites")?;
    if !sprites.contains("nesting") {
        tx.execute(
            "ALTER TABLE sprites ADD COLUMN nesting INTEGER NOT NULL DEFAULT 0",
            [],
        )?;
    }
    if !sprites.contains("memory_policy_mb") {
        tx.execute(
            "ALTER TABLE sprites ADD COLUMN memory_policy_mb INTEGER",
            [],
        )?;
    }
    tx.execute_batch(super::quotas::SCHEMA)?;
    Ok(())
}

/// Version 2: `tokens.id` (public, unique) and `tokens.expires_at` (RFC
/// 3339, NULL = never). Tokens made before get an id here and never expire.
fn tokens_have_ids_and_expiry(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let columns = columns(tx, "tokens")?;
    if !columns.contains("id") {
        tx.execute("ALTER TABLE tokens ADD COLUMN id TEXT", [])?;
    }
    if !columns.contains("expires_at") {
        tx.execute("ALTER TABLE tokens ADD COLUMN expires_at TEXT", [])?;
    }
    // A UNIQUE index allows many NULLs, so it can exist before the old rows
    // have their ids; it then catches the (unlikely) repeat of a random id.
    tx.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS tokens_by_id ON tokens (id)",
        [],
    )?;
    let without_id: Vec<String> = {
        let mut st = tx.prepare("SELECT hash FROM tokens WHERE id IS NULL")?;
        let hashes = st
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        hashes
    };
    for hash in without_id {
        insert_with_fresh_id(|id| {
            tx.execute(
                "UPDATE tokens SET id = ?1 WHERE hash = ?2",
                params![id, hash],
            )
        })?;
    }
    Ok(())
}

fn columns(tx: &Transaction<'_>, table: &str) -> Result<HashSet<String>, StoreError> {
    let mut st = tx.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = st
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<HashSet<_>, _>>()?;
    Ok(names)
}
