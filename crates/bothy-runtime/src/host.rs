//! Running host tools and checking that they are installed.

use std::ffi::OsStr;
use std::path::Path;

use tokio::process::Command;

use crate::RuntimeError;

/// A host tool and the Debian package that provides it.
pub(crate) struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

pub(crate) const CRUN: Tool = Tool {
    name: "crun",
    package: "crun",
};
pub(crate) const PASTA: Tool = Tool {
    name: "pasta",
    package: "passt",
};
pub(crate) const NFT: Tool = Tool {
    name: "nft",
    package: "nftables",
};
pub(crate) const IP: Tool = Tool {
    name: "ip",
    package: "iproute2",
};
pub(crate) const NSENTER: Tool = Tool {
    name: "nsenter",
    package: "util-linux",
};
pub(crate) const SYSCTL: Tool = Tool {
    name: "sysctl",
    package: "procps",
};
pub(crate) const LOSETUP: Tool = Tool {
    name: "losetup",
    package: "mount",
};
pub(crate) const MOUNT: Tool = Tool {
    name: "mount",
    package: "mount",
};
pub(crate) const MKFS_EXT4: Tool = Tool {
    name: "mkfs.ext4",
    package: "e2fsprogs",
};
pub(crate) const RESIZE2FS: Tool = Tool {
    name: "resize2fs",
    package: "e2fsprogs",
};
pub(crate) const UMOUNT: Tool = Tool {
    name: "umount",
    package: "mount",
};
pub(crate) const FSFREEZE: Tool = Tool {
    name: "fsfreeze",
    package: "util-linux",
};
pub(crate) const SYNC: Tool = Tool {
    name: "sync",
    package: "coreutils",
};
pub(crate) const MMDEBSTRAP: Tool = Tool {
    name: "mmdebstrap",
    package: "mmdebstrap",
};

/// Fails with a message naming the apt package for the first missing tool.
pub(crate) fn require(tools: &[Tool]) -> Result<(), RuntimeError> {
    let missing: Vec<String> = tools
        .iter()
        .filter(|t| find_in_path(t.name).is_none())
        .map(|t| format!("`{}` (apt-get install {})", t.name, t.package))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::HostNotReady(format!(
            "missing host tools: {}",
            missing.join(", ")
        )))
    }
}

/// Looks in PATH and in the sbin directories, which a daemon started by a
/// non-login shell often lacks in PATH.
pub(crate) fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command for `tool`, found the same way [`require`] finds it.
pub(crate) fn command(tool: &Tool) -> Command {
    let program = find_in_path(tool.name).unwrap_or_else(|| tool.name.into());
    let mut cmd = Command::new(program);
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    cmd
}

/// A command for `tool` run inside namespace `ns` (`net`, `user`, ...) of
/// process `pid`, through nsenter.
pub(crate) fn command_in(ns: &str, pid: i32, tool: &Tool) -> Command {
    let mut cmd = command(&NSENTER);
    cmd.arg(format!("--{ns}=/proc/{pid}/ns/{ns}"))
        .arg("--")
        .arg(find_in_path(tool.name).unwrap_or_else(|| tool.name.into()));
    cmd
}

/// Output of a finished command.
pub(crate) struct Output {
    pub status_ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion and captures its output.
pub(crate) async fn output(cmd: &mut Command) -> Result<Output, RuntimeError> {
    let shown = describe(cmd);
    let out = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .map_err(|e| RuntimeError::Failed(format!("cannot run {shown}: {e}")))?;
    Ok(Output {
        status_ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `cmd` and fails, quoting its stderr, unless it exits with 0.
pub(crate) async fn run(cmd: &mut Command) -> Result<String, RuntimeError> {
    let shown = describe(cmd);
    let out = output(cmd).await?;
    if out.status_ok {
        Ok(out.stdout)
    } else {
        Err(RuntimeError::Failed(format!(
            "{shown} failed: {}",
            out.stderr.trim()
        )))
    }
}

fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    let mut parts = vec![std.get_program().to_string_lossy().into_owned()];
    parts.extend(
        std.get_args()
            .map(|a: &OsStr| a.to_string_lossy().into_owned()),
    );
    format!("`{}`", parts.join(" "))
}
