//! `bothy bench fs`: a file moved into and out of a bothy through the
//! filesystem API, beside the same bytes moved with `cat` over exec.
//!
//! One bothy; for each path, a `--size-mb` MiB file is written into it
//! (in `--dir`, by default /root on its disk) and then read back whole:
//!
//! - `fs-api`: `PUT /v1/sprites/{name}/fs/write` with the file as a streamed
//!   body, then `GET /v1/sprites/{name}/fs/read` streamed to nowhere;
//! - `exec-cat`: the same size piped as stdin into `cat > FILE && sync FILE`
//!   over an exec WebSocket, then `cat FILE` with its stdout counted. The
//!   `sync` matches the fs API, which fsyncs a written file before it
//!   answers.
//!
//! The data is made while it is sent, never held whole: one random MiB,
//! copied for each MiB sent with a counter stamped into every 4 KiB block,
//! so no block repeats (the box disk's chunk store would deduplicate them)
//! and none compresses. Each path gets its own random data. Every read is
//! checked against what was written: the same length and the same BLAKE3
//! hash. Hashing the read bytes is part of the timed read on both paths.
//!
//! A write is timed from the request (or the exec's connect) to the answer
//! (the exit frame); a read from the request to its last byte. MB/s are
//! 10^6 bytes per second. The read follows its write at once, so it is
//! mostly served from the box's page cache: it measures the path, not the
//! disk. The file is removed before the next path writes its own. Before
//! each step the bothy is synced to the object store (untimed), so no step
//! competes with the upload of the last one's data.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bothy_client::{Client, ExecEvent, ExecParams};
use futures_util::StreamExt as _;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use serde::Serialize;

use crate::args::BenchFsArgs;
use crate::boxes::{bench_prefix, create_box_from, destroy_all, run_checked, sleepless};
use crate::stats::{round1, round3};
use crate::Daemon;

/// Bytes of each piece of the generated data, and of each stdin message.
const PIECE: usize = 1 << 20;
/// The generated data's block: each one carries its own counter.
const BLOCK: usize = 4096;
/// Longest a transfer may go without a byte moving.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest error answer or stderr kept for a message.
const MAX_ERROR_TEXT: usize = 4096;

/// The JSON line printed for each op on each path.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct FsLine {
    bench: &'static str,
    op: &'static str,
    path: &'static str,
    mib: usize,
    seconds: f64,
    /// 10^6 bytes per second.
    mb_s: f64,
}

impl FsLine {
    fn new(op: &'static str, path: &'static str, mib: usize, bytes: u64, took: Duration) -> Self {
        Self {
            bench: "fs",
            op,
            path,
            mib,
            seconds: round3(took.as_secs_f64()),
            mb_s: round1(mb_per_s(bytes, took)),
        }
    }

    fn print(&self) -> Result<()> {
        println!("{}", serde_json::to_string(self)?);
        Ok(())
    }
}

/// 10^6 bytes per second; 0 for no time at all.
fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    let secs = took.as_secs_f64();
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}

/// `size` bytes of incompressible data that never repeats a block, made a
/// piece at a time: one random [`PIECE`] copied for every piece, with the
/// block's number (mixed with the seed) over the first 8 bytes of every
/// [`BLOCK`]. The same seed and size give the same bytes.
struct Data {
    base: Vec<u8>,
    seed: u64,
    /// Bytes still to make.
    left: u64,
    /// The number of the next block.
    block: u64,
}

impl Data {
    fn new(seed: u64, size: u64) -> Self {
        let mut state = seed | 1;
        let mut base = vec![0u8; PIECE];
        for word in base.chunks_exact_mut(8) {
            // xorshift64*: plenty for bytes that must not compress.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        Self {
            base,
            seed,
            left: size,
            block: 0,
        }
    }
}

impl Iterator for Data {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.left == 0 {
            return None;
        }
        let n = usize::try_from(self.left).map_or(PIECE, |left| left.min(PIECE));
        let mut piece = self.base[..n].to_vec();
        for block in piece.chunks_mut(BLOCK) {
            let stamp = (self.block ^ self.seed).to_le_bytes();
            let len = block.len().min(stamp.len());
            block[..len].copy_from_slice(&stamp[..len]);
            self.block += 1;
        }
        self.left -= n as u64;
        Some(piece)
    }
}

/// What a transfer moved: its length and BLAKE3 hash.
struct Tally {
    bytes: u64,
    hasher: blake3::Hasher,
}

impl Tally {
    fn new() -> Self {
        Self {
            bytes: 0,
            hasher: blake3::Hasher::new(),
        }
    }

    fn add(&mut self, piece: &[u8]) {
        self.bytes += piece.len() as u64;
        self.hasher.update(piece);
    }

    /// The tally of all of `data`.
    fn of(data: Data) -> Self {
        let mut t = Self::new();
        for piece in data {
            t.add(&piece);
        }
        t
    }

    /// Fails unless `self`, what was read, is `written`.
    fn check(&self, written: &Tally, what: &str) -> Result<()> {
        anyhow::ensure!(
            self.bytes == written.bytes,
            "{what} read back {} bytes of the {} written",
            self.bytes,
            written.bytes
        );
        anyhow::ensure!(
            self.hasher.finalize() == written.hasher.finalize(),
            "{what} read back {} bytes that differ from those written",
            self.bytes
        );
        Ok(())
    }
}

pub async fn fs(daemon: &Daemon<'_>, args: BenchFsArgs) -> Result<i32> {
    let client = daemon.client()?;
    let name = format!("{}-fs", bench_prefix());
    // Only the bench decides when the bothy is done: no idle sleep between
    // the transfers.
    let request = sleepless(&name);
    eprintln!("creating {name}");
    create_box_from(&client, &request).await?;
    let outcome = measure(&client, &name, &args.dir, args.size_mb).await;
    eprintln!("destroying {name}");
    let cleanup = destroy_all(&client, std::slice::from_ref(&name)).await;
    outcome?;
    cleanup.map(|()| 0)
}

async fn measure(client: &Client, name: &str, dir: &str, mib: usize) -> Result<()> {
    let size = mib as u64 * (1 << 20);
    let api = FsApi::new(client, name)?;
    run_checked(client, name, &["mkdir", "-p", dir]).await?;
    let dir = dir.trim_end_matches('/');

    let file = format!("{dir}/fsbench-api");
    let seed = rand::random::<u64>();
    let written = Tally::of(Data::new(seed, size));
    settle(client, name).await?;
    eprintln!("fs-api: writing {mib} MiB to {file}");
    let took = api.write(&file, Data::new(seed, size)).await?;
    FsLine::new("write", "fs-api", mib, size, took).print()?;
    settle(client, name).await?;
    eprintln!("fs-api: reading {file}");
    let (read, took) = api.read(&file).await?;
    read.check(&written, "fs/read")?;
    FsLine::new("read", "fs-api", mib, read.bytes, took).print()?;
    run_checked(client, name, &["rm", "-f", &file]).await?;

    let file = format!("{dir}/fsbench-ref");
    let seed = rand::random::<u64>();
    let written = Tally::of(Data::new(seed, size));
    settle(client, name).await?;
    eprintln!("exec-cat: writing {mib} MiB to {file}");
    let took = cat_write(client, name, &file, Data::new(seed, size)).await?;
    FsLine::new("write", "exec-cat", mib, size, took).print()?;
    settle(client, name).await?;
    eprintln!("exec-cat: reading {file}");
    let (read, took) = cat_read(client, name, &file).await?;
    read.check(&written, "cat")?;
    FsLine::new("read", "exec-cat", mib, read.bytes, took).print()?;
    run_checked(client, name, &["rm", "-f", &file]).await?;
    Ok(())
}

/// Waits, untimed, until what the bothy wrote so far is in the object
/// store (`POST .../sync`): the upload of one step's file is not charged
/// to the next step.
async fn settle(client: &Client, name: &str) -> Result<()> {
    client
        .sync_sprite(name)
        .await
        .with_context(|| format!("syncing {name} between steps"))?;
    Ok(())
}

/// The fs API of one bothy, on a client of its own: no limit on a whole
/// request, which may move gigabytes, only on a stalled one.
struct FsApi {
    http: reqwest::Client,
    base: Url,
    name: String,
}

impl FsApi {
    fn new(client: &Client, name: &str) -> Result<Self> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", client.token()))
            .context("the API token is not a valid header value")?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(IDLE_TIMEOUT)
            .build()
            .context("making the HTTP client")?;
        Ok(Self {
            http,
            base: client.base_url().clone(),
            name: name.to_string(),
        })
    }

    /// `PUT fs/write` of `data`, streamed; the time to the answer.
    async fn write(&self, path: &str, data: Data) -> Result<Duration> {
        let sent = data.left;
        let url = fs_url(
            &self.base,
            &self.name,
            "write",
            &[
                ("path", path),
                ("workingDir", "/"),
                ("mkdirParents", "true"),
            ],
        );
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
            data.map(Ok::<_, std::io::Error>),
        ));
        let started = Instant::now();
        let answer = self
            .http
            .put(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .with_context(|| format!("PUT fs/write {path}"))?;
        let answer = ok_answer(answer, "fs/write", path).await?;
        let text = answer
            .text()
            .await
            .with_context(|| format!("reading the answer to fs/write {path}"))?;
        let took = started.elapsed();
        let entry: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!("the answer to fs/write {path} is not JSON: {}", cut(&text))
        })?;
        anyhow::ensure!(
            data_size(&entry) == Some(sent),
            "fs/write {path} sent {sent} bytes, the answer says otherwise: {}",
            cut(&text)
        );
        Ok(took)
    }

    /// `GET fs/read`, streamed into a [`Tally`]; the time to its last byte.
    async fn read(&self, path: &str) -> Result<(Tally, Duration)> {
        let url = fs_url(
            &self.base,
            &self.name,
            "read",
            &[("path", path), ("workingDir", "/")],
        );
        let started = Instant::now();
        let answer = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET fs/read {path}"))?;
        let answer = ok_answer(answer, "fs/read", path).await?;
        let mut body = answer.bytes_stream();
        let mut tally = Tally::new();
        while let Some(piece) = body.next().await {
            let piece = piece
                .with_context(|| format!("fs/read {path} cut off after {} bytes", tally.bytes))?;
            tally.add(&piece);
        }
        Ok((tally, started.elapsed()))
    }
}

/// `/v1/sprites/{name}/fs/{op}?query`, each path segment percent-encoded.
fn fs_url(base: &Url, name: &str, op: &str, query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .extend(["v1", "sprites", name, "fs", op]);
    }
    url.query_pairs_mut().extend_pairs(query);
    url
}

/// The answer if it is a success; else an error with its status and body.
async fn ok_answer(answer: reqwest::Response, op: &str, path: &str) -> Result<reqwest::Response> {
    let status = answer.status();
    if status.is_success() {
        return Ok(answer);
    }
    let body = answer.text().await.unwrap_or_default();
    anyhow::bail!("{op} {path} answered {status}: {}", cut(&body))
}

/// The `size` of an fs/write answer (`{"path", "size", "mode"}`).
fn data_size(answer: &serde_json::Value) -> Option<u64> {
    answer.get("size")?.as_u64()
}

fn cut(s: &str) -> String {
    s.chars().take(MAX_ERROR_TEXT).collect()
}

/// `data` piped into `cat > path && sync path` over exec; the time from
/// connect to the exit frame.
async fn cat_write(client: &Client, name: &str, path: &str, data: Data) -> Result<Duration> {
    let params = ExecParams::new(
        ["sh", "-c", "cat > \"$1\" && sync \"$1\"", "sh", path]
            .map(String::from)
            .to_vec(),
    );
    let started = Instant::now();
    let conn = client.exec(name, &params).await?;
    let (mut tx, mut rx) = conn.split();
    let send = async {
        for piece in data {
            tx.send_stdin(&piece).await?;
        }
        tx.send_stdin_eof().await?;
        anyhow::Ok(())
    };
    let receive = async {
        let mut stderr = Vec::new();
        loop {
            match rx.next_event().await? {
                Some(ExecEvent::Exit(code)) => return anyhow::Ok((code, stderr)),
                Some(ExecEvent::Stderr(b)) if stderr.len() < MAX_ERROR_TEXT => {
                    stderr.extend_from_slice(&b)
                }
                Some(_) => continue,
                None => anyhow::bail!("the connection closed before `cat > {path}` exited"),
            }
        }
    };
    let ((), (code, stderr)) = tokio::try_join!(send, receive)?;
    let took = started.elapsed();
    let _ = tokio::time::timeout(Duration::from_millis(200), tx.close()).await;
    anyhow::ensure!(
        code == 0,
        "`cat > {path}` exited {code}: {}",
        String::from_utf8_lossy(&stderr).trim()
    );
    Ok(took)
}

/// `cat path` over exec, its stdout into a [`Tally`]; the time from connect
/// to the exit frame.
async fn cat_read(client: &Client, name: &str, path: &str) -> Result<(Tally, Duration)> {
    let params = ExecParams::new(vec!["cat".into(), path.into()]);
    let started = Instant::now();
    let conn = client.exec(name, &params).await?;
    let (mut tx, mut rx) = conn.split();
    tx.send_stdin_eof().await?;
    let mut tally = Tally::new();
    let mut stderr = Vec::new();
    let code = loop {
        match rx.next_event().await? {
            Some(ExecEvent::Exit(code)) => break code,
            Some(ExecEvent::Stdout(b)) => tally.add(&b),
            Some(ExecEvent::Stderr(b)) if stderr.len() < MAX_ERROR_TEXT => {
                stderr.extend_from_slice(&b)
            }
            Some(_) => continue,
            None => anyhow::bail!(
                "the connection closed before `cat {path}` exited, after {} bytes",
                tally.bytes
            ),
        }
    };
    let took = started.elapsed();
    let _ = tokio::time::timeout(Duration::from_millis(200), tx.close()).await;
    anyhow::ensure!(
        code == 0,
        "`cat {path}` exited {code}: {}",
        String::from_utf8_lossy(&stderr).trim()
    );
    Ok((tally, took))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_deterministic_sized_and_never_repeats_a_block() {
        let size = 3 * PIECE as u64 + 5000;
        let pieces: Vec<Vec<u8>> = Data::new(7, size).collect();
        assert_eq!(
            pieces.iter().map(Vec::len).collect::<Vec<_>>(),
            [PIECE, PIECE, PIECE, 5000]
        );
        assert_eq!(pieces, Data::new(7, size).collect::<Vec<_>>());
        assert_ne!(pieces[0], Data::new(8, size).next().expect("a piece"));
        let mut blocks: Vec<&[u8]> = pieces.iter().flat_map(|p| p.chunks(BLOCK)).collect();
        let n = blocks.len();
        blocks.sort();
        blocks.dedup();
        assert_eq!(blocks.len(), n, "a block repeats");
        assert_eq!(Data::new(1, 0).count(), 0);
    }

    #[test]
    fn tally_checks_length_and_content() {
        let written = Tally::of(Data::new(3, 10_000));
        let mut same = Tally::new();
        for piece in Data::new(3, 10_000) {
            for part in piece.chunks(777) {
                same.add(part);
            }
        }
        assert_eq!(same.bytes, 10_000);
        same.check(&written, "x").expect("the same bytes");
        let short = Tally::of(Data::new(3, 9_999));
        assert!(short
            .check(&written, "x")
            .expect_err("short")
            .to_string()
            .contains("9999 bytes of the 10000"));
        let other = Tally::of(Data::new(4, 10_000));
        assert!(other
            .check(&written, "x")
            .expect_err("other")
            .to_string()
            .contains("differ"));
    }

    #[test]
    fn lines_count_decimal_megabytes() {
        let line = FsLine::new(
            "write",
            "fs-api",
            1024,
            1 << 30,
            Duration::from_millis(2000),
        );
        assert_eq!((line.seconds, line.mb_s), (2.0, 536.9));
        let json = serde_json::to_value(&line).expect("serialisable");
        assert_eq!(
            json,
            serde_json::json!({"bench": "fs", "op": "write", "path": "fs-api",
                "mib": 1024, "seconds": 2.0, "mb_s": 536.9})
        );
        assert_eq!(mb_per_s(5, Duration::ZERO), 0.0);
    }

    #[test]
    fn urls_encode_the_name_and_path() {
        let base = Url::parse("http://127.0.0.1:7070/").expect("url");
        let url = fs_url(
            &base,
            "a b",
            "read",
            &[("path", "/root/x y&z"), ("workingDir", "/")],
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:7070/v1/sprites/a%20b/fs/read?path=%2Froot%2Fx+y%26z&workingDir=%2F"
        );
        let base = Url::parse("http://h:1/api").expect("url");
        assert_eq!(
            fs_url(&base, "b", "write", &[]).path(),
            "/api/v1/sprites/b/fs/write"
        );
    }

    #[test]
    fn write_answers_name_their_size() {
        let answer = serde_json::json!({"path": "/root/f", "size": 42, "mode": "0644"});
        assert_eq!(data_size(&answer), Some(42));
        assert_eq!(data_size(&serde_json::json!({})), None);
    }
}
