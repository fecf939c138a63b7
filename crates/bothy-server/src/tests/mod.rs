//! API tests of the router against an in-memory fake of the boxes: auth,
//! validation, error shapes, pagination, exec framing and crash recovery,
//! without root or real boxes.

mod checkpoints;
mod control_ws;
mod daemon;
mod exec_http;
mod exec_ws;
mod kill;
mod machine;
mod mcp;
mod rest;
mod sdk;
mod sprite_watch;
mod tokens;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;

use bothy_control::testing::FakeBoxes;
use bothy_control::{hash_token, new_token, Control, Store};

struct Harness {
    router: Router,
    fake: FakeBoxes,
    admin: String,
    /// The frontends' shutdown signal; kept, so that it fires only when a
    /// test says.
    shutdown: watch::Sender<bool>,
    control: Control<FakeBoxes>,
}

async fn harness() -> Harness {
    let store = Store::open_in_memory().expect("store");
    let admin = new_token();
    store
        .bootstrap(hash_token(&admin), bothy_control::time::now())
        .await
        .expect("bootstrap");
    let fake = FakeBoxes::default();
    let (tx, rx) = watch::channel(false);
    let control = Control::new(store, fake.clone());
    Harness {
        router: crate::routes::router(
            control.clone(),
            crate::Shutdown(rx),
            crate::edge::EdgeSettings::local(([127, 0, 0, 1], 7070).into()).urls,
        ),
        fake,
        admin,
        shutdown: tx,
        control,
    }
}

impl Harness {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.raw(req.body(body).expect("request")).await
    }

    async fn raw(&self, req: Request<Body>) -> (StatusCode, Value) {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, v)
    }

    /// A request with the admin token.
    fn request(&self, method: Method, uri: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.admin))
    }

    /// Sends `req`; the answer's body is read as the server streams it.
    async fn open(&self, req: Request<Body>) -> Streamed {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        Streamed {
            status: res.status(),
            headers: res.headers().clone(),
            body: res.into_body().into_data_stream(),
        }
    }

    /// A token of another organisation, `acme`.
    async fn other_org_token(&self) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/v1/organizations/acme/tokens",
                Some(&self.admin),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().expect("token").to_string()
    }

    /// `method /v1/sprites/NAME/{rest}` is 404 for an unknown sprite and 401
    /// without a token (for sprite `dev`).
    async fn assert_guarded(&self, method: Method, rest: &str) {
        let unknown = self
            .call(
                method.clone(),
                &format!("/v1/sprites/ghost/{rest}"),
                Some(&self.admin),
                None,
            )
            .await;
        assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
        let anonymous = self
            .call(method, &format!("/v1/sprites/dev/{rest}"), None, None)
            .await;
        assert_error(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
    }

    async fn create(&self, name: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/v1/sprites",
            Some(&self.admin),
            Some(json!({"name": name})),
        )
        .await
    }
}

fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{got:?}");
    assert_eq!(got.1["error"], code, "{got:?}");
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{got:?}"
    );
}

/// Waits for `cond` with a deadline (the condition is polled: the fake has no
/// notification to wait on).
async fn wait_until(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// An answer whose body is read chunk by chunk, as the server sends it.
struct Streamed {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: axum::body::BodyDataStream,
}

impl Streamed {
    /// The next chunk, `None` at the end; fails the test after 10 s.
    async fn next(&mut self) -> Option<axum::body::Bytes> {
        use futures_util::StreamExt;
        tokio::time::timeout(std::time::Duration::from_secs(10), self.body.next())
            .await
            .expect("nothing from the server within 10 s")
            .map(|chunk| chunk.expect("the body failed"))
    }

    /// The next chunk as one NDJSON line.
    async fn next_line(&mut self) -> Option<Value> {
        let chunk = self.next().await?;
        assert!(chunk.ends_with(b"\n"), "not one whole line: {chunk:?}");
        Some(serde_json::from_slice(&chunk).expect("an NDJSON line"))
    }

    /// Every chunk until the end.
    async fn chunks(mut self) -> Vec<axum::body::Bytes> {
        let mut all = Vec::new();
        while let Some(c) = self.next().await {
            all.push(c);
        }
        all
    }

    /// Every NDJSON line until the end.
    async fn lines(mut self) -> Vec<Value> {
        let mut all = Vec::new();
        while let Some(l) = self.next_line().await {
            all.push(l);
        }
        all
    }

    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}
