//! What root inside a box can see of the host: as little as possible.

mod common;

use common::{Daemon, Shared};

const BOX: &str = "iso-box";

static DAEMON: Shared = Shared::new();

fn daemon() -> &'static Daemon {
    DAEMON.get(|d| d.create(BOX))
}

#[test]
fn box_sees_only_its_own_processes() {
    let d = daemon();
    let out = d
        .exec(BOX, &["ps", "-e", "-o", "pid=,comm="])
        .assert_success("ps -e");
    let lines: Vec<String> = out
        .stdout_str()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    // init, the session's ps, and at most a few stragglers: never the host's
    // hundreds of processes.
    assert!(
        lines.len() <= 6,
        "the box sees {} processes: {lines:#?}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("bothy daemon") && !l.contains("systemd")),
        "no host process is visible: {lines:#?}"
    );
    let pid1: Vec<&String> = lines.iter().filter(|l| l.starts_with("1 ")).collect();
    assert_eq!(pid1.len(), 1, "pid 1 exists in the box: {lines:#?}");
}

#[test]
fn pid_1_is_the_bothy_init() {
    let d = daemon();
    let out = d
        .exec(BOX, &["cat", "/proc/1/cmdline"])
        .assert_success("cat /proc/1/cmdline");
    let args: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(
        args.first().is_some_and(|a| a.ends_with("bothy")),
        "pid 1 runs the bothy binary: {args:?}"
    );
    assert!(
        args.iter().any(|a| a == "init"),
        "pid 1 is `bothy init`: {args:?}"
    );
}

#[test]
fn box_root_is_not_host_root() {
    let d = daemon();
    let map = d.sh(BOX, "cat /proc/self/uid_map");
    let first: Vec<u64> = map
        .split_whitespace()
        .take(3)
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(first.len(), 3, "uid_map: {map:?}");
    assert_eq!(first[0], 0, "uid 0 in the box: {map:?}");
    assert_ne!(
        first[1], 0,
        "box root maps to an unprivileged host uid: {map:?}"
    );
    assert!(
        first[2] >= 65536,
        "a full 16-bit uid range (apt needs _apt): {map:?}"
    );
    let id = d.sh(BOX, "id -u");
    assert_eq!(id.trim(), "0", "commands run as root inside the box");
}

#[test]
fn data_dir_is_invisible_from_the_box() {
    let d = daemon();
    let data_dir = d.data_dir().to_string_lossy().into_owned();
    let probe = d.exec(BOX, &["test", "-e", &data_dir]);
    assert_eq!(probe.code, 1, "{data_dir} must not exist in the box");

    let found = d
        .exec(
            BOX,
            &[
                "sh",
                "-c",
                "find / -xdev \\( -name state.db -o -name admin-token -o -name '*.sock' \\) 2>/dev/null; true",
            ],
        )
        .assert_success("find");
    let hits: Vec<&str> = found
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| std::str::from_utf8(l).unwrap_or("<binary>"))
        .collect();
    assert!(
        hits.is_empty(),
        "the daemon's state, token and sockets are not reachable: {hits:?}"
    );
    let host = d.exec(BOX, &["test", "-e", &d.scratch.to_string_lossy()]);
    assert_eq!(host.code, 1, "host paths are not visible in the box");
}

#[test]
fn renaming_the_box_does_not_rename_the_host() {
    let d = daemon();
    let before = host_hostname();
    // The box has its own UTS namespace: root may rename the box, never the host.
    let _ = d.exec(
        BOX,
        &["sh", "-c", "echo evil-name > /proc/sys/kernel/hostname"],
    );
    assert_eq!(host_hostname(), before);
    let _ = d.exec(
        BOX,
        &[
            "sh",
            "-c",
            &format!("echo {BOX} > /proc/sys/kernel/hostname"),
        ],
    );
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}
