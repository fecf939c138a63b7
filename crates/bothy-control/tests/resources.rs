//! The resources policy against the in-memory fake of the boxes: a memory
//! limit is validated, admitted, applied to the running box and kept.

use bothy_api::CreateSpriteRequest;
use bothy_control::testing::{caller, fake_control};
use bothy_control::ControlError;

#[tokio::test]
async fn a_memory_limit_is_applied_at_once_and_kept() {
    let f = fake_control().await;
    let (c, fake, admin) = (f.control, f.fake, f.admin);
    let row = c
        .create(
            &admin,
            CreateSpriteRequest {
                name: "dev".into(),
                config: Some(bothy_api::SpriteConfig {
                    ram_mb: Some(1024),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("create")
        .row;
    assert_eq!(c.memory_policy(&admin, "dev").await.expect("get"), None);

    c.set_memory_policy(&admin, "dev", Some(512))
        .await
        .expect("set");
    assert_eq!(
        fake.state().memory_limits,
        [(row.id.clone(), 512)],
        "applied to the running box"
    );
    let kept = c.sprite(&admin, "dev").await.expect("row");
    assert_eq!(kept.memory_mb(), 512, "the next boot uses it too");
    assert_eq!(kept.ram_mb, 1024, "the create-time limit is remembered");

    for bad in [64, 1 << 20] {
        let e = c
            .set_memory_policy(&admin, "dev", Some(bad))
            .await
            .expect_err("out of range");
        assert!(matches!(e, ControlError::Invalid { .. }), "{bad}: {e:?}");
    }
    assert_eq!(
        c.memory_policy(&admin, "dev").await.expect("get"),
        Some(512)
    );

    c.set_memory_policy(&admin, "dev", None)
        .await
        .expect("clear");
    assert_eq!(c.memory_policy(&admin, "dev").await.expect("get"), None);
    assert_eq!(
        fake.state().memory_limits.last(),
        Some(&(row.id.clone(), 1024)),
        "back to the create-time limit"
    );
    let other = caller("acme", false);
    assert!(matches!(
        c.set_memory_policy(&other, "dev", Some(512)).await,
        Err(ControlError::NotFound(_))
    ));
}
