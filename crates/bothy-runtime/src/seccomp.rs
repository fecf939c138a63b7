//! The seccomp filter of a box: an allowlist.
//!
//! Its shape follows Docker's default profile, the filter most Linux software
//! has been tested under: what a process with the box's capabilities may do
//! under Docker it may do here, and the kernel's larger attack surfaces stay
//! closed (mounts, new namespaces, modules, keyrings, BPF, perf, io_uring,
//! `AF_VSOCK` sockets, which ignore network namespaces).
//!
//! Two answers for what is refused:
//! - syscalls we know and refuse fail with EPERM, so tools say "Operation not
//!   permitted";
//! - everything else (syscalls newer than this list) fails with ENOSYS, so
//!   libc and runtimes fall back to the older call they replace, as they do
//!   on an older kernel. `clone3` answers ENOSYS on purpose: its flags are
//!   behind a pointer the filter cannot read, and glibc falls back to `clone`,
//!   whose flags it can.
//!
//! Nesting (`"nesting": true` at create) opens the namespace and mount family
//! so containers run inside the box. The price: box root gets full
//! capabilities in user namespaces of its own, which exposes kernel code that
//! checks only namespaced capabilities (nf_tables, overlayfs, mount code) to
//! the box's processes.

use serde_json::{json, Value};

const ARCHITECTURES: &[&str] = &[
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
];

const PROCESSES: &[&str] = &[
    "arch_prctl",
    "capget",
    "capset",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "get_thread_area",
    "getcpu",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getrlimit",
    "getrusage",
    "getsid",
    "gettid",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "membarrier",
    "modify_ldt",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "prctl",
    "prlimit64",
    "process_mrelease",
    "restart_syscall",
    "rseq",
    "seccomp",
    "set_robust_list",
    "get_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setpgid",
    "setpriority",
    "setrlimit",
    "setsid",
    "sysinfo",
    "tgkill",
    "times",
    "tkill",
    "ugetrlimit",
    "umask",
    "uname",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    // Ends the box (pid namespace), nothing more; `reboot` in a box is a
    // restart of that box.
    "reboot",
    // CAP_SYS_CHROOT, which the box has (package builds, debootstrap).
    "chroot",
];

/// The box has CAP_SYS_PTRACE (gdb, strace) within its own namespaces.
const DEBUGGING: &[&str] = &[
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];

const IDENTITIES: &[&str] = &[
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getuid",
    "getuid32",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setuid",
    "setuid32",
];

const SIGNALS: &[&str] = &[
    "alarm",
    "getitimer",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "setitimer",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
];

/// Reading clocks and timers; setting the clock needs CAP_SYS_TIME, which a
/// box does not have (`adjtimex` and `clock_adjtime` only read without it).
const TIME: &[&str] = &[
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "gettimeofday",
    "nanosleep",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
];

const MEMORY: &[&str] = &[
    "brk",
    "madvise",
    "map_shadow_stack",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mremap",
    "mseal",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
];

const FILES: &[&str] = &[
    "_llseek",
    "access",
    "cachestat",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futimesat",
    "getcwd",
    "getdents",
    "getdents64",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "ioctl",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "name_to_handle_at",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pipe",
    "pipe2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "sendfile64",
    "setxattr",
    "setxattrat",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "truncate64",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vmsplice",
    "write",
    "writev",
];

const WAITING: &[&str] = &[
    "_newselect",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioprio_get",
    "ioprio_set",
    "poll",
    "ppoll",
    "ppoll_time64",
    "pselect6",
    "pselect6_time64",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "select",
];

/// System V and POSIX IPC, confined to the box's IPC namespace.
const IPC: &[&str] = &[
    "ipc",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
];

/// Sockets; `socket` itself is allowed per family below. `socketcall` (the
/// old 32-bit multiplexer) is not: the filter could not see its family.
const NETWORK: &[&str] = &[
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "send",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socketpair",
];

/// Refused with EPERM although the kernel has them: the namespace and mount
/// family (opened by nesting), and surfaces a box never needs.
const REFUSED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_settime",
    "clock_settime64",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "migrate_pages",
    "move_pages",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "request_key",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "settimeofday",
    "socketcall",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "sysfs",
    "userfaultfd",
    "uselib",
    "ustat",
    "vhangup",
];

/// What nesting opens: new namespaces and mounts in them.
const NESTING: &[&str] = &[
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "pivot_root",
    "setdomainname",
    "sethostname",
    "setns",
    "umount",
    "umount2",
    "unshare",
];

const AF_VSOCK: u64 = 40;

/// `personality` values that only select an execution domain tools use
/// (`setarch`, 32-bit builds), or turn off address randomisation for the
/// caller's own children (gdb does, `setarch -R`); the query value
/// 0xffffffff changes nothing.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0x40000, 0x40008, 0xffff_ffff];

/// The flags of `clone` that make new namespaces.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// The OCI `linux.seccomp` section for a box.
pub(crate) fn profile(nesting: bool) -> Value {
    let mut allowed: Vec<&str> = [
        PROCESSES, DEBUGGING, IDENTITIES, SIGNALS, TIME, MEMORY, FILES, WAITING, IPC, NETWORK,
    ]
    .concat();
    let mut refused: Vec<&str> = REFUSED.to_vec();
    let mut rules = Vec::new();
    if nesting {
        allowed.extend_from_slice(NESTING);
        allowed.extend_from_slice(&["clone", "clone3"]);
    } else {
        refused.extend_from_slice(NESTING);
        let namespaces = NAMESPACE_FLAGS.iter().fold(0, |all, f| all | f);
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": namespaces, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }],
        }));
        for flag in NAMESPACE_FLAGS {
            rules.push(json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": libc::EPERM,
                "args": [{ "index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ" }],
            }));
        }
        rules.push(json!({
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::ENOSYS,
        }));
    }
    rules.insert(0, json!({ "names": allowed, "action": "SCMP_ACT_ALLOW" }));
    rules.push(json!({
        "names": refused,
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": libc::EPERM,
    }));
    rules.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{ "index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE" }],
    }));
    rules.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": libc::EPERM,
        "args": [{ "index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_EQ" }],
    }));
    for value in PERSONALITIES {
        rules.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": value, "op": "SCMP_CMP_EQ" }],
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::ENOSYS,
        "architectures": ARCHITECTURES,
        "syscalls": rules,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Syscalls Docker's default profile (moby `profiles/seccomp/default.json`)
    /// refuses to a container whose capabilities are the box's (no
    /// CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_TIME, CAP_SYS_BOOT, ...).
    const REFUSED_BY_DOCKER: &[&str] = &[
        "acct",
        "add_key",
        "bpf",
        "clock_settime",
        "clone3",
        "delete_module",
        "fanotify_init",
        "finit_module",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "get_mempolicy",
        "init_module",
        "ioperm",
        "iopl",
        "kexec_file_load",
        "kexec_load",
        "keyctl",
        "lookup_dcookie",
        "mbind",
        "mount",
        "mount_setattr",
        "move_mount",
        "move_pages",
        "nfsservctl",
        "open_by_handle_at",
        "open_tree",
        "perf_event_open",
        "pivot_root",
        "quotactl",
        "quotactl_fd",
        "reboot",
        "request_key",
        "set_mempolicy",
        "setdomainname",
        "sethostname",
        "setns",
        "settimeofday",
        "stime",
        "swapoff",
        "swapon",
        "syslog",
        "umount",
        "umount2",
        "unshare",
        "uselib",
        "userfaultfd",
        "ustat",
        "vhangup",
    ];

    /// Where bothy differs from Docker, and why: `reboot` in a box only ends
    /// that box (its own pid namespace), which is what `reboot` should do.
    const ALLOWED_UNLIKE_DOCKER: &[&str] = &["reboot"];

    fn unconditionally_allowed(profile: &Value) -> BTreeSet<String> {
        profile["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn refuses_what_docker_refuses() {
        let allowed = unconditionally_allowed(&profile(false));
        let leaks: Vec<&&str> = REFUSED_BY_DOCKER
            .iter()
            .filter(|s| allowed.contains(**s) && !ALLOWED_UNLIKE_DOCKER.contains(s))
            .collect();
        assert!(
            leaks.is_empty(),
            "allowed here, refused by Docker: {leaks:?}"
        );
    }

    #[test]
    fn unknown_syscalls_look_absent_and_known_ones_say_not_permitted() {
        let p = profile(false);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], libc::ENOSYS);
        let refused: BTreeSet<String> = p["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["errnoRet"] == libc::EPERM && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        for s in [
            "mount",
            "unshare",
            "setns",
            "keyctl",
            "bpf",
            "io_uring_setup",
        ] {
            assert!(refused.contains(s), "{s} answers EPERM");
        }
    }

    #[test]
    fn no_syscall_is_both_allowed_and_refused() {
        for nesting in [false, true] {
            let p = profile(nesting);
            let allowed = unconditionally_allowed(&p);
            let refused: BTreeSet<String> = p["syscalls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["action"] == "SCMP_ACT_ERRNO" && r.get("args").is_none())
                .flat_map(|r| r["names"].as_array().cloned().unwrap_or_default())
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect();
            let both: Vec<_> = allowed.intersection(&refused).collect();
            assert!(both.is_empty(), "nesting={nesting}: {both:?}");
        }
    }

    #[test]
    fn nesting_opens_namespaces_and_mounts_only() {
        let plain = unconditionally_allowed(&profile(false));
        let nested = unconditionally_allowed(&profile(true));
        let opened: BTreeSet<&str> = nested.difference(&plain).map(String::as_str).collect();
        let expected: BTreeSet<&str> = NESTING.iter().copied().chain(["clone", "clone3"]).collect();
        assert_eq!(opened, expected);
        assert!(!nested.contains("keyctl") && !nested.contains("bpf"));
    }
}
