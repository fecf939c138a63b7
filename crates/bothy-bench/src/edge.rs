//! `bothy bench edge`: requests to a bothy's URL through the daemon's edge,
//! beside the same requests made straight to the service inside the bothy.
//!
//! One bothy runs a small Python `http.server` (threaded, HTTP/1.1
//! keep-alive, a fixed 2-byte body) as its HTTP service on port 8080, and
//! its URL is made public. Then N requests are timed on each path, by C
//! workers with one keep-alive connection each:
//!
//! - `edge-http`: to the daemon's API listener with the bothy's host name
//!   (`NAME.DOMAIN:PORT`), which the edge forwards into the bothy;
//! - `edge-https`: the same through the daemon's TLS listener (when it has
//!   one), trusting its CA;
//! - `direct`: to 127.0.0.1:8080 inside the bothy's network namespace, on
//!   sockets this process makes after entering that namespace: the
//!   service's own latency, the reference the edge's overhead is measured
//!   against.
//!
//! `edge-http` and `direct` use the same hand-written HTTP/1.1 client, so
//! the difference between them is the path, not the client; `edge-https`
//! uses reqwest (rustls) for the TLS.
//!
//! Then the bothy is put to sleep, warm (frozen) and cold (stopped), and
//! one GET through the edge is timed from sending it to the first byte of
//! the answer: the wake, the service's start after a cold boot, and the
//! request. The bothy is destroyed at the end, also when a step fails.

use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bothy_api::{UpdateSpriteRequest, UrlSettings};
use bothy_client::Client;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::args::BenchEdgeArgs;
use crate::boxes::{bench_prefix, create_box_from, destroy_all, sleepless};
use crate::stats::{percentile, round1, round3, sorted_ms};
use crate::Daemon;

/// The port the service listens on in the bothy (the edge's default too).
const SERVICE_PORT: u16 = 8080;
/// The web service: `http.server` as `python3 -m http.server` runs it
/// (threaded), answering every GET with a fixed body so what is timed is
/// the path, not file reads. HTTP/1.1 with a Content-Length keeps
/// connections alive; Nagle is off because the handler writes the head and
/// the body separately, and a delayed ACK would hold the body back.
const SERVER_PY: &str = "\
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Length', '2')
        self.end_headers()
        self.wfile.write(b'ok')
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('', 8080), H).serve_forever()
";
/// What [`SERVER_PY`] answers.
const BODY: &[u8] = b"ok";
/// Untimed requests each worker makes before the clock starts, so every
/// connection (and the edge's pooled connection behind it) exists.
const WARM_UP: usize = 20;
/// How long the service may take to answer through the edge after create.
const READY_WAIT: Duration = Duration::from_secs(60);
/// The longest response head the client reads.
const MAX_HEAD: usize = 64 * 1024;
/// One request (or one wake) taking longer than this is a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The JSON line printed for each path.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct PathLine {
    bench: &'static str,
    path: &'static str,
    requests: usize,
    concurrency: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl PathLine {
    /// Summarises `samples` taken in `wall`; `None` when there are none.
    fn new(
        path: &'static str,
        concurrency: usize,
        samples: &[Duration],
        wall: Duration,
    ) -> Option<Self> {
        let ms = sorted_ms(samples);
        let secs = wall.as_secs_f64();
        Some(Self {
            bench: "edge",
            path,
            requests: ms.len(),
            concurrency,
            rps: if secs > 0.0 {
                round1(ms.len() as f64 / secs)
            } else {
                0.0
            },
            p50_ms: round3(percentile(&ms, 50.0)?),
            p99_ms: round3(percentile(&ms, 99.0)?),
        })
    }
}

/// The line after the paths: what the edge adds to the median request.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct OverheadLine {
    bench: &'static str,
    edge_overhead_p50_ms: f64,
    /// `None` when there was no `edge-https` line.
    edge_https_overhead_p50_ms: Option<f64>,
}

impl OverheadLine {
    fn new(http: &PathLine, https: Option<&PathLine>, direct: &PathLine) -> Self {
        Self {
            bench: "edge",
            edge_overhead_p50_ms: round3(http.p50_ms - direct.p50_ms),
            edge_https_overhead_p50_ms: https.map(|h| round3(h.p50_ms - direct.p50_ms)),
        }
    }
}

/// The JSON line printed for each sleep woken through the edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct WakeLine {
    bench: &'static str,
    state: &'static str,
    rounds: usize,
    p50_ms: f64,
    max_ms: f64,
}

impl WakeLine {
    fn new(state: &'static str, samples: &[Duration]) -> Option<Self> {
        let ms = sorted_ms(samples);
        Some(Self {
            bench: "edge-wake",
            state,
            rounds: ms.len(),
            p50_ms: round3(percentile(&ms, 50.0)?),
            max_ms: round3(*ms.last()?),
        })
    }
}

/// Where the bothy answers.
struct Target {
    /// The bothy's URL host (`NAME.DOMAIN`).
    host: String,
    /// The daemon's API listener, which serves URLs by Host.
    api: SocketAddr,
    /// The HTTPS listener and the CA to trust, when there is one.
    tls: Option<(SocketAddr, PathBuf)>,
    /// A process in the bothy, whose network namespace `direct` enters.
    box_pid: i32,
}

pub async fn edge(daemon: &Daemon<'_>, args: BenchEdgeArgs) -> Result<i32> {
    let client = daemon.client()?;
    let name = format!("{}-edge", bench_prefix());
    // Only the bench puts the bothy to sleep: the daemon's idle pass must
    // not freeze it between requests or rounds.
    let request = sleepless(&name);
    progress(&format!("creating {name}"));
    create_box_from(&client, &request).await?;
    let outcome = measure(&client, daemon, &name, &args).await;
    progress(&format!("destroying {name}"));
    let cleanup = destroy_all(&client, std::slice::from_ref(&name)).await;
    outcome?;
    cleanup.map(|()| 0)
}

async fn measure(
    client: &Client,
    daemon: &Daemon<'_>,
    name: &str,
    args: &BenchEdgeArgs,
) -> Result<()> {
    let def = serde_json::json!({
        "cmd": "python3",
        "args": ["-c", SERVER_PY],
        "http_port": SERVICE_PORT,
    });
    client
        .put_service(name, "web", &def, None)
        .await
        .with_context(|| format!("starting the web service in {name}"))?;
    let update = UpdateSpriteRequest {
        url_settings: Some(UrlSettings {
            auth: Some("public".into()),
            private_access: None,
        }),
        ..Default::default()
    };
    let sprite = client
        .update_sprite(name, &update)
        .await
        .with_context(|| format!("making {name}'s URL public"))?;
    let target = target(client, daemon, args, &sprite).await?;
    let request = get_request(&format!("{}:{}", target.host, target.api.port()));
    wait_ready(target.api, &request).await?;

    let (n, c) = (args.requests, args.concurrency);
    progress(&format!("edge-http: {n} requests, {c} at a time"));
    let mut workers = Vec::with_capacity(c);
    for _ in 0..c {
        workers.push(Worker::raw(Conn::tcp(target.api).await?, &request));
    }
    let http = run_path("edge-http", workers, n).await?;
    print_line(&http)?;

    let https = match &target.tls {
        Some((addr, ca)) => {
            progress(&format!("edge-https: {n} requests, {c} at a time"));
            let workers = https_workers(&target.host, *addr, ca, c)?;
            let line = run_path("edge-https", workers, n).await?;
            print_line(&line)?;
            Some(line)
        }
        None => {
            eprintln!("note: the daemon serves no HTTPS for {name}'s URL (pass --tls-port): no edge-https line");
            None
        }
    };

    progress(&format!(
        "direct: {n} requests, {c} at a time, inside {name}"
    ));
    let direct_request = get_request(&format!("127.0.0.1:{SERVICE_PORT}"));
    let mut workers = Vec::with_capacity(c);
    for _ in 0..c {
        let stream = connect_in_netns(
            target.box_pid,
            SocketAddr::from(([127, 0, 0, 1], SERVICE_PORT)),
        )?;
        workers.push(Worker::raw(Conn::new(stream), &direct_request));
    }
    let direct = run_path("direct", workers, n).await?;
    print_line(&direct)?;
    print_line(&OverheadLine::new(&http, https.as_ref(), &direct))?;

    if args.wake_rounds > 0 {
        let mut warm = Vec::with_capacity(args.wake_rounds);
        let mut cold = Vec::with_capacity(args.wake_rounds);
        for round in 1..=args.wake_rounds {
            progress(&format!("wake round {round}/{}", args.wake_rounds));
            warm.push(wake_once(client, name, target.api, &request, false).await?);
            cold.push(wake_once(client, name, target.api, &request, true).await?);
        }
        for (state, samples) in [("warm", &warm), ("cold", &cold)] {
            let line = WakeLine::new(state, samples)
                .ok_or_else(|| anyhow::anyhow!("no {state} wake finished"))?;
            print_line(&line)?;
        }
    }
    Ok(())
}

fn print_line(line: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(line)?);
    Ok(())
}

/// Progress on stderr when a person watches it; logs stay quiet.
fn progress(what: &str) {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        eprintln!("edge: {what}");
    }
}

/// Where the bothy's URL answers, from its `url` and the client's API
/// address, and which process in it `direct` goes through.
async fn target(
    client: &Client,
    daemon: &Daemon<'_>,
    args: &BenchEdgeArgs,
    sprite: &bothy_api::Sprite,
) -> Result<Target> {
    let base = client.base_url();
    anyhow::ensure!(
        base.scheme() == "http",
        "the edge-http line needs the daemon's API on plain http (BOTHY_URL is {base})"
    );
    let api = resolve(base).await?;
    let url = sprite.url.as_deref().map(url_parts).transpose()?.flatten();
    let host = match &url {
        Some((_, host, _)) => host.clone(),
        None => format!("{}.localhost", sprite.name),
    };
    let tls_port = args.tls_port.or(match &url {
        Some((scheme, _, port)) if scheme == "https" => Some(*port),
        _ => None,
    });
    let ca = args
        .ca
        .clone()
        .unwrap_or_else(|| daemon.data_dir.join("tls").join("ca.pem"));
    let tls = match tls_port {
        Some(port) if ca.is_file() => Some((SocketAddr::new(api.ip(), port), ca)),
        Some(_) => {
            eprintln!(
                "note: no CA at {} to trust for HTTPS (pass --ca FILE): no edge-https line",
                ca.display()
            );
            None
        }
        None => None,
    };
    let box_pid = find_box_pid(&sprite.id).ok_or_else(|| {
        anyhow::anyhow!(
            "no process of bothy {} (id {}) on this host: the direct line enters its network namespace, so the bench runs as root beside the daemon",
            sprite.name,
            sprite.id
        )
    })?;
    Ok(Target {
        host,
        api,
        tls,
        box_pid,
    })
}

async fn resolve(base: &reqwest::Url) -> Result<SocketAddr> {
    let host = base
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("{base} names no host"))?;
    let port = base
        .port_or_known_default()
        .ok_or_else(|| anyhow::anyhow!("{base} names no port"))?;
    // A bracketed IPv6 literal is looked up without its brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} resolves to no address"))
}

/// Scheme, host and port of a bothy's URL; `None` when it has no host.
fn url_parts(url: &str) -> Result<Option<(String, String, u16)>> {
    let url = reqwest::Url::parse(url).with_context(|| format!("the daemon's URL {url:?}"))?;
    Ok(match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => Some((url.scheme().to_string(), host.to_string(), port)),
        _ => None,
    })
}

/// A GET of `/` for `host` on a kept-alive connection.
fn get_request(host: &str) -> Arc<[u8]> {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bothy-bench\r\n\r\n")
        .into_bytes()
        .into()
}

/// Tries a GET through the edge until it answers 200: the service has
/// started and the URL is public.
async fn wait_ready(api: SocketAddr, request: &[u8]) -> Result<()> {
    let deadline = Instant::now() + READY_WAIT;
    loop {
        let last = match Conn::tcp(api).await {
            Ok(mut conn) => match conn.send(request).await {
                Ok(answer) if answer.status == 200 => return Ok(()),
                Ok(answer) => format!(
                    "HTTP {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body).trim()
                ),
                Err(e) => format!("{e:#}"),
            },
            Err(e) => format!("{e:#}"),
        };
        anyhow::ensure!(
            Instant::now() < deadline,
            "the bothy's URL did not answer 200 within {READY_WAIT:?}; last answer: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts the bothy to sleep (untimed), then times one GET through the edge
/// on a fresh connection from sending it to the first byte of the answer.
async fn wake_once(
    client: &Client,
    name: &str,
    api: SocketAddr,
    request: &[u8],
    cold: bool,
) -> Result<Duration> {
    let state = if cold { "cold" } else { "warm" };
    let answer = client
        .sleep_sprite(name, cold)
        .await
        .with_context(|| format!("putting {name} to {state} sleep"))?;
    anyhow::ensure!(
        answer["status"] == state,
        "asked {name} to go {state}, the daemon answered {answer}"
    );
    // The connection to the daemon is made first: the wake is what is timed.
    let mut conn = Conn::tcp(api).await?;
    let started = Instant::now();
    let answer = conn
        .send(request)
        .await
        .with_context(|| format!("waking {name} from {state} sleep through its URL"))?;
    anyhow::ensure!(
        answer.status == 200,
        "waking {name} from {state} sleep: HTTP {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body).trim()
    );
    Ok(answer.first_byte.saturating_duration_since(started))
}

/// A process of the bothy with id `id`: one in its cgroup, preferably its
/// `bothy init`, in a network namespace other than this process's.
fn find_box_pid(id: &str) -> Option<i32> {
    let own_ns = std::fs::read_link("/proc/self/ns/net").ok()?;
    let mut found = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cgroups) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        if !in_box_cgroup(&cgroups, id) {
            continue;
        }
        match std::fs::read_link(entry.path().join("ns/net")) {
            Ok(ns) if ns != own_ns => {}
            _ => continue,
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if is_box_init(&cmdline) {
            return Some(pid);
        }
        found.get_or_insert(pid);
    }
    found
}

/// Whether a /proc/PID/cgroup text puts the process in bothy `id`'s
/// cgroup (`/bothy-INSTANCE/ID`, or below it) in some hierarchy.
fn in_box_cgroup(cgroups: &str, id: &str) -> bool {
    cgroups.lines().any(|line| {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            return false;
        };
        let parts: Vec<&str> = path.split('/').collect();
        parts
            .windows(2)
            .any(|w| w[0].starts_with("bothy-") && w[1] == id)
    })
}

/// `bothy init` as the box runs it (`/.bothy/bothy init`).
fn is_box_init(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|b| *b == 0);
    matches!(
        (args.next(), args.next()),
        (Some(exe), Some(b"init")) if exe.ends_with(b"bothy")
    )
}

/// A TCP connection to `addr` made inside the network namespace of `pid`:
/// a thread of its own enters the namespace and makes it, then ends (a
/// socket keeps the namespace it was made in; this process's threads keep
/// theirs).
fn connect_in_netns(pid: i32, addr: SocketAddr) -> Result<TcpStream> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .with_context(|| format!("opening the network namespace of process {pid}"))?;
    let stream = std::thread::spawn(move || -> Result<std::net::TcpStream> {
        // SAFETY: setns takes a file descriptor this closure owns (open for
        // the whole call) and changes only the calling thread, which does
        // nothing but make this one connection and then ends.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error())
                .context("entering the bothy's network namespace (needs root)");
        }
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr} inside the bothy"))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread that enters the bothy's namespace panicked"))??;
    Ok(TcpStream::from_std(stream)?)
}

/// One load-generating worker with its own keep-alive connection.
enum Worker {
    /// The hand-written client on a TCP connection.
    Raw { conn: Conn, request: Arc<[u8]> },
    /// reqwest, for TLS; its pool keeps the connection.
    Reqwest {
        client: reqwest::Client,
        url: reqwest::Url,
    },
}

impl Worker {
    fn raw(conn: Conn, request: &Arc<[u8]>) -> Self {
        Self::Raw {
            conn,
            request: request.clone(),
        }
    }

    async fn request(&mut self) -> Result<()> {
        let status = match self {
            Self::Raw { conn, request } => {
                let answer = conn.send(request).await?;
                // The service's own body: an answer from anything else (a
                // host port of the same number, an error page) is no sample.
                anyhow::ensure!(
                    answer.status != 200 || answer.body == BODY,
                    "a 200 answer that is not the bench's service: {:?}",
                    String::from_utf8_lossy(&answer.body)
                );
                answer.status
            }
            Self::Reqwest { client, url } => {
                let res = client.get(url.clone()).send().await?;
                let status = res.status().as_u16();
                res.bytes().await?;
                status
            }
        };
        anyhow::ensure!(status == 200, "the service answered HTTP {status}");
        Ok(())
    }
}

/// `concurrency` reqwest workers sharing one client whose pool keeps a
/// connection for each; the URL's host resolves to the TLS listener.
fn https_workers(
    host: &str,
    addr: SocketAddr,
    ca: &Path,
    concurrency: usize,
) -> Result<Vec<Worker>> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let cert = reqwest::Certificate::from_pem(&pem)
        .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
    let client = reqwest::Client::builder()
        .add_root_certificate(cert)
        .resolve(host, addr)
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let url = reqwest::Url::parse(&format!("https://{host}:{}/", addr.port()))
        .with_context(|| format!("{host} makes no URL"))?;
    Ok((0..concurrency)
        .map(|_| Worker::Reqwest {
            client: client.clone(),
            url: url.clone(),
        })
        .collect())
}

/// Runs `requests` timed requests over `workers` at once (after
/// [`WARM_UP`] untimed ones each) and summarises them.
async fn run_path(
    path: &'static str,
    mut workers: Vec<Worker>,
    requests: usize,
) -> Result<PathLine> {
    let concurrency = workers.len();
    // Warm-up runs concurrently too, so reqwest opens one connection per
    // worker rather than reusing one.
    let mut set = tokio::task::JoinSet::new();
    for mut w in workers.drain(..) {
        set.spawn(async move {
            for _ in 0..WARM_UP {
                w.request().await?;
            }
            anyhow::Ok(w)
        });
    }
    while let Some(w) = set.join_next().await {
        workers.push(w.context("a warm-up worker panicked")??);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for mut w in workers {
        let next = next.clone();
        set.spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let t = Instant::now();
                w.request().await?;
                samples.push(t.elapsed());
            }
            anyhow::Ok(samples)
        });
    }
    let mut samples = Vec::with_capacity(requests);
    while let Some(s) = set.join_next().await {
        samples.extend(s.context("a worker panicked")?.context(path)?);
    }
    let wall = started.elapsed();
    PathLine::new(path, concurrency, &samples, wall)
        .ok_or_else(|| anyhow::anyhow!("no {path} request finished"))
}

/// A response as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// When the first byte of the response arrived.
    first_byte: Instant,
}

/// What the head of a response says about the rest of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    /// Bytes of the head, the blank line included.
    len: usize,
    content_length: usize,
    /// The server closes the connection after this response.
    close: bool,
}

/// Parses the head at the start of `buf`: `None` while it is incomplete.
/// Only what the bench's server and the edge send is supported: a
/// Content-Length body (chunked answers are an error).
fn parse_head(buf: &[u8]) -> Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        anyhow::ensure!(
            buf.len() <= MAX_HEAD,
            "a response head longer than {MAX_HEAD} bytes"
        );
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("a response head that is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next(), parts.next());
    anyhow::ensure!(
        matches!(version, Some(v) if v.starts_with("HTTP/1.")),
        "not an HTTP/1 response: {status_line:?}"
    );
    let status = code
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in {status_line:?}"))?;
    let mut content_length = None;
    let mut close = version == Some("HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            anyhow::bail!("a bad header line: {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("a bad Content-Length: {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            anyhow::bail!(
                "a {value} response; the bench's client reads Content-Length bodies only"
            );
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(Head {
        status,
        len: end + 4,
        content_length: content_length.unwrap_or(0),
        close,
    }))
}

/// A keep-alive HTTP/1.1 connection with just enough client for the
/// bench: one request at a time, Content-Length answers.
struct Conn {
    stream: TcpStream,
    /// Bytes read past the end of the last response.
    buf: Vec<u8>,
    closed: bool,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(4096),
            closed: false,
        }
    }

    async fn tcp(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self::new(stream))
    }

    /// Sends `request` and reads the whole answer.
    async fn send(&mut self, request: &[u8]) -> Result<Answer> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<Answer> {
        anyhow::ensure!(!self.closed, "the server closed this connection");
        self.stream.write_all(request).await?;
        let mut first_byte = None;
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            self.fill(&mut first_byte).await?;
        };
        let end = head.len + head.content_length;
        while self.buf.len() < end {
            self.fill(&mut first_byte).await?;
        }
        let body = self.buf[head.len..end].to_vec();
        self.buf.drain(..end);
        self.closed = head.close;
        Ok(Answer {
            status: head.status,
            body,
            first_byte: first_byte.unwrap_or_else(Instant::now),
        })
    }

    /// Reads more of the answer; notes when its first byte came.
    async fn fill(&mut self, first_byte: &mut Option<Instant>) -> Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the server closed the connection mid-answer");
        first_byte.get_or_insert_with(Instant::now);
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_when_complete() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 2\r\n\r\nokHTTP/1.1";
        let head = parse_head(raw).expect("valid").expect("complete");
        assert_eq!(
            head,
            Head {
                status: 200,
                len: raw.len() - "okHTTP/1.1".len(),
                content_length: 2,
                close: false
            }
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").expect("valid"),
            None
        );
        let head = parse_head(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(
            (head.status, head.content_length, head.close),
            (502, 0, true)
        );
        let head = parse_head(b"HTTP/1.0 200 OK\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(head.close, "HTTP/1.0 closes by default");
    }

    #[test]
    fn unsupported_or_broken_heads_are_errors() {
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn path_lines_summarise_samples() {
        let s: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let line = PathLine::new("direct", 4, &s, Duration::from_secs(2)).expect("samples");
        assert_eq!(
            (
                line.requests,
                line.concurrency,
                line.rps,
                line.p50_ms,
                line.p99_ms
            ),
            (100, 4, 50.0, 50.0, 99.0)
        );
        let json = serde_json::to_value(&line).expect("serialisable");
        assert_eq!(
            (&json["bench"], &json["path"]),
            (&"edge".into(), &"direct".into())
        );
        assert!(PathLine::new("direct", 1, &[], Duration::ZERO).is_none());
        let zero = PathLine::new("direct", 1, &s, Duration::ZERO).expect("samples");
        assert_eq!(zero.rps, 0.0);
    }

    #[test]
    fn overhead_is_edge_minus_direct() {
        let line = |path, p50_ms| PathLine {
            bench: "edge",
            path,
            requests: 1,
            concurrency: 1,
            rps: 1.0,
            p50_ms,
            p99_ms: p50_ms,
        };
        let o = OverheadLine::new(&line("edge-http", 0.9), None, &line("direct", 0.25));
        assert_eq!(
            (o.edge_overhead_p50_ms, o.edge_https_overhead_p50_ms),
            (0.65, None)
        );
        let https = line("edge-https", 1.5);
        let o = OverheadLine::new(&line("edge-http", 0.9), Some(&https), &line("direct", 0.25));
        assert_eq!(o.edge_https_overhead_p50_ms, Some(1.25));
        let json = serde_json::to_value(&o).expect("serialisable");
        assert_eq!(json["edge_overhead_p50_ms"], 0.65);
    }

    #[test]
    fn wake_lines_have_p50_and_max() {
        let s = [300, 100, 200].map(Duration::from_millis);
        let line = WakeLine::new("cold", &s).expect("samples");
        assert_eq!((line.rounds, line.p50_ms, line.max_ms), (3, 200.0, 300.0));
        let json = serde_json::to_value(&line).expect("serialisable");
        assert_eq!(
            (&json["bench"], &json["state"]),
            (&"edge-wake".into(), &"cold".into())
        );
        assert!(WakeLine::new("warm", &[]).is_none());
    }

    #[test]
    fn box_processes_are_found_by_cgroup_and_cmdline() {
        let v1 = "9:name=systemd:/bothy-93742b20/bbedb0d285414\n4:memory:/bothy-93742b20/bbedb0d285414\n0::/\n";
        assert!(in_box_cgroup(v1, "bbedb0d285414"));
        assert!(!in_box_cgroup(v1, "bbedb0d28541"));
        assert!(in_box_cgroup("0::/bothy-x/abc/init.scope\n", "abc"));
        assert!(!in_box_cgroup("0::/user.slice/abc\n", "abc"));
        assert!(!in_box_cgroup("garbage", "abc"));
        assert!(is_box_init(b"/.bothy/bothy\0init\0"));
        assert!(!is_box_init(b"python3\0-c\0"));
        assert!(!is_box_init(b""));
    }

    #[test]
    fn url_parts_and_requests() {
        assert_eq!(
            url_parts("https://a.localhost:7191/").expect("valid"),
            Some(("https".into(), "a.localhost".into(), 7191))
        );
        assert_eq!(
            url_parts("http://a.example.com/").expect("valid"),
            Some(("http".into(), "a.example.com".into(), 80))
        );
        assert!(url_parts("not a url").is_err());
        assert_eq!(
            &*get_request("a.localhost:1"),
            b"GET / HTTP/1.1\r\nHost: a.localhost:1\r\nUser-Agent: bothy-bench\r\n\r\n"
        );
    }
}
