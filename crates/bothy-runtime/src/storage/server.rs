//! The storage process's server: opens the volume storage (one process per
//! storage dir: it holds its lock), serves every box's disk, and answers the
//! daemon on a unix socket in the data dir's private `run/` directory (a box
//! never sees it). One task per connection, one operation at a time per
//! volume, any number of volumes at once: a slow barrier of one box never
//! holds up another box's attach, checkpoint or destroy.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, OwnedMutexGuard};

use super::proto::{self, Answer, Request, WireError};
use super::stack::{abort_stale_connections, Stack};
use crate::dirs::prepare_mount_dir;
use crate::{RuntimeError, MOUNT_ROOT};

/// What a storage process serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The daemon's data dir: volumes in `storage/`, the socket in `run/`.
    pub data_dir: PathBuf,
    /// The daemon's instance id: disks are mounted under
    /// `MOUNT_ROOT/<instance>`.
    pub instance: String,
    /// `file:///dir` or `s3://bucket?...`.
    pub object_store: String,
    pub cache_bytes: u64,
}

/// What the stop signal of [`serve`] means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    /// Exit once no disk is served any more (SIGTERM to the process).
    WhenIdle,
    /// Exit now, whatever is served (an in-process server whose owner goes).
    AtOnce,
}

/// Where the daemon of `data_dir` finds its storage process.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("run").join("storage.sock")
}

/// A short BLAKE3 of an executable, to tell builds apart; empty when it
/// cannot be read.
pub fn build_id(exe: &Path) -> String {
    // Streamed through a small buffer: the binary is tens of MiB (hundreds
    // in a debug build), and reading it whole would set the process's peak
    // memory for good.
    let mut hasher = blake3::Hasher::new();
    std::fs::File::open(exe)
        .and_then(|f| hasher.update_reader(f).map(|_| ()))
        .map(|()| hasher.finalize().to_hex()[..16].to_string())
        .unwrap_or_default()
}

struct Server {
    stack: Arc<Stack>,
    /// One operation per volume at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    build: String,
    exit: watch::Sender<bool>,
    /// Asked to stop while disks were in use: exit once the last is gone.
    exit_when_idle: std::sync::atomic::AtomicBool,
    /// Requests being handled; the process waits for them before exiting.
    active: std::sync::atomic::AtomicUsize,
}

/// Runs the storage process until asked to shut down (or `stop` fires while
/// nothing is served). Opening waits for a previous storage process of the
/// same data dir to let go of its lock.
pub async fn serve(
    cfg: ServerConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    on_stop: OnStop,
) -> Result<(), RuntimeError> {
    let storage = open_storage(&cfg).await?;
    let mount_root = PathBuf::from(MOUNT_ROOT).join(&cfg.instance);
    prepare_mount_dir(&mount_root)?;
    // Anything still mounted there belonged to a storage process that died:
    // its boxes' disks are dead, and must not wedge whoever touches them.
    abort_stale_connections(&mount_root);
    let listener = bind(&socket_path(&cfg.data_dir))?;
    let build = tokio::task::spawn_blocking(|| build_id(Path::new("/proc/self/exe")))
        .await
        .unwrap_or_default();
    let (exit, mut exiting) = watch::channel(false);
    let server = Arc::new(Server {
        stack: Arc::new(Stack::new(storage, mount_root)),
        locks: Mutex::default(),
        build,
        exit,
        exit_when_idle: std::sync::atomic::AtomicBool::new(false),
        active: std::sync::atomic::AtomicUsize::new(0),
    });
    let guard = tokio::spawn(super::space::guard(
        Arc::clone(&server.stack),
        super::space::Places {
            cache: cfg.data_dir.join("storage"),
            store: match cfg.object_store.parse() {
                Ok(bothy_store::StoreUrl::File(dir)) => Some(dir),
                _ => None,
            },
        },
    ));
    tracing::info!(pid = std::process::id(), "storage process serving");
    let mut stop = Box::pin(stop);
    let mut stop_done = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    let server = Arc::clone(&server);
                    tokio::spawn(async move { server.connection(conn).await });
                }
                Err(e) => tracing::warn!(error = %e, "storage socket accept failed"),
            },
            _ = &mut stop, if !stop_done => {
                stop_done = true;
                let served = server.stack.served();
                if served.is_empty() || on_stop == OnStop::AtOnce {
                    break;
                }
                server.exit_when_idle.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::warn!(disks = served.len(), "asked to stop while disks are in use: serving on until the last is detached (stop the boxes with `bothy daemon --stop-boxes`)");
            }
            _ = exiting.changed() => break,
        }
    }
    // Operations under way finish and answer (a shutdown request itself
    // counts until it has answered).
    let deadline = tokio::time::Instant::now() + EXIT_PATIENCE;
    while server.active.load(std::sync::atomic::Ordering::SeqCst) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    guard.abort();
    tracing::info!("storage process exiting");
    // Closing the storage joins its uploader: off the async threads.
    let stack = Arc::clone(&server.stack);
    let mount_root = stack.mount_root().to_path_buf();
    drop(server);
    let _ = tokio::task::spawn_blocking(move || drop(stack)).await;
    // The instance's mount dirs go with their last disk (fails harmlessly
    // while anything is left in them).
    let _ = std::fs::remove_dir(mount_root.join("fuse"));
    let _ = std::fs::remove_dir(&mount_root);
    Ok(())
}

async fn open_storage(cfg: &ServerConfig) -> Result<Arc<bothy_volume::Storage>, RuntimeError> {
    let url = cfg.object_store.clone();
    let parsed: bothy_store::StoreUrl = url
        .parse()
        .map_err(|e| RuntimeError::Failed(format!("--object-store {url}: {e}")))?;
    let dir = cfg.data_dir.join("storage");
    let cache_bytes = cfg.cache_bytes;
    tokio::task::spawn_blocking(move || {
        let objects = parsed
            .open()
            .map_err(|e| RuntimeError::Failed(format!("cannot open object store {url}: {e}")))?;
        let store = bothy_store::ChunkStore::from_object_store(objects);
        let config = bothy_volume::StorageConfig {
            cache_budget: cache_bytes,
            ..Default::default()
        };
        bothy_volume::Storage::open(&dir, store, config)
            .map(Arc::new)
            .map_err(|e| match e {
                bothy_volume::VolumeError::InUse(_) => RuntimeError::Busy(e.to_string()),
                e => RuntimeError::Failed(format!(
                    "cannot open volume storage in {}: {e}",
                    dir.display()
                )),
            })
    })
    .await
    .map_err(|e| RuntimeError::Failed(format!("opening storage failed: {e}")))?
}

/// Binds the socket, reachable by root only. The caller holds the storage
/// lock, so a socket file found here is a dead process's.
fn bind(path: &Path) -> Result<UnixListener, RuntimeError> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| RuntimeError::Failed(format!("cannot bind {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn ok<T: Serialize>(value: T) -> Result<serde_json::Value, RuntimeError> {
    serde_json::to_value(value).map_err(|e| RuntimeError::Failed(e.to_string()))
}

/// How long an exiting storage process waits for operations under way.
const EXIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Counts a request as under way while it lives.
struct Active<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Active<'a> {
    fn new(n: &'a std::sync::atomic::AtomicUsize) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Server {
    async fn connection(&self, conn: UnixStream) {
        let _active = Active::new(&self.active);
        let (read, mut write) = conn.into_split();
        let mut read = BufReader::new(read);
        let answer = match proto::read_line(&mut read).await {
            Ok(Some(line)) => match serde_json::from_slice::<Request>(&line) {
                Ok(req) => match self.handle(req).await {
                    Ok(v) => Answer::Ok(v),
                    Err(e) => Answer::Error(WireError::from(&e)),
                },
                Err(e) => Answer::Error(WireError {
                    kind: proto::ErrorKind::Invalid,
                    message: format!("malformed request: {e}"),
                }),
            },
            Ok(None) => return,
            Err(e) => Answer::Error(WireError {
                kind: proto::ErrorKind::Invalid,
                message: format!("unreadable request: {e}"),
            }),
        };
        // The asker may have given up (a timeout above): nothing to do then.
        let _ = proto::write_line(&mut write, &answer).await;
    }

    fn exit_if_idle_and_asked(&self) {
        if self
            .exit_when_idle
            .load(std::sync::atomic::Ordering::SeqCst)
            && self.stack.served().is_empty()
        {
            let _ = self.exit.send(true);
        }
    }

    async fn lock(&self, volume: &str) -> OwnedMutexGuard<()> {
        let lock = Arc::clone(
            self.locks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(volume.to_string())
                .or_default(),
        );
        lock.lock_owned().await
    }

    async fn handle(&self, req: Request) -> Result<serde_json::Value, RuntimeError> {
        let stack = &self.stack;
        match req {
            Request::Hello => ok(proto::Hello {
                protocol: proto::PROTOCOL,
                pid: std::process::id() as i32,
                build: self.build.clone(),
            }),
            Request::EnsureBase { volume, image } => {
                let _g = self.lock(&volume).await;
                stack.ensure_base(&volume, &image).await?;
                ok(())
            }
            Request::Create {
                volume,
                from,
                checkpoint,
                size,
            } => {
                // Both in name order, so two creates never wait on each other.
                let (first, second) = if volume <= from {
                    (&volume, &from)
                } else {
                    (&from, &volume)
                };
                let _a = self.lock(first).await;
                let _b = if first != second {
                    Some(self.lock(second).await)
                } else {
                    None
                };
                stack.create(&volume, &from, checkpoint, size).await?;
                ok(())
            }
            Request::Attach { volume } => {
                let _g = self.lock(&volume).await;
                let root = stack.attach(&volume).await?;
                ok(proto::Attached { root })
            }
            Request::Detach { volume, sync } => {
                let _g = self.lock(&volume).await;
                stack.detach(&volume, sync).await?;
                self.exit_if_idle_and_asked();
                ok(())
            }
            Request::Served => ok(proto::Served {
                volumes: stack.served(),
            }),
            Request::Checkpoint { volume } => {
                let _g = self.lock(&volume).await;
                ok(proto::Made {
                    checkpoint: stack.checkpoint(&volume).await?,
                })
            }
            Request::Checkpoints { volume } => {
                let _g = self.lock(&volume).await;
                let all = stack.checkpoints(&volume).await?;
                ok(proto::CheckpointList {
                    checkpoints: all.iter().map(|(n, _)| *n).collect(),
                    in_object_store: all.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect(),
                })
            }
            Request::Usage { volume } => ok(stack.usage(&volume).await?),
            Request::Restore { volume, checkpoint } => {
                let _g = self.lock(&volume).await;
                ok(proto::Made {
                    checkpoint: stack.restore(&volume, checkpoint).await?,
                })
            }
            Request::DeleteCheckpoint { volume, checkpoint } => {
                let _g = self.lock(&volume).await;
                stack.delete_checkpoint(&volume, checkpoint).await?;
                ok(())
            }
            Request::Destroy { volume } => {
                let _g = self.lock(&volume).await;
                stack.destroy(&volume).await?;
                self.exit_if_idle_and_asked();
                ok(())
            }
            Request::Sync { volume } => {
                // What the box wrote reaches the volume first; then most of
                // the upload happens before the volume is held, so the box's
                // own writes wait only for a small last step.
                stack.syncfs(&volume).await?;
                stack.upload_pending().await?;
                let _g = self.lock(&volume).await;
                stack.sync(&volume).await?;
                ok(())
            }
            Request::Recover { volume } => {
                let _g = self.lock(&volume).await;
                ok(proto::Recovered {
                    recovered: stack.recover(&volume).await?,
                })
            }
            Request::CollectGarbage => {
                let r = stack.gc().await?;
                ok(proto::Collected {
                    objects: r.deleted_objects,
                    cached: r.deleted_cached,
                })
            }
            Request::Shutdown => {
                let served = stack.served();
                if !served.is_empty() {
                    return Err(RuntimeError::Busy(format!(
                        "{} disks are still in use ({}); stop their boxes first",
                        served.len(),
                        served.join(", ")
                    )));
                }
                let _ = self.exit.send(true);
                ok(())
            }
        }
    }
}
