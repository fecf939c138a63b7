//! The chunk store against a real S3 server (moto on loopback).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bothy_store::testing::S3Server;
use bothy_store::{ChunkStore, ObjectBlobs, RetryPolicy, StoreError, StoreUrl};
use bytes::Bytes;

fn store(server: &S3Server, retry: RetryPolicy) -> ChunkStore {
    let os = server.object_store().expect("client for the test server");
    ChunkStore::new(Arc::new(ObjectBlobs::new(os)), retry)
}

#[tokio::test]
async fn chunks_and_objects_round_trip_through_s3() {
    let server = S3Server::start().expect("moto server");
    let store = store(&server, RetryPolicy::fast());
    let a = store.put(b"alpha").await.unwrap();
    let big = vec![9u8; 3 << 20];
    let b = store.put(&big).await.unwrap();
    assert_eq!(store.put(b"alpha").await.unwrap(), a, "idempotent");
    assert_eq!(&store.get(&a).await.unwrap()[..], b"alpha");
    assert_eq!(store.get(&b).await.unwrap().len(), big.len());
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(store.list().await.unwrap(), want);
    assert_eq!(server.count_objects("chunks").unwrap(), 2);

    store
        .put_object("maps/v/head/00000000000000000001", Bytes::from_static(b"m"))
        .await
        .unwrap();
    assert_eq!(
        store.list_objects("maps/v/head/").await.unwrap(),
        vec!["maps/v/head/00000000000000000001".to_string()]
    );
    assert_eq!(server.count_objects("maps").unwrap(), 1);
    assert_eq!(server.count_objects("").unwrap(), 3);

    store.delete(&a).await.unwrap();
    store.delete(&a).await.unwrap(); // deleting an absent object succeeds
    assert!(matches!(store.get(&a).await, Err(StoreError::NotFound(_))));
    assert!(!store.contains(&a).await.unwrap());
    assert!(matches!(
        store.get_object("maps/none").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(server.count_objects("chunks").unwrap(), 1);
}

#[tokio::test]
async fn corruption_in_s3_is_detected() {
    let server = S3Server::start().expect("moto server");
    let os = server.object_store().unwrap();
    let store = ChunkStore::new(Arc::new(ObjectBlobs::new(os.clone())), RetryPolicy::fast());
    let h = store.put(b"precious").await.unwrap();
    let path = object_store::path::Path::from(h.key());
    os.put(&path, Bytes::from_static(b"garbage").into())
        .await
        .unwrap();
    assert!(matches!(
        store.get(&h).await,
        Err(StoreError::Corrupt { .. })
    ));
}

/// Separate servers get separate buckets; objects never leak between tests.
#[tokio::test]
async fn each_server_has_its_own_empty_bucket() {
    let one = S3Server::start().unwrap();
    let two = S3Server::start().unwrap();
    assert_ne!(one.bucket(), two.bucket());
    assert_ne!(one.port(), two.port());
    store(&one, RetryPolicy::fast()).put(b"x").await.unwrap();
    assert_eq!(one.count_objects("").unwrap(), 1);
    assert_eq!(two.count_objects("").unwrap(), 0);
}

/// `StoreUrl::open` with credentials from the environment only, exactly as a
/// daemon started with `S3Server::env()` would see them.
#[tokio::test]
async fn store_url_opens_the_server_with_env_credentials() {
    let server = S3Server::start().unwrap();
    let url: StoreUrl = server.url().parse().unwrap();
    assert_eq!(url, server.store_url());
    // The test binary's other tests set the same values, never others, and
    // none read them concurrently in a way that a torn value could matter.
    for (k, v) in server.env() {
        std::env::set_var(k, v);
    }
    std::env::remove_var("AWS_ALLOW_HTTP");
    let store = ChunkStore::from_object_store(url.open().unwrap());
    let h = store.put(b"via url").await.unwrap();
    assert_eq!(&store.get(&h).await.unwrap()[..], b"via url");
    assert_eq!(server.count_objects("chunks").unwrap(), 1);
}

/// A stopped server is an error within the retry budget, not a hang.
#[tokio::test]
async fn a_stopped_server_fails_within_the_retry_budget() {
    let mut server = S3Server::start().unwrap();
    let url: StoreUrl = server.url().parse().unwrap();
    for (k, v) in server.env() {
        std::env::set_var(k, v);
    }
    let policy = RetryPolicy::default();
    let store = ChunkStore::new(Arc::new(ObjectBlobs::new(url.open().unwrap())), policy);
    store.put(b"before").await.unwrap();
    server.stop();

    let budget: Duration = (1..policy.max_attempts).map(|a| policy.delay(a)).sum();
    let started = Instant::now();
    let err = store.put(b"after").await.unwrap_err();
    let took = started.elapsed();
    assert!(
        err.is_transient(),
        "a refused connection is transient: {err}"
    );
    // The backoff sleeps plus a little for the failing connects themselves.
    assert!(
        took <= budget + Duration::from_secs(10),
        "gave up after {took:?}, budget {budget:?}: {err}"
    );
}
