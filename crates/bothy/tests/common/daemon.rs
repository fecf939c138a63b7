//! A real `bothy daemon` on a free loopback port with its own temporary data dir.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::cli::{wait_with_deadline, CliRun, Output};
use super::host::Footprint;
use super::http::{Request, Response};
use super::wait::wait_until;

pub const BIN: &str = env!("CARGO_BIN_EXE_bothy");

/// How long a daemon may take to answer on its port after start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to stop its boxes and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a box may take to report `running` (boot after a restart).
pub const RUNNING_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Daemon {
    /// Holds the data dir, the daemon's log and a scratch cwd for CLI runs.
    /// Taken (and possibly kept on disk) at shutdown.
    work: Mutex<Option<tempfile::TempDir>>,
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    pub token: String,
    log: PathBuf,
    /// A directory with no `.bothy` in it or its parents, for CLI runs.
    pub scratch: PathBuf,
    child: Mutex<Option<Child>>,
    footprint: Footprint,
    /// Extra `bothy daemon` arguments and environment (an object store).
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    /// The bothy binary the daemon runs.
    bin: PathBuf,
    /// Whether SIGTERM stops the boxes (`--stop-boxes`); tests that check
    /// that boxes outlive the daemon turn it off.
    stop_boxes: std::sync::atomic::AtomicBool,
}

impl Daemon {
    /// Starts a daemon with a fresh data dir and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(Vec::new(), Vec::new())
    }

    /// Like [`Daemon::start`], with extra daemon arguments and environment.
    pub fn start_with(extra_args: Vec<String>, env: Vec<(String, String)>) -> Self {
        Self::start_from(PathBuf::from(BIN), true, extra_args, env)
    }

    /// A daemon running `bin`; with `stop_boxes` false, SIGTERM leaves its
    /// boxes running (the harness drains them at the end of the test).
    pub fn start_from(
        bin: PathBuf,
        stop_boxes: bool,
        extra_args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        Self::start_full(bin, stop_boxes, extra_args, env, None)
    }

    /// A daemon whose data dir is `data_dir` (on a file system the test
    /// made), which the harness leaves in place.
    pub fn start_in(data_dir: PathBuf, extra_args: Vec<String>) -> Self {
        Self::start_full(
            PathBuf::from(BIN),
            true,
            extra_args,
            Vec::new(),
            Some(data_dir),
        )
    }

    fn start_full(
        bin: PathBuf,
        stop_boxes: bool,
        extra_args: Vec<String>,
        env: Vec<(String, String)>,
        data_dir: Option<PathBuf>,
    ) -> Self {
        let work = tempfile::Builder::new()
            .prefix("bothy-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temp dir: {e}"));
        let root = work
            .path()
            .canonicalize()
            .unwrap_or_else(|e| panic!("cannot resolve the temp dir: {e}"));
        let data_dir = data_dir.unwrap_or_else(|| root.join("data"));
        let scratch = root.join("cwd");
        fs::create_dir_all(&scratch).unwrap_or_else(|e| panic!("cannot make {scratch:?}: {e}"));
        let addr = free_loopback_addr();
        let mut daemon = Daemon {
            footprint: Footprint::new(&data_dir),
            work: Mutex::new(Some(work)),
            log: root.join("daemon.log"),
            data_dir,
            addr,
            token: String::new(),
            scratch,
            child: Mutex::new(None),
            extra_args,
            env,
            bin,
            stop_boxes: std::sync::atomic::AtomicBool::new(stop_boxes),
        };
        daemon.spawn();
        daemon.token = daemon.read_token();
        daemon
    }

    fn read_token(&self) -> String {
        wait_until("the admin token file", READY_TIMEOUT, || {
            let t =
                fs::read_to_string(self.data_dir.join("admin-token")).map_err(|e| e.to_string())?;
            let t = t.trim().to_string();
            if t.is_empty() {
                Err("empty".into())
            } else {
                Ok(t)
            }
        })
    }

    /// Stops the daemon, deletes its whole data dir (as a lost disk would) and
    /// starts it again on the same object store; the admin token is re-read.
    pub fn restart_with_empty_data_dir(&mut self) {
        assert_eq!(self.stop(), 0, "the daemon did not stop cleanly");
        fs::remove_dir_all(&self.data_dir)
            .unwrap_or_else(|e| panic!("cannot delete {:?}: {e}", self.data_dir));
        self.spawn();
        self.token = self.read_token();
    }

    /// The host dies at once: `kill -9` of the daemon and its storage
    /// process, everything of it on the host removed, the data dir deleted;
    /// then a new daemon starts on the same object store.
    pub fn lose_the_host(&mut self) {
        super::storage::crash(self, super::storage::Crash::Both);
        self.footprint.force_cleanup();
        fs::remove_dir_all(&self.data_dir)
            .unwrap_or_else(|e| panic!("cannot delete {:?}: {e}", self.data_dir));
        self.spawn();
        self.token = self.read_token();
    }

    /// The daemon arguments the next [`Daemon::spawn`] passes.
    pub fn set_extra_args(&mut self, args: Vec<String>) {
        self.extra_args = args;
    }

    /// Starts the daemon process on this data dir and port; waits for the port.
    pub fn spawn(&self) {
        let mut child_slot = self.child_slot();
        assert!(child_slot.is_none(), "the daemon is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {:?}: {e}", self.log));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup the log fd: {e}"));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("daemon");
        // Tests stop their daemons with SIGTERM and expect a clean host after:
        // the harness asks for the drain a plain SIGTERM does not do.
        if self.stop_boxes.load(std::sync::atomic::Ordering::SeqCst) {
            cmd.arg("--stop-boxes");
        }
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.addr.to_string());
        if let Ok(dir) = std::env::var("BOTHY_IMAGE_DIR") {
            cmd.arg("--image-dir").arg(dir);
        }
        // Boxes of tests about other things must not fall asleep under
        // them; the sleep tests set their own timeouts.
        if !self.extra_args.iter().any(|a| a == "--idle-timeout") {
            cmd.args(["--idle-timeout", "never"]);
        }
        cmd.args(&self.extra_args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} daemon: {e}", self.bin.display()));
        *child_slot = Some(child);
        drop(child_slot);

        wait_until("the daemon to accept connections", READY_TIMEOUT, || {
            if let Some(child) = self.child_slot().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "the daemon exited during start-up ({status}); its log:\n{}",
                        self.log_text()
                    );
                }
            }
            TcpStream::connect_timeout(&self.addr, Duration::from_millis(500))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    }

    fn child_slot(&self) -> MutexGuard<'_, Option<Child>> {
        // A test that panicked while holding the lock leaves valid data behind.
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child_slot().as_ref().map(|c| c.id())
    }

    /// The pid of the storage process serving this daemon's box disks.
    pub fn storage_pid(&self) -> Option<u32> {
        let dir = self.data_dir.to_string_lossy().into_owned();
        fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let ours = args.iter().any(|a| a == "storage-server")
                && args.windows(2).any(|w| w[0] == "--data-dir" && w[1] == dir);
            ours.then_some(pid)
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit; returns the exit code. Panics if the
    /// daemon does not stop in time.
    pub fn stop(&self) -> i32 {
        let mut slot = self.child_slot();
        let Some(mut child) = slot.take() else {
            panic!("stop: the daemon is not running");
        };
        signal(child.id(), libc::SIGTERM);
        match wait_with_deadline(&mut child, STOP_TIMEOUT) {
            Some(status) => super::cli::exit_code(status),
            None => panic!(
                "the daemon did not exit within {STOP_TIMEOUT:?} of SIGTERM; its log:\n{}",
                self.log_text()
            ),
        }
    }

    /// SIGKILL, as a crash or the OOM killer would; boxes keep running.
    pub fn kill9(&self) {
        let mut slot = self.child_slot();
        let Some(mut child) = slot.take() else {
            panic!("kill9: the daemon is not running");
        };
        let _ = child.kill();
        let _ = child.wait();
    }

    /// What is left on the host for this data dir (empty when clean). Loop devices
    /// detach asynchronously after the last unmount, so this waits up to 10 s for
    /// the host to become clean before reporting.
    pub fn leftovers(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.footprint.leftovers();
            if left.is_empty() || std::time::Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon (SIGTERM, then SIGKILL), removes anything left on the host
    /// and deletes the data dir unless something is still mounted under it.
    pub fn shutdown(&self) {
        use std::sync::atomic::Ordering;
        // A daemon that leaves its boxes running is restarted once with
        // --stop-boxes, so that the SIGTERM below drains them.
        if !self.stop_boxes.swap(true, Ordering::SeqCst) && !std::thread::panicking() {
            let running = self.child_slot().is_some();
            if running {
                self.stop();
            }
            self.spawn();
        }
        if let Some(mut child) = self.child_slot().take() {
            signal(child.id(), libc::SIGTERM);
            if wait_with_deadline(&mut child, STOP_TIMEOUT).is_none() {
                eprintln!("bothy test harness: daemon ignored SIGTERM, killed it");
            }
        }
        let left = self.leftovers();
        let unmounted = left.is_empty() || self.footprint.force_cleanup();
        if std::thread::panicking() || !left.is_empty() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- daemon {} log (last lines) ---\n{}",
                self.addr,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if !left.is_empty() {
            eprintln!("bothy test harness: cleaned up after the daemon: {left:#?}");
        }
        let work = self.work.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(work) = work {
            if !unmounted {
                let kept = work.keep();
                eprintln!("bothy test harness: kept {kept:?}: something is still mounted under it");
            }
        }
    }

    /// A `bothy` CLI run pointed at this daemon (env BOTHY_API_URL, BOTHY_TOKEN),
    /// from a scratch directory.
    pub fn cli(&self, args: &[&str]) -> CliRun {
        CliRun::program(BIN, args)
            .env("BOTHY_API_URL", &self.url())
            .env("BOTHY_TOKEN", &self.token)
            .env_remove("BOTHY_DATA_DIR")
            .cwd(&self.scratch)
    }

    /// `bothy exec -s NAME -- ARGS...`, to completion.
    pub fn exec(&self, name: &str, args: &[&str]) -> Output {
        let mut run = self.cli(&["exec", "-s", name, "--"]);
        for a in args {
            run = run.arg(a);
        }
        run.run()
    }

    /// `bothy exec` of a shell snippet that must succeed; returns its stdout.
    pub fn sh(&self, name: &str, script: &str) -> String {
        self.exec(name, &["sh", "-c", script])
            .assert_success(script)
            .stdout_str()
    }

    /// `bothy create NAME --skip-console`, which must succeed.
    pub fn create(&self, name: &str) {
        self.cli(&["create", name, "--skip-console"])
            .run()
            .assert_success(&format!("create {name}"));
    }

    /// An HTTP request with the admin token.
    pub fn api(&self, method: &str, path: &str) -> Response {
        Request::new(method, path)
            .token(&self.token)
            .send(self.addr)
    }

    pub fn api_json(&self, method: &str, path: &str, body: &serde_json::Value) -> Response {
        Request::new(method, path)
            .token(&self.token)
            .json(body)
            .send(self.addr)
    }

    pub fn request<'a>(&self, method: &'a str, path: &'a str) -> Request<'a> {
        Request::new(method, path)
    }

    /// Names of every box the admin token's org sees, following pagination.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..1000 {
            let path = match &token {
                Some(t) => format!("/v1/sprites?max_results=50&continuation_token={t}"),
                None => "/v1/sprites?max_results=50".to_string(),
            };
            let r = self.api("GET", &path);
            assert_eq!(r.status, 200, "list sprites: {}", r.text());
            let page = r.json();
            for s in page["sprites"].as_array().cloned().unwrap_or_default() {
                names.push(s["name"].as_str().unwrap_or_default().to_string());
            }
            match (
                page["has_more"].as_bool(),
                page["next_continuation_token"].as_str(),
            ) {
                (Some(true), Some(t)) => token = Some(t.to_string()),
                _ => return names,
            }
        }
        panic!("list pagination never ended");
    }

    /// The box's JSON as `GET /v1/sprites/NAME` shows it.
    pub fn get(&self, name: &str) -> serde_json::Value {
        let r = self.api("GET", &format!("/v1/sprites/{name}"));
        assert_eq!(r.status, 200, "get {name}: {}", r.text());
        r.json()
    }

    /// Waits until the daemon reports the box `running`.
    pub fn wait_running(&self, name: &str) {
        wait_until(&format!("{name} to be running"), RUNNING_TIMEOUT, || {
            let r = self.api("GET", &format!("/v1/sprites/{name}"));
            let status = if r.status == 200 {
                r.json()["status"].as_str().unwrap_or_default().to_string()
            } else {
                format!("HTTP {}: {}", r.status, r.text())
            };
            if status == "running" {
                Ok(())
            } else {
                Err(status)
            }
        });
    }

    /// Entries of DATA_DIR/boxes (the runtime's per-box directories).
    pub fn box_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.data_dir.join("boxes"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Exec sessions of a box, as `GET /v1/sprites/NAME/exec` lists them.
    pub fn sessions(&self, name: &str) -> Vec<serde_json::Value> {
        let r = self.api("GET", &format!("/v1/sprites/{name}/exec"));
        assert_eq!(r.status, 200, "list sessions of {name}: {}", r.text());
        r.json()["sessions"].as_array().cloned().unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One daemon (and optionally one box) shared by every test of a test binary, shut
/// down when the test binary exits: statics are never dropped, so shutdown runs
/// from an atexit handler.
pub struct Shared {
    cell: OnceLock<Daemon>,
}

impl Shared {
    pub const fn new() -> Self {
        Self {
            cell: OnceLock::new(),
        }
    }

    /// The shared daemon, started (with `setup` run on it) by the first caller.
    /// `self` must be a `static`, and there must be one `Shared` per test binary.
    pub fn get(&'static self, setup: fn(&Daemon)) -> &'static Daemon {
        self.get_with_env(&[], setup)
    }

    /// Like [`Shared::get`], the daemon started with extra environment.
    pub fn get_with_env(
        &'static self,
        env: &[(&str, &str)],
        setup: fn(&Daemon),
    ) -> &'static Daemon {
        self.cell.get_or_init(|| {
            let env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let d = Daemon::start_with(Vec::new(), env);
            setup(&d);
            SHUTDOWN.get_or_init(|| {
                register_exit_hook();
                self
            });
            d
        })
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

static SHUTDOWN: OnceLock<&'static Shared> = OnceLock::new();

extern "C" fn shutdown_shared() {
    if let Some(shared) = SHUTDOWN.get() {
        if let Some(d) = shared.cell.get() {
            d.shutdown();
        }
    }
}

fn register_exit_hook() {
    // SAFETY: atexit only records a function pointer; `shutdown_shared` is an
    // `extern "C" fn()` that never unwinds across the FFI boundary (shutdown
    // does not panic) and only touches 'static data.
    let rc = unsafe { libc::atexit(shutdown_shared) };
    assert_eq!(
        rc, 0,
        "atexit failed: the shared daemon could not be cleaned up"
    );
}

fn free_loopback_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
    l.local_addr()
        .unwrap_or_else(|e| panic!("cannot read the bound address: {e}"))
}

pub fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill(2) takes plain integers; signalling a pid that already exited
    // fails with ESRCH, which is ignored.
    unsafe {
        libc::kill(pid, sig);
    }
}
