//! The FUSE adapter: each request becomes one call on the volume.

use std::ffi::OsStr;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::Shared;

pub const DISK_NAME: &str = "disk";
pub const DISK_INO: u64 = 2;
const ROOT_INO: u64 = 1;
/// Nothing but this process changes the tree or the file's size.
const TTL: Duration = Duration::from_secs(3600);
const BLOCK: u32 = 4096;

const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;
/// Linux 6.17+: zero and keep allocated; the loop driver uses it for
/// REQ_OP_WRITE_ZEROES without unmap. Zeros are holes here either way.
const FALLOC_FL_WRITE_ZEROES: i32 = 0x80;

pub struct DiskFs {
    shared: Arc<Shared>,
    size: u64,
    chunk_size: u64,
    direct_io: bool,
    born: SystemTime,
}

impl DiskFs {
    pub(crate) fn new(shared: Arc<Shared>, size: u64, chunk_size: u64, direct_io: bool) -> Self {
        Self {
            shared,
            size,
            chunk_size,
            direct_io,
            born: SystemTime::now(),
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, perm, size, nlink, blocks) = if ino == ROOT_INO {
            (FileType::Directory, 0o700, 0, 2, 0)
        } else {
            let used = self.allocated_bytes().unwrap_or(self.size);
            (FileType::RegularFile, 0o600, self.size, 1, used / 512)
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks,
            atime: self.born,
            mtime: self.born,
            ctime: self.born,
            crtime: self.born,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        }
    }

    fn allocated_bytes(&self) -> Option<u64> {
        let guard = self.shared.read();
        let v = guard.as_ref()?;
        match v.allocated_chunks() {
            Ok(n) => Some(n * self.chunk_size),
            Err(e) => {
                tracing::error!(%e, "counting allocated chunks failed");
                None
            }
        }
    }

    /// Runs `f` on the volume exclusively, mapping its failure to EIO.
    fn with_mut(
        &self,
        what: &str,
        f: impl FnOnce(&mut bothy_volume::Volume) -> Result<(), bothy_volume::VolumeError>,
    ) -> Result<(), Errno> {
        let mut guard = self.shared.write();
        let v = guard.as_mut().ok_or(Errno::EIO)?;
        f(v).map_err(|e| volume_errno(what, e))
    }

    fn in_range(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.size)
    }
}

fn volume_errno(what: &str, e: bothy_volume::VolumeError) -> Errno {
    match e {
        bothy_volume::VolumeError::OutOfRange { .. } => Errno::EINVAL,
        e => {
            tracing::error!(op = what, %e, "volume request failed");
            Errno::EIO
        }
    }
}

impl Filesystem for DiskFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Bigger requests mean fewer round trips; the kernel caps them at its
        // max_pages limit (1 MiB by default), the rest is ours to ask for.
        if let Err(max) = config.set_max_write(u32::MAX) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        // The loop device queues many requests at once.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        // Let the kernel split one large direct I/O into parallel requests.
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == ROOT_INO && name == DISK_NAME {
            reply.entry(&TTL, &self.attr(DISK_INO), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino.0 {
            ROOT_INO | DISK_INO => reply.attr(&TTL, &self.attr(ino.0)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino.0 != ROOT_INO && ino.0 != DISK_INO {
            return reply.error(Errno::ENOENT);
        }
        // The volume's size is fixed at creation; times are accepted and
        // not kept.
        let resize = ino.0 == DISK_INO && size.is_some_and(|s| s != self.size);
        if resize || mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&TTL, &self.attr(ino.0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        // Without FOPEN_KEEP_CACHE every open drops the file's page cache, so
        // a restore done while nothing had it open is never hidden by stale
        // pages.
        let flags = if self.direct_io {
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
        } else {
            FopenFlags::empty()
        };
        self.shared
            .open_files
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        reply.opened(FileHandle(0), flags);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if ino.0 == DISK_INO {
            // Saturating: a release the kernel replays after our restart
            // must not wrap the count.
            let _ = self.shared.open_files.fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| Some(n.saturating_sub(1)),
            );
        }
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        if offset >= self.size {
            return reply.data(&[]);
        }
        let len = u64::from(size).min(self.size - offset) as usize;
        let mut buf = vec![0u8; len];
        let res = {
            let guard = self.shared.read();
            match guard.as_ref() {
                Some(v) => v
                    .read(offset, &mut buf)
                    .map_err(|e| volume_errno("read", e)),
                None => Err(Errno::EIO),
            }
        };
        match res {
            Ok(()) => reply.data(&buf),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino.0 != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        if !self.in_range(offset, data.len() as u64) {
            return reply.error(Errno::EINVAL);
        }
        match self.with_mut("write", |v| v.write(offset, data)) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.with_mut("flush", |v| v.flush()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.with_mut("fsync", |v| v.flush()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if ino.0 != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        let keep_size = mode & FALLOC_FL_KEEP_SIZE != 0;
        let Some(end) = offset.checked_add(length) else {
            return reply.error(Errno::EINVAL);
        };
        // Growing is impossible; past the end with KEEP_SIZE is a no-op there.
        if end > self.size && !keep_size {
            return reply.error(Errno::EINVAL);
        }
        let zeroing = match mode & !FALLOC_FL_KEEP_SIZE {
            // Preallocation: every byte of the fixed-size file already exists.
            0 => false,
            FALLOC_FL_PUNCH_HOLE if keep_size => true,
            FALLOC_FL_ZERO_RANGE | FALLOC_FL_WRITE_ZEROES => true,
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        let end = end.min(self.size);
        if !zeroing || offset >= end {
            return reply.ok();
        }
        match self.with_mut("fallocate", |v| v.punch_hole(offset, end - offset)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT_INO {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (ROOT_INO, FileType::Directory, "."),
            (ROOT_INO, FileType::Directory, ".."),
            (DISK_INO, FileType::RegularFile, DISK_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.size / u64::from(BLOCK);
        let used = self.allocated_bytes().unwrap_or(0) / u64::from(BLOCK);
        let free = blocks.saturating_sub(used);
        reply.statfs(blocks, free, free, 1, 0, BLOCK, 255, BLOCK);
    }
}
