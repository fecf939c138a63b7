//! What happens to boxes, as a stream any frontend can follow: the in-box
//! socket serves a box once it is ready and stops when it is gone; list
//! watchers are told of every change.
//!
//! Delivery is best effort and in order per subscriber: a subscriber that
//! falls behind by more than [`CAPACITY`] events is told it lagged
//! (`broadcast::error::RecvError::Lagged`) and should re-read the state.

use tokio::sync::broadcast;

/// Events kept for slow subscribers.
pub const CAPACITY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created (or forked) and running.
    Created,
    /// Running again: woken, restored, or recovered after a restart.
    Ready,
    /// Stopped; its disk is kept.
    Stopped,
    /// Destroyed: it and its disk are gone.
    Gone,
    /// Its disk went back to a checkpoint.
    Restored,
    /// A checkpoint of it was made.
    Checkpointed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Ready => "ready",
            Self::Stopped => "stopped",
            Self::Gone => "gone",
            Self::Restored => "restored",
            Self::Checkpointed => "checkpointed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxEvent {
    pub kind: EventKind,
    pub box_id: String,
    pub name: String,
    pub org: String,
    /// RFC 3339.
    pub at: String,
}

pub(crate) struct EventBus(broadcast::Sender<BoxEvent>);

impl EventBus {
    pub(crate) fn new() -> Self {
        Self(broadcast::channel(CAPACITY).0)
    }

    pub(crate) fn emit(&self, kind: EventKind, row: &crate::SpriteRow) {
        // No subscriber is not an error.
        let _ = self.0.send(BoxEvent {
            kind,
            box_id: row.id.clone(),
            name: row.name.clone(),
            org: row.org.clone(),
            at: crate::time::now(),
        });
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<BoxEvent> {
        self.0.subscribe()
    }
}

impl<B: crate::Boxes> crate::Control<B> {
    /// Every event from now on.
    pub fn events(&self) -> broadcast::Receiver<BoxEvent> {
        self.inner.events.subscribe()
    }

    pub(crate) fn emit(&self, kind: EventKind, row: &crate::SpriteRow) {
        // The warm pool's boxes are nobody's until taken.
        if !crate::pool::is_pooled(row) {
            self.inner.events.emit(kind, row);
        }
    }
}
