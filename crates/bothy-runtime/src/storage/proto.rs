//! The storage socket's protocol: one request per connection, each a line
//! of JSON; one answer line back. Lines are bounded ([`MAX_LINE`]); an
//! answer is `{"ok": ...}` or `{"error": {"kind", "message"}}`.
//!
//! [`PROTOCOL`] is bumped with any change a storage process of the previous
//! build could not understand: a daemon and an older storage process keep
//! working together across an upgrade until the boxes are drained.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::RuntimeError;

pub const PROTOCOL: u32 = 1;
/// Longest request or answer line.
pub const MAX_LINE: usize = 1 << 20;

/// Unknown fields are ignored, so a newer daemon's optional additions reach
/// an older storage process harmlessly; an unknown `op` is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who is serving: [`Hello`].
    Hello,
    /// Imports the base image into `volume` (checkpoint 1) unless done.
    EnsureBase {
        volume: String,
        image: PathBuf,
    },
    /// Makes `volume` a clone of `checkpoint` of `from` sized `size` bytes
    /// (its filesystem grown or shrunk to match). Nothing if it exists.
    Create {
        volume: String,
        from: String,
        checkpoint: u64,
        size: u64,
    },
    /// Serves the volume and mounts its filesystem: [`Attached`].
    Attach {
        volume: String,
    },
    /// Unmounts and stops serving; with `sync`, then makes it whole in the
    /// object store.
    Detach {
        volume: String,
        sync: bool,
    },
    /// The volumes served now.
    Served,
    /// A crash-consistent checkpoint: [`Made`].
    Checkpoint {
        volume: String,
    },
    /// The volume's checkpoints: [`CheckpointList`].
    Checkpoints {
        volume: String,
    },
    /// Keeps the current content as a new checkpoint, then goes back to
    /// `checkpoint`: [`Made`] (the kept one). The volume must be detached.
    Restore {
        volume: String,
        checkpoint: u64,
    },
    DeleteCheckpoint {
        volume: String,
        checkpoint: u64,
    },
    /// Detaches and deletes the volume.
    Destroy {
        volume: String,
    },
    /// Barrier: everything written and every checkpoint is in the object
    /// store when this answers.
    Sync {
        volume: String,
    },
    /// Brings the volume back from the object store if it is not here:
    /// [`Recovered`].
    Recover {
        volume: String,
    },
    /// What the volume stores: [`DiskUsage`].
    Usage {
        volume: String,
    },
    /// Frees chunks nothing refers to: [`Collected`].
    CollectGarbage,
    /// Exits once nothing is served (fails with `busy` otherwise).
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub pid: i32,
    /// The BLAKE3 of the storage process's executable, to tell builds apart.
    pub build: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    /// The box's root filesystem, mounted.
    pub root: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    pub volumes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Made {
    pub checkpoint: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointList {
    pub checkpoints: Vec<u64>,
    /// Those of `checkpoints` that are in the object store (map and chunks).
    #[serde(default)]
    pub in_object_store: Vec<u64>,
}

/// Bytes in whole chunks: distinct chunks the disk refers to, and those only
/// its checkpoints keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub disk_bytes: u64,
    pub checkpoint_bytes: u64,
    pub checkpoints: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    pub recovered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    pub objects: usize,
    pub cached: usize,
}

/// The kinds of failure the runtime tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    Busy,
    Invalid,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Ok(serde_json::Value),
    Error(WireError),
}

impl From<&RuntimeError> for WireError {
    fn from(e: &RuntimeError) -> Self {
        let kind = match e {
            RuntimeError::NotFound(_) => ErrorKind::NotFound,
            RuntimeError::Busy(_) => ErrorKind::Busy,
            _ => ErrorKind::Failed,
        };
        Self {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<WireError> for RuntimeError {
    fn from(e: WireError) -> Self {
        match e.kind {
            ErrorKind::NotFound => Self::NotFound(e.message),
            ErrorKind::Busy => Self::Busy(e.message),
            ErrorKind::Invalid | ErrorKind::Failed => Self::Failed(e.message),
        }
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at end of stream.
pub async fn read_line<R: tokio::io::AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_LINE + 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line longer than the protocol allows",
            ));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            line.pop();
            return Ok(Some(line));
        }
    }
}

pub async fn write_line<W: tokio::io::AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_ops_are_refused() {
        let r = Request::Detach {
            volume: "b1".into(),
            sync: true,
        };
        let text = serde_json::to_string(&r).expect("encode");
        assert_eq!(text, r#"{"op":"detach","volume":"b1","sync":true}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).expect("decode"), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"served","later":1}"#).expect("decode"),
            Request::Served
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_host"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"volume":"b1"}"#).is_err());
    }

    #[test]
    fn errors_keep_their_kind_over_the_wire() {
        let e = RuntimeError::NotFound("no checkpoint 3".into());
        let back: RuntimeError = WireError::from(&e).into();
        assert!(matches!(back, RuntimeError::NotFound(m) if m == "no checkpoint 3"));
        let e = RuntimeError::Busy("held".into());
        assert!(matches!(
            RuntimeError::from(WireError::from(&e)),
            RuntimeError::Busy(_)
        ));
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let long = vec![b'x'; MAX_LINE + 10];
        let mut r = BufReader::new(&long[..]);
        assert!(read_line(&mut r).await.is_err());
        let mut r = BufReader::new(&b"{\"op\":\"hello\"}\nrest"[..]);
        assert_eq!(
            read_line(&mut r).await.expect("read").as_deref(),
            Some(&b"{\"op\":\"hello\"}"[..])
        );
        assert_eq!(
            read_line(&mut r).await.expect("read").as_deref(),
            Some(&b"rest"[..])
        );
        assert_eq!(read_line(&mut r).await.expect("read"), None);
    }
}
