//! What a cache does, run on every backend: Redis and the in-process cache. Versioned fills
//! and tombstones are the contract the read-through cache's correctness rests on.

use std::time::Duration;

use dataflow_tests::fixture::Backend;
use dataflow_tests::{on_both_backends, stores};

const TTL: Duration = Duration::from_secs(60);

async fn fills_keep_the_newest_version_and_tombstones_block_older_ones(backend: Backend) {
    let (cache, prefix) = stores::cache(backend, "cache_versions").await;
    let key = format!("{prefix}:products:1");
    assert_eq!(cache.get(&key).await.unwrap(), None);
    cache.fill(&key, 2, b"v2", TTL).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&b"v2"[..]));
    cache.fill(&key, 1, b"v1", TTL).await.unwrap();
    cache.fill(&key, 2, b"v2 again", TTL).await.unwrap();
    assert_eq!(
        cache.get(&key).await.unwrap().as_deref(),
        Some(&b"v2"[..]),
        "older or equal fills lose"
    );
    cache.fill(&key, 3, b"v3", TTL).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&b"v3"[..]));

    // A write at version 5 invalidates: a reader holding version 4 cannot put it back.
    cache.invalidate(&[(key.clone(), 5)], TTL).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), None);
    cache.fill(&key, 4, b"v4", TTL).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), None, "a stale fill after the write is refused");
    // An invalidation carrying an older version keeps the newer tombstone.
    cache.invalidate(&[(key.clone(), 3)], TTL).await.unwrap();
    cache.fill(&key, 4, b"v4", TTL).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), None);
    cache.fill(&key, 5, b"v5", TTL).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&b"v5"[..]));

    // Several keys at once; other keys are untouched.
    let other = format!("{prefix}:products:2");
    let third = format!("{prefix}:products:3");
    cache.fill(&other, 1, b"two", TTL).await.unwrap();
    cache.fill(&third, 1, b"three", TTL).await.unwrap();
    cache.invalidate(&[(key.clone(), 6), (other.clone(), 2)], TTL).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), None);
    assert_eq!(cache.get(&other).await.unwrap(), None);
    assert_eq!(cache.get(&third).await.unwrap().as_deref(), Some(&b"three"[..]));
    // Payloads are bytes, kept exactly.
    let binary = [0u8, 255, b'|', b'!', 10, 13];
    cache.fill(&third, 2, &binary, TTL).await.unwrap();
    assert_eq!(cache.get(&third).await.unwrap().as_deref(), Some(&binary[..]));
    assert!(cache.ping().await.is_ok());
}
on_both_backends!(fills_keep_the_newest_version_and_tombstones_block_older_ones);

async fn entries_and_tombstones_expire(backend: Backend) {
    let (cache, prefix) = stores::cache(backend, "cache_expiry").await;
    let (row, dead) = (format!("{prefix}:a:1"), format!("{prefix}:a:2"));
    let short = Duration::from_millis(300);
    cache.fill(&row, 1, b"row", short).await.unwrap();
    cache.invalidate(&[(dead.clone(), 9)], short).await.unwrap();
    assert!(cache.get(&row).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(cache.get(&row).await.unwrap(), None, "the entry expired");
    // Once the tombstone expired, any version may fill the key again.
    cache.fill(&dead, 1, b"old", TTL).await.unwrap();
    assert_eq!(cache.get(&dead).await.unwrap().as_deref(), Some(&b"old"[..]));
}
on_both_backends!(entries_and_tombstones_expire);

/// The in-process cache is bounded: past its size it drops entries nearest expiry first.
#[tokio::test]
async fn the_in_process_cache_stays_within_its_bound() {
    use dataflow_core::CacheStore;
    let cache = dataflow_core::MemoryCache::new(10);
    cache.fill("long", 1, b"keep", Duration::from_secs(600)).await.unwrap();
    for i in 0..50 {
        cache.fill(&format!("k{i}"), 1, b"x", Duration::from_secs(60)).await.unwrap();
    }
    let held = futures_count(&cache, 50).await;
    assert!(held <= 10, "{held} entries held");
    assert_eq!(cache.get("long").await.unwrap().as_deref(), Some(&b"keep"[..]));
    assert!(cache.get("k49").await.unwrap().is_some(), "the newest entry is kept");
}

async fn futures_count(cache: &dataflow_core::MemoryCache, n: usize) -> usize {
    use dataflow_core::CacheStore;
    let mut held = 0;
    for i in 0..n {
        held += usize::from(cache.get(&format!("k{i}")).await.unwrap().is_some());
    }
    held + usize::from(cache.get("long").await.unwrap().is_some())
}
