//! `/policy/resources` on a real box: the memory limit its cgroup enforces
//! changes at once, survives a restart, and goes back when cleared.

mod common;

use common::Daemon;
use serde_json::json;

/// The memory limit the box's own cgroup shows from inside (v1 or v2).
fn limit_inside(d: &Daemon, name: &str) -> u64 {
    let out = d.sh(
        name,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    );
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("limit: {out:?}"))
}

#[test]
fn a_memory_limit_changes_while_the_box_runs() {
    let d = Daemon::start();
    let r = d.api_json(
        "POST",
        "/v1/sprites",
        &json!({"name": "mem", "config": {"ram_mb": 1024, "cpus": 1}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(limit_inside(&d, "mem"), 1024 << 20);
    let policy = "/v1/sprites/mem/policy/resources";
    assert_eq!(d.api("GET", policy).json(), json!({}));

    let r = d.api_json("POST", policy, &json!({"memory": {"limit_mb": 512}}));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(limit_inside(&d, "mem"), 512 << 20, "applied at once");
    assert_eq!(
        d.api("GET", policy).json(),
        json!({"memory": {"limit_mb": 512, "autoscale": false}})
    );
    let r = d.api("POST", "/v1/sprites/mem/restart");
    assert!(r.status < 300, "restart: {}", r.text());
    d.wait_running("mem");
    assert_eq!(limit_inside(&d, "mem"), 512 << 20, "kept across a restart");

    for bad in [
        json!({"memory": {"limit_mb": 1}}),
        json!({"memory": {"limit_mb": 512, "autoscale": true}}),
        json!({}),
        json!({"memory": {"limit_mb": "lots"}}),
    ] {
        d.api_json("POST", policy, &bad)
            .assert_error(400, &format!("policy {bad}"));
    }
    assert_eq!(
        limit_inside(&d, "mem"),
        512 << 20,
        "bad input changed nothing"
    );

    let r = d.api("DELETE", policy);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        limit_inside(&d, "mem"),
        1024 << 20,
        "back to the create-time limit"
    );
    d.api("GET", "/v1/sprites/nope/policy/resources")
        .assert_error(404, "an unknown box");
}
