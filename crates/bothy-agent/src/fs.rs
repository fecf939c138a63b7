//! The fs API's operations, done by the agent inside the box.
//!
//! The agent is pid 1 of the box, in the box's mount namespace, with the
//! box's root as its root and the box's root user as its user: plain path
//! calls here resolve every `..`, absolute symlink and `/proc/<pid>/root`
//! link against the box's own tree, exactly as a root shell in the box
//! would. Nothing of the host is reachable by name from here, so no path
//! check is needed for containment; the checks below are about well-formed
//! input and bounded work.
//!
//! Writes go to a temporary file in the target's directory and are renamed
//! over the target once all bytes arrived and were fsynced: a write that
//! fails or is cut off leaves the old file as it was.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::proto::{
    encode_data, Frame, FrameReader, FsCode, FsEntry, FsError, FsOwner, FsReply, FsRequest, Reply,
};

/// Longest path accepted (the kernel's PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Most entries one listing returns: beyond this, list a narrower path.
pub const MAX_LIST_ENTRIES: usize = 100_000;
/// Bytes of file data per frame: big enough to keep syscalls few, small
/// enough that the socket buffer, not memory, holds what is in flight.
const CHUNK: usize = 256 << 10;
/// Entries' estimated JSON per `entries` reply, well under a frame.
const ENTRIES_PER_REPLY_BYTES: usize = 256 << 10;
/// A write whose client sends nothing for this long is abandoned.
const WRITE_IDLE: Duration = Duration::from_secs(120);
/// Symlinks followed when resolving a write's target (the kernel's limit).
const MAX_LINKS: usize = 40;
/// The mark of a write's temporary file (its name also carries the
/// target's and a random part); watches leave these out.
pub(crate) const TEMP_MARK: &str = ".bothy-upload-";

type Result<T> = std::result::Result<T, FsError>;

/// Serves one fs request on its connection.
pub(crate) async fn serve(
    req: FsRequest,
    frames: FrameReader<OwnedReadHalf>,
    mut wr: OwnedWriteHalf,
) {
    let reply = match req {
        FsRequest::Read { path, working_dir } => return read(&working_dir, &path, wr).await,
        FsRequest::Write {
            path,
            working_dir,
            mode,
            mkdir_parents,
        } => return write(&working_dir, &path, mode, mkdir_parents, frames, wr).await,
        FsRequest::Watch {
            paths,
            working_dir,
            recursive,
        } => return crate::fswatch::watch(&working_dir, &paths, recursive, frames, wr).await,
        FsRequest::List {
            path,
            working_dir,
            recursive,
            pattern,
        } => {
            let listed = blocking(move || list(&working_dir, &path, recursive, pattern)).await;
            return match listed {
                Ok(entries) => send_entries(entries, &mut wr).await,
                Err(error) => failed(&mut wr, error).await,
            };
        }
        other => blocking(move || simple(other)).await,
    };
    let reply = match reply {
        Ok(count) => FsReply::Count { count },
        Err(error) => FsReply::Failed { error },
    };
    let _ = send(&mut wr, Frame::Reply(Reply::Fs(reply))).await;
}

/// The operations answered by a count.
fn simple(req: FsRequest) -> Result<u64> {
    match req {
        FsRequest::Delete {
            path,
            working_dir,
            recursive,
        } => delete(&resolve(&working_dir, &path)?, recursive),
        FsRequest::Rename {
            source,
            dest,
            working_dir,
        } => {
            let (from, to) = (
                resolve(&working_dir, &source)?,
                resolve(&working_dir, &dest)?,
            );
            fs::rename(&from, &to).map_err(|e| io_error(&e, "rename", &from))?;
            Ok(1)
        }
        FsRequest::Copy {
            source,
            dest,
            working_dir,
            recursive,
            preserve_attrs,
        } => {
            let (from, to) = (
                resolve(&working_dir, &source)?,
                resolve(&working_dir, &dest)?,
            );
            copy(&from, &to, recursive, preserve_attrs)
        }
        FsRequest::Chmod {
            path,
            working_dir,
            mode,
            recursive,
        } => {
            if mode > 0o7777 {
                return Err(FsError::new(FsCode::EINVAL, "mode is above 7777", path));
            }
            let path = resolve(&working_dir, &path)?;
            walk_change(&path, recursive, &|p, meta| {
                if meta.file_type().is_symlink() {
                    // chmod follows links; in a walk that would change what
                    // the link points at, maybe outside the tree.
                    return Ok(false);
                }
                fs::set_permissions(p, fs::Permissions::from_mode(mode))
                    .map_err(|e| io_error(&e, "chmod", p))?;
                Ok(true)
            })
        }
        FsRequest::Chown {
            path,
            working_dir,
            uid,
            gid,
            recursive,
        } => {
            let uid = uid
                .map(|o| owner_id(&o, "/etc/passwd", &path))
                .transpose()?;
            let gid = gid.map(|o| owner_id(&o, "/etc/group", &path)).transpose()?;
            let path = resolve(&working_dir, &path)?;
            walk_change(&path, recursive, &|p, meta| {
                let r = if meta.file_type().is_symlink() {
                    std::os::unix::fs::lchown(p, uid, gid)
                } else {
                    std::os::unix::fs::chown(p, uid, gid)
                };
                r.map_err(|e| io_error(&e, "chown", p))?;
                Ok(true)
            })
        }
        FsRequest::Read { path, .. }
        | FsRequest::Write { path, .. }
        | FsRequest::List { path, .. } => {
            Err(FsError::new(FsCode::EINVAL, "not a count operation", path))
        }
        FsRequest::Watch { .. } => Err(FsError::new(FsCode::EINVAL, "not a count operation", "")),
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(FsError::new(
            FsCode::EIO,
            format!("the operation failed: {e}"),
            "",
        ))
    })
}

async fn send(wr: &mut OwnedWriteHalf, frame: Frame) -> io::Result<()> {
    let bytes = frame
        .encode()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    wr.write_all(&bytes).await
}

async fn failed(wr: &mut OwnedWriteHalf, error: FsError) {
    let _ = send(wr, Frame::Reply(Reply::Fs(FsReply::Failed { error }))).await;
}

/// `path` taken from `working_dir` as the box's root would; checked for
/// what the kernel would refuse less clearly.
pub(crate) fn resolve(working_dir: &str, path: &str) -> Result<PathBuf> {
    for (what, p) in [("path", path), ("workingDir", working_dir)] {
        if p.contains('\0') {
            return Err(FsError::new(
                FsCode::EINVAL,
                format!("{what} contains a NUL byte"),
                p,
            ));
        }
        if p.len() > MAX_PATH {
            return Err(FsError::new(
                FsCode::EINVAL,
                format!("{what} is longer than {MAX_PATH} bytes"),
                p,
            ));
        }
    }
    if path.is_empty() {
        return Err(FsError::new(FsCode::EINVAL, "path is empty", path));
    }
    let wd = if working_dir.is_empty() {
        "/"
    } else {
        working_dir
    };
    if !wd.starts_with('/') {
        return Err(FsError::new(
            FsCode::EINVAL,
            "workingDir must be an absolute path",
            working_dir,
        ));
    }
    Ok(Path::new(wd).join(path))
}

fn show(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// An I/O error as the fs API names it.
pub(crate) fn io_error(e: &io::Error, op: &str, path: &Path) -> FsError {
    let errno = e.raw_os_error().unwrap_or(0);
    let code = match errno {
        libc::ENOENT => FsCode::ENOENT,
        libc::EEXIST => FsCode::EEXIST,
        libc::ENOTDIR => FsCode::ENOTDIR,
        libc::EISDIR => FsCode::EISDIR,
        libc::EACCES => FsCode::EACCES,
        libc::EPERM | libc::EROFS | libc::EBUSY => FsCode::EPERM,
        libc::ENOTEMPTY => FsCode::ENOTEMPTY,
        libc::EINVAL | libc::ELOOP | libc::ENAMETOOLONG | libc::EXDEV => FsCode::EINVAL,
        _ => FsCode::EIO,
    };
    let why = if errno != 0 {
        nix::errno::Errno::from_raw(errno).desc().to_string()
    } else {
        e.to_string()
    };
    FsError::new(code, format!("{op} {}: {why}", path.display()), show(path))
}

/// Unix milliseconds as RFC 3339 with milliseconds (what both SDKs parse,
/// including Python before 3.11).
fn rfc3339_ms(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i128)
        .unwrap_or(0);
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

pub(crate) fn entry(name: String, path: &Path, meta: &Metadata) -> FsEntry {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "other"
    };
    FsEntry {
        name,
        path: show(path),
        kind: kind.into(),
        size: meta.len(),
        mode: format!("{:04o}", meta.mode() & 0o7777),
        mod_time: rfc3339_ms(meta.modified().unwrap_or(UNIX_EPOCH)),
        is_dir: ft.is_dir(),
    }
}

fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into())
}

// ----- read -----

async fn read(working_dir: &str, path: &str, mut wr: OwnedWriteHalf) {
    let (working_dir, path) = (working_dir.to_string(), path.to_string());
    let opened = blocking(move || {
        let path = resolve(&working_dir, &path)?;
        // O_NONBLOCK: opening a FIFO must not hang the agent; the type
        // check below refuses it (and anything else but a regular file).
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| io_error(&e, "read", &path))?;
        let meta = file.metadata().map_err(|e| io_error(&e, "read", &path))?;
        if meta.is_dir() {
            return Err(FsError::new(
                FsCode::EISDIR,
                format!("read {}: is a directory; list it instead", path.display()),
                show(&path),
            ));
        }
        if !meta.is_file() {
            return Err(FsError::new(
                FsCode::EINVAL,
                format!("read {}: only regular files can be read", path.display()),
                show(&path),
            ));
        }
        Ok((file, meta.len(), path))
    })
    .await;
    let (file, size, path) = match opened {
        Ok(o) => o,
        Err(error) => return failed(&mut wr, error).await,
    };
    if send(&mut wr, Frame::Reply(Reply::Fs(FsReply::Opened { size })))
        .await
        .is_err()
    {
        return;
    }
    let mut file = tokio::fs::File::from_std(file);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return failed(&mut wr, io_error(&e, "read", &path)).await,
        };
        let Ok(frame) = encode_data(&buf[..n]) else {
            return;
        };
        // Waits while the daemon does not read: the socket is the buffer.
        if wr.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = send(&mut wr, Frame::DataEnd).await;
}

// ----- write -----

/// A temporary file removed unless [`TempFile::keep`] was called.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Where a write lands: the path with its final symlinks followed, so that
/// writing to a link writes the file it points to (inside the box).
fn write_target(mut path: PathBuf) -> Result<PathBuf> {
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&path).map_err(|e| io_error(&e, "write", &path))?;
                path = match path.parent() {
                    Some(parent) if target.is_relative() => parent.join(target),
                    _ => target,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(FsError::new(
        FsCode::EINVAL,
        format!(
            "write {}: too many levels of symbolic links",
            path.display()
        ),
        show(&path),
    ))
}

struct Prepared {
    target: PathBuf,
    temp: TempFile,
    file: File,
    mode: u32,
    owner: Option<(u32, u32)>,
}

fn prepare_write(
    working_dir: &str,
    path: &str,
    mode: Option<u32>,
    mkdir_parents: bool,
) -> Result<Prepared> {
    let asked = resolve(working_dir, path)?;
    if mode.is_some_and(|m| m > 0o7777) {
        return Err(FsError::new(FsCode::EINVAL, "mode is above 7777", path));
    }
    let target = write_target(asked)?;
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(FsError::new(
            FsCode::EISDIR,
            format!("write {}: is a directory", target.display()),
            show(&target),
        ));
    };
    let existing = match fs::metadata(&target) {
        Ok(m) if m.is_dir() => {
            return Err(FsError::new(
                FsCode::EISDIR,
                format!("write {}: is a directory", target.display()),
                show(&target),
            ))
        }
        Ok(m) => Some(m),
        Err(_) => None,
    };
    make_dirs(parent, mkdir_parents)?;
    let suffix: u64 = rand_u64();
    let temp_path = parent.join(format!(
        ".{}{TEMP_MARK}{suffix:016x}",
        name.to_string_lossy().chars().take(100).collect::<String>()
    ));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp_path)
        .map_err(|e| io_error(&e, "write", &target))?;
    Ok(Prepared {
        target,
        temp: TempFile(Some(temp_path)),
        file,
        mode: mode.unwrap_or_else(|| existing.as_ref().map_or(0o644, |m| m.mode() & 0o7777)),
        owner: existing.as_ref().map(|m| (m.uid(), m.gid())),
    })
}

/// Makes the directory `dir` if it is missing, as the box's root, with
/// mode 0755: with `all`, every missing ancestor too (`mkdir -p`); without,
/// only `dir` itself, and a missing ancestor is `ENOENT` (`mkdir`). Both
/// SDKs make a directory by writing `dir/.keep` without `mkdirParents`, so
/// the one level is what their `mkdir` relies on.
fn make_dirs(dir: &Path, all: bool) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        match fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(FsError::new(
                    FsCode::ENOTDIR,
                    format!(
                        "mkdir {}: {} is not a directory",
                        dir.display(),
                        at.display()
                    ),
                    show(dir),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !all && !missing.is_empty() {
                    return Err(FsError::new(
                        FsCode::ENOENT,
                        format!(
                            "mkdir {}: {} does not exist; set mkdirParents to make it too",
                            dir.display(),
                            at.display()
                        ),
                        show(dir),
                    ));
                }
                missing.push(at);
                match at.parent() {
                    Some(up) => at = up,
                    None => break,
                }
            }
            Err(e) => return Err(io_error(&e, "mkdir", at)),
        }
    }
    for d in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(0o755).create(d) {
            // Exactly 0755, whatever the umask.
            Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(0o755))
                .map_err(|e| io_error(&e, "mkdir", d))?,
            // Made meanwhile (or `d` ends in `..`): fine if a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(io_error(&e, "mkdir", d)),
        }
    }
    Ok(())
}

/// Randomness for temporary names; uniqueness comes from `create_new`.
fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id())
    }
}

async fn write(
    working_dir: &str,
    path: &str,
    mode: Option<u32>,
    mkdir_parents: bool,
    mut frames: FrameReader<OwnedReadHalf>,
    mut wr: OwnedWriteHalf,
) {
    let (wd, p) = (working_dir.to_string(), path.to_string());
    let prepared = blocking(move || prepare_write(&wd, &p, mode, mkdir_parents)).await;
    let Prepared {
        target,
        mut temp,
        file,
        mode,
        owner,
    } = match prepared {
        Ok(p) => p,
        Err(error) => return failed(&mut wr, error).await,
    };
    if send(&mut wr, Frame::Reply(Reply::Fs(FsReply::Ready)))
        .await
        .is_err()
    {
        return;
    }
    let mut out = tokio::fs::File::from_std(file);
    loop {
        // The socket is not read while a chunk is written: a fast client
        // waits for the disk.
        let frame = match tokio::time::timeout(WRITE_IDLE, frames.next()).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) | Ok(Err(_)) => return, // cut off: `temp` goes
            Err(_) => {
                let error = FsError::new(
                    FsCode::EIO,
                    format!("write {}: no data for {WRITE_IDLE:?}", target.display()),
                    show(&target),
                );
                return failed(&mut wr, error).await;
            }
        };
        match frame {
            Frame::Data(d) => {
                if let Err(e) = out.write_all(&d).await {
                    return failed(&mut wr, io_error(&e, "write", &target)).await;
                }
            }
            Frame::DataEnd => break,
            _ => {
                let error = FsError::new(FsCode::EINVAL, "expected file data", show(&target));
                return failed(&mut wr, error).await;
            }
        }
    }
    if let Err(e) = out.flush().await {
        return failed(&mut wr, io_error(&e, "write", &target)).await;
    }
    let file = out.into_std().await;
    let temp_path = temp.0.clone().unwrap_or_default();
    let placed = {
        let target = target.clone();
        blocking(move || {
            let io = |e: io::Error| io_error(&e, "write", &target);
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io)?;
            if let Some((uid, gid)) = owner {
                // Replacing a user's file keeps it theirs.
                let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
            }
            file.sync_all().map_err(io)?;
            fs::rename(&temp_path, &target).map_err(io)?;
            if let Some(parent) = target.parent() {
                // The rename itself is durable once the directory is.
                if let Ok(dir) = File::open(parent) {
                    let _ = dir.sync_all();
                }
            }
            let meta = fs::metadata(&target).map_err(io)?;
            Ok(entry(base_name(&target), &target, &meta))
        })
        .await
    };
    match placed {
        Ok(entry) => {
            temp.keep();
            let _ = send(&mut wr, Frame::Reply(Reply::Fs(FsReply::Written { entry }))).await;
        }
        Err(error) => failed(&mut wr, error).await,
    }
}

// ----- list -----

fn list(
    working_dir: &str,
    path: &str,
    recursive: bool,
    pattern: Option<String>,
) -> Result<Vec<FsEntry>> {
    let path = resolve(working_dir, path)?;
    let meta = fs::metadata(&path)
        .or_else(|_| fs::symlink_metadata(&path))
        .map_err(|e| io_error(&e, "list", &path))?;
    let matches = |name: &OsStr| {
        pattern
            .as_deref()
            .is_none_or(|p| glob(p.as_bytes(), name.as_bytes()))
    };
    if !meta.is_dir() {
        // Listing a file answers that file: this is how the SDKs stat.
        return Ok(vec![entry(base_name(&path), &path, &meta)]);
    }
    let mut out = Vec::new();
    // (directory, its path below the listed one)
    let mut todo = vec![(path.clone(), PathBuf::new())];
    while let Some((dir, rel)) = todo.pop() {
        let mut children: Vec<_> = match fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
            // A subdirectory that went away or is closed to us is skipped;
            // the listed directory itself must be readable.
            Err(e) if dir == path => return Err(io_error(&e, "list", &dir)),
            Err(_) => continue,
        };
        children.sort_by_key(|e| e.file_name());
        for child in children {
            let name = child.file_name();
            let Ok(cmeta) = fs::symlink_metadata(child.path()) else {
                continue;
            };
            let crel = rel.join(&name);
            if matches(&name) {
                if out.len() >= MAX_LIST_ENTRIES {
                    return Err(FsError::new(
                        FsCode::EINVAL,
                        format!(
                            "list {}: more than {MAX_LIST_ENTRIES} entries; list a narrower path or use a pattern",
                            path.display()
                        ),
                        show(&path),
                    ));
                }
                let shown = if recursive {
                    show(&crel)
                } else {
                    base_name(&crel)
                };
                out.push(entry(shown, &child.path(), &cmeta));
            }
            // Symlinked directories are not entered: they may loop.
            if recursive && cmeta.is_dir() {
                todo.push((child.path(), crel));
            }
        }
    }
    if recursive {
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(out)
}

async fn send_entries(entries: Vec<FsEntry>, wr: &mut OwnedWriteHalf) {
    if entries.is_empty() {
        let reply = FsReply::Entries {
            entries,
            more: false,
        };
        let _ = send(wr, Frame::Reply(Reply::Fs(reply))).await;
        return;
    }
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut rest = entries.into_iter().peekable();
    while let Some(e) = rest.next() {
        bytes += e.name.len() + e.path.len() + 160;
        batch.push(e);
        let last = rest.peek().is_none();
        if bytes >= ENTRIES_PER_REPLY_BYTES || last {
            let reply = FsReply::Entries {
                entries: std::mem::take(&mut batch),
                more: !last,
            };
            if send(wr, Frame::Reply(Reply::Fs(reply))).await.is_err() {
                return;
            }
            bytes = 0;
        }
    }
}

/// Shell-style glob: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`/`[^x]`.
pub(crate) fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(&pattern[p..], name[n]) {
                        if matched {
                            p += next;
                            n += 1;
                            continue;
                        }
                    } else if name[n] == b'[' {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `pat` (`[...]`): whether
/// it matched and the class's length; `None` if the class is unterminated.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pat.len() {
        let lo = pat[i];
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pat.get(i + 1) == Some(&b'-') && pat.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pat[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    None
}

// ----- delete, copy, chmod, chown -----

fn delete(path: &Path, recursive: bool) -> Result<u64> {
    let meta = fs::symlink_metadata(path).map_err(|e| io_error(&e, "delete", path))?;
    if path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::CurDir))
        || fs::canonicalize(path).is_ok_and(|p| p == Path::new("/"))
    {
        return Err(FsError::new(
            FsCode::EPERM,
            "delete /: refusing to delete the box's root directory",
            show(path),
        ));
    }
    if !meta.is_dir() {
        fs::remove_file(path).map_err(|e| io_error(&e, "delete", path))?;
        return Ok(1);
    }
    if recursive {
        let count = count_tree(path);
        // remove_dir_all never follows symlinks out of the tree.
        fs::remove_dir_all(path).map_err(|e| io_error(&e, "delete", path))?;
        Ok(count)
    } else {
        fs::remove_dir(path).map_err(|e| io_error(&e, "delete", path))?;
        Ok(1)
    }
}

fn count_tree(path: &Path) -> u64 {
    let mut count = 0;
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        count += 1;
        if let Ok(rd) = fs::read_dir(&p) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                } else {
                    count += 1;
                }
            }
        }
    }
    count
}

/// Applies `change` to `path` and, with `recursive`, everything below it
/// (symlinks are not followed into); returns how many it changed.
fn walk_change(
    path: &Path,
    recursive: bool,
    change: &dyn Fn(&Path, &Metadata) -> Result<bool>,
) -> Result<u64> {
    // The named path itself follows links, as chmod(1) does.
    let meta = fs::metadata(path).map_err(|e| io_error(&e, "stat", path))?;
    let mut count = u64::from(change(path, &meta)?);
    if !(recursive && meta.is_dir()) {
        return Ok(count);
    }
    let mut todo = vec![path.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let rd = fs::read_dir(&dir).map_err(|e| io_error(&e, "list", &dir))?;
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            count += u64::from(change(&p, &m)?);
            if m.is_dir() {
                todo.push(p);
            }
        }
    }
    Ok(count)
}

fn copy(from: &Path, to: &Path, recursive: bool, preserve: bool) -> Result<u64> {
    let meta = fs::metadata(from).map_err(|e| io_error(&e, "copy", from))?;
    if !meta.is_dir() {
        copy_file(from, to, &meta, preserve)?;
        return Ok(1);
    }
    if !recursive {
        return Err(FsError::new(
            FsCode::EISDIR,
            format!(
                "copy {}: is a directory; copy it with recursive",
                from.display()
            ),
            show(from),
        ));
    }
    let (src, dst) = (
        fs::canonicalize(from).map_err(|e| io_error(&e, "copy", from))?,
        fs::canonicalize(to.parent().unwrap_or(Path::new("/")))
            .map_err(|e| io_error(&e, "copy", to))?
            .join(to.file_name().unwrap_or_default()),
    );
    if dst.starts_with(&src) {
        return Err(FsError::new(
            FsCode::EINVAL,
            format!(
                "copy {}: cannot copy a directory into itself",
                from.display()
            ),
            show(from),
        ));
    }
    let mut count = 0;
    let mut todo = vec![(from.to_path_buf(), to.to_path_buf(), meta)];
    while let Some((s, d, m)) = todo.pop() {
        match fs::create_dir(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(io_error(&e, "copy", &d)),
        }
        let _ = fs::set_permissions(&d, fs::Permissions::from_mode(m.mode() & 0o7777));
        if preserve {
            let _ = std::os::unix::fs::chown(&d, Some(m.uid()), Some(m.gid()));
        }
        count += 1;
        let rd = fs::read_dir(&s).map_err(|e| io_error(&e, "copy", &s))?;
        for e in rd.flatten() {
            let (cs, cd) = (e.path(), d.join(e.file_name()));
            let Ok(cm) = fs::symlink_metadata(&cs) else {
                continue;
            };
            let ft = cm.file_type();
            if ft.is_dir() {
                todo.push((cs, cd, cm));
            } else if ft.is_symlink() {
                let target = fs::read_link(&cs).map_err(|e| io_error(&e, "copy", &cs))?;
                let _ = fs::remove_file(&cd);
                std::os::unix::fs::symlink(&target, &cd).map_err(|e| io_error(&e, "copy", &cd))?;
                if preserve {
                    let _ = std::os::unix::fs::lchown(&cd, Some(cm.uid()), Some(cm.gid()));
                }
                count += 1;
            } else if ft.is_file() {
                copy_file(&cs, &cd, &cm, preserve)?;
                count += 1;
            }
            // Sockets, FIFOs and devices are not copied: there is no
            // content to copy and making them is not the API's business.
        }
    }
    Ok(count)
}

fn copy_file(from: &Path, to: &Path, meta: &Metadata, preserve: bool) -> Result<()> {
    if to.is_dir() {
        return Err(FsError::new(
            FsCode::EISDIR,
            format!("copy to {}: is a directory", to.display()),
            show(to),
        ));
    }
    fs::copy(from, to).map_err(|e| io_error(&e, "copy", from))?;
    if preserve {
        let _ = std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()));
        if let (Ok(f), Ok(mtime)) = (File::options().write(true).open(to), meta.modified()) {
            let _ = f.set_times(fs::FileTimes::new().set_modified(mtime));
        }
        let _ = fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777));
    }
    Ok(())
}

/// A user or group id: a number, or a name from the box's `db` file.
fn owner_id(owner: &FsOwner, db: &str, path: &str) -> Result<u32> {
    let name = match owner {
        FsOwner::Id(id) => return Ok(*id),
        FsOwner::Name(name) => name,
    };
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let text = fs::read_to_string(db).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| n == name)
        .and_then(|(_, id)| id.parse().ok())
        .ok_or_else(|| {
            FsError::new(
                FsCode::EINVAL,
                format!("no {name:?} in the box's {db}"),
                path,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_the_shell() {
        for (p, n) in [
            ("*.txt", "a.txt"),
            ("a?c", "abc"),
            ("[ab]*", "bob"),
            ("[a-c]x", "bx"),
            ("[!a]x", "bx"),
            ("*", ""),
            ("x[", "x["),
        ] {
            assert!(glob(p.as_bytes(), n.as_bytes()), "{p} {n}");
        }
        for (p, n) in [
            ("*.txt", "a.md"),
            ("a?c", "ac"),
            ("[!b]x", "bx"),
            ("a", "ab"),
        ] {
            assert!(!glob(p.as_bytes(), n.as_bytes()), "{p} {n}");
        }
    }

    #[test]
    fn paths_are_checked_and_joined() {
        assert_eq!(resolve("/srv", "a/b").ok(), Some(PathBuf::from("/srv/a/b")));
        assert_eq!(resolve("", "/etc").ok(), Some(PathBuf::from("/etc")));
        assert!(resolve("rel", "a").is_err());
        assert!(resolve("/", "a\0b").is_err());
        assert!(resolve("/", "").is_err());
        assert!(resolve("/", &"a".repeat(MAX_PATH + 1)).is_err());
    }

    #[test]
    fn a_cut_off_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        fs::write(&target, b"old").unwrap();
        let p = prepare_write("/", target.to_str().unwrap(), None, false).unwrap();
        let temp = p.temp.0.clone().unwrap();
        assert!(temp.exists());
        drop(p);
        assert!(!temp.exists());
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }

    #[test]
    fn writes_make_one_missing_directory_or_all_with_mkdir_parents() {
        let dir = tempfile::tempdir().unwrap();
        let at = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
        // One level, as mkdir(2).
        let p = prepare_write("/", &at("one/.keep"), None, false).unwrap();
        drop(p);
        let meta = fs::metadata(dir.path().join("one")).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o755);
        // Two levels need mkdirParents.
        let e = prepare_write("/", &at("two/three/.keep"), None, false)
            .err()
            .unwrap();
        assert_eq!(e.code, FsCode::ENOENT, "{e:?}");
        assert!(!dir.path().join("two").exists());
        drop(prepare_write("/", &at("two/three/four/f"), None, true).unwrap());
        for d in ["two", "two/three", "two/three/four"] {
            let m = fs::metadata(dir.path().join(d)).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o755, "{d}");
        }
        // A file in the way.
        fs::write(dir.path().join("file"), b"x").unwrap();
        let e = prepare_write("/", &at("file/x/y"), None, true)
            .err()
            .unwrap();
        assert_eq!(e.code, FsCode::ENOTDIR, "{e:?}");
    }

    #[test]
    fn timestamps_have_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339_ms(t), "2023-11-14T22:13:20.123Z");
    }
}
