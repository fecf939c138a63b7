//! Encoding and decoding of exec WebSocket messages, in both modes.
//!
//! Kept free of I/O so that every framing rule is unit-tested: non-TTY binary
//! messages carry a leading stream byte, TTY binary messages are raw terminal
//! bytes, and text messages are JSON control messages in both modes.

use bothy_api::exec::{ControlMessage, StreamId};
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

/// What the server said on an exec connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// First message of every connection: which session this is.
    SessionInfo(SessionInfo),
    /// Output of the process; in TTY mode, everything the terminal shows.
    Stdout(Bytes),
    /// Error output of the process (non-TTY mode only).
    Stderr(Bytes),
    /// The process ended with this code.
    Exit(i32),
    /// A process in the box started listening on this port.
    PortOpen(u16),
}

/// The `session_info` control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: String,
    pub command: String,
    pub tty: bool,
    pub is_owner: bool,
}

/// Result of decoding one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Event(ExecEvent),
    /// The server closed the connection.
    Closed,
    /// Nothing for the user: pings, empty frames, control messages this client
    /// does not know (ignored so that newer servers keep working).
    Nothing,
}

/// Decodes a message from the server. `tty` is the session's mode.
pub fn decode(tty: bool, message: Message) -> Decoded {
    match message {
        Message::Text(text) => decode_control(text.as_str()),
        Message::Binary(data) if tty => {
            if data.is_empty() {
                Decoded::Nothing
            } else {
                Decoded::Event(ExecEvent::Stdout(data))
            }
        }
        Message::Binary(data) => decode_stream_frame(data),
        Message::Close(_) => Decoded::Closed,
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Decoded::Nothing,
    }
}

fn decode_control(text: &str) -> Decoded {
    match serde_json::from_str::<ControlMessage>(text) {
        Ok(ControlMessage::SessionInfo {
            session_id,
            command,
            tty,
            is_owner,
        }) => Decoded::Event(ExecEvent::SessionInfo(SessionInfo {
            session_id,
            command,
            tty,
            is_owner,
        })),
        Ok(ControlMessage::Exit { exit_code }) => Decoded::Event(ExecEvent::Exit(exit_code)),
        Ok(ControlMessage::PortOpen { port }) => Decoded::Event(ExecEvent::PortOpen(port)),
        Ok(ControlMessage::Resize { .. }) | Err(_) => Decoded::Nothing,
    }
}

fn decode_stream_frame(data: Bytes) -> Decoded {
    let Some(&first) = data.first() else {
        return Decoded::Nothing;
    };
    let payload = data.slice(1..);
    match StreamId::from_byte(first) {
        Some(StreamId::Stdout) => Decoded::Event(ExecEvent::Stdout(payload)),
        Some(StreamId::Stderr) => Decoded::Event(ExecEvent::Stderr(payload)),
        // The SDK reads a missing code byte as success; do the same.
        Some(StreamId::Exit) => Decoded::Event(ExecEvent::Exit(
            payload.first().copied().map_or(0, i32::from),
        )),
        // Client-to-server streams and unknown ids carry nothing for us.
        Some(StreamId::Stdin) | Some(StreamId::StdinEof) | None => Decoded::Nothing,
    }
}

/// Stdin bytes for the process.
pub fn encode_stdin(tty: bool, data: &[u8]) -> Message {
    if tty {
        Message::Binary(Bytes::copy_from_slice(data))
    } else {
        let mut framed = Vec::with_capacity(data.len() + 1);
        framed.push(StreamId::Stdin as u8);
        framed.extend_from_slice(data);
        Message::Binary(framed.into())
    }
}

/// End of stdin. A terminal has no such thing (the user types Ctrl-D), so TTY
/// mode sends nothing.
pub fn encode_stdin_eof(tty: bool) -> Option<Message> {
    (!tty).then(|| Message::Binary(Bytes::from_static(&[StreamId::StdinEof as u8])))
}

/// The terminal's new size.
pub fn encode_resize(cols: u16, rows: u16) -> Message {
    let json = serde_json::json!({"type": "resize", "cols": cols, "rows": rows});
    Message::Text(json.to_string().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(b: &[u8]) -> Message {
        Message::Binary(Bytes::copy_from_slice(b))
    }

    fn event(d: Decoded) -> ExecEvent {
        match d {
            Decoded::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn non_tty_streams_are_split_by_leading_byte() {
        assert_eq!(
            event(decode(false, bin(b"\x01hello\x00\xff"))),
            ExecEvent::Stdout(Bytes::from_static(b"hello\x00\xff"))
        );
        assert_eq!(
            event(decode(false, bin(b"\x02oops"))),
            ExecEvent::Stderr(Bytes::from_static(b"oops"))
        );
        assert_eq!(event(decode(false, bin(&[3, 42]))), ExecEvent::Exit(42));
        assert_eq!(event(decode(false, bin(&[3, 255]))), ExecEvent::Exit(255));
        assert_eq!(event(decode(false, bin(&[3]))), ExecEvent::Exit(0));
    }

    #[test]
    fn non_tty_ignores_empty_echoed_and_unknown_streams() {
        assert_eq!(decode(false, bin(b"")), Decoded::Nothing);
        assert_eq!(decode(false, bin(b"\x00x")), Decoded::Nothing);
        assert_eq!(decode(false, bin(b"\x04")), Decoded::Nothing);
        assert_eq!(decode(false, bin(b"\x09x")), Decoded::Nothing);
    }

    #[test]
    fn tty_binary_is_raw_output_even_with_stream_like_bytes() {
        assert_eq!(
            event(decode(true, bin(b"\x03\x01raw"))),
            ExecEvent::Stdout(Bytes::from_static(b"\x03\x01raw"))
        );
    }

    #[test]
    fn text_control_messages_in_both_modes() {
        for tty in [false, true] {
            let info = r#"{"type":"session_info","session_id":"s1","command":"bash","tty":true}"#;
            assert_eq!(
                event(decode(tty, Message::Text(info.into()))),
                ExecEvent::SessionInfo(SessionInfo {
                    session_id: "s1".into(),
                    command: "bash".into(),
                    tty: true,
                    is_owner: false,
                })
            );
            let exit = r#"{"type":"exit","exit_code":7}"#;
            assert_eq!(
                event(decode(tty, Message::Text(exit.into()))),
                ExecEvent::Exit(7)
            );
            let port = r#"{"type":"port_open","port":8080}"#;
            assert_eq!(
                event(decode(tty, Message::Text(port.into()))),
                ExecEvent::PortOpen(8080)
            );
        }
    }

    #[test]
    fn junk_text_and_unknown_types_are_ignored() {
        for junk in ["not json", r#"{"type":"future_thing"}"#, "{}", ""] {
            assert_eq!(
                decode(false, Message::Text(junk.into())),
                Decoded::Nothing,
                "{junk}"
            );
        }
    }

    #[test]
    fn close_ends_the_stream() {
        assert_eq!(decode(false, Message::Close(None)), Decoded::Closed);
    }

    #[test]
    fn stdin_framing_per_mode() {
        assert_eq!(encode_stdin(false, b"ab"), bin(b"\x00ab"));
        assert_eq!(encode_stdin(true, b"ab"), bin(b"ab"));
        assert_eq!(encode_stdin_eof(false), Some(bin(b"\x04")));
        assert_eq!(encode_stdin_eof(true), None);
    }

    #[test]
    fn resize_is_the_sdk_json_shape() {
        let Message::Text(t) = encode_resize(120, 40) else {
            panic!("resize must be a text message");
        };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("valid JSON");
        assert_eq!(v, serde_json::json!({"type":"resize","cols":120,"rows":40}));
    }
}
