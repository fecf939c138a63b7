//! The list watch: `GET /v1/sprites` with `Accept: application/x-ndjson`.

use std::time::Duration;

use super::*;

async fn watch(h: &Harness, query: &str) -> Streamed {
    let req = h
        .request(Method::GET, &format!("/v1/sprites{query}"))
        .header("accept", "application/x-ndjson")
        .body(Body::empty())
        .expect("request");
    let res = h.open(req).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.content_type(), "application/x-ndjson");
    res
}

async fn next(w: &mut Streamed) -> Value {
    w.next_line().await.expect("the watch ended early")
}

#[tokio::test]
async fn first_the_matching_sprites_then_their_changes() {
    let h = harness().await;
    for name in ["web-1", "web-2", "db"] {
        h.create(name).await;
    }
    let mut w = watch(&h, "?prefix=web").await;
    for name in ["web-1", "web-2"] {
        let l = next(&mut w).await;
        assert_eq!(
            (&l["name"], &l["status"]),
            (&json!(name), &json!("running"))
        );
        assert_eq!(l["org"]["name"], "default");
        assert_eq!(l["org"]["running"], 3, "counts cover the organisation");
        assert!(
            l["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{l}"
        );
        assert!(l.get("type").is_none(), "{l}");
    }

    // A sprite the prefix does not match makes no line: the next line is
    // the next matching change.
    h.create("db-2").await;
    h.create("web-3").await;
    let l = next(&mut w).await;
    assert_eq!(
        (&l["name"], &l["status"]),
        (&json!("web-3"), &json!("running"))
    );
    assert_eq!(l["org"]["running"], 5);

    let (s, _) = h
        .call(Method::DELETE, "/v1/sprites/web-1", Some(&h.admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let l = next(&mut w).await;
    assert_eq!(
        (&l["name"], &l["status"]),
        (&json!("web-1"), &json!("destroyed"))
    );
    assert_eq!(l["org"]["running"], 4);

    // A restart is a stop and a start; a checkpoint changes no state.
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/sprites/web-2/checkpoint",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/sprites/web-2/restart",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let stopped = next(&mut w).await;
    let started = next(&mut w).await;
    assert_eq!(stopped["name"], "web-2");
    assert_eq!(started["name"], "web-2");
    assert_eq!(started["status"], "running");

    let (s, _) = h
        .call(
            Method::POST,
            "/v1/sprites/web-2/checkpoints/v1/restore",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let l = next(&mut w).await;
    assert_eq!(
        (&l["name"], &l["status"]),
        (&json!("web-2"), &json!("running"))
    );
}

#[tokio::test]
async fn other_organisations_are_never_seen() {
    let h = harness().await;
    let acme = h.other_org_token().await;
    let mut w = watch(&h, "").await;
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/sprites",
            Some(&acme),
            Some(json!({"name": "theirs"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    h.create("ours").await;
    let l = next(&mut w).await;
    assert_eq!(l["name"], "ours");
    assert_eq!(l["org"]["running"], 1, "{l}");
}

#[tokio::test]
async fn max_results_bounds_the_first_lines() {
    let h = harness().await;
    for name in ["a", "b", "c"] {
        h.create(name).await;
    }
    let mut w = watch(&h, "?max_results=2").await;
    assert_eq!(next(&mut w).await["name"], "a");
    assert_eq!(next(&mut w).await["name"], "b");
    h.create("d").await;
    assert_eq!(next(&mut w).await["name"], "d");
}

#[tokio::test]
async fn a_quiet_watch_sends_heartbeats() {
    let h = harness().await;
    h.create("dev").await;
    let (_keep, rx) = tokio::sync::watch::channel(false);
    let caller = h.control.authenticate(&h.admin).await.expect("caller");
    let q = crate::params::parse_watch_query(Some("prefix=nothing-matches")).expect("query");
    let res =
        crate::routes::watch::start(h.control.clone(), caller, q, rx, Duration::from_millis(20))
            .await
            .expect("watch");
    let mut w = Streamed {
        status: res.status(),
        headers: res.headers().clone(),
        body: res.into_body().into_data_stream(),
    };
    let l = next(&mut w).await;
    assert_eq!(l["type"], "heartbeat");
    assert_eq!(l["org"]["running"], 1);
    assert!(l.get("name").is_none(), "{l}");
}

#[tokio::test]
async fn the_watch_ends_at_shutdown() {
    let h = harness().await;
    h.create("dev").await;
    let mut w = watch(&h, "").await;
    assert_eq!(next(&mut w).await["name"], "dev");
    let _ = h.shutdown.send(true);
    assert_eq!(w.next().await, None);
}

#[tokio::test]
async fn a_plain_list_is_unchanged_and_errors_come_first() {
    let h = harness().await;
    h.create("dev").await;
    let (s, v) = h
        .call(Method::GET, "/v1/sprites", Some(&h.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["sprites"][0]["name"], "dev");
    let bad = h
        .request(Method::GET, "/v1/sprites?max_results=0")
        .header("accept", "application/x-ndjson")
        .body(Body::empty())
        .expect("request");
    assert_error(
        &h.raw(bad).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let anonymous = Request::get("/v1/sprites")
        .header("accept", "application/x-ndjson")
        .body(Body::empty())
        .expect("request");
    assert_error(
        &h.raw(anonymous).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}
