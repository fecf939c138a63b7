//! Framing of the exec WebSocket (`/v1/sprites/{name}/exec`).
//!
//! Non-TTY mode: every binary message starts with a stream byte ([`StreamId`]).
//! TTY mode: binary messages are raw terminal bytes both ways; the exit code comes
//! as a text message `{"type":"exit","exit_code":N}`. Text messages in both modes
//! are JSON control messages ([`ControlMessage`]).

use serde::{Deserialize, Serialize};

/// Leading byte of a binary message in non-TTY mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StreamId {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
    /// Payload: one byte, the exit code.
    Exit = 3,
    StdinEof = 4,
}

impl StreamId {
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Stdin,
            1 => Self::Stdout,
            2 => Self::Stderr,
            3 => Self::Exit,
            4 => Self::StdinEof,
            _ => return None,
        })
    }
}

/// JSON text messages on the exec WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// Client → server: the terminal changed size.
    Resize { cols: u16, rows: u16 },
    /// Server → client, first message of every connection.
    SessionInfo {
        session_id: String,
        command: String,
        tty: bool,
        #[serde(default)]
        is_owner: bool,
    },
    /// Server → client: the process ended.
    Exit { exit_code: i32 },
    /// Server → client: a process in the box started listening on a port.
    PortOpen { port: u16 },
}
