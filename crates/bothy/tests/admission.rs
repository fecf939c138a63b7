//! Admission: a box that could never get what it asks for is refused, and
//! boxes together stay within the host's capacity times the overcommit.
//! Refused creates change nothing.

mod common;

use common::Daemon;
use serde_json::json;

fn host_ram_mb() -> u64 {
    host_ram_bytes() / (1024 * 1024)
}

fn host_ram_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("MemTotal");
    kib * 1024
}

#[test]
fn boxes_are_admitted_against_the_host() {
    const BOX_MB: u64 = 512;
    // Room for one 512 MiB box and a half: the second must wait.
    let factor = (BOX_MB as f64 * 1.5) / host_ram_mb() as f64;
    let d = Daemon::start_with(
        vec!["--ram-overcommit".into(), format!("{factor:.6}")],
        Vec::new(),
    );
    let config = json!({"ram_mb": BOX_MB, "cpus": 1, "storage_gb": 10});

    // One box bigger than the host: 400, whatever else runs.
    let huge = host_ram_mb() + 1024;
    if huge <= 65536 {
        let r = d.api_json(
            "POST",
            "/v1/sprites",
            &json!({"name": "huge", "config": {"ram_mb": huge}}),
        );
        assert_eq!(
            r.assert_error(400, "a box bigger than the host"),
            "exceeds_host"
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
    if cpus <= 64 {
        let r = d.api_json(
            "POST",
            "/v1/sprites",
            &json!({"name": "wide", "config": {"ram_mb": 256, "cpus": cpus}}),
        );
        assert_eq!(
            r.assert_error(400, "more CPUs than the host"),
            "exceeds_host"
        );
    }

    let r = d.api_json(
        "POST",
        "/v1/sprites",
        &json!({"name": "first", "config": config}),
    );
    assert_eq!(r.status, 201, "the first box fits: {}", r.text());
    assert_host_keeps_a_reserve(&d);
    let dirs = d.box_dirs();
    let r = d.api_json(
        "POST",
        "/v1/sprites",
        &json!({"name": "second", "config": config}),
    );
    r.assert_error(503, "a box beyond the host's capacity");
    assert!(
        r.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("--ram-overcommit")),
        "the message says what to do: {}",
        r.text()
    );
    assert_eq!(d.names(), ["first"], "the refused box was not made");
    assert_eq!(d.box_dirs(), dirs, "nothing was left behind");

    // A cold box holds no memory: it makes room, and its wake waits for
    // room in turn.
    d.api_json("POST", "/v1/sprites/first/sleep", &json!({"cold": true}))
        .assert_ok("first to cold sleep");
    let r = d.api_json(
        "POST",
        "/v1/sprites",
        &json!({"name": "second", "config": config}),
    );
    assert_eq!(r.status, 201, "a cold box makes room: {}", r.text());
    let woke = d.cli(&["exec", "-s", "first", "--", "true"]).run();
    assert_ne!(woke.code, 0, "a wake beyond the host's capacity must fail");
    assert!(
        woke.stderr_str().contains("cannot wake"),
        "the error says why: {}",
        woke.stderr_str()
    );
    assert_eq!(
        d.get("first")["status"],
        "cold",
        "the refused wake changed nothing"
    );
    let gone = d.api("DELETE", "/v1/sprites/second");
    assert!(gone.status < 300, "destroy: {}", gone.text());
    d.cli(&["exec", "-s", "first", "--", "true"])
        .run()
        .assert_success("first wakes once there is room");

    let gone = d.api("DELETE", "/v1/sprites/first");
    assert!(
        gone.status == 204 || gone.status == 200,
        "destroy: {}",
        gone.text()
    );
    let r = d.api_json(
        "POST",
        "/v1/sprites",
        &json!({"name": "second", "config": config}),
    );
    assert_eq!(r.status, 201, "room again once a box is gone: {}", r.text());
}

/// The parent cgroup of the daemon's boxes leaves the host a tenth of its
/// RAM (at least 512 MiB, at most 4 GiB).
fn assert_host_keeps_a_reserve(d: &Daemon) {
    let canonical = d.data_dir().canonicalize().expect("data dir");
    let parent = format!(
        "bothy-{}",
        common::host::Footprint::new(&canonical).instance
    );
    let v1 = format!("/sys/fs/cgroup/memory/{parent}/memory.limit_in_bytes");
    let v2 = format!("/sys/fs/cgroup/{parent}/memory.max");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap_or_else(|e| panic!("the boxes' parent cgroup ({v1} or {v2}): {e}"));
    let host = host_ram_bytes();
    let reserve = (host / 10).clamp(512 << 20, 4096 << 20);
    let limit: u64 = limit.trim().parse().expect("a number");
    // The kernel rounds v1 limits down to whole pages.
    let want = host - reserve;
    assert!(
        limit <= want && want - limit < 4096 * 4,
        "boxes together are limited to {limit} bytes, want {want}"
    );
}

#[test]
fn a_bad_overcommit_is_refused_at_start() {
    let out = std::process::Command::new(common::daemon::BIN)
        .args(["daemon", "--ram-overcommit=0"])
        .output()
        .expect("bothy daemon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("overcommit factor"), "{err}");
}

/// Quotas from the CLI down: an admin sets them, a create past one gets 403
/// `quota_exceeded` and makes nothing, the organisation sees its usage.
#[test]
fn organisation_quotas_refuse_with_403() {
    let d = Daemon::start();
    let token = d
        .cli(&["token", "create", "--org", "acme"])
        .run()
        .assert_success("token for acme")
        .stdout_str()
        .trim()
        .to_string();
    d.cli(&["quota", "set", "--org", "acme", "--max-boxes", "1"])
        .run()
        .assert_success("quota set");
    let create = |name: &str| {
        common::http::Request::new("POST", "/v1/sprites")
            .token(&token)
            .json(&json!({"name": name, "config": {"ram_mb": 256, "cpus": 1}}))
            .send(d.addr)
    };
    let r = create("one");
    assert_eq!(r.status, 201, "within the quota: {}", r.text());
    let dirs = d.box_dirs();
    let r = create("two");
    assert_eq!(r.assert_error(403, "past max_boxes"), "quota_exceeded");
    assert_eq!(d.box_dirs(), dirs, "nothing was made");
    let shown = d
        .cli(&["quota", "get", "--org", "acme", "--json"])
        .run()
        .assert_success("quota get")
        .stdout_str();
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["limits"]["max_boxes"], 1);
    assert_eq!(shown["usage"]["boxes"], 1);
    // Only an admin sets quotas.
    let r = common::http::Request::new("PUT", "/v1/organizations/acme/quota")
        .token(&token)
        .json(&json!({"max_boxes": 100}))
        .send(d.addr);
    r.assert_error(403, "a member raising its own quota");
    let r = d.api_json(
        "PUT",
        "/v1/organizations/acme/quota",
        &json!({"max_boxs": 1}),
    );
    r.assert_error(400, "a misspelt limit");
}

/// `max_running_boxes` counts running and warm boxes: a cold one makes room
/// for another, and its own wake is refused while the organisation is at the
/// limit (and leaves it cold).
#[test]
fn running_box_quota_counts_what_runs_and_is_checked_on_wake() {
    let d = Daemon::start();
    d.api_json(
        "PUT",
        "/v1/organizations/default/quota",
        &json!({"max_running_boxes": 1}),
    )
    .assert_ok("quota set");
    let create = |name: &str| {
        d.api_json(
            "POST",
            "/v1/sprites",
            &json!({"name": name, "config": {"ram_mb": 256, "cpus": 1}}),
        )
    };
    assert_eq!(create("one").status, 201);
    let r = create("two");
    let code = r.assert_error(403, "a second running box");
    assert_eq!(code, "quota_exceeded");
    assert!(r.text().contains("max_running_boxes"), "{}", r.text());

    d.api_json("POST", "/v1/sprites/one/sleep", &json!({"cold": true}))
        .assert_ok("one to cold sleep");
    assert_eq!(create("two").status, 201, "a cold box runs nothing");
    let quota = d.api("GET", "/v1/organizations/default/quota").json();
    assert_eq!(quota["usage"]["boxes"], 2, "{quota}");
    assert_eq!(quota["usage"]["running_boxes"], 1, "{quota}");

    let woke = d.cli(&["exec", "-s", "one", "--", "true"]).run();
    assert_ne!(woke.code, 0, "a wake past max_running_boxes must fail");
    assert!(
        woke.stderr_str().contains("max_running_boxes"),
        "the error says why: {}",
        woke.stderr_str()
    );
    assert_eq!(d.get("one")["status"], "cold");
    d.api_json("POST", "/v1/sprites/two/sleep", &json!({"cold": true}))
        .assert_ok("two to cold sleep");
    d.cli(&["exec", "-s", "one", "--", "true"])
        .run()
        .assert_success("one wakes once two sleeps");
}
