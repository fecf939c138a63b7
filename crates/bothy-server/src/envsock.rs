//! Each box's own control API, on a unix socket that the box sees at
//! `/.bothy/run/api.sock` (`bothy-env` talks to it). The socket is the
//! credential: whoever can connect acts on that one box and nothing else,
//! and only box root can connect (owner host uid = box root, mode 0600).
//!
//! Routes (no auth header; JSON and NDJSON as in the public API):
//! `GET /checkpoints[?include_auto=true]`, `POST /checkpoint {comment?}`,
//! `POST /checkpoints/{id}/restore`. A restore restarts the box, which ends
//! the asking process and its connection; the restore itself runs to the end
//! regardless (see [`App::restore`]).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use bothy_api::{Checkpoint, CreateCheckpointRequest};
use tokio::task::JoinHandle;

use crate::app::App;
use crate::boxes::Boxes;
use crate::error::{ApiError, ApiResult};
use crate::routes::{checkpoint_lines, checkpoint_listing, optional_json, restore_lines};
use crate::store::SpriteRow;

/// The socket servers of all boxes, by box id.
#[derive(Default)]
pub struct EnvSockets {
    servers: Mutex<HashMap<String, JoinHandle<()>>>,
}

struct BoxState<B> {
    app: App<B>,
    id: String,
}

// By hand: a derive would require `B: Clone`, but `App<B>` is a shared handle.
impl<B> Clone for BoxState<B> {
    fn clone(&self) -> Self {
        Self {
            app: self.app.clone(),
            id: self.id.clone(),
        }
    }
}

impl EnvSockets {
    /// Serves box `id`'s socket at `path` unless it is served already.
    pub fn ensure<B: Boxes>(&self, app: &App<B>, id: &str, path: PathBuf) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if servers.get(id).is_some_and(|h| !h.is_finished()) {
            return;
        }
        match bind(&path) {
            Ok(listener) => {
                let router = Router::new()
                    .route("/checkpoints", get(list::<B>))
                    .route("/checkpoint", post(create::<B>))
                    .route("/checkpoints/{id}/restore", post(restore::<B>))
                    .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
                    .with_state(BoxState {
                        app: app.clone(),
                        id: id.to_string(),
                    });
                let id_for_log = id.to_string();
                let handle = tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router).await {
                        tracing::warn!(box_id = %id_for_log, error = %e, "box control socket stopped");
                    }
                });
                servers.insert(id.to_string(), handle);
            }
            Err(e) => {
                tracing::warn!(box_id = id, path = %path.display(), error = %e, "cannot serve the box's control socket; bothy-env will not work in it");
            }
        }
    }

    pub fn remove(&self, id: &str) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = servers.remove(id) {
            h.abort();
        }
    }
}

fn bind(path: &FsPath) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    let root = nix::unistd::Uid::from_raw(bothy_runtime::UID_SHIFT);
    let root_group = nix::unistd::Gid::from_raw(bothy_runtime::UID_SHIFT);
    nix::unistd::chown(path, Some(root), Some(root_group)).map_err(std::io::Error::from)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn this_box<B: Boxes>(s: &BoxState<B>) -> ApiResult<SpriteRow> {
    s.app
        .store()
        .sprite_by_id(s.id.clone())
        .await?
        .ok_or_else(|| ApiError::NotFound("this bothy is being destroyed".into()))
}

async fn list<B: Boxes>(
    State(s): State<BoxState<B>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<Checkpoint>>> {
    let row = this_box(&s).await?;
    Ok(Json(
        checkpoint_listing(&s.app, &row, raw.as_deref()).await?,
    ))
}

async fn create<B: Boxes>(
    State(s): State<BoxState<B>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let row = this_box(&s).await?;
    let req: CreateCheckpointRequest = optional_json(body)?;
    checkpoint_lines(&s.app, &row, req.comment).await
}

async fn restore<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(id) = path?;
    let row = this_box(&s).await?;
    restore_lines(&s.app, &row, &id).await
}
