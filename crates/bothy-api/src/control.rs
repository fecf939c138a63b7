//! The control WebSocket (`/v1/sprites/{name}/control`): several operations,
//! one after another, over one connection.
//!
//! Control messages are text messages of [`CONTROL_PREFIX`] and a JSON
//! envelope: the client starts an operation with [`OpStart`]; the server
//! ends it with `op.complete` (`{"exitCode": N}`) or `op.error` (`{"error":
//! text}`). Between the two, an `exec` operation speaks exactly the exec
//! WebSocket's framing ([`crate::exec`]): `session_info`, stream-byte binary
//! frames (or raw bytes in TTY mode), `resize` and `signal` messages, the
//! exit frame. The connection then waits for the next `op.start`.
//!
//! `sprites-py` and `@fly/sprites` use it for every command when their
//! client is made with control mode on; both only ever start `exec`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Leading text of every control message, both ways.
pub const CONTROL_PREFIX: &str = "control:";
/// Client → server: start an operation.
pub const OP_START: &str = "op.start";
/// Server → client: the operation ended; `args.exitCode` is its exit code.
pub const OP_COMPLETE: &str = "op.complete";
/// Server → client: the operation failed or was refused; `args.error` says why.
pub const OP_ERROR: &str = "op.error";
/// The one operation the SDKs start.
pub const OP_EXEC: &str = "exec";

/// Largest control message a client may send: an `op.start` names a
/// command and its environment, which stay far below this. Stdin and the
/// other per-operation messages are bounded as on the exec WebSocket.
pub const MAX_CONTROL_MESSAGE: usize = 1024 * 1024;
/// A connection with no operation running and no message from the client
/// (pings included: `sprites-py` pings every 15 s) for this long is closed.
pub const IDLE_TIMEOUT_SECS: u64 = 600;

/// A client's control envelope, as both SDKs build it. Every field is
/// optional so that a malformed one gets an `op.error` that says what is
/// missing rather than a parse error.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct OpStart {
    /// `op.start` (anything else from a client is refused).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The operation: `exec`.
    #[serde(default)]
    pub op: String,
    /// The operation's arguments.
    #[serde(default)]
    pub args: ExecArgs,
}

/// Arguments of an `exec` operation. The SDKs send flags and sizes as
/// strings (`"tty": "true"`, `"rows": "24"`); JSON booleans and numbers are
/// taken as well.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ExecArgs {
    /// The command and its arguments.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries, or an object of them.
    #[serde(default)]
    pub env: Option<Env>,
    /// Working directory, absolute.
    #[serde(default)]
    pub dir: Option<String>,
    #[serde(default)]
    pub tty: Option<Flexible>,
    #[serde(default)]
    pub rows: Option<Flexible>,
    #[serde(default)]
    pub cols: Option<Flexible>,
    /// Whether the client sends stdin (default: yes).
    #[serde(default)]
    pub stdin: Option<Flexible>,
    /// As the exec WebSocket's `max_run_after_disconnect`.
    #[serde(default)]
    pub max_run_after_disconnect: Option<Flexible>,
}

/// An environment as a list (`["K=V"]`, what the SDKs send) or an object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Env {
    List(Vec<String>),
    Map(BTreeMap<String, String>),
}

impl Env {
    /// The entries as `KEY=VALUE`.
    pub fn entries(&self) -> Vec<String> {
        match self {
            Env::List(l) => l.clone(),
            Env::Map(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        }
    }
}

/// A scalar sent as a string, a boolean or a number.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Flexible {
    Bool(bool),
    Number(serde_json::Number),
    Text(String),
}

impl Flexible {
    /// The value as it would appear in the exec WebSocket's query string.
    pub fn as_query_value(&self) -> String {
        match self {
            Flexible::Bool(b) => b.to_string(),
            Flexible::Number(n) => n.to_string(),
            Flexible::Text(t) => t.clone(),
        }
    }
}

/// A server's control envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub kind: String,
    pub args: serde_json::Value,
}

/// The text message `control:{"type":"op.complete","args":{"exitCode":N}}`.
pub fn op_complete(exit_code: i32) -> String {
    envelope(OP_COMPLETE, serde_json::json!({ "exitCode": exit_code }))
}

/// The text message `control:{"type":"op.error","args":{"error":"…"}}`.
pub fn op_error(error: &str) -> String {
    envelope(OP_ERROR, serde_json::json!({ "error": error }))
}

fn envelope(kind: &str, args: serde_json::Value) -> String {
    let e = Envelope {
        kind: kind.to_string(),
        args,
    };
    // A string and a JSON value: serialising cannot fail.
    format!(
        "{CONTROL_PREFIX}{}",
        serde_json::to_string(&e).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_start_as_sprites_py_sends_it() {
        let s = r#"{"type": "op.start", "op": "exec", "args": {"cmd": ["sh", "-c", "tty"], "env": ["A=1"], "dir": "/tmp", "tty": "true", "rows": "33", "cols": "101", "stdin": "false"}}"#;
        let m: OpStart = serde_json::from_str(s).expect("parse");
        assert_eq!(m.kind, OP_START);
        assert_eq!(m.op, OP_EXEC);
        assert_eq!(m.args.cmd, ["sh", "-c", "tty"]);
        assert_eq!(
            m.args.env.as_ref().map(Env::entries),
            Some(vec!["A=1".into()])
        );
        assert_eq!(m.args.dir.as_deref(), Some("/tmp"));
        assert_eq!(
            m.args.rows.as_ref().map(Flexible::as_query_value),
            Some("33".into())
        );
        assert_eq!(
            m.args.stdin.as_ref().map(Flexible::as_query_value),
            Some("false".into())
        );
    }

    #[test]
    fn op_start_with_json_scalars_and_an_env_object() {
        let s = r#"{"type":"op.start","op":"exec","args":{"cmd":["true"],"env":{"B":"2","A":"1"},"tty":true,"rows":24,"stdin":true}}"#;
        let m: OpStart = serde_json::from_str(s).expect("parse");
        assert_eq!(
            m.args.env.as_ref().map(Env::entries),
            Some(vec!["A=1".into(), "B=2".into()])
        );
        assert_eq!(
            m.args.tty.as_ref().map(Flexible::as_query_value),
            Some("true".into())
        );
        assert_eq!(
            m.args.rows.as_ref().map(Flexible::as_query_value),
            Some("24".into())
        );
    }

    #[test]
    fn server_envelopes() {
        assert_eq!(
            op_complete(3),
            r#"control:{"type":"op.complete","args":{"exitCode":3}}"#
        );
        assert_eq!(
            op_error("no \"op\""),
            r#"control:{"type":"op.error","args":{"error":"no \"op\""}}"#
        );
    }
}
