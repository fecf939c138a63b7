//! `/mcp` against the fake boxes: refused without a known token before any
//! MCP message; a session's tools call the daemon's own API with the token
//! that opened it, and refuse another.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{assert_error, harness, Harness};
use crate::routes::McpEndpoint;

/// The harness's router with the MCP endpoint, also served on a loopback
/// port: the tools call the API there, as in the daemon.
async fn mcp_router(h: &Harness) -> axum::Router {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let router = h
        .router
        .clone()
        .layer(axum::Extension(McpEndpoint::new(addr)));
    let served = router.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, served).await;
    });
    router
}

fn rpc(token: Option<&str>, session: Option<&str>, body: Value) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/mcp")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    req.body(Body::from(body.to_string())).expect("request")
}

/// Sends one JSON-RPC request; the answer with its id (from a JSON body or
/// an event stream) and the session id header.
async fn send(router: &axum::Router, req: Request<Body>, id: u64) -> (Value, Option<String>) {
    let res = router.clone().oneshot(req).await.expect("infallible");
    if res.status() != StatusCode::OK {
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await;
        panic!("HTTP {status}: {body:?}");
    }
    let session = res
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = res.into_body().into_data_stream();
    let mut text = String::new();
    let deadline = std::time::Duration::from_secs(10);
    loop {
        let chunk = tokio::time::timeout(deadline, body.next())
            .await
            .expect("an answer within 10 s")
            .expect("an answer before the end")
            .expect("body");
        text.push_str(&String::from_utf8_lossy(&chunk));
        let found = text
            .lines()
            .map(|l| l.strip_prefix("data:").unwrap_or(l).trim())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["id"] == id);
        if let Some(v) = found {
            return (v, session);
        }
    }
}

async fn open_session(router: &axum::Router, token: &str) -> String {
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}}
    });
    let (answer, session) = send(router, rpc(Some(token), None, init), 1).await;
    assert_eq!(answer["result"]["serverInfo"]["name"], "bothy", "{answer}");
    let session = session.expect("a session id");
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let res = router
        .clone()
        .oneshot(rpc(Some(token), Some(&session), done))
        .await
        .expect("infallible");
    assert!(res.status().is_success(), "{}", res.status());
    session
}

fn tool_call(id: u64, name: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": args}})
}

#[tokio::test]
async fn without_a_known_token_nothing_reaches_mcp() {
    let h = harness().await;
    let router = mcp_router(&h).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
    for token in [None, Some("not-a-token")] {
        let res = router
            .clone()
            .oneshot(rpc(token, None, init.clone()))
            .await
            .expect("infallible");
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: Value = serde_json::from_slice(&body).expect("the API's error body");
        assert_error(&(status, v), StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

#[tokio::test]
async fn tools_act_with_the_sessions_token() {
    let h = harness().await;
    assert_eq!(h.create("mine").await.0, StatusCode::CREATED);
    let other = h.other_org_token().await;
    let router = mcp_router(&h).await;

    let session = open_session(&router, &h.admin).await;
    let (listed, _) = send(
        &router,
        rpc(
            Some(&h.admin),
            Some(&session),
            tool_call(2, "sprite_list", json!({})),
        ),
        2,
    )
    .await;
    let text = listed["result"]["content"][0]["text"]
        .as_str()
        .expect("text");
    assert!(text.contains("\"mine\""), "{listed}");

    // Another token on this session is refused; in its own session it sees
    // its own organisation, where `mine` does not exist.
    let (refused, _) = send(
        &router,
        rpc(
            Some(&other),
            Some(&session),
            tool_call(3, "sprite_list", json!({})),
        ),
        3,
    )
    .await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    let theirs = open_session(&router, &other).await;
    let (missing, _) = send(
        &router,
        rpc(
            Some(&other),
            Some(&theirs),
            tool_call(4, "sprite_get", json!({"sprite": "mine"})),
        ),
        4,
    )
    .await;
    assert_eq!(missing["result"]["isError"], true, "{missing}");
    let text = missing["result"]["content"][0]["text"]
        .as_str()
        .expect("text");
    assert!(text.contains("404"), "{text}");
}
