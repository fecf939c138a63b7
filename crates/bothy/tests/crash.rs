//! `kill -9` of the daemon, of the storage process that serves box disks, or
//! of both, while boxes write and checkpoint: after a restart nothing that
//! was acknowledged is lost, every checkpoint restores, and the box's ext4 is
//! clean by e2fsck. (That a daemon crash alone leaves boxes running is
//! tested in inside_out.rs.)

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::cli::{wait_with_deadline, Reaped};
use common::storage::{self, checkpoints, ids, now_ms, wait_booted_since, Crash};
use common::{wait_until, Daemon};

/// Tells a loop in another thread to stop, when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Lines in /root/w.sums as the box sees it now (0 while the file is absent).
fn sums_lines(d: &Daemon, name: &str) -> usize {
    d.sh(name, "cat /root/w.sums 2>/dev/null | wc -l")
        .trim()
        .parse()
        .unwrap_or_default()
}

/// The storage process and the daemon die together: box disks die, boxes boot
/// again with everything they had synced.
#[test]
fn kill9_during_synced_writes_loses_nothing_acknowledged() {
    let d = Daemon::start();
    let name = "writer";
    d.create(name);
    d.sh(name, "mkdir -p /root/w");
    let writer = d
        .cli(&[
            "exec",
            "-s",
            name,
            "--max-run-after-disconnect",
            "0",
            "--",
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); head -c 1M /dev/urandom > /root/w/$i; \
             sync /root/w/$i; sha256sum /root/w/$i >> /root/w.sums; sync /root/w.sums; done",
        ])
        .spawn_detached_io();
    let mut writer = Reaped(writer);

    // Each line is appended only after the previous one's `sync` returned, so
    // seeing N lines means at least N-1 were acknowledged as durable.
    let seen = wait_until("the writer to make files", Duration::from_secs(120), || {
        let n = sums_lines(&d, name);
        if n >= 8 {
            Ok(n)
        } else {
            Err(format!("{n} lines"))
        }
    });

    storage::crash(&d, Crash::Both);
    let ended = wait_with_deadline(&mut writer.0, Duration::from_secs(60));
    assert!(
        ended.is_some(),
        "the attached exec ends when the daemon dies"
    );
    let since = now_ms();
    d.spawn();
    wait_booted_since(&d, name, since);

    // Every complete line must verify except the last, whose file or line
    // the crash may have cut.
    let report = d.sh(
        name,
        "cd /root && n=$(wc -l < w.sums) && echo lines=$n \
         && i=0; while read -r sum path; do i=$((i+1)); \
              if [ \"$path\" = /root/w/$i ] \
                 && echo \"$sum  $path\" | sha256sum -c --status 2>/dev/null; then :; \
              elif [ $i -eq $n ]; then echo last-bad; else echo \"bad line $i: $sum $path\"; fi; \
            done < w.sums",
    );
    let lines: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("lines="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line count in {report:?}"));
    let problems: Vec<&str> = report.lines().filter(|l| l.starts_with("bad")).collect();
    assert!(
        problems.is_empty(),
        "every synced file survives the crash intact: {problems:?}"
    );
    assert!(
        lines + 1 >= seen,
        "acknowledged lines survive: {seen} seen before the crash, {lines} after"
    );
    eprintln!("writes: {seen} lines seen before the crash, {lines} after it");
    storage::assert_fsck_clean(&d, name, "after kill -9 during writes");

    // The box works normally afterwards.
    d.sh(
        name,
        "echo fine > /root/after && sync -f / && cat /root/after",
    );
}

/// Checkpoints back to back, each after a synced counter write, until the
/// daemon is killed `crash_after` into the next checkpoint request; returns the
/// checkpoints acknowledged before that, with the counter each one holds.
fn checkpoint_until_crash(
    d: &Daemon,
    name: &str,
    first: u64,
    crash_after: Duration,
    what: Crash,
) -> Vec<(String, u64)> {
    let acked: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
    let started = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // A panic below must not leave the scope waiting for the loop forever.
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            for n in first.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let wrote = d.exec(
                    name,
                    &[
                        "sh",
                        "-c",
                        &format!("echo {n} > /root/counter && sync /root/counter"),
                    ],
                );
                if wrote.code != 0 {
                    break;
                }
                started.fetch_add(1, Ordering::SeqCst);
                let out = d
                    .cli(&["checkpoint", "create", "-s", name, "--json", "--comment"])
                    .arg(format!("counter {n}"))
                    .timeout(storage::CHECKPOINT_TIMEOUT)
                    .run();
                if out.code != 0 {
                    break;
                }
                let id = out.json()["id"].as_str().unwrap_or_default().to_string();
                acked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((id, n));
            }
        });

        wait_until(
            "a few checkpoints, and the next one under way",
            Duration::from_secs(180),
            || {
                let n = started.load(Ordering::SeqCst);
                if n >= 4 {
                    Ok(())
                } else {
                    Err(format!("{n} checkpoints started"))
                }
            },
        );
        // Picks the crash point inside the checkpoint just requested (a few
        // hundred ms long); nothing waits on it.
        std::thread::sleep(crash_after);
        stop.store(true, Ordering::SeqCst);
        storage::crash(d, what);
    });
    acked.into_inner().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn kill9_during_checkpoints_keeps_every_acknowledged_one() {
    let d = Daemon::start();
    let name = "ckpt";
    d.create(name);

    // Three crashes at different points of a checkpoint request, of each
    // process and of both.
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut rounds = 0;
    for (crash_after_ms, what) in [
        (10, Crash::Daemon),
        (80, Crash::Both),
        (200, Crash::Storage),
    ] {
        let first = acked.last().map(|(_, n)| n + 1).unwrap_or(1);
        // Before the crash: when only the storage process dies, the daemon
        // boots the box again at once, possibly before this thread resumes.
        let since = now_ms();
        let round =
            checkpoint_until_crash(&d, name, first, Duration::from_millis(crash_after_ms), what);
        assert!(round.len() >= 3, "checkpoints before the crash: {round:?}");
        acked.extend(round);
        rounds += 1;

        if what != Crash::Storage {
            d.spawn();
        }
        if what.reboots_boxes() {
            wait_booted_since(&d, name, since);
        } else {
            d.wait_running(name);
        }
        let listed_ids = ids(&checkpoints(&d, name, true));
        eprintln!(
            "checkpoints: crash of {what:?} {crash_after_ms} ms into a request; acknowledged {:?}, listed after the crash {listed_ids:?}",
            acked.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>()
        );
        for (id, _) in &acked {
            assert!(
                listed_ids.contains(id),
                "acknowledged checkpoint {id} survives the crash: {listed_ids:?}"
            );
        }
        assert!(
            listed_ids.len() <= acked.len() + rounds,
            "only the checkpoint under way at each crash may be added: acknowledged {acked:?}, listed {listed_ids:?}"
        );
        storage::assert_fsck_clean(&d, name, "after kill -9 during checkpoints");
    }
    let listed = checkpoints(&d, name, true);
    let live = d.sh(name, "cat /root/counter");
    let live: u64 = live
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the live counter is a number: {live:?}"));
    let last_acked = acked.last().map(|(_, n)| *n).unwrap_or_default();
    assert!(
        live >= last_acked,
        "the live disk keeps the last synced counter: {live} < {last_acked}"
    );

    for c in &listed {
        let id = c["id"].as_str().unwrap_or_default();
        storage::restore(&d, name, id);
        let counter = d.sh(name, "cat /root/counter");
        let value: u64 = counter
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{id}'s /root/counter is a number: {counter:?} ({c})"));
        if let Some((_, n)) = acked.iter().find(|(a, _)| a == id) {
            assert_eq!(value, *n, "{id} holds the counter written just before it");
        }
    }
    storage::assert_fsck_clean(&d, name, "after restoring every checkpoint");
}
