//! The daemon's side of the agent protocol.
//!
//! The agent is inside the box, so its answers are as untrusted as anything
//! else from the box: frames are bounded, the request phase has deadlines,
//! and nothing it sends can make the client panic.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::UnixStream;

mod fs;
pub use fs::{FsDownload, FsUpload};

use crate::proto::{
    ErrorKind, Frame, FrameError, FrameReader, Input, Output, Reply, Request, ServiceEvent,
    ServiceInfo, SessionInfo, SpawnRequest, MAX_PAYLOAD,
};

/// Longest wait for the agent to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the agent's reply to a request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent's socket could not be reached (box stopped or starting).
    #[error("the box's agent is not reachable: {0}")]
    Unreachable(std::io::Error),
    #[error("no such session: {0}")]
    NoSuchSession(String),
    /// The command could not be started (not found, bad dir, ...).
    #[error("{0}")]
    Spawn(String),
    #[error("{0}")]
    NoSuchService(String),
    /// The request clashes with the box's services (port taken, not running).
    #[error("{0}")]
    Conflict(String),
    #[error("agent protocol error: {0}")]
    Protocol(String),
    /// A filesystem operation failed in the box.
    #[error(transparent)]
    Fs(crate::proto::FsError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<FrameError> for AgentError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => AgentError::Io(e),
            other => AgentError::Protocol(other.to_string()),
        }
    }
}

pub struct AgentClient {
    socket: PathBuf,
}

/// Both halves of a connection; the connection closes once both are dropped
/// (so dropping only the writer does not look like a detach to the agent).
type Connection = (FrameReader<ReadHalf<UnixStream>>, WriteHalf<UnixStream>);

impl AgentClient {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    pub async fn ping(&self) -> Result<(), AgentError> {
        match self.request(Request::Ping).await?.0 {
            Reply::Pong => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts a session and attaches to it. A command that cannot be started
    /// is [`AgentError::Spawn`] with a message for the user.
    pub async fn spawn(&self, req: SpawnRequest) -> Result<AgentSession, AgentError> {
        self.session(Request::Spawn(req)).await
    }

    /// Attaches to a session (running, or finished with its exit not yet
    /// collected), taking it over from any other client. Output produced
    /// while detached comes first.
    pub async fn attach(&self, id: &str) -> Result<AgentSession, AgentError> {
        self.session(Request::Attach { id: id.to_string() }).await
    }

    pub async fn list(&self) -> Result<Vec<SessionInfo>, AgentError> {
        match self.request(Request::List).await?.0 {
            Reply::Sessions { sessions } => Ok(sessions),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends `signal` (a number) to the session's process group.
    pub async fn kill(&self, id: &str, signal: i32) -> Result<(), AgentError> {
        let req = Request::Kill {
            id: id.to_string(),
            signal,
        };
        match self.request(req).await?.0 {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// A service request answered by `done`.
    pub async fn service(&self, req: Request) -> Result<(), AgentError> {
        match self.request(req).await?.0 {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn services(&self) -> Result<Vec<ServiceInfo>, AgentError> {
        match self.request(Request::ServiceList).await?.0 {
            Reply::Services { services } => Ok(services),
            other => Err(unexpected(&other)),
        }
    }

    /// The end of a service's log and its path in the box.
    pub async fn service_log(
        &self,
        name: &str,
        max_bytes: u64,
    ) -> Result<(String, String), AgentError> {
        let req = Request::ServiceLogs {
            name: name.to_string(),
            max_bytes,
        };
        match self.request(req).await?.0 {
            Reply::Log { text, path } => Ok((text, path)),
            other => Err(unexpected(&other)),
        }
    }

    /// What happens to a service for `duration`: events until then.
    pub async fn watch_service(
        &self,
        name: &str,
        duration: std::time::Duration,
    ) -> Result<tokio::sync::mpsc::Receiver<ServiceEvent>, AgentError> {
        self.service_stream(Request::ServiceWatch {
            name: name.to_string(),
            duration_ms: duration.as_millis() as u64,
        })
        .await
    }

    /// A request answered by `done` and then service events until the agent
    /// closes (watch, and put or start with `follow_ms`).
    pub async fn service_stream(
        &self,
        req: Request,
    ) -> Result<tokio::sync::mpsc::Receiver<ServiceEvent>, AgentError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(AgentError::Unreachable)?;
        let (reader, mut writer) = tokio::io::split(stream);
        writer.write_all(&Frame::Request(req).encode()?).await?;
        let mut reader = FrameReader::new(reader);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        // `done` once the agent has subscribed, or a refusal.
        let first = tokio::time::timeout(REPLY_TIMEOUT, reader.next())
            .await
            .map_err(|_| AgentError::Protocol("the agent did not answer a watch".into()))??;
        match first {
            Some(Frame::Reply(Reply::Done)) => {}
            Some(Frame::Reply(Reply::Error { kind, message })) => {
                return Err(match kind {
                    ErrorKind::NoSuchService => AgentError::NoSuchService(message),
                    ErrorKind::Conflict => AgentError::Conflict(message),
                    ErrorKind::Spawn => AgentError::Spawn(message),
                    _ => AgentError::Protocol(message),
                })
            }
            _ => {
                return Err(AgentError::Protocol(
                    "unexpected answer to a service request".into(),
                ))
            }
        }
        tokio::spawn(async move {
            let _writer = writer;
            let mut next = reader.next().await.ok().flatten();
            while let Some(Frame::Reply(Reply::ServiceEvent { event })) = next {
                if tx.send(event).await.is_err() {
                    return;
                }
                next = match reader.next().await {
                    Ok(n) => n,
                    Err(_) => return,
                };
            }
        });
        Ok(rx)
    }

    async fn session(&self, req: Request) -> Result<AgentSession, AgentError> {
        let (reply, (reader, writer)) = self.request(req).await?;
        match reply {
            Reply::Session { session } => Ok(AgentSession {
                info: session,
                reader,
                writer,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Connects, sends `req` and reads the reply; error replies become errors.
    async fn request(&self, req: Request) -> Result<(Reply, Connection), AgentError> {
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(AgentError::Unreachable(e)),
                Err(_) => {
                    return Err(AgentError::Unreachable(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no answer from {} within {:?}",
                            self.socket.display(),
                            CONNECT_TIMEOUT
                        ),
                    )))
                }
            };
        let (reader, mut writer) = tokio::io::split(stream);
        let mut reader = FrameReader::new(reader);
        let exchange = async {
            writer.write_all(&Frame::Request(req).encode()?).await?;
            reader.next().await.map_err(AgentError::from)
        };
        let reply = match tokio::time::timeout(REPLY_TIMEOUT, exchange).await {
            Err(_) => {
                return Err(AgentError::Protocol(format!(
                    "the agent did not answer within {REPLY_TIMEOUT:?}"
                )))
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) => {
                return Err(AgentError::Protocol(
                    "the agent closed the connection without answering".into(),
                ))
            }
            Ok(Ok(Some(Frame::Reply(reply)))) => reply,
            Ok(Ok(Some(_))) => {
                return Err(AgentError::Protocol(
                    "the agent answered with a non-reply frame".into(),
                ))
            }
        };
        match reply {
            Reply::Error { kind, message } => Err(match kind {
                ErrorKind::NoSuchSession => AgentError::NoSuchSession(message),
                ErrorKind::NoSuchService => AgentError::NoSuchService(message),
                ErrorKind::Conflict => AgentError::Conflict(message),
                ErrorKind::Spawn => AgentError::Spawn(message),
                ErrorKind::BadRequest | ErrorKind::Busy => AgentError::Protocol(message),
            }),
            reply => Ok((reply, (reader, writer))),
        }
    }
}

fn unexpected(reply: &Reply) -> AgentError {
    let what = match reply {
        Reply::Pong => "pong",
        Reply::Session { .. } => "session",
        Reply::Sessions { .. } => "sessions",
        Reply::Done => "done",
        Reply::Services { .. } => "services",
        Reply::ServiceEvent { .. } => "service event",
        Reply::Log { .. } => "log",
        Reply::Fs(_) => "fs",
        Reply::Error { .. } => "error",
    };
    AgentError::Protocol(format!("unexpected {what} reply from the agent"))
}

/// A session this client is attached to. Dropping both halves detaches
/// without ending the process.
pub struct AgentSession {
    info: SessionInfo,
    reader: FrameReader<ReadHalf<UnixStream>>,
    writer: WriteHalf<UnixStream>,
}

impl AgentSession {
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    pub fn split(self) -> (SessionReader, SessionWriter) {
        (
            SessionReader {
                frames: self.reader,
                done: false,
            },
            SessionWriter { half: self.writer },
        )
    }
}

pub struct SessionReader {
    frames: FrameReader<ReadHalf<UnixStream>>,
    done: bool,
}

impl SessionReader {
    /// `Ok(None)` after `Exit` has been returned or the agent went away.
    pub async fn next(&mut self) -> Result<Option<Output>, AgentError> {
        if self.done {
            return Ok(None);
        }
        let frame = match self.frames.next().await {
            Ok(frame) => frame,
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => None,
            Err(FrameError::Truncated) => None,
            Err(e) => {
                self.done = true;
                return Err(e.into());
            }
        };
        match frame {
            None => {
                self.done = true;
                Ok(None)
            }
            Some(Frame::Output(output)) => {
                self.done = matches!(output, Output::Exit(_));
                Ok(Some(output))
            }
            Some(_) => {
                self.done = true;
                Err(AgentError::Protocol(
                    "the agent sent a frame that is not session output".into(),
                ))
            }
        }
    }
}

pub struct SessionWriter {
    half: WriteHalf<UnixStream>,
}

impl SessionWriter {
    pub async fn send(&mut self, input: Input) -> Result<(), AgentError> {
        match input {
            Input::Stdin(data) => {
                for chunk in data.chunks(MAX_PAYLOAD) {
                    let frame = Frame::Input(Input::Stdin(chunk.to_vec())).encode()?;
                    self.half.write_all(&frame).await?;
                }
            }
            other => self.half.write_all(&Frame::Input(other).encode()?).await?,
        }
        Ok(())
    }
}
