//! Per-organisation quotas against the in-memory fake of the boxes: who may
//! read and set them, and that each one refuses what would pass it while
//! changing nothing.

use bothy_api::CreateSpriteRequest;
use bothy_control::testing::{caller, fake_control, FakeBoxes};
use bothy_control::{Caller, Control, ControlError, Quota};

async fn control() -> (Control<FakeBoxes>, Caller, Caller) {
    let f = fake_control().await;
    f.control
        .mint_token(&f.admin, "acme", &bothy_api::CreateTokenRequest::default())
        .await
        .expect("acme exists once it has a token");
    (f.control, f.admin, caller("acme", false))
}

fn request(name: &str, storage_gb: u64) -> CreateSpriteRequest {
    CreateSpriteRequest {
        name: name.into(),
        config: Some(bothy_api::SpriteConfig {
            ram_mb: Some(256),
            cpus: Some(1),
            storage_gb: Some(storage_gb),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn only_an_admin_sets_quotas_and_members_read_their_own() {
    let (c, admin, acme) = control().await;
    let q = Quota {
        max_boxes: Some(2),
        ..Quota::default()
    };
    assert!(matches!(
        c.set_quota(&acme, "acme", q).await,
        Err(ControlError::Forbidden(_))
    ));
    let (set, usage) = c.set_quota(&admin, "acme", q).await.expect("admin sets");
    assert_eq!(set, q);
    assert_eq!(usage.boxes, 0);
    let (read, _) = c.quota(&acme, "acme").await.expect("a member reads");
    assert_eq!(read, q);
    assert!(matches!(
        c.quota(&acme, "default").await,
        Err(ControlError::Forbidden(_))
    ));
    assert!(matches!(
        c.set_quota(&admin, "nobody", q).await,
        Err(ControlError::NotFound(_))
    ));
    let too_big = Quota {
        max_checkpoints: Some(u64::MAX),
        ..Quota::default()
    };
    assert!(matches!(
        c.set_quota(&admin, "acme", too_big).await,
        Err(ControlError::Invalid { .. })
    ));
    assert_eq!(
        c.quota(&admin, "acme").await.expect("read").0,
        q,
        "unchanged"
    );
}

#[tokio::test]
async fn box_and_storage_quotas_refuse_a_create_and_change_nothing() {
    let (c, admin, acme) = control().await;
    c.set_quota(
        &admin,
        "acme",
        Quota {
            max_boxes: Some(2),
            max_storage_gb: Some(30),
            ..Quota::default()
        },
    )
    .await
    .expect("set");
    c.create(&acme, request("a", 10)).await.expect("first");
    let e = c
        .create(&acme, request("b", 25))
        .await
        .expect_err("35 GiB of 30");
    assert!(
        matches!(&e, ControlError::QuotaExceeded(m) if m.contains("max_storage_gb")),
        "{e:?}"
    );
    c.create(&acme, request("b", 20))
        .await
        .expect("30 GiB fits");
    let e = c
        .create(&acme, request("c", 1))
        .await
        .expect_err("a third box");
    assert!(
        matches!(&e, ControlError::QuotaExceeded(m) if m.contains("max_boxes")),
        "{e:?}"
    );
    let names: Vec<String> = c
        .store()
        .all_sprites()
        .await
        .expect("list")
        .into_iter()
        .filter(|r| r.org == "acme")
        .map(|r| r.name)
        .collect();
    assert_eq!(names.len(), 2, "refused creates made nothing: {names:?}");
    // Other organisations are not held to acme's quota.
    c.create(&admin, request("elsewhere", 100))
        .await
        .expect("default org");
    // Destroying makes room again.
    let a = c.sprite(&acme, "a").await.expect("a");
    c.destroy(a).await.expect("destroy");
    c.create(&acme, request("c", 1)).await.expect("room again");
}

#[tokio::test]
async fn the_checkpoint_quota_counts_what_users_made() {
    let (c, admin, acme) = control().await;
    c.set_quota(
        &admin,
        "acme",
        Quota {
            max_checkpoints: Some(2),
            ..Quota::default()
        },
    )
    .await
    .expect("set");
    let row = c
        .create(&acme, request("dev", 1))
        .await
        .expect("create")
        .row;
    c.checkpoint(&row, None, false).await.expect("v1");
    c.checkpoint(&row, None, false).await.expect("v2");
    let e = c.checkpoint(&row, None, false).await.expect_err("a third");
    assert!(
        matches!(&e, ControlError::QuotaExceeded(m) if m.contains("max_checkpoints")),
        "{e:?}"
    );
    let (_, usage) = c.quota(&acme, "acme").await.expect("read");
    assert_eq!(usage.checkpoints, 2, "the refused checkpoint was not made");
}
