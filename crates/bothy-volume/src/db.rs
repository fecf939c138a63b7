//! The SQLite block map and cache index.
//!
//! Schema: a volume's live map is generation `volumes.head`; a checkpoint is
//! another generation whose rows are a frozen copy. A row (gen, idx, hash)
//! means chunk `idx` holds the chunk `hash`; no row means zeros.

use rusqlite::{params, Connection, OptionalExtension};

use bothy_store::ChunkHash;

use crate::VolumeError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    head INTEGER NOT NULL,
    snapshot_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS checkpoints (
    volume TEXT NOT NULL,
    id INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    shipped INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (volume, id)
);
CREATE TABLE IF NOT EXISTS shipped (
    volume TEXT NOT NULL,
    seq INTEGER NOT NULL,
    gen INTEGER NOT NULL,
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
    last_used INTEGER NOT NULL
) WITHOUT ROWID;
";

pub fn open(path: &std::path::Path) -> Result<Connection, VolumeError> {
    let conn = Connection::open(path)?;
    // WAL + FULL: a committed transaction survives power loss, which is what
    // flush() promises.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
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

pub fn copy_map(conn: &Connection, from: i64, to: i64) -> Result<(), VolumeError> {
    conn.execute(
        "INSERT INTO map (gen, idx, hash) SELECT ?2, idx, hash FROM map WHERE gen = ?1",
        params![from, to],
    )?;
    Ok(())
}

pub fn lookup(conn: &Connection, gen: i64, idx: u64) -> Result<Option<ChunkHash>, VolumeError> {
    let hash: Option<Vec<u8>> = conn
        .prepare_cached("SELECT hash FROM map WHERE gen = ?1 AND idx = ?2")?
        .query_row(params![gen, idx as i64], |r| r.get(0))
        .optional()?;
    hash.map(|h| to_hash(&h)).transpose()
}

pub fn entries(conn: &Connection, gen: i64) -> Result<Vec<(u64, ChunkHash)>, VolumeError> {
    let mut stmt = conn.prepare("SELECT idx, hash FROM map WHERE gen = ?1 ORDER BY idx")?;
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
