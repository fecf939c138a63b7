//! The resources policy against the in-memory fake of the boxes: a memory
//! limit is validated, admitted, applied to the running box and kept.

use bothy_api::CreateSpriteRequest;
use bothy_control::testing::FakeBoxes;
use bothy_control::{hash_token, new_token, Caller, Control, ControlError, Store, TokenOwner};

#[tokio::test]
async fn a_memory_limit_is_applied_at_once_and_kept() {
    let store = Store::open_in_memory().expect("store");
    store
        .bootstrap(hash_token(&new_token()), bothy_control::time::now())
        .await
        .expect("bootstrap");
    let fake = FakeBoxes::default();
    let c = Control::new(store, fake.clone());
    let admin = Caller(TokenOwner {
        org: "default".into(),
        is_admin: true,
    });
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
    let other = Caller(TokenOwner {
        org: "acme".into(),
        is_admin: false,
    });
    assert!(matches!(
        c.set_memory_policy(&other, "dev", Some(512)).await,
        Err(ControlError::NotFound(_))
    ));
}
