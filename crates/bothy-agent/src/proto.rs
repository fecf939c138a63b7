//! Frames between the daemon and the in-box agent.
//!
//! A connection carries one request. Every frame is
//!
//! ```text
//! u32 big-endian length of what follows | u8 kind | payload
//! ```
//!
//! | kind | name      | direction       | payload                              |
//! |------|-----------|-----------------|--------------------------------------|
//! | 1    | request   | client → agent  | JSON [`Request`]                     |
//! | 2    | reply     | agent → client  | JSON [`Reply`]                       |
//! | 16   | stdin     | client → agent  | raw bytes                            |
//! | 17   | stdin EOF | client → agent  | empty                                |
//! | 18   | resize    | client → agent  | u16 BE cols, u16 BE rows             |
//! | 19   | signal    | client → agent  | i32 BE signal number                 |
//! | 32   | stdout    | agent → client  | raw bytes (all terminal output)      |
//! | 33   | stderr    | agent → client  | raw bytes                            |
//! | 34   | exit      | agent → client  | i32 BE exit code (128 + signal)      |
//! | 48   | data      | both            | raw file bytes (fs read and write)   |
//! | 49   | data end  | both            | empty: the file's bytes are complete |
//!
//! `spawn` and `attach` are answered by a `session` reply, then the connection
//! carries data frames both ways until the agent sends `exit` (and closes) or
//! either side closes. `fs` requests (module `fs`) are answered by `fs`
//! replies; a read's `opened` reply is followed by data frames and a data
//! end, a write's `ready` reply by the client's data frames and data end,
//! then `written`. The agent accepts anyone who can reach its socket,
//! including processes in the box, so both sides bound every frame
//! ([`MAX_PAYLOAD`]) and turn anything malformed into an error, never a panic.

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// What to run in a new session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// argv; `cmd[0]` is looked up in PATH.
    pub cmd: Vec<String>,
    /// Extra environment, `KEY=VALUE`, over the default environment.
    pub env: Vec<String>,
    /// Working directory; default `/root`.
    pub dir: Option<String>,
    pub tty: bool,
    pub cols: u16,
    pub rows: u16,
    /// Keep running this long after the last client detaches; `None` = the
    /// default (TTY: forever, non-TTY: 10 s); `Some(0)` = forever.
    pub max_run_after_disconnect_ms: Option<u64>,
}

/// A session as the agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    /// argv joined with spaces.
    pub command: String,
    pub workdir: String,
    pub tty: bool,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub last_activity_ms: u64,
    /// A client is attached right now.
    pub attached: bool,
    pub pid: i32,
    /// Set once the process has ended.
    pub exit_code: Option<i32>,
}

/// Client → session.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Stdin(Vec<u8>),
    /// Closes the process's stdin (non-TTY). Ignored in TTY mode, where the
    /// terminal has no end of input: send `^D` as stdin instead.
    StdinEof,
    Resize {
        cols: u16,
        rows: u16,
    },
    /// Sends this signal to the session's process group. It takes effect when
    /// the agent reads it, ahead of stdin still waiting for the process.
    Signal(i32),
}

/// Session → client. In TTY mode all terminal output is `Stdout`.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The process ended: its exit code, or 128 + signal number.
    Exit(i32),
}

/// First frame of every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Spawn(SpawnRequest),
    Attach {
        id: String,
    },
    List,
    Kill {
        id: String,
        signal: i32,
    },
    /// Creates or replaces a service and starts it. With `follow_ms`, the
    /// `done` reply is followed by `service_event` replies for that long
    /// (from before the start on).
    ServicePut {
        name: String,
        def: ServiceDef,
        #[serde(default)]
        follow_ms: u64,
    },
    ServiceDelete {
        name: String,
    },
    ServiceList,
    ServiceStart {
        name: String,
        #[serde(default)]
        follow_ms: u64,
    },
    ServiceStop {
        name: String,
        timeout_ms: Option<u64>,
    },
    ServiceSignal {
        name: String,
        signal: i32,
    },
    /// Answered by `service_event` replies as things happen, for
    /// `duration_ms`, then the connection closes.
    ServiceWatch {
        name: String,
        duration_ms: u64,
    },
    /// The end of the service's log (at most `max_bytes`).
    ServiceLogs {
        name: String,
        max_bytes: u64,
    },
    /// A filesystem operation in the box, as the box's root.
    Fs(FsRequest),
}

/// A filesystem operation. Every path is resolved by the agent, in the
/// box's mount namespace and under its root: a relative `path` is taken
/// from `working_dir` (absolute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fs_op", rename_all = "snake_case")]
pub enum FsRequest {
    /// Answered by `opened`, data frames and a data end (or `failed`).
    Read { path: String, working_dir: String },
    /// Answered by `ready`; the client then sends data frames and a data
    /// end, and the agent answers `written` once the file is in place.
    Write {
        path: String,
        working_dir: String,
        /// Permission bits; `None` keeps those of the file it replaces
        /// (0644 for a new file).
        mode: Option<u32>,
        mkdir_parents: bool,
    },
    /// Answered by `entries` replies, the last with `more: false`.
    List {
        path: String,
        working_dir: String,
        recursive: bool,
        /// A glob on entry names (`*`, `?`, `[...]`).
        pattern: Option<String>,
    },
    Delete {
        path: String,
        working_dir: String,
        recursive: bool,
    },
    Rename {
        source: String,
        dest: String,
        working_dir: String,
    },
    Copy {
        source: String,
        dest: String,
        working_dir: String,
        recursive: bool,
        preserve_attrs: bool,
    },
    Chmod {
        path: String,
        working_dir: String,
        mode: u32,
        recursive: bool,
    },
    Chown {
        path: String,
        working_dir: String,
        uid: Option<FsOwner>,
        gid: Option<FsOwner>,
        recursive: bool,
    },
    /// Answered by `subscribed`, then `event` replies until the client
    /// closes the connection.
    Watch {
        paths: Vec<String>,
        working_dir: String,
        recursive: bool,
    },
}

/// A user or group: a number, or a name looked up in the box's
/// `/etc/passwd` or `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FsOwner {
    Id(u32),
    Name(String),
}

/// A file as the fs API describes it (the field names are the wire's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsEntry {
    /// The base name; in a recursive listing, the path below the listed
    /// directory.
    pub name: String,
    pub path: String,
    /// `file`, `directory`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    /// Permission bits as four octal digits (`0644`).
    pub mode: String,
    /// RFC 3339, UTC, milliseconds.
    #[serde(rename = "modTime")]
    pub mod_time: String,
    #[serde(rename = "isDir")]
    pub is_dir: bool,
}

/// Something that happened under a watched path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsEvent {
    pub path: String,
    /// `create`, `write`, `remove`, `rename` or `chmod`.
    pub event: String,
    pub size: u64,
    #[serde(rename = "isDir")]
    pub is_dir: bool,
    /// Unix milliseconds.
    pub timestamp_ms: u64,
}

/// Why a filesystem operation failed, as errno names the SDKs know.
// The variants are the errno names the wire carries.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsCode {
    ENOENT,
    EEXIST,
    ENOTDIR,
    EISDIR,
    EACCES,
    EPERM,
    ENOTEMPTY,
    EINVAL,
    EIO,
}

impl FsCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ENOENT => "ENOENT",
            Self::EEXIST => "EEXIST",
            Self::ENOTDIR => "ENOTDIR",
            Self::EISDIR => "EISDIR",
            Self::EACCES => "EACCES",
            Self::EPERM => "EPERM",
            Self::ENOTEMPTY => "ENOTEMPTY",
            Self::EINVAL => "EINVAL",
            Self::EIO => "EIO",
        }
    }
}

/// A failed filesystem operation: what, why, and on which path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct FsError {
    pub code: FsCode,
    pub message: String,
    pub path: String,
}

impl FsError {
    pub fn new(code: FsCode, message: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            path: path.into(),
        }
    }
}

/// The agent's answers to [`FsRequest`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fs", rename_all = "snake_case")]
pub enum FsReply {
    /// A read: the file is open; its bytes follow.
    Opened {
        size: u64,
    },
    /// A write: the temporary file is made; send the bytes.
    Ready,
    /// A write is complete: the file as it now is.
    Written {
        entry: FsEntry,
    },
    Entries {
        entries: Vec<FsEntry>,
        more: bool,
    },
    /// How many files an operation changed.
    Count {
        count: u64,
    },
    Subscribed {
        paths: Vec<String>,
    },
    Event {
        event: FsEvent,
    },
    Failed {
        error: FsError,
    },
}

/// A service as it is defined: what the box's init keeps running.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDef {
    pub cmd: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Services started before this one.
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
}

/// What a service is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// `stopped`, `starting`, `running`, `stopping` or `failed`.
    pub status: String,
    pub pid: Option<i32>,
    pub started_ms: Option<u64>,
    pub error: Option<String>,
    pub restart_count: u32,
    pub next_restart_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub def: ServiceDef,
    pub state: ServiceState,
}

/// Something that happened to a service: `started`, `stdout`, `stderr`,
/// `exit`, `stopping`, `stopped`, `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub kind: String,
    pub data: Option<String>,
    pub exit_code: Option<i32>,
    pub timestamp_ms: u64,
}

/// The agent's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Pong,
    /// `spawn`/`attach` succeeded; session frames follow.
    Session {
        session: SessionInfo,
    },
    Sessions {
        sessions: Vec<SessionInfo>,
    },
    Services {
        services: Vec<ServiceInfo>,
    },
    ServiceEvent {
        event: ServiceEvent,
    },
    Log {
        text: String,
        path: String,
    },
    /// `kill` succeeded.
    Done,
    Fs(FsReply),
    Error {
        kind: ErrorKind,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NoSuchSession,
    NoSuchService,
    /// The request clashes with the services there are (the HTTP port is
    /// taken, the service is not running).
    Conflict,
    /// The command could not be started.
    Spawn,
    /// The request was malformed or not allowed.
    BadRequest,
    /// The agent is at a limit (connections, sessions); try again later.
    Busy,
}

/// Largest payload of one frame. Data is split into frames of at most this.
pub const MAX_PAYLOAD: usize = 1 << 20;

const HEADER_LEN: usize = 4;

/// Largest frame on the wire (header, kind byte, payload): whatever a
/// length prefix claims, a reader never sets aside more than this for one
/// frame.
pub const MAX_FRAME: usize = HEADER_LEN + 1 + MAX_PAYLOAD;
const KIND_REQUEST: u8 = 1;
const KIND_REPLY: u8 = 2;
const KIND_STDIN: u8 = 16;
const KIND_STDIN_EOF: u8 = 17;
const KIND_RESIZE: u8 = 18;
const KIND_SIGNAL: u8 = 19;
const KIND_STDOUT: u8 = 32;
const KIND_STDERR: u8 = 33;
const KIND_EXIT: u8 = 34;
const KIND_DATA: u8 = 48;
const KIND_DATA_END: u8 = 49;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Request(Request),
    Reply(Reply),
    Input(Input),
    Output(Output),
    /// File bytes of an fs read or write.
    Data(Vec<u8>),
    /// The end of an fs read's or write's bytes.
    DataEnd,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the limit of {MAX_PAYLOAD} bytes")]
    TooLarge(usize),
    #[error("empty frame (no kind byte)")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Frame {
    /// The frame as bytes on the wire.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Request(r) => (KIND_REQUEST, json(r)?.into()),
            Frame::Reply(r) => (KIND_REPLY, json(r)?.into()),
            Frame::Input(Input::Stdin(d)) => (KIND_STDIN, d.as_slice().into()),
            Frame::Input(Input::StdinEof) => (KIND_STDIN_EOF, (&[][..]).into()),
            Frame::Input(Input::Resize { cols, rows }) => {
                let mut p = cols.to_be_bytes().to_vec();
                p.extend_from_slice(&rows.to_be_bytes());
                (KIND_RESIZE, p.into())
            }
            Frame::Input(Input::Signal(signal)) => {
                (KIND_SIGNAL, signal.to_be_bytes().to_vec().into())
            }
            Frame::Output(Output::Stdout(d)) => (KIND_STDOUT, d.as_slice().into()),
            Frame::Output(Output::Stderr(d)) => (KIND_STDERR, d.as_slice().into()),
            Frame::Output(Output::Exit(code)) => (KIND_EXIT, code.to_be_bytes().to_vec().into()),
            Frame::Data(d) => (KIND_DATA, d.as_slice().into()),
            Frame::DataEnd => (KIND_DATA_END, (&[][..]).into()),
        };
        encode_raw(kind, &payload)
    }

    /// Takes one complete frame off the front of `buf`; `Ok(None)` when `buf`
    /// does not hold a whole frame yet.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len - 1 > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len - 1));
        }
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let body = buf.split_to(len);
        parse(body[0], &body[1..]).map(Some)
    }
}

/// A data frame without copying `payload` into a [`Frame`] first.
pub(crate) fn encode_data(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    encode_raw(KIND_DATA, payload)
}

/// An output frame without copying `payload` into an [`Output`] first.
pub(crate) fn encode_output(stderr: bool, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    encode_raw(if stderr { KIND_STDERR } else { KIND_STDOUT }, payload)
}

fn encode_raw(kind: u8, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(payload.len()));
    }
    // Cannot overflow: payload.len() <= MAX_PAYLOAD.
    let len = (payload.len() + 1) as u32;
    let mut out = Vec::with_capacity(HEADER_LEN + 1 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    Ok(out)
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    serde_json::to_vec(value).map_err(|e| FrameError::Malformed(e.to_string()))
}

fn parse(kind: u8, payload: &[u8]) -> Result<Frame, FrameError> {
    let malformed = |e: serde_json::Error| FrameError::Malformed(e.to_string());
    Ok(match kind {
        KIND_REQUEST => Frame::Request(serde_json::from_slice(payload).map_err(malformed)?),
        KIND_REPLY => Frame::Reply(serde_json::from_slice(payload).map_err(malformed)?),
        KIND_STDIN => Frame::Input(Input::Stdin(payload.to_vec())),
        KIND_STDIN_EOF => Frame::Input(Input::StdinEof),
        KIND_RESIZE => match payload {
            [c0, c1, r0, r1] => Frame::Input(Input::Resize {
                cols: u16::from_be_bytes([*c0, *c1]),
                rows: u16::from_be_bytes([*r0, *r1]),
            }),
            _ => return Err(FrameError::Malformed("resize needs 4 bytes".into())),
        },
        KIND_SIGNAL => match payload {
            [a, b, c, d] => Frame::Input(Input::Signal(i32::from_be_bytes([*a, *b, *c, *d]))),
            _ => return Err(FrameError::Malformed("signal needs 4 bytes".into())),
        },
        KIND_STDOUT => Frame::Output(Output::Stdout(payload.to_vec())),
        KIND_STDERR => Frame::Output(Output::Stderr(payload.to_vec())),
        KIND_EXIT => match payload {
            [a, b, c, d] => Frame::Output(Output::Exit(i32::from_be_bytes([*a, *b, *c, *d]))),
            _ => return Err(FrameError::Malformed("exit needs 4 bytes".into())),
        },
        KIND_DATA => Frame::Data(payload.to_vec()),
        KIND_DATA_END if payload.is_empty() => Frame::DataEnd,
        KIND_DATA_END => return Err(FrameError::Malformed("data end carries no payload".into())),
        other => return Err(FrameError::UnknownKind(other)),
    })
}

/// Reads frames from a byte stream. `next` is cancel-safe: bytes read so far
/// stay buffered, so it can sit in a `select!`.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// The next frame; `Ok(None)` when the peer closed between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(frame) = Frame::decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut buf = BytesMut::from(&frame.encode().unwrap()[..]);
        assert_eq!(Frame::decode(&mut buf).unwrap(), Some(frame));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_kind_round_trips() {
        round_trip(Frame::Request(Request::Ping));
        round_trip(Frame::Request(Request::Spawn(SpawnRequest {
            cmd: vec!["echo".into(), "hi".into()],
            env: vec!["A=b".into()],
            dir: Some("/tmp".into()),
            tty: true,
            cols: 80,
            rows: 24,
            max_run_after_disconnect_ms: Some(0),
        })));
        round_trip(Frame::Request(Request::Kill {
            id: "1".into(),
            signal: 9,
        }));
        round_trip(Frame::Reply(Reply::Error {
            kind: ErrorKind::Spawn,
            message: "x".into(),
        }));
        round_trip(Frame::Input(Input::Stdin(b"abc".to_vec())));
        round_trip(Frame::Input(Input::StdinEof));
        round_trip(Frame::Input(Input::Resize { cols: 300, rows: 2 }));
        round_trip(Frame::Input(Input::Signal(15)));
        round_trip(Frame::Output(Output::Stdout(vec![0; 10])));
        round_trip(Frame::Output(Output::Stderr(vec![])));
        round_trip(Frame::Output(Output::Exit(-3)));
        round_trip(Frame::Data(vec![1, 2, 3]));
        round_trip(Frame::DataEnd);
        round_trip(Frame::Request(Request::Fs(FsRequest::Chown {
            path: "a".into(),
            working_dir: "/".into(),
            uid: Some(FsOwner::Id(7)),
            gid: Some(FsOwner::Name("staff".into())),
            recursive: true,
        })));
        round_trip(Frame::Reply(Reply::Fs(FsReply::Failed {
            error: FsError::new(FsCode::ENOENT, "no such file", "/x"),
        })));
        round_trip(Frame::Reply(Reply::Fs(FsReply::Ready)));
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let bytes = Frame::Output(Output::Exit(7)).encode().unwrap();
        let mut buf = BytesMut::new();
        for b in &bytes[..bytes.len() - 1] {
            buf.extend_from_slice(&[*b]);
            assert_eq!(Frame::decode(&mut buf).unwrap(), None);
        }
        buf.extend_from_slice(&bytes[bytes.len() - 1..]);
        assert_eq!(
            Frame::decode(&mut buf).unwrap(),
            Some(Frame::Output(Output::Exit(7)))
        );
    }

    #[test]
    fn hostile_frames_are_errors() {
        let too_big = ((MAX_PAYLOAD + 2) as u32).to_be_bytes();
        assert!(matches!(
            Frame::decode(&mut BytesMut::from(&too_big[..])),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            Frame::decode(&mut BytesMut::from(&[0, 0, 0, 0][..])),
            Err(FrameError::Empty)
        ));
        assert!(matches!(
            Frame::decode(&mut BytesMut::from(&[0, 0, 0, 1, 99][..])),
            Err(FrameError::UnknownKind(99))
        ));
        assert!(matches!(
            Frame::decode(&mut BytesMut::from(
                &[0, 0, 0, 3, KIND_REQUEST, b'{', b'x'][..]
            )),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            Frame::decode(&mut BytesMut::from(&[0, 0, 0, 2, KIND_EXIT, 1][..])),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            Frame::decode(&mut BytesMut::from(&[0, 0, 0, 3, KIND_SIGNAL, 0, 15][..])),
            Err(FrameError::Malformed(_))
        ));
        assert!(Frame::Output(Output::Stdout(vec![0; MAX_PAYLOAD + 1]))
            .encode()
            .is_err());
    }
}
