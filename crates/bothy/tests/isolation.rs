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

/// The box's uid_map: (inside, host, count) of its first line.
fn uid_map(d: &Daemon, name: &str) -> (u64, u64, u64) {
    let map = d.sh(name, "cat /proc/self/uid_map");
    let f: Vec<u64> = map
        .split_whitespace()
        .take(3)
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(f.len(), 3, "uid_map: {map:?}");
    (f[0], f[1], f[2])
}

/// Real uid of the host processes whose cgroup names box `id`.
fn host_uids_of_box(id: &str) -> Vec<u64> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if !cgroup.lines().any(|l| l.ends_with(&format!("/{id}"))) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if let Some(uid) = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse().ok())
        {
            found.push(uid);
        }
    }
    found
}

/// Two boxes never share host ids, while files on both disks are stored
/// with the same disk ids (100000 + k): a process escaping one box owns
/// nothing of the other.
#[test]
fn boxes_have_disjoint_host_ids_over_the_same_disk_ids() {
    let d = daemon();
    let other = "iso-other";
    d.create(other);
    let (inside, a, count) = uid_map(d, BOX);
    let (_, b, _) = uid_map(d, other);
    assert_eq!((inside, count), (0, 65_536));
    for host in [a, b] {
        assert_ne!(host, 100_000, "a new box is not on the shared range");
        assert!(host > 100_000, "box root maps above the disk ids: {host}");
    }
    assert!(
        a + count <= b || b + count <= a,
        "the boxes' ranges overlap: {a} and {b}"
    );
    // A process of the box runs as the box's host id, seen from the host.
    let id = common::storage::box_id(d, other);
    let uids = host_uids_of_box(&id);
    assert!(!uids.is_empty(), "no host process of box {id}");
    assert!(uids.iter().all(|u| *u == b), "{uids:?} are not all {b}");
    // Box root's file is stored as disk id 100000 on the box's ext4.
    d.sh(
        other,
        "echo x > /root/mine && touch /root/apt && chown 42:42 /root/apt && sync",
    );
    let disk = common::storage::box_disk(d, other).mount;
    let owner = |p: &str| {
        let meta = std::fs::metadata(disk.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta),
        )
    };
    assert_eq!(owner("root/mine"), (100_000, 100_000));
    assert_eq!(owner("root/apt"), (100_042, 100_042));
    d.cli(&["destroy", other, "--force"])
        .run()
        .assert_success("destroy");
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
