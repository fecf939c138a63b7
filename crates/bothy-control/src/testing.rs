//! An in-memory stand-in for the boxes and their agents, so control logic
//! and the frontends are tested without root or real boxes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bothy_agent::proto::{Input, Output, SessionInfo, SpawnRequest};
use bothy_runtime::BoxSpec;
use tokio::sync::mpsc;

use crate::boxes::{
    BoxError, Boxes, DiskSource, ExecChannels, InboxSocket, Power, VolumeCheckpoint,
};

/// What the fake remembers, shared with the test.
#[derive(Default)]
pub struct FakeState {
    pub volumes: HashSet<String>,
    pub running: HashSet<String>,
    pub frozen: HashSet<String>,
    /// Boxes whose start fails with this reason.
    pub broken: HashMap<String, String>,
    /// Boxes whose status check and agent never answer.
    pub wedged: HashSet<String>,
    /// Boxes that run but whose agent never answers.
    pub agent_wedged: HashSet<String>,
    /// Box ids in the order they were stopped.
    pub stops: Vec<String>,
    /// Signals sent to sessions, in order. The listed session `s1` ends
    /// with 128 + N at the first signal N it does not ignore.
    pub killed: Vec<(String, i32)>,
    /// Signals session `s1` ignores (as `trap "" TERM` would).
    pub ignored_signals: HashSet<i32>,
    /// Sessions whose client went away without ending them.
    pub detached: usize,
    /// Each box's disk, as a stand-in byte string the test sets.
    pub disks: HashMap<String, Vec<u8>>,
    /// (box id, volume checkpoint) → disk content.
    pub checkpoints: HashMap<(String, u64), Vec<u8>>,
    pub gc_runs: usize,
    /// Memory limits set on running boxes, in order.
    pub memory_limits: Vec<(String, u64)>,
    /// A checkpoint of this box waits until [`FakeBoxes::open_gate`].
    pub checkpoint_gate: Option<String>,
    /// Set while a gated checkpoint waits.
    pub gate_waiting: bool,
    /// Set once control let go of the storage (all boxes stopped).
    pub storage_released: bool,
    /// Checkpoints a sync shipped: (box id, volume checkpoint).
    pub synced: HashSet<(String, u64)>,
    /// Sync barriers run.
    pub syncs: usize,
}

#[derive(Clone, Default)]
pub struct FakeBoxes {
    state: Arc<Mutex<FakeState>>,
    gate: Arc<tokio::sync::Notify>,
    storage_death: Arc<tokio::sync::Notify>,
}

impl FakeBoxes {
    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The storage dies: every running box loses its disk (stops running)
    /// and control is told.
    pub fn kill_storage(&self) {
        self.state().running.clear();
        self.storage_death.notify_waiters();
    }

    /// Lets a gated checkpoint go on.
    pub fn open_gate(&self) {
        self.state().checkpoint_gate = None;
        self.gate.notify_waiters();
        self.gate.notify_one();
    }
}

impl Boxes for FakeBoxes {
    async fn create(&self, spec: &BoxSpec, source: &DiskSource) -> Result<(), BoxError> {
        let mut s = self.state();
        let content = match source {
            DiskSource::Base => Vec::new(),
            DiskSource::Checkpoint { box_id, checkpoint } => s
                .checkpoints
                .get(&(box_id.clone(), *checkpoint))
                .cloned()
                .ok_or_else(|| BoxError::NotFound("no such checkpoint".into()))?,
        };
        s.volumes.insert(spec.id.clone());
        s.disks.insert(spec.id.clone(), content);
        Ok(())
    }
    async fn start(&self, spec: &BoxSpec) -> Result<(), BoxError> {
        let mut s = self.state();
        if let Some(reason) = s.broken.get(&spec.hostname) {
            return Err(BoxError::Failed(reason.clone()));
        }
        if !s.volumes.contains(&spec.id) {
            return Err(BoxError::Failed("no volume".into()));
        }
        s.running.insert(spec.id.clone());
        Ok(())
    }
    async fn stop(&self, id: &str) -> Result<(), BoxError> {
        let mut s = self.state();
        s.running.remove(id);
        s.frozen.remove(id);
        s.stops.push(id.to_string());
        Ok(())
    }
    async fn set_memory_limit(&self, id: &str, ram_mb: u64) -> Result<(), BoxError> {
        let mut s = self.state();
        if s.running.contains(id) {
            s.memory_limits.push((id.to_string(), ram_mb));
        }
        Ok(())
    }
    async fn restart(&self, spec: &BoxSpec) -> Result<(), BoxError> {
        self.stop(&spec.id).await?;
        self.start(spec).await
    }
    async fn destroy(&self, id: &str) -> Result<(), BoxError> {
        let mut s = self.state();
        s.running.remove(id);
        s.volumes.remove(id);
        Ok(())
    }
    async fn power(&self, id: &str) -> Result<Power, BoxError> {
        if self.state().wedged.contains(id) {
            std::future::pending::<()>().await;
        }
        let s = self.state();
        Ok(if s.frozen.contains(id) {
            Power::Frozen
        } else if s.running.contains(id) {
            Power::Running
        } else {
            Power::Off
        })
    }
    async fn freeze(&self, id: &str) -> Result<(), BoxError> {
        let mut s = self.state();
        if s.running.contains(id) {
            s.frozen.insert(id.to_string());
        }
        Ok(())
    }
    async fn thaw(&self, id: &str) -> Result<(), BoxError> {
        self.state().frozen.remove(id);
        Ok(())
    }
    fn cpu_used(&self, _id: &str) -> Option<std::time::Duration> {
        None
    }
    async fn service_call(
        &self,
        _id: &str,
        _req: bothy_agent::proto::Request,
    ) -> Result<(), BoxError> {
        Ok(())
    }
    async fn services(&self, _id: &str) -> Result<Vec<bothy_agent::proto::ServiceInfo>, BoxError> {
        Ok(Vec::new())
    }
    async fn service_log(
        &self,
        _id: &str,
        name: &str,
        _max: u64,
    ) -> Result<(String, String), BoxError> {
        Err(BoxError::NotFound(format!("no service named {name:?}")))
    }
    async fn service_stream(
        &self,
        _id: &str,
        _req: bothy_agent::proto::Request,
    ) -> Result<tokio::sync::mpsc::Receiver<bothy_agent::proto::ServiceEvent>, BoxError> {
        Ok(tokio::sync::mpsc::channel(1).1)
    }
    async fn ping(&self, id: &str) -> Result<(), BoxError> {
        let wedged = {
            let s = self.state();
            s.wedged.contains(id) || s.agent_wedged.contains(id)
        };
        if wedged {
            std::future::pending::<()>().await;
        }
        if self.state().running.contains(id) {
            Ok(())
        } else {
            Err(BoxError::NotRunning("connection refused".into()))
        }
    }
    /// `echo ARGS` prints its args; `cat` echoes stdin until EOF and dies of
    /// any signal; `sleep` runs until a signal; `ignore-stdin` prints without
    /// reading stdin; anything else is "not found". A session whose client
    /// goes away counts as detached.
    async fn spawn(&self, _id: &str, req: SpawnRequest) -> Result<ExecChannels, BoxError> {
        let (out_tx, out_rx) = mpsc::channel(16);
        let (in_tx, mut in_rx) = mpsc::channel::<Input>(16);
        let info = SessionInfo {
            id: "s1".into(),
            command: req.cmd.join(" "),
            workdir: "/root".into(),
            tty: req.tty,
            created_ms: 0,
            last_activity_ms: 0,
            attached: true,
            pid: 2,
            exit_code: None,
        };
        match req.cmd[0].as_str() {
            "echo" => {
                let text = format!("{}\n", req.cmd[1..].join(" "));
                tokio::spawn(async move {
                    let _ = out_tx.send(Output::Stdout(text.into_bytes())).await;
                    let _ = out_tx.send(Output::Stderr(b"warn".to_vec())).await;
                    let _ = out_tx.send(Output::Exit(3)).await;
                });
            }
            "cat" => {
                let fake = self.clone();
                tokio::spawn(async move {
                    loop {
                        let Some(i) = in_rx.recv().await else {
                            fake.state().detached += 1;
                            return;
                        };
                        match i {
                            Input::Stdin(d) => {
                                let _ = out_tx.send(Output::Stdout(d)).await;
                            }
                            Input::StdinEof => break,
                            Input::Resize { cols, rows } => {
                                let _ = out_tx
                                    .send(Output::Stdout(format!("{cols}x{rows}").into_bytes()))
                                    .await;
                            }
                            Input::Signal(signal) => {
                                let _ = out_tx.send(Output::Exit(128 + signal)).await;
                                return;
                            }
                        }
                    }
                    let _ = out_tx.send(Output::Exit(0)).await;
                });
            }
            "sleep" => {
                let fake = self.clone();
                tokio::spawn(async move {
                    loop {
                        match in_rx.recv().await {
                            None => {
                                fake.state().detached += 1;
                                return;
                            }
                            Some(Input::Signal(signal)) => {
                                let _ = out_tx.send(Output::Exit(128 + signal)).await;
                                return;
                            }
                            Some(_) => {}
                        }
                    }
                });
            }
            "ignore-stdin" => {
                // Never reads its input: waits until the input queue is full,
                // then prints a lot and exits.
                tokio::spawn(async move {
                    while in_rx.len() < in_rx.max_capacity() {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                    for _ in 0..200 {
                        let _ = out_tx.send(Output::Stdout(b"x".to_vec())).await;
                    }
                    let _ = out_tx.send(Output::Exit(0)).await;
                });
            }
            other => return Err(BoxError::Spawn(format!("{other}: command not found"))),
        }
        Ok(ExecChannels {
            info,
            output: out_rx,
            input: in_tx,
            awake: None,
        })
    }
    /// Session `s1` is a TTY session that reports the first resize it gets,
    /// then exits; no other session exists.
    async fn attach(&self, _id: &str, session: &str) -> Result<ExecChannels, BoxError> {
        if session != "s1" {
            return Err(BoxError::NoSuchSession(session.into()));
        }
        let (out_tx, out_rx) = mpsc::channel(16);
        let (in_tx, mut in_rx) = mpsc::channel::<Input>(16);
        tokio::spawn(async move {
            while let Some(i) = in_rx.recv().await {
                if let Input::Resize { cols, rows } = i {
                    let size = format!("{cols}x{rows}").into_bytes();
                    let _ = out_tx.send(Output::Stdout(size)).await;
                    let _ = out_tx.send(Output::Exit(0)).await;
                    return;
                }
            }
        });
        Ok(ExecChannels {
            info: SessionInfo {
                id: "s1".into(),
                command: "bash".into(),
                workdir: "/root".into(),
                tty: true,
                created_ms: 0,
                last_activity_ms: 0,
                attached: true,
                pid: 2,
                exit_code: None,
            },
            output: out_rx,
            input: in_tx,
            awake: None,
        })
    }
    async fn sessions(&self, _id: &str) -> Result<Vec<SessionInfo>, BoxError> {
        let s = self.state();
        let exit_code = s
            .killed
            .iter()
            .find(|(id, signal)| id == "s1" && !s.ignored_signals.contains(signal))
            .map(|(_, signal)| 128 + signal);
        Ok(vec![SessionInfo {
            id: "s1".into(),
            command: "sleep 100".into(),
            workdir: "/root".into(),
            tty: false,
            created_ms: 1_700_000_000_000,
            last_activity_ms: 1_700_000_000_000,
            attached: false,
            pid: 2,
            exit_code,
        }])
    }
    async fn kill(&self, _id: &str, session: &str, signal: i32) -> Result<(), BoxError> {
        if session != "s1" {
            return Err(BoxError::NoSuchSession(session.into()));
        }
        self.state().killed.push((session.into(), signal));
        Ok(())
    }
    async fn checkpoint(&self, id: &str) -> Result<u64, BoxError> {
        let gated = self.state().checkpoint_gate.as_deref() == Some(id);
        if gated {
            let opened = self.gate.notified();
            self.state().gate_waiting = true;
            opened.await;
            self.state().gate_waiting = false;
        }
        let mut s = self.state();
        Ok(s.snapshot(id))
    }
    async fn volume_checkpoints(&self, id: &str) -> Result<Vec<VolumeCheckpoint>, BoxError> {
        let s = self.state();
        let mut ids: Vec<u64> = s
            .checkpoints
            .keys()
            .filter(|(b, _)| b == id)
            .map(|(_, n)| *n)
            .collect();
        ids.sort_unstable();
        Ok(ids
            .into_iter()
            .map(|n| VolumeCheckpoint {
                id: n,
                in_object_store: s.synced.contains(&(id.to_string(), n)),
            })
            .collect())
    }
    async fn restore(&self, spec: &BoxSpec, checkpoint: u64) -> Result<u64, BoxError> {
        let mut s = self.state();
        let content = s
            .checkpoints
            .get(&(spec.id.clone(), checkpoint))
            .cloned()
            .ok_or_else(|| BoxError::NotFound("no such volume checkpoint".into()))?;
        let safety = s.snapshot(&spec.id);
        s.disks.insert(spec.id.clone(), content);
        s.running.insert(spec.id.clone());
        Ok(safety)
    }
    async fn delete_checkpoint(&self, id: &str, checkpoint: u64) -> Result<(), BoxError> {
        self.state()
            .checkpoints
            .remove(&(id.to_string(), checkpoint));
        Ok(())
    }
    async fn collect_garbage(&self) -> Result<(), BoxError> {
        self.state().gc_runs += 1;
        Ok(())
    }
    fn env_socket(&self, _id: &str) -> Option<InboxSocket> {
        None
    }
    /// Every checkpoint of the box counts as in the object store after it.
    async fn sync(&self, id: &str) -> Result<(), BoxError> {
        let mut s = self.state();
        let ids: Vec<(String, u64)> = s
            .checkpoints
            .keys()
            .filter(|(b, _)| b == id)
            .cloned()
            .collect();
        s.synced.extend(ids);
        s.syncs += 1;
        Ok(())
    }
    async fn recover_disk(&self, _id: &str) -> Result<bool, BoxError> {
        Ok(false)
    }
    async fn release_storage(&self) -> Result<(), BoxError> {
        self.state().storage_released = true;
        Ok(())
    }
    async fn storage_gone(&self) {
        self.storage_death.notified().await
    }
}

impl FakeState {
    fn snapshot(&mut self, id: &str) -> u64 {
        let next = self
            .checkpoints
            .keys()
            .filter(|(b, _)| b == id)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
            + 1;
        let content = self.disks.get(id).cloned().unwrap_or_default();
        self.checkpoints.insert((id.to_string(), next), content);
        next
    }
}

/// A control layer over fresh fakes, its store in memory and bootstrapped
/// with an admin token of org `default`, as a test starts from.
pub struct FakeControl {
    pub control: crate::Control<FakeBoxes>,
    pub fake: FakeBoxes,
    pub admin: crate::Caller,
    pub admin_token: String,
}

pub async fn fake_control() -> FakeControl {
    let store = crate::Store::open_in_memory().expect("an in-memory store");
    let admin_token = crate::new_token();
    store
        .bootstrap(crate::hash_token(&admin_token), crate::time::now())
        .await
        .expect("bootstrap");
    let fake = FakeBoxes::default();
    FakeControl {
        control: crate::Control::new(store, fake.clone()),
        fake,
        admin: caller("default", true),
        admin_token,
    }
}

/// A caller of `org`.
pub fn caller(org: &str, is_admin: bool) -> crate::Caller {
    crate::Caller(crate::TokenOwner {
        org: org.into(),
        is_admin,
        limits: None,
    })
}
