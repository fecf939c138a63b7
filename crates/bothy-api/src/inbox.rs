//! Paths inside every box: where the bothy binary and the box's own control
//! socket appear. The runtime mounts them at these places; `bothy-env`, the
//! daemon's socket server and the benchmarks find them here.

/// bothy's own directory in a box. The base image holds it, empty, as the
/// place the mounts below go.
pub const DIR: &str = "/.bothy";

/// The bothy binary, bind-mounted read-only from the host. A box's init runs
/// it as `EXE init`; anything in the box may run its other verbs.
pub const EXE: &str = "/.bothy/bothy";

/// The directory of the box's control socket, bind-mounted read-only from the
/// daemon's run directory: the only part of the host's data directory a box
/// sees.
pub const ENV_DIR: &str = "/.bothy/run";

/// File name of the control socket, the same in [`ENV_DIR`] and in the host
/// directory mounted there.
pub const ENV_SOCKET_NAME: &str = "api.sock";

/// The box's own control API (HTTP over this unix socket, no token): the box
/// acts on itself through it, and only box root may connect.
pub const ENV_SOCKET: &str = "/.bothy/run/api.sock";

/// The name that makes the bothy binary speak the in-box grammar (`bothy-env
/// checkpoints create`) instead of the host CLI's.
pub const ENV_TOOL_NAME: &str = "bothy-env";

/// `bothy-env` on the box's PATH: the bothy binary mounted a second time,
/// read-only, under [`ENV_TOOL_NAME`].
pub const ENV_TOOL: &str = "/usr/local/bin/bothy-env";

#[cfg(test)]
mod tests {
    use super::*;

    // The paths are literals so that they read whole in docs and errors;
    // these checks keep them consistent with one another.
    #[test]
    fn paths_agree_with_each_other() {
        assert_eq!(EXE, format!("{DIR}/bothy"));
        assert_eq!(ENV_DIR, format!("{DIR}/run"));
        assert_eq!(ENV_SOCKET, format!("{ENV_DIR}/{ENV_SOCKET_NAME}"));
        assert_eq!(ENV_TOOL.rsplit('/').next(), Some(ENV_TOOL_NAME));
        for path in [DIR, EXE, ENV_DIR, ENV_SOCKET, ENV_TOOL] {
            assert!(path.starts_with('/'), "{path} is absolute");
        }
    }
}
