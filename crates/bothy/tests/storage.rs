//! Checkpoints, restore, fork and garbage collection of box disks, checked the
//! way a user would: through the CLI, from inside the box with `bothy-env`,
//! and by counting chunk objects in the object store.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::storage::{
    self, checkpoint, checkpoints, chunk_objects, ids, manifest, restore, wait_gc_after,
};
use common::{wait_until, Daemon, Shared};

/// One daemon for the tests that only use their own boxes; the GC tests count
/// every object in the store, so they run their own.
static SHARED: Shared = Shared::new();

fn shared() -> &'static Daemon {
    SHARED.get(|_| {})
}

/// What a user sees when they look around the box: a manifest of the files
/// the tests write and of a system directory they damage.
const WATCHED: &[&str] = &["root", "usr/share"];

// Scripts flush with `sync -f /` (syncfs of the box's own disk): a bare
// `sync` is sync(2), which also waits on every other filesystem of the host.
fn write_files(d: &Daemon, name: &str) {
    d.sh(
        name,
        "mkdir -p /root/data/deep/er && cd /root/data \
         && head -c 3M /dev/urandom > big.bin \
         && head -c 4097 /dev/urandom > deep/er/odd.bin \
         && printf 'hello\\n' > hello.txt \
         && : > empty \
         && ln -s hello.txt link \
         && sync -f /",
    );
}

fn damage(d: &Daemon, name: &str) {
    d.sh(
        name,
        "rm -rf /usr/share \
         && printf 'overwritten\\n' > /root/data/hello.txt \
         && rm -rf /root/* \
         && printf 'damage\\n' > /root/damage-marker \
         && sync -f /",
    );
}

fn cli_error(d: &Daemon, args: &[&str]) -> common::Output {
    let out = d.cli(args).timeout(storage::CHECKPOINT_TIMEOUT).run();
    assert_ne!(
        out.code,
        0,
        "`bothy {}` fails\nstdout: {}",
        args.join(" "),
        out.stdout_str()
    );
    out
}

#[test]
fn cli_checkpoint_damage_restore_and_back() {
    let d = shared();
    let name = "cp-cli";
    d.create(name);
    assert!(
        checkpoints(d, name, true).is_empty(),
        "a new box has no checkpoints"
    );
    write_files(d, name);
    let good = manifest(d, name, WATCHED);
    assert!(good.contains("root/data/big.bin"), "{good}");

    let v1 = checkpoint(d, name, Some("before the damage"));
    assert_eq!(v1, "v1", "the first checkpoint of a box is v1");

    damage(d, name);
    let damaged = manifest(d, name, WATCHED);
    assert_ne!(damaged, good, "the damage shows");
    assert!(!damaged.contains("usr/share/"), "{damaged}");

    // The plain output names the automatic checkpoint that keeps the damage.
    let out = d
        .cli(&["restore", "-s", name, &v1])
        .timeout(storage::CHECKPOINT_TIMEOUT)
        .run()
        .assert_success("restore v1");
    let said = format!("{}{}", out.stdout_str(), out.stderr_str());
    let kept: String = said
        .split("kept as ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_alphanumeric()).next())
        .unwrap_or_default()
        .to_string();
    assert!(
        storage::is_checkpoint_id(&kept),
        "restore says which automatic checkpoint keeps the replaced state: {said:?}"
    );
    assert_eq!(
        manifest(d, name, WATCHED),
        good,
        "restore brings every file back, byte for byte"
    );
    assert_eq!(d.sh(name, "readlink /root/data/link"), "hello.txt\n");
    assert_eq!(
        d.sh(name, "cat /root/damage-marker 2>&1 || true"),
        "cat: /root/damage-marker: No such file or directory\n"
    );

    // The automatic checkpoint is hidden unless asked for.
    assert_eq!(ids(&checkpoints(d, name, false)), vec![v1.clone()]);
    let all = checkpoints(d, name, true);
    assert_eq!(ids(&all), vec![v1.clone(), kept.clone()]);
    assert_eq!(all[0]["auto"], false);
    assert_eq!(all[0]["comment"], "before the damage");
    assert_eq!(all[1]["auto"], true, "{}", all[1]);

    // Restoring the automatic checkpoint brings the damage back.
    let kept2 = restore(d, name, &kept);
    assert_ne!(kept2, kept);
    assert_eq!(
        manifest(d, name, WATCHED),
        damaged,
        "restoring the automatic checkpoint brings back the state it kept"
    );

    // info, text and JSON.
    let info = d
        .cli(&["checkpoint", "info", &v1, "-s", name, "--json"])
        .run()
        .assert_success("checkpoint info --json")
        .json();
    assert_eq!(info["id"], v1.as_str());
    assert_eq!(info["comment"], "before the damage");
    assert_eq!(info["auto"], false);
    let created = info["create_time"].as_str().unwrap_or_default();
    assert!(
        storage::parse_time_ms(created).is_some(),
        "create_time is a UTC time: {info}"
    );
    let text = d
        .cli(&["checkpoint", "info", &v1, "-s", name])
        .run()
        .assert_success("checkpoint info")
        .stdout_str();
    assert!(
        text.contains(&v1) && text.contains("before the damage"),
        "{text}"
    );

    // Bad ids: a clear error, and nothing changes.
    let before = checkpoints(d, name, true);
    for bad in ["v0", "x"] {
        for args in [
            vec!["checkpoint", "info", bad, "-s", name],
            vec!["checkpoint", "delete", bad, "-s", name],
            vec!["checkpoint", "rm", bad, "-s", name],
            vec!["restore", "-s", name, bad],
        ] {
            let out = cli_error(d, &args);
            let err = out.stderr_str();
            assert!(
                err.contains(bad) && err.contains("not a checkpoint id"),
                "`bothy {}` says what is wrong: {err}",
                args.join(" ")
            );
        }
    }
    // A well-formed id that does not exist is an error too.
    for args in [
        vec!["checkpoint", "info", "v99", "-s", name],
        vec!["checkpoint", "delete", "v99", "-s", name],
        vec!["restore", "-s", name, "v99"],
    ] {
        let out = cli_error(d, &args);
        assert!(
            out.stderr_str().contains("v99"),
            "`bothy {}` names the missing checkpoint: {}",
            args.join(" "),
            out.stderr_str()
        );
    }
    assert_eq!(
        checkpoints(d, name, true),
        before,
        "failed commands change no checkpoint"
    );
    assert_eq!(
        manifest(d, name, WATCHED),
        damaged,
        "failed commands leave the disk alone"
    );

    // Delete (and its `rm` alias).
    let deleted = d
        .cli(&["checkpoint", "delete", &kept, "-s", name, "--json"])
        .run()
        .assert_success("checkpoint delete --json")
        .json();
    assert_eq!(deleted["deleted"], kept.as_str());
    d.cli(&["checkpoint", "rm", &kept2, "-s", name])
        .run()
        .assert_success("checkpoint rm");
    assert_eq!(ids(&checkpoints(d, name, true)), vec![v1.clone()]);
    let gone = cli_error(d, &["checkpoint", "info", &kept, "-s", name]);
    assert!(gone.stderr_str().contains(&kept), "{}", gone.stderr_str());

    // What is left still restores.
    restore(d, name, &v1);
    assert_eq!(manifest(d, name, WATCHED), good);

    d.cli(&["destroy", name, "--force"])
        .run()
        .assert_success("destroy");
}

#[test]
fn fork_from_a_checkpoint_is_an_independent_box() {
    let d = shared();
    let (origin, copy) = ("fork-origin", "fork-copy");
    d.create(origin);
    write_files(d, origin);
    let at_checkpoint = manifest(d, origin, &["root"]);
    let v1 = checkpoint(d, origin, Some("fork me"));
    // Written after the checkpoint: the fork must not have it.
    d.sh(origin, "echo later > /root/after-checkpoint && sync -f /");

    let from = format!("{origin}@{v1}");
    d.cli(&["create", copy, "--from", &from, "--skip-console"])
        .timeout(storage::CHECKPOINT_TIMEOUT)
        .run()
        .assert_success("fork");
    assert_eq!(
        manifest(d, copy, &["root"]),
        at_checkpoint,
        "the fork has the checkpoint's files, and only those"
    );
    assert!(
        checkpoints(d, copy, true).is_empty(),
        "a fork starts without checkpoints of its own"
    );

    d.sh(copy, "echo in-copy > /root/only-copy && sync -f /");
    d.sh(origin, "echo in-origin > /root/only-origin && sync -f /");
    let exists = |name: &str, path: &str| {
        d.sh(name, &format!("test -e {path} && echo yes || echo no")) == "yes\n"
    };
    assert!(exists(copy, "/root/only-copy"));
    assert!(
        !exists(origin, "/root/only-copy"),
        "the origin does not see the fork's writes"
    );
    assert!(exists(origin, "/root/only-origin"));
    assert!(
        !exists(copy, "/root/only-origin"),
        "the fork does not see the origin's writes"
    );
    d.sh(copy, "rm -rf /root/data && sync -f /");
    assert_eq!(
        d.sh(origin, "cat /root/data/hello.txt"),
        "hello\n",
        "deleting in the fork leaves the origin alone"
    );

    // Bad fork sources fail and make no box.
    for (bad, why) in [
        (format!("{origin}@v99"), "v99"),
        (format!("{origin}@x"), "x"),
        ("no-such-box@v1".to_string(), "no-such-box"),
    ] {
        let out = cli_error(d, &["create", "fork-bad", "--from", &bad, "--skip-console"]);
        assert!(
            out.stderr_str().contains(why),
            "fork from {bad} says what is wrong: {}",
            out.stderr_str()
        );
        assert!(
            !d.names().contains(&"fork-bad".to_string()),
            "a failed fork from {bad} leaves no box"
        );
    }

    for name in [origin, copy] {
        d.cli(&["destroy", name, "--force"])
            .run()
            .assert_success("destroy");
    }
}

#[test]
fn bothy_env_inside_the_box() {
    let d = shared();
    let name = "cp-env";
    d.create(name);
    d.sh(name, "echo before > /root/state && sync -f /");

    let made = d
        .exec(
            name,
            &[
                "bothy-env",
                "--json",
                "checkpoints",
                "create",
                "--comment",
                "from inside",
            ],
        )
        .assert_success("bothy-env checkpoints create");
    let made: serde_json::Value = serde_json::from_slice(&made.stdout)
        .unwrap_or_else(|e| panic!("bothy-env --json prints JSON ({e}): {}", made.stdout_str()));
    let id = made["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(id, "v1", "{made}");

    let listed = d.sh(name, "bothy-env checkpoints list");
    assert!(
        listed.contains(&id) && listed.contains("from inside"),
        "bothy-env lists the checkpoint: {listed}"
    );
    let from_outside = checkpoints(d, name, false);
    assert_eq!(ids(&from_outside), vec![id.clone()]);
    assert_eq!(from_outside[0]["comment"], "from inside");

    // Not root in the box: refused, and nothing is made.
    for cmd in [
        "bothy-env checkpoints list",
        "bothy-env checkpoints create",
        "bothy-env checkpoints restore v1",
    ] {
        let out = d.exec(name, &["su", "nobody", "-s", "/bin/sh", "-c", cmd]);
        assert_ne!(
            out.code,
            0,
            "`{cmd}` as nobody is refused: {}",
            out.stdout_str()
        );
        assert!(
            out.stderr_str().contains("root"),
            "the refusal says why: {}",
            out.stderr_str()
        );
    }
    assert_eq!(ids(&checkpoints(d, name, true)), vec![id.clone()]);

    // Bad ids from inside: an error, and the box keeps running.
    for bad in ["v0", "x", "v99"] {
        let out = d.exec(name, &["bothy-env", "checkpoints", "restore", bad]);
        assert_eq!(
            out.code,
            1,
            "restore {bad} from inside fails: {}",
            out.stderr_str()
        );
        assert!(out.stderr_str().contains(bad), "{}", out.stderr_str());
    }
    assert_eq!(d.sh(name, "cat /root/state"), "before\n");

    d.sh(name, "echo after > /root/state && sync -f /");
    let since = storage::now_ms();
    // The restore stops the box, which ends this very exec.
    let out = d
        .exec(name, &["bothy-env", "checkpoints", "restore", &id])
        .stderr_str();
    assert!(out.contains(&id), "bothy-env says what it does: {out}");
    storage::wait_booted_since(d, name, since);
    assert_eq!(
        d.sh(name, "cat /root/state"),
        "before\n",
        "the box came back with the checkpoint's disk"
    );
    let all = checkpoints(d, name, true);
    assert_eq!(all.len(), 2, "the replaced state is kept: {all:?}");
    assert_eq!(all[1]["auto"], true);
    let listed = d.sh(name, "bothy-env checkpoints list --include-auto");
    assert!(listed.contains("auto"), "{listed}");

    d.cli(&["destroy", name, "--force"])
        .run()
        .assert_success("destroy");
}

/// Real work on the disk: a large tree of small files, a git repository and
/// its clone, packages from the Debian mirror. Needs the mirror from inside
/// the box, as durability.rs's apt test does.
#[test]
fn real_workload_survives_damage_and_restore() {
    let d = shared();
    let name = "cp-work";
    d.create(name);
    let apt = d
        .cli(&[
            "exec",
            "-s",
            name,
            "--env",
            "DEBIAN_FRONTEND=noninteractive",
            "--",
            "sh",
            "-c",
            "apt-get update -q && apt-get install -y -q jq",
        ])
        .timeout(Duration::from_secs(600))
        .run();
    assert_eq!(
        apt.code,
        0,
        "apt-get inside the box\nstdout: {}\nstderr: {}",
        apt.stdout_str(),
        apt.stderr_str()
    );
    d.sh(
        name,
        "set -e; cd / && tar -cf /tmp/usr.tar usr/lib/python3* \
         && mkdir -p /root/tree && tar -C /root/tree -xf /tmp/usr.tar && rm /tmp/usr.tar \
         && mkdir /root/repo && cd /root/repo && git init -q -b main \
         && git config user.email t@example.invalid && git config user.name t \
         && for i in 1 2 3 4 5; do head -c 100000 /dev/urandom | base64 > f$i; git add f$i; git commit -q -m c$i; done \
         && git clone -q /root/repo /root/clone && sync -f /",
    );
    let files: usize = d
        .sh(name, "find /root/tree -type f | wc -l")
        .trim()
        .parse()
        .unwrap_or_default();
    assert!(files > 1000, "the tree is large: {files} files");
    let dirs = ["root/tree", "root/repo", "root/clone", "usr/bin"];
    let good = manifest(d, name, &dirs);
    let log = d.sh(name, "git -C /root/clone log --format=%H%x20%s");
    assert_eq!(log.lines().count(), 5, "{log}");
    let jq = d.sh(name, "jq --version");

    let v1 = checkpoint(d, name, Some("workload"));
    d.sh(
        name,
        "rm -rf /root/tree /root/clone/.git && dpkg --purge jq >/dev/null \
         && echo junk >> /root/repo/f1 && sync -f /",
    );
    assert_ne!(d.exec(name, &["jq", "--version"]).code, 0, "jq is gone");

    restore(d, name, &v1);
    assert_eq!(
        manifest(d, name, &dirs),
        good,
        "every file of the workload is back"
    );
    assert_eq!(d.sh(name, "jq --version"), jq, "the package is back");
    assert_eq!(d.sh(name, "echo '{\"a\":[1,2]}' | jq -c .a"), "[1,2]\n");
    assert_eq!(d.sh(name, "git -C /root/clone log --format=%H%x20%s"), log);
    d.sh(
        name,
        "git -C /root/clone fsck --strict && git -C /root/repo fsck --strict",
    );
    d.sh(name, "dpkg --audit && dpkg -s jq >/dev/null");

    d.cli(&["destroy", name, "--force"])
        .run()
        .assert_success("destroy");
}

fn count_gc_objects(d: &Daemon) -> usize {
    chunk_objects(d).len()
}

/// Deleting checkpoints and boxes frees exactly the chunks nothing else uses.
#[test]
fn gc_frees_chunks_only_when_no_checkpoint_needs_them() {
    let d = Daemon::start();
    // The base image's chunks are still being uploaded after start.
    let baseline = storage::settled_chunk_objects(&d, Duration::from_secs(3));
    assert!(
        !baseline.is_empty(),
        "the base image's chunks are in the object store"
    );
    let name = "gc";
    d.create(name);

    // 64 chunks of random data: none of them exist anywhere else.
    const DATA_CHUNKS: usize = 64;
    d.sh(name, "head -c 64M /dev/urandom > /root/big && sync -f /");
    let written = wait_until(
        "the written chunks to reach the object store",
        Duration::from_secs(120),
        || {
            let n = count_gc_objects(&d);
            if n >= baseline.len() + DATA_CHUNKS {
                Ok(n)
            } else {
                Err(format!("{n} objects, baseline {}", baseline.len()))
            }
        },
    );

    let v1 = checkpoint(&d, name, Some("holds the data"));
    // Every chunk of v1 is in the object store after the barrier: what the
    // collection below must keep.
    d.cli(&["sync", "-s", name])
        .run()
        .assert_success("sync before the collection");
    let synced = chunk_objects(&d).difference(&baseline).count();
    assert!(
        synced >= DATA_CHUNKS,
        "{synced} objects beyond the baseline after the barrier"
    );
    d.sh(name, "rm /root/big && sync -f /");
    // A GC run with the data gone from the live disk: a throwaway checkpoint
    // deleted triggers one.
    let before = storage::gc_runs(&d);
    let v2 = checkpoint(&d, name, None);
    d.cli(&["checkpoint", "delete", &v2, "-s", name])
        .run()
        .assert_success("delete v2");
    wait_gc_after(&d, before);
    // Counted apart from the baseline: garbage the image import left in it
    // may be collected by now, which says nothing about the data.
    let kept_set = chunk_objects(&d);
    let kept = kept_set.len();
    let new_kept = kept_set.difference(&baseline).count();
    assert!(
        new_kept >= DATA_CHUNKS,
        "while {v1} exists its chunks stay: {new_kept} objects beyond the baseline's {}, {written} after the write",
        baseline.len()
    );
    // The data still reads back from the checkpoint.
    let fork = "gc-fork";
    d.cli(&[
        "create",
        fork,
        "--from",
        &format!("{name}@{v1}"),
        "--skip-console",
    ])
    .run()
    .assert_success("fork");
    let size = d.sh(
        fork,
        "dd if=/root/big of=/dev/null bs=1M iflag=direct 2>&1 | tail -n 1",
    );
    assert!(size.contains("67108864 bytes"), "{size}");
    d.cli(&["destroy", fork, "--force"])
        .run()
        .assert_success("destroy the fork");

    // Without the checkpoint the data's chunks go.
    d.cli(&["checkpoint", "delete", &v1, "-s", name])
        .run()
        .assert_success("delete v1");
    // Counted as objects gone from the set seen while v1 existed: the fork
    // and the box keep adding chunks of their own meanwhile.
    wait_until(
        "the data's chunks to be collected",
        Duration::from_secs(120),
        || {
            let gone = kept_set.difference(&chunk_objects(&d)).count();
            if gone >= DATA_CHUNKS {
                Ok(())
            } else {
                Err(format!(
                    "{gone} of the {kept} objects seen while the checkpoint existed are gone"
                ))
            }
        },
    );

    d.cli(&["destroy", name, "--force"])
        .run()
        .assert_success("destroy");
    let last = wait_until(
        "the object store to come back to the base image",
        Duration::from_secs(120),
        || {
            let now = chunk_objects(&d);
            if now.len() <= baseline.len() {
                Ok(now)
            } else {
                Err(format!(
                    "{} objects, baseline {}",
                    now.len(),
                    baseline.len()
                ))
            }
        },
    );
    let lost: BTreeSet<_> = baseline.difference(&last).collect();
    assert!(
        lost.is_empty(),
        "GC deleted chunks of the base image: {lost:?}"
    );
    assert_eq!(last, baseline, "exactly the base image's chunks are left");
}

/// A fork shares its origin's chunks; destroying the origin (and with it the
/// checkpoint the fork came from) must not free them.
#[test]
fn fork_outlives_its_origin() {
    let d = Daemon::start();
    let (origin, copy) = ("gc-origin", "gc-copy");
    d.create(origin);
    d.sh(origin, "head -c 8M /dev/urandom > /root/f && sync -f /");
    let sum = d.sh(origin, "sha256sum < /root/f");
    let v1 = checkpoint(&d, origin, None);
    d.cli(&[
        "create",
        copy,
        "--from",
        &format!("{origin}@{v1}"),
        "--skip-console",
    ])
    .run()
    .assert_success("fork");
    let before = storage::gc_runs(&d);
    d.cli(&["destroy", origin, "--force"])
        .run()
        .assert_success("destroy the origin");
    wait_gc_after(&d, before);
    // Direct reads go past the box's page cache to the disk's chunks.
    assert_eq!(
        d.sh(
            copy,
            "dd if=/root/f bs=1M iflag=direct 2>/dev/null | sha256sum"
        ),
        sum,
        "the fork reads its data after its origin and the origin's checkpoints are gone"
    );
    storage::assert_fsck_clean(&d, copy, "fork after GC");
}

#[test]
fn api_times_parse() {
    use storage::parse_time_ms;
    assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_time_ms("1970-01-01T00:00:01.5Z"), Some(1500));
    assert_eq!(parse_time_ms("1970-01-02T00:00:00.010Z"), Some(86_400_010));
    assert_eq!(parse_time_ms("2000-03-01T00:00:00Z"), Some(951_868_800_000));
    assert_eq!(
        parse_time_ms("2026-11-29T16:31:05.01Z"),
        Some(1_795_969_865_010)
    );
    assert_eq!(parse_time_ms("garbage"), None);
    assert!(storage::is_checkpoint_id("v12"));
    for bad in ["v0", "v01", "x", "v", "V1"] {
        assert!(!storage::is_checkpoint_id(bad), "{bad}");
    }
}
