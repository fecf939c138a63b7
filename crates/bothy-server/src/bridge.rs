//! Framing of the exec WebSocket and the bridge between it and a session.
//!
//! Non-TTY: binary messages carry a leading stream byte both ways; the exit
//! code is a binary `[3, code]`. TTY: binary messages are raw terminal bytes;
//! the exit code is a text `{"type":"exit","exit_code":N}`. Either way the first
//! message is `session_info`, a text `{"type":"signal","signal":"TERM"}` from
//! the client signals the session, and the server closes right after the exit
//! with the exit code in the close frame ([`exit_close_code`]).
//!
//! [`run_session`] carries one session and is shared: the exec WebSocket
//! ([`bridge`]) closes after it, a control connection
//! (`routes/control.rs`) runs the next operation.

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bothy_api::exec::{exit_close_code, ClientMessage, ControlMessage, StreamId};
use bothy_control::exec::{Input, Output, MAX_PAYLOAD};
use bothy_control::ExecChannels;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::watch;

use crate::params::parse_signal;

/// Exit code of a command that could not be started, as shells use it.
pub const EXIT_NOT_STARTED: i32 = 127;
/// How long the server reads on after its close frame, for the client's own.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// WebSocket close code for "going away" (daemon shutting down).
pub const CLOSE_GOING_AWAY: u16 = 1001;
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
        Message::Text(t) => serde_json::from_str::<ClientMessage>(&t)
            .ok()
            .and_then(message_input),
        _ => None,
    }
}

/// The session input a client's JSON message asks for, if any.
pub fn message_input(msg: ClientMessage) -> Option<Input> {
    match msg {
        ClientMessage::Resize { cols, rows } if cols > 0 && rows > 0 => {
            Some(Input::Resize { cols, rows })
        }
        ClientMessage::Resize { .. } => None,
        ClientMessage::Signal { signal } => {
            let number = parse_signal(&signal);
            if number.is_none() {
                tracing::debug!(
                    signal = %signal.chars().take(32).collect::<String>(),
                    "exec client sent an unknown signal"
                );
            }
            number.map(Input::Signal)
        }
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

/// What a client message means while a session runs.
pub enum FromClient {
    /// Input for the session: stdin, a resize, a signal.
    Input(Input),
    /// Nothing the session takes (pings, frames of no known kind).
    Nothing,
    /// A message that ends the bridge (a control connection's next control
    /// message): the session is left, the message handed back.
    Interrupt(String),
}

/// Why [`run_session`] returned.
pub enum Ended {
    /// The process exited and its exit was sent.
    Exited(i32),
    /// The client closed, went away or could not be written to.
    ClientGone,
    /// Reading from the client failed (e.g. a message over the size limit).
    ClientError(String),
    /// The client sent a message [`FromClient::Interrupt`].
    Interrupted(String),
    /// The connection to the box's agent was lost; the session may live on.
    AgentLost,
    /// The daemon is shutting down.
    Shutdown,
}

async fn close<S>(tx: &mut S, code: u16, reason: &str)
where
    S: Sink<Message> + Unpin,
{
    // A close reason is at most 123 bytes; cut on a character boundary.
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    let _ = tx.send(Message::Close(Some(frame))).await;
}

/// Closes, then keeps reading until the client's own close frame (at most
/// [`CLOSE_DRAIN`]), discarding what comes: dropping the connection with the
/// client's last messages unread makes the kernel reset it, and a reset can
/// destroy frames the client has not read yet, the exit among them.
pub async fn finish<S>(tx: &mut S, client: impl Future<Output = ()>, code: u16, reason: &str)
where
    S: Sink<Message> + Unpin,
{
    close(tx, code, reason).await;
    let _ = tokio::time::timeout(CLOSE_DRAIN, client).await;
}

/// Reads client messages until the client closes or goes away.
pub async fn read_until_closed<R>(rx: &mut R)
where
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    while let Some(Ok(m)) = rx.next().await {
        if matches!(m, Message::Close(_)) {
            return;
        }
    }
}

/// Tells the client a command could not be started, the way a shell would.
pub async fn report_not_started<S>(tx: &mut S, command: &str, tty: bool, reason: &str)
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

/// Carries one session between a client connection and the box: the
/// session's output (`session_info` first, the exit last) to `tx`, what
/// `classify` makes of `rx`'s messages to its input. Client input and
/// session output flow independently, so a process that ignores its stdin
/// cannot stall its output. Returns when the process exits (its exit frame
/// sent), the client leaves or misbehaves, the agent goes away or the daemon
/// shuts down; nothing more is read from `rx` after that, so the caller
/// decides what the connection does next (the exec WebSocket closes, a
/// control connection goes on with its next operation). Returning drops the
/// session channels, which detaches.
pub async fn run_session<S, R, F>(
    tx: &mut S,
    rx: &mut R,
    chans: ExecChannels,
    stdin: bool,
    shutdown: &mut watch::Receiver<bool>,
    mut classify: F,
) -> Ended
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
    F: FnMut(bool, Message) -> FromClient,
{
    // The hold keeps the box awake until the session ends here.
    let ExecChannels {
        info,
        mut output,
        input,
        awake: _awake,
    } = chans;
    let tty = info.tty;
    if tx
        .send(session_info_message(&info.id, &info.command, tty))
        .await
        .is_err()
    {
        return Ended::ClientGone;
    }
    if !stdin {
        let _ = input.send(Input::StdinEof).await;
    }
    let client = async {
        loop {
            let msg = match rx.next().await {
                None | Some(Ok(Message::Close(_))) => return Ended::ClientGone,
                Some(Err(e)) => {
                    tracing::debug!("exec websocket read failed: {e}");
                    return Ended::ClientError(e.to_string());
                }
                Some(Ok(msg)) => msg,
            };
            match classify(tty, msg) {
                FromClient::Input(i) => {
                    for piece in pieces(i) {
                        // A closed input means the agent side is gone; the
                        // output side reports that, so keep draining the
                        // client meanwhile.
                        if input.send(piece).await.is_err() {
                            break;
                        }
                    }
                }
                FromClient::Nothing => {}
                FromClient::Interrupt(text) => return Ended::Interrupted(text),
            }
        }
    };
    tokio::pin!(client);
    loop {
        tokio::select! {
            end = &mut client => return end,
            out = output.recv() => match out {
                Some(Output::Exit(code)) => {
                    let _ = tx.send(exit_message(tty, code)).await;
                    return Ended::Exited(code);
                }
                Some(o) => {
                    if let Some(m) = output_message(tty, &o) {
                        if tx.send(m).await.is_err() {
                            return Ended::ClientGone;
                        }
                    }
                }
                None => return Ended::AgentLost,
            },
            _ = shutdown.changed() => return Ended::Shutdown,
        }
    }
}

/// Carries one exec connection until the process exits, the client leaves, the
/// agent goes away or the daemon shuts down, then closes it with the exit
/// code in the close frame.
pub async fn bridge(
    socket: WebSocket,
    started: Started,
    stdin: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut tx, mut rx) = socket.split();
    let chans = match started {
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
    let classify = |tty, msg| client_input(tty, msg).map_or(FromClient::Nothing, FromClient::Input);
    let (code, reason) =
        match run_session(&mut tx, &mut rx, chans, stdin, &mut shutdown, classify).await {
            Ended::Exited(code) => (exit_close_code(code), ""),
            Ended::ClientGone | Ended::ClientError(_) | Ended::Interrupted(_) => return,
            Ended::AgentLost => (
                CLOSE_INTERNAL,
                "lost the connection to the box; re-attach to the session",
            ),
            Ended::Shutdown => (CLOSE_GOING_AWAY, "the bothy daemon is shutting down"),
        };
    finish(&mut tx, read_until_closed(&mut rx), code, reason).await;
}
