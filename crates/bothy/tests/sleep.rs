//! Idle sleep and wake on real boxes: a box nobody uses goes warm (its
//! processes frozen) then cold (stopped), wakes on the next exec with the
//! same processes (warm) or booted again (cold), stays awake while a client
//! is attached or its processes use CPU, and keeps its state across a
//! `kill -9` of the daemon.

mod common;

use std::time::{Duration, Instant};

use common::host::Footprint;
use common::storage::box_id;
use common::wait::wait_until;
use common::Daemon;
use serde_json::json;

fn status(d: &Daemon, name: &str) -> String {
    d.get(name)["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_status(d: &Daemon, name: &str, want: &str) {
    wait_until(
        &format!("{name} to be {want}"),
        Duration::from_secs(60),
        || {
            let now = status(d, name);
            if now == want {
                Ok(())
            } else {
                Err(now)
            }
        },
    );
}

/// Panics if `name` leaves `running` within `window` (activity must keep
/// it awake that long).
fn stays_running(d: &Daemon, name: &str, window: Duration, why: &str) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        assert_eq!(status(d, name), "running", "{why}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The freezer's view of the box's cgroup, from the host (cgroup v1 or v2).
fn frozen_on_host(d: &Daemon, name: &str) -> bool {
    let cgroup = format!(
        "bothy-{}/{}",
        Footprint::new(&d.data_dir).instance,
        box_id(d, name)
    );
    let v1 = format!("/sys/fs/cgroup/freezer/{cgroup}/freezer.state");
    if let Ok(state) = std::fs::read_to_string(v1) {
        return state.trim() == "FROZEN";
    }
    let v2 = format!("/sys/fs/cgroup/{cgroup}/cgroup.freeze");
    std::fs::read_to_string(v2).is_ok_and(|s| s.trim() == "1")
}

/// Starts `sleep 1000` in the box, detached; its pid.
fn background_process(d: &Daemon, name: &str) -> String {
    d.sh(
        name,
        "setsid sleep 1000 >/dev/null 2>&1 < /dev/null & echo $!",
    )
    .trim()
    .to_string()
}

fn alive(d: &Daemon, name: &str, pid: &str) -> bool {
    d.sh(
        name,
        &format!("kill -0 {pid} 2>/dev/null && echo yes || echo no"),
    )
    .trim()
        == "yes"
}

#[test]
fn an_idle_box_goes_warm_then_cold_and_wakes_on_use() {
    let d = Daemon::start();
    d.cli(&[
        "create",
        "nap",
        "--skip-console",
        "--idle-timeout",
        "2s",
        "--cold-after",
        "never",
    ])
    .run()
    .assert_success("create with an idle policy");
    let got = d.get("nap");
    assert_eq!(
        got["lifecycle"],
        json!({"idle_timeout": "2s", "cold_after": "never", "cpu_activity": true})
    );
    let pid = background_process(&d, "nap");

    wait_status(&d, "nap", "warm");
    assert!(
        frozen_on_host(&d, "nap"),
        "a warm box's processes are frozen"
    );
    assert!(d.get("nap")["last_active_at"].is_string());
    let listed = d.cli(&["list"]).run().assert_success("list").stdout_str();
    assert!(listed.contains("warm"), "bothy list shows warm: {listed}");

    // An exec thaws it: the same process goes on.
    assert!(alive(&d, "nap", &pid), "a warm wake keeps the processes");
    assert_eq!(status(&d, "nap"), "running");
    assert!(!frozen_on_host(&d, "nap"));

    // Cold after a while warm: stopped; the next exec boots it.
    d.cli(&["update", "nap", "--cold-after", "2s"])
        .run()
        .assert_success("update the idle policy");
    wait_status(&d, "nap", "warm");
    wait_status(&d, "nap", "cold");
    assert!(!alive(&d, "nap", &pid), "a cold wake boots the box afresh");
    assert_eq!(status(&d, "nap"), "running");
}

#[test]
fn attached_clients_and_busy_cpus_keep_a_box_awake() {
    let d = Daemon::start();
    d.cli(&[
        "create",
        "busy",
        "--skip-console",
        "--idle-timeout",
        "2s",
        "--cold-after",
        "never",
    ])
    .run()
    .assert_success("create");

    // An exec that runs for 6 s keeps the box running past its timeout.
    let held = std::thread::scope(|s| {
        let exec = s.spawn(|| d.exec("busy", &["sleep", "6"]));
        wait_until("the exec to start", Duration::from_secs(30), || {
            let sessions = d.sessions("busy");
            if sessions.is_empty() {
                Err("no session yet".to_string())
            } else {
                Ok(())
            }
        });
        stays_running(
            &d,
            "busy",
            Duration::from_secs(4),
            "an attached exec keeps the box awake",
        );
        exec.join().expect("exec thread")
    });
    assert_eq!(held.code, 0, "{}", held.stderr_str());

    // A detached CPU-bound loop keeps it awake too...
    d.sh(
        "busy",
        "setsid timeout 60 sh -c 'while :; do :; done' >/dev/null 2>&1 < /dev/null &",
    );
    stays_running(
        &d,
        "busy",
        Duration::from_secs(5),
        "processes using CPU keep the box awake",
    );
    // ...unless CPU activity does not count for it.
    d.cli(&["update", "busy", "--no-cpu-activity"])
        .run()
        .assert_success("update");
    wait_status(&d, "busy", "warm");
}

#[test]
fn sleep_states_survive_a_daemon_kill() {
    let d = Daemon::start();
    d.create("warmbox");
    d.create("coldbox");
    let pid = background_process(&d, "warmbox");

    let r = d.api("POST", "/v1/sprites/warmbox/sleep");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "warm");
    d.cli(&["sleep", "-s", "coldbox", "--cold"])
        .run()
        .assert_success("bothy sleep --cold");
    assert_eq!(status(&d, "coldbox"), "cold");

    d.kill9();
    d.spawn();
    // Recovery has looked at every box once the warm one is adopted frozen.
    wait_until(
        "the warm box to be adopted",
        Duration::from_secs(60),
        || {
            if frozen_on_host(&d, "warmbox") && status(&d, "warmbox") == "warm" {
                Ok(())
            } else {
                Err(status(&d, "warmbox"))
            }
        },
    );
    assert_eq!(status(&d, "coldbox"), "cold", "a cold box stays cold");
    assert!(
        alive(&d, "warmbox", &pid),
        "the warm box's processes survived"
    );
    assert_eq!(d.sh("coldbox", "echo woke").trim(), "woke");
    assert_eq!(status(&d, "coldbox"), "running");
}

#[test]
fn bad_idle_policies_are_refused_and_change_nothing() {
    let d = Daemon::start();
    let r = d.api_json(
        "POST",
        "/v1/sprites",
        &json!({"name": "bad", "lifecycle": {"idle_timeout": "soon"}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("idle_timeout"), "{}", r.text());
    assert_eq!(
        d.api("GET", "/v1/sprites/bad").status,
        404,
        "nothing was created"
    );

    d.create("good");
    let before = d.get("good")["lifecycle"].clone();
    for body in [
        json!({"lifecycle": {"cold_after": "0s"}}),
        json!({"lifecycle": {"idle_timeout": "30x"}}),
        json!({"lifecycle": {"unknown": true}}),
    ] {
        let r = d.api_json("PUT", "/v1/sprites/good", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    assert_eq!(
        d.get("good")["lifecycle"],
        before,
        "the policy is unchanged"
    );
    let r = d.api_json("POST", "/v1/sprites/good/sleep", &json!({"cold": "yes"}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(status(&d, "good"), "running");
}

#[test]
fn a_task_holds_a_box_awake_until_released() {
    let d = Daemon::start();
    d.cli(&["create", "held", "--skip-console", "--idle-timeout", "2s"])
        .run()
        .assert_success("create");
    let id = d
        .cli(&[
            "task", "hold", "-s", "held", "--ttl", "10m", "--name", "build",
        ])
        .run()
        .assert_success("task hold")
        .stdout_str()
        .trim()
        .to_string();
    assert!(id.starts_with("task_"), "{id}");
    stays_running(
        &d,
        "held",
        Duration::from_secs(4),
        "a task keeps the box awake",
    );
    let listed = d.api("GET", "/v1/sprites/held/tasks").json();
    assert_eq!(listed["tasks"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed["tasks"][0]["name"], "build");
    let r = d.api_json(
        "PUT",
        &format!("/v1/sprites/held/tasks/{id}"),
        &json!({"ttl": "5m"}),
    );
    assert_eq!(r.status, 200, "a heartbeat extends it: {}", r.text());
    for (body, code) in [
        (json!({"ttl": "2h"}), 400),
        (json!({"ttl": "soon"}), 400),
        (json!({}), 400),
    ] {
        let r = d.api_json("POST", "/v1/sprites/held/tasks", &body);
        assert_eq!(r.status, code, "{body}: {}", r.text());
    }
    let r = d.api_json(
        "PUT",
        "/v1/sprites/held/tasks/task_nope",
        &json!({"ttl": "1m"}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    d.cli(&["task", "release", "-s", "held", &id])
        .run()
        .assert_success("task release");
    wait_status(&d, "held", "warm");
}
