//! Exec and attach over the WebSocket: connect, then split into a sender (stdin,
//! stdin EOF, resize) and a receiver of [`ExecEvent`]s.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::error::{ClientError, Result};
use crate::frame::{self, Decoded, ExecEvent, SessionInfo};

/// How long the server has to send `session_info` after the upgrade.
const SESSION_INFO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the upgrade may take; waking a sleeping box happens inside it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest message accepted from the server (the SDK's limit).
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What to run in a new exec session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecParams {
    /// Program and arguments; must not be empty.
    pub cmd: Vec<String>,
    /// Run under a PTY.
    pub tty: bool,
    /// Initial terminal size (TTY only).
    pub rows: u16,
    pub cols: u16,
    /// Extra environment, in order.
    pub env: Vec<(String, String)>,
    /// Working directory in the box.
    pub dir: Option<String>,
    /// Keep the process running this long after the client disconnects
    /// (server syntax, e.g. `30s`; `0` means forever).
    pub max_run_after_disconnect: Option<String>,
}

impl ExecParams {
    pub fn new(cmd: Vec<String>) -> Self {
        Self {
            cmd,
            tty: false,
            rows: 24,
            cols: 80,
            env: Vec::new(),
            dir: None,
            max_run_after_disconnect: None,
        }
    }

    /// Query string pairs in the order the SDK sends them.
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut q: Vec<(&'static str, String)> =
            self.cmd.iter().map(|a| ("cmd", a.clone())).collect();
        if let Some(first) = self.cmd.first() {
            q.push(("path", first.clone()));
        }
        q.extend(self.env.iter().map(|(k, v)| ("env", format!("{k}={v}"))));
        if let Some(dir) = &self.dir {
            q.push(("dir", dir.clone()));
        }
        if self.tty {
            q.push(("tty", "true".into()));
            q.push(("rows", self.rows.to_string()));
            q.push(("cols", self.cols.to_string()));
        }
        q.push(("stdin", "true".into()));
        if let Some(d) = &self.max_run_after_disconnect {
            q.push(("max_run_after_disconnect", d.clone()));
        }
        q
    }
}

/// The `ws://` or `wss://` twin of an `http(s)://` URL.
pub(crate) fn websocket_url(mut url: Url) -> Result<Url> {
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(ClientError::InvalidUrl {
                url: url.to_string(),
                reason: format!("scheme {other:?} is not http or https"),
            })
        }
    };
    url.set_scheme(scheme)
        .map_err(|()| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: "cannot be turned into a WebSocket URL".into(),
        })?;
    Ok(url)
}

/// An open exec connection, before it is split.
pub struct ExecConnection {
    ws: Ws,
    tty: bool,
    info: Option<SessionInfo>,
    /// Events that arrived while waiting for `session_info`.
    pending: VecDeque<ExecEvent>,
}

impl ExecConnection {
    /// Connects to `url` (already `ws(s)://`). `tty` is the mode asked for, or
    /// `None` when attaching, where only the server knows.
    pub(crate) async fn connect(
        url: Url,
        token: &str,
        api_url: &str,
        tty: Option<bool>,
    ) -> Result<Self> {
        let ws = open_websocket(url, token, api_url).await?;
        let mut conn = Self {
            ws,
            tty: tty.unwrap_or(false),
            info: None,
            pending: VecDeque::new(),
        };
        conn.read_session_info(tty.is_none()).await?;
        Ok(conn)
    }

    /// Reads up to the `session_info` message, which fixes the TTY mode. When
    /// attaching it is required: without it binary frames cannot be decoded.
    async fn read_session_info(&mut self, required: bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + SESSION_INFO_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
            let message = match next {
                Err(_) if required => {
                    return Err(ClientError::Protocol(
                        "the daemon sent no session_info within 10 s".into(),
                    ))
                }
                Err(_) => return Ok(()),
                Ok(None) => return Ok(()),
                Ok(Some(m)) => m.map_err(transport_error)?,
            };
            match frame::decode(self.tty, message) {
                Decoded::Event(ExecEvent::SessionInfo(info)) => {
                    self.tty = info.tty;
                    self.pending.push_back(ExecEvent::SessionInfo(info.clone()));
                    self.info = Some(info);
                    return Ok(());
                }
                Decoded::Event(other) if !required => {
                    // An older server that skips session_info: keep the event.
                    self.pending.push_back(other);
                    return Ok(());
                }
                Decoded::Event(ExecEvent::Exit(code)) => {
                    self.pending.push_back(ExecEvent::Exit(code));
                    return Ok(());
                }
                Decoded::Event(_) | Decoded::Nothing => continue,
                Decoded::Closed if required => {
                    return Err(ClientError::Protocol(
                        "the daemon closed the connection before session_info".into(),
                    ))
                }
                Decoded::Closed => return Ok(()),
            }
        }
    }

    /// The session's `session_info`, if the server sent one.
    pub fn session_info(&self) -> Option<&SessionInfo> {
        self.info.as_ref()
    }

    /// Whether the session runs under a PTY.
    pub fn tty(&self) -> bool {
        self.tty
    }

    /// Splits into a sender and a receiver that can be used from two tasks.
    pub fn split(self) -> (ExecSender, ExecReceiver) {
        let (sink, stream) = self.ws.split();
        (
            ExecSender {
                sink,
                tty: self.tty,
            },
            ExecReceiver {
                stream,
                tty: self.tty,
                pending: self.pending,
                finished: false,
            },
        )
    }
}

/// Sends stdin, stdin EOF and terminal size to the session.
pub struct ExecSender {
    sink: SplitSink<Ws, Message>,
    tty: bool,
}

impl ExecSender {
    /// Sends bytes to the process's stdin (or terminal).
    pub async fn send_stdin(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.send(frame::encode_stdin(self.tty, data)).await
    }

    /// Closes the process's stdin. Does nothing in TTY mode.
    pub async fn send_stdin_eof(&mut self) -> Result<()> {
        match frame::encode_stdin_eof(self.tty) {
            Some(m) => self.send(m).await,
            None => Ok(()),
        }
    }

    /// Tells the PTY its new size. Does nothing in non-TTY mode.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> Result<()> {
        if !self.tty {
            return Ok(());
        }
        self.send(frame::encode_resize(cols, rows)).await
    }

    /// Closes the connection (the session lives on as the server decides).
    pub async fn close(&mut self) -> Result<()> {
        self.sink.close().await.map_err(transport_error)
    }

    async fn send(&mut self, m: Message) -> Result<()> {
        self.sink.send(m).await.map_err(transport_error)
    }
}

/// Yields what the session says, ending after [`ExecEvent::Exit`].
pub struct ExecReceiver {
    stream: SplitStream<Ws>,
    tty: bool,
    pending: VecDeque<ExecEvent>,
    finished: bool,
}

impl ExecReceiver {
    /// The next event; `Ok(None)` after the exit event or when the server closed
    /// the connection (then no exit code is known: the caller decides what that means).
    pub async fn next_event(&mut self) -> Result<Option<ExecEvent>> {
        if let Some(e) = self.pending.pop_front() {
            self.note(&e);
            return Ok(Some(e));
        }
        if self.finished {
            return Ok(None);
        }
        while let Some(message) = self.stream.next().await {
            match frame::decode(self.tty, message.map_err(transport_error)?) {
                Decoded::Event(e) => {
                    self.note(&e);
                    return Ok(Some(e));
                }
                Decoded::Nothing => continue,
                Decoded::Closed => break,
            }
        }
        self.finished = true;
        Ok(None)
    }

    fn note(&mut self, e: &ExecEvent) {
        match e {
            ExecEvent::Exit(_) => self.finished = true,
            ExecEvent::SessionInfo(info) => self.tty = info.tty,
            _ => {}
        }
    }
}

/// Opens a WebSocket to `url` (already `ws(s)://`) with the token; API
/// errors in the handshake come back as the error answer they are.
pub(crate) async fn open_websocket(url: Url, token: &str, api_url: &str) -> Result<Ws> {
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    let auth =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ClientError::InvalidToken)?;
    request.headers_mut().insert("authorization", auth);
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let (ws, _response) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| {
            ClientError::Transport(format!(
                "the daemon at {api_url} did not open the connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| handshake_error(e, api_url))?;
    Ok(ws)
}

pub(crate) fn transport_error(e: tungstenite::Error) -> ClientError {
    ClientError::Transport(e.to_string())
}

fn handshake_error(e: tungstenite::Error, api_url: &str) -> ClientError {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            ClientError::from_error_answer(status, body)
        }
        tungstenite::Error::Io(io) if is_unreachable(&io) => ClientError::Unreachable {
            url: api_url.to_string(),
            detail: io.to_string(),
        },
        other => ClientError::Transport(other.to_string()),
    }
}

fn is_unreachable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | NotFound | AddrNotAvailable | HostUnreachable | NetworkUnreachable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_follows_the_sdk() {
        let mut p = ExecParams::new(vec!["sh".into(), "-c".into(), "echo a&b".into()]);
        p.env = vec![("A".into(), "1=2".into())];
        p.dir = Some("/tmp".into());
        p.tty = true;
        p.rows = 30;
        p.cols = 100;
        let q = p.query_pairs();
        let expect: Vec<(&str, String)> = vec![
            ("cmd", "sh".into()),
            ("cmd", "-c".into()),
            ("cmd", "echo a&b".into()),
            ("path", "sh".into()),
            ("env", "A=1=2".into()),
            ("dir", "/tmp".into()),
            ("tty", "true".into()),
            ("rows", "30".into()),
            ("cols", "100".into()),
            ("stdin", "true".into()),
        ];
        assert_eq!(q, expect);
    }

    #[test]
    fn non_tty_query_has_no_size() {
        let q = ExecParams::new(vec!["true".into()]).query_pairs();
        assert!(!q.iter().any(|(k, _)| *k == "tty" || *k == "rows"));
    }

    #[test]
    fn websocket_scheme_follows_http_scheme() {
        let ws = websocket_url(Url::parse("http://127.0.0.1:7070/v1").expect("url")).expect("ws");
        assert_eq!(ws.as_str(), "ws://127.0.0.1:7070/v1");
        let wss = websocket_url(Url::parse("https://h/").expect("url")).expect("wss");
        assert_eq!(wss.scheme(), "wss");
        assert!(websocket_url(Url::parse("ftp://h/").expect("url")).is_err());
    }
}
