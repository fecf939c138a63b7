//! Each box's own control API, a frontend like the HTTP API: on a unix socket
//! that the box sees at [`bothy_api::inbox::ENV_SOCKET`] (`bothy-env` talks
//! to it). The socket is the credential: whoever can connect acts on that one
//! box and nothing else, and only box root can connect (owner = the box's root
//! on the host, mode 0600).
//!
//! Which boxes have a socket follows control's event stream: a box that is
//! created or comes up gets one, a box that is gone loses it.
//!
//! Routes (no auth header; JSON and NDJSON as in the public API):
//! `GET /checkpoints[?include_auto=true]`, `POST /checkpoint {comment?}`,
//! `POST /checkpoints/{id}/restore`. A restore restarts the box, which ends
//! the asking process and its connection; the restore itself runs to the end
//! regardless (control runs it in a task of its own).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use bothy_api::{Checkpoint, CreateCheckpointRequest};
use bothy_control::{Boxes, Control, EventKind, InboxSocket, RowState, SpriteRow};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::error::ApiResult;
use crate::routes::{checkpoint_lines, checkpoint_listing, optional_json, restore_lines};

/// Largest request body a box may send.
const MAX_BODY: usize = 64 * 1024;

/// The socket servers of all boxes, by box id.
#[derive(Default)]
struct Servers(Mutex<HashMap<String, JoinHandle<()>>>);

impl Servers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<()>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves box `id`'s socket unless it is served already.
    fn ensure<B: Boxes>(&self, control: &Control<B>, id: &str) {
        let Some(socket) = control.env_socket(id) else {
            return;
        };
        let mut servers = self.lock();
        if servers.get(id).is_some_and(|h| !h.is_finished()) {
            return;
        }
        match bind(&socket) {
            Ok(listener) => {
                let router = Router::new()
                    .route("/checkpoints", get(list::<B>))
                    .route("/checkpoint", post(create::<B>))
                    .route("/checkpoints/{id}/restore", post(restore::<B>))
                    .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
                    .with_state(BoxState {
                        control: control.clone(),
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
                tracing::warn!(box_id = id, path = %socket.path.display(), error = %e, "cannot serve the box's control socket; bothy-env will not work in it");
            }
        }
    }

    fn remove(&self, id: &str) {
        if let Some(h) = self.lock().remove(id) {
            h.abort();
        }
    }

    fn stop_all(&self) {
        for (_, h) in self.lock().drain() {
            h.abort();
        }
    }
}

/// Serves the sockets of every box that is up, following control's events,
/// until `stop` fires.
pub async fn serve<B: Boxes>(control: Control<B>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let servers = Arc::new(Servers::default());
    // Subscribe before reading the boxes: nothing is missed in between.
    let mut events = control.events();
    serve_ready(&control, &servers).await;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => match ev.kind {
                    EventKind::Created | EventKind::Ready | EventKind::Restored => {
                        servers.ensure(&control, &ev.box_id)
                    }
                    EventKind::Gone => servers.remove(&ev.box_id),
                    EventKind::Stopped | EventKind::Checkpointed => {}
                },
                Err(RecvError::Lagged(_)) => serve_ready(&control, &servers).await,
                Err(RecvError::Closed) => break,
            },
            _ = stop.changed() => break,
        }
    }
    servers.stop_all();
}

async fn serve_ready<B: Boxes>(control: &Control<B>, servers: &Servers) {
    match control.store().all_sprites().await {
        Ok(rows) => {
            for row in rows.iter().filter(|r| r.state == RowState::Ready) {
                servers.ensure(control, &row.id);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list boxes to serve their control sockets"),
    }
}

struct BoxState<B> {
    control: Control<B>,
    id: String,
}

// By hand: a derive would require `B: Clone`, but `Control<B>` is a shared handle.
impl<B> Clone for BoxState<B> {
    fn clone(&self) -> Self {
        Self {
            control: self.control.clone(),
            id: self.id.clone(),
        }
    }
}

fn bind(socket: &InboxSocket) -> std::io::Result<tokio::net::UnixListener> {
    let path: &FsPath = &socket.path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(socket.uid)),
        Some(nix::unistd::Gid::from_raw(socket.gid)),
    )
    .map_err(std::io::Error::from)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn this_box<B: Boxes>(s: &BoxState<B>) -> ApiResult<SpriteRow> {
    Ok(s.control.sprite_by_id(&s.id).await?)
}

async fn list<B: Boxes>(
    State(s): State<BoxState<B>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<Checkpoint>>> {
    let row = this_box(&s).await?;
    Ok(Json(
        checkpoint_listing(&s.control, &row, raw.as_deref()).await?,
    ))
}

async fn create<B: Boxes>(
    State(s): State<BoxState<B>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let row = this_box(&s).await?;
    let req: CreateCheckpointRequest = optional_json(body)?;
    checkpoint_lines(&s.control, &row, req).await
}

async fn restore<B: Boxes>(
    State(s): State<BoxState<B>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(id) = path?;
    let row = this_box(&s).await?;
    restore_lines(&s.control, &row, &id).await
}
