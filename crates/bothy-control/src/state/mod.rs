//! The daemon's durable state: organisations, tokens and sprites in SQLite.
//!
//! WAL with `synchronous=FULL`, so that a create or destroy acknowledged to a
//! client survives a SIGKILL of the daemon or a power cut. SQLite calls block, so
//! they run on tokio's blocking pool through [`Store::run`].

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, Row};

mod checkpoints;
mod policies;
pub mod pool;
mod quotas;
pub mod replica;
mod schema;
pub mod sleep;
mod tokens;

pub use checkpoints::CheckpointRow;
pub use quotas::{Quota, Usage};
pub use tokens::{new_token_id, NewToken, Revoked, TokenRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A sprite of that name already exists in the organisation.
    #[error("already exists")]
    Conflict,
    #[error("the database was written by a newer bothy (schema {0}); upgrade bothy")]
    TooNew(i64),
    #[error("a database task failed: {0}")]
    Task(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Lifecycle of a sprite row; see the crash-safety notes in `lifecycle.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    Creating,
    Ready,
    Destroying,
}

impl RowState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Ready => "ready",
            Self::Destroying => "destroying",
        }
    }
    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "creating" => Ok(Self::Creating),
            "ready" => Ok(Self::Ready),
            "destroying" => Ok(Self::Destroying),
            other => Err(StoreError::Corrupt(format!(
                "unknown sprite state {other:?}"
            ))),
        }
    }
}

/// One sprite as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SpriteRow {
    pub id: String,
    pub org: String,
    pub name: String,
    pub ram_mb: u64,
    pub cpus: u32,
    pub storage_gb: u64,
    pub url_auth: String,
    pub url_private_access: Option<String>,
    pub labels: Vec<String>,
    pub state: RowState,
    pub created_at: String,
    pub updated_at: String,
    pub last_running_at: Option<String>,
    /// Containers inside the box allowed (user namespaces and mounts).
    pub nesting: bool,
    /// The memory limit set by the resources policy, over `ram_mb`.
    pub memory_policy_mb: Option<u64>,
}

impl SpriteRow {
    /// The memory limit the box runs with.
    pub fn memory_mb(&self) -> u64 {
        self.memory_policy_mb.unwrap_or(self.ram_mb)
    }
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub org: String,
    pub is_admin: bool,
    /// A token made for an agent: what it may see and do.
    pub limits: Option<bothy_api::TokenLimits>,
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

const SPRITE_COLUMNS: &str = "id, org, name, ram_mb, cpus, storage_gb, url_auth, \
     url_private_access, labels, state, created_at, updated_at, last_running_at, nesting, memory_policy_mb";

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A database that lives as long as the handle (tests, tools).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::prepare(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The connection, for whole-database copies (state replication).
    pub fn connection(&self) -> &Arc<Mutex<Connection>> {
        &self.conn
    }

    /// Rows changed through this connection since it was opened: a cheap
    /// way to tell whether anything was written.
    pub fn total_changes(&self) -> u64 {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .total_changes()
    }

    /// Runs `f` on the blocking pool with the connection.
    pub async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite half-written
            // (transactions roll back), so a poisoned lock is still usable.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    pub async fn insert_sprite(&self, row: SpriteRow) -> Result<(), StoreError> {
        self.run(move |c| {
            let labels = labels_json(&row.labels)?;
            let res = c.execute(
                &format!("INSERT INTO sprites ({SPRITE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
                params![
                    row.id,
                    row.org,
                    row.name,
                    row.ram_mb,
                    row.cpus,
                    row.storage_gb,
                    row.url_auth,
                    row.url_private_access,
                    labels,
                    row.state.as_str(),
                    row.created_at,
                    row.updated_at,
                    row.last_running_at,
                    row.nesting,
                    row.memory_policy_mb,
                ],
            );
            match res {
                Ok(_) => Ok(()),
                // Only a taken name is a conflict; another constraint (an
                // unknown organisation) is a bug to report as it is.
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    Err(StoreError::Conflict)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    pub async fn sprite(&self, org: String, name: String) -> Result<Option<SpriteRow>, StoreError> {
        self.run(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {SPRITE_COLUMNS} FROM sprites WHERE org = ?1 AND name = ?2"
            ))?;
            let mut rows = st.query(params![org, name])?;
            match rows.next()? {
                Some(r) => Ok(Some(sprite_from_row(r)?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// Up to `limit` sprites of `org` whose name starts with `prefix` and sorts
    /// after `after`, by name.
    pub async fn list_sprites(
        &self,
        org: String,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<SpriteRow>, StoreError> {
        self.run(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {SPRITE_COLUMNS} FROM sprites
                 WHERE org = ?1 AND substr(name, 1, length(?2)) = ?2 AND name > ?3
                 ORDER BY name LIMIT ?4"
            ))?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut rows = st.query(params![org, prefix, after.unwrap_or_default(), limit])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(sprite_from_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn sprite_by_id(&self, id: String) -> Result<Option<SpriteRow>, StoreError> {
        self.run(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {SPRITE_COLUMNS} FROM sprites WHERE id = ?1"
            ))?;
            let mut rows = st.query([id])?;
            match rows.next()? {
                Some(r) => Ok(Some(sprite_from_row(r)?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// Every sprite of every org (for recovery and shutdown).
    pub async fn all_sprites(&self) -> Result<Vec<SpriteRow>, StoreError> {
        self.run(|c| {
            let mut st = c.prepare(&format!("SELECT {SPRITE_COLUMNS} FROM sprites ORDER BY id"))?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(sprite_from_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    /// Ids of every sprite of `org` (for the running/cold counts).
    pub async fn sprite_ids(&self, org: String) -> Result<Vec<String>, StoreError> {
        self.run(move |c| {
            let mut st = c.prepare("SELECT id FROM sprites WHERE org = ?1")?;
            let ids = st
                .query_map([org], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(ids)
        })
        .await
    }

    pub async fn set_state(
        &self,
        id: String,
        state: RowState,
        now: String,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "UPDATE sprites SET state = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, state.as_str(), now],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn mark_running(&self, id: String, now: String) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "UPDATE sprites SET last_running_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            Ok(())
        })
        .await
    }

    /// Sets (or with `None` clears) the box's resources-policy memory limit.
    pub async fn set_memory_policy(
        &self,
        id: String,
        mb: Option<u64>,
        now: String,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "UPDATE sprites SET memory_policy_mb = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, mb, now],
            )?;
            Ok(())
        })
        .await
    }

    /// Applies a partial update; `None` leaves a field as it is.
    pub async fn update_sprite(
        &self,
        id: String,
        url: Option<(String, Option<String>)>,
        labels: Option<Vec<String>>,
        now: String,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            if let Some((auth, private_access)) = url {
                tx.execute(
                    "UPDATE sprites SET url_auth = ?2, url_private_access = ?3 WHERE id = ?1",
                    params![id, auth, private_access],
                )?;
            }
            if let Some(labels) = labels {
                tx.execute(
                    "UPDATE sprites SET labels = ?2 WHERE id = ?1",
                    params![id, labels_json(&labels)?],
                )?;
            }
            tx.execute(
                "UPDATE sprites SET updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn delete_sprite(&self, id: String) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute("DELETE FROM sprites WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }
}

fn labels_json(labels: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(labels).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn sprite_from_row(r: &Row<'_>) -> Result<SpriteRow, StoreError> {
    let labels: String = r.get(8)?;
    let state: String = r.get(9)?;
    Ok(SpriteRow {
        id: r.get(0)?,
        org: r.get(1)?,
        name: r.get(2)?,
        ram_mb: r.get(3)?,
        cpus: r.get(4)?,
        storage_gb: r.get(5)?,
        url_auth: r.get(6)?,
        url_private_access: r.get(7)?,
        labels: serde_json::from_str(&labels)
            .map_err(|e| StoreError::Corrupt(format!("labels of a sprite: {e}")))?,
        state: RowState::parse(&state)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        last_running_at: r.get(12)?,
        nesting: r.get(13)?,
        memory_policy_mb: r.get(14)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn network_policies_are_kept_and_go_with_their_sprite() {
        let path = std::env::temp_dir().join(format!(
            "bothy-state-policy-{}-{}.db",
            std::process::id(),
            rand::random::<u32>()
        ));
        let s = Store::open(&path).expect("open");
        s.bootstrap("hash".into(), "t".into())
            .await
            .expect("bootstrap");
        s.insert_sprite(row("b1", "one")).await.expect("insert");
        assert_eq!(s.network_policy("b1".into()).await.expect("read"), None);
        s.set_network_policy("b1".into(), "{\"rules\":[]}".into())
            .await
            .expect("set");
        s.set_network_policy("b1".into(), "{\"rules\":[1]}".into())
            .await
            .expect("replace");
        assert_eq!(
            s.all_network_policies().await.expect("all"),
            vec![("b1".to_string(), "{\"rules\":[1]}".to_string())]
        );
        s.delete_sprite("b1".into()).await.expect("delete");
        assert!(s.all_network_policies().await.expect("all").is_empty());
        drop(s);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    fn row(id: &str, name: &str) -> SpriteRow {
        SpriteRow {
            id: id.into(),
            org: "default".into(),
            name: name.into(),
            ram_mb: 512,
            cpus: 1,
            storage_gb: 1,
            url_auth: "sprite".into(),
            url_private_access: None,
            labels: vec!["x".into()],
            state: RowState::Creating,
            created_at: "t".into(),
            updated_at: "t".into(),
            last_running_at: None,
            nesting: false,
            memory_policy_mb: None,
        }
    }

    #[tokio::test]
    async fn a_database_of_an_older_bothy_gets_the_new_columns() {
        let path = std::env::temp_dir().join(format!(
            "bothy-state-migration-{}-{}.db",
            std::process::id(),
            rand::random::<u32>()
        ));
        {
            let old = Connection::open(&path).expect("old db");
            old.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (1);
                 CREATE TABLE orgs (name TEXT PRIMARY KEY, created TEXT NOT NULL);
                 INSERT INTO orgs VALUES ('default', 't');
                 CREATE TABLE sprites (
                     id TEXT PRIMARY KEY, org TEXT NOT NULL REFERENCES orgs(name),
                     name TEXT NOT NULL, ram_mb INTEGER NOT NULL, cpus INTEGER NOT NULL,
                     storage_gb INTEGER NOT NULL, url_auth TEXT NOT NULL,
                     url_private_access TEXT, labels TEXT NOT NULL, state TEXT NOT NULL,
                     created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                     last_running_at TEXT, UNIQUE (org, name));
                 INSERT INTO sprites VALUES ('b1', 'default', 'old', 512, 1, 1, 'sprite',
                     NULL, '[]', 'ready', 't', 't', NULL);",
            )
            .expect("old schema");
        }
        let s = Store::open(&path).expect("open an older database");
        let old = s
            .sprite_by_id("b1".into())
            .await
            .expect("read")
            .expect("row");
        assert_eq!(old.name, "old");
        assert!(!old.nesting, "boxes made before nesting existed have none");
        let mut new = row("b2", "new");
        new.nesting = true;
        s.insert_sprite(new).await.expect("insert");
        let new = s
            .sprite_by_id("b2".into())
            .await
            .expect("read")
            .expect("row");
        assert!(new.nesting);
        drop(s);
        // Opening again changes nothing more.
        Store::open(&path).expect("reopen");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test]
    async fn duplicate_names_conflict_and_listing_is_sorted_and_paged() {
        let s = Store::open_in_memory().expect("open");
        assert!(s.bootstrap("h".into(), "t".into()).await.expect("boot"));
        assert!(!s
            .bootstrap("h2".into(), "t".into())
            .await
            .expect("boot again"));
        s.insert_sprite(row("b1", "zeta")).await.expect("insert");
        s.insert_sprite(row("b2", "alpha")).await.expect("insert");
        s.insert_sprite(row("b3", "alps")).await.expect("insert");
        assert!(matches!(
            s.insert_sprite(row("b4", "alpha")).await,
            Err(StoreError::Conflict)
        ));
        let names = |v: Vec<SpriteRow>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
        let all = s
            .list_sprites("default".into(), "".into(), None, 10)
            .await
            .expect("list");
        assert_eq!(names(all), ["alpha", "alps", "zeta"]);
        let al = s
            .list_sprites("default".into(), "al".into(), Some("alpha".into()), 10)
            .await
            .expect("list");
        assert_eq!(names(al), ["alps"]);
        // `%` and `_` are not wildcards in a prefix.
        let pct = s
            .list_sprites("default".into(), "%".into(), None, 10)
            .await
            .expect("list");
        assert!(pct.is_empty());
    }

    #[tokio::test]
    async fn partial_update_keeps_other_fields() {
        let s = Store::open_in_memory().expect("open");
        s.bootstrap("h".into(), "t".into()).await.expect("boot");
        s.insert_sprite(row("b1", "dev")).await.expect("insert");
        s.update_sprite(
            "b1".into(),
            None,
            Some(vec!["a".into(), "b".into()]),
            "t2".into(),
        )
        .await
        .expect("update");
        let r = s
            .sprite("default".into(), "dev".into())
            .await
            .expect("get")
            .expect("row");
        assert_eq!(r.labels, ["a", "b"]);
        assert_eq!(r.url_auth, "sprite");
        assert_eq!(r.updated_at, "t2");
    }
}
