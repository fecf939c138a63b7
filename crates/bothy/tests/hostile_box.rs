//! A box whose root runs hostile code cannot exhaust the daemon through its
//! control socket, nor use its disk to raise privileges on the host.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use bothy_api::inbox::ENV_SOCKET;
use bothy_server::inbox::{BURST, IDLE_TIMEOUT_ENV, MAX_CONNECTIONS, REFILL};
use common::storage::{box_disk, box_id, checkpoints};
use common::{unique_name, wait_until, CliRun, Daemon, Shared};

static DAEMON: Shared = Shared::new();

/// The idle timeout of the box sockets in this test's daemon (the test
/// knob), short so that a test waits seconds, not the default.
const IDLE_MS: u64 = 1500;

fn daemon() -> &'static Daemon {
    DAEMON.get_with_env(&[(IDLE_TIMEOUT_ENV, &IDLE_MS.to_string())], |_| {})
}

/// A new box of this test.
fn new_box(d: &Daemon, prefix: &str) -> String {
    let name = unique_name(prefix);
    d.create(&name);
    name
}

/// Runs a perl script in the box (perl-base is in the base image), with
/// `args`; returns its stdout.
fn perl(d: &Daemon, name: &str, script: &str, args: &[&str]) -> String {
    let mut argv = vec!["perl", "-e", script, "--"];
    argv.extend_from_slice(args);
    d.exec(name, &argv)
        .assert_success("perl in the box")
        .stdout_str()
}

/// Open fds of process `pid`.
fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("cannot list the fds of {pid}: {e}"))
}

/// Opens `$ARGV[1]` non-blocking connections to the socket `$ARGV[0]` and
/// keeps those that connected; writes "PID CONNECTED REFUSED FAILED" to
/// `$ARGV[2]` (atomically) and then holds the connections until killed.
const FLOOD: &str = r#"
use strict; use Socket; use Fcntl;
my ($path, $n, $out) = @ARGV;
my @keep; my ($ok, $refused, $failed) = (0, 0, 0);
for (1 .. $n) {
    my $s;
    unless (socket($s, PF_UNIX, SOCK_STREAM, 0)) { $failed++; next }
    fcntl($s, F_SETFL, fcntl($s, F_GETFL, 0) | O_NONBLOCK);
    if (connect($s, pack_sockaddr_un($path))) { $ok++; push @keep, $s }
    elsif ($!{EAGAIN} || $!{EINPROGRESS}) { $refused++ }
    else { $failed++ }
}
open(my $f, '>', "$out.tmp") or die "$out.tmp: $!";
print $f "$$ $ok $refused $failed\n"; close $f;
rename("$out.tmp", $out) or die "rename: $!";
sleep 3600;
"#;

#[test]
fn a_connection_flood_costs_the_daemon_a_bounded_number_of_fds() {
    let d = daemon();
    let flooder = new_box(d, "flood");
    let victim = new_box(d, "victim");
    let pid = d.pid().expect("the daemon runs");
    let before = open_fds(pid);

    // Thousands of connections, held open, from a process that outlives
    // the exec session that started it.
    let attempts = 3000;
    d.exec(
        &flooder,
        &[
            "sh",
            "-c",
            "setsid -f perl -e \"$0\" \"$@\" </dev/null >/dev/null 2>&1",
            FLOOD,
            ENV_SOCKET,
            &attempts.to_string(),
            "/tmp/flood",
        ],
    )
    .assert_success("start the flood");
    let report = wait_until(
        "the flood to open its connections",
        Duration::from_secs(120),
        || {
            let out = d.exec(&flooder, &["cat", "/tmp/flood"]);
            if out.code == 0 {
                Ok(out.stdout_str())
            } else {
                Err(out.stderr_str())
            }
        },
    );
    let fields: Vec<usize> = report
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [flood_pid, connected, _refused, failed] = fields[..] else {
        panic!("unexpected flood report: {report:?}");
    };
    assert_eq!(failed, 0, "no socket failed oddly: {report}");
    assert!(
        connected > 10 * MAX_CONNECTIONS,
        "the flood holds far more connections than the cap: {report}"
    );

    // While the flood holds: the daemon's fds stay bounded, and another
    // box is served as usual (its API, exec, and its own socket).
    let bound = before + MAX_CONNECTIONS + 48;
    let mut most = 0;
    for _ in 0..5 {
        most = most.max(open_fds(pid));
        let status = d.get(&victim)["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(status, "running", "the other box's status answers");
        let out = d.sh(&victim, "echo still here");
        assert_eq!(out, "still here\n");
        most = most.max(open_fds(pid));
        d.exec(&victim, &["bothy-env", "checkpoints", "list"])
            .assert_success("bothy-env in the other box during the flood");
        most = most.max(open_fds(pid));
    }
    assert!(
        most <= bound,
        "the daemon held {most} fds during a flood of {connected} connections (before: {before}, bound: {bound})"
    );

    // The flood ends: the flooding box's own socket serves it again.
    d.exec(&flooder, &["kill", &flood_pid.to_string()])
        .assert_success("stop the flood");
    wait_until(
        "bothy-env to work again in the flooding box",
        Duration::from_secs(60),
        || {
            let out = d.exec(&flooder, &["bothy-env", "checkpoints", "list"]);
            if out.code == 0 {
                Ok(())
            } else {
                Err(out.stderr_str())
            }
        },
    );
    wait_until(
        "the daemon to close the flood's connections",
        Duration::from_secs(30),
        || {
            let now = open_fds(pid);
            if now <= before + 16 {
                Ok(())
            } else {
                Err(format!("{now} fds open, {before} before the flood"))
            }
        },
    );
}

/// Sends `$ARGV[1]` checkpoint creates, one connection each, to the socket
/// `$ARGV[0]`; prints per request "STATUS RETRY-AFTER ERROR-CODE COMPLETE",
/// then "elapsed SECONDS".
const BURSTS: &str = r#"
use strict; use Socket;
my ($path, $n) = @ARGV;
my $t0 = time;
for my $i (1 .. $n) {
    socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
    connect($s, pack_sockaddr_un($path)) or die "connect: $!";
    my $body = '{"comment":"burst"}';
    my $req = "POST /checkpoint HTTP/1.1\r\nHost: box\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n$body";
    syswrite($s, $req) == length($req) or die "write: $!";
    my ($resp, $buf) = ('', '');
    while (sysread($s, $buf, 65536)) { $resp .= $buf }
    close $s;
    my ($status) = $resp =~ m{^HTTP/1\.1 (\d+)};
    my ($retry) = $resp =~ m{^retry-after:\s*(\d+)}mi;
    my ($code) = $resp =~ m{"error":"([a-z_]+)"};
    my $complete = $resp =~ m{"type":"complete"} ? 1 : 0;
    print join(' ', $status // 0, $retry // '-', $code // '-', $complete), "\n";
}
print "elapsed ", time - $t0, "\n";
"#;

#[test]
fn checkpoints_from_a_box_are_rate_limited() {
    let d = daemon();
    let name = new_box(d, "burst");
    let requests = 2 * BURST as usize;
    let out = perl(d, &name, BURSTS, &[ENV_SOCKET, &requests.to_string()]);
    let mut admitted = 0;
    let mut limited = 0;
    let mut elapsed = None;
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            ["elapsed", secs] => elapsed = secs.parse::<u64>().ok(),
            ["200", _, _, complete] => {
                assert_eq!(complete, "1", "an admitted checkpoint completes: {out}");
                admitted += 1;
            }
            ["429", retry, code, _] => {
                assert_eq!(code, "rate_limited", "{out}");
                let retry: u64 = retry
                    .parse()
                    .unwrap_or_else(|_| panic!("429 without Retry-After: {out}"));
                assert!(
                    (1..=REFILL.as_secs()).contains(&retry),
                    "Retry-After {retry}: {out}"
                );
                limited += 1;
            }
            _ => panic!("unexpected answer {line:?} in:\n{out}"),
        }
    }
    let elapsed = elapsed.unwrap_or_else(|| panic!("no elapsed line: {out}"));
    assert_eq!(admitted + limited, requests, "{out}");
    // The bucket starts full and earns a token per REFILL meanwhile (+1 for
    // whole seconds rounding down).
    let most = BURST as usize + (elapsed / REFILL.as_secs()) as usize + 1;
    assert!(
        (BURST as usize..=most).contains(&admitted),
        "{admitted} of {requests} admitted in {elapsed}s (burst {BURST}):\n{out}"
    );
    assert!(limited > 0, "the burst ran out:\n{out}");

    // What was refused was not done.
    let made = checkpoints(d, &name, false).len();
    assert_eq!(
        made, admitted,
        "one checkpoint per admitted request:\n{out}"
    );

    // bothy-env says why; a restore is refused the same way and the box is
    // not restarted.
    let refused = d.exec(&name, &["bothy-env", "checkpoints", "create"]);
    assert_ne!(refused.code, 0, "over the limit: {}", refused.stdout_str());
    assert!(
        refused.stderr_str().contains("too many"),
        "the refusal says why: {}",
        refused.stderr_str()
    );
    d.sh(&name, "echo marker > /tmp/not-restarted");
    let restore = d.exec(&name, &["bothy-env", "checkpoints", "restore", "v1"]);
    assert_ne!(restore.code, 0, "restore over the limit");
    assert_eq!(d.sh(&name, "cat /tmp/not-restarted"), "marker\n");
    assert_eq!(
        checkpoints(d, &name, true).len(),
        admitted,
        "no safety checkpoint either"
    );
}

/// Connects to the socket `$ARGV[0]`; with `$ARGV[1]` = `partial` sends
/// half a request head, with `served` a whole request and reads its answer;
/// then waits (at most 30 s) for the daemon to close the connection and
/// prints "closed SECONDS" or "open".
const IDLE: &str = r#"
use strict; use Socket;
my ($path, $mode) = @ARGV;
socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
connect($s, pack_sockaddr_un($path)) or die "connect: $!";
my $buf = '';
if ($mode eq 'partial') {
    syswrite($s, "GET /checkpoints HTTP/1.1\r\nHost: box\r\n");
} elsif ($mode eq 'served') {
    syswrite($s, "GET /checkpoints HTTP/1.1\r\nHost: box\r\n\r\n");
    my $resp = '';
    until ($resp =~ /\r\n\r\n/ && do {
        my ($len) = $resp =~ /^content-length:\s*(\d+)/mi;
        defined $len && length($resp) - index($resp, "\r\n\r\n") - 4 >= $len
    }) {
        sysread($s, $buf, 4096) or die "closed before the answer: $!";
        $resp .= $buf;
    }
    $resp =~ m{^HTTP/1\.1 200} or die "not served: $resp";
}
my $t0 = time;
local $SIG{ALRM} = sub { print "open\n"; exit 0 };
alarm 30;
while (1) { my $n = sysread($s, $buf, 4096); last if !$n }
alarm 0;
print "closed ", time - $t0, "\n";
"#;

#[test]
fn idle_connections_are_closed() {
    let d = daemon();
    let name = new_box(d, "idle");
    for mode in ["silent", "partial", "served"] {
        let out = perl(d, &name, IDLE, &[ENV_SOCKET, mode]);
        let secs: u64 = out
            .strip_prefix("closed ")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("a {mode} connection was not closed: {out}"));
        // Whole seconds: the timeout is 1.5 s.
        assert!(
            secs <= IDLE_MS / 1000 + 5,
            "a {mode} connection was closed after {secs}s"
        );
    }
    // A well-behaved client is still served.
    d.exec(&name, &["bothy-env", "checkpoints", "list"])
        .assert_success("bothy-env after idle connections");
}

/// The per-mount options (field 6) of the mount at `mount_point`.
fn mount_options(mount_point: &Path) -> String {
    let table = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_else(|e| panic!("cannot read mountinfo: {e}"));
    let want = mount_point.to_string_lossy();
    // The last entry for the path is the mount on top.
    table
        .lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .filter(|f| f.get(4).is_some_and(|p| *p == want))
        .find_map(|f| f.get(5).map(|o| o.to_string()))
        .unwrap_or_else(|| panic!("{mount_point:?} is not mounted"))
}

#[test]
fn box_disks_are_mounted_nosuid_nodev_on_the_host() {
    let d = daemon();
    let name = new_box(d, "nosuid");
    let disk = box_disk(d, &name);
    let id = box_id(d, &name);
    let fuse = disk
        .mount
        .parent()
        .map(|instance| instance.join("fuse").join(&id))
        .unwrap_or_else(|| panic!("{:?} has a parent", disk.mount));
    // The box's idmapped view of its disk, its root.
    let root = disk
        .mount
        .parent()
        .and_then(|instance| {
            let name = instance.file_name()?.to_string_lossy().into_owned();
            Some(instance.with_file_name(format!("{name}.roots")))
        })
        .map(|roots| roots.join(&id).join("root"))
        .unwrap_or_else(|| panic!("{:?} has a parent", disk.mount));
    for mount in [&disk.mount, &fuse, &root] {
        let opts = mount_options(mount);
        let opts: Vec<&str> = opts.split(',').collect();
        assert!(
            opts.contains(&"nosuid") && opts.contains(&"nodev"),
            "{mount:?} is mounted {opts:?}"
        );
    }
    assert!(
        mount_options(&root).split(',').any(|o| o == "idmapped"),
        "the box's root is an idmapped mount"
    );

    // Host root plants a setuid-root program on the box's disk; a host user
    // who runs it from there stays who they are. (Group UID_SHIFT, the
    // boxes' root, lets the user through the instance directory.)
    let planted = disk.mount.join("suid-id");
    fs::copy("/usr/bin/id", &planted).unwrap_or_else(|e| panic!("copy id: {e}"));
    std::os::unix::fs::chown(&planted, Some(0), Some(0)).unwrap_or_else(|e| panic!("chown: {e}"));
    fs::set_permissions(
        &planted,
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap_or_else(|e| panic!("chmod: {e}"));
    let out = CliRun::program(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            &format!("--groups={}", bothy_runtime::UID_SHIFT),
        ],
    )
    .arg(&planted)
    .arg("-u")
    .run()
    .assert_success("the planted program runs");
    let _ = fs::remove_file(&planted);
    assert_eq!(
        out.stdout_str().trim(),
        "65534",
        "a setuid program on a box's disk gives a host user no privileges"
    );

    // Inside the box setuid programs still work (su, sudo).
    let inside = d.sh(
        &name,
        "cp /usr/bin/id /usr/local/bin/suid-id && chmod 4755 /usr/local/bin/suid-id \
         && su nobody -s /bin/sh -c '/usr/local/bin/suid-id -u; id -ru'",
    );
    assert_eq!(
        inside, "0\n65534\n",
        "setuid works inside the box, for a user of the box"
    );
}
