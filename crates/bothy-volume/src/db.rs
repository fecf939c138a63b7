//! The SQLite block map and cache index.
//!
//! Schema: a volume's live map is the rows of generation `volumes.head`; a
//! row (gen, idx, hash) means chunk `idx` holds the chunk `hash`, no row means
//! zeros. Frozen maps (checkpoints, and the head maps last shipped to the
//! object store) are one immutable blob each, in the [`MapSnapshot`] encoding
//! that also goes to the store: making one costs a read of the head and one
//! write, where copying rows cost microseconds per chunk (a checkpoint of a
//! disk with 2 GiB written took twice as long as one with 10 MiB).
//!
//! A checkpoint is taken as a row of `head_checkpoints`: its map is the head
//! as it is, so taking one costs the same on any disk. The head's next change
//! freezes it into a blob first, in the transaction that makes the change
//! (see [`freeze_head_checkpoints`]).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use bothy_store::ChunkHash;

use crate::cache::{CachedRow, Staged};
use crate::snapshot::MapSnapshot;
use crate::VolumeError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    head INTEGER NOT NULL,
    snapshot_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS checkpoint_maps (
    volume TEXT NOT NULL,
    id INTEGER NOT NULL,
    shipped INTEGER NOT NULL DEFAULT 0,
    map BLOB NOT NULL,
    PRIMARY KEY (volume, id)
);
CREATE TABLE IF NOT EXISTS head_checkpoints (
    volume TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (volume, id)
);
CREATE TABLE IF NOT EXISTS shipped_maps (
    volume TEXT NOT NULL,
    seq INTEGER NOT NULL,
    map BLOB NOT NULL,
    PRIMARY KEY (volume, seq)
);
CREATE TABLE IF NOT EXISTS generations (gen INTEGER PRIMARY KEY AUTOINCREMENT, volume TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS map (
    gen INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (gen, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS map_hash ON map (hash);
CREATE TABLE IF NOT EXISTS cache (
    hash BLOB PRIMARY KEY,
    len INTEGER NOT NULL,
    dirty INTEGER NOT NULL,
    last_used INTEGER NOT NULL,
    slot INTEGER
) WITHOUT ROWID;
";

pub fn open(path: &std::path::Path) -> Result<Connection, VolumeError> {
    let mut conn = Connection::open(path)?;
    // WAL + FULL: a committed transaction survives power loss, which is what
    // flush() promises.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(SCHEMA)?;
    add_cache_slots(&conn)?;
    migrate_generation_maps(&mut conn)?;
    Ok(conn)
}

/// Caches from before slab files keep a chunk per file: their rows have no
/// slot (see cache.rs).
fn add_cache_slots(conn: &Connection) -> Result<(), VolumeError> {
    let has_slot: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('cache') WHERE name = 'slot'",
        [],
        |r| r.get(0),
    )?;
    if !has_slot {
        conn.execute_batch("ALTER TABLE cache ADD COLUMN slot INTEGER")?;
    }
    Ok(())
}

/// The rows of the cache table, for [`crate::cache::ChunkCache::open`].
pub fn cached_rows(conn: &Connection) -> Result<Vec<CachedRow>, VolumeError> {
    let mut stmt = conn.prepare("SELECT hash, len, slot FROM cache")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (hash, len, slot) = row?;
        out.push(CachedRow {
            hash: to_hash(&hash)?,
            len: len as u64,
            slot: slot.map(|s| s as u64),
        });
    }
    Ok(out)
}

/// Databases made before frozen maps were blobs kept them as row copies in
/// the tables `checkpoints (volume, id, gen, shipped)` and `shipped (volume,
/// seq, gen)`: turns each into a blob, in one transaction.
fn migrate_generation_maps(conn: &mut Connection) -> Result<(), VolumeError> {
    let tx = conn.transaction()?;
    for (old, new, key) in [
        ("checkpoints", "checkpoint_maps", "id"),
        ("shipped", "shipped_maps", "seq"),
    ] {
        let exists: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [old],
            |r| r.get(0),
        )?;
        if !exists {
            continue;
        }
        let shipped = if old == "checkpoints" { "shipped" } else { "1" };
        let rows: Vec<(String, i64, i64, i64)> = {
            let mut stmt =
                tx.prepare(&format!("SELECT volume, {key}, gen, {shipped} FROM {old}"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            rows
        };
        for (vol, n, gen, was_shipped) in rows {
            if let Some(v) = volume(&tx, &vol)? {
                let blob = snapshot(&tx, gen, v.size, v.chunk_size)?.encode();
                if old == "checkpoints" {
                    tx.execute(
                        "INSERT OR REPLACE INTO checkpoint_maps (volume, id, shipped, map) VALUES (?1, ?2, ?3, ?4)",
                        params![vol, n, was_shipped, blob],
                    )?;
                } else {
                    tx.execute(
                        &format!(
                            "INSERT OR REPLACE INTO {new} (volume, seq, map) VALUES (?1, ?2, ?3)"
                        ),
                        params![vol, n, blob],
                    )?;
                }
            }
            tx.execute("DELETE FROM map WHERE gen = ?1", [gen])?;
            tx.execute("DELETE FROM generations WHERE gen = ?1", [gen])?;
        }
        tx.execute_batch(&format!("DROP TABLE {old}"))?;
    }
    tx.commit()?;
    Ok(())
}

/// The rows of generation `gen` as a snapshot of a volume of that geometry.
pub fn snapshot(
    conn: &Connection,
    gen: i64,
    size: u64,
    chunk_size: u64,
) -> Result<MapSnapshot, VolumeError> {
    Ok(MapSnapshot {
        size,
        chunk_size,
        entries: entries(conn, gen)?,
    })
}

/// The id the next checkpoint of `volume` gets.
pub fn next_checkpoint_id(conn: &Connection, volume: &str) -> Result<i64, VolumeError> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(id), 0) + 1 FROM (
             SELECT id FROM checkpoint_maps WHERE volume = ?1
             UNION ALL SELECT id FROM head_checkpoints WHERE volume = ?1)",
        [volume],
        |r| r.get(0),
    )?)
}

/// Turns `volume`'s checkpoints whose map is still its head into blobs
/// (`blob` encodes the head); whether there were any. Call it inside the
/// transaction that changes the head, before the change.
pub fn freeze_head_checkpoints(
    conn: &Connection,
    volume: &str,
    blob: impl FnOnce() -> Result<Vec<u8>, VolumeError>,
) -> Result<bool, VolumeError> {
    let ids: Vec<i64> = {
        let mut stmt = conn.prepare_cached("SELECT id FROM head_checkpoints WHERE volume = ?1")?;
        let rows = stmt
            .query_map([volume], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        rows
    };
    if ids.is_empty() {
        return Ok(false);
    }
    let blob = blob()?;
    for id in ids {
        insert_checkpoint_map(conn, volume, id, false, &blob)?;
    }
    conn.execute("DELETE FROM head_checkpoints WHERE volume = ?1", [volume])?;
    Ok(true)
}

/// Replaces the rows of generation `gen` with a snapshot's entries.
pub fn replace_rows(conn: &Connection, gen: i64, snap: &MapSnapshot) -> Result<(), VolumeError> {
    conn.execute("DELETE FROM map WHERE gen = ?1", [gen])?;
    let mut stmt = conn.prepare_cached("INSERT INTO map (gen, idx, hash) VALUES (?1, ?2, ?3)")?;
    for (idx, hash) in &snap.entries {
        stmt.execute(params![gen, *idx as i64, &hash.as_bytes()[..]])?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub struct VolumeRow {
    pub size: u64,
    pub chunk_size: u64,
    pub head: i64,
    pub snapshot_seq: u64,
}

pub fn volume(conn: &Connection, name: &str) -> Result<Option<VolumeRow>, VolumeError> {
    Ok(conn
        .query_row(
            "SELECT size, chunk_size, head, snapshot_seq FROM volumes WHERE name = ?1",
            [name],
            |r| {
                Ok(VolumeRow {
                    size: r.get::<_, i64>(0)? as u64,
                    chunk_size: r.get::<_, i64>(1)? as u64,
                    head: r.get(2)?,
                    snapshot_seq: r.get::<_, i64>(3)? as u64,
                })
            },
        )
        .optional()?)
}

pub fn new_generation(conn: &Connection, volume: &str) -> Result<i64, VolumeError> {
    conn.execute("INSERT INTO generations (volume) VALUES (?1)", [volume])?;
    Ok(conn.last_insert_rowid())
}

pub fn entries(conn: &Connection, gen: i64) -> Result<Vec<(u64, ChunkHash)>, VolumeError> {
    let mut stmt = conn.prepare_cached("SELECT idx, hash FROM map WHERE gen = ?1 ORDER BY idx")?;
    let rows = stmt.query_map([gen], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (idx, hash) = row?;
        out.push((idx as u64, to_hash(&hash)?));
    }
    Ok(out)
}

pub fn to_hash(bytes: &[u8]) -> Result<ChunkHash, VolumeError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| VolumeError::CorruptSnapshot("block map holds a malformed hash".into()))?;
    Ok(ChunkHash::from_bytes(arr))
}

// Volumes.

pub fn insert_volume(conn: &Connection, name: &str, row: &VolumeRow) -> Result<(), VolumeError> {
    conn.execute(
        "INSERT INTO volumes (name, size, chunk_size, head, snapshot_seq) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            name,
            row.size as i64,
            row.chunk_size as i64,
            row.head,
            row.snapshot_seq as i64
        ],
    )?;
    Ok(())
}

/// Names of all volumes, sorted.
pub fn volume_names(conn: &Connection) -> Result<Vec<String>, VolumeError> {
    let mut stmt = conn.prepare("SELECT name FROM volumes ORDER BY name")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(names)
}

/// Every row of a volume: head map, checkpoints, shipped maps, generations.
pub fn delete_volume_rows(conn: &Connection, name: &str) -> Result<(), VolumeError> {
    conn.execute(
        "DELETE FROM map WHERE gen IN (SELECT gen FROM generations WHERE volume = ?1)",
        [name],
    )?;
    conn.execute("DELETE FROM checkpoint_maps WHERE volume = ?1", [name])?;
    conn.execute("DELETE FROM head_checkpoints WHERE volume = ?1", [name])?;
    conn.execute("DELETE FROM shipped_maps WHERE volume = ?1", [name])?;
    conn.execute("DELETE FROM generations WHERE volume = ?1", [name])?;
    conn.execute("DELETE FROM volumes WHERE name = ?1", [name])?;
    Ok(())
}

pub fn set_volume_size(conn: &Connection, name: &str, size: u64) -> Result<(), VolumeError> {
    conn.execute(
        "UPDATE volumes SET size = ?1 WHERE name = ?2",
        params![size as i64, name],
    )?;
    Ok(())
}

/// Head snapshot `seq` of `name` is in the object store (a later one may
/// be already: the number never goes back).
pub fn set_snapshot_seq(conn: &Connection, name: &str, seq: u64) -> Result<(), VolumeError> {
    conn.execute(
        "UPDATE volumes SET snapshot_seq = MAX(snapshot_seq, ?2) WHERE name = ?1",
        params![name, seq as i64],
    )?;
    Ok(())
}

// Head maps.

/// Chunk `idx` of generation `gen` now holds `hash`.
pub fn map_chunk(
    conn: &Connection,
    gen: i64,
    idx: u64,
    hash: &ChunkHash,
) -> Result<(), VolumeError> {
    conn.prepare_cached("INSERT OR REPLACE INTO map (gen, idx, hash) VALUES (?1, ?2, ?3)")?
        .execute(params![gen, idx as i64, &hash.as_bytes()[..]])?;
    Ok(())
}

/// Chunk `idx` of generation `gen` is zeros now.
pub fn unmap_chunk(conn: &Connection, gen: i64, idx: u64) -> Result<(), VolumeError> {
    conn.prepare_cached("DELETE FROM map WHERE gen = ?1 AND idx = ?2")?
        .execute(params![gen, idx as i64])?;
    Ok(())
}

/// Drops the entries of generation `gen` from chunk `from` on.
pub fn truncate_map(conn: &Connection, gen: i64, from: u64) -> Result<(), VolumeError> {
    conn.execute(
        "DELETE FROM map WHERE gen = ?1 AND idx >= ?2",
        params![gen, from as i64],
    )?;
    Ok(())
}

/// Every chunk some head names.
pub fn mapped_hashes(conn: &Connection) -> Result<Vec<ChunkHash>, VolumeError> {
    hashes(conn, "SELECT DISTINCT hash FROM map")
}

/// The hashes a query of one column gives.
fn hashes(conn: &Connection, sql: &str) -> Result<Vec<ChunkHash>, VolumeError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for h in rows {
        out.push(to_hash(&h?)?);
    }
    Ok(out)
}

/// Whether some head names `hash`.
pub fn is_mapped(conn: &Connection, hash: &ChunkHash) -> Result<bool, VolumeError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM map WHERE hash = ?1 LIMIT 1",
            [&hash.as_bytes()[..]],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

// Checkpoints and frozen maps.

pub fn insert_checkpoint_map(
    conn: &Connection,
    volume: &str,
    id: i64,
    shipped: bool,
    map: &[u8],
) -> Result<(), VolumeError> {
    conn.prepare_cached(
        "INSERT INTO checkpoint_maps (volume, id, shipped, map) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![volume, id, i64::from(shipped), map])?;
    Ok(())
}

/// Records a checkpoint whose map is the head as it is (see
/// [`freeze_head_checkpoints`]).
pub fn insert_head_checkpoint(conn: &Connection, volume: &str, id: i64) -> Result<(), VolumeError> {
    conn.execute(
        "INSERT INTO head_checkpoints (volume, id) VALUES (?1, ?2)",
        params![volume, id],
    )?;
    Ok(())
}

/// Every checkpoint of `volume`, frozen or not, ascending, with whether its
/// map was shipped to the object store.
pub fn checkpoint_states(conn: &Connection, volume: &str) -> Result<Vec<(i64, bool)>, VolumeError> {
    let mut stmt = conn.prepare(
        "SELECT id, shipped FROM checkpoint_maps WHERE volume = ?1
         UNION ALL SELECT id, 0 FROM head_checkpoints WHERE volume = ?1 ORDER BY id",
    )?;
    let states = stmt
        .query_map([volume], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))?
        .collect::<Result<_, _>>()?;
    Ok(states)
}

/// Ids of the frozen checkpoints of `volume` not shipped to the store yet.
pub fn unshipped_checkpoints(conn: &Connection, volume: &str) -> Result<Vec<i64>, VolumeError> {
    let mut stmt =
        conn.prepare("SELECT id FROM checkpoint_maps WHERE volume = ?1 AND shipped = 0")?;
    let ids = stmt
        .query_map([volume], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// The frozen map of checkpoint `id`, if it is frozen.
pub fn checkpoint_map(
    conn: &Connection,
    volume: &str,
    id: i64,
) -> Result<Option<Vec<u8>>, VolumeError> {
    Ok(conn
        .query_row(
            "SELECT map FROM checkpoint_maps WHERE volume = ?1 AND id = ?2",
            params![volume, id],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn mark_checkpoint_shipped(
    conn: &Connection,
    volume: &str,
    id: i64,
) -> Result<(), VolumeError> {
    conn.execute(
        "UPDATE checkpoint_maps SET shipped = 1 WHERE volume = ?1 AND id = ?2",
        params![volume, id],
    )?;
    Ok(())
}

/// Forgets a checkpoint never frozen; whether there was one.
pub fn delete_head_checkpoint(
    conn: &Connection,
    volume: &str,
    id: i64,
) -> Result<bool, VolumeError> {
    Ok(conn.execute(
        "DELETE FROM head_checkpoints WHERE volume = ?1 AND id = ?2",
        params![volume, id],
    )? > 0)
}

pub fn delete_checkpoint_map(conn: &Connection, volume: &str, id: i64) -> Result<(), VolumeError> {
    conn.execute(
        "DELETE FROM checkpoint_maps WHERE volume = ?1 AND id = ?2",
        params![volume, id],
    )?;
    Ok(())
}

/// Every frozen map: checkpoints and shipped heads, encoded.
pub fn frozen_maps(conn: &Connection) -> Result<Vec<Vec<u8>>, VolumeError> {
    let mut stmt =
        conn.prepare("SELECT map FROM checkpoint_maps UNION ALL SELECT map FROM shipped_maps")?;
    let maps = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(maps)
}

pub fn insert_shipped_map(
    conn: &Connection,
    volume: &str,
    seq: u64,
    map: &[u8],
) -> Result<(), VolumeError> {
    conn.execute(
        "INSERT INTO shipped_maps (volume, seq, map) VALUES (?1, ?2, ?3)",
        params![volume, seq as i64, map],
    )?;
    Ok(())
}

/// The frozen head map `seq` of `volume`, if it was not superseded.
pub fn shipped_map(
    conn: &Connection,
    volume: &str,
    seq: u64,
) -> Result<Option<Vec<u8>>, VolumeError> {
    Ok(conn
        .query_row(
            "SELECT map FROM shipped_maps WHERE volume = ?1 AND seq = ?2",
            params![volume, seq as i64],
            |r| r.get(0),
        )
        .optional()?)
}

/// The sequence number the next head map of `volume` frozen for shipment
/// gets: above every one frozen or shipped before.
pub fn next_shipped_seq(conn: &Connection, volume: &str) -> Result<u64, VolumeError> {
    let (frozen, shipped): (i64, i64) = conn.query_row(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM shipped_maps WHERE volume = ?1),
                (SELECT COALESCE(MAX(snapshot_seq), 0) FROM volumes WHERE name = ?1)",
        [volume],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(frozen.max(shipped) as u64 + 1)
}

/// Sequence numbers of `volume`'s shipped head maps older than `seq`.
pub fn shipped_maps_before(
    conn: &Connection,
    volume: &str,
    seq: u64,
) -> Result<Vec<u64>, VolumeError> {
    let mut stmt = conn.prepare("SELECT seq FROM shipped_maps WHERE volume = ?1 AND seq < ?2")?;
    let rows = stmt
        .query_map(params![volume, seq as i64], |r| r.get::<_, i64>(0))?
        .map(|r| r.map(|s| s as u64))
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub fn delete_shipped_map(conn: &Connection, volume: &str, seq: u64) -> Result<(), VolumeError> {
    conn.execute(
        "DELETE FROM shipped_maps WHERE volume = ?1 AND seq = ?2",
        params![volume, seq as i64],
    )?;
    Ok(())
}

// The cache index.

/// The newest LRU clock value in the cache table.
pub fn max_last_used(conn: &Connection) -> Result<i64, VolumeError> {
    Ok(
        conn.query_row("SELECT COALESCE(MAX(last_used), 0) FROM cache", [], |r| {
            r.get(0)
        })?,
    )
}

/// Every cached chunk.
pub fn cached_hashes(conn: &Connection) -> Result<Vec<ChunkHash>, VolumeError> {
    hashes(conn, "SELECT hash FROM cache")
}

/// Cached chunks with their lengths: the dirty ones (not uploaded yet), or
/// the clean ones least recently used first.
pub fn cached_chunks(conn: &Connection, dirty: bool) -> Result<Vec<(ChunkHash, u64)>, VolumeError> {
    let sql = if dirty {
        "SELECT hash, len FROM cache WHERE dirty = 1"
    } else {
        "SELECT hash, len FROM cache WHERE dirty = 0 ORDER BY last_used"
    };
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (h, len) = row?;
        out.push((to_hash(&h)?, len as u64));
    }
    Ok(out)
}

/// Number and bytes of cached chunks, or of dirty ones only.
pub fn cache_totals(conn: &Connection, dirty_only: bool) -> Result<(u64, u64), VolumeError> {
    let sql = if dirty_only {
        "SELECT COUNT(*), COALESCE(SUM(len), 0) FROM cache WHERE dirty = 1"
    } else {
        "SELECT COUNT(*), COALESCE(SUM(len), 0) FROM cache"
    };
    let (n, bytes): (i64, i64) = conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((n as u64, bytes as u64))
}

/// Whether `hash` has a row.
pub fn is_cached(conn: &Connection, hash: &ChunkHash) -> Result<bool, VolumeError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM cache WHERE hash = ?1")?
        .query_row([&hash.as_bytes()[..]], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Whether `hash` has a row that is not uploaded yet.
pub fn is_dirty(conn: &Connection, hash: &ChunkHash) -> Result<bool, VolumeError> {
    Ok(conn
        .prepare_cached("SELECT dirty FROM cache WHERE hash = ?1")?
        .query_row([&hash.as_bytes()[..]], |r| r.get::<_, i64>(0))
        .optional()?
        == Some(1))
}

/// A new row for a staged chunk.
pub fn insert_cache_row(
    conn: &Connection,
    staged: &Staged,
    dirty: bool,
    tick: i64,
) -> Result<(), VolumeError> {
    conn.prepare_cached(
        "INSERT INTO cache (hash, len, dirty, last_used, slot) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        &staged.hash.as_bytes()[..],
        staged.len as i64,
        i64::from(dirty),
        tick,
        staged.slot as i64
    ])?;
    Ok(())
}

/// Points an existing row at a staged chunk's slot, keeping its dirty flag.
pub fn move_cache_row(conn: &Connection, staged: &Staged, tick: i64) -> Result<(), VolumeError> {
    conn.prepare_cached("UPDATE cache SET len = ?2, slot = ?3, last_used = ?4 WHERE hash = ?1")?
        .execute(params![
            &staged.hash.as_bytes()[..],
            staged.len as i64,
            staged.slot as i64,
            tick
        ])?;
    Ok(())
}

/// Sets the LRU clock of a row.
pub fn set_last_used(conn: &Connection, hash: &ChunkHash, tick: i64) -> Result<(), VolumeError> {
    conn.prepare_cached("UPDATE cache SET last_used = ?2 WHERE hash = ?1")?
        .execute(params![&hash.as_bytes()[..], tick])?;
    Ok(())
}

/// Moves the LRU clock of rows forward (never back).
pub fn advance_last_used(
    conn: &Connection,
    ticks: &HashMap<ChunkHash, i64>,
) -> Result<(), VolumeError> {
    let mut stmt =
        conn.prepare_cached("UPDATE cache SET last_used = MAX(last_used, ?2) WHERE hash = ?1")?;
    for (hash, tick) in ticks {
        stmt.execute(params![&hash.as_bytes()[..], tick])?;
    }
    Ok(())
}

/// The chunk is in the object store now.
pub fn mark_clean(conn: &Connection, hash: &ChunkHash) -> Result<(), VolumeError> {
    conn.execute(
        "UPDATE cache SET dirty = 0 WHERE hash = ?1",
        [&hash.as_bytes()[..]],
    )?;
    Ok(())
}

/// Deletes a row, clean or dirty; whether there was one.
pub fn delete_cache_row(conn: &Connection, hash: &ChunkHash) -> Result<bool, VolumeError> {
    Ok(conn.execute("DELETE FROM cache WHERE hash = ?1", [&hash.as_bytes()[..]])? > 0)
}

/// Deletes a row if it is clean; whether it did.
pub fn delete_clean_cache_row(conn: &Connection, hash: &ChunkHash) -> Result<bool, VolumeError> {
    Ok(conn.execute(
        "DELETE FROM cache WHERE hash = ?1 AND dirty = 0",
        [&hash.as_bytes()[..]],
    )? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema before frozen maps were blobs, with one volume (head gen 1),
    /// checkpoint 1 (gen 2, shipped) and shipped head snapshot 4 (gen 3).
    const OLD_SCHEMA: &str = "
        CREATE TABLE volumes (name TEXT PRIMARY KEY, size INTEGER NOT NULL,
            chunk_size INTEGER NOT NULL, head INTEGER NOT NULL,
            snapshot_seq INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE checkpoints (volume TEXT NOT NULL, id INTEGER NOT NULL,
            gen INTEGER NOT NULL, shipped INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (volume, id));
        CREATE TABLE shipped (volume TEXT NOT NULL, seq INTEGER NOT NULL,
            gen INTEGER NOT NULL, PRIMARY KEY (volume, seq));
        CREATE TABLE generations (gen INTEGER PRIMARY KEY AUTOINCREMENT, volume TEXT NOT NULL);
        CREATE TABLE map (gen INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
            PRIMARY KEY (gen, idx)) WITHOUT ROWID;
        INSERT INTO generations (volume) VALUES ('v'), ('v'), ('v');
        INSERT INTO volumes VALUES ('v', 4096, 1024, 1, 4);
        INSERT INTO checkpoints VALUES ('v', 1, 2, 1);
        INSERT INTO shipped VALUES ('v', 4, 3);
    ";

    #[test]
    fn row_copies_of_an_old_database_become_blobs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("volumes.db");
        let (a, b) = (ChunkHash::of(b"a"), ChunkHash::of(b"b"));
        {
            let conn = Connection::open(&path).expect("old db");
            conn.execute_batch(OLD_SCHEMA).expect("old schema");
            for (gen, idx, h) in [(1, 0, a), (2, 0, a), (2, 3, b), (3, 1, b)] {
                conn.execute(
                    "INSERT INTO map VALUES (?1, ?2, ?3)",
                    params![gen, idx, &h.as_bytes()[..]],
                )
                .expect("row");
            }
        }
        let conn = open(&path).expect("opens and migrates");
        let (shipped, blob): (i64, Vec<u8>) = conn
            .query_row(
                "SELECT shipped, map FROM checkpoint_maps WHERE volume = 'v' AND id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("checkpoint 1 is a blob");
        let snap = MapSnapshot::decode(&blob).expect("valid snapshot");
        assert_eq!(shipped, 1);
        assert_eq!((snap.size, snap.chunk_size), (4096, 1024));
        assert_eq!(snap.entries, vec![(0, a), (3, b)]);
        let blob: Vec<u8> = conn
            .query_row(
                "SELECT map FROM shipped_maps WHERE volume = 'v' AND seq = 4",
                [],
                |r| r.get(0),
            )
            .expect("shipped head 4 is a blob");
        assert_eq!(
            MapSnapshot::decode(&blob).expect("valid").entries,
            vec![(1, b)]
        );
        assert_eq!(entries(&conn, 1).expect("head rows"), vec![(0, a)]);
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM map", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 1, "only the head keeps rows");
        let old: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('checkpoints', 'shipped')",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(old, 0, "the old tables are gone");
        drop(conn);
        open(&path).expect("opening again is a no-op");
    }
}
