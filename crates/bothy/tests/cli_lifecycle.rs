//! The box life cycle as a CLI user sees it: create, list, get, use, destroy.

mod common;

use common::{unique_name, Daemon, Shared};

static DAEMON: Shared = Shared::new();

fn daemon() -> &'static Daemon {
    DAEMON.get(|_| {})
}

/// Names in `bothy list --json`, whether it prints an array of boxes or the
/// API's `{"sprites": [...]}` page.
fn listed_names(d: &Daemon, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--json", "list"];
    args.extend_from_slice(extra);
    let v = d
        .cli(&args)
        .run()
        .assert_success("bothy --json list")
        .json();
    let items = v
        .as_array()
        .cloned()
        .or_else(|| v["sprites"].as_array().cloned())
        .unwrap_or_else(|| panic!("bothy --json list printed neither a list nor a page: {v}"));
    items
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn create_list_get_destroy() {
    let d = daemon();
    let name = unique_name("life");
    d.create(&name);

    assert!(
        listed_names(d, &[]).contains(&name),
        "a created box is listed"
    );
    let table = d.cli(&["list"]).run().assert_success("bothy list");
    assert!(
        table.stdout_str().contains(&name),
        "the table shows the box: {}",
        table.stdout_str()
    );

    let info = d.get(&name);
    assert_eq!(info["name"], name.as_str());
    assert_eq!(info["status"], "running", "a new box is running: {info}");
    assert_eq!(info["organization"], "default");
    let id = info["id"].as_str().unwrap_or_default();
    assert!(
        id.len() == 13 && id.starts_with('b'),
        "box id is b + 12 hex digits: {id:?}"
    );

    let refused = d.cli(&["destroy", &name]).run();
    assert_ne!(
        refused.code, 0,
        "destroy without --force must refuse when stdin is not a TTY"
    );
    assert!(
        refused.stderr_str().contains("--force"),
        "the refusal says how to proceed: {}",
        refused.stderr_str()
    );
    assert!(d.names().contains(&name), "a refused destroy keeps the box");

    d.cli(&["destroy", &name, "--force"])
        .run()
        .assert_success("destroy --force");
    assert!(
        !listed_names(d, &[]).contains(&name),
        "a destroyed box is gone from list"
    );
    let gone = d.api("GET", &format!("/v1/sprites/{name}"));
    gone.assert_error(404, "get after destroy");
    assert!(
        !d.box_dirs()
            .iter()
            .any(|b| Some(b.as_str()) == info["id"].as_str()),
        "destroy removes the box's directory: {:?}",
        d.box_dirs()
    );
}

#[test]
fn list_prefix_filters() {
    let d = daemon();
    let a = unique_name("pfa");
    let b = unique_name("pfb");
    d.create(&a);
    d.create(&b);
    let only_a = listed_names(d, &["--prefix", "pfa-"]);
    assert!(only_a.contains(&a), "{only_a:?}");
    assert!(!only_a.contains(&b), "prefix pfa- hides {b}: {only_a:?}");
    for n in [&a, &b] {
        d.cli(&["destroy", n, "--force"])
            .run()
            .assert_success("destroy");
    }
}

#[test]
fn hostname_is_the_box_name() {
    let d = daemon();
    let name = unique_name("host");
    d.create(&name);
    let out = d.exec(&name, &["uname", "-n"]).assert_success("uname -n");
    assert_eq!(out.stdout_str().trim(), name);
    let hosts = d.sh(&name, "cat /etc/hosts");
    assert!(
        hosts.contains(&name),
        "/etc/hosts names the box so its hostname resolves: {hosts}"
    );
    d.cli(&["destroy", &name, "--force"])
        .run()
        .assert_success("destroy");
}

#[test]
fn use_writes_dot_bothy_and_selects_the_box() {
    let d = daemon();
    let name = unique_name("usebox");
    d.create(&name);
    let project = d.scratch.join(&name);
    let nested = project.join("src/deep");
    std::fs::create_dir_all(&nested).unwrap_or_else(|e| panic!("mkdir {nested:?}: {e}"));

    d.cli(&["use", &name])
        .cwd(&project)
        .run()
        .assert_success("use");
    let recorded = std::fs::read_to_string(project.join(".bothy"))
        .unwrap_or_else(|e| panic!("`bothy use` must write .bothy in the current dir: {e}"));
    assert!(
        recorded.contains(&name),
        ".bothy names the box: {recorded:?}"
    );

    // Found from a subdirectory, like git finds .git.
    let out = d
        .cli(&["exec", "--", "uname", "-n"])
        .cwd(&nested)
        .run()
        .assert_success("exec without -s below a .bothy");
    assert_eq!(out.stdout_str().trim(), name);

    d.cli(&["use", "--unset"])
        .cwd(&project)
        .run()
        .assert_success("use --unset");
    assert!(
        !project.join(".bothy").exists(),
        "use --unset removes .bothy"
    );
    let none = d.cli(&["exec", "--", "true"]).cwd(&nested).run();
    assert_eq!(
        none.code,
        1,
        "no box selected is an error: {}",
        none.stderr_str()
    );
    assert!(
        none.stderr_str().contains("bothy use"),
        "the error says how to select a box: {}",
        none.stderr_str()
    );
    d.cli(&["destroy", &name, "--force"])
        .run()
        .assert_success("destroy");
}

#[test]
fn cli_reports_api_errors_with_exit_code_1() {
    let d = daemon();
    let bad = d.cli(&["create", "Not_A_Name", "--skip-console"]).run();
    assert_eq!(bad.code, 1, "an API error exits 1: {}", bad.stderr_str());
    assert!(
        bad.stderr_str().starts_with("error:"),
        "the API's message is shown as `error: ...`: {}",
        bad.stderr_str()
    );
    assert!(
        !bad.stderr_str().contains("panicked"),
        "{}",
        bad.stderr_str()
    );

    let missing = d.exec("no-such-box", &["true"]);
    assert_eq!(
        missing.code,
        1,
        "exec on an unknown box: {}",
        missing.stderr_str()
    );
    assert!(
        missing.stderr_str().contains("no-such-box"),
        "the error names the box: {}",
        missing.stderr_str()
    );

    let unreachable = common::CliRun::program(common::daemon::BIN, &["list"])
        .env("BOTHY_API_URL", "http://127.0.0.1:9")
        .env("BOTHY_TOKEN", "x")
        .run();
    assert_eq!(unreachable.code, 1);
    assert!(
        unreachable.stderr_str().contains("bothy daemon"),
        "an unreachable daemon is explained: {}",
        unreachable.stderr_str()
    );
}
