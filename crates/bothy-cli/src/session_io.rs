//! Connects an exec session to the local stdin, stdout and stderr: output is
//! copied byte-exact, stdin is streamed and closed at EOF, the terminal size
//! follows SIGWINCH, and Ctrl-\ detaches when asked to.

use std::io::{Read, Write};

use anyhow::{Context, Result};
use bothy_client::{ExecConnection, ExecEvent, ExecSender};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::terminal::{self, RawMode};

/// The byte Ctrl-\ sends.
pub const DETACH_BYTE: u8 = 0x1c;
const STDIN_CHUNK: usize = 16 * 1024;

/// How to connect the session to this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Put the local terminal in raw mode (TTY sessions).
    pub raw: bool,
    /// Ctrl-\ on stdin detaches instead of being sent.
    pub detach_key: bool,
    /// Close the remote stdin even if local stdin ended without a byte. Off for
    /// attach: watching a session from a script (stdin /dev/null) must not
    /// close the stdin of a process someone else started.
    pub eof_without_input: bool,
}

/// How the session ended for this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The process exited with this code.
    Exited(i32),
    /// The user pressed Ctrl-\; the session keeps running.
    Detached { session_id: Option<String> },
    /// This process got SIGTERM or SIGHUP; the session keeps running.
    Interrupted { signal: i32 },
}

/// Runs the session to its end.
pub async fn run(conn: ExecConnection, opts: Options) -> Result<Ending> {
    let tty = conn.tty();
    let mut session_id = conn.session_info().map(|i| i.session_id.clone());
    let raw = if opts.raw && tty {
        RawMode::enable_if_terminal().context("cannot put the terminal in raw mode")?
    } else {
        RawMode::inactive()
    };
    let (mut tx, mut rx) = conn.split();
    if raw.is_active() {
        let (cols, rows) = terminal::size();
        tx.resize(cols, rows).await?;
    }

    let mut stdin = spawn_stdin_reader();
    let mut stdin_open = true;
    let mut sent_input = false;
    let mut winch = signal(SignalKind::window_change()).context("cannot watch SIGWINCH")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;

    let ending = loop {
        tokio::select! {
            event = rx.next_event() => match event? {
                Some(ExecEvent::Stdout(b)) => write_all(&mut std::io::stdout(), &b)?,
                Some(ExecEvent::Stderr(b)) => write_all(&mut std::io::stderr(), &b)?,
                Some(ExecEvent::Exit(code)) => break Ending::Exited(code),
                Some(ExecEvent::SessionInfo(info)) => session_id = Some(info.session_id),
                Some(ExecEvent::PortOpen(_)) => {}
                None => anyhow::bail!(lost_message(session_id.as_deref())),
            },
            chunk = stdin.recv(), if stdin_open => match chunk {
                Some(bytes) => {
                    if let Some(before) = detach_prefix(&bytes, opts.detach_key) {
                        tx.send_stdin(before).await?;
                        break Ending::Detached { session_id };
                    }
                    tx.send_stdin(&bytes).await?;
                    sent_input = true;
                }
                None => {
                    stdin_open = false;
                    if sent_input || opts.eof_without_input {
                        tx.send_stdin_eof().await?;
                    }
                }
            },
            _ = winch.recv() => {
                let (cols, rows) = terminal::size();
                tx.resize(cols, rows).await?;
            }
            _ = term.recv() => break Ending::Interrupted { signal: libc::SIGTERM },
            _ = hup.recv() => break Ending::Interrupted { signal: libc::SIGHUP },
        }
    };
    close_quietly(&mut tx).await;
    drop(raw);
    Ok(ending)
}

/// The exit code this CLI passes on for a remote exit code: codes a shell can
/// represent pass unchanged, anything else becomes 255.
pub fn local_exit_code(remote: i32) -> i32 {
    if (0..=255).contains(&remote) {
        remote
    } else {
        255
    }
}

/// With the detach key on: the bytes typed before Ctrl-\, if the chunk holds one.
pub fn detach_prefix(chunk: &[u8], detach_key: bool) -> Option<&[u8]> {
    if !detach_key {
        return None;
    }
    chunk
        .iter()
        .position(|b| *b == DETACH_BYTE)
        .map(|at| &chunk[..at])
}

fn lost_message(session_id: Option<&str>) -> String {
    match session_id {
        Some(id) => format!(
            "the connection closed before the command finished; it may still be running: \
             `bothy attach {id}` re-attaches"
        ),
        None => "the connection closed before the command finished".into(),
    }
}

/// Closing after the exit code is a courtesy: the result is already known.
async fn close_quietly(tx: &mut ExecSender) {
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), tx.close()).await;
}

fn write_all(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write the command's output")
}

/// Reads stdin on a plain thread: a blocked read must not keep the runtime
/// from shutting down when the session ends first.
fn spawn_stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_key_splits_the_chunk() {
        assert_eq!(detach_prefix(b"ls\x1cmore", true), Some(&b"ls"[..]));
        assert_eq!(detach_prefix(b"\x1c", true), Some(&b""[..]));
        assert_eq!(detach_prefix(b"ls\n", true), None);
        assert_eq!(detach_prefix(b"ls\x1c", false), None);
    }

    #[test]
    fn exit_codes_pass_through_when_representable() {
        assert_eq!(local_exit_code(0), 0);
        assert_eq!(local_exit_code(42), 42);
        assert_eq!(local_exit_code(255), 255);
        assert_eq!(local_exit_code(-1), 255);
        assert_eq!(local_exit_code(256), 255);
    }
}
