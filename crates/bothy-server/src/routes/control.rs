//! `WSS /v1/sprites/{name}/control`: one connection, many commands, as
//! `sprites-py` and `@fly/sprites` use it in control mode
//! ([`bothy_api::control`]).
//!
//! The token and the sprite are checked before the upgrade (errors are HTTP
//! answers, which both SDKs read as "no control mode here"). After it, the
//! connection waits for `control:{"type":"op.start",...}`; each `exec` wakes
//! the box, runs through the exec WebSocket's own session bridge
//! ([`crate::bridge::run_session`]) and ends with `op.complete` or
//! `op.error`; then the next operation may start. An operation that cannot
//! run (bad arguments, an unknown op) gets an `op.error` and leaves the
//! connection usable.
//!
//! A control message while an operation runs ends that operation: its
//! session is detached (as when an exec client leaves) and nothing more of
//! it is sent; then the message is handled as between operations. The SDKs
//! do this on purpose: on a timeout `sprites-py` sends `KILL`, returns the
//! connection to its pool and starts the next command on it without
//! waiting for the first to end (`@fly/sprites` likewise when output
//! exceeds `maxBuffer`). Refusing would fail that next command; an
//! `op.error` for the old operation would end the new one, which is the
//! client's current operation by then. So exactly one answer goes to each
//! control message, and both sides agree which operation runs.

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use bothy_api::control::{
    op_complete, op_error, ExecArgs, OpStart, CONTROL_PREFIX, IDLE_TIMEOUT_SECS,
    MAX_CONTROL_MESSAGE, OP_EXEC, OP_START,
};
use bothy_api::exec::ClientMessage;
use bothy_control::exec::{Input, Spawned};
use bothy_control::state::SpriteRow;
use bothy_control::{Boxes, Control};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;

use super::exec::{limit, spawn_request, with_capabilities};
use super::needs_upgrade;
use super::sprites::sprite_of;
use crate::auth::Auth;
use crate::bridge::CLOSE_GOING_AWAY;
use crate::bridge::{
    client_input, finish, message_input, read_until_closed, report_not_started, run_session, Ended,
    FromClient, EXIT_NOT_STARTED,
};
use crate::error::{ApiError, ApiResult};
use crate::params::{exec_query_of_pairs, ExecQuery};
use crate::Shutdown;

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_POLICY: u16 = 1008;
/// How long the end of a signalled operation waits for the client's next
/// `op.start` (see [`after_signal`]).
const SIGNALLED_GRACE: Duration = Duration::from_millis(300);
/// How long the last flush of a closing connection may take.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

type Tx = SplitSink<WebSocket, Message>;
type Rx = SplitStream<WebSocket>;

/// `GET .../control` (upgrade).
pub async fn control<B: Boxes>(
    State(control): State<Control<B>>,
    Extension(shutdown): Extension<Shutdown>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let row = sprite_of(&control, &caller, path).await?;
    let ws = ws.map_err(|_| needs_upgrade("the control connection"))?;
    Ok(with_capabilities(limit(ws).on_upgrade(move |socket| {
        serve(socket, control, row, shutdown.0)
    })))
}

/// Runs operations until the client leaves, idles too long or breaks the
/// protocol, or the daemon shuts down.
async fn serve<B: Boxes>(
    socket: WebSocket,
    control: Control<B>,
    row: SpriteRow,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut tx, mut rx) = socket.split();
    let idle = Duration::from_secs(IDLE_TIMEOUT_SECS);
    tracing::info!(box_id = %row.id, "control connection open");
    let mut ops: u64 = 0;
    // A control message that ended the last operation, to handle next.
    let mut pending: Option<String> = None;
    loop {
        let next = if let Some(text) = pending.take() {
            Ok(Some(Ok(Message::Text(text.into()))))
        } else {
            tokio::select! {
                next = tokio::time::timeout(idle, rx.next()) => next,
                _ = shutdown.changed() => {
                    let reason = "the bothy daemon is shutting down";
                    finish(&mut tx, read_until_closed(&mut rx), CLOSE_GOING_AWAY, reason).await;
                    break;
                }
            }
        };
        let text = match next {
            Err(_) => {
                let reason = format!("no operation for {IDLE_TIMEOUT_SECS} s");
                finish(&mut tx, read_until_closed(&mut rx), CLOSE_NORMAL, &reason).await;
                break;
            }
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Err(e))) => {
                refuse(&mut tx, &mut rx, &e.to_string()).await;
                break;
            }
            Ok(Some(Ok(Message::Text(t)))) if t.starts_with(CONTROL_PREFIX) => t,
            // Stdin or a signal the last operation's process did not take
            // before it exited, pings: nothing is running to take them, and
            // answering would end the client's next operation.
            Ok(Some(Ok(_))) => continue,
        };
        let q = match parse_op_start(&text[CONTROL_PREFIX.len()..]) {
            Ok(q) => q,
            Err(reason) => {
                tracing::info!(box_id = %row.id, "control operation refused: {reason}");
                if tx
                    .send(Message::Text(op_error(&reason).into()))
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        ops += 1;
        match run_exec(&mut tx, &mut rx, &control, &row, q, &mut shutdown).await {
            Next::Continue => {}
            Next::Control(text) => pending = Some(text),
            Next::Stop => break,
        }
    }
    // Sends the answer to a client's close frame (queued by the WebSocket
    // layer, written only on a flush) before the connection drops: without
    // it `@fly/sprites` sees an abnormal closure and raises an error event
    // nobody listens to.
    let _ = tokio::time::timeout(CLOSE_FLUSH, tx.close()).await;
    tracing::info!(box_id = %row.id, ops, "control connection closed");
}

enum Next {
    /// Wait for the next control message.
    Continue,
    /// This control message ended the operation; handle it next.
    Control(String),
    /// The connection is over.
    Stop,
}

/// One `exec` operation, from starting its command to `op.complete`.
async fn run_exec<B: Boxes>(
    tx: &mut Tx,
    rx: &mut Rx,
    control: &Control<B>,
    row: &SpriteRow,
    q: ExecQuery,
    shutdown: &mut watch::Receiver<bool>,
) -> Next {
    // `spawn` wakes a sleeping box first, as the exec WebSocket does.
    let chans = match control.spawn(row, spawn_request(&q)).await {
        Ok(Spawned::Session(chans)) => chans,
        Ok(Spawned::NotStarted(reason)) => {
            tracing::info!(box_id = %row.id, "control exec could not start its command");
            report_not_started(tx, &q.cmd.join(" "), q.tty, &reason).await;
            return complete(tx, EXIT_NOT_STARTED).await;
        }
        Err(e) => {
            let e = ApiError::from(e);
            tracing::info!(box_id = %row.id, "control exec failed: {e}");
            return send_error(tx, &e.to_string()).await;
        }
    };
    tracing::info!(box_id = %row.id, session = %chans.info.id, tty = q.tty, "control exec started");
    let stdin = q.stdin.unwrap_or(true);
    let mut signalled = false;
    let classify = |tty: bool, msg: Message| {
        let from = op_input(tty, msg);
        signalled |= matches!(from, FromClient::Input(Input::Signal(_)));
        from
    };
    match run_session(tx, rx, chans, stdin, shutdown, classify).await {
        Ended::Exited(code) if signalled => after_signal(tx, rx, code).await,
        Ended::Exited(code) => complete(tx, code).await,
        Ended::ClientGone => Next::Stop,
        Ended::ClientError(reason) => {
            refuse(tx, rx, &reason).await;
            Next::Stop
        }
        Ended::Interrupted(text) => {
            tracing::info!(box_id = %row.id, "control exec left for the client's next control message");
            Next::Control(text)
        }
        // The session may live on in the box (it is detached now); the
        // connection itself is fine for the next operation.
        Ended::AgentLost => {
            send_error(
                tx,
                "lost the connection to the box; the command may still run (list the sprite's sessions to re-attach)",
            )
            .await
        }
        Ended::Shutdown => {
            let reason = "the bothy daemon is shutting down";
            let _ = tx.send(Message::Text(op_error(reason).into())).await;
            finish(tx, read_until_closed(rx), CLOSE_GOING_AWAY, reason).await;
            Next::Stop
        }
    }
}

/// The end of an operation the client signalled. A client that kills its
/// command on a timeout (`sprites-py`, openai-agents) starts its next one
/// at once, without waiting for this one's end: an `op.complete` sent now
/// would reach it as the end of that next command. So for a moment the
/// answer waits; if the next `op.start` comes meanwhile, the client has
/// moved on and the old command's end is not sent. A client that waits for
/// the end gets it after the moment.
async fn after_signal(tx: &mut Tx, rx: &mut Rx, code: i32) -> Next {
    let deadline = tokio::time::Instant::now() + SIGNALLED_GRACE;
    loop {
        match tokio::time::timeout_at(deadline, rx.next()).await {
            Err(_) => return complete(tx, code).await,
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Next::Stop,
            Ok(Some(Err(e))) => {
                refuse(tx, rx, &e.to_string()).await;
                return Next::Stop;
            }
            Ok(Some(Ok(Message::Text(t)))) if t.starts_with(CONTROL_PREFIX) => {
                return Next::Control(t.to_string())
            }
            // Pings, or input the ended process no longer takes.
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn complete(tx: &mut Tx, code: i32) -> Next {
    match tx.send(Message::Text(op_complete(code).into())).await {
        Ok(()) => Next::Continue,
        Err(_) => Next::Stop,
    }
}

async fn send_error(tx: &mut Tx, reason: &str) -> Next {
    match tx.send(Message::Text(op_error(reason).into())).await {
        Ok(()) => Next::Continue,
        Err(_) => Next::Stop,
    }
}

/// Ends the connection after reading from the client failed (a message
/// over the size limit): `op.error` (the SDKs end their current operation
/// with it), then a close that says why.
async fn refuse(tx: &mut Tx, rx: &mut Rx, reason: &str) {
    tracing::info!("control connection closed on a protocol error: {reason}");
    let _ = tx.send(Message::Text(op_error(reason).into())).await;
    finish(tx, read_until_closed(rx), CLOSE_POLICY, reason).await;
}

/// A client message while an operation runs. As on the exec WebSocket,
/// except: a control message ends the operation (see the module comment),
/// and `@fly/sprites` sends `resize` and `signal` as binary frames of JSON,
/// which in non-TTY mode no stream byte starts with (`{`) and in TTY mode a
/// terminal never sends as one whole write.
fn op_input(tty: bool, msg: Message) -> FromClient {
    match &msg {
        Message::Text(t) if t.starts_with(CONTROL_PREFIX) => {
            return FromClient::Interrupt(t.to_string());
        }
        Message::Binary(b) if b.first() == Some(&b'{') => {
            if let Ok(m) = serde_json::from_slice::<ClientMessage>(b) {
                return message_input(m).map_or(FromClient::Nothing, FromClient::Input);
            }
        }
        _ => {}
    }
    client_input(tty, msg).map_or(FromClient::Nothing, FromClient::Input)
}

/// An `op.start` envelope's command, checked as the exec WebSocket checks
/// its query; the error is the `op.error` text.
fn parse_op_start(json: &str) -> Result<ExecQuery, String> {
    if json.len() > MAX_CONTROL_MESSAGE {
        return Err(format!(
            "control message of {} bytes; at most {MAX_CONTROL_MESSAGE}",
            json.len()
        ));
    }
    let start: OpStart =
        serde_json::from_str(json).map_err(|e| format!("malformed control message: {e}"))?;
    if start.kind != OP_START {
        return Err(format!(
            "unknown control message type {:?}: clients send {OP_START:?}",
            cut(&start.kind)
        ));
    }
    if start.op != OP_EXEC {
        return Err(format!(
            "unknown operation {:?}: this server runs {OP_EXEC:?}",
            cut(&start.op)
        ));
    }
    if start.args.cmd.first().is_none_or(|c| c.is_empty()) {
        return Err(
            "no command: args.cmd names the command and its arguments, e.g. [\"ls\", \"-l\"]"
                .into(),
        );
    }
    exec_query_of_pairs(exec_pairs(&start.args)).map_err(|e| e.to_string())
}

/// The arguments as the exec WebSocket's query pairs.
fn exec_pairs(args: &ExecArgs) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = args
        .cmd
        .iter()
        .map(|c| ("cmd".to_string(), c.clone()))
        .collect();
    if let Some(env) = &args.env {
        pairs.extend(env.entries().into_iter().map(|e| ("env".to_string(), e)));
    }
    if let Some(dir) = &args.dir {
        pairs.push(("dir".to_string(), dir.clone()));
    }
    let scalars = [
        ("tty", &args.tty),
        ("rows", &args.rows),
        ("cols", &args.cols),
        ("stdin", &args.stdin),
        ("max_run_after_disconnect", &args.max_run_after_disconnect),
    ];
    for (key, value) in scalars {
        if let Some(v) = value {
            pairs.push((key.to_string(), v.as_query_value()));
        }
    }
    pairs
}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_start_as_the_sdks_send_it() {
        let q = parse_op_start(
            r#"{"type":"op.start","op":"exec","args":{"cmd":["sh","-c","echo hi"],"env":["A=1"],"dir":"/tmp","tty":"true","rows":"33","cols":"101","stdin":"false"}}"#,
        )
        .expect("valid");
        assert_eq!(q.cmd, ["sh", "-c", "echo hi"]);
        assert_eq!(q.env, ["A=1"]);
        assert_eq!(q.dir.as_deref(), Some("/tmp"));
        assert!(q.tty);
        assert_eq!((q.rows, q.cols), (33, 101));
        assert_eq!(q.stdin, Some(false));
        let q = parse_op_start(r#"{"type":"op.start","op":"exec","args":{"cmd":["true"]}}"#)
            .expect("valid");
        assert!(!q.tty);
        assert_eq!(q.stdin, None);
    }

    #[test]
    fn bad_op_starts_say_why() {
        for (json, says) in [
            ("not json", "malformed control message"),
            (r#"{"type":"op.start","op":"exec","args":[]}"#, "no command"),
            (r#"{"type":"op.start","op":"exec","args":7}"#, "malformed"),
            (
                r#"{"type":"op.stop","op":"exec"}"#,
                "unknown control message type",
            ),
            (
                r#"{"type":"op.start","op":"proxy","args":{}}"#,
                "unknown operation",
            ),
            (r#"{"type":"op.start","op":"exec","args":{}}"#, "no command"),
            (
                r#"{"type":"op.start","op":"exec","args":{"cmd":["x"],"dir":"rel"}}"#,
                "absolute",
            ),
            (
                r#"{"type":"op.start","op":"exec","args":{"cmd":["x"],"env":["NOEQUALS"]}}"#,
                "KEY=VALUE",
            ),
            (
                r#"{"type":"op.start","op":"exec","args":{"cmd":["x"],"rows":"0","tty":true}}"#,
                "rows",
            ),
            (
                r#"{"type":"op.start","op":"exec","args":{"cmd":["x"],"tty":"maybe"}}"#,
                "tty",
            ),
        ] {
            let err = parse_op_start(json).expect_err(json);
            assert!(err.contains(says), "{json}: {err}");
        }
        let huge = format!(
            r#"{{"type":"op.start","op":"exec","args":{{"cmd":["{}"]}}}}"#,
            "x".repeat(MAX_CONTROL_MESSAGE)
        );
        assert!(parse_op_start(&huge).expect_err("huge").contains("at most"));
    }

    #[test]
    fn binary_json_is_a_resize_or_signal_and_control_text_ends_the_operation() {
        let resize = Message::Binary(br#"{"type":"resize","cols":90,"rows":30}"#.to_vec().into());
        assert!(matches!(
            op_input(true, resize),
            FromClient::Input(bothy_control::exec::Input::Resize { cols: 90, rows: 30 })
        ));
        let signal = Message::Binary(br#"{"type":"signal","signal":"INT"}"#.to_vec().into());
        assert!(matches!(
            op_input(false, signal),
            FromClient::Input(bothy_control::exec::Input::Signal(2))
        ));
        // In TTY mode anything else is what the user typed.
        let typed = Message::Binary(b"{not json".to_vec().into());
        assert!(matches!(
            op_input(true, typed),
            FromClient::Input(bothy_control::exec::Input::Stdin(_))
        ));
        let again = Message::Text(r#"control:{"type":"op.start","op":"exec"}"#.into());
        assert!(matches!(op_input(false, again), FromClient::Interrupt(_)));
    }
}
