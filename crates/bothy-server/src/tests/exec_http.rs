//! HTTP exec (`POST .../exec`): stdin from the body, frames as chunks, the
//! exit frame last, errors before the command starts.

use super::*;

async fn exec(h: &Harness, query: &str, stdin: &[u8]) -> Streamed {
    let req = h
        .request(Method::POST, &format!("/v1/sprites/dev/exec?{query}"))
        .header("content-type", "application/octet-stream")
        .body(Body::from(stdin.to_vec()))
        .expect("request");
    h.open(req).await
}

/// The frames of a successful answer.
async fn frames(h: &Harness, query: &str, stdin: &[u8]) -> Vec<Vec<u8>> {
    let res = exec(h, query, stdin).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.content_type(), "application/octet-stream");
    res.chunks().await.into_iter().map(|c| c.to_vec()).collect()
}

#[tokio::test]
async fn output_comes_as_frames_and_the_exit_last() {
    let h = harness().await;
    h.create("dev").await;
    let got = frames(&h, "cmd=echo&cmd=hi&path=echo", b"").await;
    assert_eq!(
        got,
        [b"\x01hi\n".to_vec(), b"\x02warn".to_vec(), vec![3, 3]]
    );
}

#[tokio::test]
async fn the_body_is_stdin_only_when_asked_for() {
    let h = harness().await;
    h.create("dev").await;
    let got = frames(&h, "cmd=cat&stdin=true", b"from stdin").await;
    assert_eq!(got, [b"\x01from stdin".to_vec(), vec![3, 0]]);
    // Without stdin=true the command's stdin is closed at once.
    let got = frames(&h, "cmd=cat", b"ignored").await;
    assert_eq!(got, [vec![3, 0]]);
}

#[tokio::test]
async fn stdin_larger_than_an_agent_frame_arrives_whole() {
    let h = harness().await;
    h.create("dev").await;
    let stdin: Vec<u8> = (0..3 * bothy_control::exec::MAX_PAYLOAD + 7)
        .map(|i| (i % 251) as u8)
        .collect();
    let got = frames(&h, "cmd=cat&stdin=true", &stdin).await;
    let (exit, output) = got.split_last().expect("frames");
    assert_eq!(exit, &[3, 0]);
    let mut echoed = Vec::new();
    for f in output {
        assert_eq!(f[0], 1, "stdout frames only");
        // A client's socket read takes a frame this size whole.
        assert!(f.len() <= 1 + (32 << 10), "a frame of {} bytes", f.len());
        echoed.extend_from_slice(&f[1..]);
    }
    assert!(echoed == stdin, "stdin came back changed");
}

#[tokio::test]
async fn a_command_that_cannot_start_exits_127_with_the_reason_on_stderr() {
    let h = harness().await;
    h.create("dev").await;
    let got = frames(&h, "cmd=nosuchcmd", b"").await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0][0], 2);
    assert!(String::from_utf8_lossy(&got[0][1..]).contains("command not found"));
    assert_eq!(got[1], [3, 127]);
}

#[tokio::test]
async fn errors_come_before_the_command_starts() {
    let h = harness().await;
    h.create("dev").await;
    for (query, status, code) in [
        ("path=ls", StatusCode::BAD_REQUEST, "invalid_request"),
        (
            "cmd=cat&tty=true",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        ("cmd=ls&env=bad", StatusCode::BAD_REQUEST, "invalid_request"),
    ] {
        let res = exec(&h, query, b"").await;
        assert_eq!(res.status, status, "{query}");
        let body = res.chunks().await.concat();
        let v: Value = serde_json::from_slice(&body).expect("an error body");
        assert_eq!(v["error"], code, "{query}");
    }
    h.assert_guarded(Method::POST, "exec?cmd=ls").await;
    let too_big = vec![b'x'; bothy_api::exec::MAX_HTTP_STDIN + 1];
    let res = exec(&h, "cmd=cat&stdin=true", &too_big).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = serde_json::from_slice(&res.chunks().await.concat()).expect("an error body");
    assert_eq!(v["error"], "payload_too_large");
}

#[tokio::test]
async fn a_shutdown_ends_the_answer_without_an_exit_and_detaches() {
    let h = harness().await;
    h.create("dev").await;
    let mut res = exec(&h, "cmd=sleep", b"").await;
    assert_eq!(res.status, StatusCode::OK);
    let _ = h.shutdown.send(true);
    let note = res.next().await.expect("a note on stderr");
    assert_eq!(note[0], 2);
    assert!(String::from_utf8_lossy(&note[1..]).contains("shutting down"));
    assert_eq!(
        res.next().await,
        None,
        "no exit frame: the command did not end"
    );
    let fake = h.fake.clone();
    wait_until(move || fake.state().detached == 1).await;
}

#[tokio::test]
async fn a_client_that_goes_away_detaches() {
    let h = harness().await;
    h.create("dev").await;
    let res = exec(&h, "cmd=sleep", b"").await;
    assert_eq!(res.status, StatusCode::OK);
    drop(res);
    let fake = h.fake.clone();
    wait_until(move || fake.state().detached == 1).await;
    assert!(h.fake.state().killed.is_empty());
}
