//! The bothy daemon: Sprites-compatible API, auth, orchestration, state.
//!
//! Contract with the binary: [`DaemonConfig`] and [`run_daemon`].
//!
//! Files in the data dir (mode 0700; the runtime adds others' search bit so
//! boxes reach their root filesystems): `state.db` (SQLite), `admin-token` (the
//! admin token of org `default`, made on first start, mode 0600); the runtime
//! owns `boxes/` and `run/`.
//!
//! Behaviour worth knowing:
//! - Create answers 201 with the sprite once its box runs; destroy answers 204.
//! - `status` is `running` or `cold`; a box that does not answer a status check
//!   within 2 s shows as `cold`. Exec (and session calls) on a cold box start it
//!   first; if that fails the answer is 503 with the reason.
//! - A command that cannot be started in the box (not found, bad directory)
//!   is not an HTTP error: the client gets the reason on stderr and exit code
//!   127, as with ssh or `docker exec`.
//! - Unimplemented Sprites routes under `/v1` answer 501 `not_implemented`.
//! - Logs go to stderr (`RUST_LOG` filters them, default `info`); they never
//!   carry tokens or query strings.

mod app;
mod auth;
mod boxes;
mod bridge;
mod checkpoint_store;
mod datadir;
mod envsock;
mod error;
mod params;
pub mod replica;
mod routes;
mod store;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bothy_runtime::{Runtime, RuntimeConfig};
use tokio::sync::watch;

use crate::app::App;
use crate::boxes::{Boxes, RealBoxes};
use crate::replica::StateReplica;
use crate::store::Store;

/// How `bothy daemon` was started.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Default `/var/lib/bothy`.
    pub data_dir: PathBuf,
    /// Default `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Shared base-image cache; default `bothy_runtime::image::DEFAULT_IMAGE_DIR`.
    pub image_dir: PathBuf,
    /// The running bothy binary (bind-mounted into boxes as their init).
    pub exe: PathBuf,
    /// Object store URL; `None` = `DATA_DIR/objects`.
    pub object_store: Option<String>,
    /// Local chunk cache budget.
    pub cache_bytes: u64,
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database: {0}")]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Runtime(#[from] bothy_runtime::RuntimeError),
    #[error("cannot listen on {addr}: {source}; is another daemon running there?")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error("object store: {0}")]
    ObjectStore(String),
    #[error("state replica: {0}")]
    Replica(#[from] replica::ReplicaError),
}

/// How long open connections get to finish after SIGTERM before boxes stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run_daemon(cfg: DaemonConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    init_logging();
    Ok(serve(cfg).await?)
}

/// Logs to stderr, `info` unless RUST_LOG says otherwise, coloured only on a
/// terminal. A subscriber installed earlier wins.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The binary may have installed a subscriber already; that one wins.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn serve(cfg: DaemonConfig) -> Result<(), DaemonError> {
    let data_dir = datadir::prepare(&cfg.data_dir).map_err(|source| DaemonError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let url = bothy_runtime::object_store_url(&data_dir, cfg.object_store.as_deref());
    let objects = url
        .parse::<bothy_store::StoreUrl>()
        .and_then(|u| u.open())
        .map_err(|e| DaemonError::ObjectStore(format!("{url}: {e}")))?;
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
    })
    .await?;
    serve_with(
        &data_dir,
        cfg.listen,
        RealBoxes::new(runtime),
        wait_for_signal(),
        Some(Replication { replica, recovered }),
    )
    .await
}

/// How often garbage is collected besides after deletes.
const GC_PERIOD: Duration = Duration::from_secs(600);

/// The state database's file in the data dir.
const STATE_DB: &str = "state.db";
/// How often changes to the state database are looked for and shipped.
const SHIP_INTERVAL: Duration = Duration::from_secs(1);

/// Where the state database is replicated, and whether this start restored it.
struct Replication {
    replica: Arc<StateReplica>,
    recovered: bool,
}

/// Ships the state database whenever it changed, until `stop` fires.
async fn ship_state(replica: Arc<StateReplica>, store: Store, mut stop: watch::Receiver<bool>) {
    let mut shipped_at = None;
    loop {
        let changes = store.total_changes();
        if shipped_at != Some(changes) {
            match replica.ship(store.connection()).await {
                Ok(_) => shipped_at = Some(changes),
                Err(e) => {
                    tracing::warn!(error = %e, "shipping the state database failed; retrying")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SHIP_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The daemon over any [`Boxes`], until `stop` completes: serve the API, recover
/// boxes in the background, then on `stop` close connections and stop boxes.
async fn serve_with<B: Boxes>(
    data_dir: &Path,
    listen: SocketAddr,
    boxes: B,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    replication: Option<Replication>,
) -> Result<(), DaemonError> {
    let store = Store::open(&data_dir.join(STATE_DB))?;
    let recovered = replication.as_ref().is_some_and(|r| r.recovered);
    bootstrap_admin(&store, data_dir, recovered).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_rx_for_ship = shutdown_rx.clone();
    let app = App::new(store, boxes, shutdown_rx);

    let listener = bind_retrying(listen).await?;
    let addr = listener.local_addr().map_err(DaemonError::Serve)?;

    // Recovery runs in the background so the API answers at once; boxes not
    // yet started show as cold and wake on exec.
    let recovering = app.clone();
    tokio::spawn(async move {
        if let Err(e) = recovering.recover().await {
            tracing::error!(error = %e, "recovery after restart failed");
        }
    });

    // Ends by itself at shutdown.
    drop(app.collect_garbage_every(GC_PERIOD));

    let shipping = replication.map(|r| {
        let task = tokio::spawn(ship_state(
            r.replica.clone(),
            app.store().clone(),
            shutdown_rx_for_ship.clone(),
        ));
        (r.replica, task)
    });

    eprintln!("bothy daemon listening on http://{addr}");
    let router = routes::router(app.clone());
    let mut stopping = shutdown_tx.subscribe();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        stop.await;
        tracing::info!("shutting down: closing connections, then stopping boxes");
        let _ = shutdown_tx.send(true);
    });
    let mut server = tokio::spawn(async move { server.await });
    // The server ends by itself only on an error or once a graceful shutdown
    // completed; both may be ready at once, so decide on what actually happened.
    let finished = tokio::select! {
        res = &mut server => Some(res),
        _ = stopping.changed() => None,
    };
    match finished {
        Some(Ok(Err(e))) => return Err(DaemonError::Serve(e)),
        Some(Err(e)) => return Err(DaemonError::Serve(std::io::Error::other(e))),
        Some(Ok(Ok(()))) => {}
        None => {
            // Give open connections a bounded time to finish.
            if tokio::time::timeout(DRAIN_TIMEOUT, server).await.is_err() {
                tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; stopping anyway");
            }
        }
    }
    if let Err(e) = app.stop_all().await {
        tracing::error!(error = %e, "stopping boxes failed");
    }
    if let Some((replica, shipper)) = shipping {
        shipper.abort();
        // After the boxes' own sync barriers: the last state names only
        // checkpoints that are in the store.
        if let Err(e) = replica.ship(app.store().connection()).await {
            tracing::error!(error = %e, "shipping the state database at shutdown failed");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds the API address. A daemon restarted right after a crash may find
/// the port still held by the dying process for a moment: retry briefly.
async fn bind_retrying(addr: SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(source) => return Err(DaemonError::Listen { addr, source }),
        }
    }
}

/// First start: the `default` org and an admin token, written to the data dir.
/// A start that restored the state from the object store has tokens but no
/// token file: it gets a new admin token (the old tokens keep working).
async fn bootstrap_admin(
    store: &Store,
    data_dir: &Path,
    recovered: bool,
) -> Result<(), DaemonError> {
    let token = auth::new_token();
    let path = data_dir.join(datadir::ADMIN_TOKEN_FILE);
    // The file is written before the hash is committed: a crash in between
    // leaves an unused file that the next start overwrites.
    if store.has_tokens().await? {
        if recovered && !path.exists() {
            datadir::write_private_atomic(&path, format!("{token}\n").as_bytes()).map_err(
                |source| DaemonError::DataDir {
                    path: path.clone(),
                    source,
                },
            )?;
            store
                .add_admin_token(auth::hash_token(&token), app::now())
                .await?;
            tracing::info!(path = %path.display(), "state restored: wrote a new admin token");
        }
        return Ok(());
    }
    datadir::write_private_atomic(&path, format!("{token}\n").as_bytes()).map_err(|source| {
        DaemonError::DataDir {
            path: path.clone(),
            source,
        }
    })?;
    if store
        .bootstrap(auth::hash_token(&token), app::now())
        .await?
    {
        tracing::info!(path = %path.display(), "created org `default` and an admin token");
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
