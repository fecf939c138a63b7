//! The fs API: files in a box, read and changed by the box's init as the
//! box's root, in the box's mount namespace (see `bothy_agent::fs`). Every
//! call wakes the box; reads, writes and watches keep it awake while they
//! stream. Input is checked here so that a bad path never reaches the box.

pub use bothy_agent::client::{FsDownload, FsUpload};
use bothy_agent::fs::MAX_PATH;
pub use bothy_agent::proto::{FsCode, FsEntry, FsError, FsEvent, FsOwner, FsRequest};
use tokio::sync::mpsc;

use crate::error::{ControlError, ControlResult};
use crate::sleep::AwakeHold;
use crate::state::SpriteRow;
use crate::{BoxError, Boxes, Control};

/// Most paths one watch subscribes to.
pub const MAX_WATCH_PATHS: usize = 64;
/// Highest uid or gid a box has (its user namespace maps 65536 ids).
pub const MAX_ID: u32 = 65535;

/// A file being read; the box stays awake until it is dropped.
pub struct FsRead {
    download: FsDownload,
    _awake: AwakeHold,
}

impl FsRead {
    /// The next piece of the file; `None` at its end.
    pub async fn next(&mut self) -> ControlResult<Option<Vec<u8>>> {
        Ok(self.download.next().await.map_err(BoxError::from)?)
    }
}

/// A file being written; the box stays awake until it is dropped, and
/// dropping it before [`FsWrite::finish`] leaves the old file as it was.
pub struct FsWrite {
    upload: FsUpload,
    _awake: AwakeHold,
}

impl FsWrite {
    pub async fn send(&mut self, data: &[u8]) -> ControlResult<()> {
        Ok(self.upload.send(data).await.map_err(BoxError::from)?)
    }

    /// Why the box stopped taking the file, after a failed `send`.
    pub async fn failure(self) -> ControlError {
        BoxError::from(self.upload.failure().await).into()
    }

    /// Ends the file: answers once it is in place.
    pub async fn finish(self) -> ControlResult<FsEntry> {
        Ok(self.upload.finish().await.map_err(BoxError::from)?)
    }
}

/// A watch; the box stays awake until it is dropped.
pub struct FsWatch {
    pub paths: Vec<String>,
    pub events: mpsc::Receiver<Result<FsEvent, FsError>>,
    pub awake: AwakeHold,
}

fn invalid(message: impl Into<String>, path: &str) -> ControlError {
    ControlError::Fs(FsError::new(FsCode::EINVAL, message, path))
}

/// A path as the API takes it: not empty, no NUL, at most `MAX_PATH`.
pub fn check_path(what: &str, path: &str) -> ControlResult<()> {
    if path.is_empty() {
        return Err(invalid(format!("{what} is required"), path));
    }
    if path.contains('\0') {
        return Err(invalid(format!("{what} contains a NUL byte"), path));
    }
    if path.len() > MAX_PATH {
        return Err(invalid(
            format!("{what} is longer than {MAX_PATH} bytes"),
            &path.chars().take(64).collect::<String>(),
        ));
    }
    Ok(())
}

/// The working directory: absolute, `/` when not given.
pub fn check_working_dir(wd: Option<&str>) -> ControlResult<String> {
    let wd = wd.filter(|w| !w.is_empty()).unwrap_or("/");
    check_path("workingDir", wd)?;
    if !wd.starts_with('/') {
        return Err(invalid("workingDir must be an absolute path", wd));
    }
    Ok(wd.to_string())
}

/// Permission bits written as the SDKs send them: octal digits (`0644`,
/// `755`), at most `7777`.
pub fn parse_mode(mode: &str, path: &str) -> ControlResult<u32> {
    let digits = mode.strip_prefix("0o").unwrap_or(mode);
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(invalid(
            format!("mode {mode:?} is not octal permission bits like 0644"),
            path,
        ));
    }
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(invalid(format!("mode {mode:?} is above 7777"), path)),
    }
}

/// A uid or gid: a number up to [`MAX_ID`] or a user or group name.
pub fn check_owner(what: &str, owner: &FsOwner, path: &str) -> ControlResult<()> {
    match owner {
        FsOwner::Id(id) if *id <= MAX_ID => Ok(()),
        FsOwner::Id(id) => Err(invalid(format!("{what} {id} is above {MAX_ID}"), path)),
        FsOwner::Name(n)
            if !n.is_empty()
                && n.len() <= 32
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) =>
        {
            Ok(())
        }
        FsOwner::Name(n) => Err(invalid(
            format!("{what} {n:?} is not a user or group name (1-32 of A-Z a-z 0-9 _ - .)"),
            path,
        )),
    }
}

fn check_request(req: &FsRequest) -> ControlResult<()> {
    let wd = |w: &str| check_working_dir(Some(w)).map(|_| ());
    match req {
        FsRequest::Read { path, working_dir }
        | FsRequest::Delete {
            path, working_dir, ..
        } => {
            check_path("path", path)?;
            wd(working_dir)
        }
        FsRequest::Write {
            path,
            working_dir,
            mode,
            ..
        } => {
            check_path("path", path)?;
            if mode.is_some_and(|m| m > 0o7777) {
                return Err(invalid("mode is above 7777", path));
            }
            wd(working_dir)
        }
        FsRequest::List {
            path,
            working_dir,
            pattern,
            ..
        } => {
            check_path("path", path)?;
            if let Some(p) = pattern {
                if p.len() > 1024 || p.contains('\0') {
                    return Err(invalid(
                        "pattern is longer than 1024 bytes or has a NUL",
                        path,
                    ));
                }
            }
            wd(working_dir)
        }
        FsRequest::Rename {
            source,
            dest,
            working_dir,
        }
        | FsRequest::Copy {
            source,
            dest,
            working_dir,
            ..
        } => {
            check_path("source", source)?;
            check_path("dest", dest)?;
            wd(working_dir)
        }
        FsRequest::Chmod {
            path,
            working_dir,
            mode,
            ..
        } => {
            check_path("path", path)?;
            if *mode > 0o7777 {
                return Err(invalid("mode is above 7777", path));
            }
            wd(working_dir)
        }
        FsRequest::Chown {
            path,
            working_dir,
            uid,
            gid,
            ..
        } => {
            check_path("path", path)?;
            if uid.is_none() && gid.is_none() {
                return Err(invalid("uid or gid is required", path));
            }
            if let Some(u) = uid {
                check_owner("uid", u, path)?;
            }
            if let Some(g) = gid {
                check_owner("gid", g, path)?;
            }
            wd(working_dir)
        }
        FsRequest::Watch {
            paths, working_dir, ..
        } => {
            if paths.is_empty() || paths.len() > MAX_WATCH_PATHS {
                return Err(invalid(format!("watch 1 to {MAX_WATCH_PATHS} paths"), ""));
            }
            for p in paths {
                check_path("path", p)?;
            }
            wd(working_dir)
        }
    }
}

impl<B: Boxes> Control<B> {
    /// Opens a file for reading.
    pub async fn fs_read(&self, row: &SpriteRow, req: FsRequest) -> ControlResult<FsRead> {
        check_request(&req)?;
        let awake = self.ensure_running(row).await?;
        let download = self.boxes().fs_read(&row.id, req).await?;
        Ok(FsRead {
            download,
            _awake: awake,
        })
    }

    /// Starts writing a file: the caller sends its bytes and finishes it.
    pub async fn fs_write(&self, row: &SpriteRow, req: FsRequest) -> ControlResult<FsWrite> {
        check_request(&req)?;
        let awake = self.ensure_running(row).await?;
        let upload = self.boxes().fs_write(&row.id, req).await?;
        Ok(FsWrite {
            upload,
            _awake: awake,
        })
    }

    pub async fn fs_list(&self, row: &SpriteRow, req: FsRequest) -> ControlResult<Vec<FsEntry>> {
        check_request(&req)?;
        let _awake = self.ensure_running(row).await?;
        Ok(self.boxes().fs_list(&row.id, req).await?)
    }

    /// Delete, rename, copy, chmod or chown: how many files it changed.
    pub async fn fs_change(&self, row: &SpriteRow, req: FsRequest) -> ControlResult<u64> {
        check_request(&req)?;
        let _awake = self.ensure_running(row).await?;
        Ok(self.boxes().fs_count(&row.id, req).await?)
    }

    pub async fn fs_watch(&self, row: &SpriteRow, req: FsRequest) -> ControlResult<FsWatch> {
        check_request(&req)?;
        let awake = self.ensure_running(row).await?;
        let (paths, events) = self.boxes().fs_watch(&row.id, req).await?;
        Ok(FsWatch {
            paths,
            events,
            awake,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(parse_mode("0644", "p").ok(), Some(0o644));
        assert_eq!(parse_mode("755", "p").ok(), Some(0o755));
        assert_eq!(parse_mode("4755", "p").ok(), Some(0o4755));
        for bad in ["", "0x1ff", "999", "17777", "rwx", "-1", "0644 "] {
            assert!(parse_mode(bad, "p").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_and_owners_are_checked() {
        assert!(check_path("path", "a/../b").is_ok());
        assert!(check_path("path", "").is_err());
        assert!(check_path("path", "a\0").is_err());
        assert!(check_path("path", &"é".repeat(MAX_PATH)).is_err());
        assert_eq!(check_working_dir(None).ok().as_deref(), Some("/"));
        assert!(check_working_dir(Some("tmp")).is_err());
        assert!(check_owner("uid", &FsOwner::Id(65536), "p").is_err());
        assert!(check_owner("uid", &FsOwner::Name("www-data".into()), "p").is_ok());
        assert!(check_owner("uid", &FsOwner::Name("a:b".into()), "p").is_err());
    }
}
