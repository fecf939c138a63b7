//! REST endpoints: auth, validation, error bodies, pagination, sessions.

use super::*;

#[tokio::test]
async fn every_route_needs_a_known_token() {
    let h = harness().await;
    for (m, uri) in [
        (Method::GET, "/v1/sprites"),
        (Method::POST, "/v1/sprites"),
        (Method::GET, "/v1/sprites/dev"),
        (Method::GET, "/v1/sprites/dev/exec"),
        (Method::GET, "/v1/organization"),
        (Method::GET, "/v1/sprites/dev/checkpoints"),
    ] {
        assert_error(
            &h.call(m.clone(), uri, None, None).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
        assert_error(
            &h.call(m, uri, Some("bothy_nope"), None).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
    }
    let (s, v) = h
        .call(Method::GET, "/v1/organization", Some(&h.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"name": "default", "slug": "default",
               "sprites": {"running": 0, "warm": 0, "cold": 0, "total": 0}})
    );
}

#[tokio::test]
async fn create_get_update_list_destroy() {
    let h = harness().await;
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/sprites",
            Some(&h.admin),
            Some(json!({"name": "dev", "config": {"ram_mb": 512, "cpus": 1}, "labels": ["a"], "url_settings": {"auth": "public"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "dev");
    assert_eq!(v["status"], "running");
    assert_eq!(v["config"]["ram_mb"], 512);
    assert_eq!(v["url_settings"]["auth"], "public");
    let id = v["id"].as_str().expect("id").to_string();
    assert!(h.fake.state().running.contains(&id));

    assert_error(
        &h.create("dev").await,
        StatusCode::CONFLICT,
        "already_exists",
    );

    let (s, v) = h
        .call(
            Method::PUT,
            "/v1/sprites/dev",
            Some(&h.admin),
            Some(json!({"labels": ["x", "y"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["labels"], json!(["x", "y"]));
    assert_eq!(
        v["url_settings"]["auth"], "public",
        "partial update keeps url_settings"
    );

    h.fake.state().running.clear();
    let (_, v) = h
        .call(Method::GET, "/v1/sprites/dev", Some(&h.admin), None)
        .await;
    assert_eq!(v["status"], "cold");

    let (s, v) = h
        .call(Method::DELETE, "/v1/sprites/dev", Some(&h.admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert!(h.fake.state().volumes.is_empty());
    assert_error(
        &h.call(Method::GET, "/v1/sprites/dev", Some(&h.admin), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &h.call(Method::DELETE, "/v1/sprites/dev", Some(&h.admin), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn bad_requests_have_error_bodies() {
    let h = harness().await;
    assert_error(
        &h.create("Bad_Name").await,
        StatusCode::BAD_REQUEST,
        "invalid_name",
    );
    assert_error(
        &h.call(
            Method::POST,
            "/v1/sprites",
            Some(&h.admin),
            Some(json!({"name": "x", "config": {"cpus": 999}})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_config",
    );
    assert_error(
        &h.call(
            Method::POST,
            "/v1/sprites",
            Some(&h.admin),
            Some(json!({"name": 5})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let malformed = Request::post("/v1/sprites")
        .header("authorization", format!("Bearer {}", h.admin))
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .expect("request");
    assert_error(
        &h.raw(malformed).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let huge = json!({"name": "x", "labels": ["a".repeat(bothy_api::MAX_JSON_BODY)]});
    assert_error(
        &h.call(Method::POST, "/v1/sprites", Some(&h.admin), Some(huge))
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_error(
        &h.call(
            Method::GET,
            "/v1/sprites?max_results=zero",
            Some(&h.admin),
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
}

#[tokio::test]
async fn unimplemented_routes_say_so_and_unknown_paths_are_404() {
    let h = harness().await;
    h.create("dev").await;
    for (m, uri) in [
        (Method::GET, "/v1/sprites/dev/no-such-thing"),
        (Method::POST, "/v1/sprites/dev/fs/no-such-op"),
        (Method::PATCH, "/v1/sprites/dev"),
        (Method::GET, "/v1/whatever"),
    ] {
        assert_error(
            &h.call(m, uri, Some(&h.admin), None).await,
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
        );
    }
    for token in [Some(h.admin.as_str()), None] {
        let got = h.call(Method::GET, "/", token, None).await;
        assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn orgs_are_isolated_and_tokens_are_scoped() {
    let h = harness().await;
    h.create("dev").await;
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/organizations/acme/tokens",
            Some(&h.admin),
            Some(json!({"description": "ci"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let acme = v["token"].as_str().expect("token").to_string();
    assert_eq!(v["organization"], "acme");

    assert_error(
        &h.call(Method::GET, "/v1/sprites/dev", Some(&acme), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &h.call(Method::DELETE, "/v1/sprites/dev", Some(&acme), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &h.call(Method::GET, "/v1/sprites/dev/exec", Some(&acme), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (_, v) = h.call(Method::GET, "/v1/sprites", Some(&acme), None).await;
    assert_eq!(v["sprites"], json!([]));
    // Same name in another org is fine.
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/sprites",
            Some(&acme),
            Some(json!({"name": "dev"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    assert_error(
        &h.call(
            Method::POST,
            "/v1/organizations/default/tokens",
            Some(&acme),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/organizations/acme/tokens",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn pagination_walks_every_sprite_once() {
    let h = harness().await;
    for i in 0..7 {
        h.create(&format!("box-{i}")).await;
    }
    h.create("other").await;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut uri = "/v1/sprites?prefix=box-&max_results=3".to_string();
        if let Some(t) = &token {
            uri.push_str(&format!("&continuation_token={t}"));
        }
        let (s, v) = h.call(Method::GET, &uri, Some(&h.admin), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["running"], 8);
        for sp in v["sprites"].as_array().expect("array") {
            seen.push(sp["name"].as_str().expect("name").to_string());
        }
        if v["has_more"] != true {
            break;
        }
        token = v["next_continuation_token"].as_str().map(str::to_string);
    }
    assert_eq!(seen, (0..7).map(|i| format!("box-{i}")).collect::<Vec<_>>());
    let (_, v) = h
        .call(
            Method::GET,
            "/v1/sprites?max_results=100",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(v["sprites"].as_array().expect("array").len(), 8);
}

#[tokio::test]
async fn a_wedged_box_does_not_hang_get_or_list() {
    let h = harness().await;
    let (_, v) = h.create("dev").await;
    let id = v["id"].as_str().expect("id").to_string();
    h.fake.state().wedged.insert(id);
    let (s, v) = h
        .call(Method::GET, "/v1/sprites/dev", Some(&h.admin), None)
        .await;
    assert_eq!((s, v["status"].clone()), (StatusCode::OK, json!("cold")));
    let (s, v) = h
        .call(Method::GET, "/v1/sprites", Some(&h.admin), None)
        .await;
    assert_eq!((s, v["cold"].clone()), (StatusCode::OK, json!(1)));
}

#[tokio::test]
async fn session_list_wakes_a_cold_box() {
    let h = harness().await;
    h.create("dev").await;
    h.fake.state().running.clear();
    let (s, v) = h
        .call(Method::GET, "/v1/sprites/dev/exec", Some(&h.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["sessions"][0]["id"], "s1");
    assert_eq!(v["sessions"][0]["created"], "2023-11-14T22:13:20.000Z");
    assert_eq!(
        h.fake.state().running.len(),
        1,
        "listing sessions woke the cold box"
    );
}

#[tokio::test]
async fn concurrent_creates_of_one_name_make_one_box() {
    let h = harness().await;
    let results = futures_util::future::join_all((0..8).map(|_| h.create("race"))).await;
    let created = results
        .iter()
        .filter(|r| r.0 == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{results:?}");
    for r in results.iter().filter(|r| r.0 != StatusCode::CREATED) {
        assert_error(r, StatusCode::CONFLICT, "already_exists");
    }
    assert_eq!(h.fake.state().volumes.len(), 1);
}

#[tokio::test]
async fn sync_and_drain() {
    let h = harness().await;
    h.create("dev").await;
    let (s, v) = h
        .call(Method::POST, "/v1/sprites/dev/sync", Some(&h.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["sprites"], json!(["dev"]));
    assert_error(
        &h.call(Method::POST, "/v1/sprites/nope/sync", Some(&h.admin), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/organizations/acme/tokens",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let acme = v["token"].as_str().expect("token").to_string();
    let (s, v) = h.call(Method::POST, "/v1/sync", Some(&acme), None).await;
    assert_eq!(
        (s, v["sprites"].clone()),
        (StatusCode::OK, json!([])),
        "{v}"
    );
    assert_error(
        &h.call(Method::POST, "/v1/drain", Some(&acme), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert!(
        !h.fake.state().running.is_empty(),
        "a refused drain stops nothing"
    );
    let (s, v) = h
        .call(Method::POST, "/v1/drain", Some(&h.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["stopped"], json!(["dev"]));
    assert!(h.fake.state().running.is_empty());
}
