//! The control WebSocket: several operations on one connection, the exec
//! framing inside each, and every way a client may get the protocol wrong.

use super::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve(h: &Harness) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = h.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn open(
    addr: std::net::SocketAddr,
    token: &str,
    sprite: &str,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("ws://{addr}/v1/sprites/{sprite}/control")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req).await
}

async fn control(h: &Harness) -> Ws {
    let addr = serve(h).await;
    open(addr, &h.admin, "dev").await.expect("upgrade").0
}

fn op_start(args: Value) -> WsMessage {
    let msg = json!({"type": "op.start", "op": "exec", "args": args});
    WsMessage::Text(format!("control:{msg}").into())
}

/// A control envelope's JSON, if `m` is one.
fn envelope(m: &WsMessage) -> Option<Value> {
    match m {
        WsMessage::Text(t) => t
            .strip_prefix("control:")
            .map(|j| serde_json::from_str(j).expect("control JSON")),
        _ => None,
    }
}

/// Messages until the operation's `op.complete` or `op.error`, and that
/// envelope.
async fn until_op_end(ws: &mut Ws) -> (Vec<WsMessage>, Value) {
    let mut out = Vec::new();
    let all = async {
        loop {
            match ws.next().await {
                Some(Ok(m)) => {
                    if let Some(e) = envelope(&m) {
                        return e;
                    }
                    out.push(m);
                }
                other => panic!("the connection ended inside an operation: {other:?}"),
            }
        }
    };
    let end = tokio::time::timeout(WITHIN, all)
        .await
        .expect("the operation did not end within 10 s");
    (out, end)
}

/// The close frame's code once the server closes (anything before it is
/// skipped).
async fn close_code(ws: &mut Ws) -> Option<u16> {
    let ended = async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    };
    tokio::time::timeout(WITHIN, ended)
        .await
        .expect("the server kept the connection open")
}

#[tokio::test]
async fn several_operations_run_one_after_another_on_one_connection() {
    let h = harness().await;
    h.create("dev").await;
    let mut ws = control(&h).await;
    for round in 0..3 {
        // Output, stderr and an exit code (the fake's echo exits 3).
        ws.send(op_start(json!({"cmd": ["echo", "hi"], "stdin": "false"})))
            .await
            .expect("send");
        let (msgs, end) = until_op_end(&mut ws).await;
        let WsMessage::Text(info) = &msgs[0] else {
            panic!("{round}: session_info first, got {msgs:?}")
        };
        assert!(info.contains("session_info"), "{info}");
        assert_eq!(msgs[1], WsMessage::Binary(b"\x01hi\n".to_vec().into()));
        assert_eq!(msgs[2], WsMessage::Binary(b"\x02warn".to_vec().into()));
        assert_eq!(msgs[3], WsMessage::Binary(vec![3, 3].into()));
        assert_eq!(end, json!({"type": "op.complete", "args": {"exitCode": 3}}));

        // Stdin and its end, sent right behind the op.start as the SDKs do.
        ws.send(op_start(json!({"cmd": ["cat"], "stdin": true})))
            .await
            .expect("send");
        ws.send(WsMessage::Binary(b"\x00ping".to_vec().into()))
            .await
            .expect("stdin");
        ws.send(WsMessage::Binary(vec![4].into()))
            .await
            .expect("eof");
        let (msgs, end) = until_op_end(&mut ws).await;
        assert_eq!(msgs[1], WsMessage::Binary(b"\x01ping".to_vec().into()));
        assert_eq!(msgs[2], WsMessage::Binary(vec![3, 0].into()));
        assert_eq!(end["args"]["exitCode"], 0);
    }
}

#[tokio::test]
async fn a_command_that_cannot_start_exits_127_and_the_connection_goes_on() {
    let h = harness().await;
    h.create("dev").await;
    let mut ws = control(&h).await;
    ws.send(op_start(json!({"cmd": ["no-such-command"]})))
        .await
        .expect("send");
    let (msgs, end) = until_op_end(&mut ws).await;
    let WsMessage::Binary(err) = &msgs[1] else {
        panic!("stderr second: {msgs:?}")
    };
    assert_eq!(err[0], 2);
    assert!(String::from_utf8_lossy(&err[1..]).contains("command not found"));
    assert_eq!(msgs[2], WsMessage::Binary(vec![3, 127].into()));
    assert_eq!(end["args"]["exitCode"], 127);
    ws.send(op_start(json!({"cmd": ["echo", "after"]})))
        .await
        .expect("send");
    let (_, end) = until_op_end(&mut ws).await;
    assert_eq!(end["type"], "op.complete");
}

#[tokio::test]
async fn bad_control_messages_get_op_error_and_leave_the_connection_usable() {
    let h = harness().await;
    h.create("dev").await;
    let mut ws = control(&h).await;
    for (msg, says) in [
        ("control:{not json", "malformed control message"),
        (
            r#"control:{"type":"op.start","op":"tcp","args":{}}"#,
            "unknown operation",
        ),
        (
            r#"control:{"type":"op.cancel"}"#,
            "unknown control message type",
        ),
        (
            r#"control:{"type":"op.start","op":"exec","args":{}}"#,
            "no command",
        ),
        (
            r#"control:{"type":"op.start","op":"exec","args":{"cmd":["ls"],"dir":"tmp"}}"#,
            "absolute",
        ),
    ] {
        ws.send(WsMessage::Text(msg.into())).await.expect("send");
        let (before, end) = until_op_end(&mut ws).await;
        assert!(before.is_empty(), "{msg}: {before:?}");
        assert_eq!(end["type"], "op.error", "{msg}");
        let error = end["args"]["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{msg}: {error}");
    }
    // Frames outside an operation (stdin the last process never read) are
    // dropped without an answer, which would end the client's next op.
    ws.send(WsMessage::Binary(b"\x00late".to_vec().into()))
        .await
        .expect("send");
    ws.send(WsMessage::Text(
        r#"{"type":"signal","signal":"TERM"}"#.into(),
    ))
    .await
    .expect("send");
    ws.send(op_start(json!({"cmd": ["echo", "still here"]})))
        .await
        .expect("send");
    let (msgs, end) = until_op_end(&mut ws).await;
    assert_eq!(
        msgs[1],
        WsMessage::Binary(b"\x01still here\n".to_vec().into())
    );
    assert_eq!(end["args"]["exitCode"], 3);
}

#[tokio::test]
async fn a_control_message_while_an_operation_runs_ends_that_operation() {
    let h = harness().await;
    h.create("dev").await;
    let mut ws = control(&h).await;
    // An op.start: the running command is left (detached) without another
    // word about it, and the new one runs; its op.complete is the only one.
    ws.send(op_start(json!({"cmd": ["sleep", "600"]})))
        .await
        .expect("send");
    ws.send(op_start(json!({"cmd": ["echo", "next"]})))
        .await
        .expect("send");
    let (msgs, end) = until_op_end(&mut ws).await;
    let infos = msgs
        .iter()
        .filter(|m| matches!(m, WsMessage::Text(t) if t.contains("session_info")))
        .count();
    assert_eq!(infos, 2, "{msgs:?}");
    assert_eq!(
        msgs.last(),
        Some(&WsMessage::Binary(vec![3, 3].into())),
        "{msgs:?}"
    );
    assert!(msgs.contains(&WsMessage::Binary(b"\x01next\n".to_vec().into())));
    assert_eq!(end, json!({"type": "op.complete", "args": {"exitCode": 3}}));
    let fake = h.fake.clone();
    wait_until(move || fake.state().detached == 1).await;

    // Anything else ends it with the op.error that message gets.
    ws.send(op_start(json!({"cmd": ["sleep", "600"]})))
        .await
        .expect("send");
    ws.send(WsMessage::Text(r#"control:{"type":"op.cancel"}"#.into()))
        .await
        .expect("send");
    let (_, end) = until_op_end(&mut ws).await;
    assert_eq!(end["type"], "op.error", "{end}");
    let fake = h.fake.clone();
    wait_until(move || fake.state().detached == 2).await;
    ws.send(op_start(json!({"cmd": ["echo", "fine"]})))
        .await
        .expect("send");
    let (_, end) = until_op_end(&mut ws).await;
    assert_eq!(end["args"]["exitCode"], 3);
}

#[tokio::test]
async fn signals_as_text_or_as_binary_json_and_tty_resize() {
    let h = harness().await;
    h.create("dev").await;
    let mut ws = control(&h).await;
    // sprites-py sends signals as text, @fly/sprites as binary JSON.
    for (signal, code) in [
        (
            WsMessage::Text(r#"{"type":"signal","signal":"TERM"}"#.into()),
            143,
        ),
        (
            WsMessage::Binary(br#"{"type":"signal","signal":"KILL"}"#.to_vec().into()),
            137,
        ),
    ] {
        ws.send(op_start(json!({"cmd": ["sleep", "600"]})))
            .await
            .expect("send");
        ws.send(signal).await.expect("signal");
        let (_, end) = until_op_end(&mut ws).await;
        assert_eq!(end["args"]["exitCode"], code);
    }
    ws.send(op_start(
        json!({"cmd": ["cat"], "tty": "true", "rows": "10", "cols": "40"}),
    ))
    .await
    .expect("send");
    ws.send(WsMessage::Binary(
        br#"{"type":"resize","cols":90,"rows":30}"#.to_vec().into(),
    ))
    .await
    .expect("resize");
    ws.send(WsMessage::Text(
        r#"{"type":"resize","cols":91,"rows":31}"#.into(),
    ))
    .await
    .expect("resize");
    ws.send(WsMessage::Binary(b"typed".to_vec().into()))
        .await
        .expect("stdin");
    ws.send(WsMessage::Text(
        r#"{"type":"signal","signal":"HUP"}"#.into(),
    ))
    .await
    .expect("hup");
    let (msgs, end) = until_op_end(&mut ws).await;
    let out: Vec<u8> = msgs
        .iter()
        .filter_map(|m| match m {
            WsMessage::Binary(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(out, b"90x3091x31typed");
    // A TTY exit is also the exec WebSocket's text message.
    assert!(
        msgs.iter()
            .any(|m| matches!(m, WsMessage::Text(t) if t.contains("\"exit\""))),
        "{msgs:?}"
    );
    assert_eq!(end["args"]["exitCode"], 129);
}

#[tokio::test]
async fn a_message_over_the_limit_closes_the_connection() {
    let h = harness().await;
    h.create("dev").await;
    let mut ws = control(&h).await;
    let too_big = vec![0u8; bothy_api::exec::MAX_CLIENT_MESSAGE + 1];
    // The server may close before the whole message is sent.
    let _ = ws.send(WsMessage::Binary(too_big.into())).await;
    let code = close_code(&mut ws).await;
    assert!(matches!(code, None | Some(1008 | 1009)), "{code:?}");
}

#[tokio::test]
async fn errors_come_before_the_upgrade_and_the_upgrade_names_capabilities() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    for (token, sprite, status) in [
        ("bothy_wrong", "dev", 401),
        (h.admin.as_str(), "no-such-sprite", 404),
    ] {
        match open(addr, token, sprite).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status().as_u16(), status, "{sprite}");
            }
            other => panic!(
                "{sprite}: expected an HTTP error, got {:?}",
                other.map(|_| "a websocket")
            ),
        }
    }
    let (_, res) = open(addr, &h.admin, "dev").await.expect("upgrade");
    assert_eq!(
        res.headers()
            .get("x-sprite-capabilities")
            .and_then(|v| v.to_str().ok()),
        Some("signal")
    );
    let (status, body) = h
        .call(Method::GET, "/v1/sprites/dev/control", Some(&h.admin), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
