//! What box root may ask of the kernel: the seccomp allowlist and nesting.
//! Each attack runs inside a real box as its root and must fail the way the
//! filter says; everyday tools must keep working.

mod common;

use common::{Daemon, Shared};

const PLAIN: &str = "conf-plain";
const NESTED: &str = "conf-nested";

static DAEMON: Shared = Shared::new();

fn daemon() -> &'static Daemon {
    DAEMON.get(|d| {
        d.create(PLAIN);
        d.cli(&["create", NESTED, "--nesting", "--skip-console"])
            .run()
            .assert_success("create --nesting");
    })
}

const EPERM: i32 = 1;
const ENOSYS: i32 = 38;

/// Raw x86_64 syscall numbers: the probes bypass libc on purpose, so that no
/// fallback hides what the filter answered.
#[cfg(target_arch = "x86_64")]
mod nr {
    pub const SOCKET: u32 = 41;
    pub const CLONE: u32 = 56;
    pub const MOUNT: u32 = 165;
    pub const KEYCTL: u32 = 250;
    pub const UNSHARE: u32 = 272;
    pub const SETNS: u32 = 308;
    pub const BPF: u32 = 321;
    pub const IO_URING_SETUP: u32 = 425;
    pub const OPEN_TREE: u32 = 428;
    pub const FSOPEN: u32 = 430;
    pub const CLONE3: u32 = 435;
}

const CLONE_NEWUSER: u64 = 0x1000_0000;
const CLONE_NEWNET: u64 = 0x4000_0000;
const SIGCHLD: u64 = 17;

/// Runs `syscall(args)` in the box with perl (in every Debian image) and
/// returns errno, or 0 when the call succeeded. A child made by a
/// successful clone exits at once. String arguments are the variables
/// `$none`, `$mnt`, `$tmpfs` and `$root` (perl wants them writable).
fn errno_of(d: &Daemon, name: &str, args: &str) -> i32 {
    let script = format!(
        "my ($none, $mnt, $tmpfs, $root) = (\"none\", \"/mnt\", \"tmpfs\", \"/\"); \
         my $r = syscall({args}); if ($r == 0 && $$ != $ENV{{PARENT}}) {{ exit 0 }} \
         print $r == -1 ? ($!+0) : 0;"
    );
    let out = d
        .exec(
            name,
            &["sh", "-c", &format!("PARENT=$$ exec perl -e '{script}'")],
        )
        .assert_success(&format!("perl syscall({args})"));
    let text = out.stdout_str();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("syscall({args}) printed {text:?}"))
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_kernel_surfaces_a_box_never_needs_are_closed() {
    let d = daemon();
    let cases: Vec<(&str, String, i32)> = vec![
        (
            "a new user namespace",
            format!("{}, {CLONE_NEWUSER}", nr::UNSHARE),
            EPERM,
        ),
        (
            "clone into a new user namespace",
            format!("{}, {}, 0, 0, 0, 0", nr::CLONE, CLONE_NEWUSER | SIGCHLD),
            EPERM,
        ),
        (
            "clone into a new network namespace",
            format!("{}, {}, 0, 0, 0, 0", nr::CLONE, CLONE_NEWNET | SIGCHLD),
            EPERM,
        ),
        (
            "clone3, whose flags the filter cannot read",
            format!("{}, 0, 0", nr::CLONE3),
            ENOSYS,
        ),
        ("setns", format!("{}, 0, 0", nr::SETNS), EPERM),
        (
            "mount",
            format!("{}, $none, $mnt, $tmpfs, 0, 0", nr::MOUNT),
            EPERM,
        ),
        (
            "open_tree",
            format!("{}, -100, $root, 0", nr::OPEN_TREE),
            EPERM,
        ),
        ("fsopen", format!("{}, $tmpfs, 0", nr::FSOPEN), EPERM),
        (
            "an AF_VSOCK socket",
            format!("{}, 40, 1, 0", nr::SOCKET),
            EPERM,
        ),
        ("keyctl", format!("{}, 0, 0, 0, 0, 0", nr::KEYCTL), EPERM),
        ("bpf", format!("{}, 0, 0, 0", nr::BPF), EPERM),
        ("io_uring", format!("{}, 8, 0", nr::IO_URING_SETUP), EPERM),
    ];
    let mut wrong = Vec::new();
    for (what, args, want) in &cases {
        let got = errno_of(d, PLAIN, args);
        if got != *want {
            wrong.push(format!("{what}: errno {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "the filter let through: {wrong:#?}");
}

#[test]
fn unshare_says_not_permitted_without_nesting() {
    let d = daemon();
    for args in [
        &["unshare", "-U", "true"][..],
        &["unshare", "-Ur", "id"][..],
    ] {
        let out = d.exec(PLAIN, args);
        assert_ne!(out.code, 0, "{args:?} must fail in a box without nesting");
        assert!(
            out.stderr_str().contains("Operation not permitted"),
            "{args:?}: {}",
            out.stderr_str()
        );
    }
    assert!(
        d.get(PLAIN)["config"].get("nesting").is_none(),
        "nesting is off unless asked for"
    );
}

#[test]
fn everyday_tools_work_under_the_filter() {
    let d = daemon();
    let script = "set -e
        printf 'b\\na\\nb\\n' | sort | uniq | tr -d '\\n'; echo
        su -s /bin/sh nobody -c 'id -u'
        chroot / true && echo chroot-ok
        perl -e 'my $p = fork; if ($p == 0) { exit 7 } waitpid($p, 0); print $? >> 8, \"\\n\"'
        perl -e 'socket(my $s, 2, 1, 0) or die \"inet: $!\"; print \"inet-ok\\n\"'
        setarch x86_64 -R true && echo setarch-ok
        dd if=/dev/zero of=/tmp/z bs=64k count=16 status=none && sync /tmp/z && echo io-ok
        tar -C /etc -cf - hostname | tar -tf -";
    let out = d.sh(PLAIN, script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "ab",
            "65534",
            "chroot-ok",
            "7",
            "inet-ok",
            "setarch-ok",
            "io-ok",
            "hostname"
        ],
        "{out}"
    );
}

#[test]
fn nesting_opts_in_to_containers_inside() {
    let d = daemon();
    assert_eq!(d.get(NESTED)["config"]["nesting"], true);
    let root = d.sh(NESTED, "unshare -Ur id -u");
    assert_eq!(root.trim(), "0", "root in a user namespace of its own");
    let mounted = d.sh(
        NESTED,
        "unshare -Urm sh -c 'mount -t tmpfs none /mnt && touch /mnt/inner && ls /mnt'",
    );
    assert_eq!(mounted.trim(), "inner", "a mount in its own namespace");
    // The mount stayed in that namespace: the box's own /mnt is untouched.
    let outside = d.sh(NESTED, "ls -A /mnt");
    assert_eq!(outside.trim(), "");
    // What nesting does not open.
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(
            errno_of(d, NESTED, &format!("{}, 40, 1, 0", nr::SOCKET)),
            EPERM
        );
        assert_eq!(errno_of(d, NESTED, &format!("{}, 0, 0, 0", nr::BPF)), EPERM);
    }
}

/// Every box's user namespace is owned by host root, so without limits of
/// its own one box holding the host's 128 inotify instances left none to
/// other boxes or to root on the host.
#[test]
fn one_box_cannot_use_up_the_hosts_inotify() {
    let d = daemon();
    d.sh(
        PLAIN,
        "rm -f /tmp/held; setsid -f perl -e '
            my $n = 0;
            while (syscall(294, 0) >= 0) { $n++; last if $n > 5000 }
            my $err = $! + 0;
            open(my $f, \">\", \"/tmp/held.tmp\") or die;
            print $f \"$n $err $$\\n\"; close $f;
            rename \"/tmp/held.tmp\", \"/tmp/held\";
            sleep 300' >/dev/null 2>&1",
    );
    let held = common::wait::wait_until(
        "the box to take all the inotify instances it may",
        std::time::Duration::from_secs(30),
        || {
            let out = d.exec(PLAIN, &["cat", "/tmp/held"]);
            if out.code == 0 {
                Ok(out.stdout_str())
            } else {
                Err(out.stderr_str())
            }
        },
    );
    let fields: Vec<i64> = held
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [n, errno, pid] = fields[..] else {
        panic!("held: {held:?}");
    };
    assert_eq!(errno, 24, "the box hits its own limit (EMFILE): {held}");
    assert!(
        (1..=256).contains(&n),
        "a box gets at most 256 inotify instances, got {n}"
    );
    let other = errno_of(d, NESTED, "294, 0");
    // inotify_init1 returns an fd (errno_of prints 0 for success).
    assert_eq!(other, 0, "another box still gets inotify");
    // SAFETY: inotify_init1 takes no pointers; the fd is closed at once.
    let fd = unsafe { libc::inotify_init1(0) };
    assert!(fd >= 0, "root on the host still gets inotify");
    // SAFETY: fd was returned by inotify_init1 above.
    unsafe { libc::close(fd) };
    d.sh(PLAIN, &format!("kill {pid}"));
}
