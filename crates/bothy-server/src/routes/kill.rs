//! `POST /v1/sprites/{name}/exec/{id}/kill`: signal a session, give it the
//! grace period, SIGKILL it if it is still there.
//!
//! The answer is NDJSON of [`KillEvent`]s: `signal`, then `exited`; or
//! `signal`, `timeout`, `killed`, `exited`; `complete` is always last. A
//! session that already ended gets `exited` and `complete`, and a grace
//! period of zero sends the signal only (`signal`, `complete`). An unknown
//! session (404) and a bad signal or timeout (400) are answered before the
//! stream starts.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use bothy_api::{KillEvent, KillEventKind};
use bothy_control::exec::SessionEnd;
use bothy_control::{Boxes, Control, ControlError, SpriteRow};
use tokio::time::Instant;

use super::optional_json;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::params::{parse_kill, signal_name, KillParams};
use crate::stream::{streamed, Chunks, NDJSON};

const SIGKILL: i32 = 9;
/// How long a SIGKILLed process gets to be reaped before the stream says it
/// did not end: SIGKILL cannot be caught, so only a process stuck in the
/// kernel (a dead disk) takes longer.
const AFTER_SIGKILL: Duration = Duration::from_secs(5);

pub async fn kill<B: Boxes>(
    State(control): State<Control<B>>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let Path((name, id)) = path?;
    let row = control.sprite(&caller, &name).await?;
    let params = parse_kill(raw.as_deref(), optional_json(body)?)?;
    let session = control.session(&row, &id).await?;
    let (out, response) = streamed(NDJSON);
    let pid = session.pid;
    if let Some(code) = session.exit_code {
        tokio::spawn(async move { report_end(&out, &id, pid, Ok(SessionEnd::Exited(code))).await });
        return Ok(response);
    }
    control.signal_session(&row, &id, params.signal).await?;
    tracing::info!(box_id = %row.id, session = %id, signal = params.signal, "session signalled");
    tokio::spawn(follow(control, row, id, pid, params, out));
    Ok(response)
}

/// The rest of a kill once the signal is sent. It runs to the end even if
/// the client goes away: the kill was asked for.
async fn follow<B: Boxes>(
    control: Control<B>,
    row: SpriteRow,
    id: String,
    pid: i32,
    params: KillParams,
    out: Chunks,
) {
    let name = signal_name(params.signal);
    let sent = KillEvent {
        signal: Some(name.clone()),
        pid: Some(pid),
        ..KillEvent::new(
            KillEventKind::Signal,
            format!("sent {name} to session {id} (pid {pid})"),
        )
    };
    let _ = out.line(&sent).await;
    if params.grace.is_zero() {
        let done = KillEvent::new(
            KillEventKind::Complete,
            format!("sent {name} to session {id}; not waiting for it to end"),
        );
        let _ = out.line(&done).await;
        return;
    }
    let grace_end = Instant::now() + params.grace;
    let end = match control.wait_session_end(&row, &id, grace_end).await {
        Ok(SessionEnd::Running) => {
            let timeout = KillEvent {
                pid: Some(pid),
                ..KillEvent::new(
                    KillEventKind::Timeout,
                    format!("session {id} still running {:?} after {name}", params.grace),
                )
            };
            let _ = out.line(&timeout).await;
            sigkill(&control, &row, &id, pid, &out).await
        }
        other => other,
    };
    report_end(&out, &id, pid, end).await;
}

/// Sends SIGKILL and waits for the end.
async fn sigkill<B: Boxes>(
    control: &Control<B>,
    row: &SpriteRow,
    id: &str,
    pid: i32,
    out: &Chunks,
) -> Result<SessionEnd, ControlError> {
    match control.signal_session(row, id, SIGKILL).await {
        Ok(()) => {}
        // It ended between the last look and the SIGKILL.
        Err(ControlError::NotFound(_)) => return Ok(SessionEnd::Gone),
        Err(e) => return Err(e),
    }
    let killed = KillEvent {
        signal: Some(signal_name(SIGKILL)),
        pid: Some(pid),
        ..KillEvent::new(
            KillEventKind::Killed,
            format!("sent SIGKILL to session {id} (pid {pid})"),
        )
    };
    let _ = out.line(&killed).await;
    control
        .wait_session_end(row, id, Instant::now() + AFTER_SIGKILL)
        .await
}

/// The last lines: how the session ended (or why that is not known), then
/// `complete`.
async fn report_end(out: &Chunks, id: &str, pid: i32, end: Result<SessionEnd, ControlError>) {
    let (line, exit_code) = match end {
        Ok(SessionEnd::Exited(code)) => (
            KillEvent {
                pid: Some(pid),
                exit_code: Some(code),
                ..KillEvent::new(
                    KillEventKind::Exited,
                    format!("session {id} exited with code {code}"),
                )
            },
            Some(code),
        ),
        Ok(SessionEnd::Gone) => (
            KillEvent {
                pid: Some(pid),
                ..KillEvent::new(KillEventKind::Exited, format!("session {id} has ended"))
            },
            None,
        ),
        Ok(SessionEnd::Running) => (
            KillEvent::new(
                KillEventKind::Error,
                format!(
                    "session {id} still running {AFTER_SIGKILL:?} after SIGKILL; its process may be stuck in the kernel"
                ),
            ),
            None,
        ),
        Err(e) => (
            // An internal error's details go to the log, not to the client.
            KillEvent::new(
                KillEventKind::Error,
                format!("could not follow session {id}: {}", ApiError::from(e)),
            ),
            None,
        ),
    };
    let _ = out.line(&line).await;
    let message = match exit_code {
        Some(code) => format!("session {id} is gone (exit code {code})"),
        None => format!("kill of session {id} done"),
    };
    let done = KillEvent {
        exit_code,
        ..KillEvent::new(KillEventKind::Complete, message)
    };
    let _ = out.line(&done).await;
}
