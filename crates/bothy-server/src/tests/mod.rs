//! API tests of the router against an in-memory fake of the boxes: auth,
//! validation, error shapes, pagination, exec framing and crash recovery,
//! without root or real boxes.

mod checkpoints;
mod daemon;
mod exec_ws;
mod rest;
mod sdk;

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
    /// Kept so the frontends' shutdown signal does not fire.
    _shutdown: watch::Sender<bool>,
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
        router: crate::routes::router(control, crate::Shutdown(rx)),
        fake,
        admin,
        _shutdown: tx,
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
