//! Framing of the exec WebSocket (`/v1/sprites/{name}/exec`).
//!
//! Non-TTY mode: every binary message starts with a stream byte ([`StreamId`]).
//! TTY mode: binary messages are raw terminal bytes both ways; the exit code comes
//! as a text message `{"type":"exit","exit_code":N}`. Text messages in both modes
//! are JSON control messages ([`ControlMessage`] from the server,
//! [`ClientMessage`] from the client).
//!
//! The server ends every session with a close frame that carries the exit code
//! ([`exit_close_code`]): `@fly/sprites` in TTY mode reads the exit code from
//! the close frame alone (1000 means 0, anything else 1).
//!
//! HTTP exec (`POST .../exec`, non-TTY only) answers with the same framing,
//! one stream byte and its payload per HTTP chunk, the exit `[3, code]` last.

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

/// Largest stdin write a client may send as one message. `@fly/sprites` sends
/// each `stdin.write()` as one message, however large.
pub const MAX_STDIN_MESSAGE: usize = 16 << 20;
/// Largest client message: a stdin write and its stream byte.
pub const MAX_CLIENT_MESSAGE: usize = MAX_STDIN_MESSAGE + 1;

/// Header of the exec WebSocket's upgrade answer that names what the server
/// understands beyond the base protocol; clients send `{"type":"signal"}`
/// messages only to a server that lists `signal`.
pub const CAPABILITIES_HEADER: &str = "x-sprite-capabilities";
pub const CAPABILITIES: &str = "signal";

/// Largest stdin of an HTTP exec (`POST .../exec`), whose request body is the
/// whole stdin.
pub const MAX_HTTP_STDIN: usize = MAX_STDIN_MESSAGE;

/// Close code of a session that exited 0 (also of any normal close).
pub const CLOSE_NORMAL: u16 = 1000;
/// A session that exited with code N ≥ 1 closes with `CLOSE_EXIT_BASE + N`, in
/// the range RFC 6455 leaves to applications.
pub const CLOSE_EXIT_BASE: u16 = 4000;

/// The close code that ends a session with `exit_code`. Clients that read
/// only the close code see 0 as 0 and every failure as a failure.
pub fn exit_close_code(exit_code: i32) -> u16 {
    match exit_code {
        0 => CLOSE_NORMAL,
        // Cannot truncate: clamped to 1..=255.
        n => CLOSE_EXIT_BASE + n.clamp(1, 255) as u16,
    }
}

/// The exit code a close code says, if it says one ([`exit_close_code`]).
pub fn exit_code_of_close(code: u16) -> Option<i32> {
    match code {
        CLOSE_NORMAL => Some(0),
        c if (CLOSE_EXIT_BASE + 1..=CLOSE_EXIT_BASE + 255).contains(&c) => {
            Some(i32::from(c - CLOSE_EXIT_BASE))
        }
        _ => None,
    }
}

/// JSON text messages the client sends on the exec WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The terminal changed size (TTY).
    Resize { cols: u16, rows: u16 },
    /// Send a signal to the session's processes: a name with or without
    /// `SIG` (`TERM`, `SIGKILL`) or a number. `@fly/sprites`'s `kill()` and
    /// `signal()` send this.
    Signal { signal: String },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_carry_the_exit_code() {
        assert_eq!(exit_close_code(0), 1000);
        assert_eq!(exit_close_code(4), 4004);
        assert_eq!(exit_close_code(143), 4143);
        assert_eq!(exit_close_code(255), 4255);
        // Out of the shell's range: still a failure, never a success.
        assert_eq!(exit_close_code(-1), 4001);
        assert_eq!(exit_close_code(1000), 4255);
        for code in [0, 1, 4, 127, 255] {
            assert_eq!(exit_code_of_close(exit_close_code(code)), Some(code));
        }
        for other in [1001, 1011, 4000, 4256] {
            assert_eq!(exit_code_of_close(other), None);
        }
    }

    #[test]
    fn client_messages_as_the_sdks_send_them() {
        let signal: ClientMessage =
            serde_json::from_str(r#"{"type":"signal","signal":"TERM"}"#).expect("signal");
        assert_eq!(
            signal,
            ClientMessage::Signal {
                signal: "TERM".into()
            }
        );
        let resize: ClientMessage =
            serde_json::from_str(r#"{"type":"resize","cols":80,"rows":24}"#).expect("resize");
        assert_eq!(resize, ClientMessage::Resize { cols: 80, rows: 24 });
    }
}
