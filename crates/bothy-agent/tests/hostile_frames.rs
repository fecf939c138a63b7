//! The daemon's side of the agent protocol fed what a hostile box could
//! send: random bytes, huge length prefixes, truncated frames, broken UTF-8
//! and JSON, deeply nested JSON. The decoder, the frame reader and the
//! client must never panic, never set aside memory by an untrusted length
//! beyond one frame ([`MAX_FRAME`]), and end in a clear error.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bothy_agent::client::{AgentClient, AgentError};
use bothy_agent::proto::{
    Frame, FrameError, FrameReader, Output, Reply, SessionInfo, SpawnRequest, MAX_FRAME,
    MAX_PAYLOAD,
};
use bytes::BytesMut;
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

const KIND_REPLY: u8 = 2;

/// Every call of the client against a fake agent ends within this.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// Decodes `bytes` as the reader would, all at once: the frames, how it
/// ended (`None` = cleanly, between frames or wanting more bytes) and how
/// many bytes were left.
fn decode_all(bytes: &[u8]) -> (Vec<Frame>, Option<String>, usize) {
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    loop {
        let before = buf.len();
        match Frame::decode(&mut buf) {
            Ok(Some(frame)) => {
                assert!(buf.len() < before, "a decoded frame consumes bytes");
                frames.push(frame);
            }
            Ok(None) => return (frames, None, buf.len()),
            Err(e) => return (frames, Some(e.to_string()), buf.len()),
        }
        assert!(
            buf.capacity() <= 2 * bytes.len() + MAX_FRAME,
            "the buffer grew to {} bytes for {} bytes of input",
            buf.capacity(),
            bytes.len()
        );
    }
}

/// A frame header claiming `len` bytes of body, then `body`.
fn framed(len: u32, body: &[u8]) -> Vec<u8> {
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A reply frame with `payload` as its JSON.
fn reply_frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len() + 1).expect("a test payload fits a frame");
    let mut body = vec![KIND_REPLY];
    body.extend_from_slice(payload);
    framed(len, &body)
}

/// Hands out its bytes in the given chunk sizes, one chunk per read, as a
/// socket might.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    next: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let size = self
            .sizes
            .get(self.next)
            .copied()
            .unwrap_or(usize::MAX)
            .max(1);
        self.next += 1;
        let end = self.data.len().min(self.pos + size.min(buf.remaining()));
        let start = self.pos;
        buf.put_slice(&self.data[start..end]);
        self.pos = end;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Reads every frame of `bytes`, delivered in chunks of `sizes`.
fn read_all(bytes: &[u8], sizes: Vec<usize>) -> (Vec<Frame>, Option<String>) {
    runtime().block_on(async {
        let mut reader = FrameReader::new(Chunked {
            data: bytes.to_vec(),
            pos: 0,
            sizes,
            next: 0,
        });
        let mut frames = Vec::new();
        // Each frame takes at least 5 bytes: the loop is bounded.
        for _ in 0..=bytes.len() {
            match reader.next().await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, None),
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
        panic!("the reader returned more frames than the input can hold");
    })
}

/// Bytes that look like the start of frames: plausible headers, kinds the
/// protocol has, and random payloads.
fn frameish() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        Just(1u8),
        Just(2u8),
        Just(16u8),
        Just(17u8),
        Just(18u8),
        Just(19u8),
        Just(32u8),
        Just(33u8),
        Just(34u8),
        any::<u8>(),
    ];
    let one = (
        kind,
        proptest::collection::vec(any::<u8>(), 0..64),
        0u32..80,
    )
        .prop_map(|(kind, payload, claimed)| {
            let mut body = vec![kind];
            body.extend_from_slice(&payload);
            framed(claimed, &body)
        });
    proptest::collection::vec(one, 0..8).prop_map(|frames| frames.concat())
}

/// JSON-shaped garbage: fragments of the reply shapes, broken strings,
/// invalid UTF-8, numbers out of range.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b",".to_vec()),
        Just(b":".to_vec()),
        Just(b"\"type\"".to_vec()),
        Just(b"\"sessions\"".to_vec()),
        Just(b"\"session\"".to_vec()),
        Just(b"\"error\"".to_vec()),
        Just(b"\"kind\"".to_vec()),
        Just(b"\"pid\"".to_vec()),
        Just(b"99999999999999999999999".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"null".to_vec()),
        Just(b"\"\\ud800\"".to_vec()),
        Just(vec![b'"', 0xff, 0xfe, b'"']),
        Just(vec![b'"', 0xc3, b'"']),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(fragment, 0..40).prop_map(|f| f.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any bytes: frames or an error, never a panic, never a buffer larger
    /// than the input and one frame.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        decode_all(&bytes);
    }

    #[test]
    fn frame_like_bytes_never_panic(bytes in frameish()) {
        decode_all(&bytes);
    }

    /// A length prefix past the limit is refused from its 4 header bytes,
    /// before anything is set aside for it.
    #[test]
    fn huge_length_prefixes_are_refused_at_once(
        len in (MAX_PAYLOAD as u32 + 2)..=u32::MAX,
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let bytes = framed(len, &tail);
        let mut buf = BytesMut::from(&bytes[..]);
        let capacity = buf.capacity();
        prop_assert!(matches!(Frame::decode(&mut buf), Err(FrameError::TooLarge(_))));
        prop_assert_eq!(buf.capacity(), capacity);
    }

    /// A length prefix within the limit but not followed by its bytes
    /// waits for more, having set aside at most one frame.
    #[test]
    fn claimed_lengths_within_the_limit_reserve_at_most_a_frame(
        len in 1u32..=(MAX_PAYLOAD as u32 + 1),
        have in 0usize..64,
    ) {
        let body = vec![32u8; have.min(len as usize - 1)];
        let bytes = framed(len, &body);
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert!(matches!(Frame::decode(&mut buf), Ok(None)));
        prop_assert!(buf.capacity() <= MAX_FRAME + 64, "capacity {}", buf.capacity());
    }

    /// The reader sees the same frames, and ends the same way, however the
    /// bytes are cut into reads; a stream that ends inside a frame is an
    /// error, not a frame.
    #[test]
    fn chunking_does_not_change_what_is_read(
        bytes in prop_oneof![frameish(), proptest::collection::vec(any::<u8>(), 0..512)],
        sizes in proptest::collection::vec(1usize..32, 0..64),
    ) {
        let (whole, whole_end, left) = decode_all(&bytes);
        let (read, read_end) = read_all(&bytes, sizes);
        prop_assert_eq!(&read, &whole);
        match (whole_end, read_end) {
            // Wanting more bytes at the end of the stream is a truncation.
            (None, None) => prop_assert_eq!(left, 0, "a clean end consumed everything"),
            (None, Some(e)) => {
                prop_assert!(left > 0);
                prop_assert_eq!(e, FrameError::Truncated.to_string());
            }
            (Some(a), Some(b)) => prop_assert_eq!(a, b),
            (Some(a), None) => prop_assert!(false, "decode failed ({a}) but the reader did not"),
        }
    }

    /// Valid output frames cut anywhere: every whole frame before the cut,
    /// then a truncation error (or a clean end on a frame boundary).
    #[test]
    fn truncated_streams_yield_the_whole_frames_then_an_error(
        outputs in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..100).prop_map(Output::Stdout),
                proptest::collection::vec(any::<u8>(), 0..100).prop_map(Output::Stderr),
                any::<i32>().prop_map(Output::Exit),
            ],
            1..10,
        ),
        cut in any::<prop::sample::Index>(),
    ) {
        let encoded: Vec<Vec<u8>> = outputs
            .iter()
            .map(|o| Frame::Output(o.clone()).encode().expect("small frames encode"))
            .collect();
        let all = encoded.concat();
        let cut = cut.index(all.len() + 1);
        let (frames, end) = read_all(&all[..cut], vec![]);
        let mut boundary = 0;
        let mut whole = 0;
        for e in &encoded {
            if boundary + e.len() > cut {
                break;
            }
            boundary += e.len();
            whole += 1;
        }
        let expected: Vec<Frame> = outputs[..whole].iter().cloned().map(Frame::Output).collect();
        prop_assert_eq!(frames, expected);
        if boundary == cut {
            prop_assert_eq!(end, None);
        } else {
            prop_assert_eq!(end, Some(FrameError::Truncated.to_string()));
        }
    }

    /// Reply frames whose JSON is garbage are `Malformed`, never a panic.
    #[test]
    fn broken_reply_json_is_malformed(payload in jsonish()) {
        let bytes = reply_frame(&payload);
        let mut buf = BytesMut::from(&bytes[..]);
        match Frame::decode(&mut buf) {
            Ok(Some(Frame::Reply(_))) => {}
            Err(FrameError::Malformed(_)) | Err(FrameError::Empty) => {}
            other => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let deep = MAX_PAYLOAD - 64;
    let nested: Vec<Vec<u8>> = vec![
        vec![b'['; deep],
        b"{\"a\":".repeat(deep / 5),
        [
            &b"{\"type\":\"sessions\",\"sessions\":"[..],
            &vec![b'['; deep - 64],
        ]
        .concat(),
        [
            &b"{\"type\":\"error\",\"kind\":\"spawn\",\"message\":"[..],
            &b"{\"x\":[".repeat((deep - 64) / 6),
        ]
        .concat(),
    ];
    for payload in nested {
        let bytes = reply_frame(&payload);
        let mut buf = BytesMut::from(&bytes[..]);
        match Frame::decode(&mut buf) {
            Err(FrameError::Malformed(m)) => assert!(!m.is_empty()),
            other => panic!("nested JSON of {} bytes: {other:?}", payload.len()),
        }
    }
}

#[test]
fn invalid_utf8_in_strings_is_malformed() {
    let mut payload = b"{\"type\":\"error\",\"kind\":\"spawn\",\"message\":\"".to_vec();
    payload.extend_from_slice(&[0xff, 0xc0, 0x80]);
    payload.extend_from_slice(b"\"}");
    let bytes = reply_frame(&payload);
    assert!(matches!(
        Frame::decode(&mut BytesMut::from(&bytes[..])),
        Err(FrameError::Malformed(_))
    ));
}

/// A fake agent on a temporary socket: reads one request frame, answers
/// with `answer` and closes.
async fn fake_agent(answer: Vec<u8>) -> (tempfile::TempDir, AgentClient) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("agent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind the fake agent");
    tokio::spawn(async move {
        if let Ok((mut stream, _)) = listener.accept().await {
            let mut request = FrameReader::new(&mut stream);
            let _ = request.next().await;
            drop(request);
            let _ = stream.write_all(&answer).await;
            let _ = stream.shutdown().await;
            // Read until the client goes, so it sees the end of the stream,
            // not a reset.
            let mut sink = [0u8; 256];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    });
    (dir, AgentClient::new(socket))
}

fn session() -> SessionInfo {
    SessionInfo {
        id: "1".into(),
        command: "sh".into(),
        workdir: "/root".into(),
        tty: false,
        created_ms: 0,
        last_activity_ms: 0,
        attached: true,
        pid: 7,
        exit_code: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the agent answers to a request, the client returns (an
    /// error unless it happens to be a fitting reply) and never panics.
    #[test]
    fn the_client_survives_any_answer(
        answer in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            frameish(),
            jsonish().prop_map(|j| reply_frame(&j)),
        ],
        call in 0u8..3,
    ) {
        runtime().block_on(async {
            let (_dir, client) = fake_agent(answer).await;
            let done = tokio::time::timeout(CALL_DEADLINE, async {
                match call {
                    0 => client.ping().await.map(drop),
                    1 => client.list().await.map(drop),
                    _ => client.spawn(SpawnRequest::default()).await.map(drop),
                }
            })
            .await;
            assert!(done.is_ok(), "the call ended within {CALL_DEADLINE:?}");
        });
    }

    /// After a valid session reply, any bytes as the session's output: the
    /// reader yields outputs, then ends or fails; never panics.
    #[test]
    fn a_session_survives_any_output(
        tail in prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), frameish()],
    ) {
        runtime().block_on(async {
            let mut answer = Frame::Reply(Reply::Session { session: session() })
                .encode()
                .expect("a session reply encodes");
            answer.extend_from_slice(&tail);
            let (_dir, client) = fake_agent(answer).await;
            let attached = tokio::time::timeout(CALL_DEADLINE, client.attach("1")).await;
            let Ok(Ok(attached)) = attached else {
                panic!("a valid session reply attaches");
            };
            let (mut reader, _writer) = attached.split();
            let drained = tokio::time::timeout(CALL_DEADLINE, async {
                for _ in 0..=tail.len() {
                    match reader.next().await {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(AgentError::Protocol(_)) => return,
                        Err(e) => panic!("unexpected error kind: {e}"),
                    }
                }
                panic!("more outputs than the bytes can hold");
            })
            .await;
            assert!(drained.is_ok(), "the session ended within {CALL_DEADLINE:?}");
        });
    }
}
