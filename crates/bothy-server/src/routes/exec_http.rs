//! `POST /v1/sprites/{name}/exec`: run a command over plain HTTP, for
//! clients without WebSockets. The query is the exec WebSocket's (non-TTY
//! only); the request body is the whole stdin when `stdin=true`, otherwise
//! stdin is closed at once. The answer streams the exec WebSocket's
//! non-TTY frames, one per HTTP chunk: `[1|2][bytes]`, then `[3][code]`.
//!
//! Frames carry no length, and `@fly/sprites` splits them where its reads
//! of the body end: Node's fetch hands over everything that arrived in one
//! socket read as one piece, so frames written together reach it merged (an
//! exit written right after output was lost that way). Frames therefore go
//! at least [`PACE`] apart (and the API's connections have TCP_NODELAY, so
//! they also leave apart), each at most [`MAX_FRAME`] bytes, and output
//! that arrives meanwhile joins the next frame of its stream. Large output
//! is still better served by the WebSocket.
//!
//! Errors found before the command starts are HTTP errors; a command that
//! cannot be started gets its reason on stderr and exit code 127, as on the
//! WebSocket.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use bothy_api::exec::{StreamId, MAX_HTTP_STDIN};
use bothy_control::exec::{Input, Output, Spawned};
use bothy_control::{Boxes, Control, ExecChannels};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::exec::spawn_request;
use super::sprites::sprite_of;
use crate::auth::Auth;
use crate::bridge::{exit_frame, frame, not_started_text, pieces, EXIT_NOT_STARTED};
use crate::error::{ApiError, ApiResult};
use crate::params::parse_exec_query;
use crate::stream::{streamed, Chunks, OCTET_STREAM};
use crate::Shutdown;

/// Time between frames: long enough for a client that waits on its next
/// read to have read the frame before (well under a millisecond when idle).
const PACE: Duration = Duration::from_millis(10);
/// Largest frame payload: one socket read of the client takes it whole.
const MAX_FRAME: usize = 32 << 10;

pub async fn run<B: Boxes>(
    State(control): State<Control<B>>,
    Extension(shutdown): Extension<Shutdown>,
    Auth(caller): Auth,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let row = sprite_of(&control, &caller, path).await?;
    let q = parse_exec_query(raw.as_deref())?;
    if q.tty {
        return Err(ApiError::bad_request(
            "HTTP exec has no terminal; use the exec WebSocket for tty=true",
        ));
    }
    let stdin = stdin_of(body)?;
    let stdin = q.stdin.unwrap_or(false).then_some(stdin);
    let (out, response) = streamed(OCTET_STREAM);
    match control.spawn(&row, spawn_request(&q)).await? {
        Spawned::Session(chans) => {
            tracing::info!(box_id = %row.id, session = %chans.info.id, "HTTP exec started");
            tokio::spawn(carry(chans, stdin, out, shutdown.0));
        }
        Spawned::NotStarted(reason) => {
            tracing::info!(box_id = %row.id, "HTTP exec could not start its command");
            let text = not_started_text(&q.cmd.join(" "), &reason, false);
            tokio::spawn(async move {
                let mut out = Paced::new(out);
                let _ = out.send(frame(StreamId::Stderr, &text)).await
                    && out.send(exit_frame(EXIT_NOT_STARTED)).await;
            });
        }
    }
    Ok(response)
}

fn stdin_of(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "stdin is larger than {MAX_HTTP_STDIN} bytes; stream it over the exec WebSocket instead"
            ))
        } else {
            ApiError::bad_request(format!(
                "could not read the request body: {}",
                r.body_text()
            ))
        }
    })
}

/// Feeds stdin and sends the output as frames until the exit, the client
/// going away, the agent going away or the daemon shutting down. Stdin is
/// fed alongside, so a command that writes before it reads cannot stall on
/// a full output queue; returning drops both channels, which detaches.
async fn carry(
    chans: ExecChannels,
    stdin: Option<Bytes>,
    out: Chunks,
    mut shutdown: watch::Receiver<bool>,
) {
    // The hold keeps the box awake until the response ends.
    let ExecChannels {
        info,
        mut output,
        input,
        awake: _awake,
    } = chans;
    let mut out = Paced::new(out);
    let feeding = feed(&input, stdin);
    tokio::pin!(feeding);
    let mut fed = false;
    // Output taken from the session but not yet framed.
    let mut pending: VecDeque<Output> = VecDeque::new();
    loop {
        let next = tokio::select! {
            () = &mut feeding, if !fed => {
                fed = true;
                continue;
            }
            next = next_output(&mut pending, &mut output) => next,
            () = out.closed() => return,
            _ = shutdown.changed() => {
                let note = format!(
                    "bothy: the daemon is shutting down; session {} goes on without this client\n",
                    info.id
                );
                let _ = out.send(frame(StreamId::Stderr, note.as_bytes())).await;
                return;
            }
        };
        let (stream, data) = match next {
            Some(Output::Stdout(d)) => (StreamId::Stdout, d),
            Some(Output::Stderr(d)) => (StreamId::Stderr, d),
            Some(Output::Exit(code)) => {
                let _ = out.send(exit_frame(code)).await;
                return;
            }
            None => {
                // No exit frame: the client must not take this for an exit.
                let note = b"bothy: lost the connection to the box before the command ended\n";
                let _ = out.send(frame(StreamId::Stderr, note)).await;
                return;
            }
        };
        // What the session wrote during the pause joins this frame.
        out.ready().await;
        let payload = merge(stream, data, &mut pending, &mut output);
        if !out.send(frame(stream, &payload)).await {
            return;
        }
    }
}

async fn next_output(
    pending: &mut VecDeque<Output>,
    output: &mut mpsc::Receiver<Output>,
) -> Option<Output> {
    match pending.pop_front() {
        Some(o) => Some(o),
        None => output.recv().await,
    }
}

/// `data` and the output of the same stream already waiting after it, up to
/// [`MAX_FRAME`] bytes; the rest stays pending, in order.
fn merge(
    stream: StreamId,
    mut data: Vec<u8>,
    pending: &mut VecDeque<Output>,
    output: &mut mpsc::Receiver<Output>,
) -> Vec<u8> {
    while data.len() < MAX_FRAME {
        let more = pending.pop_front().or_else(|| output.try_recv().ok());
        match (stream, more) {
            (StreamId::Stdout, Some(Output::Stdout(d)))
            | (StreamId::Stderr, Some(Output::Stderr(d))) => data.extend_from_slice(&d),
            (_, Some(other)) => {
                pending.push_front(other);
                break;
            }
            (_, None) => break,
        }
    }
    if data.len() > MAX_FRAME {
        let rest = data.split_off(MAX_FRAME);
        pending.push_front(if stream == StreamId::Stdout {
            Output::Stdout(rest)
        } else {
            Output::Stderr(rest)
        });
    }
    data
}

/// Frames sent at least [`PACE`] apart.
struct Paced {
    out: Chunks,
    next_at: Instant,
}

impl Paced {
    fn new(out: Chunks) -> Self {
        Self {
            out,
            next_at: Instant::now(),
        }
    }

    /// Waits until the next frame may go.
    async fn ready(&self) {
        tokio::time::sleep_until(self.next_at).await;
    }

    async fn send(&mut self, chunk: Vec<u8>) -> bool {
        self.ready().await;
        let sent = self.out.send(chunk).await;
        self.next_at = Instant::now() + PACE;
        sent
    }

    async fn closed(&self) {
        self.out.closed().await
    }
}

/// Sends the stdin, then its end. The channel stays open: closing it
/// would detach.
async fn feed(input: &mpsc::Sender<Input>, stdin: Option<Bytes>) {
    if let Some(data) = stdin.filter(|d| !d.is_empty()) {
        for piece in pieces(Input::Stdin(data.to_vec())) {
            if input.send(piece).await.is_err() {
                return;
            }
        }
    }
    let _ = input.send(Input::StdinEof).await;
}
