//! `bothy bench io-worker`: one storage workload in one directory, one JSON
//! line out. The same binary is bind-mounted into every box at
//! [`bothy_api::inbox::EXE`], so a box and a reference file system on the
//! host run exactly the same code. Only std and libc: it must run anywhere.
//!
//! Every block written is unique (random bytes stamped with its index), so a
//! content-addressed store can neither deduplicate nor compress the data: the
//! numbers are what a box writing real, incompressible data gets.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::args::BenchWorkload;
use crate::stats::round3;

const MIB: usize = 1 << 20;
const BLOCK: usize = 4096;
/// The file `rand-write` writes into.
const RAND_FILE_MIB: usize = 256;
/// Random writes per `rand-write` run, one fsync after every [`FSYNC_EVERY`].
const RAND_WRITES: usize = 16_384;
const FSYNC_EVERY: usize = 64;
/// A slow target still finishes: `rand-write` stops here and reports what it did.
const RAND_DEADLINE: Duration = Duration::from_secs(60);
const SEQ_FILE: &str = "seq.bin";
const RAND_FILE: &str = "rand.bin";
const TAR_FILE: &str = "untar-src.tar";
const UNTAR_DIR: &str = "untar";

/// What one workload measured: the JSON line `io-worker` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub workload: String,
    /// MiB per second (seq-write, seq-read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mb_per_s: Option<f64>,
    /// 4 KiB writes per second, fsyncs included (rand-write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<f64>,
    /// Files extracted per second, final syncfs included (untar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_per_s: Option<f64>,
    /// Wall time of the timed part.
    pub seconds: f64,
}

pub struct WorkerArgs<'a> {
    pub dir: &'a Path,
    pub size_mb: usize,
    pub files: usize,
}

pub fn io_worker(workload: BenchWorkload, args: &WorkerArgs) -> Result<i32> {
    std::fs::create_dir_all(args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let result = run(workload, args)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(0)
}

pub fn run(workload: BenchWorkload, args: &WorkerArgs) -> Result<WorkloadResult> {
    match workload {
        BenchWorkload::SeqWrite => seq_write(&args.dir.join(SEQ_FILE), args.size_mb),
        BenchWorkload::SeqRead => seq_read(&args.dir.join(SEQ_FILE)),
        BenchWorkload::RandWrite => rand_write(&args.dir.join(RAND_FILE)),
        BenchWorkload::Untar => untar(args.dir, args.files),
    }
}

/// Unique, incompressible blocks: random bytes, the first 8 of every 4 KiB
/// block overwritten with a counter that never repeats within a run.
struct BlockSource {
    buf: Vec<u8>,
    counter: u64,
}

impl BlockSource {
    fn new(len: usize) -> Self {
        let mut buf = vec![0u8; len];
        rand::rng().fill_bytes(&mut buf);
        Self { buf, counter: 0 }
    }

    fn next(&mut self) -> &[u8] {
        for block in self.buf.chunks_mut(BLOCK) {
            self.counter += 1;
            let n = block.len().min(8);
            block[..n].copy_from_slice(&self.counter.to_le_bytes()[..n]);
        }
        &self.buf
    }
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    round2(bytes as f64 / MIB as f64 / elapsed.as_secs_f64().max(1e-9))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `size_mb` MiB in 1 MiB writes, then fsync; the fsync is timed.
fn seq_write(path: &Path, size_mb: usize) -> Result<WorkloadResult> {
    let mut source = BlockSource::new(MIB);
    let started = Instant::now();
    let written = write_file(path, size_mb, &mut source)?;
    let elapsed = started.elapsed();
    Ok(WorkloadResult {
        workload: "seq-write".into(),
        mb_per_s: Some(mb_per_s(written, elapsed)),
        iops: None,
        files_per_s: None,
        seconds: round3(elapsed.as_secs_f64()),
    })
}

fn write_file(path: &Path, size_mb: usize, source: &mut BlockSource) -> Result<u64> {
    let mut file =
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut written = 0u64;
    for _ in 0..size_mb {
        file.write_all(source.next())
            .with_context(|| format!("writing {}", path.display()))?;
        written += MIB as u64;
    }
    file.sync_all()
        .with_context(|| format!("fsync of {}", path.display()))?;
    Ok(written)
}

/// A 1 MiB buffer aligned for O_DIRECT, carved out of a slightly larger Vec
/// (no unsafe allocation needed).
struct AlignedBuf {
    storage: Vec<u8>,
    offset: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + BLOCK];
        let addr = storage.as_ptr() as usize;
        let offset = (BLOCK - addr % BLOCK) % BLOCK;
        Self {
            storage,
            offset,
            len,
        }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

/// Reads the seq-write file back with O_DIRECT, 1 MiB at a time: no page
/// cache of the file system under test, which a box cannot drop itself.
fn seq_read(path: &Path) -> Result<WorkloadResult> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| {
            format!(
                "cannot open {} with O_DIRECT (run seq-write first)",
                path.display()
            )
        })?;
    let mut buf = AlignedBuf::new(MIB);
    let started = Instant::now();
    let mut read = 0u64;
    loop {
        let n = file
            .read(buf.as_mut())
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(read > 0, "{} is empty", path.display());
    Ok(WorkloadResult {
        workload: "seq-read".into(),
        mb_per_s: Some(mb_per_s(read, elapsed)),
        iops: None,
        files_per_s: None,
        seconds: round3(elapsed.as_secs_f64()),
    })
}

/// Lays out a 256 MiB file (untimed, fsynced), then times random 4 KiB
/// buffered writes at 4 KiB-aligned offsets with an fsync every 64.
fn rand_write(path: &Path) -> Result<WorkloadResult> {
    let mut source = BlockSource::new(MIB);
    write_file(path, RAND_FILE_MIB, &mut source)?;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let blocks = (RAND_FILE_MIB * MIB / BLOCK) as u64;
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let mut block = vec![0u8; BLOCK];
    rng.fill_bytes(&mut block);
    let started = Instant::now();
    let mut done = 0usize;
    while done < RAND_WRITES {
        let index = rng.random_range(0..blocks);
        block[..8].copy_from_slice(&(done as u64).to_le_bytes());
        file.write_all_at(&block, index * BLOCK as u64)
            .with_context(|| format!("writing {}", path.display()))?;
        done += 1;
        if done.is_multiple_of(FSYNC_EVERY) {
            file.sync_data()
                .with_context(|| format!("fsync of {}", path.display()))?;
            if started.elapsed() > RAND_DEADLINE {
                break;
            }
        }
    }
    file.sync_data()
        .with_context(|| format!("fsync of {}", path.display()))?;
    let elapsed = started.elapsed();
    Ok(WorkloadResult {
        workload: "rand-write".into(),
        mb_per_s: None,
        iops: Some(round2(done as f64 / elapsed.as_secs_f64().max(1e-9))),
        files_per_s: None,
        seconds: round3(elapsed.as_secs_f64()),
    })
}

/// Builds a tar of `files` small files (untimed, next to the target), then
/// times `tar -xf` into `dir/untar` and a syncfs of the file system.
fn untar(dir: &Path, files: usize) -> Result<WorkloadResult> {
    let tar_path = dir.join(TAR_FILE);
    let out = dir.join(UNTAR_DIR);
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .with_context(|| format!("cannot remove the old {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    {
        let file = File::create(&tar_path)
            .with_context(|| format!("cannot create {}", tar_path.display()))?;
        let mut w = BufWriter::new(file);
        write_tree_tar(
            &mut w,
            files,
            &mut rand::rngs::StdRng::seed_from_u64(0x6274_6879),
        )?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
    }
    // Nothing of the setup may still be in flight when the clock starts.
    syncfs(dir)?;
    let started = Instant::now();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&out)
        .status()
        .context("cannot run tar: is it installed?")?;
    anyhow::ensure!(status.success(), "tar -xf failed: {status}");
    syncfs(&out)?;
    let elapsed = started.elapsed();
    // The archive is not part of the result; leave the extracted tree.
    let _ = std::fs::remove_file(&tar_path);
    Ok(WorkloadResult {
        workload: "untar".into(),
        mb_per_s: None,
        iops: None,
        files_per_s: Some(round2(files as f64 / elapsed.as_secs_f64().max(1e-9))),
        seconds: round3(elapsed.as_secs_f64()),
    })
}

fn syncfs(path: &Path) -> Result<()> {
    let dir = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("syncfs of {}", path.display()));
    }
    Ok(())
}

/// Where file `i` of the tree goes: 50 top directories of 20 each, so a few
/// dozen files per leaf directory, like a source tree.
fn tree_path(i: usize) -> PathBuf {
    PathBuf::from(format!("d{:02}/s{:02}/f{i:06}", i % 50, (i / 50) % 20))
}

/// A POSIX ustar archive of `files` files of 0..=4096 random bytes under
/// [`tree_path`], directories first. Written by hand to keep the worker free
/// of dependencies; `tar` reads it back in the tests.
fn write_tree_tar(w: &mut impl Write, files: usize, rng: &mut impl RngCore) -> Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for i in 0..files.min(1000) {
        if let Some(parent) = tree_path(i).parent() {
            dirs.insert(parent.parent().map(Path::to_path_buf));
            dirs.insert(Some(parent.to_path_buf()));
        }
    }
    for dir in dirs.into_iter().flatten() {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let name = format!("{}/", dir.display());
        w.write_all(&ustar_header(&name, 0, b'5', 0o755)?)?;
    }
    let mut data = vec![0u8; BLOCK];
    for i in 0..files {
        let len = rng.next_u32() as usize % (BLOCK + 1);
        rng.fill_bytes(&mut data[..len]);
        let name = tree_path(i).display().to_string();
        w.write_all(&ustar_header(&name, len as u64, b'0', 0o644)?)?;
        w.write_all(&data[..len])?;
        let pad = (512 - len % 512) % 512;
        w.write_all(&[0u8; 512][..pad])?;
    }
    w.write_all(&[0u8; 1024])?;
    Ok(())
}

fn ustar_header(name: &str, size: u64, kind: u8, mode: u32) -> Result<[u8; 512]> {
    anyhow::ensure!(name.len() < 100, "tar name too long: {name}");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    Ok(h)
}

/// Zero-padded octal with a NUL terminator filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_never_repeat() {
        let mut s = BlockSource::new(4 * BLOCK);
        let a = s.next().to_vec();
        let b = s.next().to_vec();
        let mut blocks: Vec<&[u8]> = a.chunks(BLOCK).chain(b.chunks(BLOCK)).collect();
        blocks.sort();
        blocks.dedup();
        assert_eq!(blocks.len(), 8);
    }

    #[test]
    fn the_archive_extracts_with_tar() {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = run(
            BenchWorkload::Untar,
            &WorkerArgs {
                dir: dir.path(),
                size_mb: 1,
                files: 1234,
            },
        )
        .expect("untar");
        assert!(r.files_per_s.is_some_and(|f| f > 0.0));
        let leaf = dir.path().join(UNTAR_DIR).join(tree_path(1233));
        let len = std::fs::metadata(&leaf).expect("last file extracted").len();
        assert!(len <= BLOCK as u64);
        let count = walk_files(&dir.path().join(UNTAR_DIR));
        assert_eq!(count, 1234);
        assert!(!dir.path().join(TAR_FILE).exists());
    }

    fn walk_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .expect("readable")
            .map(|e| {
                let e = e.expect("entry");
                if e.file_type().expect("type").is_dir() {
                    walk_files(&e.path())
                } else {
                    1
                }
            })
            .sum()
    }

    #[test]
    fn write_then_direct_read_and_random_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = WorkerArgs {
            dir: dir.path(),
            size_mb: 3,
            files: 0,
        };
        let w = run(BenchWorkload::SeqWrite, &args).expect("seq-write");
        assert_eq!(w.workload, "seq-write");
        assert!(w.mb_per_s.is_some_and(|m| m > 0.0));
        let len = std::fs::metadata(dir.path().join(SEQ_FILE))
            .expect("file")
            .len();
        assert_eq!(len, 3 * MIB as u64);
        let r = run(BenchWorkload::SeqRead, &args).expect("seq-read");
        assert!(r.mb_per_s.is_some_and(|m| m > 0.0));
        let json = serde_json::to_value(&r).expect("json");
        assert!(json.get("iops").is_none(), "{json}");
        let back: WorkloadResult = serde_json::from_value(json).expect("parses back");
        assert_eq!(back, r);
    }

    #[test]
    fn octal_fields_are_nul_terminated() {
        let mut f = [0xffu8; 8];
        octal(&mut f, 0o644);
        assert_eq!(&f, b"0000644\0");
        let h = ustar_header("a/b", 5, b'0', 0o644).expect("header");
        assert_eq!(&h[257..263], b"ustar\0");
    }
}
