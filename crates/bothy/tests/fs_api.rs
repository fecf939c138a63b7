//! The fs API on real boxes: every operation, its errors, paths that try to
//! leave the box, a 1 GiB file through a daemon that never holds it, and a
//! call that wakes a cold box.

mod common;

use std::process::Command;

use common::Daemon;
use serde_json::{json, Value};

/// Percent-encodes a query value.
fn q(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn write(d: &Daemon, sprite: &str, path: &str, wd: &str, body: &[u8]) -> common::http::Response {
    d.request(
        "PUT",
        &format!(
            "/v1/sprites/{sprite}/fs/write?path={}&workingDir={}&mkdirParents=true",
            q(path),
            q(wd)
        ),
    )
    .token(&d.token)
    .raw_body("application/octet-stream", body.to_vec())
    .send(d.addr)
}

fn read(d: &Daemon, sprite: &str, path: &str, wd: &str) -> common::http::Response {
    d.api(
        "GET",
        &format!(
            "/v1/sprites/{sprite}/fs/read?path={}&workingDir={}",
            q(path),
            q(wd)
        ),
    )
}

fn list(d: &Daemon, sprite: &str, path: &str, extra: &str) -> Value {
    let r = d.api(
        "GET",
        &format!(
            "/v1/sprites/{sprite}/fs/list?path={}&workingDir=/{extra}",
            q(path)
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn fs_error(r: &common::http::Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["code"], code, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

#[test]
fn every_operation_and_its_errors() {
    let d = Daemon::start();
    d.create("fsb");
    let r = write(&d, "fsb", "a/b/hello.txt", "/srv", b"hello");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["size"], 5);
    assert_eq!(read(&d, "fsb", "/srv/a/b/hello.txt", "/").body, b"hello");
    assert_eq!(d.sh("fsb", "cat /srv/a/b/hello.txt"), "hello");

    // Listing a file is its stat; a directory lists its children.
    let v = list(&d, "fsb", "/srv/a/b/hello.txt", "");
    assert_eq!(v["entries"][0]["name"], "hello.txt");
    assert_eq!(v["entries"][0]["isDir"], false);
    assert_eq!(v["entries"][0]["mode"], "0644");
    assert!(v["entries"][0]["modTime"].as_str().unwrap().ends_with('Z'));
    let v = list(&d, "fsb", "/srv/a", "");
    assert_eq!(v["entries"][0]["name"], "b");
    assert_eq!(v["entries"][0]["isDir"], true);
    let v = list(&d, "fsb", "/srv", "&recursive=true&pattern=*.txt");
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(v["entries"][0]["name"], "a/b/hello.txt");

    let r = d.api_json(
        "POST",
        "/v1/sprites/fsb/fs/chmod",
        &json!({"path": "a/b/hello.txt", "workingDir": "/srv", "mode": "0755"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.sh("fsb", "stat -c %a /srv/a/b/hello.txt"), "755\n");
    let r = d.api_json(
        "POST",
        "/v1/sprites/fsb/fs/chown",
        &json!({"path": "/srv/a", "uid": 1000, "gid": "nogroup", "recursive": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        d.sh("fsb", "stat -c %u:%G /srv/a/b/hello.txt"),
        "1000:nogroup\n"
    );
    // Overwriting keeps the owner and mode.
    assert_eq!(
        write(&d, "fsb", "/srv/a/b/hello.txt", "/", b"again").status,
        200
    );
    assert_eq!(
        d.sh("fsb", "stat -c %u:%a /srv/a/b/hello.txt"),
        "1000:755\n"
    );

    let r = d.api_json(
        "POST",
        "/v1/sprites/fsb/fs/copy",
        &json!({"source": "/srv/a", "dest": "/srv/c", "recursive": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(read(&d, "fsb", "/srv/c/b/hello.txt", "/").body, b"again");
    let r = d.api_json(
        "POST",
        "/v1/sprites/fsb/fs/rename",
        &json!({"source": "c", "dest": "d", "workingDir": "/srv"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    fs_error(&read(&d, "fsb", "/srv/c/b/hello.txt", "/"), 404, "ENOENT");

    // Errors, with their codes.
    fs_error(&read(&d, "fsb", "/srv/d", "/"), 400, "EISDIR");
    fs_error(
        &read(&d, "fsb", "/srv/d/b/hello.txt/x", "/"),
        400,
        "ENOTDIR",
    );
    fs_error(
        &d.api("DELETE", "/v1/sprites/fsb/fs/delete?path=/srv/d"),
        400,
        "ENOTEMPTY",
    );
    fs_error(
        &d.api("DELETE", "/v1/sprites/fsb/fs/delete?path=/nope"),
        404,
        "ENOENT",
    );
    let r = d.api(
        "DELETE",
        "/v1/sprites/fsb/fs/delete?path=/srv/d&recursive=true",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    fs_error(
        &d.api("GET", "/v1/sprites/fsb/fs/list?path=/srv/d"),
        404,
        "ENOENT",
    );
    fs_error(
        &d.api("GET", "/v1/sprites/fsb/fs/read?path=a%00b"),
        400,
        "EINVAL",
    );
    fs_error(
        &d.api("GET", "/v1/sprites/fsb/fs/read?path=x&workingDir=rel"),
        400,
        "EINVAL",
    );
    fs_error(
        &d.api("GET", "/v1/sprites/fsb/fs/read?workingDir=/"),
        400,
        "EINVAL",
    );
    let long = "a".repeat(5000);
    fs_error(
        &d.api("GET", &format!("/v1/sprites/fsb/fs/read?path={long}")),
        400,
        "EINVAL",
    );
    let r = d
        .request("PUT", "/v1/sprites/fsb/fs/write?path=/tmp/m&mode=0999")
        .token(&d.token)
        .raw_body("application/octet-stream", b"x".to_vec())
        .send(d.addr);
    fs_error(&r, 400, "EINVAL");
    let r = d
        .request("POST", "/v1/sprites/fsb/fs/chmod")
        .token(&d.token)
        .raw_body("application/json", b"{not json".to_vec())
        .send(d.addr);
    fs_error(&r, 400, "EINVAL");
    let r = d.api_json(
        "POST",
        "/v1/sprites/fsb/fs/chown",
        &json!({"path": "/srv", "uid": 70000}),
    );
    fs_error(&r, 400, "EINVAL");
    let r = write_no_parents(&d, "fsb", "/nodir/deeper/x");
    fs_error(&r, 404, "ENOENT");
    assert_eq!(d.sh("fsb", "test -e /nodir || echo gone"), "gone\n");
}

/// A write without `mkdirParents`, as both SDKs' `mkdir` sends it.
fn write_no_parents(d: &Daemon, sprite: &str, path: &str) -> common::http::Response {
    d.request(
        "PUT",
        &format!(
            "/v1/sprites/{sprite}/fs/write?path={}&workingDir=/&mkdirParents=false",
            q(path)
        ),
    )
    .token(&d.token)
    .raw_body("application/octet-stream", Vec::new())
    .send(d.addr)
}

/// Both SDKs make a directory by writing `dir/.keep` without
/// `mkdirParents` and deleting it: the write makes one missing level, as
/// mkdir(2) would, and `mkdirParents` makes them all.
#[test]
fn writes_make_the_missing_directory_as_mkdir_does() {
    let d = Daemon::start();
    d.create("mkd");
    d.sh("mkd", "umask 077; mkdir -p /srv/base");
    let r = write_no_parents(&d, "mkd", "/srv/base/one/.keep");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = d.api(
        "DELETE",
        "/v1/sprites/mkd/fs/delete?path=/srv/base/one/.keep",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(list(&d, "mkd", "/srv/base/one", "")["count"], 0);
    let v = list(&d, "mkd", "/srv/base", "");
    assert_eq!(v["entries"][0]["name"], "one");
    assert_eq!(v["entries"][0]["isDir"], true);
    assert_eq!(v["entries"][0]["mode"], "0755");
    assert_eq!(
        d.sh("mkd", "stat -c %U:%G:%a /srv/base/one"),
        "root:root:755\n"
    );
    // An existing directory is fine (the SDKs' mkdir of one that exists).
    let r = write_no_parents(&d, "mkd", "/srv/base/one/.keep");
    assert_eq!(r.status, 200, "{}", r.text());

    // Two missing levels: ENOENT, and nothing made.
    let r = write_no_parents(&d, "mkd", "/srv/base/two/three/.keep");
    fs_error(&r, 404, "ENOENT");
    assert_eq!(d.sh("mkd", "test -e /srv/base/two || echo none"), "none\n");
    // A file in the way.
    assert_eq!(write(&d, "mkd", "/srv/base/file", "/", b"x").status, 200);
    fs_error(
        &write_no_parents(&d, "mkd", "/srv/base/file/sub/.keep"),
        400,
        "ENOTDIR",
    );

    // mkdirParents makes every level, 0755 and root's, and keeps the
    // temporary-file dance: no leftovers.
    let r = write(&d, "mkd", "two/three/four/f", "/srv/base", b"deep");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        d.sh(
            "mkd",
            "cd /srv/base && stat -c '%n %U:%G:%a' two two/three two/three/four"
        ),
        "two root:root:755\ntwo/three root:root:755\ntwo/three/four root:root:755\n"
    );
    assert_eq!(
        read(&d, "mkd", "/srv/base/two/three/four/f", "/").body,
        b"deep"
    );
    assert_eq!(
        d.sh("mkd", "ls -A /srv/base/two/three/four /srv/base/one"),
        "/srv/base/one:\n.keep\n\n/srv/base/two/three/four:\nf\n"
    );
}

#[test]
fn paths_never_leave_the_box() {
    let d = Daemon::start();
    d.create("esc");
    // A marker on the host, where no call may reach it.
    let marker = format!("/tmp/bothy-fs-marker-{}", std::process::id());
    std::fs::write(&marker, "host secret").unwrap();
    let host_shadow = std::fs::read("/etc/shadow").unwrap_or_default();
    d.sh(
        "esc",
        &format!(
            "ln -s {marker} /tmp/abs && ln -s /proc/1/root{marker} /tmp/p1 && \
             ln -s /proc/self/root{marker} /tmp/pself && ln -s ../../../../..{marker} /tmp/rel && \
             echo box-shadow > /etc/shadow"
        ),
    );
    for (path, wd) in [
        (marker.as_str(), "/"),
        ("/tmp/abs", "/"),
        ("/tmp/p1", "/"),
        ("/tmp/pself", "/"),
        ("/tmp/rel", "/"),
        (&format!("/proc/1/root{marker}"), "/"),
        (&format!("/proc/self/root{marker}"), "/"),
        (&format!("../../..{marker}"), "/srv"),
    ] {
        let r = read(&d, "esc", path, wd);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.text().contains("host secret"));
    }
    let r = read(&d, "esc", "../../etc/shadow", "/");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body, b"box-shadow\n",
        "the box's own shadow, never the host's"
    );
    assert_ne!(r.body, host_shadow);

    // Writes through symlinks land in the box.
    for link in ["/tmp/abs", "/tmp/p1", "/tmp/pself", "/tmp/rel"] {
        assert_eq!(
            write(&d, "esc", link, "/", b"written").status,
            200,
            "{link}"
        );
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "host secret");
    }
    assert_eq!(d.sh("esc", &format!("cat {marker}")), "written");
    assert_eq!(write(&d, "esc", "../../../tmp/x", "/", b"x").status, 200);
    assert_eq!(d.sh("esc", "cat /tmp/x"), "x");

    // A link swapped while a big file is read: every byte still comes from
    // the box.
    d.sh(
        "esc",
        "head -c 64M /dev/zero > /tmp/big && ln -s /tmp/big /tmp/swap && \
         (for i in $(seq 200); do ln -sfn /proc/1/root/etc/hostname /tmp/swap; ln -sfn /tmp/big /tmp/swap; done) >/dev/null 2>&1 &",
    );
    for _ in 0..5 {
        let r = read(&d, "esc", "/tmp/swap", "/");
        assert!(!r.text().contains("host secret"));
    }
    let _ = std::fs::remove_file(&marker);
}

fn sha256_file(path: &str) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_gibibyte_moves_through_a_cold_box_without_the_daemon_holding_it() {
    let d = Daemon::start();
    d.create("big");
    let r = d.api_json("POST", "/v1/sprites/big/sleep", &json!({"cold": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.get("big")["status"], "cold");

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let back = dir.path().join("back");
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 1073741824 /dev/urandom > {}",
            src.display()
        ))
        .status()
        .unwrap();
    assert!(ok.success());
    let before = vm_hwm_kib(d.pid().unwrap());
    let url = d.url();
    let auth = format!("Authorization: Bearer {}", d.token);
    let status = Command::new("curl")
        .args(["-sS", "-f", "-o", "/dev/null", "-H", &auth])
        .args(["-H", "Content-Type: application/octet-stream", "-T"])
        .arg(&src)
        .arg(format!(
            "{url}/v1/sprites/big/fs/write?path=/root/big&workingDir=/"
        ))
        .status()
        .unwrap();
    assert!(status.success(), "upload");
    let status = Command::new("curl")
        .args(["-sS", "-f", "-H", &auth, "-o"])
        .arg(&back)
        .arg(format!(
            "{url}/v1/sprites/big/fs/read?path=/root/big&workingDir=/"
        ))
        .status()
        .unwrap();
    assert!(status.success(), "download");
    assert_eq!(
        sha256_file(src.to_str().unwrap()),
        sha256_file(back.to_str().unwrap())
    );
    let hwm = vm_hwm_kib(d.pid().unwrap());
    eprintln!("daemon peak RSS: {before} KiB before the transfer, {hwm} KiB after");
    // A fresh daemon peaks near 30 MiB; one box and its base image add a
    // few. Each transfer holds a few frames, never the file.
    assert!(
        before < 128 * 1024,
        "the daemon's peak RSS was already {before} KiB before the transfer"
    );
    assert!(
        hwm - before < 64 * 1024,
        "the daemon's peak RSS went from {before} to {hwm} KiB for a 1 GiB file"
    );
}

// ----- fs/watch -----

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long one watch event may take to arrive.
const WATCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn open_watch(d: &Daemon, sprite: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/v1/sprites/{sprite}/fs/watch", d.addr)
        .into_client_request()
        .expect("request");
    let auth = format!("Bearer {}", d.token).parse().expect("header");
    req.headers_mut().insert("authorization", auth);
    let (ws, _) = tokio::time::timeout(WATCH_DEADLINE, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake in time")
        .expect("handshake");
    ws
}

/// The next JSON message; `Err` with the close frame's code when the
/// watch ends instead.
async fn next_json(ws: &mut Ws) -> Result<Value, Option<u16>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(WATCH_DEADLINE, ws.next())
            .await
            .expect("a watch message in time");
        match m {
            Some(Ok(Message::Text(t))) => {
                return Ok(serde_json::from_str(t.as_str()).expect("JSON message"))
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => panic!("unexpected watch message {other:?}"),
            None | Some(Err(_)) => return Err(None),
        }
    }
}

async fn send_json(ws: &mut Ws, v: &Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        v.to_string().into(),
    ))
    .await
    .expect("send");
}

/// Reads events into `seen` until one is `event` (any if empty) of `path`
/// and passes `check`; returns it.
async fn event_of(
    ws: &mut Ws,
    seen: &mut Vec<Value>,
    event: &str,
    path: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let hit = |e: &Value| {
        e["type"] == "event"
            && (event.is_empty() || e["event"] == event)
            && e["path"] == path
            && check(e)
    };
    if let Some(e) = seen.iter().find(|e| hit(e)) {
        return e.clone();
    }
    loop {
        let e = next_json(ws).await.unwrap_or_else(|code| {
            panic!("the watch ended ({code:?}) before {event} {path}: {seen:?}")
        });
        assert_ne!(e["type"], "error", "{e} after {seen:?}");
        seen.push(e.clone());
        if hit(&e) {
            return e;
        }
    }
}

#[test]
fn watch_streams_the_changes_of_a_tree() {
    let d = Daemon::start();
    d.create("wat");
    d.sh("wat", "mkdir -p /srv/w/existing /srv/flat");
    runtime().block_on(async {
        let mut ws = open_watch(&d, "wat").await;
        send_json(
            &mut ws,
            &json!({"type": "subscribe", "paths": ["w"], "recursive": true, "workingDir": "/srv"}),
        )
        .await;
        assert_eq!(
            next_json(&mut ws).await.unwrap(),
            json!({"type": "subscribed", "paths": ["/srv/w"]})
        );
        let mut seen = Vec::new();

        // A new directory tree and a file in it, made before the agent
        // could watch the new directories: all picked up.
        d.sh(
            "wat",
            "mkdir -p /srv/w/new/deeper && printf hello > /srv/w/new/deeper/f.txt",
        );
        let dir = event_of(&mut ws, &mut seen, "create", "/srv/w/new", |_| true).await;
        assert_eq!(dir["isDir"], true, "{dir}");
        assert!(
            dir["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{dir}"
        );
        let deeper = event_of(&mut ws, &mut seen, "create", "/srv/w/new/deeper", |_| true).await;
        assert_eq!(deeper["isDir"], true);
        let f = "/srv/w/new/deeper/f.txt";
        // A create (made before its directory was watched) or a write
        // (after): either way with its size.
        let file = event_of(&mut ws, &mut seen, "", f, |e| {
            e["size"] == 5 && (e["event"] == "create" || e["event"] == "write")
        })
        .await;
        assert_eq!(file["isDir"], false, "{file}");

        // Later changes in the new subdirectory: the watch follows it.
        d.sh("wat", "printf ' world' >> /srv/w/new/deeper/f.txt");
        event_of(&mut ws, &mut seen, "write", f, |e| e["size"] == 11).await;

        // A write through the API: one write of the target, never its
        // temporary file.
        let r = write(&d, "wat", "/srv/w/existing/api.txt", "/", b"12345678");
        assert_eq!(r.status, 200, "{}", r.text());
        let e = event_of(
            &mut ws,
            &mut seen,
            "write",
            "/srv/w/existing/api.txt",
            |e| e["size"] == 8,
        )
        .await;
        assert_eq!(e["isDir"], false);
        d.sh("wat", "chmod 600 /srv/w/existing/api.txt");
        event_of(
            &mut ws,
            &mut seen,
            "chmod",
            "/srv/w/existing/api.txt",
            |_| true,
        )
        .await;
        d.sh("wat", "rm /srv/w/existing/api.txt && rm -r /srv/w/new");
        event_of(
            &mut ws,
            &mut seen,
            "remove",
            "/srv/w/existing/api.txt",
            |_| true,
        )
        .await;
        event_of(&mut ws, &mut seen, "remove", f, |_| true).await;
        event_of(&mut ws, &mut seen, "remove", "/srv/w/new", |e| {
            e["isDir"] == true
        })
        .await;
        assert!(
            !seen
                .iter()
                .any(|e| e.to_string().contains(".bothy-upload-")),
            "{seen:?}"
        );

        // Not recursive: a new directory is seen, what is made in it is not
        // (the marker after it shows the watch got that far).
        let mut flat = open_watch(&d, "wat").await;
        send_json(
            &mut flat,
            &json!({"type": "subscribe", "paths": ["/srv/flat"]}),
        )
        .await;
        assert_eq!(next_json(&mut flat).await.unwrap()["type"], "subscribed");
        d.sh(
            "wat",
            "mkdir /srv/flat/sub && touch /srv/flat/sub/inner /srv/flat/marker",
        );
        let mut flat_seen = Vec::new();
        event_of(&mut flat, &mut flat_seen, "create", "/srv/flat/sub", |_| {
            true
        })
        .await;
        event_of(
            &mut flat,
            &mut flat_seen,
            "create",
            "/srv/flat/marker",
            |_| true,
        )
        .await;
        assert!(
            !flat_seen.iter().any(|e| e["path"] == "/srv/flat/sub/inner"),
            "{flat_seen:?}"
        );

        // Closing the socket ends the watch; the box's agent lets it go.
        drop(ws);
        drop(flat);
    });
}

#[test]
fn bad_watch_subscriptions_get_an_error_message() {
    let d = Daemon::start();
    d.create("watbad");
    runtime().block_on(async {
        let too_many: Vec<String> = (0..65).map(|i| format!("/tmp/{i}")).collect();
        for (what, msg) in [
            ("not JSON", Value::String("{not json".into())),
            ("no paths", json!({"type": "subscribe"})),
            (
                "another type",
                json!({"type": "unsubscribe", "paths": ["/tmp"]}),
            ),
            ("no path", json!({"type": "subscribe", "paths": []})),
            (
                "over the limit",
                json!({"type": "subscribe", "paths": too_many}),
            ),
            (
                "a missing path",
                json!({"type": "subscribe", "paths": ["/nope"]}),
            ),
            ("an empty path", json!({"type": "subscribe", "paths": [""]})),
            (
                "a NUL",
                json!({"type": "subscribe", "paths": ["/tmp/a\u{0}b"]}),
            ),
            (
                "a relative workingDir",
                json!({"type": "subscribe", "paths": ["x"], "workingDir": "tmp"}),
            ),
            (
                "a wrong field type",
                json!({"type": "subscribe", "paths": "/tmp"}),
            ),
        ] {
            let mut ws = open_watch(&d, "watbad").await;
            match &msg {
                Value::String(raw) => {
                    use futures_util::SinkExt;
                    ws.send(tokio_tungstenite::tungstenite::Message::Text(
                        raw.clone().into(),
                    ))
                    .await
                    .unwrap();
                }
                v => send_json(&mut ws, v).await,
            }
            let e = next_json(&mut ws).await.expect(what);
            assert_eq!(e["type"], "error", "{what}: {e}");
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: {e}"
            );
            assert_eq!(next_json(&mut ws).await, Err(Some(1008)), "{what}");
        }
        // A binary first message.
        let mut ws = open_watch(&d, "watbad").await;
        {
            use futures_util::SinkExt;
            ws.send(tokio_tungstenite::tungstenite::Message::Binary(
                vec![0u8; 16].into(),
            ))
            .await
            .unwrap();
        }
        assert_eq!(next_json(&mut ws).await.unwrap()["type"], "error");
        // 64 paths is the limit, not beyond.
        d.sh("watbad", "mkdir -p $(seq -f /tmp/w%g 1 64)");
        let paths: Vec<String> = (1..=64).map(|i| format!("/tmp/w{i}")).collect();
        let mut ws = open_watch(&d, "watbad").await;
        send_json(&mut ws, &json!({"type": "subscribe", "paths": paths})).await;
        let sub = next_json(&mut ws).await.unwrap();
        assert_eq!(sub["type"], "subscribed", "{sub}");
        assert_eq!(sub["paths"].as_array().map(Vec::len), Some(64));
        // Messages after the subscription change nothing; the watch goes on.
        send_json(&mut ws, &json!({"type": "subscribe", "paths": ["/"]})).await;
        d.sh("watbad", "touch /tmp/w64/after");
        let mut seen = Vec::new();
        event_of(&mut ws, &mut seen, "create", "/tmp/w64/after", |_| true).await;
    });
    // The daemon is still serving.
    assert_eq!(d.sh("watbad", "echo alive"), "alive\n");
}
