//! Services on real boxes: supervised by the box's init, so a `kill -9` of
//! the daemon leaves them running as they were, a cold wake starts them
//! again in dependency order, and a box that scribbles over its own service
//! file only loses its services.

mod common;

use std::time::Duration;

use common::wait::wait_until;
use common::Daemon;
use serde_json::{json, Value};

fn service(d: &Daemon, sprite: &str, name: &str) -> Value {
    let r = d.api("GET", &format!("/v1/sprites/{sprite}/services/{name}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn put(d: &Daemon, sprite: &str, name: &str, body: Value) {
    let r = d.api_json(
        "PUT",
        &format!("/v1/sprites/{sprite}/services/{name}"),
        &body,
    );
    assert_eq!(r.status, 200, "PUT {name}: {}", r.text());
}

fn running_since(d: &Daemon, sprite: &str, name: &str) -> String {
    wait_until(&format!("{name} to run"), Duration::from_secs(60), || {
        let s = service(d, sprite, name);
        match (
            s["state"]["status"].as_str(),
            s["state"]["started_at"].as_str(),
        ) {
            (Some("running"), Some(at)) => Ok(at.to_string()),
            _ => Err(s["state"].to_string()),
        }
    })
}

#[test]
fn services_outlive_the_daemon_and_come_back_on_a_cold_wake_in_order() {
    let d = Daemon::start();
    d.create("svc");
    put(&d, "svc", "web0", json!({"cmd": "sleep", "args": ["1000"]}));
    put(&d, "svc", "zdb", json!({"cmd": "sleep", "args": ["1000"]}));
    // `web` sorts before `zdb` by name, and needs it.
    put(
        &d,
        "svc",
        "web",
        json!({"cmd": "sleep", "args": ["1000"], "needs": ["zdb"], "http_port": 8080}),
    );
    let r = d.api("DELETE", "/v1/sprites/svc/services/web0");
    assert_eq!(r.status, 204, "{}", r.text());
    let db_since = running_since(&d, "svc", "zdb");
    let web_since = running_since(&d, "svc", "web");

    d.kill9();
    d.spawn();
    d.wait_running("svc");
    assert_eq!(
        running_since(&d, "svc", "zdb"),
        db_since,
        "a daemon restart leaves services alone"
    );
    assert_eq!(running_since(&d, "svc", "web"), web_since);

    let r = d.api_json("POST", "/v1/sprites/svc/sleep", &json!({"cold": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    // Any call wakes it, and the boot starts zdb before web.
    let web_again = running_since(&d, "svc", "web");
    let db_again = running_since(&d, "svc", "zdb");
    assert_ne!(web_again, web_since, "started again on the cold wake");
    assert!(
        db_again <= web_again,
        "zdb ({db_again}) starts before web ({web_again})"
    );
    let r = d.api("GET", "/v1/sprites/svc/services/web/logs");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"complete\""), "{}", r.text());
}

#[test]
fn bad_service_requests_are_refused_and_a_scribbled_file_costs_only_the_services() {
    let d = Daemon::start();
    d.create("hostile");
    for (name, body, code) in [
        ("..", json!({"cmd": "true"}), 400),
        ("UPPER", json!({"cmd": "true"}), 400),
        ("ok", json!({"cmd": ""}), 400),
        ("ok", json!({"cmd": "true", "http_port": 70000}), 400),
        ("ok", json!({"cmd": "true", "bogus": 1}), 400),
        ("ok", json!({"cmd": "true", "needs": ["ok"]}), 400),
    ] {
        let r = d.api_json(
            "PUT",
            &format!("/v1/sprites/hostile/services/{name}"),
            &body,
        );
        assert_eq!(r.status, code, "PUT {name} {body}: {}", r.text());
    }
    let r = d.api("GET", "/v1/sprites/hostile/services");
    assert_eq!(r.json(), json!([]), "nothing was made");
    for path in ["/services/nope", "/services/nope/logs"] {
        let r = d.api("GET", &format!("/v1/sprites/hostile{path}"));
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let r = d.api_json(
        "POST",
        "/v1/sprites/hostile/services/signal",
        &json!({"name": "nope", "signal": "TERM"}),
    );
    assert_eq!(r.status, 404, "{}", r.text());

    put(
        &d,
        "hostile",
        "keep",
        json!({"cmd": "sleep", "args": ["1000"]}),
    );
    d.sh(
        "hostile",
        "head -c 4096 /dev/urandom > /etc/bothy/services.json",
    );
    let r = d.api("POST", "/v1/sprites/hostile/restart");
    assert!(r.status < 300, "{}", r.text());
    d.wait_running("hostile");
    let r = d.api("GET", "/v1/sprites/hostile/services");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([]), "an unreadable file means no services");
    assert_eq!(d.sh("hostile", "echo alive").trim(), "alive");
    put(
        &d,
        "hostile",
        "again",
        json!({"cmd": "sleep", "args": ["1000"]}),
    );
    running_since(&d, "hostile", "again");

    // FIFOs where the init reads its definitions and writes a log must not
    // hang it.
    d.sh(
        "hostile",
        "mkdir -p /var/log/bothy/services && mkfifo /var/log/bothy/services/piped.log",
    );
    put(
        &d,
        "hostile",
        "piped",
        json!({"cmd": "sh", "args": ["-c", "echo to-the-log; exec sleep 1000"]}),
    );
    running_since(&d, "hostile", "piped");
    d.sh(
        "hostile",
        "rm /etc/bothy/services.json && mkfifo /etc/bothy/services.json",
    );
    let r = d.api("POST", "/v1/sprites/hostile/restart");
    assert!(r.status < 300, "{}", r.text());
    d.wait_running("hostile");
    assert_eq!(
        d.sh("hostile", "echo alive").trim(),
        "alive",
        "the init did not hang"
    );
    assert_eq!(
        d.api("GET", "/v1/sprites/hostile/services").json(),
        json!([])
    );
}

#[test]
fn the_cli_manages_services() {
    let d = Daemon::start();
    d.create("clisvc");
    let run = |args: &[&str]| {
        let mut all = vec!["services"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-s", "clisvc"]);
        d.cli(&all).run().assert_success(&all.join(" "))
    };
    let made = run(&[
        "create",
        "echo",
        "--cmd",
        "sh",
        "--args=-c,echo up; exec sleep 1000",
        "--follow",
        "1",
    ]);
    assert!(made.stdout_str().contains("up"), "{}", made.stdout_str());
    let listed = run(&["list"]).stdout_str();
    assert!(
        listed.contains("echo") && listed.contains("running"),
        "{listed}"
    );
    assert!(run(&["logs", "echo"]).stdout_str().contains("up"));
    run(&["stop", "echo", "--timeout", "2"]);
    assert_eq!(service(&d, "clisvc", "echo")["state"]["status"], "stopped");
    for verb in ["start", "restart"] {
        let out = run(&[verb, "echo", "--follow", "1"]).stdout_str();
        assert!(
            out.contains("up"),
            "{verb} shows the service's output: {out}"
        );
        assert_eq!(service(&d, "clisvc", "echo")["state"]["status"], "running");
    }
    run(&["delete", "echo"]);
    let gone = d.cli(&["services", "get", "echo", "-s", "clisvc"]).run();
    assert_ne!(gone.code, 0, "a deleted service is gone");
}

#[test]
fn a_box_manages_its_own_services_and_tasks_from_inside_and_only_its_own() {
    let d = Daemon::start();
    d.create("inner");
    d.create("other");
    d.sh(
        "inner",
        "bothy-env services create inside --cmd sleep --args 1000 --follow 0.5",
    );
    let listed = d.sh("inner", "bothy-env services list");
    assert!(
        listed.contains("inside") && listed.contains("running"),
        "{listed}"
    );
    assert!(!running_since(&d, "inner", "inside").is_empty());
    let r = d.api("GET", "/v1/sprites/other/services");
    assert_eq!(r.json(), json!([]), "another box's services are its own");
    assert!(d
        .sh("other", "bothy-env services list")
        .contains("no services"));
    let refused = d.exec("other", &["bothy-env", "services", "stop", "inside"]);
    assert_ne!(refused.code, 0, "a box cannot reach another box's service");

    // A hold while a command runs, released after it.
    let held = d.sh(
        "inner",
        "bothy-env tasks hold --ttl 1m --name build -- sh -c 'bothy-env tasks list'",
    );
    assert!(held.contains("build"), "{held}");
    let after = d.api("GET", "/v1/sprites/inner/tasks").json();
    assert_eq!(after["tasks"], json!([]), "released when the command ended");
    let code = d.exec(
        "inner",
        &[
            "bothy-env",
            "tasks",
            "hold",
            "--ttl",
            "1m",
            "--",
            "sh",
            "-c",
            "exit 7",
        ],
    );
    assert_eq!(code.code, 7, "the command's exit code comes back");
    d.sh("inner", "bothy-env services delete inside");
    assert_eq!(d.api("GET", "/v1/sprites/inner/services").json(), json!([]));
}
