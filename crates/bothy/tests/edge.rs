//! Box URLs through the edge, with real boxes, curl and raw sockets: a web
//! service in a box is one URL away, private URLs need a token of the box's
//! organisation (or a browser login), a sleeping box wakes for its first
//! request, HTTPS verifies against bothy's own CA, and requests built to
//! confuse the routing (spoofed hosts, smuggling, oversized heads) are
//! refused before they reach any box.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{CliRun, Daemon};
use serde_json::{json, Value};

/// An HTTP server for the box: `/headers` answers the request's headers as
/// JSON, POST echoes the body, an `Upgrade` request switches protocols and
/// echoes raw bytes.
const ECHO_SERVER: &str = r#"
import http.server, json, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.headers.get("Upgrade"):
            self.send_response(101)
            self.send_header("Upgrade", self.headers["Upgrade"])
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                b = self.rfile.read1(65536)
                if not b:
                    break
                self.wfile.write(b)
                self.wfile.flush()
            self.close_connection = True
            return
        body = json.dumps({"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                n = int(self.rfile.readline().strip(), 16)
                if n == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(n)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    address_family = __import__("socket").AF_INET6
S(("::", int(sys.argv[1])), H).serve_forever()
"#;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

/// A daemon with an edge-only listener and an HTTPS listener (bothy's CA).
struct Edge {
    d: Daemon,
    edge: u16,
    tls: u16,
}

impl Edge {
    fn start() -> Self {
        let (edge, tls) = (free_port(), free_port());
        let d = Daemon::start_with(
            vec![
                "--edge-wait".into(),
                "3s".into(),
                "--edge-listen".into(),
                format!("127.0.0.1:{edge}"),
                "--tls-listen".into(),
                format!("127.0.0.1:{tls}"),
            ],
            Vec::new(),
        );
        Self { d, edge, tls }
    }

    fn api_port(&self) -> u16 {
        self.d
            .url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("api port")
    }

    /// A box running the echo server as its HTTP service on `port`.
    fn web_box(&self, name: &str, port: u16) {
        self.d.create(name);
        let script = format!("mkdir -p /srv && cat > /srv/echo.py <<'EOF'\n{ECHO_SERVER}\nEOF\n");
        self.d.sh(name, &script);
        let r = self.d.api_json(
            "PUT",
            &format!("/v1/sprites/{name}/services/web"),
            &json!({"cmd": "python3", "args": ["/srv/echo.py", port.to_string()], "http_port": port}),
        );
        assert_eq!(r.status, 200, "service: {}", r.text());
    }

    fn set_auth(&self, name: &str, auth: &str) {
        let r = self.d.api_json(
            "PUT",
            &format!("/v1/sprites/{name}"),
            &json!({"url_settings": {"auth": auth}}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// curl against `url` resolving every name to 127.0.0.1; returns the status
/// and the body.
fn curl(port: u16, url: &str, extra: &[&str]) -> (u16, String) {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', ':']).next())
        .expect("host in url")
        .to_string();
    let resolve = format!("{host}:{port}:127.0.0.1");
    let mut args = vec![
        "-sS",
        "--max-time",
        "60",
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let out = CliRun::program("curl", &args).run();
    let text = out.stdout_str();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl {url}: {text:?} {}", out.stderr_str()));
    (code, body.to_string())
}

/// Sends raw bytes, returns the status code of the first answer (0 if the
/// connection closed without one).
fn raw(port: u16, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn headers_seen(body: &str) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap_or_default().to_ascii_lowercase(),
                h[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn header<'a>(seen: &'a [(String, String)], name: &str) -> Option<&'a str> {
    seen.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_public_web_service_is_one_url_away_with_streams_upgrades_and_forwarded_headers() {
    let e = Edge::start();
    let api = e.api_port();
    e.web_box("web", 8080);
    e.set_auth("web", "public");
    let sprite = e.d.get("web");
    assert_eq!(
        sprite["url"],
        format!("http://web.localhost:{}/", e.tls).replace("http:", "https:")
    );
    let out =
        e.d.cli(&["url", "-s", "web"])
            .run()
            .assert_success("bothy url");
    assert_eq!(
        out.stdout_str().trim(),
        sprite["url"].as_str().expect("url")
    );

    // The service may still be starting: the edge waits for it.
    let (code, body) = curl(
        api,
        &format!("http://web.localhost:{api}/headers?x=1"),
        &[
            "-H",
            "X-Forwarded-For: 6.6.6.6",
            "-H",
            "X-Forwarded-Host: other.localhost",
            "-H",
            &format!("Authorization: Bearer {}", e.d.token),
            "-H",
            "Cookie: app=1; bothy_session=stolen",
        ],
    );
    assert_eq!(code, 200, "{body}");
    let seen = headers_seen(&body);
    assert_eq!(
        header(&seen, "x-forwarded-for"),
        Some("127.0.0.1"),
        "the edge sets it, not the client: {seen:?}"
    );
    assert_eq!(
        header(&seen, "x-forwarded-host"),
        Some(format!("web.localhost:{api}").as_str())
    );
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        header(&seen, "host"),
        Some(format!("web.localhost:{api}").as_str())
    );
    assert_eq!(
        header(&seen, "authorization"),
        None,
        "the bothy token never reaches the box"
    );
    assert_eq!(
        header(&seen, "cookie"),
        Some("app=1"),
        "nor the session cookie"
    );

    // Host routing is case-insensitive and takes a trailing dot; the
    // edge-only listener serves the same box.
    let (code, _) = raw(
        api,
        format!("GET /headers HTTP/1.1\r\nHost: WEB.LocalHost.:{api}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(code, 200);
    let (code, _) = curl(
        e.edge,
        &format!("http://web.localhost:{}/headers", e.edge),
        &[],
    );
    assert_eq!(code, 200);
    let (code, body) = curl(
        e.edge,
        &format!("http://localhost:{}/v1/sprites", e.edge),
        &["-H", &format!("Authorization: Bearer {}", e.d.token)],
    );
    assert_eq!(
        code, 404,
        "the edge-only listener does not serve the API: {body}"
    );

    // A large body streams through both ways.
    let big = common::pseudo_random_bytes(8 << 20, 7);
    let file = std::env::temp_dir().join(format!("bothy-edge-body-{}", std::process::id()));
    std::fs::write(&file, &big).expect("write body");
    let out = CliRun::program(
        "curl",
        &[
            "-sS",
            "--resolve",
            &format!("web.localhost:{api}:127.0.0.1"),
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("http://web.localhost:{api}/echo"),
        ],
    )
    .run()
    .assert_success("curl post");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.stdout == big,
        "the echoed body differs ({} bytes back)",
        out.stdout.len()
    );

    // An upgrade switches protocols and the bytes flow both ways.
    let mut s = TcpStream::connect(("127.0.0.1", api)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read the 101");
        head.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"ping through the edge")
        .expect("write upgraded");
    let mut got = [0u8; 21];
    s.read_exact(&mut got).expect("read upgraded");
    assert_eq!(&got, b"ping through the edge");
}

#[test]
fn a_private_url_needs_a_token_of_its_organisation_and_switching_takes_effect_at_once() {
    let e = Edge::start();
    let api = e.api_port();
    e.web_box("priv", 8080);
    e.web_box("other", 8080);
    let url = format!("http://priv.localhost:{api}/headers");
    let bearer = format!("Authorization: Bearer {}", e.d.token);

    let (code, body) = curl(api, &url, &[]);
    assert_eq!(code, 401, "private by default: {body}");
    assert!(
        body.contains("unauthorized"),
        "the API's error shape: {body}"
    );
    let (code, body) = curl(api, &url, &["-H", "Accept: text/html"]);
    assert_eq!(code, 401);
    assert!(
        body.contains("<form") && body.contains("/__bothy/login"),
        "a browser gets the login form: {body}"
    );
    let (code, _) = curl(
        api,
        &url,
        &[
            "-H",
            "Authorization: Bearer bothy_00000000000000000000000000000000",
        ],
    );
    assert_eq!(code, 401, "an unknown token");
    let (code, body) = curl(api, &url, &["-H", &bearer]);
    assert_eq!(code, 200, "{body}");

    // Another organisation's token opens nothing here.
    let r =
        e.d.api_json("POST", "/v1/organizations/acme/tokens", &json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    let acme = r.json()["token"].as_str().expect("token").to_string();
    let (code, _) = curl(api, &url, &["-H", &format!("Authorization: Bearer {acme}")]);
    assert_eq!(code, 401, "a token of another organization");
    let (code, _) = curl(
        api,
        &format!("http://priv--acme.localhost:{api}/"),
        &["-H", &format!("Authorization: Bearer {acme}")],
    );
    assert_eq!(code, 404, "acme has no box of that name");

    // A browser logs in once; the cookie opens this box only.
    let jar = std::env::temp_dir().join(format!("bothy-edge-jar-{}", std::process::id()));
    let jar_s = jar.display().to_string();
    let login = |token: &str, next: &str| {
        curl(
            api,
            &format!("http://priv.localhost:{api}/__bothy/login"),
            &[
                "-c",
                &jar_s,
                "--data-urlencode",
                &format!("token={token}"),
                "--data-urlencode",
                &format!("next={next}"),
            ],
        )
        .0
    };
    assert_eq!(
        login("not-a-token", "/headers"),
        401,
        "a wrong token is refused"
    );
    let code = login(&e.d.token, "//evil.example/");
    assert_eq!(code, 303);
    let (code, body) = curl(api, &url, &["-b", &jar_s]);
    assert_eq!(code, 200, "the session cookie opens it: {body}");
    assert_eq!(
        header(&headers_seen(&body), "cookie"),
        None,
        "the box never sees the session"
    );
    // A crashed and restarted daemon keeps the box private and the
    // browser's session valid (the key is in the data dir).
    e.d.kill9();
    e.d.spawn();
    let (code, _) = curl(api, &url, &[]);
    assert_eq!(code, 401, "still private after a crash");
    let (code, body) = curl(api, &url, &["-b", &jar_s]);
    assert_eq!(code, 200, "the session survives a restart: {body}");
    let cookie = std::fs::read_to_string(&jar).expect("jar");
    let value = cookie
        .lines()
        .find_map(|l| l.split('\t').nth(6).filter(|_| l.contains("bothy_session")))
        .expect("cookie in jar")
        .to_string();
    let (code, _) = curl(
        api,
        &format!("http://other.localhost:{api}/headers"),
        &["-H", &format!("Cookie: bothy_session={value}")],
    );
    assert_eq!(code, 401, "a session of one box opens no other");
    let _ = std::fs::remove_file(&jar);

    // Public, then private again: each takes effect on the next request.
    let out =
        e.d.cli(&["url", "update", "-s", "priv", "--auth", "public"])
            .run();
    out.assert_success("url update");
    let (code, _) = curl(api, &url, &[]);
    assert_eq!(code, 200, "public");
    e.set_auth("priv", "sprite");
    let (code, _) = curl(api, &url, &[]);
    assert_eq!(code, 401, "private again");
}

#[test]
fn a_sleeping_box_wakes_for_its_first_request_and_a_dead_service_is_a_clear_502() {
    let e = Edge::start();
    let api = e.api_port();
    e.web_box("sleepy", 8080);
    e.set_auth("sleepy", "public");
    let url = format!("http://sleepy.localhost:{api}/headers");
    assert_eq!(curl(api, &url, &[]).0, 200);
    for cold in [false, true] {
        let r =
            e.d.api_json("POST", "/v1/sprites/sleepy/sleep", &json!({"cold": cold}));
        assert_eq!(r.status, 200, "{}", r.text());
        let status = e.d.get("sleepy")["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(status, if cold { "cold" } else { "warm" });
        let (code, body) = curl(api, &url, &[]);
        assert_eq!(
            code, 200,
            "a {status} box answers its first request: {body}"
        );
        assert_eq!(e.d.get("sleepy")["status"], "running");
    }

    // Nothing listens: after the bounded wait (3 s here), 502 that says why.
    e.d.create("empty");
    e.set_auth("empty", "public");
    let started = std::time::Instant::now();
    let (code, body) = curl(api, &format!("http://empty.localhost:{api}/"), &[]);
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("8080"), "says which port: {body}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let (code, body) = curl(api, &format!("http://nobody.localhost:{api}/"), &[]);
    assert_eq!(code, 404, "{body}");
}

#[test]
fn https_verifies_against_bothys_ca_and_speaks_http2() {
    let e = Edge::start();
    e.web_box("tls", 8080);
    e.set_auth("tls", "public");
    let ca = e.d.data_dir().join("tls").join("ca.pem");
    let ca_s = ca.display().to_string();
    let (code, body) = curl(
        e.tls,
        &format!("https://tls.localhost:{}/headers", e.tls),
        &["--cacert", &ca_s],
    );
    assert_eq!(code, 200, "{body}");
    let seen = headers_seen(&body);
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("https"));
    let version = CliRun::program(
        "curl",
        &[
            "-sS",
            "--cacert",
            &ca_s,
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--resolve",
            &format!("tls.localhost:{}:127.0.0.1", e.tls),
            &format!("https://tls.localhost:{}/headers", e.tls),
        ],
    )
    .run()
    .assert_success("curl --http2");
    assert_eq!(version.stdout_str(), "2", "HTTP/2 over TLS");
    // The API is served over TLS too, with the same CA.
    let (code, body) = curl(
        e.tls,
        &format!("https://localhost:{}/v1/sprites", e.tls),
        &[
            "--cacert",
            &ca_s,
            "-H",
            &format!("Authorization: Bearer {}", e.d.token),
        ],
    );
    assert_eq!(code, 200, "{body}");
    // Without the CA, verification fails.
    let out = CliRun::program(
        "curl",
        &[
            "-sS",
            "--resolve",
            &format!("tls.localhost:{}:127.0.0.1", e.tls),
            &format!("https://tls.localhost:{}/", e.tls),
        ],
    )
    .run();
    assert_ne!(out.code, 0, "an unknown CA is not trusted");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(e.d.data_dir().join("tls").join("ca-key.pem"))
            .expect("key")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn requests_built_to_confuse_the_routing_are_refused() {
    let e = Edge::start();
    let api = e.api_port();
    e.web_box("target", 8080);
    // Private: a request that reaches it without a token would answer 200.
    let host = format!("target.localhost:{api}");
    let cases: Vec<(String, &str)> = vec![
        (format!("GET http://target.localhost/ HTTP/1.1\r\nHost: localhost:{api}\r\n\r\n"), "absolute-form and Host differ"),
        (format!("GET / HTTP/1.1\r\nHost: {host}\r\nHost: localhost\r\n\r\n"), "two Host headers"),
        (format!("GET / HTTP/1.1\r\nHost: user@{host}\r\n\r\n"), "userinfo"),
        (format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), "Content-Length with Transfer-Encoding"),
        (format!("GET / HTTP/1.1\r\nHost: {host}\r\nX: {}\r\n\r\n", "a".repeat(100 * 1024)), "an oversized head"),
        ("GET / HTTP/1.1\r\n\r\n".to_string(), "no Host"),
        (format!("GET / HTTP/1.1\r\nHost: target.localhost:{api}:1\r\n\r\n"), "a bad port"),
    ];
    for (req, what) in cases {
        let (code, text) = raw(api, req.as_bytes());
        assert!((400..=431).contains(&code), "{what}: {code} {text:?}");
        assert_ne!(code, 200, "{what}");
    }
    // X-Forwarded-Host never routes: the API answers (401 without token),
    // not the box.
    let (code, text) = raw(api, format!("GET /v1/sprites HTTP/1.1\r\nHost: localhost:{api}\r\nX-Forwarded-Host: {host}\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(code, 401, "{text}");
    // The box's identity never reaches the API: a box URL with an API path
    // is the box's path (401 here, private), never the API with a token.
    let (code, _) = raw(
        api,
        format!("GET /v1/sprites HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(code, 401);
    // A slow client that never finishes its head is cut off.
    let mut s = TcpStream::connect(("127.0.0.1", api)).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: tar").expect("write");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut buf = Vec::new();
    let started = std::time::Instant::now();
    let _ = s.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(55),
        "the slow client was not cut off"
    );
    // A box cannot reach the daemon's loopback listener: its 127.0.0.1 is
    // its own.
    let probe = format!(
        "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {api}), 3)' 2>&1 || echo unreachable"
    );
    assert!(e.d.sh("target", &probe).contains("unreachable"));
    // The box is still there and fine.
    let (code, _) = curl(
        api,
        &format!("http://{host}/headers"),
        &["-H", &format!("Authorization: Bearer {}", e.d.token)],
    );
    assert_eq!(code, 200);
}
