//! Real boxes on this host: needs root, crun, pasta and the base image (built
//! into the default image dir on first use, which takes a minute or two).
//! The box's init is a stand-in shell loop, so these tests do not depend on
//! the agent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bothy_runtime::disk::DiskSource;
use bothy_runtime::image::{self, DEFAULT_IMAGE_DIR};
use bothy_runtime::{
    BoxSpec, Runtime, RuntimeConfig, RuntimeError, StorageLaunch, DEFAULT_CACHE_BYTES, MOUNT_ROOT,
};

/// pid 1 of a test box: exits on SIGTERM like a well-behaved init.
const STAND_IN_INIT: &str = "trap 'exit 0' TERM; while true; do sleep 3600 & wait $!; done";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// These tests start real boxes: without root they fail rather than pass empty.
fn require_root() {
    assert!(
        is_root(),
        "the runtime tests start real boxes: run them as root"
    );
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

async fn ensure_image() -> PathBuf {
    static BUILD: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    BUILD
        .get_or_init(|| async {
            image::build(Path::new(DEFAULT_IMAGE_DIR), &|p| eprintln!("image: {p:?}"))
                .await
                .expect("building the base image")
        })
        .await
        .clone()
}

/// A runtime in its own temp data dir, with a unique instance name.
struct TestRuntime {
    rt: Arc<Runtime>,
    cfg: RuntimeConfig,
    _dir: tempfile::TempDir,
}

async fn test_runtime() -> TestRuntime {
    ensure_image().await;
    let dir = tempfile::Builder::new()
        .prefix("bothy-rt")
        .tempdir()
        .expect("temp dir");
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let cfg = RuntimeConfig {
        data_dir: dir.path().to_path_buf(),
        instance: format!("t{}x{n}", std::process::id()),
        image_dir: DEFAULT_IMAGE_DIR.into(),
        exe: "/bin/true".into(),
        object_store: None,
        cache_bytes: DEFAULT_CACHE_BYTES,
        storage: StorageLaunch::InProcess,
    };
    let rt = runtime_for(&cfg).await;
    TestRuntime {
        rt: Arc::new(rt),
        cfg,
        _dir: dir,
    }
}

async fn runtime_for(cfg: &RuntimeConfig) -> Runtime {
    Runtime::new(cfg.clone())
        .await
        .expect("runtime")
        .with_init_args(vec!["/bin/sh".into(), "-c".into(), STAND_IN_INIT.into()])
}

fn spec(id: &str, hostname: &str) -> BoxSpec {
    BoxSpec {
        id: id.into(),
        hostname: hostname.into(),
        ram_mb: 256,
        cpus: 1,
        storage_gb: 100,
        nesting: false,
    }
}

/// Destroys the box when the test ends, passed or failed.
struct BoxGuard {
    rt: Arc<Runtime>,
    id: String,
}

impl Drop for BoxGuard {
    fn drop(&mut self) {
        let (rt, id) = (self.rt.clone(), self.id.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on.
        let cleanup = std::thread::spawn(move || {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(tokio) = tokio {
                if let Err(e) = tokio.block_on(rt.destroy(&id)) {
                    eprintln!("cleanup of box {id} failed: {e}");
                }
            }
        });
        let _ = cleanup.join();
    }
}

async fn create_and_start(t: &TestRuntime, spec: &BoxSpec) -> BoxGuard {
    let guard = BoxGuard {
        rt: t.rt.clone(),
        id: spec.id.clone(),
    };
    let t0 = Instant::now();
    t.rt.create(spec, DiskSource::Base).await.expect("create");
    let t1 = Instant::now();
    t.rt.start(spec).await.expect("start");
    eprintln!(
        "box {}: create {:?}, start {:?}",
        spec.id,
        t1 - t0,
        t1.elapsed()
    );
    guard
}

async fn sh(rt: &Runtime, id: &str, script: &str) -> String {
    let (ok, out) = rt
        .exec_diagnostic(id, &["/bin/sh", "-c", script])
        .await
        .expect("crun exec");
    assert!(ok, "`{script}` failed in box {id}: {out}");
    out.trim().to_string()
}

fn mounts_mentioning(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let needle = path.to_string_lossy().to_string();
    text.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// Loop devices whose backing file is under `dir` (the FUSE files of a
/// runtime's disks).
fn loop_devices_under(dir: &Path) -> String {
    let out = std::process::Command::new("losetup")
        .args([
            "--list",
            "--noheadings",
            "--raw",
            "--output",
            "NAME,BACK-FILE",
        ])
        .output()
        .expect("losetup");
    let needle = dir.to_string_lossy().to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (up to 5 s) for `pid` to be gone or a zombie: a killed daemon is
/// reaped by whoever inherited it, at its own pace.
fn process_ends(pid: i32) -> bool {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next());
        if matches!(state, None | Some("Z") | Some("X")) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

#[tokio::test]
async fn box_is_isolated_limited_and_networked() {
    require_root();
    let t = test_runtime().await;
    let s = spec("b00000000001a", "isolated-box");
    let _guard = create_and_start(&t, &s).await;
    let rt = &t.rt;
    assert!(rt.is_running(&s.id).await.expect("is_running"));

    assert_eq!(sh(rt, &s.id, "hostname").await, "isolated-box");
    assert!(sh(rt, &s.id, "cat /etc/hosts")
        .await
        .contains("isolated-box"));
    let uid_map: Vec<String> = sh(rt, &s.id, "cat /proc/self/uid_map")
        .await
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let base = rt.box_host_id(&s.id).to_string();
    assert_eq!(uid_map, ["0", base.as_str(), "65536"]);
    assert_ne!(base, "100000", "the box has host ids of its own");

    // Only the box's own processes: init, its sleep, and the ps.
    let procs = sh(rt, &s.id, "ps -e --no-headers | wc -l").await;
    let procs: u32 = procs.parse().expect("a count");
    assert!(procs <= 5, "box sees {procs} processes");

    assert_eq!(
        sh(
            rt,
            &s.id,
            "stat -c %u:%g / /etc/passwd /usr/bin/sudo | sort -u"
        )
        .await,
        "0:0"
    );
    assert!(
        sh(rt, &s.id, "ls -l /usr/bin/sudo")
            .await
            .starts_with("-rwsr"),
        "sudo lost setuid"
    );
    sh(
        rt,
        &s.id,
        "touch /var/lib/dpkg/bothy-test && rm /var/lib/dpkg/bothy-test",
    )
    .await;
    assert_eq!(
        sh(rt, &s.id, "id -un; su -s /bin/sh nobody -c 'id -un'").await,
        "root\nnobody"
    );

    // The data dir (disks, sockets) does not exist inside.
    sh(
        rt,
        &s.id,
        &format!("test ! -e {}", t.cfg.data_dir.display()),
    )
    .await;

    let limit = sh(
        rt,
        &s.id,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    )
    .await;
    assert_eq!(limit, (256u64 << 20).to_string());
    let pids = sh(
        rt,
        &s.id,
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
    )
    .await;
    assert_eq!(pids, "4096");
    let cpu = sh(
        rt,
        &s.id,
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max",
    )
    .await;
    assert_eq!(cpu, "100000", "one cpu = a full period of quota");

    // Keys are host-wide kernel state: keyctl is denied (EPERM = 1).
    #[cfg(target_arch = "x86_64")]
    {
        let errno = sh(
            rt,
            &s.id,
            "python3 -c 'import ctypes; l=ctypes.CDLL(None, use_errno=True); l.syscall(250, 0, 0, 0, 0, 0); print(ctypes.get_errno())'",
        )
        .await;
        assert_eq!(errno, "1");
    }

    // Network: an interface configured by pasta and the resolver it answers.
    let links = sh(rt, &s.id, "ip -o -4 addr show scope global").await;
    assert!(!links.is_empty(), "no global IPv4 address in the box");
    assert!(sh(rt, &s.id, "ip route").await.contains("default"));
    assert_eq!(
        sh(rt, &s.id, "cat /etc/resolv.conf").await,
        "nameserver 169.254.0.53"
    );

    // The daemon can reach the agent's socket.
    std::os::unix::net::UnixStream::connect(rt.agent_socket(&s.id))
        .expect("connect to agent socket");
}

#[tokio::test]
async fn stop_and_start_keep_the_disk_and_destroy_leaves_nothing() {
    require_root();
    let t = test_runtime().await;
    let s = spec("b00000000002b", "durable");
    let guard = create_and_start(&t, &s).await;
    let rt = &t.rt;
    sh(rt, &s.id, "echo kept > /root/note && sync").await;
    // start on a running box changes nothing.
    let boot_time = sh(rt, &s.id, "cut -d' ' -f22 /proc/1/stat").await;
    rt.start(&s).await.expect("second start");
    assert_eq!(
        sh(rt, &s.id, "cut -d' ' -f22 /proc/1/stat").await,
        boot_time
    );

    let box_dir = t.cfg.data_dir.join("boxes").join(&s.id);
    let mounts = Path::new(MOUNT_ROOT).join(&t.cfg.instance);
    let t0 = Instant::now();
    rt.stop(&s.id).await.expect("stop");
    eprintln!("stop {:?}", t0.elapsed());
    rt.stop(&s.id).await.expect("stop is idempotent");
    assert!(!rt.is_running(&s.id).await.expect("is_running"));
    assert!(
        mounts_mentioning(&mounts).is_empty(),
        "still mounted after stop"
    );
    assert_eq!(loop_devices_under(&mounts), "");

    let t0 = Instant::now();
    rt.start(&s).await.expect("restart");
    eprintln!("cold start {:?}", t0.elapsed());
    assert_eq!(sh(rt, &s.id, "cat /root/note").await, "kept");

    rt.destroy(&s.id).await.expect("destroy");
    rt.destroy(&s.id).await.expect("destroy is idempotent");
    assert!(!box_dir.exists(), "box dir left behind");
    assert!(
        mounts_mentioning(&t.cfg.data_dir).is_empty(),
        "mounts left behind"
    );
    assert!(mounts_mentioning(&mounts).is_empty(), "mounts left behind");
    assert_eq!(loop_devices_under(&mounts), "");
    assert!(!rt.agent_socket(&s.id).exists(), "socket left behind");
    assert!(!rt.is_running(&s.id).await.expect("is_running"));
    for controller in ["memory", "pids"] {
        let cg = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(rt.cgroup_path(&s.id).trim_start_matches('/'));
        assert!(!cg.exists(), "cgroup {} left behind", cg.display());
        let parent = cg.parent().expect("a parent cgroup");
        assert!(!parent.exists(), "cgroup {} left behind", parent.display());
    }
    drop(guard);
}

/// A box whose storage process died (here an in-process one, whose FUSE
/// connections the kernel aborts as it would for a dead process) has a dead
/// disk: the next runtime boots it again, with what it had synced, and a
/// fresh network.
#[tokio::test]
async fn a_new_runtime_reboots_boxes_whose_runtime_went_away() {
    require_root();
    let t = test_runtime().await;
    let s = spec("b00000000003c", "adopted");
    // No guard yet: a guard would keep the old runtime alive.
    t.rt.create(&s, DiskSource::Base).await.expect("create");
    t.rt.start(&s).await.expect("start");
    sh(&t.rt, &s.id, "echo kept > /root/note && sync").await;
    let boot_time = sh(&t.rt, &s.id, "cut -d' ' -f22 /proc/1/stat").await;
    let pid_file = t
        .cfg
        .data_dir
        .join("run")
        .join(format!("{}.pasta.pid", s.id));
    let pasta_pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pasta pid")
        .trim()
        .parse()
        .expect("pid");
    // The old runtime and its storage go away without stopping anything:
    // the disks die, as the kernel aborts the FUSE connections of a process
    // that dies.
    let TestRuntime { rt, cfg, _dir } = t;
    bothy_runtime::storage::abort_stale_connections(
        &Path::new(bothy_runtime::MOUNT_ROOT).join(&cfg.instance),
    );
    drop(rt);
    let fresh = Arc::new(runtime_for(&cfg).await);
    let _guard = BoxGuard {
        rt: fresh.clone(),
        id: s.id.clone(),
    };
    fresh
        .start(&s)
        .await
        .expect("start after the runtime went away");
    assert_ne!(
        sh(&fresh, &s.id, "cut -d' ' -f22 /proc/1/stat").await,
        boot_time,
        "a box on a dead disk was kept"
    );
    assert_eq!(sh(&fresh, &s.id, "cat /root/note").await, "kept");
    assert!(process_ends(pasta_pid), "the old pasta outlived its box");
    // A healthy box is left alone.
    let again = sh(&fresh, &s.id, "cut -d' ' -f22 /proc/1/stat").await;
    fresh.start(&s).await.expect("start of a healthy box");
    assert_eq!(
        sh(&fresh, &s.id, "cut -d' ' -f22 /proc/1/stat").await,
        again
    );
}

#[tokio::test]
async fn two_daemons_run_boxes_with_the_same_id_side_by_side() {
    require_root();
    let (a, b) = (test_runtime().await, test_runtime().await);
    let s = spec("b00000000004d", "twin");
    let mut other = s.clone();
    other.hostname = "other-twin".into();
    let guard_a = create_and_start(&a, &s).await;
    let _guard_b = create_and_start(&b, &other).await;
    assert_eq!(sh(&a.rt, &s.id, "hostname").await, "twin");
    assert_eq!(sh(&b.rt, &s.id, "hostname").await, "other-twin");
    drop(guard_a);
    assert!(!a.rt.is_running(&s.id).await.expect("is_running"));
    assert!(b.rt.is_running(&s.id).await.expect("is_running"));
}

#[tokio::test]
async fn missing_base_image_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = RuntimeConfig {
        data_dir: dir.path().join("data"),
        instance: "noimage".into(),
        image_dir: dir.path().join("images"),
        exe: "/bin/true".into(),
        object_store: None,
        cache_bytes: DEFAULT_CACHE_BYTES,
        storage: StorageLaunch::InProcess,
    };
    match Runtime::new(cfg).await {
        Err(RuntimeError::NoBaseImage(p)) => assert_eq!(p, dir.path().join("images")),
        Err(RuntimeError::HostNotReady(msg)) if !is_root() => assert!(msg.contains("root")),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a runtime without a base image"),
    }
}

#[tokio::test]
async fn bad_specs_are_refused_before_touching_the_host() {
    require_root();
    let t = test_runtime().await;
    for bad in [spec("../etc", "x"), spec("b1", "bad host"), spec("b1", "")] {
        let err =
            t.rt.create(&bad, DiskSource::Base)
                .await
                .expect_err("bad spec accepted");
        assert!(err.to_string().contains("invalid"), "{err}");
    }
    let made = std::fs::read_dir(t.cfg.data_dir.join("boxes"))
        .expect("boxes dir")
        .count();
    assert_eq!(made, 0, "a bad spec left files behind");
}

#[tokio::test]
async fn disk_size_follows_the_spec() {
    require_root();
    let t = test_runtime().await;
    // Smaller and larger than the image's 100 GiB.
    for (id, gb) in [("b00000000006f", 2u64), ("b000000000070", 150)] {
        let mut s = spec(id, "sized-disk");
        s.storage_gb = gb;
        let _guard = create_and_start(&t, &s).await;
        let size_kb: u64 = sh(&t.rt, &s.id, "df --output=size -k / | tail -1")
            .await
            .parse()
            .expect("a size");
        // df leaves out the journal and inode tables.
        let full = gb << 20;
        assert!(
            size_kb <= full && size_kb >= full / 10 * 7,
            "{gb} GiB disk shows {size_kb} KiB"
        );
    }
}

#[tokio::test]
async fn a_box_cannot_redirect_the_runtime_writes_to_the_host() {
    require_root();
    let t = test_runtime().await;
    let host_dir = tempfile::tempdir().expect("temp dir");
    let host_file = host_dir.path().join("hosts");
    std::fs::write(&host_file, "host data\n").expect("write host file");
    let s = spec("b000000000071", "hostile");
    let _guard = create_and_start(&t, &s).await;
    // Box root points /etc at the host directory's path (meaningless in the
    // box, but a naive host-side write would follow it).
    let target = host_dir.path().display().to_string();
    sh(
        &t.rt,
        &s.id,
        &format!("mv /etc /etc.real && ln -s {target} /etc"),
    )
    .await;
    t.rt.stop(&s.id).await.expect("stop");
    t.rt.start(&s)
        .await
        .expect("a box that broke its /etc still starts");
    assert_eq!(
        std::fs::read_to_string(&host_file).expect("host file"),
        "host data\n"
    );
    assert_eq!(
        std::fs::read_dir(host_dir.path())
            .expect("host dir")
            .count(),
        1
    );
}

/// The first line of `/proc/self/uid_map` in the box: (inside, host, count).
async fn uid_map(rt: &Runtime, id: &str) -> (u64, u64, u64) {
    let map = sh(rt, id, "cat /proc/self/uid_map").await;
    let f: Vec<u64> = map
        .split_whitespace()
        .take(3)
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(f.len(), 3, "uid_map: {map:?}");
    (f[0], f[1], f[2])
}

/// The real uid and gid of every host process in the box's cgroup.
fn host_ids_of_box_processes(rt: &Runtime, id: &str) -> Vec<(u32, u32)> {
    let needle = format!("{}\n", rt.cgroup_path(id));
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if !cgroup.contains(&needle) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let field = |name: &str| -> Option<u32> {
            status
                .lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        if let (Some(uid), Some(gid)) = (field("Uid:"), field("Gid:")) {
            found.push((uid, gid));
        }
    }
    found
}

fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.gid())
}

/// Each box runs as host ids of its own, while its disk keeps disk ids
/// (100000 + k): a file moves between boxes by checkpoint and fork with its
/// owner intact, and ownership survives a restart.
#[tokio::test]
async fn each_box_has_its_own_host_ids_over_disks_with_shared_ids() {
    require_root();
    let t = test_runtime().await;
    let rt = &t.rt;
    let a = spec("b00000000007a", "ids-a");
    let b = spec("b00000000007b", "ids-b");
    let guard_a = create_and_start(&t, &a).await;

    let (inside, host_a, count) = uid_map(rt, &a.id).await;
    assert_eq!((inside, count), (0, 65_536));
    assert_eq!(host_a, u64::from(rt.box_host_id(&a.id)));
    assert_ne!(host_a, 100_000, "a new box is not on the shared range");
    let procs = host_ids_of_box_processes(rt, &a.id);
    assert!(!procs.is_empty(), "no process of the box found");
    for (uid, gid) in &procs {
        assert_eq!((u64::from(*uid), u64::from(*gid)), (host_a, host_a));
    }
    let box_dir = t.cfg.data_dir.join("boxes").join(&a.id);
    assert_eq!(owner(&box_dir).1, rt.box_host_id(&a.id));

    // Root of the box writes a file; on the disk it is disk id 100000, and
    // a file chowned to 42 in the box is 100042.
    sh(
        rt,
        &a.id,
        "echo a > /root/from-a && touch /root/apt && chown 42:42 /root/apt && sync",
    )
    .await;
    let disk = Path::new(MOUNT_ROOT).join(&t.cfg.instance).join(&a.id);
    assert_eq!(owner(&disk.join("root/from-a")), (100_000, 100_000));
    assert_eq!(owner(&disk.join("root/apt")), (100_042, 100_042));

    rt.restart(&a).await.expect("restart");
    assert_eq!(
        sh(rt, &a.id, "stat -c %u:%g /root/apt /root/from-a").await,
        "42:42\n0:0"
    );
    assert_eq!(uid_map(rt, &a.id).await.1, host_a, "a box keeps its range");

    // A box made by an older build has no slot: it gets one at its next boot
    // and its files keep their owners.
    rt.stop(&a.id).await.expect("stop");
    std::fs::remove_file(box_dir.join("slot")).expect("the box's slot file");
    assert_eq!(rt.box_host_id(&a.id), 100_000, "no slot: the legacy range");
    rt.start(&a).await.expect("boot after migration");
    assert!(box_dir.join("slot").exists(), "a slot is recorded at boot");
    let host_a = u64::from(rt.box_host_id(&a.id));
    assert_ne!(host_a, 100_000);
    assert_eq!(uid_map(rt, &a.id).await.1, host_a);
    assert_eq!(
        sh(rt, &a.id, "stat -c %u:%g /root/apt /root/from-a").await,
        "42:42\n0:0"
    );

    // A fork of A's checkpoint: the file is root's in B too, and B's range
    // is its own.
    let checkpoint = rt.checkpoint(&a.id).await.expect("checkpoint");
    let guard_b = BoxGuard {
        rt: rt.clone(),
        id: b.id.clone(),
    };
    rt.create(
        &b,
        DiskSource::Checkpoint {
            box_id: a.id.clone(),
            checkpoint,
        },
    )
    .await
    .expect("fork");
    rt.start(&b).await.expect("start the fork");
    let (_, host_b, _) = uid_map(rt, &b.id).await;
    assert_ne!(host_b, 100_000);
    assert!(
        host_a + 65_536 <= host_b || host_b + 65_536 <= host_a,
        "ranges overlap: {host_a} and {host_b}"
    );
    assert_eq!(
        sh(
            rt,
            &b.id,
            "stat -c %u:%g /root/from-a /root/apt && echo b > /root/b && whoami"
        )
        .await,
        "0:0\n42:42\nroot"
    );

    // Destroy unmounts the box's root and frees its range for the next box.
    drop(guard_b);
    let roots = Path::new(MOUNT_ROOT).join(format!("{}.roots", t.cfg.instance));
    assert!(
        !roots.join(&b.id).exists(),
        "root dir of the box left behind"
    );
    assert!(mounts_mentioning(&roots.join(&b.id)).is_empty());
    drop(guard_a);
    assert!(!roots.exists(), "roots dir left behind");
    assert!(
        mounts_mentioning(&roots).is_empty(),
        "idmapped roots left mounted"
    );
}
