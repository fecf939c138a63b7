//! Bringing the control layer up on a data dir: the state database (fetched
//! from the object store when the data dir is empty), the admin token, the
//! runtime, background jobs and recovery of the boxes.
//!
//! Files in the data dir (mode 0700; the runtime adds others' search bit so
//! boxes reach their root filesystems): `state.db` (SQLite), `admin-token` (the
//! admin token of org `default`, made on first start, mode 0600); the runtime
//! owns `boxes/`, `run/` and `storage/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bothy_runtime::{Runtime, RuntimeConfig};

use crate::boxes::{Boxes, RealBoxes};
use crate::datadir;
use crate::jobs::GC_PERIOD;
use crate::state::replica::{ReplicaError, StateReplica};
use crate::state::{Store, StoreError};
use crate::time::now;
use crate::tokens::{hash_token, new_token};
use crate::Control;

/// The state database's file in the data dir.
pub const STATE_DB: &str = "state.db";

/// Where and how the control layer keeps its boxes.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Default `/var/lib/bothy`.
    pub data_dir: PathBuf,
    /// Shared base-image cache.
    pub image_dir: PathBuf,
    /// The running bothy binary (bind-mounted into boxes as their init, and
    /// the storage process's program).
    pub exe: PathBuf,
    /// Object store URL; `None` = `DATA_DIR/objects`.
    pub object_store: Option<String>,
    /// Local chunk cache budget.
    pub cache_bytes: u64,
}

/// Why the control layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] bothy_runtime::RuntimeError),
    #[error("object store: {0}")]
    ObjectStore(String),
    #[error("state replica: {0}")]
    Replica(#[from] ReplicaError),
}

/// Opens the control layer over real boxes on `cfg.data_dir`, starts its
/// jobs and, in the background, the recovery of every box (the API can
/// answer meanwhile: boxes not yet started show as cold and wake on use).
pub async fn open(cfg: ControlConfig) -> Result<Control<RealBoxes>, OpenError> {
    let data_dir = datadir::prepare(&cfg.data_dir).map_err(|source| OpenError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let lock = datadir::lock_daemon(&data_dir).map_err(|source| OpenError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let url = bothy_runtime::object_store_url(&data_dir, cfg.object_store.as_deref());
    let objects = url
        .parse::<bothy_store::StoreUrl>()
        .and_then(|u| u.open())
        .map_err(|e| OpenError::ObjectStore(format!("{url}: {e}")))?;
    let replica = Arc::new(StateReplica::new(objects));
    // A host that lost its disk (or a new host) starts from the state the
    // object store holds; its boxes' disks come back from there too.
    let state = data_dir.join(STATE_DB);
    let recovered = !state.exists() && replica.fetch_latest(&state).await?;
    if recovered {
        tracing::info!(store = %url, "empty data dir: state restored from the object store");
    }
    let runtime = Runtime::new(RuntimeConfig {
        data_dir: data_dir.clone(),
        instance: datadir::instance_id(&data_dir),
        image_dir: cfg.image_dir.clone(),
        exe: cfg.exe.clone(),
        object_store: Some(url),
        cache_bytes: cfg.cache_bytes,
        storage: bothy_runtime::StorageLaunch::Process,
    })
    .await?;
    open_with(
        &data_dir,
        RealBoxes::new(runtime),
        Some(replica),
        recovered,
        Some(lock),
    )
    .await
}

/// The control layer over any [`Boxes`] with its state in `data_dir`: opens
/// the state database, makes the admin token on first start, starts the
/// jobs and the recovery of every box.
pub async fn open_with<B: Boxes>(
    data_dir: &Path,
    boxes: B,
    replica: Option<Arc<StateReplica>>,
    recovered: bool,
    lock: Option<nix::fcntl::Flock<std::fs::File>>,
) -> Result<Control<B>, OpenError> {
    let store = Store::open(&data_dir.join(STATE_DB))?;
    bootstrap_admin(&store, data_dir, recovered).await?;
    let control = Control::holding(store, boxes, lock);
    // Before any box starts (recovery, or a wake on use), so none runs
    // without its rules.
    if let Err(e) = control.load_network_policies().await {
        tracing::error!(error = %e, "loading network policies failed");
    }
    // The jobs end by themselves at shutdown.
    drop(control.start_jobs(GC_PERIOD, replica));
    let recovering = control.clone();
    tokio::spawn(async move {
        if let Err(e) = recovering.recover().await {
            tracing::error!(error = %e, "recovery after restart failed");
        }
        // After recovery, which adopts or rolls back the pooled boxes a
        // previous run left, so the pool is counted once they are settled.
        recovering.pool_job().await;
    });
    Ok(control)
}

/// First start: the `default` org and an admin token, written to the data dir.
/// A start that restored the state from the object store has tokens but no
/// token file: it gets a new admin token (the old tokens keep working).
async fn bootstrap_admin(store: &Store, data_dir: &Path, recovered: bool) -> Result<(), OpenError> {
    let token = new_token();
    let path = data_dir.join(datadir::ADMIN_TOKEN_FILE);
    let write_file = || {
        datadir::write_private_atomic(&path, format!("{token}\n").as_bytes()).map_err(|source| {
            OpenError::DataDir {
                path: path.clone(),
                source,
            }
        })
    };
    // The file is written before the hash is committed: a crash in between
    // leaves an unused file that the next start overwrites.
    if store.has_tokens().await? {
        if recovered && !path.exists() {
            write_file()?;
            store.add_admin_token(hash_token(&token), now()).await?;
            tracing::info!(path = %path.display(), "state restored: wrote a new admin token");
        }
        return Ok(());
    }
    write_file()?;
    if store.bootstrap(hash_token(&token), now()).await? {
        tracing::info!(path = %path.display(), "created org `default` and an admin token");
    }
    Ok(())
}
