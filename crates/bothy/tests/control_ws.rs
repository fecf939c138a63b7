//! The control WebSocket (`/v1/sprites/{name}/control`) against a real daemon
//! and box, driven by hand the way `sprites-py` and `@fly/sprites` drive it in
//! control mode: many commands one after another on one connection (output,
//! exit codes, stdin), signals and terminal resizes, protocol errors, and
//! boxes that sleep between operations.

mod common;

use std::time::Duration;

use common::{host_sha256, pseudo_random_bytes, Daemon, Shared};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

const BOX: &str = "ctl";
/// How long one operation may take: a warm box answers within a second, a
/// cold one boots in a few.
const DEADLINE: Duration = Duration::from_secs(60);

static DAEMON: Shared = Shared::new();

fn daemon() -> &'static Daemon {
    DAEMON.get(|d| d.create(BOX))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(d: &Daemon, name: &str, token: &str) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{}/v1/sprites/{name}/control", d.addr)
        .into_client_request()
        .expect("request");
    let v = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
    req.headers_mut().insert("authorization", v);
    let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake in time")?;
    Ok(ws)
}

fn op_start(args: Value) -> Message {
    let msg = json!({"type": "op.start", "op": "exec", "args": args});
    Message::Text(format!("control:{msg}").into())
}

/// What one operation sent back.
#[derive(Debug, Default)]
struct Done {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The exit frame's byte (non-TTY) or the exit message's code (TTY).
    exit: Option<i64>,
    /// TTY mode: the raw terminal output.
    raw: Vec<u8>,
    /// The closing envelope: `op.complete` or `op.error`.
    end: Value,
}

impl Done {
    fn code(&self) -> i64 {
        assert_eq!(self.end["type"], "op.complete", "{self:?}");
        self.end["args"]["exitCode"].as_i64().expect("exitCode")
    }

    fn error(&self) -> String {
        assert_eq!(self.end["type"], "op.error", "{self:?}");
        self.end["args"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Reads one operation's messages up to its `op.complete` or `op.error`.
async fn until_end(ws: &mut Ws) -> Done {
    let mut done = Done::default();
    let all = async {
        loop {
            let msg = match ws.next().await {
                Some(Ok(m)) => m,
                other => panic!("the connection ended inside an operation: {other:?}"),
            };
            match msg {
                Message::Text(t) => {
                    if let Some(j) = t.strip_prefix("control:") {
                        done.end = serde_json::from_str(j).expect("control JSON");
                        return;
                    }
                    let v: Value = serde_json::from_str(&t).expect("JSON text message");
                    if v["type"] == "exit" {
                        done.exit = v["exit_code"].as_i64();
                    }
                }
                Message::Binary(b) => match b.first() {
                    _ if done.exit.is_some() => panic!("a frame after the exit: {b:?}"),
                    Some(1) => done.stdout.extend_from_slice(&b[1..]),
                    Some(2) => done.stderr.extend_from_slice(&b[1..]),
                    Some(3) => done.exit = b.get(1).map(|c| i64::from(*c)),
                    _ => done.raw.extend_from_slice(&b),
                },
                Message::Close(f) => panic!("closed inside an operation: {f:?}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, all)
        .await
        .expect("the operation ended in time");
    done
}

/// Runs a non-TTY command on the connection: stdin (if any) right behind the
/// `op.start`, as the SDKs send it, in 1 MiB messages, then its end.
async fn run(ws: &mut Ws, args: Value, stdin: Option<&[u8]>) -> Done {
    ws.send(op_start(args)).await.expect("op.start");
    for piece in stdin.unwrap_or_default().chunks(1 << 20) {
        let mut frame = vec![0u8];
        frame.extend_from_slice(piece);
        ws.send(Message::Binary(frame.into())).await.expect("stdin");
    }
    ws.send(Message::Binary(vec![4].into()))
        .await
        .expect("stdin eof");
    until_end(ws).await
}

async fn close_code(ws: &mut Ws) -> Option<u16> {
    let ended = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    };
    tokio::time::timeout(DEADLINE, ended)
        .await
        .expect("the server closed in time")
}

#[test]
fn many_commands_run_one_after_another_on_one_connection() {
    let d = daemon();
    runtime().block_on(async {
        let mut ws = open(d, BOX, &d.token).await.expect("upgrade");

        let done = run(&mut ws, json!({"cmd": ["echo", "hello"]}), None).await;
        assert_eq!(done.stdout, b"hello\n");
        assert_eq!((done.exit, done.code()), (Some(0), 0));

        let script = "echo out; echo err >&2; exit 3";
        let done = run(&mut ws, json!({"cmd": ["sh", "-c", script]}), None).await;
        assert_eq!(done.stdout, b"out\n");
        assert_eq!(done.stderr, b"err\n");
        assert_eq!((done.exit, done.code()), (Some(3), 3));

        for code in [1, 255] {
            let done = run(
                &mut ws,
                json!({"cmd": ["sh", "-c", format!("exit {code}")], "stdin": "false"}),
                None,
            )
            .await;
            assert_eq!(done.code(), code);
        }
        let done = run(&mut ws, json!({"cmd": ["sh", "-c", "kill -9 $$"]}), None).await;
        assert_eq!(done.code(), 137, "death by signal 9 is 128+9");

        // 3 MiB of stdin, byte-exact.
        let data = pseudo_random_bytes(3 << 20, 7);
        let done = run(&mut ws, json!({"cmd": ["sha256sum"]}), Some(&data)).await;
        let sum = String::from_utf8_lossy(&done.stdout).to_string();
        assert_eq!(
            sum.split_whitespace().next(),
            Some(host_sha256(&data).as_str())
        );
        assert_eq!(done.code(), 0);

        // Environment (both SDKs send a list) and working directory.
        let done = run(
            &mut ws,
            json!({"cmd": ["sh", "-c", "echo $PWD:$GREETING"], "env": ["GREETING=hi there"], "dir": "/tmp"}),
            None,
        )
        .await;
        assert_eq!(done.stdout, b"/tmp:hi there\n");

        // A command that does not exist: 127, the reason on stderr, and the
        // connection carries on.
        let done = run(&mut ws, json!({"cmd": ["no-such-command-xyz"]}), None).await;
        assert_eq!(done.code(), 127);
        assert!(
            String::from_utf8_lossy(&done.stderr).contains("no-such-command-xyz"),
            "{done:?}"
        );

        // State persists between operations: it is one box.
        run(
            &mut ws,
            json!({"cmd": ["sh", "-c", "echo kept > /tmp/ctl-state"]}),
            None,
        )
        .await;
        let done = run(&mut ws, json!({"cmd": ["cat", "/tmp/ctl-state"]}), None).await;
        assert_eq!(done.stdout, b"kept\n");

        for i in 0..20 {
            let done = run(&mut ws, json!({"cmd": ["true"]}), None).await;
            assert_eq!(done.code(), 0, "round {i}");
        }
    });
}

#[test]
fn signals_and_terminal_resizes_reach_the_running_command() {
    let d = daemon();
    runtime().block_on(async {
        let mut ws = open(d, BOX, &d.token).await.expect("upgrade");
        // sprites-py sends a signal as a text message, @fly/sprites as a
        // binary one.
        for (signal, code) in [
            (
                Message::Text(r#"{"type":"signal","signal":"TERM"}"#.into()),
                143,
            ),
            (
                Message::Binary(br#"{"type":"signal","signal":"INT"}"#.to_vec().into()),
                130,
            ),
        ] {
            ws.send(op_start(json!({"cmd": ["sleep", "600"]})))
                .await
                .expect("op.start");
            ws.send(signal).await.expect("signal");
            let done = until_end(&mut ws).await;
            assert_eq!(done.code(), code, "{done:?}");
        }

        // TTY: the size asked for at the start.
        ws.send(op_start(json!({
            "cmd": ["stty", "size"], "tty": "true", "rows": "33", "cols": "101", "stdin": "false",
        })))
        .await
        .expect("op.start");
        let done = until_end(&mut ws).await;
        assert_eq!(String::from_utf8_lossy(&done.raw).trim(), "33 101");
        assert_eq!(done.code(), 0);
        // Then a resize before the command reads its size: input is applied
        // in order, so the resize lands before the line it waits for.
        ws.send(op_start(json!({
            "cmd": ["sh", "-c", "read line; stty size; exit 4"],
            "tty": "true", "rows": "33", "cols": "101", "stdin": "true",
        })))
        .await
        .expect("op.start");
        ws.send(Message::Binary(
            br#"{"type":"resize","cols":120,"rows":40}"#.to_vec().into(),
        ))
        .await
        .expect("resize");
        ws.send(Message::Binary(b"go\r".to_vec().into()))
            .await
            .expect("typed");
        let done = until_end(&mut ws).await;
        let screen = String::from_utf8_lossy(&done.raw).to_string();
        assert!(screen.contains("40 120"), "{screen:?}");
        assert_eq!(done.exit, Some(4));
        assert_eq!(done.code(), 4);

        // And the connection is still good for a plain command.
        let done = run(&mut ws, json!({"cmd": ["echo", "after"]}), None).await;
        assert_eq!(done.stdout, b"after\n");
    });
}

#[test]
fn protocol_errors_are_op_errors_and_never_break_the_daemon() {
    let d = daemon();
    runtime().block_on(async {
        let mut ws = open(d, BOX, &d.token).await.expect("upgrade");
        for (msg, says) in [
            ("control:", "malformed control message"),
            ("control:[1,2]", "malformed control message"),
            (
                r#"control:{"type":"op.start","op":"proxy","args":{"host":"x"}}"#,
                "unknown operation",
            ),
            (
                r#"control:{"type":"hello"}"#,
                "unknown control message type",
            ),
            (
                r#"control:{"type":"op.start","op":"exec","args":{"cmd":[]}}"#,
                "no command",
            ),
            (
                r#"control:{"type":"op.start","op":"exec","args":{"cmd":["ls"],"env":["="]}}"#,
                "env",
            ),
        ] {
            ws.send(Message::Text(msg.into())).await.expect("send");
            let done = until_end(&mut ws).await;
            assert!(done.error().contains(says), "{msg}: {}", done.error());
        }
        let done = run(&mut ws, json!({"cmd": ["echo", "fine"]}), None).await;
        assert_eq!(done.stdout, b"fine\n");

        // A control message while a command runs ends that operation without
        // another word about it (the SDKs start their next command at once
        // after giving up on one); the message is then handled as usual.
        ws.send(op_start(
            json!({"cmd": ["sh", "-c", "echo started; exec sleep 600"]}),
        ))
        .await
        .expect("op.start");
        ws.send(op_start(json!({"cmd": ["sh", "-c", "exit 9"]})))
            .await
            .expect("op.start again");
        let done = until_end(&mut ws).await;
        assert_eq!(done.code(), 9, "{done:?}");
        ws.send(op_start(json!({"cmd": ["sleep", "600"]})))
            .await
            .expect("op.start");
        ws.send(Message::Text(r#"control:{"type":"op.cancel"}"#.into()))
            .await
            .expect("send");
        let done = until_end(&mut ws).await;
        assert!(
            done.error().contains("unknown control message type"),
            "{done:?}"
        );
        let done = run(&mut ws, json!({"cmd": ["echo", "on"]}), None).await;
        assert_eq!(done.stdout, b"on\n");

        // A message over the size limit ends the connection, nothing else.
        let mut ws = open(d, BOX, &d.token).await.expect("upgrade");
        let huge = vec![0u8; bothy_api::exec::MAX_CLIENT_MESSAGE + 1];
        let _ = ws.send(Message::Binary(huge.into())).await;
        let code = close_code(&mut ws).await;
        assert!(matches!(code, None | Some(1008 | 1009)), "{code:?}");

        let mut ws = open(d, BOX, &d.token)
            .await
            .expect("the daemon still serves");
        let done = run(&mut ws, json!({"cmd": ["true"]}), None).await;
        assert_eq!(done.code(), 0);
    });
}

#[test]
fn each_operation_wakes_a_sleeping_box() {
    let d = daemon();
    let name = "ctl-sleepy";
    d.create(name);
    runtime().block_on(async {
        let mut ws = open(d, name, &d.token).await.expect("upgrade");
        let done = run(
            &mut ws,
            json!({"cmd": ["sh", "-c", "echo 1 > /root/n"]}),
            None,
        )
        .await;
        assert_eq!(done.code(), 0);
        for cold in [false, true] {
            let r = d.api_json(
                "POST",
                &format!("/v1/sprites/{name}/sleep"),
                &json!({"cold": cold}),
            );
            assert_eq!(r.status, 200, "{}", r.text());
            let expected = if cold { "cold" } else { "warm" };
            assert_eq!(d.get(name)["status"], expected);
            // The idle control connection kept nothing awake; the next
            // operation on it wakes the box.
            let done = run(&mut ws, json!({"cmd": ["cat", "/root/n"]}), None).await;
            assert_eq!(done.stdout, b"1\n", "after sleeping {expected}");
            assert_eq!(d.get(name)["status"], "running");
        }
    });
}

#[test]
fn the_upgrade_needs_a_token_and_a_sprite_of_its_organisation() {
    let d = daemon();
    runtime().block_on(async {
        for (name, token, status) in [
            (BOX, "bothy_not_a_token", 401),
            ("no-such-sprite", d.token.as_str(), 404),
        ] {
            match open(d, name, token).await {
                Err(tungstenite::Error::Http(res)) => {
                    assert_eq!(res.status().as_u16(), status, "{name}")
                }
                other => panic!(
                    "{name}: expected HTTP {status}, got {:?}",
                    other.map(|_| ())
                ),
            }
        }
    });
}

/// The openai-agents pattern: on a timeout the client sends `KILL` and at
/// once starts its next command, without reading the killed one's end. Even
/// when the kill is done before the next `op.start` arrives (here: the exit
/// frame has come back), the killed command's `op.complete` must not reach
/// the client as the end of the next command.
#[test]
fn a_command_started_right_after_a_kill_gets_its_own_end() {
    let d = daemon();
    runtime().block_on(async {
        let mut ws = open(d, BOX, &d.token).await.expect("upgrade");
        ws.send(op_start(json!({"cmd": ["sleep", "600"], "stdin": "false"})))
            .await
            .expect("op.start");
        ws.send(Message::Text(r#"{"type":"signal","signal":"KILL"}"#.into()))
            .await
            .expect("signal");
        let exited = async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) if b.first() == Some(&3) => return,
                    Some(Ok(Message::Text(t))) if t.starts_with("control:") => {
                        panic!("the killed command's end came before the client moved on: {t}")
                    }
                    Some(Ok(_)) => {}
                    other => panic!("the connection ended: {other:?}"),
                }
            }
        };
        tokio::time::timeout(DEADLINE, exited)
            .await
            .expect("the killed command exited in time");
        let done = run(
            &mut ws,
            json!({"cmd": ["echo", "after"], "stdin": "false"}),
            None,
        )
        .await;
        assert_eq!(done.stdout, b"after\n", "{done:?}");
        assert_eq!(done.code(), 0, "{done:?}");
    });
}
