//! Reconciliation of boxes with the state database after a restart.

use super::*;

fn row(id: &str, name: &str, state: RowState) -> SpriteRow {
    SpriteRow {
        id: id.into(),
        org: "default".into(),
        name: name.into(),
        ram_mb: 512,
        cpus: 1,
        storage_gb: 1,
        url_auth: "sprite".into(),
        url_private_access: None,
        labels: vec![],
        state,
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
        last_running_at: None,
    }
}

#[tokio::test]
async fn recovery_rolls_back_finishes_and_restarts() {
    let h = harness().await;
    for (id, name, state) in [
        ("b000000000001", "half-made", RowState::Creating),
        ("b000000000002", "half-gone", RowState::Destroying),
        ("b000000000003", "ready", RowState::Ready),
        ("b000000000004", "broken", RowState::Ready),
    ] {
        h.app
            .store()
            .insert_sprite(row(id, name, state))
            .await
            .expect("insert");
        h.fake.state().volumes.insert(id.into());
    }
    h.fake
        .state()
        .broken
        .insert("broken".into(), "volume is corrupt".into());
    h.app.recover().await.expect("recover");

    {
        let s = h.fake.state();
        assert_eq!(
            s.volumes,
            HashSet::from(["b000000000003".to_string(), "b000000000004".to_string()])
        );
        assert_eq!(s.running, HashSet::from(["b000000000003".to_string()]));
    }
    let (_, v) = h
        .call(Method::GET, "/v1/sprites", Some(&h.admin), None)
        .await;
    let names: Vec<_> = v["sprites"]
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, [json!("broken"), json!("ready")]);
    let (_, v) = h
        .call(Method::GET, "/v1/sprites/broken", Some(&h.admin), None)
        .await;
    assert_eq!(v["status"], "cold");
    // Exec on a box that cannot start is a 503 that carries the reason.
    let got = h
        .call(Method::GET, "/v1/sprites/broken/exec", Some(&h.admin), None)
        .await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(
        got.1["message"]
            .as_str()
            .unwrap_or("")
            .contains("volume is corrupt"),
        "{got:?}"
    );
    // Stop-all stops what runs.
    h.app.stop_all().await.expect("stop all");
    assert!(h.fake.state().running.is_empty());
}
