//! `/v1/sprites/{name}/exec`: run a command over a WebSocket, list sessions,
//! re-attach.
//!
//! Everything that can fail is checked before the WebSocket upgrade, so errors
//! are plain HTTP answers with an error body (the SDK reads them). A command
//! that cannot be started (not in PATH, bad directory) is different: like ssh or
//! `docker exec`, the client gets the error on stderr and exit code 127.

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use bothy_api::exec::{CAPABILITIES, CAPABILITIES_HEADER};
use bothy_api::{ExecSession, ExecSessionList};
use bothy_control::exec::{Input, SessionInfo, SpawnRequest, Spawned};
use bothy_control::time::rfc3339_ms;
use bothy_control::{Boxes, Control};

use super::sprites::sprite_of;
use crate::auth::Auth;
use crate::bridge::{bridge, Started};
use crate::error::ApiResult;
use crate::params::{parse_attach_size, parse_exec_query, ExecQuery};
use crate::Shutdown;

/// Largest client message accepted (a JS SDK stdin write is one message).
const MAX_CLIENT_MESSAGE: usize = bothy_api::exec::MAX_CLIENT_MESSAGE;

pub(super) fn limit(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
}

/// `GET .../exec`: a WebSocket upgrade runs a command; a plain GET lists sessions.
pub async fn exec_or_list<B: Boxes>(
    State(control): State<Control<B>>,
    Extension(shutdown): Extension<Shutdown>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let row = sprite_of(&control, &caller, path).await?;
    let Ok(ws) = ws else {
        let sessions = control.sessions(&row).await?;
        let list = ExecSessionList {
            sessions: sessions.iter().map(to_exec_session).collect(),
        };
        return Ok(Json(list).into_response());
    };
    let q = parse_exec_query(raw.as_deref())?;
    let command = q.cmd.join(" ");
    let started = match control.spawn(&row, spawn_request(&q)).await? {
        Spawned::Session(chans) => {
            tracing::info!(box_id = %row.id, session = %chans.info.id, tty = q.tty, "exec started");
            Started::Session(chans)
        }
        Spawned::NotStarted(reason) => {
            tracing::info!(box_id = %row.id, "exec could not start its command");
            Started::NotStarted {
                command,
                tty: q.tty,
                reason,
            }
        }
    };
    let stdin = q.stdin.unwrap_or(true);
    Ok(with_capabilities(limit(ws).on_upgrade(move |socket| {
        bridge(socket, started, stdin, shutdown.0)
    })))
}

/// What the agent is asked to run for an exec query.
pub fn spawn_request(q: &ExecQuery) -> SpawnRequest {
    SpawnRequest {
        cmd: q.cmd.clone(),
        env: q.env.clone(),
        dir: q.dir.clone(),
        tty: q.tty,
        cols: q.cols,
        rows: q.rows,
        max_run_after_disconnect_ms: q.max_run_after_disconnect_ms,
    }
}

/// Tells the client which messages beyond the base protocol it may send.
pub(super) fn with_capabilities(mut res: Response) -> Response {
    res.headers_mut().insert(
        HeaderName::from_static(CAPABILITIES_HEADER),
        HeaderValue::from_static(CAPABILITIES),
    );
    res
}

/// `GET .../exec/{id}` (upgrade): re-attach to a live session.
pub async fn attach<B: Boxes>(
    State(control): State<Control<B>>,
    Extension(shutdown): Extension<Shutdown>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let Path((name, id)) = path?;
    let row = control.sprite(&caller, &name).await?;
    let ws = ws.map_err(|_| super::needs_upgrade("attaching"))?;
    let size = parse_attach_size(raw.as_deref())?;
    let chans = control.attach(&row, &id).await?;
    if let (true, Some((cols, rows))) = (chans.info.tty, size) {
        // The re-attaching terminal may differ in size from the one that left.
        let _ = chans.input.send(Input::Resize { cols, rows }).await;
    }
    Ok(with_capabilities(limit(ws).on_upgrade(move |socket| {
        bridge(socket, Started::Session(chans), true, shutdown.0)
    })))
}

fn to_exec_session(s: &SessionInfo) -> ExecSession {
    ExecSession {
        id: s.id.clone(),
        command: s.command.clone(),
        workdir: s.workdir.clone(),
        created: rfc3339_ms(s.created_ms),
        last_activity: Some(rfc3339_ms(s.last_activity_ms)),
        bytes_per_second: 0.0,
        is_active: s.attached,
        tty: s.tty,
        exit_code: s.exit_code,
    }
}
