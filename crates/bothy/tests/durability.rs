//! Boxes outlive the daemon: crashes, restarts, several daemons on one host, and a
//! clean host after a graceful stop.

mod common;

use std::time::Duration;

use common::cli::wait_with_deadline;
use common::{wait_until, Daemon};

#[test]
fn box_survives_daemon_sigkill() {
    let d = Daemon::start();
    d.create("crashy");
    d.sh("crashy", "echo before-crash > /root/keep.txt && sync");

    // A client attached to a long session while the daemon dies.
    let mut attached = d
        .cli(&[
            "exec",
            "-s",
            "crashy",
            "--",
            "sh",
            "-c",
            "sleep 600 # attached-crash",
        ])
        .spawn_detached_io();
    wait_until("the attached session", Duration::from_secs(30), || {
        let found = d.sessions("crashy").iter().any(|s| {
            s["command"]
                .as_str()
                .unwrap_or_default()
                .contains("attached-crash")
        });
        if found {
            Ok(())
        } else {
            Err("not listed".into())
        }
    });

    d.kill9();
    let status = wait_with_deadline(&mut attached, Duration::from_secs(30));
    let code = status.map(common::cli::exit_code);
    assert!(
        matches!(code, Some(c) if c != 0),
        "the attached CLI ends with an error when the daemon dies, not a hang or success: {code:?}"
    );

    d.spawn();
    let names = d.names();
    assert_eq!(names, vec!["crashy".to_string()], "the box is still listed");
    d.wait_running("crashy");
    let kept = d.sh("crashy", "cat /root/keep.txt");
    assert_eq!(kept, "before-crash\n", "a synced file survives the crash");
    let out = d
        .exec("crashy", &["echo", "alive"])
        .assert_success("exec after restart");
    assert_eq!(out.stdout_str(), "alive\n");
}

#[test]
fn graceful_stop_leaves_nothing_on_the_host_and_restart_boots_boxes() {
    let d = Daemon::start();
    d.create("tidy");
    d.sh("tidy", "echo kept > /root/f && sync");
    // A background process in the box must not keep anything alive either.
    d.sh("tidy", "nohup sleep 1000 >/dev/null 2>&1 &");

    assert_eq!(d.stop(), 0, "SIGTERM stops the daemon with exit code 0");
    let left = d.leftovers();
    assert!(
        left.is_empty(),
        "after SIGTERM nothing of the daemon is left on the host: {left:#?}"
    );

    d.spawn();
    d.wait_running("tidy");
    assert_eq!(
        d.sh("tidy", "cat /root/f"),
        "kept\n",
        "the disk survives a restart"
    );
    assert_eq!(d.stop(), 0);
    assert!(d.leftovers().is_empty(), "{:#?}", d.leftovers());
}

#[test]
fn two_daemons_side_by_side_are_independent() {
    let a = Daemon::start();
    let b = Daemon::start();
    a.create("same");
    b.create("same");
    a.create("only-a");

    assert_eq!(a.names(), vec!["only-a".to_string(), "same".to_string()]);
    assert_eq!(
        b.names(),
        vec!["same".to_string()],
        "b sees only its own boxes"
    );

    a.sh("same", "echo from-a > /root/who");
    b.sh("same", "echo from-b > /root/who");
    assert_eq!(a.sh("same", "cat /root/who"), "from-a\n");
    assert_eq!(b.sh("same", "cat /root/who"), "from-b\n");

    a.cli(&["destroy", "same", "--force"])
        .run()
        .assert_success("destroy in a");
    assert_eq!(a.names(), vec!["only-a".to_string()]);
    assert_eq!(
        b.names(),
        vec!["same".to_string()],
        "destroying in a leaves b's box"
    );
    assert_eq!(
        b.sh("same", "cat /root/who"),
        "from-b\n",
        "b's box still works"
    );

    let tokens_differ = a.token != b.token;
    assert!(tokens_differ, "each daemon has its own admin token");
    let cross = a.request("GET", "/v1/sprites").token(&b.token).send(a.addr);
    cross.assert_error(401, "b's token at a");
}

/// Needs the Debian mirror from inside the box: installing packages that stay is
/// what a bothy is for.
#[test]
fn apt_get_install_persists() {
    let d = Daemon::start();
    d.create("apt");
    let out = d
        .cli(&[
            "exec",
            "-s",
            "apt",
            "--env",
            "DEBIAN_FRONTEND=noninteractive",
            "--",
            "sh",
            "-c",
            "apt-get update -q && apt-get install -y -q cowsay",
        ])
        .timeout(Duration::from_secs(600))
        .run();
    assert_eq!(
        out.code,
        0,
        "apt-get inside the box\nstdout: {}\nstderr: {}",
        out.stdout_str(),
        out.stderr_str()
    );

    assert_eq!(d.stop(), 0);
    d.spawn();
    d.wait_running("apt");
    let moo = d
        .exec("apt", &["/usr/games/cowsay", "moo"])
        .assert_success("cowsay after a restart");
    assert!(moo.stdout_str().contains("moo"), "{}", moo.stdout_str());
    d.exec("apt", &["dpkg", "-s", "cowsay"])
        .assert_success("dpkg knows the package");
}
