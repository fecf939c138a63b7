//! `fs/watch`: inotify on paths in the box, streamed as `event` replies.
//!
//! A recursive watch adds every directory below the watched ones, and each
//! directory made later as it appears, up to [`MAX_WATCHES`] per
//! connection (each costs the kernel memory charged to the box's user).
//! The fs API's own temporary upload files are left out, and the rename
//! that puts an upload in place is reported as a `write` of its target.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::fs::{io_error, resolve, TEMP_MARK};
use crate::proto::{Frame, FrameReader, FsCode, FsError, FsEvent, FsReply, Reply};

/// Directories (and files) one watch connection may watch.
pub const MAX_WATCHES: usize = 4096;
/// Paths one subscription may name.
pub const MAX_PATHS: usize = 64;
/// Entries reported as created when a new directory is picked up with
/// things already in it.
const MAX_FOUND: usize = 1024;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_MOVE_SELF;

struct Watcher {
    fd: AsyncFd<OwnedFd>,
    /// Watch descriptor → the path it watches.
    watches: HashMap<i32, PathBuf>,
    recursive: bool,
    /// Set once the limit was hit, so it is reported once.
    full: bool,
}

impl Watcher {
    fn new(recursive: bool) -> std::io::Result<Self> {
        // SAFETY: plain syscall with flags; the fd is checked below.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            // SAFETY: `owned` moves into the AsyncFd, which owns it until
            // it is dropped (deregistered first).
            fd: unsafe { AsyncFd::register(owned) }?,
            watches: HashMap::new(),
            recursive,
            full: false,
        })
    }

    /// Watches `path`; with `recursive`, every directory below it too.
    /// `Err` only for `path` itself; trouble below it is skipped. With
    /// `found`, what is already below `path` is put there (at most
    /// [`MAX_FOUND`]): for a directory that just appeared, made before its
    /// watch was, as `mkdir -p a/b && touch a/b/f` does.
    fn add_tree(
        &mut self,
        path: &Path,
        mut found: Option<&mut Vec<(PathBuf, bool)>>,
    ) -> Result<(), FsError> {
        self.add_one(path)?;
        if !self.recursive {
            return Ok(());
        }
        let mut todo = vec![path.to_path_buf()];
        while let Some(dir) = todo.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                // Symlinked directories are not entered: they may loop.
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                let p = e.path();
                if let Some(found) = found.as_deref_mut() {
                    let temp = e
                        .file_name()
                        .as_bytes()
                        .windows(TEMP_MARK.len())
                        .any(|w| w == TEMP_MARK.as_bytes());
                    if found.len() < MAX_FOUND && !temp {
                        found.push((p.clone(), is_dir));
                    }
                }
                if is_dir {
                    if self.add_one(&p).is_ok() {
                        todo.push(p);
                    }
                    if self.full {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    fn add_one(&mut self, path: &Path) -> Result<(), FsError> {
        if self.watches.len() >= MAX_WATCHES {
            self.full = true;
            return Err(FsError::new(
                FsCode::EINVAL,
                format!("watching more than {MAX_WATCHES} directories; watch a narrower path"),
                path.to_string_lossy(),
            ));
        }
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| FsError::new(FsCode::EINVAL, "path contains a NUL byte", ""))?;
        // SAFETY: `c` is a valid C string; the fd is our inotify instance.
        let wd =
            unsafe { libc::inotify_add_watch(self.fd.get_ref().as_raw_fd(), c.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io_error(&std::io::Error::last_os_error(), "watch", path));
        }
        self.watches.insert(wd, path.to_path_buf());
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn reply(wr: &mut OwnedWriteHalf, reply: FsReply) -> bool {
    match Frame::Reply(Reply::Fs(reply)).encode() {
        Ok(bytes) => wr.write_all(&bytes).await.is_ok(),
        Err(_) => true,
    }
}

pub(crate) async fn watch(
    working_dir: &str,
    paths: &[String],
    recursive: bool,
    mut frames: FrameReader<OwnedReadHalf>,
    mut wr: OwnedWriteHalf,
) {
    if paths.is_empty() || paths.len() > MAX_PATHS {
        let error = FsError::new(FsCode::EINVAL, format!("watch 1 to {MAX_PATHS} paths"), "");
        reply(&mut wr, FsReply::Failed { error }).await;
        return;
    }
    let mut watcher = match Watcher::new(recursive) {
        Ok(w) => w,
        Err(e) => {
            reply(
                &mut wr,
                FsReply::Failed {
                    error: io_error(&e, "watch", Path::new("/")),
                },
            )
            .await;
            return;
        }
    };
    let mut shown = Vec::new();
    for p in paths {
        let added = resolve(working_dir, p).and_then(|path| {
            watcher.add_tree(&path, None)?;
            Ok(path)
        });
        match added {
            Ok(path) => shown.push(path.to_string_lossy().into_owned()),
            Err(error) => {
                reply(&mut wr, FsReply::Failed { error }).await;
                return;
            }
        }
    }
    if !reply(&mut wr, FsReply::Subscribed { paths: shown }).await {
        return;
    }
    let mut buf = vec![0u8; 64 << 10];
    // Cookies of renames away from an upload's temporary file.
    let mut upload_moves: Vec<u32> = Vec::new();
    loop {
        let n = tokio::select! {
            // The client sends nothing after its request: anything, or the
            // end of the connection, ends the watch.
            _ = frames.next() => return,
            ready = watcher.fd.readable() => {
                let Ok(mut guard) = ready else { return };
                // SAFETY: reads into `buf`, at most its length.
                let n = unsafe {
                    libc::read(guard.get_inner().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        guard.clear_ready();
                        continue;
                    }
                    return;
                }
                n as usize
            }
        };
        let mut events: Vec<FsEvent> = Vec::new();
        let mut at = 0;
        while let Some(header) = buf.get(at..at + 16).filter(|_| at + 16 <= n) {
            let word = |i: usize| [header[i], header[i + 1], header[i + 2], header[i + 3]];
            let wd = i32::from_ne_bytes(word(0));
            let mask = u32::from_ne_bytes(word(4));
            let cookie = u32::from_ne_bytes(word(8));
            let len = u32::from_ne_bytes(word(12)) as usize;
            let name_bytes = buf.get(at + 16..(at + 16 + len).min(n)).unwrap_or(&[]);
            at += 16 + len;
            let name_end = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = std::ffi::OsStr::from_bytes(&name_bytes[..name_end]);
            if mask & libc::IN_Q_OVERFLOW != 0 {
                let error = FsError::new(
                    FsCode::EIO,
                    "too many changes at once: some events were lost",
                    "",
                );
                if !reply(&mut wr, FsReply::Failed { error }).await {
                    return;
                }
                continue;
            }
            if mask & libc::IN_IGNORED != 0 {
                watcher.watches.remove(&wd);
                continue;
            }
            let Some(base) = watcher.watches.get(&wd) else {
                continue;
            };
            let path = if name.is_empty() {
                base.clone()
            } else {
                base.join(name)
            };
            let is_dir = mask & libc::IN_ISDIR != 0;
            if name
                .as_bytes()
                .windows(TEMP_MARK.len())
                .any(|w| w == TEMP_MARK.as_bytes())
            {
                if mask & libc::IN_MOVED_FROM != 0 {
                    upload_moves.push(cookie);
                    if upload_moves.len() > 64 {
                        upload_moves.remove(0);
                    }
                }
                continue;
            }
            // What a new directory already holds when its watch is added;
            // reported as created after the directory itself. (Something
            // made right as the watch is added may be reported twice.)
            let mut found = Vec::new();
            let event = if mask & libc::IN_CREATE != 0 {
                if is_dir && watcher.recursive && !watcher.full {
                    if let Err(error) = watcher.add_tree(&path, Some(&mut found)) {
                        if watcher.full && !reply(&mut wr, FsReply::Failed { error }).await {
                            return;
                        }
                    }
                }
                "create"
            } else if mask & libc::IN_MODIFY != 0 {
                "write"
            } else if mask & libc::IN_ATTRIB != 0 {
                "chmod"
            } else if mask & (libc::IN_DELETE | libc::IN_DELETE_SELF) != 0 {
                "remove"
            } else if mask & libc::IN_MOVED_TO != 0 {
                if let Some(i) = upload_moves.iter().position(|&c| c == cookie) {
                    upload_moves.remove(i);
                    "write"
                } else {
                    if is_dir && watcher.recursive && !watcher.full {
                        let _ = watcher.add_tree(&path, None);
                    }
                    "rename"
                }
            } else if mask & (libc::IN_MOVED_FROM | libc::IN_MOVE_SELF) != 0 {
                "rename"
            } else {
                continue;
            };
            let path = path.to_string_lossy().into_owned();
            // A burst of writes to one file reads as one event.
            if events
                .last()
                .is_some_and(|e| e.path == path && e.event == event && event == "write")
            {
                continue;
            }
            let size = std::fs::symlink_metadata(&path)
                .map(|m| m.len())
                .unwrap_or(0);
            events.push(FsEvent {
                path,
                event: event.into(),
                size,
                is_dir,
                timestamp_ms: now_ms(),
            });
            for (p, is_dir) in found {
                let size = std::fs::symlink_metadata(&p).map(|m| m.len()).unwrap_or(0);
                events.push(FsEvent {
                    path: p.to_string_lossy().into_owned(),
                    event: "create".into(),
                    size,
                    is_dir,
                    timestamp_ms: now_ms(),
                });
            }
        }
        for event in events {
            if !reply(&mut wr, FsReply::Event { event }).await {
                return;
            }
        }
    }
}
