//! Port forwarding as the Sprites SDKs speak it, against a real daemon and
//! box: `bothy proxy` in front of a web server in the box, the `/proxy`
//! WebSocket driven by hand (echo, closes, and every way a client may try
//! to make the daemon connect somewhere else), and `/ports/watch`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::cli::Reaped;
use common::{pseudo_random_bytes, wait_until, Daemon, Shared};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

const BOX: &str = "pf";
const WEB_PORT: u16 = 8080;
const ECHO_PORT: u16 = 9000;
const GREETING: &str = "hello through the forward";
/// How long anything here may take: a box answers within a second or two.
const DEADLINE: Duration = Duration::from_secs(30);

const ECHO_SERVER: &str = "import socketserver as s
class H(s.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(65536)
            if not d:
                return
            self.request.sendall(d)
s.ThreadingTCPServer.allow_reuse_address = True
s.ThreadingTCPServer(('127.0.0.1', 9000), H).serve_forever()
";

static DAEMON: Shared = Shared::new();

fn daemon() -> &'static Daemon {
    DAEMON.get(|d| {
        d.create(BOX);
        d.sh(BOX, &format!("mkdir -p /srv/pf && echo '{GREETING}' > /srv/pf/greeting.txt"));
        put_service(d, "web", json!({
            "cmd": "python3",
            "args": ["-m", "http.server", WEB_PORT.to_string(), "--bind", "127.0.0.1", "--directory", "/srv/pf"],
        }));
        put_service(d, "echo", json!({"cmd": "python3", "args": ["-c", ECHO_SERVER]}));
        for port in [WEB_PORT, ECHO_PORT] {
            wait_listening(d, port);
        }
    })
}

fn put_service(d: &Daemon, name: &str, body: Value) {
    let r = d.api_json("PUT", &format!("/v1/sprites/{BOX}/services/{name}"), &body);
    assert_eq!(r.status, 200, "PUT service {name}: {}", r.text());
}

/// Waits until something in the box accepts connections on `port`.
fn wait_listening(d: &Daemon, port: u16) {
    let probe = format!("import socket; socket.create_connection(('127.0.0.1', {port}), 1)");
    wait_until(
        &format!("port {port} to listen in the box"),
        DEADLINE,
        || {
            let out = d.exec(BOX, &["python3", "-c", &probe]);
            if out.code == 0 {
                Ok(())
            } else {
                Err(out.stderr_str())
            }
        },
    );
}

fn free_local_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `path` as a WebSocket with `token` (none: no header).
async fn open(d: &Daemon, path: &str, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{}{path}", d.addr)
        .into_client_request()
        .expect("request");
    if let Some(t) = token {
        let v = HeaderValue::from_str(&format!("Bearer {t}")).expect("header");
        req.headers_mut().insert("authorization", v);
    }
    let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake in time")?;
    Ok(ws)
}

async fn next_message(ws: &mut Ws, within: Duration) -> Option<Message> {
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Err(_) => panic!("no message within {within:?}"),
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => return Some(m),
        }
    }
}

async fn next_json(ws: &mut Ws, within: Duration) -> Value {
    match next_message(ws, within).await {
        Some(Message::Text(t)) => serde_json::from_str(&t).expect("JSON text message"),
        other => panic!("expected a JSON text message, got {other:?}"),
    }
}

/// A forward asked with `init`: the server's answer.
async fn ask(d: &Daemon, init: Message) -> (Ws, Value) {
    let mut ws = open(d, &format!("/v1/sprites/{BOX}/proxy"), Some(&d.token))
        .await
        .expect("proxy upgrade");
    ws.send(init).await.expect("send init");
    let answer = next_json(&mut ws, DEADLINE).await;
    (ws, answer)
}

/// The server refuses, then closes.
async fn assert_refused(d: &Daemon, init: Message, says: &str) {
    let what = format!("{init:?}");
    let (mut ws, answer) = ask(d, init).await;
    assert_eq!(answer["status"], "error", "{what}: {answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains(says), "{what}: {error:?} lacks {says:?}");
    match next_message(&mut ws, DEADLINE).await {
        None | Some(Message::Close(_)) => {}
        Some(other) => panic!("{what}: after the error came {other:?}"),
    }
}

#[test]
fn bothy_proxy_serves_a_web_server_in_the_box_on_a_local_port() {
    let d = daemon();
    for json_flag in [false, true] {
        let local = free_local_port();
        let spec = format!("{local}:{WEB_PORT}");
        let mut args = vec!["proxy", "-s", BOX, spec.as_str()];
        if json_flag {
            args.insert(0, "--json");
        }
        let mut cmd = std::process::Command::new(common::daemon::BIN);
        cmd.args(&args)
            .env("BOTHY_API_URL", d.url())
            .env("BOTHY_TOKEN", &d.token)
            .env_remove("BOTHY_DATA_DIR")
            .current_dir(&d.scratch)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = Reaped(cmd.spawn().expect("start bothy proxy"));
        let stdout = child.0.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("bothy proxy says what it forwards");
        if json_flag {
            let v: Value = serde_json::from_str(&line).expect("a JSON line");
            assert_eq!(v["local"], format!("127.0.0.1:{local}"), "{line}");
            assert_eq!(v["sprite"], BOX);
            assert_eq!(v["remote_port"], WEB_PORT);
        } else {
            assert_eq!(
                line.trim(),
                format!("forwarding 127.0.0.1:{local} -> {BOX}:{WEB_PORT}")
            );
        }
        // Two requests: each connection gets its own forward.
        for _ in 0..2 {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", local)).expect("connect local");
            s.set_read_timeout(Some(DEADLINE)).expect("timeout");
            s.write_all(b"GET /greeting.txt HTTP/1.0\r\nHost: x\r\n\r\n")
                .expect("send request");
            let mut answer = String::new();
            s.read_to_string(&mut answer)
                .expect("read answer to the end");
            assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
            assert!(answer.contains(GREETING), "{answer}");
        }
    }
}

#[test]
fn bothy_proxy_refuses_bad_specs_as_usage_errors() {
    let d = daemon();
    for bad in ["abc", "0", "70000", "1:2:3", "8000:0"] {
        let out = d.cli(&["proxy", "-s", BOX, bad]).run();
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr_str());
        let err = out.stderr_str();
        assert!(
            err.contains("port") || err.contains("LOCAL"),
            "{bad}: {err}"
        );
    }
    let out = d.cli(&["proxy", "-s", "no-such-box", "18080:8080"]).run();
    assert_eq!(out.code, 1, "{}", out.stderr_str());
    assert!(
        out.stderr_str().contains("not found"),
        "{}",
        out.stderr_str()
    );
}

#[test]
fn proxy_carries_bytes_both_ways_and_closes_with_the_box_side() {
    let d = daemon();
    runtime().block_on(async {
        let init = json!({"host": "localhost", "port": ECHO_PORT}).to_string();
        let (mut ws, answer) = ask(d, Message::Text(init.into())).await;
        assert_eq!(
            answer,
            json!({"status": "connected", "target": format!("localhost:{ECHO_PORT}")})
        );
        let data = pseudo_random_bytes(300 * 1024, 7);
        let mut back = Vec::new();
        for chunk in data.chunks(50 * 1024) {
            ws.send(Message::Binary(chunk.to_vec().into()))
                .await
                .expect("send");
        }
        while back.len() < data.len() {
            match next_message(&mut ws, DEADLINE).await {
                Some(Message::Binary(b)) => back.extend_from_slice(&b),
                other => panic!("echo broke after {} bytes: {other:?}", back.len()),
            }
        }
        assert!(back == data, "the echo differs");
        ws.close(None).await.expect("close");

        // An HTTP/1.0 server closes after its answer: the forward closes too.
        let (mut ws, answer) = ask(
            d,
            Message::Text(json!({"port": WEB_PORT}).to_string().into()),
        )
        .await;
        assert_eq!(answer["status"], "connected", "{answer}");
        assert_eq!(answer["target"], format!("localhost:{WEB_PORT}"));
        ws.send(Message::Binary(
            b"GET /greeting.txt HTTP/1.0\r\n\r\n".to_vec().into(),
        ))
        .await
        .expect("send request");
        let mut answer = Vec::new();
        loop {
            match next_message(&mut ws, DEADLINE).await {
                Some(Message::Binary(b)) => answer.extend_from_slice(&b),
                None | Some(Message::Close(_)) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains(GREETING), "{text}");
    });
}

#[test]
fn proxy_reaches_nothing_but_the_box_loopback() {
    let d = daemon();
    runtime().block_on(async {
        let text = |v: Value| Message::Text(v.to_string().into());
        for host in [
            "10.0.0.1",
            "example.com",
            "169.254.0.53",
            "0.0.0.0",
            "127.0.0.2",
            "host.docker.internal",
        ] {
            assert_refused(
                d,
                text(json!({"host": host, "port": ECHO_PORT})),
                "loopback",
            )
            .await;
        }
        for port in [
            json!(0),
            json!(70000),
            json!(-1),
            json!(80.5),
            json!("8080"),
        ] {
            let says = if port.is_string() {
                "first message"
            } else {
                "port"
            };
            assert_refused(d, text(json!({"host": "localhost", "port": port})), says).await;
        }
        assert_refused(d, text(json!({"host": "localhost"})), "first message").await;
        assert_refused(d, Message::Text("GET / HTTP/1.1".into()), "first message").await;
        assert_refused(d, Message::Binary(vec![b' '; 5000].into()), "at most").await;
        // The loopback names that are allowed all reach the box.
        for host in ["127.0.0.1", "LOCALHOST", ""] {
            let (_ws, answer) = ask(d, text(json!({"host": host, "port": ECHO_PORT}))).await;
            assert_eq!(answer["status"], "connected", "{host:?}: {answer}");
        }
    });
}

#[test]
fn proxy_without_a_first_message_is_closed_after_the_deadline() {
    let d = daemon();
    runtime().block_on(async {
        let mut ws = open(d, &format!("/v1/sprites/{BOX}/proxy"), Some(&d.token))
            .await
            .expect("upgrade");
        let started = std::time::Instant::now();
        let answer = next_json(&mut ws, Duration::from_secs(20)).await;
        assert_eq!(answer["status"], "error", "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains("10 s"),
            "{answer}"
        );
        assert!(
            started.elapsed() >= Duration::from_secs(9),
            "{:?}",
            started.elapsed()
        );
    });
}

#[test]
fn proxy_and_watch_need_a_token_of_the_box_organisation() {
    let d = daemon();
    let other = d
        .cli(&["--json", "token", "create", "--org", "elsewhere"])
        .run()
        .assert_success("token create")
        .json();
    let other = other["token"].as_str().expect("token").to_string();
    runtime().block_on(async {
        for path in [
            format!("/v1/sprites/{BOX}/proxy"),
            format!("/v1/sprites/{BOX}/ports/watch"),
        ] {
            for (token, status) in [(None, 401), (Some(other.as_str()), 404)] {
                match open(d, &path, token).await {
                    Err(tungstenite::Error::Http(r)) => {
                        assert_eq!(r.status().as_u16(), status, "{path} {token:?}")
                    }
                    Err(e) => panic!("{path}: {e}"),
                    Ok(_) => panic!("{path} opened with {token:?}"),
                }
            }
        }
    });
}

fn ports_of(list: &Value) -> Vec<u64> {
    list["ports"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["port"].as_u64()).collect())
        .unwrap_or_default()
}

#[test]
fn ports_watch_lists_then_reports_openings_and_closings() {
    let d = daemon();
    runtime().block_on(async {
        let mut ws = open(d, &format!("/v1/sprites/{BOX}/ports/watch"), Some(&d.token))
            .await
            .expect("watch upgrade");
        let list = next_json(&mut ws, DEADLINE).await;
        assert_eq!(list["type"], "port_list", "{list}");
        let ports = ports_of(&list);
        assert!(ports.contains(&u64::from(WEB_PORT)), "{list}");
        assert!(ports.contains(&u64::from(ECHO_PORT)), "{list}");
        let web = list["ports"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["port"] == WEB_PORT))
            .cloned()
            .unwrap_or_default();
        assert_eq!(web["address"], "127.0.0.1", "{web}");
        assert!(web["pid"].as_u64().unwrap_or(0) > 0, "{web}");

        d.sh(
            BOX,
            "setsid -f python3 -m http.server 8099 --bind 127.0.0.1 >/dev/null 2>&1",
        );
        let opened = loop {
            let m = next_json(&mut ws, DEADLINE).await;
            if m["port"] == 8099 {
                break m;
            }
        };
        assert_eq!(opened["type"], "port_opened", "{opened}");
        let pid = opened["pid"].as_u64().unwrap_or(0);
        assert!(pid > 0, "{opened}");
        // The pid is the box's own: killing it there closes the port.
        d.sh(BOX, &format!("kill {pid}"));
        let closed = loop {
            let m = next_json(&mut ws, DEADLINE).await;
            if m["port"] == 8099 {
                break m;
            }
        };
        assert_eq!(closed["type"], "port_closed", "{closed}");
        ws.close(None).await.expect("close");
    });
}
