//! `init::run` as pid 1 of a fresh pid namespace (made with `unshare`, as an
//! unprivileged user namespace), with the socket on fd 3, as in a box.
//!
//! This file is its own test binary on purpose: it waits for its own child
//! (`unshare`), which an in-process agent's reaper would steal.

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use bothy_agent::client::AgentClient;
use bothy_agent::proto::{Output, SpawnRequest};

const PID1_ENV: &str = "BOTHY_AGENT_TEST_PID1";
const DEADLINE: Duration = Duration::from_secs(20);

/// The agent's entry point when this binary is re-run inside the namespace;
/// a no-op in a normal test run.
#[test]
fn pid1_entry() {
    if std::env::var_os(PID1_ENV).is_some() {
        bothy_agent::init::run().unwrap();
    }
}

fn namespaces_available() -> bool {
    Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--mount-proc",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn run(client: &AgentClient, script: &str) -> (String, i32) {
    let session = client
        .spawn(SpawnRequest {
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            dir: Some("/".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let (mut reader, _writer) = session.split();
    let mut stdout = String::new();
    loop {
        match reader.next().await.unwrap() {
            Some(Output::Stdout(d)) => stdout.push_str(&String::from_utf8_lossy(&d)),
            Some(Output::Stderr(_)) => {}
            Some(Output::Exit(code)) => return (stdout, code),
            None => panic!("session ended without an exit"),
        }
    }
}

#[tokio::test]
async fn pid1_reaps_orphans_hides_its_socket_and_stops_on_sigterm() {
    assert!(
        namespaces_available(),
        "cannot create user+pid namespaces with unshare here: bothy needs them"
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--mount-proc",
    ])
    .arg(std::env::current_exe().unwrap())
    .args(["pid1_entry", "--exact", "--test-threads=1", "--nocapture"])
    .env(PID1_ENV, "1")
    .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut unshare = cmd.spawn().unwrap();
    drop(listener);
    let client = AgentClient::new(socket);

    let test = async {
        while client.ping().await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (out, code) = run(&client, "echo $PPID; sleep 0.1 & echo $!").await;
        assert_eq!(code, 0);
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("1"), "the agent is not pid 1: {out:?}");
        let orphan = lines.next().unwrap().to_string();
        // Gone from /proc means reaped, not merely exited (a zombie stays).
        let probe = format!("test -e /proc/{orphan} && echo present || echo gone");
        while run(&client, &probe).await.0.trim() != "gone" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (fds, _) = run(&client, "ls /proc/$$/fd").await;
        assert_eq!(fds.split_whitespace().collect::<Vec<_>>(), ["0", "1", "2"]);

        let long = client
            .spawn(SpawnRequest {
                cmd: vec!["sleep".into(), "60".into()],
                dir: Some("/".into()),
                max_run_after_disconnect_ms: Some(0),
                ..Default::default()
            })
            .await
            .unwrap();
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let init: i32 = std::fs::read_to_string(children)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: plain syscall to our grandchild.
        unsafe { libc::kill(init, libc::SIGTERM) };
        let (mut reader, _writer) = long.split();
        let mut exit = None;
        while let Some(out) = reader.next().await.unwrap() {
            if let Output::Exit(code) = out {
                exit = Some(code);
            }
        }
        assert_eq!(exit, Some(128 + libc::SIGTERM));
    };
    tokio::time::timeout(DEADLINE, test)
        .await
        .expect("pid 1 agent test timed out");
    let status = tokio::task::spawn_blocking(move || unshare.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "pid 1 did not exit cleanly: {status}");
}
