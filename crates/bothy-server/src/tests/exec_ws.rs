//! The exec WebSocket: framing in both modes, errors before the upgrade,
//! detaching on disconnect.

use super::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn serve(h: &Harness) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = h.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn connect(
    addr: std::net::SocketAddr,
    token: &str,
    query: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    connect_to(addr, token, &format!("exec?{query}")).await
}

/// Opens `/v1/sprites/dev/{rest}` as a WebSocket.
async fn connect_to(
    addr: std::net::SocketAddr,
    token: &str,
    rest: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}/v1/sprites/dev/{rest}")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// Every message until the server closes; fails the test after 10 s.
async fn drain<S>(ws: &mut S) -> Vec<WsMessage>
where
    S: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    let mut out = Vec::new();
    let all = async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, WsMessage::Close(_)) {
                break;
            }
            out.push(m);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), all)
        .await
        .expect("the server did not close the session within 10 s");
    out
}

fn first_is_session_info(msgs: &[WsMessage], tty: bool) {
    let WsMessage::Text(t) = &msgs[0] else {
        panic!("first message is not text: {msgs:?}")
    };
    let v: Value = serde_json::from_str(t).expect("json");
    assert_eq!(v["type"], "session_info");
    assert_eq!(v["tty"], tty);
    assert_eq!(v["is_owner"], true);
}

#[tokio::test]
async fn non_tty_frames_stdout_stderr_and_exit() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    let mut ws = connect(addr, &h.admin, "cmd=echo&cmd=hi&path=echo&stdin=true")
        .await
        .expect("connect");
    let msgs = drain(&mut ws).await;
    first_is_session_info(&msgs, false);
    assert_eq!(msgs[1], WsMessage::Binary(b"\x01hi\n".to_vec().into()));
    assert_eq!(msgs[2], WsMessage::Binary(b"\x02warn".to_vec().into()));
    assert_eq!(msgs[3], WsMessage::Binary(vec![3, 3].into()));
}

#[tokio::test]
async fn non_tty_stdin_and_eof() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    let mut ws = connect(addr, &h.admin, "cmd=cat").await.expect("connect");
    ws.send(WsMessage::Binary(b"\x00ping".to_vec().into()))
        .await
        .expect("send");
    ws.send(WsMessage::Binary(vec![4].into()))
        .await
        .expect("send eof");
    let msgs = drain(&mut ws).await;
    assert_eq!(msgs[1], WsMessage::Binary(b"\x01ping".to_vec().into()));
    assert_eq!(msgs[2], WsMessage::Binary(vec![3, 0].into()));
}

#[tokio::test]
async fn tty_raw_bytes_and_resize() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    let mut ws = connect(addr, &h.admin, "cmd=cat&tty=true&rows=10&cols=40")
        .await
        .expect("connect");
    ws.send(WsMessage::Binary(b"\x04ls\r".to_vec().into()))
        .await
        .expect("send");
    ws.send(WsMessage::Text(
        r#"{"type":"resize","cols":100,"rows":30}"#.into(),
    ))
    .await
    .expect("resize");
    let mut got = Vec::new();
    while got.len() < 3 {
        match ws.next().await {
            Some(Ok(m)) => got.push(m),
            other => panic!("connection ended early: {other:?}"),
        }
    }
    first_is_session_info(&got, true);
    // No stream byte is added or stripped in TTY mode.
    assert_eq!(got[1], WsMessage::Binary(b"\x04ls\r".to_vec().into()));
    assert_eq!(got[2], WsMessage::Binary(b"100x30".to_vec().into()));
}

#[tokio::test]
async fn tty_exit_is_a_text_message() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    let mut ws = connect(addr, &h.admin, "cmd=echo&cmd=hi&tty=true")
        .await
        .expect("connect");
    let msgs = drain(&mut ws).await;
    first_is_session_info(&msgs, true);
    assert_eq!(msgs[1], WsMessage::Binary(b"hi\n".to_vec().into()));
    let WsMessage::Text(t) = &msgs[3] else {
        panic!("{msgs:?}")
    };
    assert_eq!(
        serde_json::from_str::<Value>(t).expect("json"),
        json!({"type": "exit", "exit_code": 3})
    );
}

#[tokio::test]
async fn stdin_nobody_reads_does_not_stall_output() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    let ws = connect(addr, &h.admin, "cmd=ignore-stdin")
        .await
        .expect("connect");
    let (mut tx, mut rx) = ws.split();
    tokio::spawn(async move {
        for _ in 0..500 {
            if tx
                .send(WsMessage::Binary(b"\x00data".to_vec().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let msgs = drain(&mut rx).await;
    assert_eq!(msgs.len(), 1 + 200 + 1, "session_info, output, exit");
    assert_eq!(msgs.last(), Some(&WsMessage::Binary(vec![3, 0].into())));
}

#[tokio::test]
async fn attach_sends_session_info_first_and_applies_the_new_size() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    let mut ws = connect_to(
        addr,
        &h.admin,
        "exec/s1?tty=true&rows=30&cols=100&stdin=true",
    )
    .await
    .expect("attach");
    let msgs = drain(&mut ws).await;
    first_is_session_info(&msgs, true);
    assert_eq!(msgs[1], WsMessage::Binary(b"100x30".to_vec().into()));
    let WsMessage::Text(t) = &msgs[2] else {
        panic!("{msgs:?}")
    };
    assert_eq!(
        serde_json::from_str::<Value>(t).expect("json"),
        json!({"type": "exit", "exit_code": 0})
    );
    match connect_to(addr, &h.admin, "exec/nope").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 404)
        }
        other => panic!("expected 404, got {:?}", other.map(|_| "a websocket")),
    }
}

#[tokio::test]
async fn missing_command_exits_127_with_the_error_on_stderr() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    let mut ws = connect(addr, &h.admin, "cmd=nosuchcmd")
        .await
        .expect("connect");
    let msgs = drain(&mut ws).await;
    first_is_session_info(&msgs, false);
    let WsMessage::Binary(err) = &msgs[1] else {
        panic!("{msgs:?}")
    };
    assert_eq!(err[0], 2);
    assert!(String::from_utf8_lossy(&err[1..]).contains("command not found"));
    assert_eq!(msgs[2], WsMessage::Binary(vec![3, 127].into()));
}

#[tokio::test]
async fn errors_come_before_the_upgrade_as_http() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    for (token, query, status) in [
        (h.admin.as_str(), "path=ls", 400),
        (h.admin.as_str(), "cmd=ls&env=bad", 400),
        ("bothy_wrong", "cmd=ls", 401),
    ] {
        match connect(addr, token, query).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status().as_u16(), status);
                let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or(b"{}"))
                    .expect("json body");
                assert!(body["error"].is_string(), "{body}");
            }
            other => panic!(
                "{query}: expected an HTTP error, got {:?}",
                other.map(|_| "a websocket")
            ),
        }
    }
}

#[tokio::test]
async fn a_client_disconnect_detaches_without_ending_the_session() {
    let h = harness().await;
    h.create("dev").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = h.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/v1/sprites/dev/exec?cmd=cat"),
    )
    .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", h.admin).parse().expect("header"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    drop(ws);
    let fake = h.fake.clone();
    wait_until(move || fake.state().detached == 1).await;
    assert!(h.fake.state().killed.is_empty());
}

/// Every message until the server's close frame, and that frame's code; the
/// client sends nothing meanwhile. Fails the test unless the close comes
/// within `deadline`.
async fn messages_and_close_code(
    ws: &mut Ws,
    deadline: std::time::Duration,
) -> (Vec<WsMessage>, u16) {
    let mut out = Vec::new();
    let all = async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(frame))) => {
                    return frame.map_or(1005, |f| u16::from(f.code));
                }
                Some(Ok(m)) => out.push(m),
                other => panic!("the connection ended without a close frame: {other:?}"),
            }
        }
    };
    let code = tokio::time::timeout(deadline, all)
        .await
        .expect("no close frame from the server in time");
    (out, code)
}

/// Long enough for any machine, and shorter than the 5 s the server used to
/// wait for the client to close first.
const PROMPT_CLOSE: std::time::Duration = std::time::Duration::from_secs(3);

#[tokio::test]
async fn the_close_frame_carries_the_exit_code_and_follows_the_exit_at_once() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    for (query, code) in [
        ("cmd=echo&cmd=hi", 4003),
        ("cmd=echo&cmd=hi&tty=true", 4003),
        ("cmd=cat&stdin=false", 1000),
        ("cmd=cat&stdin=false&tty=true", 1000),
        ("cmd=nosuchcmd", 4127),
        ("cmd=nosuchcmd&tty=true", 4127),
    ] {
        let mut ws = connect(addr, &h.admin, query).await.expect("connect");
        let (msgs, close) = messages_and_close_code(&mut ws, PROMPT_CLOSE).await;
        assert_eq!(close, code, "{query}: {msgs:?}");
        assert_eq!(
            bothy_api::exec::exit_code_of_close(close),
            Some(if code == 1000 {
                0
            } else {
                i32::from(code - 4000)
            }),
            "{query}"
        );
    }
}

#[tokio::test]
async fn a_signal_message_signals_the_session() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    for (tty, signal, exit) in [
        (false, "TERM", 143),
        (false, "SIGKILL", 137),
        (true, "INT", 130),
        (false, "9", 137),
    ] {
        let query = if tty { "cmd=cat&tty=true" } else { "cmd=cat" };
        let mut ws = connect(addr, &h.admin, query).await.expect("connect");
        let msg = json!({"type": "signal", "signal": signal}).to_string();
        ws.send(WsMessage::Text(msg.into())).await.expect("signal");
        let (msgs, close) = messages_and_close_code(&mut ws, PROMPT_CLOSE).await;
        first_is_session_info(&msgs, tty);
        let last = msgs.last().expect("an exit message");
        if tty {
            let WsMessage::Text(t) = last else {
                panic!("{msgs:?}")
            };
            assert_eq!(
                serde_json::from_str::<Value>(t).expect("json"),
                json!({"type": "exit", "exit_code": exit})
            );
        } else {
            assert_eq!(last, &WsMessage::Binary(vec![3, exit as u8].into()));
        }
        assert_eq!(i32::from(close), 4000 + exit, "{signal}");
    }
}

#[tokio::test]
async fn an_unknown_signal_is_ignored() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    let mut ws = connect(addr, &h.admin, "cmd=cat").await.expect("connect");
    for bad in ["BOGUS", "0", "65", "-9", ""] {
        let msg = json!({"type": "signal", "signal": bad}).to_string();
        ws.send(WsMessage::Text(msg.into())).await.expect("signal");
    }
    ws.send(WsMessage::Binary(vec![4].into()))
        .await
        .expect("send eof");
    let (msgs, close) = messages_and_close_code(&mut ws, PROMPT_CLOSE).await;
    assert_eq!(msgs.last(), Some(&WsMessage::Binary(vec![3, 0].into())));
    assert_eq!(close, 1000);
}

#[tokio::test]
async fn one_stdin_message_of_16_mib_reaches_the_session_whole() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    let data: Vec<u8> = (0..bothy_api::exec::MAX_STDIN_MESSAGE)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut ws = connect(addr, &h.admin, "cmd=cat").await.expect("connect");
    let mut msg = vec![0u8];
    msg.extend_from_slice(&data);
    ws.send(WsMessage::Binary(msg.into())).await.expect("send");
    ws.send(WsMessage::Binary(vec![4].into()))
        .await
        .expect("send eof");
    let (msgs, close) = messages_and_close_code(&mut ws, std::time::Duration::from_secs(60)).await;
    assert_eq!(close, 1000);
    let mut echoed = Vec::new();
    for m in &msgs[1..msgs.len() - 1] {
        let WsMessage::Binary(b) = m else {
            panic!("not stdout: {m:?}")
        };
        assert_eq!(b[0], 1);
        echoed.extend_from_slice(&b[1..]);
    }
    assert!(
        echoed == data,
        "echoed {} bytes, sent {}",
        echoed.len(),
        data.len()
    );
}

#[tokio::test]
async fn a_message_over_the_limit_is_refused_with_a_close() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    let mut ws = connect(addr, &h.admin, "cmd=cat").await.expect("connect");
    let too_big = vec![0u8; bothy_api::exec::MAX_CLIENT_MESSAGE + 1];
    // The server may close before the whole message is sent.
    let _ = ws.send(WsMessage::Binary(too_big.into())).await;
    let ended = async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    };
    let code = tokio::time::timeout(std::time::Duration::from_secs(30), ended)
        .await
        .expect("the server kept the connection open");
    assert!(matches!(code, None | Some(1009)), "{code:?}");
    let fake = h.fake.clone();
    wait_until(move || fake.state().detached == 1).await;
}

#[tokio::test]
async fn the_upgrade_says_signal_messages_are_understood() {
    let h = harness().await;
    h.create("dev").await;
    let addr = serve(&h).await;
    for rest in ["exec?cmd=cat", "exec/s1"] {
        let mut req = format!("ws://{addr}/v1/sprites/dev/{rest}")
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", h.admin).parse().expect("header"),
        );
        let (_ws, res) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        assert_eq!(
            res.headers()
                .get("x-sprite-capabilities")
                .and_then(|v| v.to_str().ok()),
            Some("signal"),
            "{rest}"
        );
    }
}
