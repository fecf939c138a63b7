//! The warm pool on real boxes: `--warm-pool N` keeps N booted boxes that
//! no user, list or quota sees; a create of the pool's shape takes one (its
//! name, hostname, labels and idle policy are the request's), the pool
//! refills, other shapes are created as before, a refused create leaves the
//! pool whole, and a daemon `kill -9` and restart with a smaller pool
//! leaks nothing.

mod common;

use std::time::Duration;

use common::wait::wait_until;
use common::Daemon;
use serde_json::json;

fn pool_ready(d: &Daemon) -> u64 {
    let text = d.api("GET", "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix("bothy_warm_pool_ready "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bothy_warm_pool_ready in the metrics:\n{text}"))
}

fn wait_pool(d: &Daemon, n: u64) {
    wait_until(
        &format!("the warm pool to hold {n} ready boxes"),
        Duration::from_secs(120),
        || match pool_ready(d) {
            got if got == n => Ok(()),
            got => Err(format!("{got} ready")),
        },
    );
}

fn taken_from_pool(d: &Daemon) -> usize {
    d.log_text()
        .matches("sprite created from the warm pool")
        .count()
}

#[test]
fn creates_take_pooled_boxes_that_nobody_else_sees() {
    let mut d = Daemon::start_with(vec!["--warm-pool".into(), "2".into()], Vec::new());
    wait_pool(&d, 2);
    assert!(
        d.names().is_empty(),
        "pooled boxes are listed: {:?}",
        d.names()
    );
    let org = d.api("GET", "/v1/organization").json();
    assert_eq!(org["sprites"]["total"], 0, "{org}");
    assert_eq!(d.box_dirs().len(), 2, "two booted boxes on the host");
    // No token can be minted into the pool's organisation.
    let r = d.api_json("POST", "/v1/organizations/.pool/tokens", &json!({}));
    assert!(
        (400..500).contains(&r.status),
        "minting a token for the pool: {} {}",
        r.status,
        r.text()
    );
    assert!(
        r.json()["token"].is_null(),
        "a token into the pool: {}",
        r.text()
    );

    // A create of the default shape is a pooled box, renamed.
    let made = d.api_json(
        "POST",
        "/v1/sprites",
        &json!({"name": "quick", "labels": ["fast"], "lifecycle": {"idle_timeout": "5m"}}),
    );
    assert!(made.status < 300, "create: {} {}", made.status, made.text());
    let body = made.json();
    assert_eq!(body["name"], "quick");
    assert_eq!(body["status"], "running");
    assert_eq!(body["labels"], json!(["fast"]));
    assert_eq!(body["lifecycle"]["idle_timeout"], "5m");
    assert_eq!(taken_from_pool(&d), 1, "the create took a pooled box");
    assert_eq!(d.sh("quick", "hostname").trim(), "quick");
    assert_eq!(d.sh("quick", "cat /etc/hostname").trim(), "quick");
    assert!(d.sh("quick", "cat /etc/hosts").contains("quick"));
    assert_eq!(d.names(), vec!["quick".to_string()]);
    let usage = d.api("GET", "/v1/sprites/quick/usage").json();
    assert!(
        usage["running_seconds"].as_f64().is_some_and(|s| s < 30.0),
        "time in the pool is not the user's: {usage}"
    );
    wait_pool(&d, 2);

    // Another shape is created as before; the pool is untouched.
    d.api_json(
        "POST",
        "/v1/sprites",
        &json!({"name": "big", "config": {"ram_mb": 1024}}),
    )
    .assert_ok("create of another shape");
    assert_eq!(
        taken_from_pool(&d),
        1,
        "another shape must not take a pooled box"
    );

    d.api_json("POST", "/v1/sprites", &json!({"name": "quick"}))
        .assert_error(409, "a create with a taken name");
    assert_eq!(d.names().len(), 2);

    // Pooled boxes count against no quota: one more box is allowed, and
    // the next create is refused without touching the pool.
    d.api_json(
        "PUT",
        "/v1/organizations/default/quota",
        &json!({"max_boxes": 3}),
    )
    .assert_ok("set a quota");
    d.api_json("POST", "/v1/sprites", &json!({"name": "third"}))
        .assert_ok("the third box is within the quota");
    let refused = d.api_json("POST", "/v1/sprites", &json!({"name": "fourth"}));
    refused.assert_error(403, "a create over the quota");
    wait_pool(&d, 2);
    assert_eq!(d.names().len(), 3);
    assert_eq!(d.box_dirs().len(), 5, "three boxes and two pooled");

    // A crash, then a smaller pool: the extra pooled box goes, the users'
    // boxes stay, nothing else is left.
    d.kill9();
    d.set_extra_args(vec!["--warm-pool".into(), "1".into()]);
    d.spawn();
    wait_pool(&d, 1);
    wait_until(
        "the extra pooled box to be destroyed",
        Duration::from_secs(120),
        || match d.box_dirs().len() {
            4 => Ok(()),
            n => Err(format!("{n} box dirs")),
        },
    );
    assert_eq!(d.names().len(), 3);
    assert_eq!(d.sh("quick", "hostname").trim(), "quick");
}

#[test]
fn a_pool_past_its_limit_is_refused_at_start() {
    let out = std::process::Command::new(common::daemon::BIN)
        .args(["daemon", "--warm-pool", "65"])
        .output()
        .expect("bothy daemon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--warm-pool") && err.contains("65"), "{err}");
}
