//! What a daemon may leave on the host, found by looking at the host itself:
//! processes, mounts, loop devices, cgroups and crun containers that belong to one
//! data dir. Used to assert a clean shutdown and, after a failed test, to clean up.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Everything host-wide that belongs to the daemon of `data_dir`.
pub struct Footprint {
    /// Canonical data dir, as it appears in mount tables and backing-file names.
    pub data_dir: PathBuf,
    /// The daemon's instance id (first 8 hex digits of BLAKE3 of the canonical
    /// data dir), which names its cgroups and container ids.
    pub instance: String,
}

impl Footprint {
    pub fn new(canonical_data_dir: &Path) -> Self {
        let hash = blake3::hash(canonical_data_dir.as_os_str().as_encoded_bytes());
        Self {
            data_dir: canonical_data_dir.to_path_buf(),
            instance: hash.to_hex()[..8].to_string(),
        }
    }

    fn tag(&self) -> String {
        format!("bothy-{}", self.instance)
    }

    /// Pids (other than this test process) whose command line names the data dir
    /// or the instance, or that live in one of the instance's cgroups.
    pub fn processes(&self) -> Vec<(i32, String)> {
        let me = std::process::id() as i32;
        let dir = self.data_dir.to_string_lossy().into_owned();
        let tag = self.tag();
        let mut found = Vec::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let cmdline = fs::read(entry.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let cgroup = fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            if cmdline.contains(&dir) || cmdline.contains(&tag) || cgroup.contains(&tag) {
                found.push((pid, cmdline.trim().to_string()));
            }
        }
        found
    }

    /// Mount points at or under the data dir, the daemon's mount dir
    /// (`/run/bothy/<instance>`, where box disks are mounted) or its roots
    /// dir (`/run/bothy/<instance>.roots`, the boxes' idmapped roots),
    /// deepest first.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let mount_dir = Path::new("/run/bothy").join(&self.instance);
        let roots_dir = Path::new("/run/bothy").join(format!("{}.roots", self.instance));
        let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut found: Vec<PathBuf> = table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| PathBuf::from(unescape_mount_path(p)))
            .filter(|p| {
                p.starts_with(&self.data_dir)
                    || p.starts_with(&mount_dir)
                    || p.starts_with(&roots_dir)
            })
            .collect();
        found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        found.dedup();
        found
    }

    /// Loop devices whose backing file is under the data dir or the
    /// instance's mount dir (where box disks are served over FUSE).
    pub fn loop_devices(&self) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(entries) = fs::read_dir("/sys/block") else {
            return found;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                continue;
            }
            let backing =
                fs::read_to_string(entry.path().join("loop/backing_file")).unwrap_or_default();
            let backing = Path::new(backing.trim().trim_end_matches(" (deleted)"));
            let mount_dir = Path::new("/run/bothy").join(&self.instance);
            if backing.starts_with(&self.data_dir) || backing.starts_with(&mount_dir) {
                found.push(format!("/dev/{name} -> {}", backing.display()));
            }
        }
        found
    }

    /// Cgroup directories named after the instance, in any hierarchy, deepest first.
    pub fn cgroups(&self) -> Vec<PathBuf> {
        let tag = self.tag();
        let mut found = Vec::new();
        collect_cgroups(Path::new("/sys/fs/cgroup"), &tag, 0, false, &mut found);
        found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        found
    }

    /// Containers of the instance known to crun, as (crun root, id).
    pub fn containers(&self) -> Vec<(PathBuf, String)> {
        let tag = self.tag();
        let mut roots = vec![PathBuf::from("/run/crun")];
        collect_crun_roots(&self.data_dir, 0, &mut roots);
        let mut found = Vec::new();
        for root in roots {
            if !root.is_dir() {
                continue;
            }
            let Ok(out) = Command::new("crun")
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output()
            else {
                continue;
            };
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let id = id.trim();
                if id.contains(&tag) || (root.starts_with(&self.data_dir) && !id.is_empty()) {
                    found.push((root.clone(), id.to_string()));
                }
            }
        }
        found
    }

    /// Human-readable list of everything left behind; empty when clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(
            self.processes()
                .into_iter()
                .map(|(pid, cmd)| format!("process {pid}: {cmd}")),
        );
        out.extend(
            self.mounts()
                .into_iter()
                .map(|m| format!("mount {}", m.display())),
        );
        out.extend(self.loop_devices().into_iter().map(|l| format!("loop {l}")));
        out.extend(
            self.cgroups()
                .into_iter()
                .map(|c| format!("cgroup {}", c.display())),
        );
        out.extend(
            self.containers()
                .into_iter()
                .map(|(root, id)| format!("crun container {id} (root {})", root.display())),
        );
        out
    }

    /// Removes whatever is left, best effort, in dependency order. Returns true if
    /// no mount is left under the data dir (so deleting it cannot reach through
    /// a mount into a box's disk).
    pub fn force_cleanup(&self) -> bool {
        for (root, id) in self.containers() {
            let _ = Command::new("crun")
                .arg("--root")
                .arg(&root)
                .args(["delete", "-f", &id])
                .output();
        }
        for (pid, _) in self.processes() {
            // SAFETY: kill(2) with a pid read from /proc and a valid signal number
            // has no memory-safety preconditions; a pid that has exited since is
            // reported as ESRCH and ignored.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.processes().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for m in self.mounts() {
            let _ = Command::new("umount").arg("-l").arg(&m).output();
        }
        for l in self.loop_devices() {
            if let Some(dev) = l.split(' ').next() {
                let _ = Command::new("losetup").args(["-d", dev]).output();
            }
        }
        for c in self.cgroups() {
            let _ = fs::remove_dir(&c);
        }
        self.mounts().is_empty()
    }
}

fn collect_cgroups(dir: &Path, tag: &str, depth: u32, inside: bool, out: &mut Vec<PathBuf>) {
    // Hierarchy roots are at depth 1 (/sys/fs/cgroup/memory) or 0 (pure v2); an
    // instance's cgroups sit a few levels below at most.
    if depth > 5 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let path = entry.path();
        let ours = inside || entry.file_name().to_string_lossy().contains(tag);
        if ours {
            out.push(path.clone());
        }
        if ours || depth < 3 {
            collect_cgroups(&path, tag, depth + 1, ours, out);
        }
    }
}

fn collect_crun_roots(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    if depth > 2 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with("crun") {
            out.push(path);
        } else if entry.file_name() != "rootfs" {
            collect_crun_roots(&path, depth + 1, out);
        }
    }
}

/// /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
