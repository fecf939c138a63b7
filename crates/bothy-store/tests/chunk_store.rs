use std::sync::Arc;
use std::time::Duration;

use bothy_store::{
    Blobs, ChunkHash, ChunkStore, FaultPlan, FaultyBlobs, ObjectBlobs, RetryPolicy, StoreError,
};
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

fn memory() -> (Arc<dyn Blobs>, ChunkStore) {
    let blobs: Arc<dyn Blobs> = Arc::new(ObjectBlobs::new(Arc::new(InMemory::new())));
    (blobs.clone(), ChunkStore::new(blobs, RetryPolicy::fast()))
}

#[tokio::test]
async fn put_get_list_delete_in_memory() {
    let (_, store) = memory();
    let a = store.put(b"alpha").await.unwrap();
    let b = store.put(&vec![7u8; 1 << 20]).await.unwrap();
    assert_eq!(a, ChunkHash::of(b"alpha"));
    assert_eq!(&store.get(&a).await.unwrap()[..], b"alpha");
    assert_eq!(store.get(&b).await.unwrap().len(), 1 << 20);
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(store.list().await.unwrap(), want);
    store.delete(&a).await.unwrap();
    store.delete(&a).await.unwrap(); // idempotent
    assert!(matches!(store.get(&a).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.list().await.unwrap(), vec![b]);
}

#[tokio::test]
async fn put_is_idempotent_and_skips_existing() {
    let mem: Arc<dyn Blobs> = Arc::new(ObjectBlobs::new(Arc::new(InMemory::new())));
    let faulty = Arc::new(FaultyBlobs::new(mem, FaultPlan::default()));
    let store = ChunkStore::new(faulty.clone(), RetryPolicy::fast());
    let h1 = store.put(b"same").await.unwrap();
    let h2 = store.put(b"same").await.unwrap();
    assert_eq!(h1, h2);
    assert_eq!(faulty.puts(), 1, "the second put must not upload again");
    assert_eq!(store.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn corruption_in_the_store_is_an_error() {
    let (blobs, store) = memory();
    let h = store.put(b"precious data").await.unwrap();
    let mut body = blobs.get(&h.key()).await.unwrap().to_vec();
    let last = body.len() - 1;
    body[last] ^= 1;
    blobs.put(&h.key(), Bytes::from(body)).await.unwrap();
    assert!(matches!(
        store.get(&h).await,
        Err(StoreError::Corrupt { .. })
    ));

    // An object swapped for another valid chunk is caught too.
    let other = store.put(b"other data").await.unwrap();
    let swapped = blobs.get(&other.key()).await.unwrap();
    blobs.put(&h.key(), swapped).await.unwrap();
    assert!(matches!(
        store.get(&h).await,
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn put_with_wrong_hash_is_refused() {
    let (_, store) = memory();
    let err = store
        .put_with_hash(ChunkHash::of(b"x"), b"y")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }));
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn works_on_the_local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::from_object_store(Arc::new(
        LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
    ));
    let h = store.put(b"on disk").await.unwrap();
    let hex = h.to_hex();
    assert!(dir
        .path()
        .join("chunks")
        .join(&hex[..2])
        .join(&hex[2..])
        .is_file());
    assert_eq!(&store.get(&h).await.unwrap()[..], b"on disk");
    store
        .put_object("maps/v/1", Bytes::from_static(b"m"))
        .await
        .unwrap();
    assert_eq!(
        store.list().await.unwrap(),
        vec![h],
        "non-chunk objects are not chunks"
    );
    assert_eq!(
        store.list_objects("maps").await.unwrap(),
        vec!["maps/v/1".to_string()]
    );
    assert!(store
        .put_object("chunks/ab/cd", Bytes::new())
        .await
        .is_err());
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let mem: Arc<dyn Blobs> = Arc::new(ObjectBlobs::new(Arc::new(InMemory::new())));
    let plan = FaultPlan {
        fail_first_puts: 3,
        fail_calls: vec![1],
        ..Default::default()
    };
    let faulty = Arc::new(FaultyBlobs::new(mem, plan));
    let store = ChunkStore::new(faulty.clone(), RetryPolicy::fast());
    let h = store.put(b"eventually").await.unwrap();
    assert_eq!(faulty.puts(), 4);
    assert_eq!(&store.get(&h).await.unwrap()[..], b"eventually");
}

#[tokio::test]
async fn a_store_that_stays_down_reports_an_error_in_bounded_time() {
    let mem: Arc<dyn Blobs> = Arc::new(ObjectBlobs::new(Arc::new(InMemory::new())));
    let plan = FaultPlan {
        fail_first_puts: u64::MAX,
        put_delay: Duration::from_millis(1),
        ..Default::default()
    };
    let faulty = Arc::new(FaultyBlobs::new(mem, plan));
    let store = ChunkStore::new(faulty.clone(), RetryPolicy::fast());
    let err = store.put(b"never").await.unwrap_err();
    assert!(err.is_transient());
    assert_eq!(faulty.puts(), u64::from(RetryPolicy::fast().max_attempts));
}

/// Waits until `n` calls are held.
async fn wait_held(faulty: &FaultyBlobs, n: u64) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while faulty.held() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the calls are held");
}

#[tokio::test]
async fn held_calls_wait_until_a_new_plan_lets_them_go() {
    let (mem, _) = memory();
    mem.put("gone", Bytes::from_static(b"old")).await.unwrap();
    let plan = FaultPlan {
        hold_puts: true,
        hold_deletes: true,
        ..Default::default()
    };
    let faulty = Arc::new(FaultyBlobs::new(mem.clone(), plan));
    let put = tokio::spawn({
        let f = faulty.clone();
        async move { f.put("new", Bytes::from_static(b"v")).await }
    });
    let delete = tokio::spawn({
        let f = faulty.clone();
        async move { f.delete("gone").await }
    });
    wait_held(&faulty, 2).await;
    assert!(
        !mem.exists("new").await.unwrap(),
        "a held put has not written"
    );
    assert!(
        mem.exists("gone").await.unwrap(),
        "a held delete has not deleted"
    );
    faulty.set_plan(FaultPlan::default());
    put.await.unwrap().unwrap();
    delete.await.unwrap().unwrap();
    assert_eq!(faulty.held(), 0);
    assert!(mem.exists("new").await.unwrap());
    assert!(!mem.exists("gone").await.unwrap());

    faulty.set_plan(FaultPlan {
        hold_put_answers: true,
        ..Default::default()
    });
    let put = tokio::spawn({
        let f = faulty.clone();
        async move { f.put("late", Bytes::from_static(b"v")).await }
    });
    wait_held(&faulty, 1).await;
    assert!(
        mem.exists("late").await.unwrap(),
        "stored before it answers"
    );
    assert!(!put.is_finished());
    faulty.set_plan(FaultPlan::default());
    put.await.unwrap().unwrap();
}
