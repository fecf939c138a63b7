//! The agent's fs requests fed what a confused or hostile daemon could
//! send, on a temporary socket in this process: malformed requests, values
//! out of range, frames out of order and oversized frames in the middle of
//! a write. Each gets an error or a closed connection, never a panic; a
//! write cut off leaves neither a changed file nor a temporary one; and the
//! agent keeps serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bothy_agent::client::{AgentClient, AgentError};
use bothy_agent::init::{serve, ServeOptions};
use bothy_agent::proto::{
    ErrorKind, Frame, FrameReader, FsCode, FsReply, FsRequest, Input, Reply, Request,
};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(10);

struct TestAgent {
    dir: tempfile::TempDir,
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
                    subreaper: false,
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
            dir,
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn client(&self) -> AgentClient {
        AgentClient::new(self.socket.clone())
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// The write's temporary files left in the directory.
    fn temp_files(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".bothy-upload-"))
            .collect()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

type Conn = (FrameReader<OwnedReadHalf>, OwnedWriteHalf);

async fn connect(socket: &Path) -> Conn {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (rd, wr) = stream.into_split();
    (FrameReader::new(rd), wr)
}

/// The next frame; `None` once the agent closed the connection (or sent
/// something that is not a frame).
async fn next(conn: &mut Conn) -> Option<Frame> {
    tokio::time::timeout(DEADLINE, conn.0.next())
        .await
        .expect("the agent answers or closes in time")
        .ok()
        .flatten()
}

/// Sends `bytes`; the agent may have closed the connection already.
async fn send(conn: &mut Conn, bytes: &[u8]) {
    let _ = conn.1.write_all(bytes).await;
}

fn fs_request(req: FsRequest) -> Vec<u8> {
    Frame::Request(Request::Fs(req)).encode().unwrap()
}

/// A request frame with `json` as its payload, whatever it says.
fn raw_request(json: &str) -> Vec<u8> {
    let mut out = u32::try_from(json.len() + 1)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.push(1);
    out.extend_from_slice(json.as_bytes());
    out
}

fn read(path: &str) -> FsRequest {
    FsRequest::Read {
        path: path.into(),
        working_dir: "/".into(),
    }
}

fn write(path: &str) -> FsRequest {
    FsRequest::Write {
        path: path.into(),
        working_dir: "/".into(),
        mode: None,
        mkdir_parents: false,
    }
}

fn fs_code(frame: Option<Frame>) -> Option<FsCode> {
    match frame {
        Some(Frame::Reply(Reply::Fs(FsReply::Failed { error }))) => Some(error.code),
        _ => None,
    }
}

fn is_bad_request(frame: &Option<Frame>) -> bool {
    matches!(
        frame,
        Some(Frame::Reply(Reply::Error {
            kind: ErrorKind::BadRequest,
            ..
        }))
    )
}

/// A request on a fresh connection and the agent's first answer.
async fn ask(agent: &TestAgent, bytes: &[u8]) -> Option<Frame> {
    let mut conn = connect(&agent.socket).await;
    send(&mut conn, bytes).await;
    next(&mut conn).await
}

#[tokio::test]
async fn malformed_fs_requests_are_refused() {
    let agent = TestAgent::start();
    for json in [
        r#"{"op":"fs"}"#,
        r#"{"op":"fs","fs_op":"read"}"#,
        r#"{"op":"fs","fs_op":"explode","path":"/"}"#,
        r#"{"op":"fs","fs_op":"chmod","path":"/","working_dir":"/","mode":-1,"recursive":false}"#,
        r#"{"op":"fs","fs_op":"watch","paths":"/","working_dir":"/","recursive":false}"#,
        r#"{"op":"fs","fs_op":"write","path":["x"],"working_dir":"/","mkdir_parents":false}"#,
    ] {
        let answer = ask(&agent, &raw_request(json)).await;
        assert!(is_bad_request(&answer), "{json}: {answer:?}");
    }
    // Data before any request.
    for first in [Frame::Data(vec![1; 100]), Frame::DataEnd] {
        let answer = ask(&agent, &first.encode().unwrap()).await;
        assert!(is_bad_request(&answer), "{first:?}: {answer:?}");
    }
    agent.client().ping().await.unwrap();
}

#[tokio::test]
async fn out_of_range_values_are_einval() {
    let agent = TestAgent::start();
    let file = agent.path("f");
    std::fs::write(&file, b"x").unwrap();
    let long = "a".repeat(5000);
    let too_many: Vec<String> = (0..65).map(|i| format!("/tmp/{i}")).collect();
    for req in [
        read("a\0b"),
        read(""),
        read(&long),
        FsRequest::Read {
            path: "x".into(),
            working_dir: "relative".into(),
        },
        FsRequest::Write {
            path: agent.path("m"),
            working_dir: "/".into(),
            mode: Some(0o17777),
            mkdir_parents: false,
        },
        FsRequest::Chmod {
            path: file.clone(),
            working_dir: "/".into(),
            mode: u32::MAX,
            recursive: false,
        },
        FsRequest::Watch {
            paths: vec![],
            working_dir: "/".into(),
            recursive: true,
        },
        FsRequest::Watch {
            paths: too_many,
            working_dir: "/".into(),
            recursive: false,
        },
        FsRequest::List {
            path: "/".into(),
            working_dir: "/\0".into(),
            recursive: false,
            pattern: None,
        },
    ] {
        let answer = ask(&agent, &fs_request(req.clone())).await;
        assert_eq!(fs_code(answer), Some(FsCode::EINVAL), "{req:?}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    agent.client().ping().await.unwrap();
}

/// Starts a write of `path` on a fresh connection: after `ready`.
async fn start_write(agent: &TestAgent, path: &str) -> Conn {
    let mut conn = connect(&agent.socket).await;
    send(&mut conn, &fs_request(write(path))).await;
    let ready = next(&mut conn).await;
    assert!(
        matches!(ready, Some(Frame::Reply(Reply::Fs(FsReply::Ready)))),
        "{ready:?}"
    );
    conn
}

#[tokio::test]
async fn a_write_fed_the_wrong_frames_changes_nothing() {
    let agent = TestAgent::start();
    let target = agent.path("target");
    std::fs::write(&target, b"old").unwrap();
    let data = Frame::Data(b"new bytes".to_vec()).encode().unwrap();

    // Frames a write does not take: answered EINVAL.
    for wrong in [
        Frame::Input(Input::Stdin(b"stdin".to_vec())),
        Frame::Input(Input::Signal(9)),
        Frame::Request(Request::Fs(read(&target))),
        Frame::Request(Request::Ping),
        Frame::Reply(Reply::Pong),
    ] {
        let mut conn = start_write(&agent, &target).await;
        send(&mut conn, &data).await;
        send(&mut conn, &wrong.encode().unwrap()).await;
        send(&mut conn, &Frame::DataEnd.encode().unwrap()).await;
        assert_eq!(
            fs_code(next(&mut conn).await),
            Some(FsCode::EINVAL),
            "{wrong:?}"
        );
        assert_eq!(next(&mut conn).await, None, "{wrong:?}: the write is over");
    }

    // What is not a frame at all: the connection ends.
    let mut oversized = (64u32 << 20).to_be_bytes().to_vec();
    oversized.extend(vec![7u8; 4096]);
    let mut unknown_kind = 5u32.to_be_bytes().to_vec();
    unknown_kind.extend([0x7f, 1, 2, 3, 4]);
    let mut data_end_with_payload = 3u32.to_be_bytes().to_vec();
    data_end_with_payload.extend([49, 1, 2]);
    let empty = 0u32.to_be_bytes().to_vec();
    let mut bad_json = 3u32.to_be_bytes().to_vec();
    bad_json.extend([1, b'{', b'{']);
    for (what, bytes) in [
        ("an oversized frame", oversized),
        ("an unknown kind", unknown_kind),
        ("a data end with a payload", data_end_with_payload),
        ("an empty frame", empty),
        ("a request that is not JSON", bad_json),
    ] {
        let mut conn = start_write(&agent, &target).await;
        send(&mut conn, &data).await;
        send(&mut conn, &bytes).await;
        send(&mut conn, &Frame::DataEnd.encode().unwrap()).await;
        let answer = next(&mut conn).await;
        assert!(
            answer.is_none() || fs_code(answer.clone()).is_some(),
            "{what}: {answer:?}"
        );
    }

    // Cut off half-way, and a second data end after a complete write.
    let mut conn = start_write(&agent, &target).await;
    send(&mut conn, &data).await;
    drop(conn);
    let mut conn = start_write(&agent, &agent.path("new")).await;
    send(&mut conn, &data).await;
    send(&mut conn, &Frame::DataEnd.encode().unwrap()).await;
    send(&mut conn, &Frame::DataEnd.encode().unwrap()).await;
    send(&mut conn, &data).await;
    let answer = next(&mut conn).await;
    assert!(
        matches!(&answer, Some(Frame::Reply(Reply::Fs(FsReply::Written { entry }))) if entry.size == 9),
        "{answer:?}"
    );
    assert_eq!(std::fs::read(agent.path("new")).unwrap(), b"new bytes");

    // The target was never touched, no temporary file stayed behind (once
    // the agent noticed the cut-off connection), and the agent serves on.
    let client = agent.client();
    for _ in 0..100 {
        if agent.temp_files().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(agent.temp_files(), Vec::<String>::new());
    assert_eq!(std::fs::read(&target).unwrap(), b"old");
    client.ping().await.unwrap();
    let mut file = client.fs_read(read(&target)).await.unwrap();
    assert_eq!(file.size, 3);
    assert_eq!(file.next().await.unwrap(), Some(b"old".to_vec()));
    assert_eq!(file.next().await.unwrap(), None);
}

#[tokio::test]
async fn frames_sent_to_a_read_list_or_watch_are_ignored_or_end_it() {
    let agent = TestAgent::start();
    let big = agent.path("big");
    let content: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &content).unwrap();

    // A read does not listen: data sent to it changes nothing. (Little
    // enough to fit the socket's buffer, as the agent does not read it.)
    let mut conn = connect(&agent.socket).await;
    send(&mut conn, &fs_request(read(&big))).await;
    send(&mut conn, &Frame::Data(vec![0; 16 << 10]).encode().unwrap()).await;
    send(&mut conn, &Frame::DataEnd.encode().unwrap()).await;
    let opened = next(&mut conn).await;
    assert!(
        matches!(opened, Some(Frame::Reply(Reply::Fs(FsReply::Opened { size }))) if size == content.len() as u64),
        "{opened:?}"
    );
    let mut got = Vec::new();
    loop {
        match next(&mut conn).await {
            Some(Frame::Data(d)) => got.extend(d),
            Some(Frame::DataEnd) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got == content, "the file came back whole");
    assert_eq!(std::fs::read(&big).unwrap().len(), content.len());

    // A count operation with junk after it: answered once.
    let mut conn = connect(&agent.socket).await;
    let chmod = FsRequest::Chmod {
        path: big.clone(),
        working_dir: "/".into(),
        mode: 0o600,
        recursive: false,
    };
    send(&mut conn, &fs_request(chmod)).await;
    send(&mut conn, &[0xff; 64]).await;
    let answer = next(&mut conn).await;
    assert!(
        matches!(
            answer,
            Some(Frame::Reply(Reply::Fs(FsReply::Count { count: 1 })))
        ),
        "{answer:?}"
    );

    // A watch ends when the client sends anything after subscribing.
    let mut conn = connect(&agent.socket).await;
    let watch = FsRequest::Watch {
        paths: vec![agent.dir.path().to_str().unwrap().into()],
        working_dir: "/".into(),
        recursive: true,
    };
    send(&mut conn, &fs_request(watch)).await;
    let subscribed = next(&mut conn).await;
    assert!(
        matches!(
            subscribed,
            Some(Frame::Reply(Reply::Fs(FsReply::Subscribed { .. })))
        ),
        "{subscribed:?}"
    );
    send(&mut conn, &Frame::Data(b"junk".to_vec()).encode().unwrap()).await;
    loop {
        // Events of the test's own files may come before the end.
        match next(&mut conn).await {
            None => break,
            Some(Frame::Reply(Reply::Fs(FsReply::Event { .. }))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    let client = agent.client();
    client.ping().await.unwrap();
    let listed = client
        .fs_list(FsRequest::List {
            path: agent.dir.path().to_str().unwrap().into(),
            working_dir: "/".into(),
            recursive: false,
            pattern: Some("big".into()),
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].mode, "0600");
    let err = client.fs_read(read(&agent.path("missing"))).await.err();
    assert!(
        matches!(&err, Some(AgentError::Fs(e)) if e.code == FsCode::ENOENT),
        "{err:?}"
    );
}
