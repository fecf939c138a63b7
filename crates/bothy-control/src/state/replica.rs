//! Replication of the daemon's state database to the object store.
//!
//! The database is small (kilobytes), so rather than streaming its WAL the
//! replica ships whole, immutable snapshots: `state/<20-digit seq>.db`, a
//! consistent copy made with `VACUUM INTO` while holding the connection's
//! lock. The newest [`KEEP`] are kept; older ones are deleted after each
//! upload. A daemon started on an empty data dir calls
//! [`StateReplica::fetch_latest`] before opening `state.db`.
//!
//! Why a snapshot is never seen half-written: each is uploaded with a single
//! PUT, which S3 makes visible atomically (all or nothing); the local-directory
//! store writes a temporary file and renames it. A shipped snapshot is never
//! overwritten: each ship takes a new sequence number (only the number of a
//! PUT that reported failure is reused, by a PUT that replaces it whole). As
//! a further guard against a damaged object, [`StateReplica::fetch_latest`]
//! checks every candidate with SQLite's `quick_check` and falls back to the
//! next older one.
//!
//! One daemon per object store: sequence numbers are counted in memory after
//! one listing, so two writers would overwrite each other's snapshots.
//!
//! Store calls are retried with a [`RetryPolicy`]; an error that outlasts it
//! is returned and nothing is lost: the next `ship` carries the same changes.
//! Ordering is the caller's: ship state that names a volume checkpoint only
//! after that volume's `sync`, or a recovered daemon may name a checkpoint
//! the store does not hold.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bothy_store::{ChunkStore, RetryPolicy, StoreError};
use bytes::Bytes;
use object_store::ObjectStore;
use rusqlite::Connection;

/// Snapshots kept in the store: the newest plus two older ones, so a
/// snapshot that turns out damaged still leaves a recent good one.
pub const KEEP: usize = 3;
const PREFIX: &str = "state";
/// Every SQLite database file starts with this.
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("copying the state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("a state replication task failed: {0}")]
    Task(String),
    #[error("the object store holds state snapshots ({keys}) but none is a valid database; refusing to start from an empty state")]
    NoValidSnapshot { keys: String },
}

/// Ships and fetches state snapshots; cheap to share behind an `Arc`.
pub struct StateReplica {
    /// Only its named-object calls are used: they bring the retry policy
    /// and the transient/permanent error mapping of the volume layer.
    store: ChunkStore,
    /// Counts `ship` calls, so a call can tell whether a snapshot taken by
    /// another call already includes everything it committed.
    requests: AtomicU64,
    /// Held for a whole ship: one at a time.
    state: tokio::sync::Mutex<ShipState>,
    /// The connection's change count (`total_changes`) in the newest copy
    /// known to be in the store: every change counted up to it is there.
    shipped_changes: std::sync::Mutex<Option<u64>>,
}

#[derive(Default)]
struct ShipState {
    /// Sequence numbers present in the store; `None` until listed once.
    known: Option<BTreeSet<u64>>,
    /// Every `ship` call with a ticket up to this one is covered by `last`.
    covered: u64,
    last: Option<u64>,
    /// BLAKE3 of the `last` snapshot: an unchanged database is not uploaded
    /// again, so a periodic ship costs a local copy and no store traffic.
    last_hash: Option<blake3::Hash>,
}

impl StateReplica {
    /// Store calls are retried with [`RetryPolicy::default`] (about 11 s of
    /// backoff before an error surfaces).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self::with_retry(store, RetryPolicy::default())
    }

    pub fn with_retry(store: Arc<dyn ObjectStore>, retry: RetryPolicy) -> Self {
        Self {
            store: ChunkStore::new(Arc::new(bothy_store::ObjectBlobs::new(store)), retry),
            requests: AtomicU64::new(0),
            state: tokio::sync::Mutex::new(ShipState::default()),
            shipped_changes: std::sync::Mutex::new(None),
        }
    }

    /// Uploads a consistent copy of the live database as the next snapshot
    /// and prunes old ones; returns the sequence number of a snapshot that
    /// contains every change committed before the call. Concurrent calls
    /// run one at a time, and a call that waited behind a snapshot taken
    /// after it started returns that one instead of shipping again. A copy
    /// identical to the last one shipped is not uploaded (its number is
    /// returned), so calling this on a timer is cheap.
    ///
    /// Takes the `Arc` (rather than `&Mutex`) because the copy runs on the
    /// blocking pool, which needs an owned handle.
    pub async fn ship(&self, conn: &Arc<Mutex<Connection>>) -> Result<u64, ReplicaError> {
        let ticket = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let mut st = self.state.lock().await;
        if let Some(last) = st.last.filter(|_| st.covered >= ticket) {
            return Ok(last);
        }
        if st.known.is_none() {
            st.known = Some(self.list().await?.into_iter().map(|(s, _)| s).collect());
        }
        let seq = st
            .known
            .as_ref()
            .and_then(|k| k.last())
            .map_or(1, |s| s + 1);
        // Callers up to here committed before the copy starts, so it has
        // their changes.
        let covers = self.requests.load(Ordering::SeqCst);
        let conn = Arc::clone(conn);
        let (body, changes) = tokio::task::spawn_blocking(move || copy_database(&conn))
            .await
            .map_err(|e| ReplicaError::Task(e.to_string()))??;
        let hash = blake3::hash(&body);
        if let (Some(last), true) = (st.last, st.last_hash == Some(hash)) {
            st.covered = covers;
            self.note_shipped(changes);
            return Ok(last);
        }
        self.store.put_object(&key(seq), body).await?;
        self.note_shipped(changes);
        st.known.get_or_insert_with(BTreeSet::new).insert(seq);
        st.covered = covers;
        st.last = Some(seq);
        st.last_hash = Some(hash);
        self.prune(&mut st).await;
        Ok(seq)
    }

    /// Deletes all but the newest [`KEEP`] snapshots. The new snapshot is
    /// already safe, so a failed delete only leaves garbage that the next
    /// ship retries.
    async fn prune(&self, st: &mut ShipState) {
        let Some(known) = st.known.as_mut() else {
            return;
        };
        let old: Vec<u64> = known.iter().rev().skip(KEEP).copied().collect();
        for seq in old {
            // Deleting an absent object succeeds.
            match self.store.delete_object(&key(seq)).await {
                Ok(()) => {
                    known.remove(&seq);
                }
                Err(e) => {
                    tracing::warn!(seq, error = %e, "deleting an old state snapshot failed; will retry");
                }
            }
        }
    }

    /// If the store holds snapshots, writes the newest valid one to `dest`
    /// (temp file, fsync, rename, fsync of the directory) and returns true;
    /// false if there are none. Stale `-wal`/`-shm` files beside `dest` are
    /// removed: SQLite would otherwise replay them onto the fetched copy.
    pub async fn fetch_latest(&self, dest: &Path) -> Result<bool, ReplicaError> {
        let mut listed = self.list().await?;
        {
            let mut st = self.state.lock().await;
            let known = st.known.get_or_insert_with(BTreeSet::new);
            known.extend(listed.iter().map(|(s, _)| *s));
        }
        if listed.is_empty() {
            return Ok(false);
        }
        listed.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        for (seq, path) in &listed {
            let body = match self.store.get_object(path).await {
                Ok(body) => body,
                // Pruned between listing and fetching: a newer one exists.
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let dest = dest.to_path_buf();
            let installed = tokio::task::spawn_blocking(move || install(&body, &dest))
                .await
                .map_err(|e| ReplicaError::Task(e.to_string()))??;
            if installed {
                tracing::info!(seq, "restored the state database from the object store");
                return Ok(true);
            }
            tracing::warn!(
                seq,
                "state snapshot in the object store is damaged; trying an older one"
            );
        }
        Err(ReplicaError::NoValidSnapshot {
            keys: listed
                .iter()
                .map(|(_, p)| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    fn note_shipped(&self, changes: u64) {
        let mut shipped = self
            .shipped_changes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *shipped = Some(shipped.map_or(changes, |s| s.max(changes)));
    }

    /// The connection's change count (`total_changes`) that the newest
    /// snapshot in the store covers; `None` before the first ship of this
    /// process.
    pub fn shipped_changes(&self) -> Option<u64> {
        *self
            .shipped_changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Snapshots in the store, by sequence number. Other names under
    /// `state/` are ignored, never guessed at.
    async fn list(&self) -> Result<Vec<(u64, String)>, ReplicaError> {
        let keys = self.store.list_objects(&format!("{PREFIX}/")).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| parse_key(&k).map(|s| (s, k)))
            .collect())
    }
}

fn key(seq: u64) -> String {
    format!("{PREFIX}/{seq:020}.db")
}

fn parse_key(key: &str) -> Option<u64> {
    let digits = key
        .strip_prefix(PREFIX)?
        .strip_prefix('/')?
        .strip_suffix(".db")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A consistent, self-contained copy of the database (rollback-journal mode,
/// so it opens without companion files), and the connection's change count
/// it contains.
fn copy_database(conn: &Mutex<Connection>) -> Result<(Bytes, u64), ReplicaError> {
    let dir = tempfile::Builder::new().prefix("bothy-state-").tempdir()?;
    let copy = dir.path().join("state.db");
    let copy_str = copy
        .to_str()
        .ok_or_else(|| ReplicaError::Task("temporary path is not UTF-8".into()))?;
    let changes = {
        // A poisoned lock still guards a consistent database: SQLite rolls
        // back any transaction a panicking holder left open.
        let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        guard.execute("VACUUM INTO ?1", [copy_str])?;
        guard.total_changes()
    };
    let c = Connection::open(&copy)?;
    // journal_mode answers with a row, so it cannot go through execute.
    let _mode: String = c.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    drop(c);
    Ok((Bytes::from(std::fs::read(&copy)?), changes))
}

/// Writes `body` to `dest` atomically if it is a sound SQLite database;
/// returns false (leaving `dest` alone) if it is not.
fn install(body: &[u8], dest: &Path) -> Result<bool, ReplicaError> {
    if !body.starts_with(SQLITE_MAGIC) {
        return Ok(false);
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".state-fetch-")
        .tempfile_in(&dir)?;
    tmp.write_all(body)?;
    tmp.as_file().sync_all()?;
    if !is_sound(tmp.path()) {
        return Ok(false);
    }
    for suffix in ["-wal", "-shm"] {
        let mut stale = dest.as_os_str().to_owned();
        stale.push(suffix);
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    tmp.persist(dest).map_err(|e| e.error)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(true)
}

fn is_sound(path: &Path) -> bool {
    let check = || -> Result<bool, rusqlite::Error> {
        let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let verdict: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        Ok(verdict == "ok")
    };
    check().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bothy_store::testing::S3Server;
    use object_store::local::LocalFileSystem;
    use object_store::path::Path as ObjectPath;

    /// A live database like the daemon's: WAL mode, one table, one row.
    fn live_db(dir: &Path) -> Arc<Mutex<Connection>> {
        let c = Connection::open(dir.join("state.db")).unwrap();
        let _: String = c
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        c.execute_batch("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL);")
            .unwrap();
        set(&c, "v0");
        Arc::new(Mutex::new(c))
    }

    fn set(c: &Connection, v: &str) {
        c.execute("INSERT OR REPLACE INTO kv (k, v) VALUES ('box', ?1)", [v])
            .unwrap();
    }

    fn update(conn: &Arc<Mutex<Connection>>, v: &str) {
        set(&conn.lock().unwrap(), v);
    }

    fn value_in(path: &Path) -> String {
        let c = Connection::open(path).unwrap();
        c.query_row("SELECT v FROM kv WHERE k = 'box'", [], |r| r.get(0))
            .unwrap()
    }

    async fn seqs(store: &Arc<dyn ObjectStore>) -> Vec<u64> {
        let mut s: Vec<u64> = StateReplica::new(store.clone())
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        s.sort();
        s
    }

    fn local_store(dir: &Path) -> Arc<dyn ObjectStore> {
        std::fs::create_dir_all(dir).unwrap();
        Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap())
    }

    /// The whole contract on one store: ship, fetch the newest, prune,
    /// continue numbering after a restart.
    async fn ship_fetch_prune(store: Arc<dyn ObjectStore>) {
        let work = tempfile::tempdir().unwrap();
        let conn = live_db(work.path());
        let replica = StateReplica::new(store.clone());
        assert_eq!(replica.ship(&conn).await.unwrap(), 1);
        assert_eq!(
            replica.ship(&conn).await.unwrap(),
            1,
            "unchanged: not shipped again"
        );
        update(&conn, "v1");
        assert_eq!(replica.ship(&conn).await.unwrap(), 2);

        let fresh = tempfile::tempdir().unwrap();
        let dest = fresh.path().join("state.db");
        let other = StateReplica::new(store.clone());
        assert!(other.fetch_latest(&dest).await.unwrap());
        assert_eq!(value_in(&dest), "v1");

        for v in ["v2", "v3", "v4"] {
            update(&conn, v);
            replica.ship(&conn).await.unwrap();
        }
        assert_eq!(
            seqs(&store).await,
            vec![3, 4, 5],
            "only the newest {KEEP} are kept"
        );
        assert!(other.fetch_latest(&dest).await.unwrap());
        assert_eq!(value_in(&dest), "v4");

        // A restarted daemon continues the numbering from the store.
        let restarted = StateReplica::new(store.clone());
        update(&conn, "v5");
        assert_eq!(restarted.ship(&conn).await.unwrap(), 6);
        assert_eq!(seqs(&store).await, vec![4, 5, 6]);
    }

    #[tokio::test]
    async fn replica_ships_fetches_and_prunes_on_a_local_store() {
        let objects = tempfile::tempdir().unwrap();
        ship_fetch_prune(local_store(objects.path())).await;
    }

    #[tokio::test]
    async fn replica_ships_fetches_and_prunes_on_s3() {
        let server = S3Server::start().expect("moto server (run scripts/test.sh)");
        ship_fetch_prune(server.object_store().unwrap()).await;
        assert_eq!(server.count_objects("state").unwrap(), KEEP);
    }

    #[tokio::test]
    async fn replica_fetch_from_an_empty_store_says_so() {
        let objects = tempfile::tempdir().unwrap();
        let store = local_store(objects.path());
        let dest_dir = tempfile::tempdir().unwrap();
        let dest = dest_dir.path().join("state.db");
        assert!(!StateReplica::new(store).fetch_latest(&dest).await.unwrap());
        assert!(!dest.exists());
    }

    #[tokio::test]
    async fn replica_skips_damaged_and_foreign_objects() {
        let objects = tempfile::tempdir().unwrap();
        let store = local_store(objects.path());
        let work = tempfile::tempdir().unwrap();
        let conn = live_db(work.path());
        let replica = StateReplica::new(store.clone());
        update(&conn, "good");
        assert_eq!(replica.ship(&conn).await.unwrap(), 1);
        // Damage the way a broken writer or a bad disk would: a newer
        // snapshot that is truncated, and one that is not SQLite at all.
        let good = store
            .get(&ObjectPath::from(key(1)))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let half = good.slice(..good.len() / 2);
        store
            .put(&ObjectPath::from(key(2)), half.into())
            .await
            .unwrap();
        store
            .put(
                &ObjectPath::from(key(3)),
                Bytes::from_static(b"not a database").into(),
            )
            .await
            .unwrap();
        store
            .put(
                &ObjectPath::from("state/notes.txt"),
                Bytes::from_static(b"x").into(),
            )
            .await
            .unwrap();
        store
            .put(
                &ObjectPath::from("state/99.db"),
                Bytes::from_static(b"x").into(),
            )
            .await
            .unwrap();

        let fresh = tempfile::tempdir().unwrap();
        let dest = fresh.path().join("state.db");
        // Stale WAL files of a previous database must not leak into it.
        std::fs::write(fresh.path().join("state.db-wal"), b"stale").unwrap();
        assert!(StateReplica::new(store.clone())
            .fetch_latest(&dest)
            .await
            .unwrap());
        assert_eq!(value_in(&dest), "good");
        assert!(!fresh.path().join("state.db-wal").exists());
        let leftovers: Vec<_> = std::fs::read_dir(fresh.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".state-fetch-"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

        // Only damaged snapshots: an error, never an empty start.
        store.delete(&ObjectPath::from(key(1))).await.unwrap();
        let err = StateReplica::new(store.clone())
            .fetch_latest(&dest)
            .await
            .unwrap_err();
        assert!(matches!(err, ReplicaError::NoValidSnapshot { .. }), "{err}");
        // The next ship numbers past the damaged ones, never overwrites them.
        assert_eq!(StateReplica::new(store).ship(&conn).await.unwrap(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replica_concurrent_ships_coalesce_and_lose_nothing() {
        let objects = tempfile::tempdir().unwrap();
        let store = local_store(objects.path());
        let work = tempfile::tempdir().unwrap();
        let conn = live_db(work.path());
        let replica = Arc::new(StateReplica::new(store.clone()));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (replica, conn) = (replica.clone(), conn.clone());
            tasks.push(tokio::spawn(async move {
                update(&conn, &format!("v{i}"));
                replica.ship(&conn).await.unwrap()
            }));
        }
        let mut max = 0;
        for t in tasks {
            let seq = t.await.unwrap();
            max = max.max(seq);
        }
        assert!(max <= 16);
        // The newest snapshot has the last committed value.
        let last = conn
            .lock()
            .unwrap()
            .query_row("SELECT v FROM kv WHERE k = 'box'", [], |r| {
                r.get::<_, String>(0)
            })
            .unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let dest = fresh.path().join("state.db");
        assert!(StateReplica::new(store.clone())
            .fetch_latest(&dest)
            .await
            .unwrap());
        assert_eq!(value_in(&dest), last);
        assert!(seqs(&store).await.len() <= KEEP);
    }

    /// Calls that queue behind a ship in progress share one later snapshot:
    /// three calls, at most two uploads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replica_calls_queued_behind_a_ship_share_the_next_one() {
        let objects = tempfile::tempdir().unwrap();
        let store = local_store(objects.path());
        let work = tempfile::tempdir().unwrap();
        let conn = live_db(work.path());
        let replica = Arc::new(StateReplica::new(store.clone()));

        // Hold the database lock on a plain thread so the first ship stalls
        // in its copy while the others queue.
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let _guard = conn.lock().unwrap();
                locked_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
        };
        locked_rx.recv().unwrap();
        let ship = |replica: Arc<StateReplica>, conn: Arc<Mutex<Connection>>| {
            tokio::spawn(async move { replica.ship(&conn).await.unwrap() })
        };
        let first = ship(replica.clone(), conn.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while replica.state.try_lock().is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "first ship never started"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let second = ship(replica.clone(), conn.clone());
        let third = ship(replica.clone(), conn.clone());
        while replica.requests.load(Ordering::SeqCst) < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "queued ships never started"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        let seqs_got = [
            first.await.unwrap(),
            second.await.unwrap(),
            third.await.unwrap(),
        ];
        assert_eq!(seqs_got[0], 1);
        assert!(seqs_got.iter().all(|&s| s <= 2), "got {seqs_got:?}");
        assert!(seqs(&store).await.len() <= 2, "at most two uploads");
    }

    #[test]
    fn replica_keys_round_trip() {
        assert_eq!(key(7), "state/00000000000000000007.db");
        assert_eq!(parse_key(&key(7)), Some(7));
        assert_eq!(parse_key("state/7.db"), None);
        assert_eq!(parse_key("state/0000000000000000000x.db"), None);
        assert_eq!(parse_key("maps/00000000000000000007.db"), None);
    }
}
