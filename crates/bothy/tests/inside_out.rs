//! The daemon can die or be upgraded under running boxes: box disks are
//! served by a storage process that outlives it, so a `kill -9`, a SIGTERM
//! or an upgrade of the daemon leaves every box's processes running and
//! their disk I/O working, and the next daemon adopts them.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cli::Reaped;
use common::storage::{self, box_id, Crash};
use common::{wait_until, Daemon};

/// A writer that appends its counter to /root/log and fsyncs it every
/// 100 ms; any failed write or sync ends it (`set -e`).
const WRITER: &str = "set -e; echo $$ > /root/writer.pid; i=0; \
     while true; do i=$((i+1)); echo $i >> /root/log; sync /root/log; sleep 0.1; done";

/// Where the test, on the host, sees the box's /root/log (its disk's
/// mount point): readable while no daemon runs.
fn log_on_host(d: &Daemon, name: &str) -> PathBuf {
    let instance = common::host::Footprint::new(&d.data_dir).instance;
    Path::new("/run/bothy")
        .join(instance)
        .join(box_id(d, name))
        .join("root/log")
}

fn lines_on_host(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Waits, on the host and with no daemon needed, until the writer has
/// appended `more` lines past `from`.
fn wait_for_lines(path: &Path, from: usize, more: usize, why: &str) -> usize {
    wait_until(why, Duration::from_secs(120), || {
        let n = lines_on_host(path).len();
        if n >= from + more {
            Ok(n)
        } else {
            Err(format!("{n} lines"))
        }
    })
}

/// Starts the writer in a session that outlives its client; returns the
/// writer's pid in the box and the client.
fn start_writer(d: &Daemon, name: &str) -> (String, Reaped) {
    let client = d
        .cli(&[
            "exec",
            "-s",
            name,
            "--max-run-after-disconnect",
            "0",
            "--",
            "sh",
            "-c",
            WRITER,
        ])
        .spawn_detached_io();
    // The CLI process is only the first client of the session: the session
    // lives in the box and goes on without it.
    let client = Reaped(client);
    let pid = wait_until("the writer's pid file", Duration::from_secs(60), || {
        let pid = d.sh(name, "cat /root/writer.pid 2>/dev/null || true");
        let pid = pid.trim().to_string();
        if pid.is_empty() {
            Err("no pid yet".into())
        } else {
            Ok(pid)
        }
    });
    (pid, client)
}

/// The same writer process still runs, and the log is 1..N without a gap
/// or a repeat: no acknowledged line was lost and no write failed.
fn assert_writer_intact(d: &Daemon, name: &str, writer: &str, at_least: usize) {
    let alive = d.exec(name, &["sh", "-c", &format!("kill -0 {writer}")]);
    assert_eq!(alive.code, 0, "the writer (pid {writer}) still runs");
    let log = d.sh(name, "cat /root/log");
    let lines: Vec<u64> = log.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(
        lines.len() >= at_least,
        "{} lines, at least {at_least} were acknowledged",
        lines.len()
    );
    let expected: Vec<u64> = (1..=lines.len() as u64).collect();
    assert_eq!(lines, expected, "the log counts 1..N with no gap or repeat");
}

fn boot_time(d: &Daemon, name: &str) -> String {
    d.sh(name, "cut -d' ' -f22 /proc/1/stat").trim().to_string()
}

#[test]
fn a_killed_daemon_leaves_boxes_running_and_their_disks_working() {
    let d = Daemon::start();
    let name = "steady";
    d.create(name);
    let (writer, _client) = start_writer(&d, name);
    let booted = boot_time(&d, name);
    let id_map = d.sh(name, "cat /proc/self/uid_map");
    assert!(
        !id_map.split_whitespace().any(|f| f == "100000"),
        "a new box has host ids of its own: {id_map}"
    );
    let storage_pid = d.storage_pid().expect("a storage process serves the disks");
    let log = log_on_host(&d, name);
    let before = wait_for_lines(&log, 0, 20, "the writer to write");

    storage::crash(&d, Crash::Daemon);
    // Ten seconds without a daemon, seen from the host: the box goes on
    // writing and syncing (100 lines at one per 100 ms).
    let during = wait_for_lines(&log, before, 100, "the box to write while no daemon runs");

    d.spawn();
    d.wait_running(name);
    assert_eq!(boot_time(&d, name), booted, "the box was not rebooted");
    assert_eq!(
        d.sh(name, "cat /proc/self/uid_map"),
        id_map,
        "the adopted box keeps its host ids"
    );
    // Its control socket is served for its own host ids.
    d.sh(name, "bothy-env checkpoints list >/dev/null");
    assert_eq!(
        d.storage_pid(),
        Some(storage_pid),
        "the same storage process serves on"
    );
    assert_writer_intact(&d, name, &writer, during);
    // The adopted box is fully usable: new sessions, checkpoints, its fs.
    storage::checkpoint(&d, name, Some("after the daemon came back"));
    storage::assert_fsck_clean(&d, name, "after the daemon was killed under the box");
    let after = wait_for_lines(&log, during, 10, "the writer to go on after the restart");
    assert_writer_intact(&d, name, &writer, after);
}

#[test]
fn sigterm_and_an_upgrade_leave_boxes_running() {
    // The daemon runs from a copy of the binary, replaced as install.sh
    // replaces it: a new file renamed over the old one, then a restart.
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = dir.path().join("bothy");
    std::fs::copy(common::daemon::BIN, &exe).expect("copy the binary");
    let d = Daemon::start_from(exe.clone(), false, Vec::new(), Vec::new());
    let name = "upgraded";
    d.create(name);
    let (writer, _client) = start_writer(&d, name);
    let booted = boot_time(&d, name);
    let storage_pid = d.storage_pid().expect("a storage process serves the disks");
    let log = log_on_host(&d, name);
    let before = wait_for_lines(&log, 0, 20, "the writer to write");

    // SIGTERM alone: the daemon exits, the box does not notice.
    assert_eq!(d.stop(), 0, "SIGTERM stops the daemon with exit code 0");
    let during = wait_for_lines(&log, before, 30, "the box to write while no daemon runs");
    d.spawn();
    d.wait_running(name);
    assert_eq!(
        boot_time(&d, name),
        booted,
        "SIGTERM did not reboot the box"
    );
    assert_writer_intact(&d, name, &writer, during);

    // An upgrade: another build (a byte appended to the executable keeps it
    // runnable and changes its hash) installed by rename, then a restart.
    let new = dir.path().join("bothy.new");
    let mut bytes = std::fs::read(&exe).expect("read the binary");
    bytes.push(0);
    std::fs::write(&new, &bytes).expect("write the new build");
    std::fs::set_permissions(&new, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::rename(&new, &exe).expect("install the new build");
    assert_eq!(d.stop(), 0);
    let during = wait_for_lines(&log, during, 30, "the box to write during the upgrade");
    d.spawn();
    d.wait_running(name);
    assert_eq!(
        boot_time(&d, name),
        booted,
        "the upgrade did not reboot the box"
    );
    assert_eq!(
        d.storage_pid(),
        Some(storage_pid),
        "a storage process that serves disks is kept across an upgrade"
    );
    assert_writer_intact(&d, name, &writer, during);
    storage::assert_fsck_clean(&d, name, "after an upgrade under the box");

    // A drain stops every box and the old storage process; the next use of
    // the box wakes it on a storage process of the installed build.
    d.cli(&["drain"]).run().assert_success("drain");
    assert_eq!(d.get(name)["status"], "cold");
    common::wait_until(
        "the old storage process to exit",
        Duration::from_secs(60),
        || match d.storage_pid() {
            None => Ok(()),
            Some(p) => Err(format!("pid {p} still runs")),
        },
    );
    let lines_then = d.sh(name, "wc -l < /root/log").trim().to_string();
    let replaced = d.storage_pid().expect("a storage process runs again");
    assert_ne!(replaced, storage_pid);
    let exe_of = std::fs::read_link(format!("/proc/{replaced}/exe")).expect("its executable");
    assert_eq!(
        exe_of, exe,
        "the new storage process runs the installed build"
    );
    assert!(
        lines_then.parse::<usize>().unwrap_or(0) >= during,
        "the drained box kept its log: {lines_then} lines"
    );
    storage::assert_fsck_clean(&d, name, "after a drain and a wake");
}

#[test]
fn a_dead_storage_process_is_replaced_and_its_boxes_boot_again() {
    let d = Daemon::start();
    let name = "phoenix";
    d.create(name);
    d.sh(name, "echo kept > /root/note && sync /root/note");
    let old = d.storage_pid().expect("a storage process");
    let since = storage::now_ms();
    storage::crash(&d, Crash::Storage);
    // Nobody asks: the daemon notices by itself and boots the box again.
    storage::wait_booted_since(&d, name, since);
    let new = d.storage_pid().expect("a new storage process");
    assert_ne!(new, old);
    assert_eq!(d.sh(name, "cat /root/note").trim(), "kept");
    storage::assert_fsck_clean(&d, name, "after the storage process died");
}
