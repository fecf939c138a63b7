//! `bothy exec` and sessions against a real box: exit codes, byte-exact streams,
//! stdin, TTY mode, detach and re-attach.

mod common;

use std::time::Duration;

use common::{host_sha256, pseudo_random_bytes, wait_until, Daemon, Shared};

const BOX: &str = "exec-box";

static DAEMON: Shared = Shared::new();

fn daemon() -> &'static Daemon {
    DAEMON.get(|d| d.create(BOX))
}

#[test]
fn exit_codes_pass_through() {
    let d = daemon();
    for code in [0, 3, 255] {
        let out = d.exec(BOX, &["sh", "-c", &format!("exit {code}")]);
        assert_eq!(out.code, code, "stderr: {}", out.stderr_str());
    }
    let killed = d.exec(BOX, &["sh", "-c", "kill -9 $$"]);
    assert_eq!(killed.code, 137, "death by signal 9 is 128+9, like a shell");
}

#[test]
fn missing_command_exits_127_with_a_message() {
    let d = daemon();
    let out = d.exec(BOX, &["no-such-command-xyz"]);
    assert_eq!(out.code, 127, "stderr: {}", out.stderr_str());
    assert!(
        out.stderr_str().contains("no-such-command-xyz"),
        "the error names the command: {}",
        out.stderr_str()
    );
}

#[test]
fn stdout_and_stderr_are_separate_and_byte_exact() {
    let d = daemon();
    let out = d
        .exec(
            BOX,
            &[
                "sh",
                "-c",
                r"printf 'out\000\001\377\n'; printf 'err\376\000' >&2; printf 'more'",
            ],
        )
        .assert_success("printf");
    assert_eq!(out.stdout, b"out\x00\x01\xff\nmore");
    assert_eq!(out.stderr, b"err\xfe\x00");
}

#[test]
fn large_output_arrives_intact() {
    let d = daemon();
    let out = d
        .exec(
            BOX,
            &[
                "sh",
                "-c",
                "head -c 5000000 /dev/urandom > /tmp/big && cat /tmp/big && sha256sum /tmp/big >&2",
            ],
        )
        .assert_success("5 MB of random bytes");
    assert_eq!(out.stdout.len(), 5_000_000);
    let remote = common::first_word(&out.stderr_str());
    assert_eq!(
        host_sha256(&out.stdout),
        remote,
        "the bytes match the box's file"
    );
}

#[test]
fn stdin_is_streamed_with_eof() {
    let d = daemon();
    let data = pseudo_random_bytes(3 * 1024 * 1024 + 17, 7);
    let out = d
        .cli(&["exec", "-s", BOX, "--", "sha256sum"])
        .stdin(data.clone())
        .run()
        .assert_success("sha256sum of stdin");
    assert_eq!(common::first_word(&out.stdout_str()), host_sha256(&data));

    let echoed = d
        .cli(&["exec", "-s", BOX, "--", "cat"])
        .stdin(b"line one\nline two\n".to_vec())
        .run()
        .assert_success("cat");
    assert_eq!(echoed.stdout, b"line one\nline two\n");
}

#[test]
fn env_and_dir_flags_apply() {
    let d = daemon();
    let out = d
        .cli(&[
            "exec",
            "-s",
            BOX,
            "--dir",
            "/tmp",
            "--env",
            "FOO=bar,BAZ=qux",
            "--",
            "sh",
            "-c",
            "echo $PWD $FOO $BAZ",
        ])
        .run()
        .assert_success("exec --dir --env");
    assert_eq!(out.stdout_str(), "/tmp bar qux\n");
}

#[test]
fn tty_mode_gives_a_pty() {
    let d = daemon();
    let out = d
        .cli(&["exec", "-s", BOX, "--tty", "--", "tty"])
        .run()
        .assert_success("exec --tty tty");
    assert!(
        out.stdout_str().trim_start().starts_with("/dev/pts/"),
        "a TTY session runs on a pts: {:?}",
        out.stdout_str()
    );
    let plain = d
        .exec(BOX, &["sh", "-c", "tty || true"])
        .assert_success("tty");
    assert!(
        plain.stdout_str().contains("not a tty"),
        "without --tty there is no terminal: {:?}",
        plain.stdout_str()
    );
}

#[test]
fn sessions_survive_a_disconnect_and_can_be_reattached() {
    let d = daemon();
    let marker = "reattach-4711";
    let script = format!("sleep 3; echo {marker}-done");
    let mut client = d
        .cli(&["exec", "-s", BOX, "--", "sh", "-c", &script])
        .spawn_detached_io();

    let id = wait_until("the session to be listed", Duration::from_secs(30), || {
        d.sessions(BOX)
            .iter()
            .find(|s| s["command"].as_str().unwrap_or_default().contains(marker))
            .and_then(|s| s["id"].as_str().map(str::to_string))
            .ok_or_else(|| format!("{:?}", d.sessions(BOX)))
    });

    // Disconnect the way a laptop lid does: the client just vanishes.
    let _ = client.kill();
    let _ = client.wait();

    let listed = d
        .cli(&["sessions", "-s", BOX])
        .run()
        .assert_success("sessions");
    assert!(
        listed.stdout_str().contains(&id),
        "`bothy sessions` shows {id}: {}",
        listed.stdout_str()
    );

    let attached = d
        .cli(&["attach", &id, "-s", BOX])
        .run()
        .assert_success("attach");
    assert_eq!(attached.stdout_str(), format!("{marker}-done\n"));
}

#[test]
fn tty_session_reattaches_after_disconnect() {
    let d = daemon();
    let marker = "tty-reattach-99";
    let script = format!("sleep 3; echo {marker}-finished; exit 5");
    let mut client = d
        .cli(&["exec", "-s", BOX, "--tty", "--", "sh", "-c", &script])
        .spawn_detached_io();
    let id = wait_until(
        "the TTY session to be listed",
        Duration::from_secs(30),
        || {
            d.sessions(BOX)
                .iter()
                .find(|s| s["command"].as_str().unwrap_or_default().contains(marker))
                .and_then(|s| {
                    assert_eq!(s["tty"], true, "the session is a TTY session: {s}");
                    s["id"].as_str().map(str::to_string)
                })
                .ok_or_else(|| "not yet".to_string())
        },
    );
    let _ = client.kill();
    let _ = client.wait();

    let attached = d.cli(&["attach", &id, "-s", BOX]).run();
    assert_eq!(attached.code, 5, "attach returns the session's exit code");
    assert!(
        attached
            .stdout_str()
            .contains(&format!("{marker}-finished")),
        "output produced while detached is replayed: {:?}",
        attached.stdout_str()
    );
}
