//! Real FUSE mounts, real loop devices and ext4; needs root.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bothy_fuse::{force_unmount, is_dead_mount, MountOptions, VolumeMount};
use bothy_store::{ChunkStore, ObjectBlobs, RetryPolicy, StoreUrl};
use bothy_volume::{Storage, StorageConfig, Volume};

const MIB: u64 = 1 << 20;
const CHILD_ENV: &str = "BOTHY_FUSE_TEST_CHILD";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests mount FUSE filesystems and loop devices: run them as root"
    );
}

/// A state dir, an object-store dir and a mount point, removed at the end.
struct Dirs {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    objects: PathBuf,
    fuse: PathBuf,
    ext4: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let d = |n: &str| {
            let p = tmp.path().join(n);
            std::fs::create_dir(&p).expect("mkdir");
            p
        };
        Self {
            state: d("state"),
            objects: d("objects"),
            fuse: d("fuse"),
            ext4: d("ext4"),
            _tmp: tmp,
        }
    }

    fn storage(&self) -> Storage {
        open_storage(&self.state, &self.objects)
    }
}

fn open_storage(state: &Path, objects: &Path) -> Storage {
    let url: StoreUrl = format!("file://{}", objects.display())
        .parse()
        .expect("store url");
    let store = ChunkStore::new(
        Arc::new(ObjectBlobs::new(url.open().expect("open store"))),
        RetryPolicy::fast(),
    );
    Storage::open(state, store, StorageConfig::default()).expect("open storage")
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A loop device, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, direct_io: bool) -> Self {
        let dio = if direct_io {
            "--direct-io=on"
        } else {
            "--direct-io=off"
        };
        let path = file.to_str().expect("utf-8 path");
        Self(run("losetup", &["--find", "--show", dio, path]))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A mounted filesystem, lazily unmounted on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn ext4(dev: &str, dir: &Path) -> Self {
        run("mount", &["-t", "ext4", dev, dir.to_str().expect("utf-8")]);
        Self(dir.to_path_buf())
    }
    fn unmount(self) {
        run("umount", &[self.0.to_str().expect("utf-8")]);
        std::mem::forget(self);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A FUSE server in a child process (this test binary, running
/// `child_server`), so the test can kill it like a crashed daemon.
struct ChildServer {
    child: Child,
    /// Unmounted on drop unless the test killed the server on purpose and
    /// cleans up itself.
    fuse: Option<PathBuf>,
}

impl ChildServer {
    fn start(dirs: &Dirs, create: Option<(u64, u64)>) -> Self {
        let spec = format!(
            "{}|{}|{}|{}",
            dirs.state.display(),
            dirs.objects.display(),
            dirs.fuse.display(),
            create.map(|(s, c)| format!("{s}:{c}")).unwrap_or_default()
        );
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "child_server", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, spec)
            .spawn()
            .expect("spawn child server");
        let server = Self {
            child,
            fuse: Some(dirs.fuse.clone()),
        };
        let disk = dirs.fuse.join("disk");
        wait_for("the child's FUSE mount", || disk.exists());
        server
    }

    /// Kills the server like a crash: the mount stays behind, dead.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.fuse = None;
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.fuse {
            let _ = force_unmount(dir);
        }
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Not a test on its own: the body of [`ChildServer`]. Does nothing unless
/// started by one.
#[test]
fn child_server() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let storage = open_storage(Path::new(parts[0]), Path::new(parts[1]));
    let volume = match parts[3].split_once(':') {
        Some((size, chunk)) => storage
            .create_volume(
                "v",
                size.parse().expect("size"),
                chunk.parse().expect("chunk"),
            )
            .expect("create"),
        None => storage.open_volume("v").expect("open"),
    };
    let _mount =
        VolumeMount::mount(volume, Path::new(parts[2]), MountOptions::default()).expect("mount");
    loop {
        std::thread::park();
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A page-aligned buffer for O_DIRECT.
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let buf = vec![0u8; len + 4096];
        let start = buf.as_ptr().align_offset(4096);
        Self { buf, start, len }
    }
    fn get(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

fn fallocate(f: &File, mode: i32, offset: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: plain syscall on a valid open fd; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, len as i64) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn mount_volume(volume: Volume, dir: &Path, direct_io: bool) -> VolumeMount {
    VolumeMount::mount(volume, dir, MountOptions { direct_io }).expect("mount")
}

#[test]
fn buffered_and_direct_io_match_a_model() {
    require_root();
    for direct_io in [true, false] {
        let dirs = Dirs::new();
        let storage = dirs.storage();
        let size = 16 * MIB;
        let volume = storage.create_volume("v", size, MIB).expect("create");
        let m = mount_volume(volume, &dirs.fuse, direct_io);
        let disk = m.disk_path();
        let meta = std::fs::metadata(&disk).expect("stat disk");
        assert_eq!(meta.len(), size);
        let names: Vec<_> = std::fs::read_dir(&dirs.fuse)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec!["disk"]);

        let mut model = vec![0u8; size as usize];
        // Buffered writes at odd offsets and lengths, across chunks.
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .expect("open");
        for (i, (off, len)) in [
            (0u64, 10usize),
            (MIB - 3, 7),
            (3 * MIB + 5, 2 * MIB as usize + 11),
        ]
        .into_iter()
        .enumerate()
        {
            let data = pattern(i as u64 + 1, len);
            f.write_all_at(&data, off).expect("write");
            model[off as usize..off as usize + len].copy_from_slice(&data);
        }
        f.sync_all().expect("fsync");
        // O_DIRECT with aligned buffers.
        let d = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&disk)
            .expect("open O_DIRECT");
        let mut buf = Aligned::new(256 * 1024);
        buf.get().copy_from_slice(&pattern(9, 256 * 1024));
        let off = 7 * MIB + 4096 * 3;
        d.write_all_at(buf.get(), off).expect("direct write");
        model[off as usize..off as usize + 256 * 1024].copy_from_slice(&pattern(9, 256 * 1024));
        d.sync_all().expect("fsync");
        let mut rbuf = Aligned::new(MIB as usize);
        for chunk in 0..(size / MIB) {
            d.read_exact_at(rbuf.get(), chunk * MIB)
                .expect("direct read");
            let want = &model[(chunk * MIB) as usize..((chunk + 1) * MIB) as usize];
            assert!(rbuf.get() == want, "O_DIRECT read of MiB {chunk} differs");
        }
        let mut all = Vec::new();
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.read_to_end(&mut all).expect("read all");
        assert!(
            all == model,
            "buffered read differs (direct_io {direct_io})"
        );
        // Reads past the end are short; writes past it and resizing fail.
        let mut tail = [0u8; 100];
        assert_eq!(f.read_at(&mut tail, size - 10).expect("read tail"), 10);
        assert_eq!(f.read_at(&mut tail, size).expect("read at eof"), 0);
        if direct_io {
            let err = f.write_at(b"x", size).expect_err("write past the end");
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        }
        let err = f.set_len(size / 2).expect_err("truncate");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        drop((f, d));
        let v = m.unmount().expect("unmount");
        let mut back = vec![0u8; size as usize];
        v.read(0, &mut back).expect("read volume");
        assert!(back == model, "volume after unmount differs");
    }
}

#[test]
fn fallocate_punches_holes_and_frees_chunks() {
    require_root();
    let dirs = Dirs::new();
    let storage = dirs.storage();
    let volume = storage.create_volume("v", 8 * MIB, MIB).expect("create");
    let m = mount_volume(volume, &dirs.fuse, true);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.disk_path())
        .expect("open");
    f.write_all_at(&pattern(1, 6 * MIB as usize), 0)
        .expect("write");
    f.sync_all().expect("fsync");
    assert_eq!(m.with_volume(|v| v.allocated_chunks()).expect("count"), 6);
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // Chunks 1 and 2 whole, half of chunk 3.
    fallocate(&f, punch, MIB, 2 * MIB + MIB / 2).expect("punch");
    fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 4 * MIB, MIB).expect("zero range");
    f.sync_all().expect("fsync");
    // Left: chunk 0, the second half of chunk 3, chunk 5.
    assert_eq!(m.with_volume(|v| v.allocated_chunks()).expect("count"), 3);
    let mut got = vec![1u8; 6 * MIB as usize];
    f.read_exact_at(&mut got, 0).expect("read");
    let mut want = pattern(1, 6 * MIB as usize);
    want[MIB as usize..(3 * MIB + MIB / 2) as usize].fill(0);
    want[(4 * MIB) as usize..(5 * MIB) as usize].fill(0);
    assert!(got == want);
    // Preallocation is a no-op; the file cannot grow; other modes fail.
    fallocate(&f, 0, 0, 8 * MIB).expect("preallocate");
    let e = fallocate(&f, 0, 0, 9 * MIB).expect_err("grow");
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    let e = fallocate(&f, libc::FALLOC_FL_COLLAPSE_RANGE, 0, MIB).expect_err("collapse");
    assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
    let st = nix::sys::statvfs::fstatvfs(&f).expect("statvfs");
    assert_eq!(st.blocks() * st.fragment_size(), 8 * MIB);
    assert_eq!(st.blocks_free() * st.fragment_size(), 5 * MIB);
    drop(f);
    m.unmount().expect("unmount");
}

#[test]
fn fsynced_writes_survive_a_killed_server() {
    require_root();
    let dirs = Dirs::new();
    let server = ChildServer::start(&dirs, Some((8 * MIB, MIB)));
    let disk = dirs.fuse.join("disk");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .expect("open");
    let kept = pattern(5, 3 * MIB as usize + 123);
    f.write_all_at(&kept, 1000).expect("write");
    f.sync_all().expect("fsync");
    f.write_all_at(&pattern(6, 4096), 7 * MIB)
        .expect("unsynced write");
    server.kill();
    wait_for("the mount to die", || is_dead_mount(&dirs.fuse));
    drop(f);
    force_unmount(&dirs.fuse).expect("force unmount");
    force_unmount(&dirs.fuse).expect("force unmount is idempotent");
    assert!(!is_dead_mount(&dirs.fuse));
    let storage = dirs.storage();
    let v = storage.open_volume("v").expect("reopen");
    let mut got = vec![0u8; kept.len()];
    v.read(1000, &mut got).expect("read");
    assert!(got == kept, "fsynced data lost");
}

fn mkfs(dev: &str) {
    run("mkfs.ext4", &["-q", "-F", "-b", "4096", dev]);
}

fn e2fsck(file: &Path) {
    run("e2fsck", &["-fn", file.to_str().expect("utf-8")]);
}

fn write_files(dir: &Path, n: usize, len: usize, seed: u64) {
    for i in 0..n {
        let mut f = File::create(dir.join(format!("f{i}"))).expect("create");
        f.write_all(&pattern(seed + i as u64, len)).expect("write");
        f.sync_all().expect("fsync");
    }
}

fn check_files(dir: &Path, n: usize, len: usize, seed: u64) {
    for i in 0..n {
        let got = std::fs::read(dir.join(format!("f{i}"))).expect("read");
        assert!(got == pattern(seed + i as u64, len), "file f{i} differs");
    }
}

#[test]
fn ext4_on_loop_with_fstrim_and_fsck() {
    require_root();
    let dirs = Dirs::new();
    let storage = dirs.storage();
    let volume = storage.create_volume("v", 256 * MIB, MIB).expect("create");
    let m = mount_volume(volume, &dirs.fuse, true);
    let lo = Loop::attach(&m.disk_path(), true);
    mkfs(&lo.0);
    let fs = Mounted::ext4(&lo.0, &dirs.ext4);
    write_files(&dirs.ext4, 40, 1 << 20, 100);
    run("sync", &["-f", dirs.ext4.to_str().expect("utf-8")]);
    let full = m.with_volume(|v| v.allocated_chunks()).expect("count");
    assert!(full >= 40, "40 MiB of files use {full} chunks");
    for i in 0..40 {
        std::fs::remove_file(dirs.ext4.join(format!("f{i}"))).expect("rm");
    }
    run("sync", &["-f", dirs.ext4.to_str().expect("utf-8")]);
    run("fstrim", &[dirs.ext4.to_str().expect("utf-8")]);
    let trimmed = m.with_volume(|v| v.allocated_chunks()).expect("count");
    assert!(
        trimmed + 35 <= full,
        "fstrim freed too little: {full} chunks before, {trimmed} after"
    );
    write_files(&dirs.ext4, 5, 100_000, 200);
    fs.unmount();
    drop(lo);
    wait_for("loop detach", || {
        !run("losetup", &["-j", m.disk_path().to_str().expect("utf-8")]).contains("/dev/loop")
    });
    e2fsck(&m.disk_path());
    m.unmount().expect("unmount");
}

#[test]
fn ext4_survives_a_killed_server() {
    require_root();
    let dirs = Dirs::new();
    let disk = dirs.fuse.join("disk");
    {
        let server = ChildServer::start(&dirs, Some((128 * MIB, MIB)));
        let lo = Loop::attach(&disk, true);
        mkfs(&lo.0);
        let fs = Mounted::ext4(&lo.0, &dirs.ext4);
        write_files(&dirs.ext4, 10, 300_000, 1);
        // Make the file names durable too, as an fsynced rename would be.
        File::open(&dirs.ext4)
            .and_then(|d| d.sync_all())
            .expect("fsync dir");
        server.kill();
        wait_for("the mount to die", || is_dead_mount(&dirs.fuse));
        drop(fs);
        drop(lo);
        force_unmount(&dirs.fuse).expect("force unmount");
    }
    wait_for("the dead mount to go", || !is_dead_mount(&dirs.fuse));
    let storage = dirs.storage();
    let volume = storage.open_volume("v").expect("reopen");
    let m = mount_volume(volume, &dirs.fuse, true);
    {
        let lo = Loop::attach(&m.disk_path(), true);
        // Mounting replays the journal.
        let fs = Mounted::ext4(&lo.0, &dirs.ext4);
        check_files(&dirs.ext4, 10, 300_000, 1);
        fs.unmount();
    }
    wait_for("loop detach", || {
        !run("losetup", &["-j", m.disk_path().to_str().expect("utf-8")]).contains("/dev/loop")
    });
    e2fsck(&m.disk_path());
    m.unmount().expect("unmount");
}

#[test]
fn a_restore_through_with_volume_is_seen_by_open_files() {
    require_root();
    let dirs = Dirs::new();
    let storage = dirs.storage();
    let volume = storage.create_volume("v", 4 * MIB, MIB).expect("create");
    // Buffered: the kernel caches the file's pages, which must not go stale.
    let m = mount_volume(volume, &dirs.fuse, false);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.disk_path())
        .expect("open");
    let before = pattern(1, MIB as usize);
    f.write_all_at(&before, 0).expect("write");
    f.sync_all().expect("fsync");
    let cp = m.with_volume(|v| v.checkpoint()).expect("checkpoint");
    f.write_all_at(&pattern(2, MIB as usize), 0).expect("write");
    let mut got = vec![0u8; MIB as usize];
    f.read_exact_at(&mut got, 0).expect("read");
    assert!(got == pattern(2, MIB as usize));
    m.with_volume(|v| v.restore(cp)).expect("restore");
    f.read_exact_at(&mut got, 0).expect("read");
    assert!(got == before, "a reader saw pages from before the restore");
    drop(f);
    m.unmount().expect("unmount");
}
