//! The host disk under the data dir (and the local object store on it)
//! fills up: the box that fills it gets ENOSPC, not an I/O error; its ext4
//! stays writable and clean; the daemon and the other box keep working and
//! keep what they acknowledged; and once the box deletes what it wrote, it
//! writes again.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::wait::wait_until;
use common::{storage, Daemon};

/// A small ext4 on a loop device of the test's own, mounted for the
/// daemon's data dir; unmounted when dropped (after the daemon).
struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn new(bytes: u64) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bothy-small-disk-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temp dir: {e}"));
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(bytes))
            .unwrap_or_else(|e| panic!("cannot make {image:?}: {e}"));
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap_or_else(|e| panic!("cannot make {mount:?}: {e}"));
        run("mkfs.ext4", &["-q", "-F", path(&image)]);
        run("mount", &["-o", "loop", path(&image), path(&mount)]);
        SmallDisk { _dir: dir, mount }
    }

    fn avail(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.mount)
            .output()
            .unwrap_or_else(|e| panic!("df: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df said {text:?}"))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let clean = Command::new("umount").arg(&self.mount).status();
        if !clean.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the box's root is mounted read-write (ext4 goes read-only when
/// it takes an I/O error).
fn root_is_writable(d: &Daemon, name: &str) -> bool {
    let mounts = d.sh(name, "grep ' / ' /proc/mounts");
    mounts
        .split_whitespace()
        .nth(3)
        .is_some_and(|o| o.split(',').any(|f| f == "rw"))
}

#[test]
fn a_full_host_disk_is_enospc_in_the_box_and_deleting_gives_room_back() {
    const GIB: u64 = 1 << 30;
    let disk = SmallDisk::new(2 * GIB);
    // A small cache budget, so clean chunks go and the disk fills with
    // what only the box holds.
    let d = Daemon::start_in(
        disk.mount.join("data"),
        vec!["--cache-size".into(), "64M".into()],
    );
    d.create("filler");
    d.create("neighbour");
    d.sh("neighbour", "echo kept > /kept && sync /kept");

    // More than the whole host disk: the write must stop with ENOSPC.
    let out = d.exec(
        "filler",
        &[
            "sh",
            "-c",
            "dd if=/dev/urandom of=/big bs=1M count=3000 conv=fsync 2>&1; echo rc=$?",
        ],
    );
    let said = out.stdout_str();
    assert!(
        said.contains("No space left on device") && !said.contains("rc=0"),
        "filling the host disk must end in ENOSPC in the box: {said}\n{}",
        out.stderr_str()
    );
    assert!(!said.contains("Input/output error"), "{said}");
    let written: u64 = d
        .sh("filler", "stat -c %s /big")
        .trim()
        .parse()
        .expect("size of /big");
    assert!(written > GIB / 2, "the box got most of the disk: {written}");
    assert!(disk.avail() > 0, "the host disk itself never fills");

    // The box, its neighbour and the daemon keep working.
    assert!(
        root_is_writable(&d, "filler"),
        "the filler's ext4 stays writable"
    );
    assert!(root_is_writable(&d, "neighbour"));
    assert_eq!(d.sh("neighbour", "cat /kept").trim(), "kept");
    let listed = d.api("GET", "/v1/sprites");
    assert_eq!(listed.status, 200, "{}", listed.text());
    storage::assert_fsck_clean(&d, "filler", "on a full host disk");

    // Deleting gives the room back (the disk is mounted with discard; the
    // chunks are freed by a collection the daemon starts while short).
    d.sh("filler", "rm /big && sync");
    let sum = wait_until(
        "the box to write again after deleting",
        Duration::from_secs(180),
        || {
            let out = d.exec(
            "filler",
            &[
                "sh",
                "-c",
                "dd if=/dev/urandom of=/again bs=1M count=200 conv=fsync 2>&1 && md5sum /again || { rm -f /again; exit 1; }",
            ],
        );
            if out.code == 0 {
                Ok(out
                    .stdout_str()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_string())
            } else {
                Err(out.stdout_str())
            }
        },
    );
    storage::assert_fsck_clean(&d, "filler", "after deleting and writing again");
    storage::assert_fsck_clean(&d, "neighbour", "after the host disk was full");

    // What both boxes acknowledged survives a restart of the daemon.
    assert_eq!(d.stop(), 0, "the daemon stops cleanly");
    d.spawn();
    d.wait_running("filler");
    d.wait_running("neighbour");
    assert_eq!(d.sh("filler", "md5sum /again").trim(), sum.trim());
    assert_eq!(d.sh("neighbour", "cat /kept").trim(), "kept");
    drop(d);
    drop(disk);
}
