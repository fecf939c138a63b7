//! The exec client against a scripted WebSocket server on loopback: what goes
//! over the wire (URL, auth, framing) and what the caller sees.

// tungstenite's handshake callback returns its (large) error response by value.
#![allow(clippy::result_large_err)]

use bothy_client::{Client, ClientError, ExecEvent, ExecParams};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::Message;

/// What the fake server saw in the upgrade request.
#[derive(Debug, Default, Clone)]
struct Seen {
    uri: String,
    auth: String,
}

/// Serves one WebSocket connection with `script`, returns what it saw.
async fn serve_once<F, Fut>(script: F) -> (String, tokio::task::JoinHandle<Seen>)
where
    F: FnOnce(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut seen = Seen::default();
        let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
            seen.uri = req.uri().to_string();
            seen.auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            Ok::<_, ErrorResponse>(resp)
        })
        .await
        .expect("handshake");
        script(ws).await;
        seen
    });
    (format!("http://{addr}"), handle)
}

fn info(id: &str, tty: bool) -> Message {
    Message::Text(
        format!(r#"{{"type":"session_info","session_id":"{id}","command":"cat","tty":{tty}}}"#)
            .into(),
    )
}

#[tokio::test]
async fn non_tty_exec_streams_both_ways_and_reports_the_exit_code() {
    let (url, server) = serve_once(|mut ws| async move {
        ws.send(info("s1", false)).await.expect("send info");
        // Echo stdin to stdout until EOF, then a stderr line and exit 7.
        while let Some(Ok(m)) = ws.next().await {
            let Message::Binary(b) = m else { continue };
            match b.first() {
                Some(0) => {
                    let mut out = vec![1u8];
                    out.extend_from_slice(&b[1..]);
                    ws.send(Message::Binary(out.into())).await.expect("echo");
                }
                Some(4) => break,
                _ => {}
            }
        }
        ws.send(Message::Binary(vec![2, b'e', b'\n'].into()))
            .await
            .expect("stderr");
        ws.send(Message::Binary(vec![3, 7].into()))
            .await
            .expect("exit");
    })
    .await;

    let client = Client::new(&url, "tok").expect("client");
    let mut params = ExecParams::new(vec!["cat".into(), "-".into()]);
    params.env = vec![("A".into(), "1".into())];
    let conn = client.exec("dev", &params).await.expect("connect");
    assert_eq!(
        conn.session_info().map(|i| i.session_id.as_str()),
        Some("s1")
    );
    let (mut tx, mut rx) = conn.split();
    tx.send_stdin(b"hi\x00there").await.expect("stdin");
    tx.send_stdin_eof().await.expect("eof");

    let mut events = Vec::new();
    while let Some(e) = rx.next_event().await.expect("events") {
        events.push(e);
    }
    assert_eq!(
        events[1..],
        [
            ExecEvent::Stdout(bytes::Bytes::from_static(b"hi\x00there")),
            ExecEvent::Stderr(bytes::Bytes::from_static(b"e\n")),
            ExecEvent::Exit(7),
        ]
    );
    let seen = server.await.expect("server");
    assert_eq!(seen.auth, "Bearer tok");
    assert_eq!(
        seen.uri,
        "/v1/sprites/dev/exec?cmd=cat&cmd=-&path=cat&env=A%3D1&stdin=true"
    );
}

#[tokio::test]
async fn attach_learns_tty_mode_from_session_info() {
    let (url, server) = serve_once(|mut ws| async move {
        ws.send(info("7", true)).await.expect("info");
        // Raw bytes, even ones that look like stream ids.
        ws.send(Message::Binary(vec![3, 1, b'x'].into()))
            .await
            .expect("raw");
        // Wait for the client's resize and raw input before exiting.
        let mut got = Vec::new();
        while got.len() < 2 {
            match ws.next().await {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => got.push(m),
                Some(Ok(_)) => continue,
                _ => break,
            }
        }
        assert_eq!(
            got[0],
            Message::Text(r#"{"cols":100,"rows":30,"type":"resize"}"#.into())
        );
        assert_eq!(got[1], Message::Binary(b"ls\r".to_vec().into()));
        ws.send(Message::Text(r#"{"type":"exit","exit_code":130}"#.into()))
            .await
            .expect("exit");
    })
    .await;

    let client = Client::new(&url, "tok").expect("client");
    let conn = client.attach("dev", "7").await.expect("attach");
    assert!(conn.tty());
    let (mut tx, mut rx) = conn.split();
    tx.resize(100, 30).await.expect("resize");
    tx.send_stdin(b"ls\r").await.expect("stdin");
    tx.send_stdin_eof()
        .await
        .expect("eof is a no-op in tty mode");
    let mut events = Vec::new();
    while let Some(e) = rx.next_event().await.expect("events") {
        events.push(e);
    }
    assert_eq!(
        events[1..],
        [
            ExecEvent::Stdout(bytes::Bytes::from_static(&[3, 1, b'x'])),
            ExecEvent::Exit(130)
        ]
    );
    let seen = server.await.expect("server");
    assert_eq!(seen.uri, "/v1/sprites/dev/exec/7");
}

#[tokio::test]
async fn a_refused_upgrade_shows_the_api_error_message() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let _ = tokio_tungstenite::accept_hdr_async(tcp, |_: &Request, _: Response| {
            let body = r#"{"error":"not_found","message":"no bothy named ghost"}"#;
            let mut resp = ErrorResponse::new(Some(body.to_string()));
            *resp.status_mut() = http::StatusCode::NOT_FOUND;
            Err(resp)
        })
        .await;
    });
    let client = Client::new(&format!("http://{addr}"), "tok").expect("client");
    let err = client
        .exec("ghost", &ExecParams::new(vec!["true".into()]))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, ClientError::Api { status: 404, code, .. } if code == "not_found"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "no bothy named ghost");
    server.await.expect("server");
}

#[tokio::test]
async fn a_connection_lost_before_exit_ends_without_a_code() {
    let (url, server) = serve_once(|mut ws| async move {
        ws.send(info("s", false)).await.expect("info");
        ws.send(Message::Binary(vec![1, b'a'].into()))
            .await
            .expect("out");
        let _ = ws.close(None).await;
    })
    .await;
    let client = Client::new(&url, "tok").expect("client");
    let (_tx, mut rx) = client
        .exec("dev", &ExecParams::new(vec!["x".into()]))
        .await
        .expect("connect")
        .split();
    let mut last = None;
    while let Some(e) = rx.next_event().await.expect("events") {
        last = Some(e);
    }
    assert_eq!(
        last,
        Some(ExecEvent::Stdout(bytes::Bytes::from_static(b"a")))
    );
    server.await.expect("server");
}
