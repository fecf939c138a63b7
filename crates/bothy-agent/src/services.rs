//! Services: commands the box's init keeps running.
//!
//! Definitions live on the box's disk ([`SERVICES_FILE`], written whole and
//! renamed), so they come back with every boot and every cold wake, and go
//! with the disk into checkpoints and forks. At start the agent starts every
//! service in dependency order (`needs`); a service that exits is started
//! again after a backoff (1 s doubling to 60 s, reset once it has run for a
//! minute); one that was stopped stays stopped until started. A daemon
//! restart does not touch them: they are children of the box's init.
//!
//! Output goes to `LOG_DIR/NAME.log` (both streams, in order), rotated to
//! `NAME.log.1` past [`LOG_LIMIT`], and to whoever watches the service.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::fdio;
use crate::proto::{ErrorKind, ServiceDef, ServiceEvent, ServiceInfo, ServiceState, SpawnRequest};
use crate::spawn::{self, Stdio3};

/// Where service definitions are kept in the box.
pub const SERVICES_FILE: &str = "/etc/bothy/services.json";
/// Where service logs are written in the box.
pub const LOG_DIR: &str = "/var/log/bothy/services";
/// A log is rotated past this size.
const LOG_LIMIT: u64 = 8 << 20;
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A service that ran this long starts its backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Default grace between SIGTERM and SIGKILL when a service stops.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Most services per box.
const MAX_SERVICES: usize = 64;
/// Largest service file read.
const DEFS_LIMIT: u64 = 1 << 20;

/// The bytes of `path` if it is a regular file of at most `limit` bytes.
/// The box's root owns these paths: a FIFO or a device there must not hang
/// or flood the box's init.
fn read_regular(path: &std::path::Path, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > limit {
        tracing::warn!(path = %path.display(), "not a regular file of at most {limit} bytes; ignored");
        return None;
    }
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Where a supervisor keeps its definitions and logs.
#[derive(Debug, Clone)]
pub struct Places {
    pub file: PathBuf,
    pub logs: PathBuf,
}

impl Default for Places {
    fn default() -> Self {
        Self {
            file: PathBuf::from(SERVICES_FILE),
            logs: PathBuf::from(LOG_DIR),
        }
    }
}

pub(crate) struct Refused(pub ErrorKind, pub String);

struct Service {
    def: ServiceDef,
    state: ServiceState,
    /// Whether it should be running.
    wanted: bool,
    /// Bumped at every start and stop, so a stale exit or restart timer
    /// does nothing.
    generation: u64,
    backoff: Duration,
    started: Option<Instant>,
    events: broadcast::Sender<ServiceEvent>,
}

pub(crate) struct Supervisor {
    places: Places,
    services: Mutex<BTreeMap<String, Service>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn event(kind: &str, data: Option<String>, exit_code: Option<i32>) -> ServiceEvent {
    ServiceEvent {
        kind: kind.into(),
        data,
        exit_code,
        timestamp_ms: now_ms(),
    }
}

/// Checks a definition against the others: known needs, no cycle, one
/// owner of each HTTP port.
fn check(
    name: &str,
    def: &ServiceDef,
    others: &BTreeMap<String, ServiceDef>,
) -> Result<(), Refused> {
    if def.cmd.trim().is_empty() || def.cmd.contains('\0') {
        return Err(Refused(ErrorKind::Spawn, "cmd must name a program".into()));
    }
    if let Some(port) = def.http_port {
        if let Some((owner, _)) = others
            .iter()
            .find(|(n, d)| n.as_str() != name && d.http_port == Some(port))
        {
            return Err(Refused(
                ErrorKind::Conflict,
                format!(
                    "HTTP port {port} belongs to service {owner:?}; only one service may own it"
                ),
            ));
        }
    }
    let mut all = others.clone();
    all.insert(name.to_string(), def.clone());
    for need in &def.needs {
        if !all.contains_key(need) {
            return Err(Refused(
                ErrorKind::Spawn,
                format!("needs {need:?}, which is not a service; create it first"),
            ));
        }
    }
    start_order(&all).map(drop)
}

/// Names in an order where every service comes after what it needs; a
/// cycle is refused.
fn start_order(defs: &BTreeMap<String, ServiceDef>) -> Result<Vec<String>, Refused> {
    fn visit(
        name: &str,
        defs: &BTreeMap<String, ServiceDef>,
        done: &mut HashSet<String>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), Refused> {
        if done.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            path.push(name.to_string());
            return Err(Refused(
                ErrorKind::Spawn,
                format!("services need each other in a cycle: {}", path.join(" -> ")),
            ));
        }
        path.push(name.to_string());
        for need in defs
            .get(name)
            .map(|d| d.needs.as_slice())
            .unwrap_or_default()
        {
            visit(need, defs, done, path, out)?;
        }
        path.pop();
        done.insert(name.to_string());
        out.push(name.to_string());
        Ok(())
    }
    let (mut done, mut out) = (HashSet::new(), Vec::new());
    for name in defs.keys() {
        visit(name, defs, &mut done, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

impl Supervisor {
    /// Loads the definitions (a missing or unreadable file: none).
    pub(crate) fn open(places: Places) -> Arc<Self> {
        let defs: BTreeMap<String, ServiceDef> = read_regular(&places.file, DEFS_LIMIT)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let services = defs
            .into_iter()
            .map(|(name, def)| (name, Service::new(def, true)))
            .collect();
        Arc::new(Self {
            places,
            services: Mutex::new(services),
        })
    }

    fn services(&self) -> MutexGuard<'_, BTreeMap<String, Service>> {
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn defs(&self) -> BTreeMap<String, ServiceDef> {
        self.services()
            .iter()
            .map(|(n, s)| (n.clone(), s.def.clone()))
            .collect()
    }

    /// Starts every service, in dependency order.
    pub(crate) fn start_all(self: &Arc<Self>) {
        let order = start_order(&self.defs()).unwrap_or_else(|_| self.defs().into_keys().collect());
        for name in order {
            self.launch(&name);
        }
    }

    pub(crate) fn list(&self) -> Vec<ServiceInfo> {
        self.services()
            .iter()
            .map(|(name, s)| ServiceInfo {
                name: name.clone(),
                def: s.def.clone(),
                state: s.state.clone(),
            })
            .collect()
    }

    /// Returns a subscription to its events, taken before it starts.
    pub(crate) fn put(
        self: &Arc<Self>,
        name: &str,
        def: ServiceDef,
    ) -> Result<broadcast::Receiver<ServiceEvent>, Refused> {
        let mut others = self.defs();
        others.remove(name);
        if others.len() >= MAX_SERVICES {
            return Err(Refused(
                ErrorKind::Busy,
                format!("a box has at most {MAX_SERVICES} services"),
            ));
        }
        check(name, &def, &others)?;
        others.insert(name.to_string(), def.clone());
        self.save(&others)?;
        let (replaced, events) = {
            let mut services = self.services();
            let s = services
                .entry(name.to_string())
                .or_insert_with(|| Service::new(def.clone(), true));
            s.def = def;
            s.wanted = true;
            (s.state.pid.is_some(), s.events.subscribe())
        };
        if replaced {
            self.restart(name)?;
        } else {
            self.launch(name);
        }
        Ok(events)
    }

    pub(crate) fn delete(self: &Arc<Self>, name: &str) -> Result<(), Refused> {
        let mut defs = self.defs();
        if defs.remove(name).is_none() {
            return Err(no_such(name));
        }
        if let Some(user) = defs.iter().find(|(_, d)| d.needs.iter().any(|n| n == name)) {
            return Err(Refused(
                ErrorKind::Conflict,
                format!(
                    "service {:?} needs {name:?}; delete or change it first",
                    user.0
                ),
            ));
        }
        self.save(&defs)?;
        let _ = self.stop(name, Some(STOP_GRACE));
        self.services().remove(name);
        Ok(())
    }

    /// Returns a subscription to its events, taken before it starts.
    pub(crate) fn start(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<broadcast::Receiver<ServiceEvent>, Refused> {
        let events = {
            let mut services = self.services();
            let s = services.get_mut(name).ok_or_else(|| no_such(name))?;
            s.wanted = true;
            let events = s.events.subscribe();
            if matches!(s.state.status.as_str(), "running" | "starting") {
                return Ok(events);
            }
            s.backoff = BACKOFF_FIRST;
            events
        };
        self.launch(name);
        Ok(events)
    }

    pub(crate) fn restart(self: &Arc<Self>, name: &str) -> Result<(), Refused> {
        let _ = self.stop(name, Some(STOP_GRACE));
        self.start(name).map(drop)
    }

    /// Sends SIGTERM to the service's process group, SIGKILL after `grace`.
    pub(crate) fn stop(
        self: &Arc<Self>,
        name: &str,
        grace: Option<Duration>,
    ) -> Result<(), Refused> {
        let (pid, generation, events) = {
            let mut services = self.services();
            let s = services.get_mut(name).ok_or_else(|| no_such(name))?;
            s.wanted = false;
            s.generation += 1;
            s.state.next_restart_ms = None;
            match s.state.pid {
                Some(pid) => {
                    s.state.status = "stopping".into();
                    (pid, s.generation, s.events.clone())
                }
                None => {
                    s.state.status = "stopped".into();
                    return Err(Refused(
                        ErrorKind::Conflict,
                        format!("service {name:?} is not running"),
                    ));
                }
            }
        };
        let _ = events.send(event("stopping", None, None));
        // SAFETY: plain syscall on the group the service's setsid made.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        let grace = grace.unwrap_or(STOP_GRACE);
        let me = Arc::clone(self);
        let name = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let still = me
                .services()
                .get(&name)
                .is_some_and(|s| s.generation == generation && s.state.pid == Some(pid));
            if still {
                // SAFETY: as above.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        });
        Ok(())
    }

    pub(crate) fn signal(&self, name: &str, signal: i32) -> Result<(), Refused> {
        let services = self.services();
        let s = services.get(name).ok_or_else(|| no_such(name))?;
        let Some(pid) = s.state.pid else {
            return Err(Refused(
                ErrorKind::Conflict,
                format!("service {name:?} is not running"),
            ));
        };
        // SAFETY: plain syscall on the service's process group.
        unsafe { libc::kill(-pid, signal) };
        Ok(())
    }

    pub(crate) fn subscribe(
        &self,
        name: &str,
    ) -> Result<broadcast::Receiver<ServiceEvent>, Refused> {
        let services = self.services();
        let s = services.get(name).ok_or_else(|| no_such(name))?;
        Ok(s.events.subscribe())
    }

    /// The end of the service's log, and its path.
    pub(crate) fn log_tail(&self, name: &str, max_bytes: u64) -> Result<(String, String), Refused> {
        if !self.services().contains_key(name) {
            return Err(no_such(name));
        }
        let path = self.log_path(name);
        let bytes = read_regular(&path, LOG_LIMIT * 2).unwrap_or_default();
        let from = bytes.len().saturating_sub(max_bytes as usize);
        Ok((
            String::from_utf8_lossy(&bytes[from..]).into_owned(),
            path.display().to_string(),
        ))
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.places.logs.join(format!("{name}.log"))
    }

    fn save(&self, defs: &BTreeMap<String, ServiceDef>) -> Result<(), Refused> {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.places.file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.places.file.with_extension("json.new");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(defs).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.places.file)
        };
        write().map_err(|e| {
            Refused(
                ErrorKind::Busy,
                format!(
                    "cannot save the services to {}: {e}",
                    self.places.file.display()
                ),
            )
        })
    }

    /// Starts the service's process if it should run and does not.
    fn launch(self: &Arc<Self>, name: &str) {
        let (req, generation, events) = {
            let mut services = self.services();
            let Some(s) = services.get_mut(name) else {
                return;
            };
            if !s.wanted || s.state.pid.is_some() {
                return;
            }
            s.generation += 1;
            s.state.status = "starting".into();
            s.state.next_restart_ms = None;
            let mut cmd = vec![s.def.cmd.clone()];
            cmd.extend(s.def.args.iter().cloned());
            let req = SpawnRequest {
                cmd,
                env: s.def.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                dir: s.def.dir.clone().or_else(|| Some("/".into())),
                ..Default::default()
            };
            (req, s.generation, s.events.clone())
        };
        let started = match spawn::start(&req) {
            Ok(started) => started,
            Err(e) => {
                let _ = events.send(event("error", Some(e.0.clone()), None));
                self.exited(name, generation, None, Some(e.0));
                return;
            }
        };
        let pid = started.pid;
        {
            let mut services = self.services();
            if let Some(s) = services.get_mut(name) {
                s.state.status = "running".into();
                s.state.pid = Some(pid);
                s.state.started_ms = Some(now_ms());
                s.state.error = None;
                s.started = Some(Instant::now());
            }
        }
        let _ = events.send(event("started", None, None));
        if let Stdio3::Pipes {
            stdin,
            stdout,
            stderr,
        } = started.stdio
        {
            drop(stdin);
            let log = Arc::new(Mutex::new(LogFile::new(self.log_path(name))));
            for (fd, kind) in [(stdout, "stdout"), (stderr, "stderr")] {
                let (log, events) = (Arc::clone(&log), events.clone());
                tokio::spawn(async move {
                    let Ok(fd) = fdio::register(fd) else { return };
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = fdio::read(&fd, &mut buf).await {
                        if n == 0 {
                            break;
                        }
                        log.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .append(&buf[..n]);
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let _ = events.send(event(kind, Some(text), None));
                    }
                });
            }
        }
        let me = Arc::clone(self);
        let name = name.to_string();
        tokio::spawn(async move {
            let code = started.exit.await.unwrap_or(255);
            let _ = events.send(event("exit", None, Some(code)));
            me.exited(&name, generation, Some(code), None);
        });
    }

    /// The process of start `generation` ended: restart it after the
    /// backoff if it should run, else mark it stopped.
    fn exited(
        self: &Arc<Self>,
        name: &str,
        generation: u64,
        code: Option<i32>,
        error: Option<String>,
    ) {
        let restart_in = {
            let mut services = self.services();
            let Some(s) = services.get_mut(name) else {
                return;
            };
            if s.generation != generation && s.state.pid.is_none() {
                // A failed start already handled.
                return;
            }
            s.state.pid = None;
            if !s.wanted {
                s.state.status = "stopped".into();
                let _ = s.events.send(event("stopped", None, code));
                return;
            }
            if s.generation != generation {
                // Stopped to be started again (a restart or a new
                // definition): start it now.
                s.state.status = "stopped".into();
                Duration::ZERO
            } else {
                if s.started.is_some_and(|t| t.elapsed() >= HEALTHY_RUN) {
                    s.backoff = BACKOFF_FIRST;
                }
                let wait = s.backoff;
                s.backoff = (s.backoff * 2).min(BACKOFF_MAX);
                s.state.status = "failed".into();
                s.state.error = error.or_else(|| code.map(|c| format!("exited with code {c}")));
                s.state.restart_count += 1;
                s.state.next_restart_ms = Some(now_ms() + wait.as_millis() as u64);
                wait
            }
        };
        let me = Arc::clone(self);
        let name = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(restart_in).await;
            let due = me
                .services()
                .get(&name)
                .is_some_and(|s| s.wanted && s.state.pid.is_none());
            if due {
                me.launch(&name);
            }
        });
    }

    /// Stops every service for good (the box is stopping).
    pub(crate) fn stop_all(self: &Arc<Self>) {
        let running: Vec<String> = {
            let mut services = self.services();
            for s in services.values_mut() {
                s.wanted = false;
            }
            services
                .iter()
                .filter(|(_, s)| s.state.pid.is_some())
                .map(|(n, _)| n.clone())
                .collect()
        };
        for name in running {
            let _ = self.stop(&name, None);
        }
    }
}

impl Service {
    fn new(def: ServiceDef, wanted: bool) -> Self {
        Self {
            def,
            state: ServiceState {
                status: "stopped".into(),
                ..Default::default()
            },
            wanted,
            generation: 0,
            backoff: BACKOFF_FIRST,
            started: None,
            events: broadcast::channel(256).0,
        }
    }
}

fn no_such(name: &str) -> Refused {
    Refused(
        ErrorKind::NoSuchService,
        format!("no service named {name:?}"),
    )
}

/// A service's log, rotated past [`LOG_LIMIT`].
struct LogFile {
    path: PathBuf,
}

impl LogFile {
    fn new(path: PathBuf) -> Self {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        Self { path }
    }

    fn append(&mut self, data: &[u8]) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() + data.len() as u64 > LOG_LIMIT) {
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
        }
        use std::os::unix::fs::OpenOptionsExt;
        // Not a FIFO, device or symlink the box put there: those could
        // block or redirect the init's writes.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&self.path)
            .and_then(|f| {
                if f.metadata()?.is_file() {
                    Ok(f)
                } else {
                    Err(std::io::Error::other("not a regular file"))
                }
            })
            .and_then(|mut f| f.write_all(data));
        if let Err(e) = written {
            tracing::debug!(path = %self.path.display(), error = %e, "service log not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(needs: &[&str], port: Option<u16>) -> ServiceDef {
        ServiceDef {
            cmd: "true".into(),
            needs: needs.iter().map(|s| s.to_string()).collect(),
            http_port: port,
            ..Default::default()
        }
    }

    #[test]
    fn needs_come_first_and_cycles_are_refused() {
        let mut defs = BTreeMap::new();
        defs.insert("web".to_string(), def(&["db", "cache"], None));
        defs.insert("db".to_string(), def(&[], None));
        defs.insert("cache".to_string(), def(&["db"], None));
        let order = start_order(&defs).ok().expect("no cycle");
        let pos = |n: &str| order.iter().position(|o| o == n).expect("listed");
        assert!(
            pos("db") < pos("cache") && pos("cache") < pos("web"),
            "{order:?}"
        );
        let err = check("db", &def(&["web"], None), &defs).expect_err("a cycle");
        assert!(err.1.contains("cycle"), "{}", err.1);
    }

    #[test]
    fn one_service_owns_the_http_port_and_needs_must_exist() {
        let mut defs = BTreeMap::new();
        defs.insert("web".to_string(), def(&[], Some(8080)));
        let err = check("api", &def(&[], Some(8080)), &defs).expect_err("taken");
        assert_eq!(err.0, ErrorKind::Conflict);
        assert!(
            check("web", &def(&[], Some(8080)), &defs).is_ok(),
            "its own port"
        );
        let err = check("api", &def(&["nope"], None), &defs).expect_err("unknown need");
        assert!(err.1.contains("nope"));
    }
}
