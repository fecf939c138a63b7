//! The whole daemon over the fake: first start, restart, shutdown.

use super::*;
use std::os::unix::fs::PermissionsExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

async fn start(
    dir: &std::path::Path,
    fake: FakeBoxes,
    stop_boxes: bool,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), crate::ServerError>>,
) {
    let control = bothy_control::open_with(dir, fake, None, false, None)
        .await
        .expect("control opens");
    let listener = crate::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = crate::serve(control.clone(), listener, async move {
            let _ = rx.await;
        })
        .await;
        control.shutdown(stop_boxes).await;
        served
    });
    (addr, tx, task)
}

#[tokio::test]
async fn first_start_restart_adopts_and_shutdown_on_request_stops() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = bothy_control::datadir::prepare(&tmp.path().join("data")).expect("prepare");
    let fake = FakeBoxes::default();

    let (addr, stop, task) = start(&dir, fake.clone(), false).await;
    let token_file = dir.join("admin-token");
    let token = std::fs::read_to_string(&token_file)
        .expect("admin token")
        .trim()
        .to_string();
    assert_eq!(
        std::fs::metadata(&token_file)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let res = http(addr, "GET", "/v1/organization", &token, "").await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let res = http(addr, "POST", "/v1/sprites", &token, r#"{"name":"dev"}"#).await;
    assert!(res.starts_with("HTTP/1.1 201"), "{res}");
    assert_eq!(fake.state().running.len(), 1);

    stop.send(()).expect("daemon alive");
    task.await.expect("join").expect("clean exit");
    assert_eq!(
        fake.state().running.len(),
        1,
        "a plain shutdown leaves boxes running"
    );

    // Restart: same token, the running box is adopted.
    let (addr, stop, task) = start(&dir, fake.clone(), true).await;
    let again = std::fs::read_to_string(&token_file).expect("admin token");
    assert_eq!(again.trim(), token);
    let res = http(addr, "GET", "/v1/sprites/dev", &token, "").await;
    assert!(
        res.starts_with("HTTP/1.1 200") && res.contains("\"running\""),
        "{res}"
    );
    stop.send(()).expect("daemon alive");
    task.await.expect("join").expect("clean exit");
    assert!(
        fake.state().running.is_empty(),
        "a shutdown told to stop boxes stops them"
    );
}
