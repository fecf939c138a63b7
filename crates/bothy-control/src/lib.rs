//! The control layer of bothy: everything the frontends (the HTTP API, the
//! in-box socket, later MCP and the edge) ask of the boxes goes through a
//! [`Control`], and nothing here knows about HTTP.
//!
//! It owns:
//! - the box lifecycle: create (and fork), destroy, wake, stop, restart,
//!   restore, recovery after a crash ([`lifecycle`](crate::Control::create)),
//!   and health checks;
//! - one async lock per box, so operations on a box never interleave
//!   ([`locks`]);
//! - checkpoints: records in the state database, data in the volume layer;
//! - background jobs: garbage collection, object-store barriers, shipping
//!   the state database ([`jobs`]);
//! - an event stream of what happens to boxes ([`events`]);
//! - the state store (SQLite) and its replication to the object store
//!   ([`state`]);
//! - its own error enum, whose variants are the kinds of failure
//!   ([`ControlError`]).
//!
//! Below it, [`Boxes`] is what control needs of the machinery: the real one
//! drives the runtime and the in-box agent; [`testing`] has an in-memory fake
//! (feature `testing`) so the control logic is tested without root.

pub mod admission;
mod boxes;
mod checkpoints;
mod daemon;
pub mod datadir;
pub mod edge;
mod error;
pub mod events;
pub mod exec;
pub mod fs;
mod health;
pub mod jobs;
mod lifecycle;
mod locks;
pub mod policy;
pub mod pool;
pub mod ports;
pub mod quotas;
mod resources;
pub mod services;
pub mod sleep;
pub mod state;
pub mod tasks;
pub mod time;
mod tokens;
mod usage;
pub use usage::{Metrics, SpriteMetrics};
pub mod validate;

#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use tokio::sync::watch;

pub use boxes::{
    BoxError, Boxes, DiskSource, ExecChannels, InboxSocket, Power, RealBoxes, AGENT_TIMEOUT,
};
pub use checkpoints::CheckpointListQuery;
pub use daemon::{open, open_with, ControlConfig, OpenError, STATE_DB};
pub use error::{ControlError, ControlResult};
pub use events::{BoxEvent, EventKind};
pub use health::Health;
pub use lifecycle::{spec_of, ListQuery, SpriteListing, SpriteStatus, SpriteView, StatusCounts};
pub use state::{
    CheckpointRow, NewToken, Quota, Revoked, RowState, SpriteRow, Store, TokenOwner, TokenRow,
    Usage,
};
pub use tokens::{hash_token, new_token, Caller, TOKEN_PREFIX};

/// A handle on the control layer; cheap to clone.
pub struct Control<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Control<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<B> {
    store: Store,
    boxes: B,
    locks: locks::BoxLocks,
    events: events::EventBus,
    jobs: jobs::Jobs,
    /// Flips to true once at shutdown: background jobs end.
    shutdown: watch::Sender<bool>,
    admission: std::sync::Mutex<admission::Admission>,
    /// Held from an admission check to the insert of the row it admitted,
    /// so two creates cannot both take the host's last room.
    admitting: tokio::sync::Mutex<()>,
    /// Held by a create of a limited token from its count to its insert.
    limited_creates: tokio::sync::Mutex<()>,
    /// Attached clients and CPU use of every box (see sleep.rs).
    activity: Arc<sleep::Activity>,
    default_sleep: std::sync::Mutex<sleep::SleepPolicy>,
    tasks: tasks::Tasks,
    /// How many ready boxes the warm pool keeps, and what wakes its refill.
    pool_size: std::sync::atomic::AtomicUsize,
    pool_wake: tokio::sync::Notify,
    /// The data dir's daemon lock, held as long as this control layer.
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl<B: Boxes> Control<B> {
    /// Control over `boxes` with state in `store`. Background jobs are
    /// started separately ([`Control::start_jobs`]).
    pub fn new(store: Store, boxes: B) -> Self {
        Self::holding(store, boxes, None)
    }

    /// Like [`Control::new`], holding the data dir's daemon lock.
    pub fn holding(store: Store, boxes: B, lock: Option<nix::fcntl::Flock<std::fs::File>>) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                store,
                boxes,
                locks: locks::BoxLocks::default(),
                events: events::EventBus::new(),
                jobs: jobs::Jobs::default(),
                shutdown,
                _lock: lock,
                admission: std::sync::Mutex::new(admission::Admission::default()),
                admitting: tokio::sync::Mutex::new(()),
                limited_creates: tokio::sync::Mutex::new(()),
                activity: Arc::default(),
                default_sleep: std::sync::Mutex::default(),
                tasks: tasks::Tasks::default(),
                pool_size: std::sync::atomic::AtomicUsize::new(0),
                pool_wake: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Sets the host capacity and overcommit new boxes are admitted against.
    pub fn set_admission(&self, admission: admission::Admission) {
        *self
            .inner
            .admission
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = admission;
    }

    fn admission(&self) -> admission::Admission {
        *self
            .inner
            .admission
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn boxes(&self) -> &B {
        &self.inner.boxes
    }

    /// Fires once the control layer is shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Where box `id`'s own control socket is served, if boxes have one.
    pub fn env_socket(&self, id: &str) -> Option<InboxSocket> {
        self.inner.boxes.env_socket(id)
    }
}
