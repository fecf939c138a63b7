//! The agent served on a temporary socket in this process, driven through
//! `AgentClient` (and raw bytes, for the hostile cases).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bothy_agent::client::{AgentClient, AgentError, AgentSession};
use bothy_agent::init::{serve, ServeOptions};
use bothy_agent::proto::{Frame, FrameReader, Input, Output, Reply, SessionInfo, SpawnRequest};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(10);

struct TestAgent {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestAgent {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                let opts = ServeOptions {
                    services: None,
                    subreaper: true,
                    whole_namespace: false,
                };
                serve(listener, opts, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        Self {
            _dir: dir,
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn client(&self) -> AgentClient {
        AgentClient::new(self.socket.clone())
    }

    /// Stops the agent and waits until `serve` returned.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("timed out waiting for the agent")
}

/// Polls `check` until it returns Some, failing after the deadline.
async fn wait_for<T, F: Future<Output = Option<T>>>(mut check: impl FnMut() -> F) -> T {
    within(async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn req(cmd: &[&str]) -> SpawnRequest {
    SpawnRequest {
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        dir: Some("/tmp".into()),
        ..Default::default()
    }
}

struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<i32>,
}

async fn collect(session: AgentSession) -> Collected {
    let (mut reader, _writer) = session.split();
    let mut c = Collected {
        stdout: vec![],
        stderr: vec![],
        exit: None,
    };
    within(async {
        while let Some(out) = reader.next().await.unwrap() {
            match out {
                Output::Stdout(d) => c.stdout.extend(d),
                Output::Stderr(d) => c.stderr.extend(d),
                Output::Exit(code) => c.exit = Some(code),
            }
        }
    })
    .await;
    c
}

async fn session_info(client: &AgentClient, id: &str) -> Option<SessionInfo> {
    client
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.id == id)
}

#[tokio::test]
async fn echo_prints_and_exits_zero() {
    let agent = TestAgent::start();
    agent.client().ping().await.unwrap();
    let session = within(agent.client().spawn(req(&["echo", "hello"])))
        .await
        .unwrap();
    assert_eq!(session.info().command, "echo hello");
    assert_eq!(session.info().workdir, "/tmp");
    let out = collect(session).await;
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(out.exit, Some(0));
}

#[tokio::test]
async fn stdout_stderr_and_exit_code_are_separate() {
    let agent = TestAgent::start();
    let cmd = req(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let out = collect(agent.client().spawn(cmd).await.unwrap()).await;
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit, Some(3));
}

#[tokio::test]
async fn environment_and_working_directory() {
    let agent = TestAgent::start();
    let mut cmd = req(&["sh", "-c", "echo $FOO $HOME $LANG; pwd"]);
    cmd.env = vec!["FOO=bar".into()];
    cmd.dir = Some("/usr".into());
    let out = collect(agent.client().spawn(cmd).await.unwrap()).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bar /root C.UTF-8\n/usr\n"
    );
}

#[tokio::test]
async fn stdin_round_trips_and_eof_ends_cat() {
    let agent = TestAgent::start();
    let session = agent.client().spawn(req(&["cat"])).await.unwrap();
    let (mut reader, mut writer) = session.split();
    writer.send(Input::Stdin(b"ping\n".to_vec())).await.unwrap();
    let first = within(reader.next()).await.unwrap();
    assert_eq!(first, Some(Output::Stdout(b"ping\n".to_vec())));
    writer.send(Input::Stdin(b"pong".to_vec())).await.unwrap();
    writer.send(Input::StdinEof).await.unwrap();
    let mut rest = vec![];
    let exit = within(async {
        loop {
            match reader.next().await.unwrap() {
                Some(Output::Stdout(d)) => rest.extend(d),
                Some(Output::Exit(code)) => return code,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(rest, b"pong");
    assert_eq!(exit, 0);
    assert_eq!(within(reader.next()).await.unwrap(), None);
}

/// Reads stdout until it contains `needle`; returns everything read.
async fn read_until(reader: &mut bothy_agent::client::SessionReader, needle: &str) -> String {
    let mut seen = String::new();
    within(async {
        while !seen.contains(needle) {
            match reader.next().await.unwrap() {
                Some(Output::Stdout(d)) => seen.push_str(&String::from_utf8_lossy(&d)),
                other => panic!("unexpected {other:?} after {seen:?}"),
            }
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn tty_sessions_get_a_terminal_of_the_requested_size() {
    let agent = TestAgent::start();
    let mut cmd = req(&["sh", "-c", "tty; echo $TERM; stty size; read x; stty size"]);
    cmd.tty = true;
    cmd.cols = 100;
    cmd.rows = 30;
    let session = agent.client().spawn(cmd).await.unwrap();
    assert!(session.info().tty);
    let (mut reader, mut writer) = session.split();
    let seen = read_until(&mut reader, "30 100").await;
    assert!(seen.contains("/dev/pts/"), "{seen:?}");
    assert!(seen.contains("xterm-256color"), "{seen:?}");
    writer
        .send(Input::Resize {
            cols: 120,
            rows: 40,
        })
        .await
        .unwrap();
    writer.send(Input::Stdin(b"\n".to_vec())).await.unwrap();
    read_until(&mut reader, "40 120").await;
}

/// A `cat` on a terminal, once it is running.
async fn tty_cat(
    agent: &TestAgent,
) -> (
    bothy_agent::client::SessionReader,
    bothy_agent::client::SessionWriter,
) {
    let mut cmd = req(&["sh", "-c", "echo ready; exec cat"]);
    cmd.tty = true;
    let session = agent.client().spawn(cmd).await.unwrap();
    let (mut reader, writer) = session.split();
    read_until(&mut reader, "ready").await;
    (reader, writer)
}

#[tokio::test]
async fn ctrl_c_on_the_terminal_interrupts_the_foreground_process() {
    let agent = TestAgent::start();
    let (mut reader, mut writer) = tty_cat(&agent).await;
    writer.send(Input::Stdin(vec![0x03])).await.unwrap();
    assert_eq!(exit_of(&mut reader).await, 128 + libc::SIGINT);
}

#[tokio::test]
async fn detached_output_is_replayed_with_the_exit_code() {
    let agent = TestAgent::start();
    let client = agent.client();
    let mut cmd = req(&["sh", "-c", "echo before; read x; echo after $x; exit 4"]);
    cmd.max_run_after_disconnect_ms = Some(0);
    let session = client.spawn(cmd).await.unwrap();
    let id = session.info().id.clone();
    let (mut reader, writer) = session.split();
    assert_eq!(
        within(reader.next()).await.unwrap(),
        Some(Output::Stdout(b"before\n".to_vec()))
    );
    drop((reader, writer));
    wait_for(|| async { session_info(&client, &id).await.filter(|s| !s.attached) }).await;

    // Feed the process while nobody watches its output.
    let session = client.attach(&id).await.unwrap();
    let (_reader, mut writer) = session.split();
    writer.send(Input::Stdin(b"x\n".to_vec())).await.unwrap();
    drop((_reader, writer));
    let finished = wait_for(|| async {
        session_info(&client, &id)
            .await
            .filter(|s| s.exit_code.is_some() && !s.attached)
    })
    .await;
    assert_eq!(finished.exit_code, Some(4));

    let out = collect(client.attach(&id).await.unwrap()).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after x\n");
    assert_eq!(out.exit, Some(4));
    // The exit was delivered, so the session is gone.
    assert!(session_info(&client, &id).await.is_none());
    assert!(matches!(
        client.attach(&id).await,
        Err(AgentError::NoSuchSession(_))
    ));
}

#[tokio::test]
async fn non_tty_session_is_killed_after_max_run_after_disconnect() {
    let agent = TestAgent::start();
    let client = agent.client();
    let mut cmd = req(&["sleep", "30"]);
    cmd.max_run_after_disconnect_ms = Some(200);
    let session = client.spawn(cmd).await.unwrap();
    let id = session.info().id.clone();
    drop(session);
    let ended = wait_for(|| async {
        session_info(&client, &id)
            .await
            .filter(|s| s.exit_code.is_some())
    })
    .await;
    assert_eq!(ended.exit_code, Some(128 + libc::SIGKILL));
}

#[tokio::test]
async fn a_client_leaving_while_stdin_is_stuck_still_detaches() {
    let agent = TestAgent::start();
    let client = agent.client();
    // `sleep` never reads its stdin, so the pipe fills and the write waits.
    let mut cmd = req(&["sleep", "30"]);
    cmd.max_run_after_disconnect_ms = Some(200);
    let session = client.spawn(cmd).await.unwrap();
    let id = session.info().id.clone();
    let (reader, mut writer) = session.split();
    writer
        .send(Input::Stdin(vec![b'x'; 512 * 1024]))
        .await
        .unwrap();
    drop((reader, writer));
    let ended = wait_for(|| async {
        session_info(&client, &id)
            .await
            .filter(|s| s.exit_code.is_some())
    })
    .await;
    assert_eq!(ended.exit_code, Some(128 + libc::SIGKILL));
}

#[tokio::test]
async fn list_and_kill() {
    let agent = TestAgent::start();
    let client = agent.client();
    let mut cmd = req(&["sleep", "30"]);
    cmd.max_run_after_disconnect_ms = Some(0);
    let session = client.spawn(cmd).await.unwrap();
    let id = session.info().id.clone();
    let listed = session_info(&client, &id).await.unwrap();
    assert_eq!(listed.command, "sleep 30");
    assert!(listed.attached);
    assert!(listed.pid > 0);
    assert_eq!(listed.exit_code, None);

    client.kill(&id, libc::SIGTERM).await.unwrap();
    let out = collect(session).await;
    assert_eq!(out.exit, Some(128 + libc::SIGTERM));
    assert!(matches!(
        client.kill("no-such-id", 9).await,
        Err(AgentError::NoSuchSession(_))
    ));
    assert!(client.kill(&id, 1000).await.is_err());
}

#[tokio::test]
async fn a_new_attach_takes_over() {
    let agent = TestAgent::start();
    let client = agent.client();
    let mut cmd = req(&["cat"]);
    cmd.max_run_after_disconnect_ms = Some(0);
    let first = client.spawn(cmd).await.unwrap();
    let id = first.info().id.clone();
    let (mut first_reader, _first_writer) = first.split();
    let second = client.attach(&id).await.unwrap();
    assert_eq!(within(first_reader.next()).await.unwrap(), None);
    let (mut reader, mut writer) = second.split();
    writer.send(Input::Stdin(b"mine\n".to_vec())).await.unwrap();
    assert_eq!(read_until(&mut reader, "mine\n").await, "mine\n");
    client.kill(&id, libc::SIGKILL).await.unwrap();
}

#[tokio::test]
async fn unstartable_commands_are_spawn_errors() {
    let agent = TestAgent::start();
    let client = agent.client();
    let err = client
        .spawn(req(&["no-such-command-xyz"]))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, AgentError::Spawn(m) if m.contains("command not found")),
        "{err}"
    );
    let mut cmd = req(&["true"]);
    cmd.dir = Some("/no/such/dir".into());
    let err = client.spawn(cmd).await.err().unwrap();
    assert!(
        matches!(&err, AgentError::Spawn(m) if m.contains("/no/such/dir") && m.contains("does not exist")),
        "{err}"
    );
    let err = client.spawn(req(&[])).await.err().unwrap();
    assert!(matches!(err, AgentError::Spawn(_)), "{err}");
    client.ping().await.unwrap();
}

/// Sends raw bytes on a fresh connection and returns the agent's reply.
async fn raw_exchange(socket: &Path, bytes: &[u8]) -> Option<Frame> {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    // The agent may answer (and close) before reading everything.
    let _ = wr.write_all(bytes).await;
    within(FrameReader::new(rd).next()).await.ok().flatten()
}

#[tokio::test]
async fn garbage_and_oversized_frames_get_errors_and_the_agent_keeps_serving() {
    let agent = TestAgent::start();
    let is_bad_request = |f: Option<Frame>| {
        matches!(
            f,
            Some(Frame::Reply(Reply::Error {
                kind: bothy_agent::proto::ErrorKind::BadRequest,
                ..
            }))
        )
    };
    let garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(is_bad_request(raw_exchange(&agent.socket, garbage).await));
    let mut oversized = (64u32 << 20).to_be_bytes().to_vec();
    oversized.extend(vec![1u8; 4096]);
    assert!(is_bad_request(
        raw_exchange(&agent.socket, &oversized).await
    ));
    let bad_json = [0, 0, 0, 3, 1, b'{', b'{'];
    assert!(is_bad_request(raw_exchange(&agent.socket, &bad_json).await));
    let input_first = Frame::Input(Input::StdinEof).encode().unwrap();
    assert!(is_bad_request(
        raw_exchange(&agent.socket, &input_first).await
    ));
    // A connection that closes without a request at all.
    drop(
        tokio::net::UnixStream::connect(&agent.socket)
            .await
            .unwrap(),
    );
    agent.client().ping().await.unwrap();
}

fn is_zombie_or_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn orphans_are_reaped() {
    let agent = TestAgent::start();
    let cmd = req(&["sh", "-c", "sleep 0.2 & echo $!"]);
    let out = collect(agent.client().spawn(cmd).await.unwrap()).await;
    assert_eq!(out.exit, Some(0));
    let orphan: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // Wait until it is gone for good: not running, and not left a zombie.
    wait_for(|| async {
        std::fs::metadata(format!("/proc/{orphan}"))
            .is_err()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_delay_exit_forever() {
    let agent = TestAgent::start();
    let cmd = req(&["sh", "-c", "sleep 5 & echo started"]);
    let started = std::time::Instant::now();
    let out = collect(agent.client().spawn(cmd).await.unwrap()).await;
    assert_eq!(out.stdout, b"started\n");
    assert_eq!(out.exit, Some(0));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_background_child_that_never_stops_writing_does_not_hide_the_exit() {
    let agent = TestAgent::start();
    let out = collect(
        agent
            .client()
            .spawn(req(&["sh", "-c", "yes & exit 2"]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out.exit, Some(2));
    assert!(out.stdout.starts_with(b"y\n"));
}

#[tokio::test]
async fn an_attached_client_gets_every_byte_of_large_output() {
    let agent = TestAgent::start();
    let total = 8 * 1024 * 1024;
    let cmd = req(&["head", "-c", &total.to_string(), "/dev/zero"]);
    let out = collect(agent.client().spawn(cmd).await.unwrap()).await;
    assert_eq!(out.stdout.len(), total);
    assert_eq!(out.exit, Some(0));
}

#[tokio::test]
async fn detached_output_is_bounded_and_keeps_the_end() {
    let agent = TestAgent::start();
    let client = agent.client();
    let mut cmd = req(&["sh", "-c", "read x; head -c 3000000 /dev/zero; echo END"]);
    cmd.max_run_after_disconnect_ms = Some(0);
    let session = client.spawn(cmd).await.unwrap();
    let id = session.info().id.clone();
    let (reader, mut writer) = session.split();
    drop(reader);
    writer.send(Input::Stdin(b"go\n".to_vec())).await.unwrap();
    drop(writer);
    wait_for(|| async {
        session_info(&client, &id)
            .await
            .filter(|s| s.exit_code.is_some() && !s.attached)
    })
    .await;
    let out = collect(client.attach(&id).await.unwrap()).await;
    assert!(out.stdout.len() <= 1 << 20, "{}", out.stdout.len());
    assert!(out.stdout.ends_with(b"\0END\n"));
    assert_eq!(out.exit, Some(0));
}

#[tokio::test]
async fn stopping_the_agent_ends_its_sessions() {
    let mut agent = TestAgent::start();
    let mut cmd = req(&["sleep", "30"]);
    cmd.max_run_after_disconnect_ms = Some(0);
    let session = agent.client().spawn(cmd).await.unwrap();
    let pid = session.info().pid;
    tokio::task::spawn_blocking(move || agent.stop())
        .await
        .unwrap();
    wait_for(|| async { is_zombie_or_gone(pid).then_some(()) }).await;
    drop(session);
}

#[tokio::test]
async fn unreachable_agent_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let client = AgentClient::new(dir.path().join("nothing.sock"));
    assert!(matches!(
        client.ping().await,
        Err(AgentError::Unreachable(_))
    ));
}

#[tokio::test]
async fn spawn_to_exit_takes_milliseconds() {
    let agent = TestAgent::start();
    let client = agent.client();
    let mut times = vec![];
    for _ in 0..30 {
        let started = std::time::Instant::now();
        let out = collect(client.spawn(req(&["true"])).await.unwrap()).await;
        assert_eq!(out.exit, Some(0));
        times.push(started.elapsed());
    }
    times.sort();
    let p50 = times[times.len() / 2];
    // About 2 ms in a debug build; the bound leaves room for a busy machine.
    assert!(p50 < Duration::from_millis(50), "p50 {p50:?}");
}

/// Reads until the exit; returns it.
async fn exit_of(reader: &mut bothy_agent::client::SessionReader) -> i32 {
    within(async {
        loop {
            match reader.next().await.unwrap() {
                Some(Output::Exit(code)) => return code,
                Some(_) => {}
                None => panic!("the session ended without an exit"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_signal_input_ends_the_process_group_even_behind_unread_stdin() {
    let agent = TestAgent::start();
    // `sleep` never reads its stdin: the big write fills the pipe and waits.
    let session = agent
        .client()
        .spawn(req(&["sh", "-c", "sleep 30; echo survived"]))
        .await
        .unwrap();
    let (mut reader, mut writer) = session.split();
    writer
        .send(Input::Stdin(vec![b'x'; 512 * 1024]))
        .await
        .unwrap();
    writer.send(Input::Signal(libc::SIGTERM)).await.unwrap();
    assert_eq!(exit_of(&mut reader).await, 128 + libc::SIGTERM);
}

#[tokio::test]
async fn signal_numbers_out_of_range_are_ignored() {
    let agent = TestAgent::start();
    let (mut reader, mut writer) = tty_cat(&agent).await;
    for bad in [0, -9, 65, i32::MAX] {
        writer.send(Input::Signal(bad)).await.unwrap();
    }
    writer
        .send(Input::Stdin(b"still here\r".to_vec()))
        .await
        .unwrap();
    read_until(&mut reader, "still here\r\n").await;
    writer.send(Input::Signal(libc::SIGKILL)).await.unwrap();
    assert_eq!(exit_of(&mut reader).await, 128 + libc::SIGKILL);
}

/// A TTY session waiting in `read`: it answers `line:…` to a line and `eof`
/// to Ctrl-D.
fn read_one_line_on_a_terminal() -> SpawnRequest {
    let mut cmd = req(&[
        "sh",
        "-c",
        "echo ready; if read x; then echo line:$x; else echo eof; fi",
    ]);
    cmd.tty = true;
    cmd.max_run_after_disconnect_ms = Some(0);
    cmd
}

#[tokio::test]
async fn reattaching_to_a_terminal_drops_a_leading_stdin_eof_marker() {
    let agent = TestAgent::start();
    let client = agent.client();
    let session = client.spawn(read_one_line_on_a_terminal()).await.unwrap();
    let id = session.info().id.clone();
    let (mut reader, writer) = session.split();
    read_until(&mut reader, "ready").await;
    drop((reader, writer));
    wait_for(|| async { session_info(&client, &id).await.filter(|s| !s.attached) }).await;

    let session = client.attach(&id).await.unwrap();
    let (mut reader, mut writer) = session.split();
    writer.send(Input::Stdin(vec![4])).await.unwrap();
    writer
        .send(Input::Stdin(b"typed\r".to_vec()))
        .await
        .unwrap();
    let seen = read_until(&mut reader, "line:typed").await;
    assert!(!seen.contains("eof"), "{seen:?}");
    assert_eq!(exit_of(&mut reader).await, 0);
}

#[tokio::test]
async fn ctrl_d_still_reaches_a_terminal_otherwise() {
    let agent = TestAgent::start();
    let client = agent.client();
    // As the first keystroke of the client that started the session.
    let session = client.spawn(read_one_line_on_a_terminal()).await.unwrap();
    let (mut reader, mut writer) = session.split();
    read_until(&mut reader, "ready").await;
    writer.send(Input::Stdin(vec![4])).await.unwrap();
    read_until(&mut reader, "eof").await;

    // After a re-attaching client's first keystroke.
    let mut cmd = read_one_line_on_a_terminal();
    cmd.cmd[2] = format!("read first; echo got:$first; {}", cmd.cmd[2]);
    let session = client.spawn(cmd).await.unwrap();
    let id = session.info().id.clone();
    drop(session);
    wait_for(|| async { session_info(&client, &id).await.filter(|s| !s.attached) }).await;
    let (mut reader, mut writer) = client.attach(&id).await.unwrap().split();
    writer.send(Input::Stdin(b"one\r".to_vec())).await.unwrap();
    read_until(&mut reader, "ready").await;
    writer.send(Input::Stdin(vec![4])).await.unwrap();
    read_until(&mut reader, "eof").await;
}
