//! `POST .../exec/{id}/kill`: the signal and grace period from the query
//! (`@fly/sprites`) or a JSON body (`sprites-py`), the events of the stream,
//! and the errors answered before it. The fake's session `s1` ends with
//! 128 + N at the first signal N it does not ignore.

use super::*;

async fn kill(h: &Harness, query: &str, body: Option<Value>) -> Streamed {
    let mut req = h.request(
        Method::POST,
        &format!("/v1/sprites/dev/exec/s1/kill{query}"),
    );
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    h.open(req.body(body).expect("request")).await
}

async fn events(h: &Harness, query: &str, body: Option<Value>) -> Vec<Value> {
    let res = kill(h, query, body).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.content_type(), "application/x-ndjson");
    let lines = res.lines().await;
    for l in &lines {
        // Both SDKs read the text: @fly/sprites as message, sprites-py as data.
        assert!(l["message"].as_str().is_some_and(|m| !m.is_empty()), "{l}");
        assert_eq!(l["data"], l["message"], "{l}");
    }
    assert_eq!(lines.last().map(|l| &l["type"]), Some(&json!("complete")));
    lines
}

fn types(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l["type"].as_str().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn the_query_names_the_signal_and_the_events_say_what_happened() {
    let h = harness().await;
    h.create("dev").await;
    let lines = events(&h, "?signal=SIGKILL&timeout=30s", None).await;
    assert_eq!(types(&lines), ["signal", "exited", "complete"]);
    assert_eq!(
        (&lines[0]["signal"], &lines[0]["pid"]),
        (&json!("SIGKILL"), &json!(2))
    );
    assert_eq!(
        (&lines[1]["exit_code"], &lines[1]["pid"]),
        (&json!(137), &json!(2))
    );
    assert_eq!(lines[2]["exit_code"], 137);
    assert_eq!(h.fake.state().killed, [("s1".to_string(), 9)]);
}

#[tokio::test]
async fn sprites_py_sends_a_json_body_and_signal_names_get_their_prefix() {
    let h = harness().await;
    h.create("dev").await;
    let lines = events(&h, "", Some(json!({"signal": "INT", "timeout": 5}))).await;
    assert_eq!(types(&lines), ["signal", "exited", "complete"]);
    assert_eq!(lines[0]["signal"], "SIGINT");
    assert_eq!(lines[1]["exit_code"], 130);
    // The query wins over the body.
    let h = harness().await;
    h.create("dev").await;
    events(&h, "?signal=HUP", Some(json!({"signal": "SIGINT"}))).await;
    assert_eq!(h.fake.state().killed, [("s1".to_string(), 1)]);
}

#[tokio::test]
async fn a_process_that_ignores_the_signal_is_killed_after_the_timeout() {
    let h = harness().await;
    h.create("dev").await;
    h.fake.state().ignored_signals.insert(15);
    let lines = events(&h, "?timeout=200ms", None).await;
    assert_eq!(
        types(&lines),
        ["signal", "timeout", "killed", "exited", "complete"]
    );
    assert_eq!(lines[0]["signal"], "SIGTERM");
    assert_eq!(lines[2]["signal"], "SIGKILL");
    assert_eq!(lines[3]["exit_code"], 137);
    assert_eq!(
        h.fake.state().killed,
        [("s1".to_string(), 15), ("s1".to_string(), 9)]
    );
}

#[tokio::test]
async fn a_process_that_outlives_sigkill_is_an_error_line() {
    let h = harness().await;
    h.create("dev").await;
    h.fake.state().ignored_signals.extend([15, 9]);
    let lines = events(&h, "?timeout=100ms", None).await;
    assert_eq!(
        types(&lines),
        ["signal", "timeout", "killed", "error", "complete"]
    );
    assert_eq!(lines[3]["error"], lines[3]["message"]);
    assert!(lines[4].get("exit_code").is_none(), "{}", lines[4]);
}

#[tokio::test]
async fn timeout_zero_sends_the_signal_only() {
    let h = harness().await;
    h.create("dev").await;
    h.fake.state().ignored_signals.insert(15);
    let lines = events(&h, "?timeout=0s", None).await;
    assert_eq!(types(&lines), ["signal", "complete"]);
    assert_eq!(h.fake.state().killed, [("s1".to_string(), 15)]);
}

#[tokio::test]
async fn a_session_that_already_ended_is_reported_without_a_signal() {
    let h = harness().await;
    h.create("dev").await;
    h.fake.state().killed.push(("s1".into(), 15));
    let lines = events(&h, "?signal=SIGKILL", None).await;
    assert_eq!(types(&lines), ["exited", "complete"]);
    assert_eq!(lines[0]["exit_code"], 143);
    assert_eq!(lines[1]["exit_code"], 143);
    assert_eq!(h.fake.state().killed.len(), 1, "no signal was sent");
}

#[tokio::test]
async fn errors_come_before_the_stream() {
    let h = harness().await;
    h.create("dev").await;
    for (uri, body, status, code) in [
        (
            "/v1/sprites/dev/exec/nope/kill",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/sprites/ghost/exec/s1/kill",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/sprites/dev/exec/s1/kill?signal=SIGNOPE",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/sprites/dev/exec/s1/kill",
            Some(json!({"signal": "SIGNOPE"})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/sprites/dev/exec/s1/kill?timeout=soon",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/sprites/dev/exec/s1/kill?timeout=5m1s",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/sprites/dev/exec/s1/kill",
            Some(json!({"timeout": "ten"})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ] {
        let got = h.call(Method::POST, uri, Some(&h.admin), body).await;
        assert_error(&got, status, code);
    }
    assert!(h.fake.state().killed.is_empty(), "nothing was signalled");
    // Another organisation's session is not found either.
    let other = h.other_org_token().await;
    assert_error(
        &h.call(
            Method::POST,
            "/v1/sprites/dev/exec/s1/kill",
            Some(&other),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}
