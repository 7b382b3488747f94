//! The read-through cache: the trait every cache backend implements, Redis and in-process.
//!
//! Entries carry the row's version. A write replaces an entry by a *tombstone* holding the
//! row's new version, and a reader may only fill a key with a version at least that new. So a
//! reader that fetched a row just before a write committed cannot put the stale row back
//! after the write's invalidation: the classic read-through race is closed, not just narrowed.

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

pub use self::memory::MemoryCache;
#[cfg(feature = "redis")]
pub use self::redis::RedisCache;

/// A key-value cache of serialized rows with versioned invalidation.
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// The backend's name, e.g. `redis`.
    fn backend(&self) -> &'static str;

    /// The cached payload under `key`, or `None` when absent or invalidated.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `payload` (the row at `version`) under `key` for `ttl`, unless the key already
    /// holds the same or a newer version, or a tombstone newer than `version`.
    async fn fill(&self, key: &str, version: i64, payload: &[u8], ttl: Duration) -> Result<()>;

    /// Invalidates rows after a committed write: each `(key, new_version)` becomes a tombstone
    /// that blocks fills of older versions for `ttl`.
    async fn invalidate(&self, keys: &[(String, i64)], ttl: Duration) -> Result<()>;

    /// A round trip to the server; returns its latency.
    async fn ping(&self) -> Result<Duration>;
}
