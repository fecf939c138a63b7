//! Bad requests over plain HTTP: each gets the right status and the error body
//! `{"error","message"}`, and changes nothing (same boxes, no new directories).

mod common;

use common::{Daemon, Response, Shared};
use serde_json::json;

const BOX: &str = "api-box";

static DAEMON: Shared = Shared::new();

fn daemon() -> &'static Daemon {
    DAEMON.get(|d| d.create(BOX))
}

/// Runs `bad` and checks the daemon's visible state did not move.
fn changes_nothing(d: &Daemon, bad: impl FnOnce() -> Response) -> Response {
    let names = d.names();
    let dirs = d.box_dirs();
    let r = bad();
    assert_eq!(d.names(), names, "a rejected request changed the box list");
    assert_eq!(
        d.box_dirs(),
        dirs,
        "a rejected request changed DATA_DIR/boxes"
    );
    r
}

#[test]
fn bad_names_are_400_invalid_name() {
    let d = daemon();
    let long = "a".repeat(41);
    for name in ["Upper", long.as_str(), "../x", "", "a b", "-dash", "x/y"] {
        let r = changes_nothing(d, || {
            d.api_json("POST", "/v1/sprites", &json!({ "name": name }))
        });
        let code = r.assert_error(400, &format!("create {name:?}"));
        assert_eq!(code, "invalid_name", "name {name:?}");
    }
}

#[test]
fn out_of_range_config_is_400() {
    let d = daemon();
    for config in [
        json!({"ram_mb": 1}),
        json!({"cpus": 0}),
        json!({"storage_gb": 100000}),
        json!({"nesting": "yes"}),
    ] {
        let r = changes_nothing(d, || {
            d.api_json(
                "POST",
                "/v1/sprites",
                &json!({"name": "cfg-box", "config": config}),
            )
        });
        r.assert_error(400, &format!("config {config}"));
    }
}

#[test]
fn duplicate_name_is_409() {
    let d = daemon();
    let r = changes_nothing(d, || {
        d.api_json("POST", "/v1/sprites", &json!({ "name": BOX }))
    });
    let code = r.assert_error(409, "duplicate create");
    assert_eq!(code, "already_exists");
}

#[test]
fn unknown_box_is_404() {
    let d = daemon();
    for (method, path) in [
        ("GET", "/v1/sprites/nope"),
        ("DELETE", "/v1/sprites/nope"),
        ("GET", "/v1/sprites/nope/exec"),
    ] {
        let r = changes_nothing(d, || d.api(method, path));
        r.assert_error(404, &format!("{method} {path}"));
    }
    let r = changes_nothing(d, || {
        d.api_json("PUT", "/v1/sprites/nope", &json!({"labels": ["x"]}))
    });
    r.assert_error(404, "PUT unknown");
}

#[test]
fn missing_or_wrong_token_is_401() {
    let d = daemon();
    let none = changes_nothing(d, || d.request("GET", "/v1/sprites").send(d.addr));
    none.assert_error(401, "no token");
    let wrong = changes_nothing(d, || {
        d.request("GET", "/v1/sprites")
            .token("bothy_0000000000000000000000000000000")
            .send(d.addr)
    });
    wrong.assert_error(401, "wrong token");
    let create = changes_nothing(d, || {
        d.request("POST", "/v1/sprites")
            .token("nope")
            .json(&json!({"name": "sneaky"}))
            .send(d.addr)
    });
    create.assert_error(401, "create with a wrong token");
    let del = changes_nothing(d, || {
        d.request("DELETE", &format!("/v1/sprites/{BOX}"))
            .send(d.addr)
    });
    del.assert_error(401, "delete without a token");
}

#[test]
fn another_orgs_token_sees_nothing() {
    let d = daemon();
    let minted = d.api_json(
        "POST",
        "/v1/organizations/other/tokens",
        &json!({"description": "test"}),
    );
    assert!(
        minted.status == 200 || minted.status == 201,
        "mint a token: {} {}",
        minted.status,
        minted.text()
    );
    let body = minted.json();
    let other = body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_string();
    assert_eq!(body["organization"], "other");

    let as_other = |method: &'static str, path: String| {
        changes_nothing(d, || d.request(method, &path).token(&other).send(d.addr))
    };
    as_other("GET", format!("/v1/sprites/{BOX}")).assert_error(404, "get another org's box");
    as_other("DELETE", format!("/v1/sprites/{BOX}")).assert_error(404, "delete another org's box");
    as_other("GET", format!("/v1/sprites/{BOX}/exec"))
        .assert_error(404, "sessions of another org's box");
    let list = as_other("GET", "/v1/sprites".to_string());
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json()["sprites"].as_array().map(Vec::len),
        Some(0),
        "the other org has no boxes: {}",
        list.text()
    );
    let org = as_other("GET", "/v1/organization".to_string());
    assert_eq!(org.status, 200, "{}", org.text());
    assert_eq!(org.json()["name"], "other");

    // A plain token may not mint tokens for an org that is not its own.
    let escalate = changes_nothing(d, || {
        d.request("POST", "/v1/organizations/default/tokens")
            .token(&other)
            .json(&json!({}))
            .send(d.addr)
    });
    escalate.assert_error(403, "minting a token for another org");
}

#[test]
fn malformed_json_is_400() {
    let d = daemon();
    for body in [&b"{not json"[..], b"", b"[]", b"{\"name\": 5}"] {
        let r = changes_nothing(d, || {
            d.request("POST", "/v1/sprites")
                .token(&d.token)
                .raw_body("application/json", body.to_vec())
                .send(d.addr)
        });
        r.assert_error(400, &format!("body {:?}", String::from_utf8_lossy(body)));
    }
}

#[test]
fn oversized_json_is_413() {
    let d = daemon();
    let mut body = b"{\"name\":\"big\",\"labels\":[\"".to_vec();
    body.resize(body.len() + 1024 * 1024, b'a');
    body.extend_from_slice(b"\"]}");
    let r = changes_nothing(d, || {
        d.request("POST", "/v1/sprites")
            .token(&d.token)
            .raw_body("application/json", body)
            .send(d.addr)
    });
    r.assert_error(413, "1 MB JSON body");
}

#[test]
fn unimplemented_routes_are_501() {
    let d = daemon();
    for (method, path) in [
        ("GET", format!("/v1/sprites/{BOX}/no-such-thing")),
        ("POST", format!("/v1/sprites/{BOX}/fs/no-such-op")),
    ] {
        let r = changes_nothing(d, || d.api(method, &path));
        let code = r.assert_error(501, &format!("{method} {path}"));
        assert_eq!(code, "not_implemented");
    }
    // The filesystem API refuses a call without a path, in its own shape.
    for path in [
        format!("/v1/sprites/{BOX}/fs/list"),
        format!("/v1/sprites/{BOX}/fs/read"),
    ] {
        let r = changes_nothing(d, || d.api("GET", &path));
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.json()["code"], "EINVAL", "{path}");
    }
}

#[test]
fn exec_without_command_is_400() {
    let d = daemon();
    let r = changes_nothing(d, || {
        d.api("GET", &format!("/v1/sprites/{BOX}/exec?stdin=true"))
    });
    // Not a WebSocket upgrade: this is the session list, which must still work.
    assert_eq!(r.status, 200, "{}", r.text());

    let upgrade = changes_nothing(d, || {
        raw_upgrade(d, &format!("/v1/sprites/{BOX}/exec?stdin=true"))
    });
    upgrade.assert_error(400, "exec upgrade without cmd");
}

#[test]
fn missing_checkpoints_and_sessions_are_404_everywhere() {
    let d = daemon();
    for (method, path) in [
        ("GET", format!("/v1/sprites/{BOX}/checkpoints/v99")),
        ("DELETE", format!("/v1/sprites/{BOX}/checkpoints/v99")),
        ("POST", format!("/v1/sprites/{BOX}/checkpoints/v99/restore")),
        ("POST", format!("/v1/sprites/{BOX}/exec/nope/kill")),
    ] {
        let r = changes_nothing(d, || d.api(method, &path));
        let code = r.assert_error(404, &format!("{method} {path}"));
        assert_eq!(code, "not_found", "{method} {path}");
    }
    let fork = changes_nothing(d, || {
        d.api_json(
            "POST",
            "/v1/sprites",
            &json!({"name": "fork-box", "from_checkpoint": {"sprite": BOX, "checkpoint": "v99"}}),
        )
    });
    fork.assert_error(404, "fork from a missing checkpoint");
    let attach = changes_nothing(d, || {
        raw_upgrade(d, &format!("/v1/sprites/{BOX}/exec/nope"))
    });
    attach.assert_error(404, "attach to a missing session");
    // A malformed id is bad input, not a missing checkpoint.
    let r = changes_nothing(d, || {
        d.api("GET", &format!("/v1/sprites/{BOX}/checkpoints/..%2Fetc"))
    });
    r.assert_error(400, "a malformed checkpoint id");
}

/// A WebSocket upgrade request, to see the HTTP answer given before upgrading.
fn raw_upgrade(d: &Daemon, path: &str) -> Response {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(d.addr).unwrap_or_else(|e| panic!("connect {}: {e}", d.addr));
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {}\r\n\r\n",
        d.addr, d.token
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("send upgrade: {e}"));
    // The error answer has a body of known length; read until it is complete.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if let Some(resp) = complete_response(&raw) {
            return resp;
        }
    }
    complete_response(&raw).unwrap_or_else(|| {
        panic!(
            "incomplete answer to the upgrade: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

fn complete_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())?;
    let body = raw.get(split + 4..split + 4 + len)?.to_vec();
    Some(Response {
        status,
        headers: Vec::new(),
        body,
    })
}
