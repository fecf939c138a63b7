//! Usage and metrics on real boxes: the time a box spends running, warm and
//! cold, what its disk and checkpoints store, the organisation's counts, the
//! CLI's view, `/metrics` (token-protected, an organisation sees only its
//! own), and all of it across a `kill -9` of the daemon.

mod common;

use std::time::Duration;

use common::wait::wait_until;
use common::Daemon;
use serde_json::{json, Value};

fn usage(d: &Daemon, name: &str) -> Value {
    let r = d.api("GET", &format!("/v1/sprites/{name}/usage"));
    assert_eq!(r.status, 200, "usage of {name}: {}", r.text());
    r.json()
}

fn secs(u: &Value, state: &str) -> f64 {
    u[format!("{state}_seconds")]
        .as_f64()
        .unwrap_or_else(|| panic!("no {state}_seconds in {u}"))
}

fn bytes(u: &Value, what: &str) -> u64 {
    u[what]
        .as_u64()
        .unwrap_or_else(|| panic!("no {what} in {u}"))
}

/// Waits until `name`'s usage passes `ok`; the usage then.
fn wait_usage(d: &Daemon, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_until(
        &format!("{name}'s usage: {what}"),
        Duration::from_secs(60),
        || {
            last = usage(d, name);
            if ok(&last) {
                Ok(())
            } else {
                Err(last.to_string())
            }
        },
    );
    last
}

fn wait_counted(d: &Daemon, name: &str, state: &str, at_least: f64) -> Value {
    let what = format!("over {at_least}s {state}");
    wait_usage(d, name, &what, |u| secs(u, state) > at_least)
}

fn wait_bytes(d: &Daemon, name: &str, what: &str, at_least: u64) -> Value {
    let why = format!("{what} at least {at_least}");
    wait_usage(d, name, &why, |u| bytes(u, what) >= at_least)
}

fn org_counts(d: &Daemon, token: &str) -> Value {
    let r = d
        .request("GET", "/v1/organization")
        .token(token)
        .send(d.addr);
    assert_eq!(r.status, 200, "organization: {}", r.text());
    r.json()["sprites"].clone()
}

#[test]
fn usage_counts_time_in_each_state_and_bytes_stored_across_a_crash() {
    let d = Daemon::start();
    d.create("meter");
    let fresh = usage(&d, "meter");
    assert_eq!(fresh["status"], "running");
    assert_eq!(fresh["name"], "meter");
    let base_disk = bytes(&fresh, "disk_bytes");
    assert!(base_disk > 0, "the base image's chunks count: {fresh}");
    assert_eq!(bytes(&fresh, "checkpoint_bytes"), 0);

    // 16 MiB of distinct data on the disk, then a checkpoint, then the
    // same file rewritten: the checkpoint alone keeps the first copy.
    let write = "head -c 16M /dev/urandom > /data.bin && sync";
    d.sh("meter", write);
    let written = wait_bytes(&d, "meter", "disk_bytes", base_disk + (15 << 20));
    d.cli(&["checkpoint", "create", "-s", "meter"])
        .run()
        .assert_success("checkpoint");
    d.sh("meter", write);
    let after = wait_bytes(&d, "meter", "checkpoint_bytes", 15 << 20);
    assert_eq!(after["checkpoints"], 1, "{after}");
    assert!(bytes(&after, "disk_bytes") >= bytes(&written, "disk_bytes") - (1 << 20));

    let running = wait_counted(&d, "meter", "running", 1.0);
    assert_eq!(secs(&running, "warm"), 0.0, "{running}");

    // Warm, counted as warm; then cold.
    d.api_json("POST", "/v1/sprites/meter/sleep", &json!({}))
        .assert_ok("sleep warm");
    let counts = org_counts(&d, &d.token);
    assert_eq!(counts["warm"], 1, "{counts}");
    assert_eq!(counts["total"], 1, "{counts}");
    let warm = wait_counted(&d, "meter", "warm", 1.0);
    assert!(secs(&warm, "running") >= secs(&running, "running"));
    d.api_json("POST", "/v1/sprites/meter/sleep", &json!({"cold": true}))
        .assert_ok("sleep cold");
    wait_counted(&d, "meter", "cold", 0.5);
    assert_eq!(org_counts(&d, &d.token)["cold"], 1);

    // A crash of the daemon loses none of it: the cold time goes on.
    let before = usage(&d, "meter");
    d.kill9();
    d.spawn();
    let again = wait_counted(&d, "meter", "cold", secs(&before, "cold") + 0.5);
    assert_eq!(again["status"], "cold");
    for state in ["running", "warm"] {
        assert!(
            secs(&again, state) >= secs(&before, state),
            "{state} went back after a restart: {before} then {again}"
        );
    }
    assert_eq!(bytes(&again, "disk_bytes"), bytes(&before, "disk_bytes"));
    assert_eq!(
        bytes(&again, "checkpoint_bytes"),
        bytes(&before, "checkpoint_bytes")
    );

    // The CLI shows the same, as a table and as JSON.
    let table = d
        .cli(&["usage"])
        .run()
        .assert_success("bothy usage")
        .stdout_str();
    assert!(
        table.contains("meter") && table.contains("cold") && table.contains("CHECKPOINTS"),
        "{table}"
    );
    let one = d
        .cli(&["usage", "-s", "meter", "--json"])
        .run()
        .assert_success("bothy usage -s meter --json")
        .stdout_str();
    let one: Value = serde_json::from_str(&one).expect("usage JSON");
    assert_eq!(one["name"], "meter");
    assert!(one["cold_seconds"].as_f64().is_some_and(|s| s > 0.0));
    let org = d
        .cli(&["org"])
        .run()
        .assert_success("bothy org")
        .stdout_str();
    assert!(org.contains("1 cold"), "{org}");

    d.api("GET", "/v1/sprites/nosuch/usage")
        .assert_error(404, "usage of a missing sprite");
}

#[test]
fn metrics_need_a_token_and_show_only_the_callers_sprites() {
    let d = Daemon::start();
    d.create("seen");
    let minted = d.api_json(
        "POST",
        "/v1/organizations/elsewhere/tokens",
        &json!({"description": "metrics test"}),
    );
    let other = minted.json()["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token minted: {}", minted.text()))
        .to_string();

    d.request("GET", "/metrics")
        .send(d.addr)
        .assert_error(401, "metrics without a token");
    d.request("GET", "/metrics")
        .token("bothy_not-a-real-token")
        .send(d.addr)
        .assert_error(401, "metrics with a wrong token");

    let all = d.api("GET", "/metrics");
    assert_eq!(all.status, 200, "{}", all.text());
    assert!(all
        .header("content-type")
        .is_some_and(|c| c.contains("openmetrics")));
    let text = all.text();
    for needle in [
        "bothy_daemon_resident_memory_bytes ",
        "bothy_sprites{state=\"running\"} 1",
        "bothy_sprite_status{sprite=\"seen\",org=\"default\",state=\"running\"} 1",
        "bothy_sprite_state_seconds{sprite=\"seen\",org=\"default\",state=\"running\"}",
        "bothy_sprite_disk_bytes{sprite=\"seen\",org=\"default\"}",
        "bothy_sprite_checkpoints{sprite=\"seen\",org=\"default\"} 0",
        "# EOF",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    let theirs = d.request("GET", "/metrics").token(&other).send(d.addr);
    assert_eq!(theirs.status, 200, "{}", theirs.text());
    let text = theirs.text();
    assert!(
        !text.contains("seen"),
        "another organisation's token sees this sprite:\n{text}"
    );
    assert!(
        text.contains("bothy_sprites{state=\"running\"} 0"),
        "{text}"
    );

    // Nor can it read the box's usage; crafted names find nothing.
    d.request("GET", "/v1/sprites/seen/usage")
        .token(&other)
        .send(d.addr)
        .assert_error(404, "another organisation's box");
    for bad in ["..%2F..%2Fetc", "SEEN", "a%00b"] {
        let r = d.api("GET", &format!("/v1/sprites/{bad}/usage"));
        assert!(
            r.status == 400 || r.status == 404,
            "{bad}: {} {}",
            r.status,
            r.text()
        );
        assert!(r.json()["disk_bytes"].is_null(), "{bad}: {}", r.text());
    }
}
