//! What the storage tests look at: checkpoints through the CLI's `--json`
//! output, chunk objects in the daemon's object store, the box's disk as the
//! host sees it (loop device, e2fsck), and boxes booting again after a restart.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::cli::{CliRun, Output};
use super::daemon::{Daemon, RUNNING_TIMEOUT};
use super::wait::wait_until;

/// Checkpoints, restores and forks of a small box take about a second; this
/// leaves room for a loaded 2-core machine.
pub const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(180);

/// `bothy checkpoint create -s NAME [--comment C] --json`; the new id.
pub fn checkpoint(d: &Daemon, name: &str, comment: Option<&str>) -> String {
    let mut run = d.cli(&["checkpoint", "create", "-s", name, "--json"]);
    if let Some(c) = comment {
        run = run.arg("--comment").arg(c);
    }
    let out = run
        .timeout(CHECKPOINT_TIMEOUT)
        .run()
        .assert_success(&format!("checkpoint {name}"));
    let made = out.json();
    let id = made["id"].as_str().unwrap_or_default().to_string();
    assert!(
        is_checkpoint_id(&id),
        "checkpoint create --json names the new checkpoint: {made}"
    );
    if let Some(c) = comment {
        assert_eq!(made["comment"], c, "the new checkpoint keeps its comment");
    }
    id
}

/// `bothy checkpoint list -s NAME --json [--include-auto]`.
pub fn checkpoints(d: &Daemon, name: &str, include_auto: bool) -> Vec<Value> {
    let mut run = d.cli(&["checkpoint", "list", "-s", name, "--json"]);
    if include_auto {
        run = run.arg("--include-auto");
    }
    let out = run.run().assert_success(&format!("checkpoint list {name}"));
    match out.json() {
        Value::Array(list) => list,
        other => panic!("checkpoint list --json is not an array: {other}"),
    }
}

/// The ids of a checkpoint list, in its order.
pub fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|c| c["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `bothy restore -s NAME ID --json`; the id of the automatic checkpoint that
/// keeps the state the restore replaced.
pub fn restore(d: &Daemon, name: &str, id: &str) -> String {
    let out = d
        .cli(&["restore", "-s", name, id, "--json"])
        .timeout(CHECKPOINT_TIMEOUT)
        .run()
        .assert_success(&format!("restore {name} to {id}"));
    let answer = out.json();
    assert_eq!(answer["restored"], id, "restore --json: {answer}");
    let kept = answer["kept_as"].as_str().unwrap_or_default().to_string();
    assert!(
        is_checkpoint_id(&kept),
        "restore --json names the automatic checkpoint: {answer}"
    );
    kept
}

pub fn is_checkpoint_id(id: &str) -> bool {
    id.strip_prefix('v').is_some_and(|n| {
        !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// SHA-256 lines of every regular file under `dirs` (paths relative to `/`,
/// sorted), as the box computes them.
pub fn manifest(d: &Daemon, name: &str, dirs: &[&str]) -> String {
    let script = format!(
        "cd / && find {} -xdev -type f -print0 | sort -z | xargs -0 -r sha256sum",
        dirs.join(" ")
    );
    let m = d.sh(name, &script);
    assert!(
        !m.is_empty(),
        "the manifest of {dirs:?} lists files (an empty one proves nothing)"
    );
    m
}

/// Names of the chunk objects in the daemon's object store.
pub fn chunk_objects(d: &Daemon) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    collect_files(&d.data_dir.join("objects/chunks"), "", &mut found);
    found
}

fn collect_files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    // A directory that GC empties may vanish while it is read: skip it.
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_files(&entry.path(), &format!("{name}/"), out),
            Ok(t) if t.is_file() => {
                out.insert(name);
            }
            _ => {}
        }
    }
}

/// Waits until the set of chunk objects has not changed for `quiet`, and
/// returns it. The daemon uploads in the background (the base image right
/// after start, a box's writes about a second after they stop) and says
/// nothing when it is done; a store that stays the same for several upload
/// periods is as settled as an outside observer can tell.
pub fn settled_chunk_objects(d: &Daemon, quiet: Duration) -> BTreeSet<String> {
    let mut last = chunk_objects(d);
    let mut since = std::time::Instant::now();
    wait_until(
        "the object store to settle",
        Duration::from_secs(300),
        || {
            let now = chunk_objects(d);
            if now != last {
                last = now;
                since = std::time::Instant::now();
            }
            if since.elapsed() >= quiet {
                Ok(last.clone())
            } else {
                Err(format!("{} objects, still changing", last.len()))
            }
        },
    )
}

/// How many garbage collections the daemon has finished (it logs each one).
pub fn gc_runs(d: &Daemon) -> usize {
    d.log_text()
        .lines()
        .filter(|l| l.contains("garbage collected"))
        .count()
}

/// Waits until the daemon has finished more than `before` garbage collections.
pub fn wait_gc_after(d: &Daemon, before: usize) {
    wait_until(
        "a garbage collection to finish",
        Duration::from_secs(120),
        || {
            let n = gc_runs(d);
            if n > before {
                Ok(())
            } else {
                Err(format!("{n} collections so far"))
            }
        },
    );
}

/// Milliseconds since the epoch, on the clock the daemon stamps times with.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Parses the API's UTC times (`2026-01-02T03:04:05.6Z`, fraction optional)
/// into milliseconds since the epoch.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>());
    let (y, m, dd) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut parts = hms.splitn(3, ':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    let millis = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        digits.parse::<i64>().ok()?
    };
    let days = days_from_civil(y, m, dd);
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Waits until the box runs on a boot that started at or after `since_ms`.
///
/// After a daemon restart the box left over from the old process still shows
/// as `running` until recovery has torn it down and booted it again; its
/// `last_running_at` is stamped by that new boot.
pub fn wait_booted_since(d: &Daemon, name: &str, since_ms: i64) {
    wait_until(
        &format!("{name} to run again after a boot"),
        RUNNING_TIMEOUT,
        || {
            let r = d.api("GET", &format!("/v1/sprites/{name}"));
            if r.status != 200 {
                return Err(format!("HTTP {}: {}", r.status, r.text()));
            }
            let v = r.json();
            let status = v["status"].as_str().unwrap_or_default();
            let booted = v["last_running_at"]
                .as_str()
                .and_then(parse_time_ms)
                .unwrap_or_default();
            // The daemon stamps whole milliseconds; a little slack for that.
            if status == "running" && booted + 5 >= since_ms {
                Ok(())
            } else {
                Err(format!(
                    "status {status}, last_running_at {}",
                    v["last_running_at"]
                ))
            }
        },
    );
}

/// The box's id as the API reports it.
pub fn box_id(d: &Daemon, name: &str) -> String {
    let id = d.get(name)["id"].as_str().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "GET /v1/sprites/{name} has an id");
    id
}

/// The box's root filesystem on the host: where it is mounted and its device.
#[derive(Debug)]
pub struct BoxDisk {
    pub mount: PathBuf,
    pub device: String,
}

/// Finds the box's mount under `/run/bothy/<instance>/<box-id>` (the instance
/// being whichever directory there holds this box id) and its loop device.
pub fn box_disk(d: &Daemon, name: &str) -> BoxDisk {
    let id = box_id(d, name);
    let mount = fs::read_dir("/run/bothy")
        .unwrap_or_else(|e| panic!("cannot read /run/bothy: {e}"))
        .flatten()
        // `<instance>.roots/<id>` holds the box's idmapped view, not its disk.
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".roots"))
        .map(|e| e.path().join(&id))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no /run/bothy/<instance>/{id} for box {name}"));
    let out = CliRun::program("findmnt", &["-n", "-o", "SOURCE"])
        .arg(&mount)
        .run()
        .assert_success("findmnt of the box's disk");
    let device = out.stdout_str().trim().to_string();
    assert!(
        device.starts_with("/dev/loop"),
        "{name}'s disk is a loop device: {device:?} at {mount:?}"
    );
    BoxDisk { mount, device }
}

/// A frozen filesystem, thawed when dropped (also when a test panics).
struct Frozen<'a>(&'a Path);

impl<'a> Frozen<'a> {
    fn freeze(mount: &'a Path) -> Self {
        CliRun::program("fsfreeze", &["-f"])
            .arg(mount)
            .run()
            .assert_success("fsfreeze -f the box's disk");
        Frozen(mount)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let out = CliRun::program("fsfreeze", &["-u"]).arg(self.0).run();
        if out.code != 0 && !std::thread::panicking() {
            panic!("fsfreeze -u {:?} failed: {}", self.0, out.stderr_str());
        }
    }
}

/// `e2fsck -fn` of the box's ext4 while it is frozen (so what e2fsck reads is
/// consistent); the box is thawed afterwards whatever happens.
pub fn fsck(d: &Daemon, name: &str) -> Output {
    let disk = box_disk(d, name);
    let _frozen = Frozen::freeze(&disk.mount);
    CliRun::program("e2fsck", &["-fn"])
        .arg(&disk.device)
        .timeout(Duration::from_secs(300))
        .run()
}

/// Panics unless the box's ext4 is clean by `e2fsck -fn`.
pub fn assert_fsck_clean(d: &Daemon, name: &str, context: &str) {
    let out = fsck(d, name);
    assert_eq!(
        out.code,
        0,
        "{context}: e2fsck -fn of {name}'s disk finds errors\nstdout: {}\nstderr: {}",
        out.stdout_str(),
        out.stderr_str()
    );
}

/// True once every thread of `pid` has exited (it is gone or a zombie).
fn process_dead(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|t| {
        let stat = fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The state is the field after the parenthesised command name.
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        matches!(
            state.and_then(|s| s.chars().next()),
            None | Some('Z') | Some('X')
        )
    })
}

/// Aborts the FUSE connections behind the daemon's box disks (their ids are
/// the minor device numbers of the FUSE mounts); returns the ids aborted.
fn abort_fuse_connections(d: &Daemon) -> Vec<String> {
    let instance = super::host::Footprint::new(&d.data_dir).instance;
    let fuse_dir = format!("/run/bothy/{instance}/fuse/");
    let conns = Path::new("/sys/fs/fuse/connections");
    if fs::read_dir(conns)
        .map(|mut e| e.next().is_none())
        .unwrap_or(true)
    {
        let _ = CliRun::program("mount", &["-t", "fusectl", "none"])
            .arg(conns)
            .run();
    }
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut aborted = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(dev), Some(point)) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        if !point.starts_with(&fuse_dir) {
            continue;
        }
        let Some((_, minor)) = dev.split_once(':') else {
            continue;
        };
        if fs::write(conns.join(minor).join("abort"), "1").is_ok() {
            aborted.push(format!("{minor} ({point})"));
        }
    }
    aborted
}

/// What a crash test kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// The daemon only: boxes and their disks keep running.
    Daemon,
    /// The storage process only: box disks die, boxes boot again.
    Storage,
    /// Both at once, as a crash of everything bothy runs would.
    Both,
}

impl Crash {
    /// Whether boxes lose their disks (and boot again) in this crash.
    pub fn reboots_boxes(self) -> bool {
        self != Crash::Daemon
    }
}

/// `kill -9` of the daemon, its storage process or both, waiting until they
/// are gone. A process that cannot die is unwedged before the test fails: a
/// thread killed inside a filesystem call that waits on its own FUSE server
/// never returns, the process never exits, and every `sync` on the host
/// hangs. Aborting the FUSE connections frees it.
pub fn crash(d: &Daemon, what: Crash) {
    let daemon = d.pid();
    let storage = d.storage_pid();
    let mut victims = Vec::new();
    if what != Crash::Storage {
        victims.push(daemon.unwrap_or_else(|| panic!("crash: the daemon is not running")));
    }
    if what != Crash::Daemon {
        victims.push(storage.unwrap_or_else(|| panic!("crash: no storage process runs")));
    }
    for pid in &victims {
        super::daemon::signal(*pid, libc::SIGKILL);
    }
    let died = |limit: Duration| {
        let deadline = std::time::Instant::now() + limit;
        while !victims.iter().all(|p| process_dead(*p)) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    };
    if died(Duration::from_secs(20)) {
        if what != Crash::Storage {
            d.kill9();
        }
        return;
    }
    let stuck: Vec<String> = victims
        .iter()
        .flat_map(|pid| {
            fs::read_dir(format!("/proc/{pid}/task"))
                .map(|tasks| {
                    tasks
                        .flatten()
                        .map(|t| {
                            let wchan =
                                fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
                            format!("{pid}/{}:{wchan}", t.file_name().to_string_lossy())
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect();
    let aborted = abort_fuse_connections(d);
    let freed = died(Duration::from_secs(20));
    if freed && what != Crash::Storage {
        d.kill9();
    }
    panic!(
        "{victims:?} did not die within 20 s of SIGKILL: threads stuck in {stuck:?}; \
         aborted FUSE connections {aborted:?}, which {} them",
        if freed { "freed" } else { "did not free" }
    );
}
