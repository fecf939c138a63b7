//! `GET /v1/sprites` with `Accept: application/x-ndjson`: the list as a
//! stream. First one line per matching sprite, then a line whenever one is
//! created, destroyed (status `destroyed`), stopped, restored, woken or
//! recovered, and a heartbeat every [`HEARTBEAT`]. It ends when the client
//! goes or the daemon shuts down. Only the caller's organisation is seen.

use std::time::Duration;

use axum::response::Response;
use bothy_api::{OrgCounts, SpriteStateEvent};
use bothy_control::time::now;
use bothy_control::{
    BoxEvent, Boxes, Caller, Control, ControlResult, EventKind, ListQuery, SpriteView, StatusCounts,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use crate::error::ApiResult;
use crate::params::WatchQuery;
use crate::stream::{streamed, Chunks, NDJSON};

/// How often a quiet watch says it is alive, so that clients and proxies
/// keep the connection, and a client that left is noticed.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Sprites per page while reading the first lines.
const PAGE: usize = bothy_api::MAX_LIST_RESULTS;

/// Starts a watch. Errors found before the stream starts are API errors.
pub async fn start<B: Boxes>(
    control: Control<B>,
    caller: Caller,
    q: WatchQuery,
    shutdown: watch::Receiver<bool>,
    heartbeat: Duration,
) -> ApiResult<Response> {
    // Subscribed before the first read: nothing is missed in between.
    let events = control.events();
    let first = snapshot(&control, &caller, &q).await?;
    let (out, response) = streamed(NDJSON);
    let watcher = Watcher {
        control,
        caller,
        q,
        out,
    };
    tokio::spawn(watcher.follow(first, events, shutdown, heartbeat));
    Ok(response)
}

struct Watcher<B> {
    control: Control<B>,
    caller: Caller,
    q: WatchQuery,
    out: Chunks,
}

impl<B: Boxes> Watcher<B> {
    async fn follow(
        self,
        first: Vec<SpriteStateEvent>,
        mut events: broadcast::Receiver<BoxEvent>,
        mut shutdown: watch::Receiver<bool>,
        heartbeat: Duration,
    ) {
        if !self.send_all(first).await {
            return;
        }
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        // A watch slowed down by a slow client owes it no burst of heartbeats.
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let line = tokio::select! {
                () = self.out.closed() => return,
                _ = shutdown.changed() => return,
                _ = beat.tick() => self.heartbeat().await,
                ev = events.recv() => match ev {
                    Ok(ev) => self.line_for(&ev).await,
                    Err(RecvError::Lagged(_)) => {
                        // Events were lost: say where every sprite is now.
                        match snapshot(&self.control, &self.caller, &self.q).await {
                            Ok(lines) => {
                                if !self.send_all(lines).await {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "sprite watch: cannot re-read the list"),
                        }
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                },
            };
            if let Some(line) = line {
                if !self.out.line(&line).await {
                    return;
                }
            }
        }
    }

    async fn send_all(&self, lines: Vec<SpriteStateEvent>) -> bool {
        for line in &lines {
            if !self.out.line(line).await {
                return false;
            }
        }
        true
    }

    async fn counts(&self) -> Option<OrgCounts> {
        match self.control.counts(&self.caller).await {
            Ok(c) => Some(org_counts(&self.caller, c)),
            Err(e) => {
                tracing::warn!(error = %e, "sprite watch: cannot count the sprites");
                None
            }
        }
    }

    async fn heartbeat(&self) -> Option<SpriteStateEvent> {
        Some(SpriteStateEvent {
            kind: Some("heartbeat".into()),
            name: None,
            status: None,
            running_version: None,
            last_running_at: None,
            last_warming_at: None,
            timestamp: now(),
            org: self.counts().await?,
        })
    }

    /// The line an event makes, if it concerns a watched sprite and changes
    /// its state.
    async fn line_for(&self, ev: &BoxEvent) -> Option<SpriteStateEvent> {
        if ev.org != self.caller.org() || !ev.name.starts_with(&self.q.prefix) {
            return None;
        }
        match ev.kind {
            EventKind::Checkpointed => None,
            EventKind::Gone => Some(SpriteStateEvent {
                kind: None,
                name: Some(ev.name.clone()),
                status: Some("destroyed".into()),
                running_version: None,
                last_running_at: None,
                last_warming_at: None,
                timestamp: now(),
                org: self.counts().await?,
            }),
            EventKind::Created | EventKind::Ready | EventKind::Restored | EventKind::Stopped => {
                // The name may be taken again by the time this runs: only the
                // box the event is about counts.
                let row = self.control.sprite(&self.caller, &ev.name).await.ok()?;
                if row.id != ev.box_id {
                    return None;
                }
                let view = self.control.view(row).await;
                Some(sprite_line(&view, self.counts().await?))
            }
        }
    }
}

/// One line per matching sprite, as they are now.
async fn snapshot<B: Boxes>(
    control: &Control<B>,
    caller: &Caller,
    q: &WatchQuery,
) -> ControlResult<Vec<SpriteStateEvent>> {
    let mut lines = Vec::new();
    let mut after = None;
    loop {
        let room = q
            .max
            .map_or(PAGE, |max| max.saturating_sub(lines.len()).min(PAGE));
        if room == 0 {
            return Ok(lines);
        }
        let page = control
            .list(
                caller,
                ListQuery {
                    prefix: q.prefix.clone(),
                    limit: room,
                    after,
                },
            )
            .await?;
        let counts = org_counts(
            caller,
            StatusCounts {
                running: page.running,
                warm: page.warm,
                cold: page.cold,
            },
        );
        lines.extend(page.sprites.iter().map(|v| sprite_line(v, counts.clone())));
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(lines),
        }
    }
}

fn sprite_line(view: &SpriteView, org: OrgCounts) -> SpriteStateEvent {
    SpriteStateEvent {
        kind: None,
        name: Some(view.row.name.clone()),
        status: Some(view.status.as_str().into()),
        running_version: None,
        last_running_at: view.row.last_running_at.clone(),
        last_warming_at: None,
        timestamp: now(),
        org,
    }
}

fn org_counts(caller: &Caller, c: StatusCounts) -> OrgCounts {
    OrgCounts {
        name: caller.org().to_string(),
        running: c.running,
        warm: c.warm,
        cold: c.cold,
        running_limit: None,
        warm_limit: None,
    }
}
