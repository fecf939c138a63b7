//! What control needs from the boxes, as a trait: the real implementation
//! drives the runtime and the in-box agent; tests use an in-memory fake
//! ([`crate::testing`]).

use std::future::Future;
use std::time::Duration;

use bothy_agent::client::{
    AgentClient, AgentError, FsDownload, FsUpload, SessionReader, SessionWriter,
};
use bothy_agent::proto::{
    FsEntry, FsError, FsEvent, FsRequest, Input, Output, SessionInfo, SpawnRequest,
};
pub use bothy_runtime::disk::DiskSource;
use bothy_runtime::netpolicy::NetPolicy;
pub use bothy_runtime::DiskUsage;
pub use bothy_runtime::ListeningPort;
use bothy_runtime::{BoxSpec, Runtime, RuntimeError};
use tokio::sync::mpsc;

/// How long a call to a box's agent may take before the box counts as wedged.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, thiserror::Error)]
pub enum BoxError {
    /// The box is not running or its agent does not answer.
    #[error("{0}")]
    NotRunning(String),
    #[error("no such session: {0}")]
    NoSuchSession(String),
    /// A checkpoint or disk the call names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something else holds the box or its disk; retry once it is done.
    #[error("{0}")]
    Busy(String),
    /// The request clashes with the box's state (a service's HTTP port is
    /// taken, it is not running).
    #[error("{0}")]
    Conflict(String),
    /// The host cannot do it now (storage down, host tools missing).
    #[error("{0}")]
    Unavailable(String),
    /// The command could not be started (not found, bad directory, ...).
    #[error("{0}")]
    Spawn(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// A filesystem operation failed in the box (missing file, ...).
    #[error(transparent)]
    Fs(bothy_agent::proto::FsError),
    #[error("{0}")]
    Failed(String),
}

impl From<RuntimeError> for BoxError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::NotFound(m) => Self::NotFound(m),
            RuntimeError::Busy(m) => Self::Busy(m),
            RuntimeError::HostNotReady(m)
            | RuntimeError::Unavailable(m)
            | RuntimeError::StorageLost(m) => Self::Unavailable(m),
            other => Self::Failed(other.to_string()),
        }
    }
}

impl From<AgentError> for BoxError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Unreachable(io) => Self::NotRunning(io.to_string()),
            AgentError::NoSuchSession(id) => Self::NoSuchSession(id),
            AgentError::Spawn(m) => Self::Spawn(m),
            AgentError::NoSuchService(m) => Self::NotFound(m),
            AgentError::Conflict(m) => Self::Conflict(m),
            AgentError::Fs(e) => Self::Fs(e),
            other => Self::Failed(other.to_string()),
        }
    }
}

/// Where a box's own control socket is served, and the only host user that
/// may connect to it (the box's root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxSocket {
    pub path: std::path::PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// A checkpoint of a box's disk, as the volume layer has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeCheckpoint {
    pub id: u64,
    /// Its map and every chunk it names are in the object store.
    pub in_object_store: bool,
}

/// What a box is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Running,
    /// Its processes are frozen (warm sleep).
    Frozen,
    /// Stopped, or on a dead disk.
    Off,
}

/// A live connection to one exec session. Dropping it detaches from the session
/// without ending it (the agent keeps the process running).
pub struct ExecChannels {
    pub info: SessionInfo,
    /// Ends after `Output::Exit`, or when the agent goes away.
    pub output: mpsc::Receiver<Output>,
    pub input: mpsc::Sender<Input>,
    /// Keeps the box awake while the client is attached.
    pub awake: Option<crate::sleep::AwakeHold>,
}

/// Boxes and their exec sessions. Every call is idempotent where the runtime's
/// is, and none is expected to bound its own duration: callers add timeouts.
pub trait Boxes: Send + Sync + 'static {
    fn create(
        &self,
        spec: &BoxSpec,
        source: &DiskSource,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
    fn start(&self, spec: &BoxSpec) -> impl Future<Output = Result<(), BoxError>> + Send;
    fn stop(&self, id: &str) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Changes a running box's memory limit (a stopped box: nothing to do).
    fn set_memory_limit(
        &self,
        id: &str,
        ram_mb: u64,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Stops the box and boots it again on its disk as it is.
    fn restart(&self, spec: &BoxSpec) -> impl Future<Output = Result<(), BoxError>> + Send;
    fn destroy(&self, id: &str) -> impl Future<Output = Result<(), BoxError>> + Send;
    fn power(&self, id: &str) -> impl Future<Output = Result<Power, BoxError>> + Send;
    /// Freezes a running box's processes (warm sleep).
    fn freeze(&self, id: &str) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Lets a frozen box's processes go on.
    fn thaw(&self, id: &str) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// CPU time the box's processes used since it booted, if known.
    fn cpu_used(&self, id: &str) -> Option<std::time::Duration>;
    /// A service request the box's init answers with `done`.
    fn service_call(
        &self,
        id: &str,
        req: bothy_agent::proto::Request,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
    fn services(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<bothy_agent::proto::ServiceInfo>, BoxError>> + Send;
    /// The end of a service's log, and its path in the box.
    fn service_log(
        &self,
        id: &str,
        name: &str,
        max_bytes: u64,
    ) -> impl Future<Output = Result<(String, String), BoxError>> + Send;
    /// A service request answered by events until the box's init ends the
    /// stream (a watch; a put or start that follows the service).
    fn service_stream(
        &self,
        id: &str,
        req: bothy_agent::proto::Request,
    ) -> impl Future<Output = Result<mpsc::Receiver<bothy_agent::proto::ServiceEvent>, BoxError>> + Send;
    /// Answers once the box's agent does: the box runs and can take commands.
    fn ping(&self, id: &str) -> impl Future<Output = Result<(), BoxError>> + Send;
    fn spawn(
        &self,
        id: &str,
        req: SpawnRequest,
    ) -> impl Future<Output = Result<ExecChannels, BoxError>> + Send;
    fn attach(
        &self,
        id: &str,
        session: &str,
    ) -> impl Future<Output = Result<ExecChannels, BoxError>> + Send;
    fn sessions(&self, id: &str)
        -> impl Future<Output = Result<Vec<SessionInfo>, BoxError>> + Send;
    fn kill(
        &self,
        id: &str,
        session: &str,
        signal: i32,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// A crash-consistent checkpoint of the running box's disk; returns the
    /// volume's checkpoint number.
    fn checkpoint(&self, id: &str) -> impl Future<Output = Result<u64, BoxError>> + Send;
    /// The volume's checkpoints.
    fn volume_checkpoints(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<VolumeCheckpoint>, BoxError>> + Send;
    /// Stops the box, keeps its disk as a new checkpoint (returned), brings the
    /// disk back to `checkpoint`, boots the box.
    fn restore(
        &self,
        spec: &BoxSpec,
        checkpoint: u64,
    ) -> impl Future<Output = Result<u64, BoxError>> + Send;
    fn delete_checkpoint(
        &self,
        id: &str,
        checkpoint: u64,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Frees storage nothing refers to any more.
    fn collect_garbage(&self) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Brings the box's disk back from the object store if this host lacks
    /// it (empty data dir); returns whether it did.
    fn recover_disk(&self, id: &str) -> impl Future<Output = Result<bool, BoxError>> + Send;
    /// Makes the box's disk and checkpoints durable in the object store.
    fn sync(&self, id: &str) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Gives the running box `spec`'s hostname (a box taken from the warm
    /// pool becomes its user's).
    fn rename(&self, spec: &BoxSpec) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = spec;
        async { Ok(()) }
    }
    /// What the box's disk and checkpoints store. Boxes without a disk of
    /// their own store nothing.
    fn disk_usage(&self, id: &str) -> impl Future<Output = Result<DiskUsage, BoxError>> + Send {
        let _ = id;
        async { Ok(DiskUsage::default()) }
    }
    /// A TCP connection to `port` on the box's own loopback, made inside
    /// its network namespace. The inner error is the connect's (refused
    /// while nothing listens); boxes without a network have none.
    fn connect(
        &self,
        id: &str,
        port: u16,
    ) -> impl Future<Output = Result<std::io::Result<tokio::net::TcpStream>, BoxError>> + Send {
        let _ = (id, port);
        async { Err(BoxError::Unavailable("these boxes have no network".into())) }
    }
    /// The TCP sockets listening in the box's network namespace, read
    /// without waking or disturbing the box. A box that is not running has
    /// none (`NotFound`).
    fn listening_ports(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<ListeningPort>, BoxError>> + Send {
        let _ = id;
        async { Err(BoxError::Unavailable("these boxes have no network".into())) }
    }
    /// The box pids owning the listening sockets `inodes` (those found).
    fn port_owners(
        &self,
        id: &str,
        inodes: std::collections::HashSet<u64>,
    ) -> impl Future<Output = Result<std::collections::HashMap<u64, u32>, BoxError>> + Send {
        let _ = (id, inodes);
        async { Ok(std::collections::HashMap::new()) }
    }
    /// Opens a file in the box for reading (`FsRequest::Read`).
    fn fs_read(
        &self,
        id: &str,
        req: FsRequest,
    ) -> impl Future<Output = Result<FsDownload, BoxError>> + Send {
        let _ = (id, req);
        async {
            Err(BoxError::Unavailable(
                "these boxes have no filesystem API".into(),
            ))
        }
    }
    /// Starts writing a file in the box (`FsRequest::Write`).
    fn fs_write(
        &self,
        id: &str,
        req: FsRequest,
    ) -> impl Future<Output = Result<FsUpload, BoxError>> + Send {
        let _ = (id, req);
        async {
            Err(BoxError::Unavailable(
                "these boxes have no filesystem API".into(),
            ))
        }
    }
    /// Lists a path in the box (`FsRequest::List`).
    fn fs_list(
        &self,
        id: &str,
        req: FsRequest,
    ) -> impl Future<Output = Result<Vec<FsEntry>, BoxError>> + Send {
        let _ = (id, req);
        async {
            Err(BoxError::Unavailable(
                "these boxes have no filesystem API".into(),
            ))
        }
    }
    /// A filesystem change in the box answered by a count (delete, rename,
    /// copy, chmod, chown).
    fn fs_count(
        &self,
        id: &str,
        req: FsRequest,
    ) -> impl Future<Output = Result<u64, BoxError>> + Send {
        let _ = (id, req);
        async {
            Err(BoxError::Unavailable(
                "these boxes have no filesystem API".into(),
            ))
        }
    }
    /// Watches paths in the box (`FsRequest::Watch`): the paths watched and
    /// the events until the receiver is dropped.
    #[allow(clippy::type_complexity)]
    fn fs_watch(
        &self,
        id: &str,
        req: FsRequest,
    ) -> impl Future<
        Output = Result<(Vec<String>, mpsc::Receiver<Result<FsEvent, FsError>>), BoxError>,
    > + Send {
        let _ = (id, req);
        async {
            Err(BoxError::Unavailable(
                "these boxes have no filesystem API".into(),
            ))
        }
    }
    /// Where to serve the box's own control socket, if boxes have one.
    fn env_socket(&self, id: &str) -> Option<InboxSocket>;
    /// Sets the box's network policy, at once if it runs and at its next
    /// start otherwise. Boxes without a network ignore it.
    fn set_network_policy(
        &self,
        id: &str,
        policy: NetPolicy,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (id, policy);
        async { Ok(()) }
    }
    /// Every box is stopped: lets go of what serves their disks (the
    /// storage process), which otherwise outlives the daemon.
    fn release_storage(&self) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Completes when what serves the boxes' disks dies (their disks are
    /// dead until the boxes boot again).
    fn storage_gone(&self) -> impl Future<Output = ()> + Send;
}

/// Boxes made by the runtime (crun containers) with the agent as pid 1.
pub struct RealBoxes {
    runtime: Runtime,
}

impl RealBoxes {
    pub fn new(runtime: Runtime) -> Self {
        Self { runtime }
    }

    fn agent(&self, id: &str) -> AgentClient {
        AgentClient::new(self.runtime.agent_socket(id))
    }
}

impl Boxes for RealBoxes {
    async fn create(&self, spec: &BoxSpec, source: &DiskSource) -> Result<(), BoxError> {
        Ok(self.runtime.create(spec, source.clone()).await?)
    }
    async fn start(&self, spec: &BoxSpec) -> Result<(), BoxError> {
        Ok(self.runtime.start(spec).await?)
    }
    async fn stop(&self, id: &str) -> Result<(), BoxError> {
        Ok(self.runtime.stop(id).await?)
    }
    async fn set_memory_limit(&self, id: &str, ram_mb: u64) -> Result<(), BoxError> {
        Ok(self.runtime.set_memory_limit(id, ram_mb).await?)
    }
    async fn restart(&self, spec: &BoxSpec) -> Result<(), BoxError> {
        Ok(self.runtime.restart(spec).await?)
    }
    async fn destroy(&self, id: &str) -> Result<(), BoxError> {
        Ok(self.runtime.destroy(id).await?)
    }
    async fn power(&self, id: &str) -> Result<Power, BoxError> {
        Ok(match self.runtime.power(id).await? {
            bothy_runtime::Power::Running => Power::Running,
            bothy_runtime::Power::Frozen => Power::Frozen,
            bothy_runtime::Power::Off => Power::Off,
        })
    }
    async fn freeze(&self, id: &str) -> Result<(), BoxError> {
        Ok(self.runtime.freeze(id).await?)
    }
    async fn thaw(&self, id: &str) -> Result<(), BoxError> {
        Ok(self.runtime.thaw(id).await?)
    }
    fn cpu_used(&self, id: &str) -> Option<std::time::Duration> {
        self.runtime.cpu_used(id)
    }
    async fn service_call(
        &self,
        id: &str,
        req: bothy_agent::proto::Request,
    ) -> Result<(), BoxError> {
        Ok(self.agent(id).service(req).await?)
    }
    async fn services(&self, id: &str) -> Result<Vec<bothy_agent::proto::ServiceInfo>, BoxError> {
        Ok(self.agent(id).services().await?)
    }
    async fn service_log(
        &self,
        id: &str,
        name: &str,
        max_bytes: u64,
    ) -> Result<(String, String), BoxError> {
        Ok(self.agent(id).service_log(name, max_bytes).await?)
    }
    async fn service_stream(
        &self,
        id: &str,
        req: bothy_agent::proto::Request,
    ) -> Result<mpsc::Receiver<bothy_agent::proto::ServiceEvent>, BoxError> {
        Ok(self.agent(id).service_stream(req).await?)
    }
    async fn ping(&self, id: &str) -> Result<(), BoxError> {
        Ok(self.agent(id).ping().await?)
    }
    async fn connect(
        &self,
        id: &str,
        port: u16,
    ) -> Result<std::io::Result<tokio::net::TcpStream>, BoxError> {
        Ok(self.runtime.connect(id, port).await?)
    }
    async fn listening_ports(&self, id: &str) -> Result<Vec<ListeningPort>, BoxError> {
        Ok(self.runtime.listening_ports(id).await?)
    }
    async fn port_owners(
        &self,
        id: &str,
        inodes: std::collections::HashSet<u64>,
    ) -> Result<std::collections::HashMap<u64, u32>, BoxError> {
        Ok(self.runtime.port_owners(id, inodes).await?)
    }
    async fn spawn(&self, id: &str, req: SpawnRequest) -> Result<ExecChannels, BoxError> {
        let session = self.agent(id).spawn(req).await?;
        Ok(pump(session, self.agent(id)))
    }
    async fn attach(&self, id: &str, session: &str) -> Result<ExecChannels, BoxError> {
        let session = self.agent(id).attach(session).await?;
        Ok(pump(session, self.agent(id)))
    }
    async fn sessions(&self, id: &str) -> Result<Vec<SessionInfo>, BoxError> {
        Ok(self.agent(id).list().await?)
    }
    async fn kill(&self, id: &str, session: &str, signal: i32) -> Result<(), BoxError> {
        Ok(self.agent(id).kill(session, signal).await?)
    }
    async fn checkpoint(&self, id: &str) -> Result<u64, BoxError> {
        Ok(self.runtime.checkpoint(id).await?)
    }
    async fn volume_checkpoints(&self, id: &str) -> Result<Vec<VolumeCheckpoint>, BoxError> {
        Ok(self
            .runtime
            .checkpoints(id)
            .await?
            .into_iter()
            .map(|c| VolumeCheckpoint {
                id: c.id,
                in_object_store: c.in_object_store,
            })
            .collect())
    }
    async fn restore(&self, spec: &BoxSpec, checkpoint: u64) -> Result<u64, BoxError> {
        Ok(self.runtime.restore(spec, checkpoint).await?)
    }
    async fn delete_checkpoint(&self, id: &str, checkpoint: u64) -> Result<(), BoxError> {
        Ok(self.runtime.delete_checkpoint(id, checkpoint).await?)
    }
    async fn rename(&self, spec: &BoxSpec) -> Result<(), BoxError> {
        Ok(self.runtime.rename(spec).await?)
    }
    async fn disk_usage(&self, id: &str) -> Result<DiskUsage, BoxError> {
        Ok(self.runtime.disk_usage(id).await?)
    }
    async fn collect_garbage(&self) -> Result<(), BoxError> {
        let (objects, cached) = self.runtime.collect_garbage().await?;
        tracing::info!(objects, cached, "garbage collected");
        Ok(())
    }
    async fn fs_read(&self, id: &str, req: FsRequest) -> Result<FsDownload, BoxError> {
        Ok(self.agent(id).fs_read(req).await?)
    }
    async fn fs_write(&self, id: &str, req: FsRequest) -> Result<FsUpload, BoxError> {
        Ok(self.agent(id).fs_write(req).await?)
    }
    async fn fs_list(&self, id: &str, req: FsRequest) -> Result<Vec<FsEntry>, BoxError> {
        Ok(self.agent(id).fs_list(req).await?)
    }
    async fn fs_count(&self, id: &str, req: FsRequest) -> Result<u64, BoxError> {
        Ok(self.agent(id).fs_count(req).await?)
    }
    async fn fs_watch(
        &self,
        id: &str,
        req: FsRequest,
    ) -> Result<(Vec<String>, mpsc::Receiver<Result<FsEvent, FsError>>), BoxError> {
        Ok(self.agent(id).fs_watch(req).await?)
    }
    fn env_socket(&self, id: &str) -> Option<InboxSocket> {
        Some(InboxSocket {
            path: self.runtime.env_socket(id),
            uid: self.runtime.box_host_id(id),
            gid: self.runtime.box_host_id(id),
        })
    }
    async fn sync(&self, id: &str) -> Result<(), BoxError> {
        Ok(self.runtime.sync(id).await?)
    }
    async fn recover_disk(&self, id: &str) -> Result<bool, BoxError> {
        Ok(self.runtime.recover_disk(id).await?)
    }
    async fn set_network_policy(&self, id: &str, policy: NetPolicy) -> Result<(), BoxError> {
        Ok(self.runtime.set_network_policy(id, policy).await?)
    }
    async fn release_storage(&self) -> Result<(), BoxError> {
        Ok(self.runtime.shutdown_storage().await?)
    }
    async fn storage_gone(&self) {
        self.runtime.storage_gone().await
    }
}

/// Moves frames between an agent session and channels, so the WebSocket bridge
/// does not depend on the agent's types. Both halves end (and so detach) as soon
/// as the other side of their channel is dropped.
fn pump(session: bothy_agent::client::AgentSession, agent: AgentClient) -> ExecChannels {
    let info = session.info().clone();
    let (reader, writer) = session.split();
    let (out_tx, out_rx) = mpsc::channel(64);
    let (in_tx, in_rx) = mpsc::channel(64);
    tokio::spawn(pump_output(reader, out_tx));
    tokio::spawn(pump_input(writer, in_rx, agent, info.id.clone()));
    ExecChannels {
        info,
        output: out_rx,
        input: in_tx,
        awake: None,
    }
}

async fn pump_output(mut reader: SessionReader, tx: mpsc::Sender<Output>) {
    loop {
        let next = tokio::select! {
            next = reader.next() => next,
            () = tx.closed() => return,
        };
        match next {
            Ok(Some(out)) => {
                if tx.send(out).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "exec session output ended with an error");
                return;
            }
        }
    }
}

/// Signals go as a `kill` request on a connection of their own rather than
/// in the session's stream: agents keep running across daemon upgrades, and
/// every agent build understands that request. It also passes stdin the
/// process has not read yet.
async fn pump_input(
    mut writer: SessionWriter,
    mut rx: mpsc::Receiver<Input>,
    agent: AgentClient,
    session: String,
) {
    while let Some(input) = rx.recv().await {
        if let Input::Signal(signal) = input {
            if let Err(e) = agent.kill(&session, signal).await {
                tracing::debug!(error = %e, "signalling an exec session failed");
            }
            continue;
        }
        if let Err(e) = writer.send(input).await {
            tracing::debug!(error = %e, "exec session input ended");
            return;
        }
    }
}
