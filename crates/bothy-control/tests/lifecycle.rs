//! Control logic against the in-memory fake of the boxes: recovery after a
//! restart, error kinds, locks, background jobs, events. No root, no boxes:
//! this tier runs in seconds.

use std::collections::HashSet;
use std::time::Duration;

use bothy_api::{CheckpointRef, CreateSpriteRequest, CreateTokenRequest};
use bothy_control::testing::FakeBoxes;
use bothy_control::{
    Caller, CheckpointListQuery, Control, ControlError, EventKind, RowState, SpriteRow,
    SpriteStatus, TokenOwner,
};

struct Harness {
    control: Control<FakeBoxes>,
    fake: FakeBoxes,
    caller: Caller,
}

async fn harness() -> Harness {
    let f = bothy_control::testing::fake_control().await;
    Harness {
        control: f.control,
        fake: f.fake,
        caller: f.admin,
    }
}

impl Harness {
    async fn create(&self, name: &str) -> SpriteRow {
        self.control
            .create(
                &self.caller,
                CreateSpriteRequest {
                    name: name.into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
            .row
    }
}

impl Harness {
    /// A sprite whose create has not finished.
    async fn creating(&self, id: &str) -> SpriteRow {
        let creating = row(id, "creating", RowState::Creating);
        self.control
            .store()
            .insert_sprite(creating.clone())
            .await
            .expect("insert");
        creating
    }
}

/// Waits for `cond` with a deadline (the fake has no notification to wait on).
async fn wait_until(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn row(id: &str, name: &str, state: RowState) -> SpriteRow {
    SpriteRow {
        id: id.into(),
        org: "default".into(),
        name: name.into(),
        ram_mb: 512,
        cpus: 1,
        storage_gb: 1,
        url_auth: "sprite".into(),
        url_private_access: None,
        labels: vec![],
        state,
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
        last_running_at: None,
        nesting: false,
        memory_policy_mb: None,
    }
}

#[tokio::test]
async fn recovery_rolls_back_finishes_and_restarts() {
    let h = harness().await;
    for (id, name, state) in [
        ("b000000000001", "half-made", RowState::Creating),
        ("b000000000002", "half-gone", RowState::Destroying),
        ("b000000000003", "ready", RowState::Ready),
        ("b000000000004", "broken", RowState::Ready),
    ] {
        h.control
            .store()
            .insert_sprite(row(id, name, state))
            .await
            .expect("insert");
        h.fake.state().volumes.insert(id.into());
    }
    h.fake
        .state()
        .broken
        .insert("broken".into(), "volume is corrupt".into());
    let mut events = h.control.events();
    h.control.recover().await.expect("recover");

    {
        let s = h.fake.state();
        assert_eq!(
            s.volumes,
            HashSet::from(["b000000000003".to_string(), "b000000000004".to_string()])
        );
        assert_eq!(s.running, HashSet::from(["b000000000003".to_string()]));
    }
    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        seen.push((ev.kind, ev.name));
    }
    assert!(
        seen.contains(&(EventKind::Gone, "half-made".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(EventKind::Gone, "half-gone".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(EventKind::Ready, "ready".into())),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|(_, n)| n == "broken"), "{seen:?}");

    let broken = h.control.sprite(&h.caller, "broken").await.expect("row");
    assert_eq!(
        h.control.view(broken.clone()).await.status,
        SpriteStatus::Cold
    );
    // Using a box that cannot start is "unavailable", with the reason.
    match h.control.sessions(&broken).await {
        Err(ControlError::Unavailable(m)) => assert!(m.contains("volume is corrupt"), "{m}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    let nobody = Caller(TokenOwner {
        org: "default".into(),
        is_admin: false,
        limits: None,
    });
    assert!(matches!(
        h.control.drain(&nobody).await,
        Err(ControlError::Forbidden(_))
    ));
    assert!(
        !h.fake.state().running.is_empty(),
        "a refused drain stops nothing"
    );
    assert_eq!(
        h.control.drain(&h.caller).await.expect("drain"),
        ["broken", "ready"]
    );
    assert!(h.fake.state().running.is_empty());
    assert!(h.fake.state().storage_released);
}

#[tokio::test]
async fn errors_keep_their_kind() {
    let h = harness().await;
    let dev = h.create("dev").await;
    let kind = |e: ControlError| match e {
        ControlError::NotFound(_) => "not_found",
        ControlError::Conflict(_) => "conflict",
        ControlError::Busy(_) => "busy",
        ControlError::Invalid { .. } => "invalid",
        other => panic!("unexpected {other:?}"),
    };
    let again = h
        .control
        .create(
            &h.caller,
            CreateSpriteRequest {
                name: "dev".into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("taken");
    assert_eq!(kind(again), "conflict");
    assert_eq!(
        kind(h.control.sprite(&h.caller, "nope").await.expect_err("x")),
        "not_found"
    );
    for id in ["v9", "v1"] {
        assert_eq!(
            kind(h.control.checkpoint_named(&dev, id).await.expect_err(id)),
            "not_found"
        );
        assert_eq!(
            kind(h.control.restore(&dev, id).await.expect_err(id)),
            "not_found"
        );
        assert_eq!(
            kind(h.control.delete_checkpoint(&dev, id).await.expect_err(id)),
            "not_found"
        );
    }
    assert_eq!(
        kind(h.control.restore(&dev, "9").await.expect_err("bad id")),
        "invalid"
    );
    let fork = h
        .control
        .create(
            &h.caller,
            CreateSpriteRequest {
                name: "fork".into(),
                from_checkpoint: Some(CheckpointRef {
                    sprite: "dev".into(),
                    checkpoint: "v3".into(),
                }),
                ..Default::default()
            },
        )
        .await
        .expect_err("no such checkpoint");
    assert_eq!(kind(fork), "not_found");
    assert!(
        h.control.sprite(&h.caller, "fork").await.is_err(),
        "a failed fork leaves nothing"
    );
    match h.control.attach(&dev, "nope").await {
        Err(e) => assert_eq!(kind(e), "not_found"),
        Ok(_) => panic!("attached to a session that does not exist"),
    }
    assert_eq!(
        kind(h.control.session(&dev, "nope").await.expect_err("session")),
        "not_found"
    );
    // A sprite still being created is busy, not unavailable.
    let creating = row("b00000000000a", "creating", RowState::Creating);
    h.control
        .store()
        .insert_sprite(creating.clone())
        .await
        .expect("insert");
    assert_eq!(
        kind(
            h.control
                .checkpoint(&creating, None, false)
                .await
                .expect_err("busy")
        ),
        "busy"
    );
    // Nothing above left a checkpoint behind.
    assert!(h
        .control
        .checkpoints(
            &dev,
            &CheckpointListQuery {
                include_auto: true,
                history: None
            }
        )
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn other_organisations_see_nothing() {
    let h = harness().await;
    h.create("dev").await;
    let other = Caller(TokenOwner {
        org: "acme".into(),
        is_admin: false,
        limits: None,
    });
    assert!(matches!(
        h.control.sprite(&other, "dev").await,
        Err(ControlError::NotFound(_))
    ));
    assert!(matches!(
        h.control
            .mint_token(&other, "default", &CreateTokenRequest::default())
            .await,
        Err(ControlError::Forbidden(_))
    ));
    let token = h
        .control
        .mint_token(&h.caller, "acme", &CreateTokenRequest::default())
        .await
        .expect("admin mints for any org");
    assert_eq!(
        h.control
            .authenticate(&token.token)
            .await
            .expect("known")
            .org(),
        "acme"
    );
    assert!(matches!(
        h.control.authenticate("bothy_unknown").await,
        Err(ControlError::Unauthorized(_))
    ));
}

/// Garbage is collected on a period too, not only after deletes, and the
/// periodic collection ends at shutdown.
#[tokio::test]
async fn garbage_is_collected_periodically_until_shutdown() {
    let h = harness().await;
    let tasks = h.control.start_jobs(Duration::from_millis(20), None);
    let fake = h.fake.clone();
    wait_until(move || fake.state().gc_runs >= 3).await;
    h.control.shutdown(false).await;
    let at_shutdown = h.fake.state().gc_runs;
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("the periodic collection ends at shutdown")
            .expect("the periodic collection did not panic");
    }
    // At most the collection under way at shutdown ended after it.
    let after = h.fake.state().gc_runs;
    assert!(
        after <= at_shutdown + 1,
        "collections went on after shutdown: {at_shutdown} -> {after}"
    );
}

#[tokio::test]
async fn shutdown_leaves_boxes_running_unless_asked() {
    let h = harness().await;
    let dev = h.create("dev").await;
    h.control.shutdown(false).await;
    assert!(h.fake.state().running.contains(&dev.id));
    h.control.shutdown(true).await;
    assert!(h.fake.state().running.is_empty());
}

#[tokio::test]
async fn a_slow_operation_on_one_box_does_not_hold_up_another() {
    let h = harness().await;
    let slow = h.create("slow").await;
    let fast = h.create("fast").await;
    h.fake.state().checkpoint_gate = Some(slow.id.clone());
    let control = h.control.clone();
    let slow_row = slow.clone();
    let pending = tokio::spawn(async move { control.checkpoint(&slow_row, None, false).await });
    let fake = h.fake.clone();
    wait_until(move || fake.state().gate_waiting).await;
    // While the slow box's checkpoint hangs: the other box is fully usable.
    h.control
        .checkpoint(&fast, None, false)
        .await
        .expect("other box");
    h.control
        .sessions(&fast)
        .await
        .expect("other box's sessions");
    h.create("third").await;
    let third = h.control.sprite(&h.caller, "third").await.expect("row");
    h.control.destroy(third).await.expect("destroy");
    assert_eq!(
        h.control.view(slow.clone()).await.status,
        SpriteStatus::Running
    );
    h.fake.open_gate();
    pending
        .await
        .expect("join")
        .expect("slow checkpoint finishes");
}

#[tokio::test]
async fn a_durable_checkpoint_and_the_barriers_wait_for_the_object_store() {
    let h = harness().await;
    let dev = h.create("dev").await;
    let made = h
        .control
        .checkpoint(&dev, Some("keep".into()), true)
        .await
        .expect("durable checkpoint");
    assert!(made.in_object_store, "{made:?}");
    let listed = h
        .control
        .checkpoints(&dev, &CheckpointListQuery::default())
        .await
        .expect("list");
    assert!(listed.iter().all(|c| c.in_object_store), "{listed:?}");
    assert!(h.fake.state().syncs >= 1);

    // The daemon-wide barrier covers what the caller sees, nothing else.
    h.control
        .mint_token(&h.caller, "acme", &CreateTokenRequest::default())
        .await
        .expect("an admin makes the org");
    let acme = Caller(TokenOwner {
        org: "acme".into(),
        is_admin: false,
        limits: None,
    });
    h.control
        .create(
            &acme,
            CreateSpriteRequest {
                name: "theirs".into(),
                ..Default::default()
            },
        )
        .await
        .expect("create in acme");
    assert_eq!(h.control.sync_all(&acme).await.expect("sync"), ["theirs"]);
    let mut all = h.control.sync_all(&h.caller).await.expect("sync");
    all.sort();
    assert_eq!(
        all,
        ["dev", "theirs"],
        "an admin's barrier covers every org"
    );
    // A sprite still being created cannot be synced yet.
    let creating = row("b00000000000b", "creating", RowState::Creating);
    h.control
        .store()
        .insert_sprite(creating.clone())
        .await
        .expect("insert");
    assert!(matches!(
        h.control.sync_sprite(&creating).await,
        Err(ControlError::Busy(_))
    ));
}

#[tokio::test]
async fn restart_stops_and_boots_the_box_on_its_disk_under_its_lock() {
    let h = harness().await;
    let dev = h.create("dev").await;
    h.fake
        .state()
        .disks
        .insert(dev.id.clone(), b"kept".to_vec());
    let mut events = h.control.events();
    h.control.restart(&dev).await.expect("restart");
    {
        let s = h.fake.state();
        assert_eq!(s.stops, [dev.id.as_str()]);
        assert!(s.running.contains(&dev.id));
        assert_eq!(s.disks.get(&dev.id).map(Vec::as_slice), Some(&b"kept"[..]));
    }
    let kinds: Vec<EventKind> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EventKind::Stopped, EventKind::Ready]);

    // While a checkpoint holds the box's lock, the restart waits for it.
    h.fake.state().checkpoint_gate = Some(dev.id.clone());
    let control = h.control.clone();
    let row = dev.clone();
    let checkpoint = tokio::spawn(async move { control.checkpoint(&row, None, false).await });
    let fake = h.fake.clone();
    wait_until(move || fake.state().gate_waiting).await;
    let control = h.control.clone();
    let row = dev.clone();
    let mut restart = tokio::spawn(async move { control.restart(&row).await });
    // The restart cannot finish while the checkpoint holds the lock (without
    // the lock, the fake's stop and start take microseconds).
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut restart)
            .await
            .is_err(),
        "the restart did not wait for the checkpoint"
    );
    assert_eq!(h.fake.state().stops.len(), 1);
    h.fake.open_gate();
    checkpoint.await.expect("join").expect("checkpoint");
    restart.await.expect("join").expect("restart");
    assert_eq!(h.fake.state().stops.len(), 2);
}

#[tokio::test]
async fn restart_failures_keep_their_kind() {
    let h = harness().await;
    let dev = h.create("dev").await;
    h.fake
        .state()
        .broken
        .insert("dev".into(), "the volume is corrupt".into());
    match h.control.restart(&dev).await {
        Err(ControlError::Unavailable(m)) => assert!(m.contains("the volume is corrupt"), "{m}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    let creating = h.creating("b00000000000c").await;
    assert!(matches!(
        h.control.restart(&creating).await,
        Err(ControlError::Busy(_))
    ));
    // A sprite destroyed since the caller read its row is not booted again.
    let gone = h.create("gone").await;
    h.control.destroy(gone.clone()).await.expect("destroy");
    assert!(matches!(
        h.control.restart(&gone).await,
        Err(ControlError::NotFound(_))
    ));
    assert!(!h.fake.state().running.contains(&gone.id));
}

#[tokio::test]
async fn check_reports_without_waking() {
    let h = harness().await;
    let dev = h.create("dev").await;
    let healthy = h.control.check(&dev).await.expect("check");
    assert_eq!(healthy.problem, None);
    assert!(healthy.checked_at.ends_with('Z'));

    h.fake.state().running.clear();
    let stopped = h.control.check(&dev).await.expect("check");
    assert!(
        stopped
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("not running")),
        "{stopped:?}"
    );
    assert!(h.fake.state().running.is_empty(), "a check starts nothing");
}

#[tokio::test]
async fn an_agent_that_does_not_answer_is_unhealthy() {
    let h = harness().await;
    let dev = h.create("dev").await;
    h.fake.state().agent_wedged.insert(dev.id.clone());
    let wedged = h.control.check(&dev).await.expect("check");
    assert!(
        wedged
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("did not answer")),
        "{wedged:?}"
    );
}

#[tokio::test]
async fn waiting_for_a_session_sees_its_end_or_the_deadline() {
    use bothy_control::exec::SessionEnd;
    let h = harness().await;
    let dev = h.create("dev").await;
    let soon = || tokio::time::Instant::now() + Duration::from_millis(50);
    assert_eq!(
        h.control
            .wait_session_end(&dev, "s1", soon())
            .await
            .expect("wait"),
        SessionEnd::Running
    );
    assert_eq!(
        h.control
            .wait_session_end(&dev, "other", soon())
            .await
            .expect("wait"),
        SessionEnd::Gone
    );
    h.control.signal_session(&dev, "s1", 9).await.expect("kill");
    assert_eq!(
        h.control
            .wait_session_end(&dev, "s1", soon())
            .await
            .expect("wait"),
        SessionEnd::Exited(137)
    );
}

#[tokio::test]
async fn counts_cover_the_whole_organisation() {
    let h = harness().await;
    let a = h.create("a").await;
    h.create("b").await;
    h.fake.state().running.remove(&a.id);
    let counts = h.control.counts(&h.caller).await.expect("counts");
    assert_eq!((counts.running, counts.warm, counts.cold), (1, 0, 1));
    let other = Caller(TokenOwner {
        org: "acme".into(),
        is_admin: false,
        limits: None,
    });
    assert_eq!(
        h.control.counts(&other).await.expect("counts"),
        bothy_control::StatusCounts::default()
    );
}
