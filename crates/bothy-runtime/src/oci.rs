//! The OCI runtime config (config.json) of a box: namespaces, id mapping,
//! mounts, cgroup limits, capabilities and the seccomp filter.

use std::path::Path;

use serde_json::{json, Value};

use bothy_api::inbox;

use crate::{seccomp, BoxSpec, ID_RANGE};

/// The fd on which pid 1 finds the agent's listening socket.
pub(crate) const AGENT_FD: i32 = 3;

const PIDS_LIMIT: i64 = 4096;
const CPU_PERIOD_US: u64 = 100_000;

/// Docker's default set plus what package managers and debuggers need
/// (SETFCAP for packages that ship file capabilities, SYS_PTRACE for gdb and
/// strace). All of them are confined to the box's user namespace.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
    "CAP_SYS_PTRACE",
];

/// How pid 1 of a box is started.
#[derive(Debug, Clone)]
pub(crate) struct Init {
    pub args: Vec<String>,
}

impl Default for Init {
    fn default() -> Self {
        Self {
            args: vec![inbox::EXE.to_string(), "init".to_string()],
        }
    }
}

/// The config.json for `spec`, whose ids 0.. are host ids `host_base`..,
/// with `rootfs` (the box's view of its volume) as root
/// and `exe` bind-mounted read-only at [`inbox::EXE`] and [`inbox::ENV_TOOL`].
pub(crate) fn config(
    spec: &BoxSpec,
    host_base: u32,
    rootfs: &Path,
    exe: &Path,
    cgroup_path: &str,
    init: &Init,
    env_dir: &Path,
) -> Value {
    let id_map = json!([{ "containerID": 0, "hostID": host_base, "size": ID_RANGE }]);
    let caps = CAPABILITIES;
    let memory_bytes = spec.ram_mb.saturating_mul(1024 * 1024);
    let cpu_quota = u64::from(spec.cpus.max(1)) * CPU_PERIOD_US;
    // crun sets rlimits from inside the user namespace, where they can only
    // be lowered: give the box the daemon's hard limit as its soft one, so
    // servers in the box are not stuck at the traditional 1024.
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": init.args,
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "TERM=xterm-256color",
                "LANG=C.UTF-8",
                format!("BOTHY_AGENT_FD={AGENT_FD}"),
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile }],
            // setuid programs (sudo, su) must work inside.
            "noNewPrivileges": false,
        },
        "root": { "path": rootfs, "readonly": false },
        "hostname": spec.hostname,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] },
            { "destination": inbox::EXE, "type": "bind", "source": exe,
              "options": ["bind", "ro", "nosuid", "nodev"] },
            { "destination": inbox::ENV_TOOL, "type": "bind", "source": exe,
              "options": ["bind", "ro", "nosuid", "nodev"] },
            { "destination": inbox::ENV_DIR, "type": "bind", "source": env_dir,
              "options": ["bind", "ro", "nosuid", "nodev", "noexec"] },
        ],
        "linux": {
            "uidMappings": id_map,
            "gidMappings": id_map,
            "namespaces": [
                { "type": "user" }, { "type": "mount" }, { "type": "pid" },
                { "type": "uts" }, { "type": "ipc" }, { "type": "network" },
                { "type": "cgroup" },
            ],
            "cgroupsPath": cgroup_path,
            "resources": {
                // No host devices: only the standard pseudo-devices crun
                // creates (null, zero, full, tty, random, urandom) are usable.
                "devices": [{ "allow": false, "access": "rwm" }],
                "memory": { "limit": memory_bytes },
                "cpu": { "quota": cpu_quota, "period": CPU_PERIOD_US },
                "pids": { "limit": PIDS_LIMIT },
            },
            "rootfsPropagation": "private",
            "seccomp": seccomp::profile(spec.nesting),
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BoxSpec {
        BoxSpec {
            id: "b0123456789ab".into(),
            hostname: "dev".into(),
            ram_mb: 512,
            cpus: 2,
            storage_gb: 100,
            nesting: false,
        }
    }

    #[test]
    fn limits_follow_the_spec() {
        let c = config(
            &spec(),
            231_072,
            Path::new("/r"),
            Path::new("/bin/bothy"),
            "/bothy-x/b1",
            &Init::default(),
            Path::new("/data/run/env/b1"),
        );
        let res = &c["linux"]["resources"];
        assert_eq!(res["memory"]["limit"], 512 * 1024 * 1024);
        assert_eq!(res["cpu"]["quota"], 200_000);
        assert_eq!(c["hostname"], "dev");
        assert_eq!(c["process"]["args"][0], inbox::EXE);
        assert_eq!(c["linux"]["uidMappings"][0]["hostID"], 231_072);
        assert_eq!(c["linux"]["gidMappings"][0]["hostID"], 231_072);
        let env = c["mounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["destination"] == inbox::ENV_DIR))
            .expect("env dir mounted");
        assert_eq!(env["source"], "/data/run/env/b1");
        assert!(env["options"]
            .as_array()
            .is_some_and(|o| o.contains(&"ro".into())));
    }
}
