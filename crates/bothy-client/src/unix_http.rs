//! One HTTP/1.1 exchange over a unix socket (reqwest dials only TCP): a new
//! connection per request, as the box's control socket expects few and
//! short-lived callers.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::{innermost_cause, ClientError, Result};

/// Longest the daemon may stay silent: checkpointing a large disk or booting
/// the box again after a restore takes a while, silence this long is a hung
/// daemon.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// An answer whose body is still on the wire.
pub(crate) struct Answer {
    pub status: u16,
    body: Incoming,
    /// Bytes read but not yet handed out as a line.
    pending: Vec<u8>,
}

/// Sends `method target` with an optional JSON body over the socket at `socket`.
pub(crate) async fn send(
    socket: &Path,
    method: Method,
    target: &str,
    json_body: Option<Vec<u8>>,
) -> Result<Answer> {
    let stream = UnixStream::connect(socket).await.map_err(|source| {
        ClientError::ControlSocketUnreachable {
            path: socket.display().to_string(),
            source,
        }
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(from_hyper)?;
    // The connection needs driving while the answer is read; its failures
    // reach the caller through the answer and its body, so the task's own
    // result says nothing new.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .header(HOST, "bothy");
    if json_body.is_some() {
        request = request.header(CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(json_body.unwrap_or_default())))
        .map_err(|e| ClientError::Protocol(format!("cannot build the request: {e}")))?;
    let response = within_idle(sender.send_request(request))
        .await?
        .map_err(from_hyper)?;
    Ok(Answer {
        status: response.status().as_u16(),
        body: response.into_body(),
        pending: Vec::new(),
    })
}

impl Answer {
    pub fn is_error(&self) -> bool {
        self.status >= 400
    }

    /// The rest of the body.
    pub async fn read_all(mut self) -> Result<Vec<u8>> {
        let mut all = std::mem::take(&mut self.pending);
        while let Some(data) = self.next_data().await? {
            all.extend_from_slice(&data);
        }
        Ok(all)
    }

    /// The next line of the body without its newline, or the unterminated
    /// rest at its end; `None` once the body is over.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=end).collect();
                line.pop();
                return Ok(Some(line));
            }
            match self.next_data().await? {
                Some(data) => self.pending.extend_from_slice(&data),
                None if self.pending.is_empty() => return Ok(None),
                None => return Ok(Some(std::mem::take(&mut self.pending))),
            }
        }
    }

    /// The next data frame; trailers are skipped.
    async fn next_data(&mut self) -> Result<Option<Bytes>> {
        loop {
            let Some(frame) = within_idle(self.body.frame()).await? else {
                return Ok(None);
            };
            if let Ok(data) = frame.map_err(from_hyper)?.into_data() {
                return Ok(Some(data));
            }
        }
    }
}

async fn within_idle<F: std::future::Future>(f: F) -> Result<F::Output> {
    tokio::time::timeout(IDLE_TIMEOUT, f).await.map_err(|_| {
        ClientError::Transport(format!(
            "the daemon sent nothing for {} s",
            IDLE_TIMEOUT.as_secs()
        ))
    })
}

/// A connection the other side closed or reset is [`ClientError::Disconnected`]:
/// callers that expect the other side to go away (a restore from inside the
/// box) tell it from other failures.
fn from_hyper(e: hyper::Error) -> ClientError {
    let detail = innermost_cause(&e);
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() || broke_off(&e) {
        ClientError::Disconnected(detail)
    } else {
        ClientError::Transport(detail)
    }
}

fn broke_off(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}
