//! API tokens against a real daemon, as an operator handles them: mint one
//! with an expiry through the CLI, use it, list tokens (never a secret),
//! revoke it through the CLI, and its very next request is refused.

mod common;

use common::{Daemon, Shared};

static DAEMON: Shared = Shared::new();

fn daemon() -> &'static Daemon {
    DAEMON.get(|_| {})
}

/// `bothy --json token list` with `token` (the admin's by default): the ids.
fn listed(d: &Daemon, token: Option<&str>) -> Vec<serde_json::Value> {
    let mut run = d.cli(&["--json", "token", "list"]);
    if let Some(t) = token {
        run = run.env("BOTHY_TOKEN", t);
    }
    let out = run.run().assert_success("bothy token list");
    out.json()
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("token list printed no array: {}", out.stdout_str()))
}

fn ids(list: &[serde_json::Value]) -> Vec<String> {
    list.iter()
        .map(|t| t["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_token_revoked_with_the_cli_is_refused_on_its_next_request() {
    let d = daemon();
    let made = d
        .cli(&[
            "--json",
            "token",
            "create",
            "--org",
            "acme",
            "--expires-in",
            "30d",
            "--description",
            "ci",
        ])
        .run()
        .assert_success("bothy token create")
        .json();
    let token = made["token"].as_str().expect("token").to_string();
    let id = made["id"].as_str().expect("id").to_string();
    assert!(made["expires_at"].is_string(), "{made}");
    assert_eq!(made["organization"], "acme");

    // The token works, and sees only its own organisation's tokens.
    let org = d
        .request("GET", "/v1/organization")
        .token(&token)
        .send(d.addr);
    assert_eq!(org.status, 200, "{}", org.text());
    assert_eq!(org.json()["name"], "acme");
    assert_eq!(ids(&listed(d, Some(&token))), [id.as_str()]);

    // The admin sees it among all; no listing shows a token.
    let all = listed(d, None);
    assert!(ids(&all).contains(&id), "{all:?}");
    let mine = all.iter().find(|t| t["id"] == id.as_str()).expect("listed");
    assert_eq!(mine["expired"], false);
    assert_eq!(mine["description"], "ci");
    let table = d
        .cli(&["token", "list"])
        .run()
        .assert_success("bothy token list (table)")
        .stdout_str();
    assert!(table.contains(&id) && table.contains("EXPIRES"), "{table}");
    let json = serde_json::to_string(&all).expect("json");
    for text in [json.as_str(), table.as_str()] {
        assert!(!text.contains(&token), "a token is listed: {text}");
        assert!(
            !text.contains(&d.token),
            "the admin token is listed: {text}"
        );
        assert!(
            !text.contains("bothy_"),
            "something token-like is listed: {text}"
        );
    }

    let revoked = d
        .cli(&["token", "revoke", &id])
        .run()
        .assert_success("bothy token revoke");
    assert!(
        revoked.stdout_str().contains(&id),
        "{}",
        revoked.stdout_str()
    );

    let refused = d
        .request("GET", "/v1/organization")
        .token(&token)
        .send(d.addr);
    refused.assert_error(401, "a revoked token");
    assert!(refused.text().contains("revoked"), "{}", refused.text());
    let cli = d
        .cli(&["org"])
        .env("BOTHY_TOKEN", &token)
        .run()
        .assert_code(1, "the CLI with a revoked token");
    assert!(cli.stderr_str().contains("revoked"), "{}", cli.stderr_str());

    assert!(!ids(&listed(d, None)).contains(&id));
    let again = d
        .cli(&["token", "revoke", &id])
        .run()
        .assert_code(1, "revoking twice");
    assert!(
        again.stderr_str().contains("no token"),
        "{}",
        again.stderr_str()
    );
}

#[test]
fn the_cli_refuses_bad_expiries_and_tokens_given_as_ids() {
    let d = daemon();
    let usage = d
        .cli(&["token", "create", "--org", "acme", "--expires-in", "0"])
        .run()
        .assert_code(2, "a zero lifetime");
    assert!(
        usage.stderr_str().contains("at least 1"),
        "{}",
        usage.stderr_str()
    );

    let far = d
        .cli(&["token", "create", "--org", "acme", "--expires-in", "4000d"])
        .run()
        .assert_code(1, "a lifetime beyond 10 years");
    assert!(
        far.stderr_str().contains("10 years"),
        "{}",
        far.stderr_str()
    );

    // A secret pasted as an id never leaves the CLI.
    let pasted = d
        .cli(&["token", "revoke", &d.token])
        .run()
        .assert_code(1, "a token given as an id");
    assert!(
        !pasted.stderr_str().contains(&d.token),
        "{}",
        pasted.stderr_str()
    );
    assert!(
        d.api("GET", "/v1/organization").status == 200,
        "the admin token still works"
    );
}

/// A token made for an agent with the CLI keeps to its prefix and cap
/// through the real API; a read-only one is refused every call that acts,
/// including the WebSockets that run commands.
#[test]
fn agent_tokens_made_with_the_cli_are_held_to_their_limits_by_the_daemon() {
    let d = daemon();
    let mint = |extra: &[&str]| {
        let mut args = vec!["--json", "token", "create", "--mcp", "--org", "agents"];
        args.extend_from_slice(extra);
        let made = d
            .cli(&args)
            .run()
            .assert_success("token create --mcp")
            .json();
        assert_eq!(made["mcp"]["prefix"], "ag-", "{made}");
        made["token"].as_str().expect("token").to_string()
    };
    let agent = mint(&["--max", "1", "--prefix", "ag-"]);
    let reader = mint(&["--max", "5", "--prefix", "ag-", "--read-only"]);
    let create = |token: &str, name: &str| {
        d.request("POST", "/v1/sprites")
            .token(token)
            .json(&serde_json::json!({"name": name}))
            .send(d.addr)
    };
    let code = create(&agent, "web").assert_error(403, "a name without the prefix");
    assert_eq!(code, "forbidden");
    create(&agent, "ag-one").assert_ok("within the cap");
    let r = create(&agent, "ag-two");
    assert_eq!(r.assert_error(403, "past the cap"), "quota_exceeded");
    assert!(r.text().contains("at most 1"), "{}", r.text());

    let r = d.request("GET", "/v1/sprites").token(&reader).send(d.addr);
    r.assert_ok("a read-only token reads");
    let names: Vec<String> = r.json()["sprites"]
        .as_array()
        .expect("sprites")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["ag-one"]);
    for (method, path) in [
        ("POST", "/v1/sprites"),
        ("DELETE", "/v1/sprites/ag-one"),
        ("POST", "/v1/sprites/ag-one/checkpoint"),
        ("POST", "/v1/sprites/ag-one/exec?cmd=true"),
        ("POST", "/v1/organizations/agents/tokens"),
    ] {
        let r = d
            .request(method, path)
            .token(&reader)
            .json(&serde_json::json!({"name": "ag-r"}))
            .send(d.addr);
        assert_eq!(
            r.assert_error(403, &format!("read-only {method} {path}")),
            "forbidden"
        );
    }
    // The exec WebSocket is a GET that acts: refused before the upgrade.
    let out = common::CliRun::program(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {reader}"),
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            &format!("{}/v1/sprites/ag-one/exec?cmd=true", d.url()),
        ],
    )
    .run();
    assert_eq!(out.stdout_str(), "403");
    // The agent token can neither see the admin's boxes nor mint tokens.
    let r = d.request("GET", "/v1/tokens").token(&agent).send(d.addr);
    assert_eq!(r.assert_error(403, "listing tokens"), "forbidden");
    let r = d
        .request("DELETE", "/v1/sprites/ag-one")
        .token(&agent)
        .send(d.addr);
    assert_eq!(r.status, 204, "{}", r.text());
}
