//! Turning a [`SpawnRequest`] into a process: environment, PATH lookup,
//! working directory, stdio (pipes or a terminal), own session.
//!
//! Everything a user can get wrong is checked before forking, so the error
//! names the actual problem ("not found in PATH", "no such directory") rather
//! than a bare errno from exec.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio::sync::oneshot;

use crate::proto::SpawnRequest;
use crate::{pty, reaper};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_DIR: &str = "/root";

/// Our ends of a started process's stdio.
pub(crate) enum Stdio3 {
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Terminal {
        master: OwnedFd,
    },
}

pub(crate) struct Started {
    pub pid: i32,
    pub workdir: String,
    pub stdio: Stdio3,
    pub exit: oneshot::Receiver<i32>,
}

/// Why a command could not be started, in words for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SpawnError(pub String);

pub(crate) fn start(req: &SpawnRequest) -> Result<Started, SpawnError> {
    let Some(name) = req.cmd.first() else {
        return Err(SpawnError("no command given".into()));
    };
    if let Some(bad) = req.cmd.iter().find(|a| a.contains('\0')) {
        return Err(SpawnError(format!(
            "argument {bad:?} contains a NUL byte, which no program can receive"
        )));
    }
    let env = environment(req)?;
    let dir = PathBuf::from(req.dir.as_deref().unwrap_or(DEFAULT_DIR));
    check_dir(&dir)?;
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let program = resolve(name, path_var, &dir)?;

    let mut cmd = Command::new(&program);
    cmd.arg0(name)
        .args(&req.cmd[1..])
        .env_clear()
        .envs(env)
        .current_dir(&dir);
    let tty = req.tty;
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe syscalls (setsid, ioctl); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            // The terminal (already dup'ed onto fd 0) becomes the controlling
            // terminal of the new session, so ^C and job control work.
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let cannot = |e: io::Error| SpawnError(format!("cannot start {name}: {e}"));
    let master = if tty {
        let (master, slave) = pty::open(req.cols, req.rows).map_err(cannot)?;
        let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
        cmd.stdin(stdio(&slave).map_err(cannot)?)
            .stdout(stdio(&slave).map_err(cannot)?)
            .stderr(Stdio::from(slave));
        Some(master)
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        None
    };
    let (mut child, exit) = reaper::spawn(&mut cmd).map_err(cannot)?;
    // `cmd` holds our copies of the slave fd; the terminal reports EOF only
    // once every copy outside the process tree is closed.
    drop(cmd);
    let stdio = match master {
        Some(master) => Stdio3::Terminal { master },
        None => match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(i), Some(o), Some(e)) => Stdio3::Pipes {
                stdin: i.into(),
                stdout: o.into(),
                stderr: e.into(),
            },
            _ => {
                return Err(SpawnError(format!(
                    "cannot start {name}: its pipes are missing"
                )))
            }
        },
    };
    Ok(Started {
        // A pid is positive and fits in i32 on Linux.
        pid: child.id() as i32,
        workdir: dir.to_string_lossy().into_owned(),
        stdio,
        exit,
    })
}

/// The default environment overlaid by the request's `KEY=VALUE` entries.
fn environment(req: &SpawnRequest) -> Result<Vec<(String, String)>, SpawnError> {
    let mut env: Vec<(String, String)> = [
        ("PATH", DEFAULT_PATH),
        ("HOME", "/root"),
        ("USER", "root"),
        ("LOGNAME", "root"),
        ("LANG", "C.UTF-8"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if req.tty {
        env.push(("TERM".into(), "xterm-256color".into()));
    }
    for entry in &req.env {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(SpawnError(format!(
                "environment entry {entry:?} has no '='; write KEY=VALUE"
            )));
        };
        if key.is_empty() || entry.contains('\0') {
            return Err(SpawnError(format!(
                "environment entry {entry:?} is not valid: it needs a non-empty KEY and no NUL bytes"
            )));
        }
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
    }
    Ok(env)
}

fn check_dir(dir: &Path) -> Result<(), SpawnError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(SpawnError(format!(
            "working directory {} is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SpawnError(format!(
            "working directory {} does not exist; create it first or pick another",
            dir.display()
        ))),
        Err(e) => Err(SpawnError(format!(
            "working directory {}: {e}",
            dir.display()
        ))),
    }
}

/// Finds the program the way a shell would: a name with a '/' is a path
/// (relative to the working directory), anything else is searched in PATH.
fn resolve(name: &str, path_var: &str, dir: &Path) -> Result<PathBuf, SpawnError> {
    if name.is_empty() {
        return Err(SpawnError("the command name is empty".into()));
    }
    if name.contains('/') {
        let path = dir.join(name);
        return match executable(&path) {
            Ok(()) => Ok(path),
            Err(why) => Err(SpawnError(format!("{name}: {why}"))),
        };
    }
    for entry in path_var.split(':') {
        // An empty PATH entry means the current directory.
        let candidate = if entry.is_empty() {
            dir.join(name)
        } else {
            Path::new(entry).join(name)
        };
        if executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(SpawnError(format!(
        "{name}: command not found (searched PATH={path_var})"
    )))
}

fn executable(path: &Path) -> Result<(), &'static str> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err("is a directory"),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err("permission denied (not executable)"),
        Ok(_) => Ok(()),
        Err(_) => Err("no such file or directory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(env: &[&str]) -> SpawnRequest {
        SpawnRequest {
            cmd: vec!["true".into()],
            env: env.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn request_env_overrides_defaults() {
        let env = environment(&req(&["HOME=/tmp", "A=b=c"])).unwrap();
        assert!(env.contains(&("HOME".into(), "/tmp".into())));
        assert!(env.contains(&("A".into(), "b=c".into())));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
        assert!(!env.iter().any(|(k, _)| k == "TERM"));
    }

    #[test]
    fn bad_env_entries_are_rejected() {
        assert!(environment(&req(&["NOEQUALS"])).is_err());
        assert!(environment(&req(&["=x"])).is_err());
        assert!(environment(&req(&["A=\0"])).is_err());
    }

    #[test]
    fn path_lookup_finds_programs_and_explains_misses() {
        let found = resolve("sh", DEFAULT_PATH, Path::new("/")).unwrap();
        assert!(found.ends_with("sh"));
        let err = resolve("no-such-program-xyz", DEFAULT_PATH, Path::new("/")).unwrap_err();
        assert!(err.0.contains("command not found"), "{err}");
        let err = resolve("/etc", DEFAULT_PATH, Path::new("/")).unwrap_err();
        assert!(err.0.contains("is a directory"), "{err}");
        let err = resolve("/etc/passwd", DEFAULT_PATH, Path::new("/")).unwrap_err();
        assert!(err.0.contains("not executable"), "{err}");
    }
}
