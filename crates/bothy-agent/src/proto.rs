//! Frames between the daemon and the in-box agent.
//!
//! (Stub: the agent helper replaces this module with the real framing; the
//! public types below are the contract the daemon codes against.)

use serde::{Deserialize, Serialize};

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
    StdinEof,
    Resize { cols: u16, rows: u16 },
}

/// Session → client. In TTY mode all terminal output is `Stdout`.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The process ended: its exit code, or 128 + signal number.
    Exit(i32),
}
