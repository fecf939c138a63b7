//! restart, check and upgrade.

use super::*;

async fn restart(h: &Harness) -> (StatusCode, Value) {
    h.call(
        Method::POST,
        "/v1/sprites/dev/restart",
        Some(&h.admin),
        None,
    )
    .await
}

fn box_id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn restart_stops_and_starts_the_box_on_the_same_disk() {
    let h = harness().await;
    let (_, created) = h.create("dev").await;
    let id = box_id(&created);
    h.fake.state().disks.insert(id.clone(), b"kept".to_vec());
    let (s, v) = restart(&h).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["sprite_name"], &v["machine_id"]),
        (&json!("dev"), &json!(id))
    );
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    let st = h.fake.state();
    assert_eq!(st.stops, [id.as_str()]);
    assert!(st.running.contains(&id));
    assert_eq!(st.disks.get(&id).map(Vec::as_slice), Some(&b"kept"[..]));
}

#[tokio::test]
async fn restart_errors_keep_their_kind() {
    let h = harness().await;
    h.create("dev").await;
    h.assert_guarded(Method::POST, "restart").await;
    // A box that does not come back up: 503 with the reason, never a 500.
    h.fake
        .state()
        .broken
        .insert("dev".into(), "the volume is corrupt".into());
    let got = restart(&h).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(
        got.1["message"]
            .as_str()
            .is_some_and(|m| m.contains("the volume is corrupt")),
        "{got:?}"
    );
}

#[tokio::test]
async fn check_pings_the_agent_without_waking_the_box() {
    let h = harness().await;
    let (_, created) = h.create("dev").await;
    let id = box_id(&created);
    let (s, v) = h
        .call(Method::GET, "/v1/sprites/dev/check", Some(&h.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["sprite_name"], &v["sprite_id"], &v["status"]),
        (&json!("dev"), &json!(id), &json!("healthy"))
    );
    assert!(v.get("reason").is_none(), "{v}");
    assert!(v["elapsed"].is_u64(), "{v}");
    let checked = v["checked_at"].as_str().expect("checked_at");
    assert!(
        checked.ends_with('Z') && checked.starts_with("20"),
        "{checked}"
    );

    h.fake.state().running.clear();
    let (s, v) = h
        .call(Method::GET, "/v1/sprites/dev/check", Some(&h.admin), None)
        .await;
    assert_eq!((s, &v["status"]), (StatusCode::OK, &json!("unhealthy")));
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not running")),
        "{v}"
    );
    assert!(
        h.fake.state().running.is_empty(),
        "a check does not start the box"
    );

    h.assert_guarded(Method::GET, "check").await;
}

#[tokio::test]
async fn upgrade_has_nothing_to_do() {
    let h = harness().await;
    h.create("dev").await;
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/sprites/dev/upgrade",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!((s, v), (StatusCode::NO_CONTENT, Value::Null));
    assert!(h.fake.state().stops.is_empty());
    h.assert_guarded(Method::POST, "upgrade").await;
}
