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
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), crate::DaemonError>>,
) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let dir = dir.to_path_buf();
    let task = tokio::spawn(async move {
        crate::serve_with(
            &dir,
            port,
            fake,
            async move {
                let _ = rx.await;
            },
            None,
        )
        .await
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(port).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "daemon did not listen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    (port, tx, task)
}

#[tokio::test]
async fn first_start_restart_and_shutdown() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = crate::datadir::prepare(&tmp.path().join("data")).expect("prepare");
    let fake = FakeBoxes::default();

    let (addr, stop, task) = start(&dir, fake.clone()).await;
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
    assert!(fake.state().running.is_empty(), "shutdown stops every box");

    // Restart: same token, the box is started again in the background.
    let (addr, stop, task) = start(&dir, fake.clone()).await;
    let again = std::fs::read_to_string(&token_file).expect("admin token");
    assert_eq!(again.trim(), token);
    let f = fake.clone();
    wait_until(move || f.state().running.len() == 1).await;
    let res = http(addr, "GET", "/v1/sprites/dev", &token, "").await;
    assert!(
        res.starts_with("HTTP/1.1 200") && res.contains("\"running\""),
        "{res}"
    );
    stop.send(()).expect("daemon alive");
    task.await.expect("join").expect("clean exit");
}
