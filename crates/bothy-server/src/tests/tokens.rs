//! Token routes: mint with an expiry, `GET /v1/tokens`, `DELETE
//! /v1/tokens/{id}`: status codes, error shapes, and that no secret is
//! ever listed.

use super::*;

impl Harness {
    /// Mints a token of `org` with the admin token: (token, id).
    async fn mint(&self, org: &str, body: Option<Value>) -> (String, String) {
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/v1/organizations/{org}/tokens"),
                Some(&self.admin),
                body,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {v}"))
                .to_string()
        };
        (field("token"), field("id"))
    }

    async fn list(&self, token: &str, query: &str) -> (StatusCode, Value) {
        self.call(
            Method::GET,
            &format!("/v1/tokens{query}"),
            Some(token),
            None,
        )
        .await
    }

    async fn revoke(&self, token: &str, id: &str) -> (StatusCode, Value) {
        self.call(
            Method::DELETE,
            &format!("/v1/tokens/{id}"),
            Some(token),
            None,
        )
        .await
    }
}

fn listed_ids(v: &Value) -> Vec<String> {
    v["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("no tokens array in {v}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn create_answers_id_and_expiry_and_keeps_the_old_fields() {
    let h = harness().await;
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/organizations/acme/tokens",
            Some(&h.admin),
            Some(json!({"description": "ci", "expires_in": 3600})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["organization"], "acme");
    let token = v["token"].as_str().expect("token");
    assert!(token.starts_with("bothy_"), "{v}");
    assert!(bothy_api::is_token_id(v["id"].as_str().expect("id")), "{v}");
    let expires = v["expires_at"].as_str().expect("expires_at");
    assert!(expires > bothy_control::time::now().as_str(), "{v}");

    let tomorrow = bothy_control::time::rfc3339_ms(bothy_control::time::now_ms() + 86_400_000);
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/organizations/acme/tokens",
            Some(&h.admin),
            Some(json!({ "expires_at": tomorrow })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["expires_at"], tomorrow.as_str());

    // Without a body (as the SDK sends it): a token that never expires.
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/organizations/acme/tokens",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["expires_at"], Value::Null);
}

#[tokio::test]
async fn bad_expiries_and_bodies_are_400_and_mint_nothing() {
    let h = harness().await;
    let (_, before) = h.list(&h.admin, "").await;
    for body in [
        json!({"expires_in": 0}),
        json!({"expires_in": -60}),
        json!({"expires_in": 315_360_001}),
        json!({"expires_at": "tomorrow"}),
        json!({"expires_at": "2001-01-01T00:00:00Z"}),
        json!({"expires_at": "2999-01-01T00:00:00Z"}),
        json!({"expires_in": 60, "expires_at": "2099-01-01T00:00:00Z"}),
    ] {
        let got = h
            .call(
                Method::POST,
                "/v1/organizations/acme/tokens",
                Some(&h.admin),
                Some(body.clone()),
            )
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_expiry");
        let message = got.1["message"].as_str().unwrap_or_default();
        assert!(message.contains("expires_"), "{body}: {message}");
    }
    for body in [
        json!({"expires_in": "30d"}),
        json!({"expires_in": 1.5}),
        json!({"expires_at": 12}),
    ] {
        let got = h
            .call(
                Method::POST,
                "/v1/organizations/acme/tokens",
                Some(&h.admin),
                Some(body),
            )
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let req = h
        .request(Method::POST, "/v1/organizations/acme/tokens")
        .header("content-type", "application/json")
        .body(Body::from("{\"expires_in\": "))
        .expect("request");
    let got = h.raw(req).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        got.1["message"]
            .as_str()
            .is_some_and(|m| m.contains("malformed JSON")),
        "{got:?}"
    );
    let (_, after) = h.list(&h.admin, "").await;
    assert_eq!(listed_ids(&after), listed_ids(&before));
}

#[tokio::test]
async fn list_shows_what_the_caller_may_see_and_no_secret() {
    let h = harness().await;
    let (acme, acme_id) = h
        .mint("acme", Some(json!({"description": "ci", "expires_in": 60})))
        .await;
    let (other, other_id) = h.mint("other", None).await;

    let (s, v) = h.list(&acme, "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(listed_ids(&v), [acme_id.as_str()]);
    let t = &v["tokens"][0];
    assert_eq!(t["organization"], "acme");
    assert_eq!(t["description"], "ci");
    assert_eq!(t["is_admin"], false);
    assert_eq!(t["expired"], false);
    assert!(
        t["created_at"].is_string() && t["expires_at"].is_string(),
        "{t}"
    );

    let (s, v) = h.list(&h.admin, "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let all = listed_ids(&v);
    assert_eq!(all.len(), 3, "{v}");
    assert!(all.contains(&acme_id) && all.contains(&other_id), "{v}");
    let text = v.to_string();
    for secret in [&h.admin, &acme, &other] {
        assert!(!text.contains(secret.as_str()), "a token is listed: {text}");
        assert!(
            !text.contains(&hash_token(secret)),
            "a hash is listed: {text}"
        );
    }

    let (_, v) = h.list(&h.admin, "?org=other").await;
    assert_eq!(listed_ids(&v), [other_id.as_str()]);
    assert_error(
        &h.list(&acme, "?org=other").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &h.list(&h.admin, "?org=Not%20A%20Name").await,
        StatusCode::BAD_REQUEST,
        "invalid_name",
    );
    assert_error(
        &h.call(Method::GET, "/v1/tokens", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}

#[tokio::test]
async fn revoke_is_204_and_the_next_call_with_the_token_is_401() {
    let h = harness().await;
    let (acme, acme_id) = h.mint("acme", None).await;
    let (s, _) = h.list(&acme, "").await;
    assert_eq!(s, StatusCode::OK);

    let (s, v) = h.revoke(&h.admin, &acme_id).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(v, Value::Null, "204 has no body");
    let got = h
        .call(Method::GET, "/v1/organization", Some(&acme), None)
        .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        got.1["message"]
            .as_str()
            .is_some_and(|m| m.contains("revoked")),
        "{got:?}"
    );
    assert_error(
        &h.revoke(&h.admin, &acme_id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn members_cannot_reach_other_organisations_or_admin_tokens() {
    let h = harness().await;
    let (acme, _) = h.mint("acme", None).await;
    let (other, other_id) = h.mint("other", None).await;
    let (_, v) = h.list(&h.admin, "?org=default").await;
    let admin_id = listed_ids(&v).pop().expect("the admin token");

    // Another organisation's token answers exactly as an unknown id does.
    let foreign = h.revoke(&acme, &other_id).await;
    let unknown = h.revoke(&acme, "tok_000000000000").await;
    assert_error(&foreign, StatusCode::NOT_FOUND, "not_found");
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        foreign.1["message"]
            .as_str()
            .map(|m| m.replace(&other_id, "ID")),
        unknown.1["message"]
            .as_str()
            .map(|m| m.replace("tok_000000000000", "ID"))
    );
    assert_error(
        &h.revoke(&acme, &admin_id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (s, _) = h
        .call(Method::GET, "/v1/organization", Some(&other), None)
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the other organisation's token still works"
    );

    // A non-admin token of the admin's organisation sees the admin token
    // but may not revoke it.
    let (member, _) = h.mint("default", None).await;
    assert_error(
        &h.revoke(&member, &admin_id).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}

#[tokio::test]
async fn the_last_admin_token_is_409_and_keeps_working() {
    let h = harness().await;
    let (_, v) = h.list(&h.admin, "?org=default").await;
    let admin_id = listed_ids(&v).pop().expect("the admin token");
    let got = h.revoke(&h.admin, &admin_id).await;
    assert_error(&got, StatusCode::CONFLICT, "last_admin_token");
    let (s, _) = h.list(&h.admin, "").await;
    assert_eq!(s, StatusCode::OK, "the admin token still works");
}

#[tokio::test]
async fn malformed_ids_are_400_without_echoing_a_token() {
    let h = harness().await;
    for id in ["nope", "tok_123", "TOK_0123456789AB"] {
        assert_error(
            &h.revoke(&h.admin, id).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
    }
    let got = h.revoke(&h.admin, &h.admin.clone()).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(!got.1.to_string().contains(&h.admin), "{got:?}");
    let (s, _) = h.list(&h.admin, "").await;
    assert_eq!(s, StatusCode::OK, "the admin token was not touched");
}
