//! `/v1/sprites/{name}/exec`: run a command over a WebSocket, list sessions,
//! re-attach, kill.
//!
//! Everything that can fail is checked before the WebSocket upgrade, so errors
//! are plain HTTP answers with an error body (the SDK reads them). A command
//! that cannot be started (not in PATH, bad directory) is different: like ssh or
//! `docker exec`, the client gets the error on stderr and exit code 127.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use bothy_api::{ExecSession, ExecSessionList, KillSessionRequest, StreamMessage};
use bothy_control::exec::{Input, SessionInfo, SpawnRequest, Spawned};
use bothy_control::time::rfc3339_ms;
use bothy_control::{Boxes, Control};
use tokio::sync::mpsc;

use super::optional_json;
use super::sprites::sprite_of;
use crate::auth::Auth;
use crate::bridge::{bridge, Started};
use crate::error::{ApiError, ApiResult};
use crate::params::{parse_attach_size, parse_exec_query, parse_signal};
use crate::Shutdown;

/// Default grace period before SIGKILL in the kill endpoint.
const DEFAULT_KILL_TIMEOUT_SECS: u64 = 10;
const MAX_KILL_TIMEOUT_SECS: u64 = 300;

/// Largest client message accepted (a JS SDK stdin write is one message).
const MAX_CLIENT_MESSAGE: usize = bothy_api::exec::MAX_CLIENT_MESSAGE;

fn limit(ws: WebSocketUpgrade) -> WebSocketUpgrade {
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
    let req = SpawnRequest {
        cmd: q.cmd,
        env: q.env,
        dir: q.dir,
        tty: q.tty,
        cols: q.cols,
        rows: q.rows,
        max_run_after_disconnect_ms: q.max_run_after_disconnect_ms,
    };
    let started = match control.spawn(&row, req).await? {
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
    let stdin = q.stdin;
    Ok(limit(ws).on_upgrade(move |socket| bridge(socket, started, stdin, shutdown.0)))
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
    let ws = ws.map_err(|_| {
        ApiError::bad_request("attaching needs a WebSocket upgrade (GET with `Upgrade: websocket`)")
    })?;
    let size = parse_attach_size(raw.as_deref())?;
    let chans = control.attach(&row, &id).await?;
    if let (true, Some((cols, rows))) = (chans.info.tty, size) {
        // The re-attaching terminal may differ in size from the one that left.
        let _ = chans.input.send(Input::Resize { cols, rows }).await;
    }
    Ok(limit(ws)
        .on_upgrade(move |socket| bridge(socket, Started::Session(chans), true, shutdown.0)))
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

fn stream_line(kind: &str, data: Option<String>, error: Option<String>) -> Bytes {
    let msg = StreamMessage {
        kind: kind.into(),
        data,
        error,
    };
    let mut line = serde_json::to_vec(&msg).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// `POST .../exec/{id}/kill`: signal, wait up to `timeout`, then SIGKILL. The
/// progress is an NDJSON stream.
pub async fn kill<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let Path((name, id)) = path?;
    let row = control.sprite(&caller, &name).await?;
    let req: KillSessionRequest = optional_json(body)?;
    let signal_name = req.signal.unwrap_or_else(|| "SIGTERM".into());
    let signal = parse_signal(&signal_name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown signal {:?}; use a name like SIGTERM, SIGINT, SIGKILL or a number",
            signal_name.chars().take(32).collect::<String>()
        ))
    })?;
    let grace = Duration::from_secs(
        req.timeout
            .unwrap_or(DEFAULT_KILL_TIMEOUT_SECS)
            .min(MAX_KILL_TIMEOUT_SECS),
    );
    control.session(&row, &id).await?;
    control.signal_session(&row, &id, signal).await?;

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let _ = tx
            .send(stream_line(
                "info",
                Some(format!("sent {signal_name} to session {id}")),
                None,
            ))
            .await;
        let deadline = tokio::time::Instant::now() + grace;
        let ended = wait_for_exit(&control, &row, &id, deadline).await;
        if !ended {
            let msg = match control.signal_session(&row, &id, 9).await {
                Ok(()) => stream_line(
                    "info",
                    Some(format!("still running after {grace:?}; sent SIGKILL")),
                    None,
                ),
                Err(e) => stream_line("error", None, Some(format!("SIGKILL failed: {e}"))),
            };
            let _ = tx.send(msg).await;
        }
        let _ = tx
            .send(stream_line(
                "complete",
                Some(format!("session {id} killed")),
                None,
            ))
            .await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok((
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Waits until the session is gone or has exited, or the deadline passes.
async fn wait_for_exit<B: Boxes>(
    control: &Control<B>,
    row: &bothy_control::SpriteRow,
    id: &str,
    deadline: tokio::time::Instant,
) -> bool {
    loop {
        match control.sessions(row).await {
            Ok(list) => match list.iter().find(|s| s.id == id) {
                None => return true,
                Some(s) if s.exit_code.is_some() => return true,
                Some(_) => {}
            },
            Err(e) => tracing::debug!(error = %e, "session list failed while waiting for exit"),
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        // The agent has no exit notification outside a session connection, so
        // poll the condition until the deadline.
        tokio::time::sleep_until(
            (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline),
        )
        .await;
    }
}
