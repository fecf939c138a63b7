//! Framing of the exec WebSocket and the bridge between it and a session.
//!
//! Non-TTY: binary messages carry a leading stream byte both ways; the exit
//! code is a binary `[3, code]`. TTY: binary messages are raw terminal bytes;
//! the exit code is a text `{"type":"exit","exit_code":N}`. Either way the first
//! message is `session_info`, a text `{"type":"signal","signal":"TERM"}` from
//! the client signals the session, and the server closes right after the exit
//! with the exit code in the close frame ([`exit_close_code`]).

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bothy_api::exec::{exit_close_code, ClientMessage, ControlMessage, StreamId};
use bothy_control::exec::{Input, Output, MAX_PAYLOAD};
use bothy_control::ExecChannels;
use futures_util::{Sink, SinkExt, StreamExt};
use tokio::sync::watch;

use crate::params::parse_signal;

/// Exit code of a command that could not be started, as shells use it.
pub const EXIT_NOT_STARTED: i32 = 127;
/// How long the server reads on after its close frame, for the client's own.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// WebSocket close code for "going away" (daemon shutting down).
const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code for an internal error (agent connection lost).
const CLOSE_INTERNAL: u16 = 1011;

/// What to bridge once upgraded: a live session, or a start failure to report.
pub enum Started {
    Session(ExecChannels),
    NotStarted {
        command: String,
        tty: bool,
        reason: String,
    },
}

fn session_info_message(id: &str, command: &str, tty: bool) -> Message {
    let msg = ControlMessage::SessionInfo {
        session_id: id.to_string(),
        command: command.to_string(),
        tty,
        is_owner: true,
    };
    Message::Text(serde_json::to_string(&msg).unwrap_or_default().into())
}

/// A non-TTY frame: the stream byte, then the payload. HTTP exec sends the
/// same frames as HTTP chunks.
pub fn frame(stream: StreamId, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 1);
    v.push(stream as u8);
    v.extend_from_slice(payload);
    v
}

/// The non-TTY exit frame, `[3, code]`.
pub fn exit_frame(code: i32) -> Vec<u8> {
    // Cannot truncate: clamped to a byte.
    frame(StreamId::Exit, &[code.clamp(0, 255) as u8])
}

/// What the client reads on stderr when its command could not be started.
pub fn not_started_text(command: &str, reason: &str, tty: bool) -> Vec<u8> {
    let newline = if tty { "\r\n" } else { "\n" };
    format!("bothy: cannot run {command:?}: {reason}{newline}").into_bytes()
}

fn framed(stream: StreamId, payload: &[u8]) -> Message {
    Message::Binary(frame(stream, payload).into())
}

/// The messages that end a session for the client: the exit code, framed for
/// the session's mode.
fn exit_message(tty: bool, code: i32) -> Message {
    if tty {
        let msg = ControlMessage::Exit { exit_code: code };
        Message::Text(serde_json::to_string(&msg).unwrap_or_default().into())
    } else {
        Message::Binary(exit_frame(code).into())
    }
}

fn output_message(tty: bool, out: &Output) -> Option<Message> {
    match out {
        Output::Stdout(d) if tty => Some(Message::Binary(d.clone().into())),
        Output::Stderr(d) if tty => Some(Message::Binary(d.clone().into())),
        Output::Stdout(d) => Some(framed(StreamId::Stdout, d)),
        Output::Stderr(d) => Some(framed(StreamId::Stderr, d)),
        Output::Exit(_) => None,
    }
}

/// Turns one client message into session input, if it is one.
pub fn client_input(tty: bool, msg: Message) -> Option<Input> {
    match msg {
        Message::Binary(b) if tty => (!b.is_empty()).then(|| Input::Stdin(b.to_vec())),
        Message::Binary(b) => match b.first().copied().and_then(StreamId::from_byte) {
            Some(StreamId::Stdin) if b.len() > 1 => Some(Input::Stdin(b[1..].to_vec())),
            Some(StreamId::StdinEof) => Some(Input::StdinEof),
            _ => None,
        },
        Message::Text(t) => match serde_json::from_str::<ClientMessage>(&t) {
            Ok(ClientMessage::Resize { cols, rows }) if cols > 0 && rows > 0 => {
                Some(Input::Resize { cols, rows })
            }
            Ok(ClientMessage::Signal { signal }) => {
                let number = parse_signal(&signal);
                if number.is_none() {
                    tracing::debug!(
                        signal = %signal.chars().take(32).collect::<String>(),
                        "exec client sent an unknown signal"
                    );
                }
                number.map(Input::Signal)
            }
            _ => None,
        },
        _ => None,
    }
}

/// Stdin in pieces the agent takes in one frame each, so that a large write
/// waits for room in the session's input queue piece by piece instead of
/// sitting in it whole.
pub fn pieces(input: Input) -> Vec<Input> {
    match input {
        Input::Stdin(data) if data.len() > MAX_PAYLOAD => data
            .chunks(MAX_PAYLOAD)
            .map(|c| Input::Stdin(c.to_vec()))
            .collect(),
        other => vec![other],
    }
}

async fn close<S>(tx: &mut S, code: u16, reason: &str)
where
    S: Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tx.send(Message::Close(Some(frame))).await;
}

/// Closes, then keeps reading until the client's own close frame (at most
/// [`CLOSE_DRAIN`]), discarding what comes: dropping the connection with the
/// client's last messages unread makes the kernel reset it, and a reset can
/// destroy frames the client has not read yet, the exit among them.
async fn finish<S>(tx: &mut S, client: impl Future<Output = ()>, code: u16, reason: &str)
where
    S: Sink<Message> + Unpin,
{
    close(tx, code, reason).await;
    let _ = tokio::time::timeout(CLOSE_DRAIN, client).await;
}

/// Reads client messages until the client closes or goes away.
async fn read_until_closed<R>(rx: &mut R)
where
    R: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    while let Some(Ok(m)) = rx.next().await {
        if matches!(m, Message::Close(_)) {
            return;
        }
    }
}

/// Tells the client a command could not be started, the way a shell would.
async fn report_not_started<S>(tx: &mut S, command: &str, tty: bool, reason: &str)
where
    S: Sink<Message> + Unpin,
{
    let _ = tx.send(session_info_message("", command, tty)).await;
    let text = not_started_text(command, reason, tty);
    let err = if tty {
        Message::Binary(text.into())
    } else {
        framed(StreamId::Stderr, &text)
    };
    let _ = tx.send(err).await;
    let _ = tx.send(exit_message(tty, EXIT_NOT_STARTED)).await;
}

/// Carries one exec connection until the process exits, the client leaves, the
/// agent goes away or the daemon shuts down. Client input and session output
/// flow independently, so a process that ignores its stdin cannot stall its
/// output. Returning drops the session channels, which detaches.
pub async fn bridge(
    socket: WebSocket,
    started: Started,
    stdin: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut tx, mut rx) = socket.split();
    // The hold keeps the box awake until this client goes.
    let ExecChannels {
        info,
        mut output,
        input,
        awake: _awake,
    } = match started {
        Started::Session(c) => c,
        Started::NotStarted {
            command,
            tty,
            reason,
        } => {
            report_not_started(&mut tx, &command, tty, &reason).await;
            let code = exit_close_code(EXIT_NOT_STARTED);
            finish(&mut tx, read_until_closed(&mut rx), code, "").await;
            return;
        }
    };
    let tty = info.tty;
    if tx
        .send(session_info_message(&info.id, &info.command, tty))
        .await
        .is_err()
    {
        return;
    }
    if !stdin {
        let _ = input.send(Input::StdinEof).await;
    }
    let client = async move {
        loop {
            let msg = match rx.next().await {
                None | Some(Ok(Message::Close(_))) => return,
                Some(Err(e)) => {
                    tracing::debug!("exec websocket read failed: {e}");
                    return;
                }
                Some(Ok(msg)) => msg,
            };
            for piece in client_input(tty, msg).into_iter().flat_map(pieces) {
                // A closed input means the agent side is gone; the output side
                // reports that, so keep draining the client meanwhile.
                if input.send(piece).await.is_err() {
                    break;
                }
            }
        }
    };
    tokio::pin!(client);
    loop {
        tokio::select! {
            () = &mut client => return,
            out = output.recv() => match out {
                Some(Output::Exit(code)) => {
                    let _ = tx.send(exit_message(tty, code)).await;
                    finish(&mut tx, &mut client, exit_close_code(code), "").await;
                    return;
                }
                Some(o) => {
                    if let Some(m) = output_message(tty, &o) {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                }
                None => {
                    let reason = "lost the connection to the box; re-attach to the session";
                    finish(&mut tx, &mut client, CLOSE_INTERNAL, reason).await;
                    return;
                }
            },
            _ = shutdown.changed() => {
                let reason = "the bothy daemon is shutting down";
                finish(&mut tx, &mut client, CLOSE_GOING_AWAY, reason).await;
                return;
            }
        }
    }
}
