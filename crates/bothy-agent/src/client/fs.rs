//! The daemon's side of the fs requests: one connection each; reads and
//! writes stream file bytes in bounded frames, and neither side reads
//! ahead of what the other consumes, so a file of any size moves through a
//! socket buffer's worth of memory.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::{AgentClient, AgentError, CONNECT_TIMEOUT, REPLY_TIMEOUT};
use crate::proto::{
    ErrorKind, Frame, FrameReader, FsCode, FsEntry, FsError, FsEvent, FsReply, FsRequest, Reply,
    MAX_PAYLOAD,
};

/// Longest an fs operation answered at once may take: a recursive copy or
/// delete of a big tree is disk-bound.
const FS_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest the agent may take to send the next piece of a file being read
/// (or to accept the next piece of one being written).
const DATA_TIMEOUT: Duration = Duration::from_secs(120);
/// Most entries taken from one listing, whatever the agent sends.
const MAX_ENTRIES: usize = 100_000;

type Reader = FrameReader<ReadHalf<UnixStream>>;
type Writer = WriteHalf<UnixStream>;

/// A file being read: its size when opened, then its bytes.
pub struct FsDownload {
    pub size: u64,
    reader: Reader,
    _writer: Writer,
    done: bool,
}

impl FsDownload {
    /// The next piece of the file; `Ok(None)` at its end. An error means
    /// the file was not read whole.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, AgentError> {
        if self.done {
            return Ok(None);
        }
        let frame = tokio::time::timeout(DATA_TIMEOUT, self.reader.next())
            .await
            .map_err(|_| AgentError::Protocol("the box's agent stopped sending the file".into()))?;
        match frame? {
            Some(Frame::Data(d)) => Ok(Some(d)),
            Some(Frame::DataEnd) => {
                self.done = true;
                Ok(None)
            }
            Some(Frame::Reply(Reply::Fs(FsReply::Failed { error }))) => {
                self.done = true;
                Err(AgentError::Fs(error))
            }
            None => Err(AgentError::Protocol(
                "the box's agent closed the connection in the middle of a file".into(),
            )),
            Some(_) => Err(AgentError::Protocol(
                "the box's agent sent something else than file data".into(),
            )),
        }
    }
}

/// A file being written: send its bytes, then [`FsUpload::finish`].
/// Dropping it before then leaves the old file as it was.
pub struct FsUpload {
    reader: Reader,
    writer: Writer,
}

impl FsUpload {
    pub async fn send(&mut self, data: &[u8]) -> Result<(), AgentError> {
        for piece in data.chunks(MAX_PAYLOAD) {
            let frame = Frame::Data(piece.to_vec()).encode()?;
            // Waits while the agent's disk is slower than the client.
            tokio::time::timeout(DATA_TIMEOUT, self.writer.write_all(&frame))
                .await
                .map_err(|_| AgentError::Protocol("the box's agent stopped taking data".into()))?
                .map_err(AgentError::Io)?;
        }
        Ok(())
    }

    /// Ends the file; answers once it is in place, as it now is.
    pub async fn finish(mut self) -> Result<FsEntry, AgentError> {
        self.writer.write_all(&Frame::DataEnd.encode()?).await?;
        self.answer().await
    }

    /// The agent's answer after a failed send (it may have said why).
    pub async fn failure(mut self) -> AgentError {
        match tokio::time::timeout(Duration::from_secs(2), self.answer()).await {
            Ok(Err(e)) => e,
            _ => AgentError::Protocol("the box's agent stopped taking the file".into()),
        }
    }

    async fn answer(&mut self) -> Result<FsEntry, AgentError> {
        let frame = tokio::time::timeout(FS_TIMEOUT, self.reader.next())
            .await
            .map_err(|_| AgentError::Protocol("the box's agent did not finish the write".into()))?;
        match frame? {
            Some(Frame::Reply(Reply::Fs(FsReply::Written { entry }))) => Ok(entry),
            Some(Frame::Reply(Reply::Fs(FsReply::Failed { error }))) => Err(AgentError::Fs(error)),
            _ => Err(AgentError::Protocol(
                "unexpected answer to the end of a write".into(),
            )),
        }
    }
}

impl AgentClient {
    /// Connects, sends `req` and reads the first reply (within `within`).
    async fn fs_open(
        &self,
        req: FsRequest,
        within: Duration,
    ) -> Result<(FsReply, Reader, Writer), AgentError> {
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(AgentError::Unreachable(e)),
                Err(_) => {
                    return Err(AgentError::Unreachable(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the box's agent did not accept a connection",
                    )))
                }
            };
        let (reader, mut writer) = tokio::io::split(stream);
        let mut reader = FrameReader::new(reader);
        let exchange = async {
            writer
                .write_all(&Frame::Request(crate::proto::Request::Fs(req)).encode()?)
                .await?;
            reader.next().await.map_err(AgentError::from)
        };
        let first = tokio::time::timeout(within, exchange).await.map_err(|_| {
            AgentError::Protocol(format!("the agent did not answer within {within:?}"))
        })??;
        match first {
            Some(Frame::Reply(Reply::Fs(FsReply::Failed { error }))) => Err(AgentError::Fs(error)),
            Some(Frame::Reply(Reply::Fs(reply))) => Ok((reply, reader, writer)),
            // An agent from before the fs API (a box booted by an older
            // daemon) refuses the request it cannot parse.
            Some(Frame::Reply(Reply::Error {
                kind: ErrorKind::BadRequest,
                ..
            })) => Err(AgentError::Fs(FsError::new(
                FsCode::EIO,
                "this box runs an agent older than the fs API; restart the box to update it",
                "",
            ))),
            Some(Frame::Reply(other)) => Err(super::unexpected(&other)),
            Some(_) => Err(AgentError::Protocol(
                "the agent answered with a non-reply frame".into(),
            )),
            None => Err(AgentError::Protocol(
                "the agent closed the connection without answering".into(),
            )),
        }
    }

    /// Opens a file for reading (an `FsRequest::Read`).
    pub async fn fs_read(&self, req: FsRequest) -> Result<FsDownload, AgentError> {
        match self.fs_open(req, REPLY_TIMEOUT).await? {
            (FsReply::Opened { size }, reader, writer) => Ok(FsDownload {
                size,
                reader,
                _writer: writer,
                done: false,
            }),
            _ => Err(AgentError::Protocol("unexpected answer to a read".into())),
        }
    }

    /// Starts a write (an `FsRequest::Write`).
    pub async fn fs_write(&self, req: FsRequest) -> Result<FsUpload, AgentError> {
        match self.fs_open(req, REPLY_TIMEOUT).await? {
            (FsReply::Ready, reader, writer) => Ok(FsUpload { reader, writer }),
            _ => Err(AgentError::Protocol("unexpected answer to a write".into())),
        }
    }

    /// A listing (an `FsRequest::List`), all its entries.
    pub async fn fs_list(&self, req: FsRequest) -> Result<Vec<FsEntry>, AgentError> {
        let (mut reply, mut reader, _writer) = self.fs_open(req, FS_TIMEOUT).await?;
        let mut all = Vec::new();
        loop {
            match reply {
                FsReply::Entries { entries, more } => {
                    if all.len() + entries.len() > MAX_ENTRIES {
                        return Err(AgentError::Protocol("the listing is too long".into()));
                    }
                    all.extend(entries);
                    if !more {
                        return Ok(all);
                    }
                }
                _ => return Err(AgentError::Protocol("unexpected answer to a list".into())),
            }
            reply = match tokio::time::timeout(FS_TIMEOUT, reader.next()).await {
                Ok(Ok(Some(Frame::Reply(Reply::Fs(FsReply::Failed { error }))))) => {
                    return Err(AgentError::Fs(error))
                }
                Ok(Ok(Some(Frame::Reply(Reply::Fs(r))))) => r,
                _ => return Err(AgentError::Protocol("the listing was cut off".into())),
            };
        }
    }

    /// An operation answered by how many files it changed (delete, rename,
    /// copy, chmod, chown).
    pub async fn fs_count(&self, req: FsRequest) -> Result<u64, AgentError> {
        match self.fs_open(req, FS_TIMEOUT).await? {
            (FsReply::Count { count }, _, _) => Ok(count),
            _ => Err(AgentError::Protocol(
                "unexpected answer to an fs call".into(),
            )),
        }
    }

    /// A watch (an `FsRequest::Watch`): the paths watched, then events (or
    /// errors the watch goes on after) until the receiver is dropped or the
    /// agent ends the watch.
    pub async fn fs_watch(
        &self,
        req: FsRequest,
    ) -> Result<(Vec<String>, mpsc::Receiver<Result<FsEvent, FsError>>), AgentError> {
        let (reply, mut reader, writer) = self.fs_open(req, REPLY_TIMEOUT).await?;
        let FsReply::Subscribed { paths } = reply else {
            return Err(AgentError::Protocol("unexpected answer to a watch".into()));
        };
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            // Dropping the writer would not end the watch; the connection
            // ends when both halves go, after the receiver is dropped.
            let _writer = writer;
            loop {
                let next = tokio::select! {
                    next = reader.next() => next,
                    () = tx.closed() => return,
                };
                let item = match next {
                    Ok(Some(Frame::Reply(Reply::Fs(FsReply::Event { event })))) => Ok(event),
                    Ok(Some(Frame::Reply(Reply::Fs(FsReply::Failed { error })))) => Err(error),
                    _ => return,
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok((paths, rx))
    }
}
