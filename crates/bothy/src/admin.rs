//! The verbs that run host-side machinery rather than talk to the API.

use std::path::PathBuf;

use bothy_cli::progress::StepProgress;
use bothy_cli::{DaemonArgs, ImageBuildArgs, StorageServerArgs};
use bothy_runtime::image::{self, BuildProgress};

/// `bothy daemon`: serve the API until SIGTERM or SIGINT.
pub fn daemon(args: DaemonArgs) -> i32 {
    bothy_server::init_logging();
    #[cfg(target_env = "gnu")]
    crate::memory::keep_heap_small();
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot find the bothy binary's own path: {e}")),
    };
    let config = bothy_control::ControlConfig {
        data_dir: args.data_dir,
        image_dir: image_dir(args.image_dir),
        exe,
        object_store: args.object_store,
        cache_bytes: args.cache_size,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let mut admission = bothy_control::admission::Admission::default();
    if let Some(f) = args.ram_overcommit {
        admission.ram_overcommit = f;
    }
    if let Some(f) = args.cpu_overcommit {
        admission.cpu_overcommit = f;
    }
    let patch = bothy_api::Lifecycle {
        idle_timeout: Some(args.idle_timeout),
        cold_after: Some(args.cold_after),
        cpu_activity: None,
    };
    let sleep = match bothy_control::sleep::SleepPolicy::default().patched(&patch) {
        Ok(p) => p,
        Err(e) => return fail(format!("{e} (--idle-timeout / --cold-after)")),
    };
    match runtime.block_on(run_daemon(
        config,
        admission,
        sleep,
        usize::from(args.warm_pool),
        args.listen,
        args.stop_boxes,
    )) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// Control below, the frontends above; on the stop signal the frontends
/// close first, then control ends its jobs (and stops the boxes if asked).
async fn run_daemon(
    config: bothy_control::ControlConfig,
    admission: bothy_control::admission::Admission,
    sleep: bothy_control::sleep::SleepPolicy,
    warm_pool: usize,
    listen: std::net::SocketAddr,
    stop_boxes: bool,
) -> Result<(), String> {
    let control = bothy_control::open(config)
        .await
        .map_err(|e| e.to_string())?;
    control.set_admission(admission);
    control.set_default_sleep_policy(sleep);
    control.set_warm_pool(warm_pool);
    let listener = bothy_server::bind(listen)
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("bothy daemon listening on http://{addr}");
    let served = bothy_server::serve(control.clone(), listener, bothy_runtime::termination()).await;
    if stop_boxes {
        tracing::info!("stopping every box (--stop-boxes)");
    } else {
        tracing::info!("leaving boxes running; the next daemon adopts them");
    }
    control.shutdown(stop_boxes).await;
    tracing::info!("stopped");
    served.map_err(|e| e.to_string())
}

/// `bothy storage-server`: serves every box's disk for one data dir.
pub fn storage_server(args: StorageServerArgs) -> i32 {
    bothy_server::init_logging();
    #[cfg(target_env = "gnu")]
    crate::memory::keep_heap_small();
    let cfg = bothy_runtime::storage::ServerConfig {
        data_dir: args.data_dir,
        instance: args.instance,
        object_store: args.object_store,
        cache_bytes: args.cache_size,
    };
    match bothy_runtime::storage::run_process(cfg) {
        Ok(()) => 0,
        Err(e) => fail(format!("storage process: {e}")),
    }
}

/// `bothy init`: pid 1 inside a box.
pub fn init() -> i32 {
    match bothy_agent::init::run() {
        Ok(()) => 0,
        Err(e) => fail(format!("bothy init: {e}")),
    }
}

/// `bothy image build`: the Debian base image every box starts from.
pub fn image_build(args: ImageBuildArgs) -> i32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return fail(
            "building the base image needs root (mmdebstrap, file ownership): run `sudo bothy image build`",
        );
    }
    let dir = image_dir(args.image_dir);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let progress = StepProgress::new();
    let report = |p: BuildProgress| match p {
        BuildProgress::Step { n, of, what } => progress.step(n, of, &what),
        BuildProgress::Line(line) => progress.line(&line),
    };
    match runtime.block_on(image::build_with(&dir, args.force, &report)) {
        Ok(path) => {
            progress.finish(&format!("base image ready: {}", path.display()));
            0
        }
        Err(e) => {
            progress.finish("image build failed");
            fail(e.to_string())
        }
    }
}

fn image_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| PathBuf::from(image::DEFAULT_IMAGE_DIR))
}

fn fail(message: impl std::fmt::Display) -> i32 {
    eprintln!("error: {message}");
    1
}
