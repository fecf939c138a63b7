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
    if args.tls_cert.len() != args.tls_key.len() {
        return fail("give --tls-cert and --tls-key in pairs, one key per certificate");
    }
    let edge = EdgeArgs {
        domain: args.domain,
        edge_listen: args.edge_listen,
        tls_listen: args.tls_listen,
        certs: args.tls_cert.into_iter().zip(args.tls_key).collect(),
        wait: args.edge_wait,
    };
    match runtime.block_on(run_daemon(
        config,
        admission,
        sleep,
        usize::from(args.warm_pool),
        args.listen,
        edge,
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
    edge: EdgeArgs,
    stop_boxes: bool,
) -> Result<(), String> {
    let data_dir = config.data_dir.clone();
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
    let frontends = frontends(listener, addr, &data_dir, edge).await?;
    eprintln!("bothy daemon listening on http://{addr}");
    let served =
        bothy_server::serve_frontends(control.clone(), frontends, bothy_runtime::termination())
            .await;
    if stop_boxes {
        tracing::info!("stopping every box (--stop-boxes)");
    } else {
        tracing::info!("leaving boxes running; the next daemon adopts them");
    }
    control.shutdown(stop_boxes).await;
    tracing::info!("stopped");
    served.map_err(|e| e.to_string())
}

/// The daemon's flags about bothy URLs.
struct EdgeArgs {
    domain: String,
    edge_listen: Option<std::net::SocketAddr>,
    tls_listen: Option<std::net::SocketAddr>,
    certs: Vec<(PathBuf, PathBuf)>,
    wait: std::time::Duration,
}

/// The listeners beside the API's, the TLS set-up and the browser session
/// key (kept in the data dir so sessions survive a restart).
async fn frontends(
    api: tokio::net::TcpListener,
    addr: std::net::SocketAddr,
    data_dir: &std::path::Path,
    edge: EdgeArgs,
) -> Result<bothy_server::Frontends, String> {
    use bothy_server::edge::{tls, EdgeSettings, Urls};
    let edge_listener = match edge.edge_listen {
        Some(a) => Some(bothy_server::bind(a).await.map_err(|e| e.to_string())?),
        None => None,
    };
    let tls_listener = match edge.tls_listen {
        Some(a) => {
            let source = if edge.certs.is_empty() {
                tls::TlsSource::LocalCa(data_dir.join("tls"))
            } else {
                tls::TlsSource::Provided(edge.certs.clone())
            };
            let ips: Vec<std::net::IpAddr> = [a.ip(), addr.ip()]
                .into_iter()
                .filter(|ip| !ip.is_unspecified())
                .collect();
            let config = tls::server_config(&source, &edge.domain, &[], &ips)
                .map_err(|e| format!("TLS: {e}"))?;
            let l = bothy_server::bind(a).await.map_err(|e| e.to_string())?;
            let bound = l.local_addr().map_err(|e| e.to_string())?;
            if let tls::TlsSource::LocalCa(dir) = &source {
                eprintln!(
                    "bothy daemon serving HTTPS on {bound}; clients trust {} (e.g. curl --cacert)",
                    tls::ca_path(dir).display()
                );
            } else {
                eprintln!("bothy daemon serving HTTPS on {bound}");
            }
            Some((l, config))
        }
        None => None,
    };
    let urls = match (&tls_listener, &edge_listener) {
        (Some((l, _)), _) => ("https", l),
        (None, Some(l)) => ("http", l),
        (None, None) => ("http", &api),
    };
    let urls = Urls {
        scheme: urls.0,
        domain: edge.domain.clone(),
        port: urls.1.local_addr().map_err(|e| e.to_string())?.port(),
    };
    if let Some(l) = &edge_listener {
        if let Ok(a) = l.local_addr() {
            eprintln!("bothy daemon serving bothy URLs on http://{a}");
        }
    }
    Ok(bothy_server::Frontends {
        api,
        edge: edge_listener,
        tls: tls_listener,
        settings: EdgeSettings {
            domain: edge.domain,
            session_key: session_key(data_dir)?,
            wait: edge.wait,
            urls,
        },
    })
}

/// The key that signs browser sessions on private bothy URLs: made once,
/// readable by root only.
fn session_key(data_dir: &std::path::Path) -> Result<[u8; 32], String> {
    let path = data_dir.join("edge-session.key");
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            return Ok(key);
        }
        Ok(_) => {
            tracing::warn!(path = %path.display(), "session key has the wrong length; making a new one")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let key: [u8; 32] = rand::random();
    bothy_control::datadir::write_private_atomic(&path, &key)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(key)
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
