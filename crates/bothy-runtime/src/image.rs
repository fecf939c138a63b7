//! The Debian base image, built once per host with mmdebstrap.
//!
//! The image is an ext4 filesystem image (a sparse file of
//! [`DEFAULT_DISK_BYTES`]). Each daemon imports it once into its volume
//! storage as a checkpointed volume; every box's disk is a metadata-only clone
//! of that checkpoint.
//!
//! Ownership: boxes run in a user namespace that maps box uid/gid 0..65535 to
//! host 100000..165535 ([`crate::UID_SHIFT`]). Rather than idmapping the mount
//! at every start (util-linux here cannot, and it would cost time), the tree is
//! shifted by +100000 once, before `mkfs.ext4 -d` copies it into the image, so
//! the files on disk carry the host ids that box root sees as its own. Files a
//! box creates later are written with the same mapping, so the disk stays
//! consistent.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::host;
use crate::RuntimeError;

/// Where `bothy image build` puts the base image and every daemon finds it.
pub const DEFAULT_IMAGE_DIR: &str = "/var/lib/bothy-images";

/// Bumped whenever the image contents or layout change; a new version is
/// built next to the old one.
pub const IMAGE_VERSION: &str = "bookworm-2";

/// Size of the image's filesystem, and so of every box's disk unless its
/// spec says otherwise. The file is sparse: unwritten space costs nothing.
pub const DEFAULT_DISK_BYTES: u64 = 100 << 30;

/// Packages on top of mmdebstrap's minbase: what a person or a coding agent
/// expects in a fresh shell, kept small so the build stays fast.
const PACKAGES: &[&str] = &[
    "ca-certificates",
    "procps",
    "iproute2",
    "iputils-ping",
    "curl",
    "less",
    "nano",
    "git",
    "python3",
    "sudo",
];

/// Translations and package docs are a quarter of the image and every box's
/// disk is a copy of it, so they are left out (as "minimized" cloud images
/// do); copyright files and man pages stay. The rules land in the image's
/// /etc/dpkg/dpkg.cfg.d, so packages installed later in a box follow them.
const DPKG_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
];

/// The nameserver every box uses: pasta answers on it and forwards to the
/// host's first resolver (see the network module).
pub(crate) const BOX_DNS: &str = crate::network::DNS_ADDR;

/// Progress of an image build, for a progress bar or a log.
#[derive(Debug, Clone)]
pub enum BuildProgress {
    Step { n: u32, of: u32, what: String },
    Line(String),
}

fn image_path(dir: &Path) -> PathBuf {
    dir.join(format!("base-{IMAGE_VERSION}.ext4"))
}

fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(format!("base-{IMAGE_VERSION}.json"))
}

/// The base image in `dir`, if it has been built. The image only appears
/// under its final name once complete (it is renamed into place).
pub fn find_base(dir: &Path) -> Option<PathBuf> {
    let path = image_path(dir);
    path.is_file().then_some(path)
}

/// Builds the base image into `dir` unless it is already there.
pub async fn build(
    dir: &Path,
    progress: &(dyn Fn(BuildProgress) + Send + Sync),
) -> Result<PathBuf, RuntimeError> {
    build_with(dir, false, progress).await
}

/// Builds the base image into `dir`; with `force`, rebuilds it even if it is
/// present (replacing it atomically: boxes already created keep their copy).
pub async fn build_with(
    dir: &Path,
    force: bool,
    progress: &(dyn Fn(BuildProgress) + Send + Sync),
) -> Result<PathBuf, RuntimeError> {
    if !force {
        if let Some(existing) = find_base(dir) {
            progress(BuildProgress::Line(format!(
                "base image already built: {}",
                existing.display()
            )));
            return Ok(existing);
        }
    }
    host::require(&[host::MMDEBSTRAP, host::MKFS_EXT4])?;
    std::fs::create_dir_all(dir).map_err(|e| {
        RuntimeError::Failed(format!("cannot create image dir {}: {e}", dir.display()))
    })?;

    // One build at a time per dir (held until this function returns).
    let lock_file = std::fs::File::create(dir.join(".build.lock"))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| {
            RuntimeError::Failed(format!(
                "another image build is running in {} ({e}): wait for it to finish",
                dir.display()
            ))
        })?;
    // The work dir sits next to the result so the final rename stays on one
    // filesystem.
    let work = dir.join(".build");
    remove_tree(&work).await?;
    std::fs::create_dir_all(&work)?;
    let tree = work.join("tree");
    let tmp_image = work.join("image.ext4");
    let steps = 4;
    let step = |n: u32, what: &str| {
        progress(BuildProgress::Step {
            n,
            of: steps,
            what: what.to_string(),
        })
    };

    step(1, "debootstrap Debian bookworm (mmdebstrap)");
    mmdebstrap(&tree, progress).await?;

    step(2, "configure the tree");
    configure_tree(&tree)?;
    let shift_root = tree.clone();
    tokio::task::spawn_blocking(move || shift_ownership(&shift_root, crate::UID_SHIFT))
        .await
        .map_err(|e| RuntimeError::Failed(format!("ownership shift panicked: {e}")))??;

    step(3, "make the ext4 image");
    make_ext4(&tree, &tmp_image).await?;

    step(4, "install the image");
    let final_path = image_path(dir);
    std::fs::File::open(&tmp_image)?.sync_all()?;
    std::fs::rename(&tmp_image, &final_path)?;
    let manifest = serde_json::json!({
        "version": IMAGE_VERSION,
        "suite": "bookworm",
        "variant": "minbase",
        "packages": PACKAGES,
        "uid_shift": crate::UID_SHIFT,
        "disk_bytes": DEFAULT_DISK_BYTES,
    });
    crate::fsutil::write_atomic(&manifest_path(dir), manifest.to_string().as_bytes(), 0o644)?;
    crate::fsutil::sync_dir(dir)?;
    remove_tree(&work).await?;
    remove_other_versions(dir);
    progress(BuildProgress::Line(format!(
        "built {}",
        final_path.display()
    )));
    Ok(final_path)
}

/// Older images are no longer used: every box has its own copy.
fn remove_other_versions(dir: &Path) {
    let current = [image_path(dir), manifest_path(dir)];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_image =
            name.starts_with("base-") && (name.ends_with(".ext4") || name.ends_with(".json"));
        if is_image && !current.contains(&path) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

async fn remove_tree(path: &Path) -> Result<(), RuntimeError> {
    if path.exists() {
        let owned = path.to_path_buf();
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(owned))
            .await
            .map_err(|e| RuntimeError::Failed(format!("cleanup panicked: {e}")))??;
    }
    Ok(())
}

/// The host's apt sources, passed to mmdebstrap so the image uses the same
/// mirror (and snapshot, if pinned) as the host.
fn host_apt_sources() -> Vec<PathBuf> {
    let mut sources = Vec::new();
    let list = PathBuf::from("/etc/apt/sources.list");
    if std::fs::metadata(&list).is_ok_and(|m| m.len() > 0) {
        sources.push(list);
    }
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut extra: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|ext| ext == "list" || ext == "sources")
            })
            .collect();
        extra.sort();
        sources.extend(extra);
    }
    sources
}

async fn forward_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send(line).is_err() {
            break;
        }
    }
}

async fn mmdebstrap(
    tree: &Path,
    progress: &(dyn Fn(BuildProgress) + Send + Sync),
) -> Result<(), RuntimeError> {
    let mut cmd = host::command(&host::MMDEBSTRAP);
    cmd.arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .args(DPKG_EXCLUDES.iter().map(|rule| format!("--dpkgopt={rule}")))
        .arg("bookworm")
        .arg(tree)
        .args(host_apt_sources())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        RuntimeError::HostNotReady(format!(
            "cannot run mmdebstrap (apt-get install mmdebstrap): {e}"
        ))
    })?;
    // Both streams feed one channel so lines reach the caller in order.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(err, tx.clone()));
    }
    drop(tx);
    let mut tail: Vec<String> = Vec::new();
    while let Some(line) = rx.recv().await {
        if tail.len() == 20 {
            tail.remove(0);
        }
        tail.push(line.clone());
        progress(BuildProgress::Line(line));
    }
    let status = child.wait().await?;
    if status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Failed(format!(
            "mmdebstrap failed ({status}); last output:\n{}",
            tail.join("\n")
        )))
    }
}

/// Files mmdebstrap leaves to us: name resolution, and the mount point of the
/// bothy binary.
fn configure_tree(tree: &Path) -> Result<(), RuntimeError> {
    let etc = tree.join("etc");
    let write = |name: &str, text: String| -> Result<(), RuntimeError> {
        let path = etc.join(name);
        // mmdebstrap copies the host's resolv.conf, possibly as a symlink.
        if path.symlink_metadata().is_ok() {
            std::fs::remove_file(&path)?;
        }
        std::fs::write(&path, text)?;
        Ok(())
    };
    write("hosts", crate::etc::hosts_file("", "bothy"))?;
    write("hostname", "bothy\n".to_string())?;
    write("resolv.conf", format!("nameserver {BOX_DNS}\n"))?;
    std::fs::create_dir_all(tree.join(bothy_api::inbox::DIR.trim_start_matches('/')))?;
    Ok(())
}

/// Adds `shift` to the owner and group of every file under `root`, keeping
/// what chown(2) would drop: setuid/setgid bits and file capabilities.
fn shift_ownership(root: &Path, shift: u32) -> Result<(), RuntimeError> {
    let mut stack = vec![root.to_path_buf()];
    // Hard links share one inode: shift it once.
    let mut seen = std::collections::HashSet::new();
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if !meta.is_dir() && meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        if meta.uid() >= crate::ID_RANGE || meta.gid() >= crate::ID_RANGE {
            return Err(RuntimeError::Failed(format!(
                "{} is owned by {}:{}, outside the box's id range 0..{}",
                path.display(),
                meta.uid(),
                meta.gid(),
                crate::ID_RANGE
            )));
        }
        let caps = if meta.file_type().is_file() {
            crate::fsutil::get_xattr(&path, "security.capability")?
        } else {
            None
        };
        std::os::unix::fs::lchown(&path, Some(meta.uid() + shift), Some(meta.gid() + shift))?;
        if !meta.file_type().is_symlink() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        if let Some(caps) = caps {
            crate::fsutil::set_xattr(&path, "security.capability", &caps)?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

async fn make_ext4(tree: &Path, image: &Path) -> Result<(), RuntimeError> {
    let file = std::fs::File::create(image)?;
    file.set_len(DEFAULT_DISK_BYTES)?;
    drop(file);
    let shift = crate::UID_SHIFT;
    host::run(
        host::command(&host::MKFS_EXT4)
            .args(["-F", "-q", "-L", "bothy-root", "-m", "0"])
            .arg("-E")
            .arg(format!(
                "lazy_itable_init=1,lazy_journal_init=1,root_owner={shift}:{shift}"
            ))
            .arg("-d")
            .arg(tree)
            .arg(image),
    )
    .await?;
    Ok(())
}
