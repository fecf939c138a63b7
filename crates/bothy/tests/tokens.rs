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
