//! The checkpoint API over the fake boxes: ids, NDJSON streams, restore with
//! its automatic checkpoint, fork, delete and garbage collection, errors.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{assert_error, harness, wait_until, Harness};

/// The NDJSON lines of a progress answer.
fn lines(v: &Value) -> Vec<Value> {
    v.as_str()
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
        .collect()
}

async fn checkpoint(h: &Harness, name: &str, comment: Option<&str>) -> String {
    let body = comment.map(|c| json!({ "comment": c }));
    let (status, v) = h
        .call(
            Method::POST,
            &format!("/v1/sprites/{name}/checkpoint"),
            Some(&h.admin),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v:?}");
    let lines = lines(&v);
    let last = lines.last().expect("a line");
    assert_eq!(last["type"], "complete", "{lines:?}");
    last["data"].as_str().expect("an id").to_string()
}

async fn ids(h: &Harness, name: &str, query: &str) -> Vec<String> {
    let (status, v) = h
        .call(
            Method::GET,
            &format!("/v1/sprites/{name}/checkpoints{query}"),
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v:?}");
    v.as_array()
        .expect("a list")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect()
}

fn set_disk(h: &Harness, content: &str) {
    let mut s = h.fake.state();
    let id = s.volumes.iter().next().cloned().expect("a box");
    s.disks.insert(id, content.as_bytes().to_vec());
}

fn disk_of_only_box(h: &Harness) -> String {
    let s = h.fake.state();
    let id = s.volumes.iter().next().cloned().expect("a box");
    String::from_utf8_lossy(s.disks.get(&id).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

#[tokio::test]
async fn create_list_get_restore_delete() {
    let h = harness().await;
    h.create("dev").await;
    set_disk(&h, "one");
    assert_eq!(checkpoint(&h, "dev", Some("first")).await, "v1");
    set_disk(&h, "two");
    assert_eq!(checkpoint(&h, "dev", None).await, "v2");
    assert_eq!(ids(&h, "dev", "").await, ["v1", "v2"]);

    let (status, v) = h
        .call(
            Method::GET,
            "/v1/sprites/dev/checkpoints/v1",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["comment"], "first");
    assert!(v["create_time"].as_str().is_some_and(|t| t.ends_with('Z')));
    // The fields @fly/sprites reads: made by hand, from no other checkpoint,
    // restorable.
    assert_eq!(
        (&v["is_auto"], &v["source_id"], &v["health"]),
        (&json!(false), &Value::Null, &json!(""))
    );

    set_disk(&h, "three");
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/sprites/dev/checkpoints/v1/restore",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v:?}");
    let last = lines(&v).pop().expect("a line");
    assert_eq!(
        (last["type"].clone(), last["data"].clone()),
        (json!("complete"), json!("v3"))
    );
    assert_eq!(disk_of_only_box(&h), "one");
    // The state the restore replaced is kept, listed only on request.
    assert_eq!(ids(&h, "dev", "").await, ["v1", "v2"]);
    assert_eq!(
        ids(&h, "dev", "?include_auto=true").await,
        ["v1", "v2", "v3"]
    );
    let (_, auto) = h
        .call(
            Method::GET,
            "/v1/sprites/dev/checkpoints/v3",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(
        (&auto["is_auto"], &auto["auto"]),
        (&json!(true), &json!(true))
    );
    // Checkpoints after the restore descend from v1.
    assert_eq!(checkpoint(&h, "dev", None).await, "v4");
    assert_eq!(ids(&h, "dev", "?history=v1").await, ["v4"]);
    let (_, listed) = h
        .call(
            Method::GET,
            "/v1/sprites/dev/checkpoints",
            Some(&h.admin),
            None,
        )
        .await;
    let v4 = listed
        .as_array()
        .and_then(|l| l.iter().find(|c| c["id"] == "v4"))
        .expect("v4 listed");
    assert_eq!(
        (&v4["source_id"], &v4["is_auto"], &v4["health"]),
        (&json!("v1"), &json!(false), &json!(""))
    );

    let (status, _) = h
        .call(
            Method::DELETE,
            "/v1/sprites/dev/checkpoints/v2",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(ids(&h, "dev", "").await, ["v1", "v4"]);
    let fake = h.fake.clone();
    wait_until(move || fake.state().gc_runs > 0).await;
    // Ids are never reused.
    assert_eq!(checkpoint(&h, "dev", None).await, "v5");
}

#[tokio::test]
async fn bad_ids_and_unknown_checkpoints_change_nothing() {
    let h = harness().await;
    h.create("dev").await;
    checkpoint(&h, "dev", None).await;
    for (m, uri) in [
        (Method::GET, "/v1/sprites/dev/checkpoints/v9"),
        (Method::POST, "/v1/sprites/dev/checkpoints/v9/restore"),
        (Method::DELETE, "/v1/sprites/dev/checkpoints/v9"),
        (Method::GET, "/v1/sprites/nope/checkpoints"),
    ] {
        assert_error(
            &h.call(m, uri, Some(&h.admin), None).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    for id in ["v0", "1", "v01", "x", "v-1"] {
        let got = h
            .call(
                Method::POST,
                &format!("/v1/sprites/dev/checkpoints/{id}/restore"),
                Some(&h.admin),
                None,
            )
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let long = "x".repeat(2000);
    let got = h
        .call(
            Method::POST,
            "/v1/sprites/dev/checkpoint",
            Some(&h.admin),
            Some(json!({"comment": long})),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
    let got = h
        .call(
            Method::GET,
            "/v1/sprites/dev/checkpoints?include_auto=maybe",
            Some(&h.admin),
            None,
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(ids(&h, "dev", "?include_auto=true").await, ["v1"]);
    // Without a token, nothing.
    let got = h
        .call(Method::GET, "/v1/sprites/dev/checkpoints", None, None)
        .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn fork_starts_from_a_checkpoint_of_another_sprite() {
    let h = harness().await;
    h.create("dev").await;
    set_disk(&h, "base state");
    checkpoint(&h, "dev", None).await;
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/sprites",
            Some(&h.admin),
            Some(json!({"name": "copy", "from_checkpoint": {"sprite": "dev", "checkpoint": "v1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v:?}");
    {
        let s = h.fake.state();
        assert!(
            s.disks
                .values()
                .filter(|d| d.as_slice() == b"base state")
                .count()
                == 2
        );
    }
    // The fork's checkpoints record where it came from.
    assert_eq!(checkpoint(&h, "copy", None).await, "v1");
    let (_, c) = h
        .call(
            Method::GET,
            "/v1/sprites/copy/checkpoints/v1",
            Some(&h.admin),
            None,
        )
        .await;
    assert_eq!(c["history"], json!(["dev@v1"]));
    assert_eq!(c["source_id"], "dev@v1");
    for (from, status, code) in [
        (
            json!({"sprite": "dev", "checkpoint": "v7"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"sprite": "ghost", "checkpoint": "v1"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"sprite": "dev", "checkpoint": "latest"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ] {
        let got = h
            .call(
                Method::POST,
                "/v1/sprites",
                Some(&h.admin),
                Some(json!({"name": "bad", "from_checkpoint": from})),
            )
            .await;
        assert_error(&got, status, code);
    }
    // A failed fork leaves no sprite behind.
    let (_, list) = h
        .call(Method::GET, "/v1/sprites", Some(&h.admin), None)
        .await;
    assert_eq!(list["sprites"].as_array().map(Vec::len), Some(2));
}
