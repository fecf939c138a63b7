//! A real S3-compatible server on loopback, for tests (feature `testing`).
//!
//! [`S3Server::start`] runs `moto_server` (PyPI `moto[server]`) on a free
//! loopback port, waits until it answers, and creates a bucket of its own, so
//! tests exercise the real S3 code path (signing, HTTP, listing, error mapping)
//! rather than an in-memory stand-in. The executable comes from
//! `BOTHY_TEST_MOTO`, else `moto_server` on `PATH`; `scripts/test.sh` installs
//! it and sets the variable. The process is killed when the handle drops.
//!
//! moto keeps everything in memory: a stopped server loses its objects.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::ObjectStore;

use crate::StoreUrl;

/// The region moto serves and every test client uses.
pub const REGION: &str = "us-east-1";
/// moto accepts any credentials; these are the conventional dummies.
const KEY_ID: &str = "test";
const SECRET: &str = "test";
/// A cold `moto_server` imports a lot of Python; give it time on a busy host.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Another process can take the free port between probing and binding it.
const START_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum S3ServerError {
    #[error("moto_server not found (BOTHY_TEST_MOTO is unset and moto_server is not on PATH): run scripts/test.sh, which installs moto")]
    NotInstalled,
    #[error("starting {exe}: {source} (run scripts/test.sh, which installs moto)")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("moto_server did not come up on 127.0.0.1:{port}: {why}; its log:\n{log}")]
    NotReady { port: u16, why: String, log: String },
    #[error("creating bucket {bucket}: {why}")]
    Bucket { bucket: String, why: String },
    #[error("test server I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store: {0}")]
    Store(String),
}

/// A running `moto_server` with one bucket; killed on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Option<Child>,
    port: u16,
    bucket: String,
    /// Holds the server's log; removed on drop.
    _logdir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server on a free loopback port and creates a fresh bucket.
    pub fn start() -> Result<Self, S3ServerError> {
        let exe = find_moto()?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&exe) {
                Ok(s) => return Ok(s),
                // Only a server that died early may have lost a port race.
                Err(e @ S3ServerError::NotReady { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(S3ServerError::NotInstalled))
    }

    fn start_once(exe: &std::path::Path) -> Result<Self, S3ServerError> {
        let port = free_port()?;
        let logdir = tempfile::Builder::new().prefix("bothy-moto").tempdir()?;
        let log_path = logdir.path().join("moto.log");
        let log = std::fs::File::create(&log_path)?;
        // moto logs every request; a pipe nobody drains would stall it, so
        // the log goes to a file that errors can quote.
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| S3ServerError::Spawn {
                exe: exe.to_path_buf(),
                source,
            })?;
        let mut server = Self {
            child: Some(child),
            port,
            bucket: unique_bucket(),
            _logdir: logdir,
        };
        let not_ready = |why: String| S3ServerError::NotReady {
            port,
            why,
            log: read_tail(&log_path),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.exited()? {
                return Err(not_ready(format!("it exited with {status}")));
            }
            match http(port, "GET", "/") {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(not_ready(format!(
                        "not answering after {START_TIMEOUT:?}: {e}"
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        // It answered; make sure it was our process and not a port thief.
        if let Some(status) = server.exited()? {
            return Err(not_ready(format!("it exited with {status}")));
        }
        let path = format!("/{}", server.bucket);
        match http(port, "PUT", &path) {
            Ok(200) => Ok(server),
            Ok(code) => Err(S3ServerError::Bucket {
                bucket: server.bucket.clone(),
                why: format!("HTTP {code}"),
            }),
            Err(e) => Err(S3ServerError::Bucket {
                bucket: server.bucket.clone(),
                why: e.to_string(),
            }),
        }
    }

    fn exited(&mut self) -> Result<Option<std::process::ExitStatus>, S3ServerError> {
        match &mut self.child {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://BUCKET?endpoint=http://127.0.0.1:PORT&region=us-east-1`, the
    /// `--object-store` value for a daemon using this server.
    pub fn url(&self) -> String {
        format!(
            "s3://{}?endpoint={}&region={REGION}",
            self.bucket,
            self.endpoint()
        )
    }

    /// [`S3Server::url`] parsed.
    pub fn store_url(&self) -> StoreUrl {
        StoreUrl::S3 {
            bucket: self.bucket.clone(),
            endpoint: Some(self.endpoint()),
            region: Some(REGION.to_string()),
        }
    }

    /// The environment a child process needs for [`StoreUrl::open`] of
    /// [`S3Server::url`]. No `AWS_ALLOW_HTTP`: `StoreUrl` allows plain HTTP
    /// to loopback endpoints by itself.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_REGION", REGION),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A client for the bucket with explicit credentials, so the test process
    /// need not touch its own environment. Retries are left to the caller
    /// (bothy's [`crate::RetryPolicy`]), as in [`StoreUrl::open`].
    pub fn object_store(&self) -> Result<Arc<dyn ObjectStore>, S3ServerError> {
        let s3 = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(REGION)
            .with_endpoint(self.endpoint())
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
            .with_retry(crate::url::client_retry())
            .build()
            .map_err(|e| S3ServerError::Store(e.to_string()))?;
        Ok(Arc::new(s3))
    }

    /// Number of objects whose key starts with `prefix` (a path prefix:
    /// `chunks` counts `chunks/…`; `""` counts all). Usable from sync and
    /// async code alike: the listing runs on a thread of its own.
    pub fn count_objects(&self, prefix: &str) -> Result<usize, S3ServerError> {
        let store = self.object_store()?;
        let prefix = prefix.to_string();
        let worker = std::thread::spawn(move || -> Result<usize, S3ServerError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let p = object_store::path::Path::from(prefix.as_str());
                let prefix = (!prefix.is_empty()).then_some(&p);
                let all: Vec<_> = store
                    .list(prefix)
                    .try_collect()
                    .await
                    .map_err(|e| S3ServerError::Store(e.to_string()))?;
                Ok(all.len())
            })
        });
        worker
            .join()
            .map_err(|_| S3ServerError::Store("listing thread panicked".into()))?
    }

    /// Kills the server now (e.g. to test a store that went away). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_moto() -> Result<PathBuf, S3ServerError> {
    if let Some(exe) = std::env::var_os("BOTHY_TEST_MOTO").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(exe));
    }
    let path = std::env::var_os("PATH").ok_or(S3ServerError::NotInstalled)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file())
        .ok_or(S3ServerError::NotInstalled)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Bucket names must be unique across tests sharing a server binary and
/// valid DNS labels (lowercase, at most 63 characters).
fn unique_bucket() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "bothy-test-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One bodiless HTTP/1.1 request; returns the status code. Unsigned requests
/// are fine: moto does not check signatures.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = s.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&head[..got]);
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {line:?}"),
            )
        })
}

fn read_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
