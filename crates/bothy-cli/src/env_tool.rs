//! `bothy-env`, run inside a bothy: the bothy acting on itself through the
//! control socket its daemon gives it (see `bothy_runtime::ENV_SOCKET_IN_BOX`).
//! The bothy binary is mounted in every box as `/usr/local/bin/bothy-env` and
//! picks this grammar when called by that name.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bothy_api::{Checkpoint, StreamMessage};
use clap::{Args, Parser, Subcommand};

/// Where the daemon's socket appears in every box.
pub const SOCKET: &str = "/.bothy/run/api.sock";

/// The bothy you are in, acting on itself
#[derive(Debug, Parser)]
#[command(name = "bothy-env", version)]
struct EnvCli {
    /// Print JSON instead of sentences and tables
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: EnvCommand,
}

#[derive(Debug, Subcommand)]
enum EnvCommand {
    /// Checkpoints of this bothy's disk
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
}

#[derive(Debug, Subcommand)]
enum CheckpointsCommand {
    /// Checkpoint this bothy now (it keeps running)
    Create(CreateArgs),
    /// List this bothy's checkpoints
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Bring this bothy's disk back to a checkpoint: the bothy restarts, which
    /// ends this command and every other process in it
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    #[arg(long)]
    comment: Option<String>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Also list automatic checkpoints (made before each restore)
    #[arg(long)]
    include_auto: bool,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// Checkpoint id: v1, v2, ...
    id: String,
}

/// Entry point when the binary runs as `bothy-env`; returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let cli = EnvCli::parse_from(args);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bothy-env: {e:#}");
            1
        }
    }
}

fn run(cli: EnvCli) -> Result<i32> {
    let EnvCommand::Checkpoints(cmd) = cli.command;
    match cmd {
        CheckpointsCommand::Create(a) => {
            let body = serde_json::json!({ "comment": a.comment }).to_string();
            let (status, answer) = request("POST", "/checkpoint", Some(&body))?;
            let id = finished(status, &answer)?;
            if cli.json {
                println!("{}", serde_json::json!({ "id": id }));
            } else {
                println!("checkpoint {id} created");
            }
        }
        CheckpointsCommand::List(a) => {
            let path = if a.include_auto {
                "/checkpoints?include_auto=true"
            } else {
                "/checkpoints"
            };
            let (status, answer) = request("GET", path, None)?;
            check_status(status, &answer)?;
            let list: Vec<Checkpoint> =
                serde_json::from_slice(&answer).context("unexpected answer from the daemon")?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                eprintln!("no checkpoints yet: `bothy-env checkpoints create` makes one");
            } else {
                for c in &list {
                    let kind = if c.auto { " (auto)" } else { "" };
                    let comment = c.comment.as_deref().unwrap_or("");
                    println!("{}\t{}{kind}\t{comment}", c.id, c.create_time);
                }
            }
        }
        CheckpointsCommand::Restore(a) => {
            if bothy_api::parse_checkpoint_id(&a.id).is_none() {
                bail!(
                    "{:?} is not a checkpoint id: they look like v1, v2, ...",
                    a.id
                );
            }
            // Said first: if the restore goes ahead, this process does not
            // live to print anything after it.
            eprintln!(
                "restoring this bothy to {}: it restarts now, ending this session",
                a.id
            );
            let path = format!("/checkpoints/{}/restore", a.id);
            match request("POST", &path, None) {
                Ok((status, answer)) => {
                    let kept = finished(status, &answer)?;
                    println!("restored to {}; the state before is kept as {kept}", a.id);
                }
                // The box went down under us: that is the restore happening.
                Err(e) if is_disconnect(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(0)
}

fn is_disconnect(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            )
        })
    })
}

fn check_status(status: u16, body: &[u8]) -> Result<()> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let message = serde_json::from_slice::<bothy_api::ErrorBody>(body)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    bail!("{message} (HTTP {status})")
}

/// The id a progress stream completed with, or the error it ended with.
fn finished(status: u16, body: &[u8]) -> Result<String> {
    check_status(status, body)?;
    let mut done = None;
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let m: StreamMessage =
            serde_json::from_slice(line).context("unexpected answer from the daemon")?;
        match m.kind.as_str() {
            "error" => bail!("{}", m.error.or(m.data).unwrap_or_default()),
            "complete" => done = m.data,
            _ => {}
        }
    }
    done.context("the daemon's answer ended before the operation completed")
}

/// One HTTP/1.1 request over the box's control socket.
fn request(method: &str, path: &str, body: Option<&str>) -> Result<(u16, Vec<u8>)> {
    let mut sock = UnixStream::connect(SOCKET).with_context(|| {
        format!("cannot reach this bothy's control socket {SOCKET}: is this a bothy, and are you root in it?")
    })?;
    sock.set_read_timeout(Some(Duration::from_secs(300)))?;
    let body = body.unwrap_or("");
    write!(
        sock,
        "{method} {path} HTTP/1.1\r\nHost: bothy\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed answer from the daemon")?;
    if head.contains("transfer-encoding: chunked") {
        return Ok((status, dechunk(body)?));
    }
    Ok((status, body.to_vec()))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("malformed chunked answer")?;
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("malformed chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            bail!("truncated chunked answer");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_plain_and_chunked() {
        let (s, b) =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").expect("plain");
        assert_eq!((s, b.as_slice()), (200, &b"hi"[..]));
        let (s, b) = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!((s, b.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }

    #[test]
    fn progress_streams() {
        let ok = b"{\"type\":\"info\",\"data\":\"x\"}\n{\"type\":\"complete\",\"data\":\"v2\"}\n";
        assert_eq!(finished(200, ok).expect("ok"), "v2");
        let bad = b"{\"type\":\"error\",\"error\":\"disk on fire\"}\n";
        assert!(finished(200, bad)
            .expect_err("error")
            .to_string()
            .contains("disk on fire"));
        assert!(
            finished(404, b"{\"error\":\"not_found\",\"message\":\"no v9\"}")
                .expect_err("404")
                .to_string()
                .contains("no v9")
        );
    }
}
