//! The in-process cache backend: the embedded default, with the same versioned fills and
//! tombstones as Redis. A plain map behind a mutex: every check of the stored version and
//! the write that follows it happen under one lock, which is what Redis's scripts give.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::CacheStore;
use crate::error::Result;

/// What one key holds: a row at a version, or a tombstone blocking older fills.
enum Slot {
    Row { version: i64, payload: Vec<u8> },
    Tombstone { version: i64 },
}

/// An entry and when it expires.
struct Entry {
    slot: Slot,
    expires: Instant,
}

/// A bounded in-process cache. When full, expired entries are dropped first, then the entries
/// closest to expiry.
pub struct MemoryCache {
    entries: Mutex<HashMap<String, Entry>>,
    max_entries: usize,
}

/// Entries a [`MemoryCache::default`] holds at most.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

impl Default for MemoryCache {
    fn default() -> Self {
        MemoryCache::new(DEFAULT_MAX_ENTRIES)
    }
}

impl MemoryCache {
    /// A cache of at most `max_entries` keys (at least 1).
    pub fn new(max_entries: usize) -> Self {
        MemoryCache {
            entries: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for one more key: drops expired entries, then the tenth closest to expiry.
    fn make_room(&self, map: &mut HashMap<String, Entry>, now: Instant) {
        if map.len() < self.max_entries {
            return;
        }
        map.retain(|_, e| e.expires > now);
        if map.len() >= self.max_entries {
            let mut by_expiry: Vec<(Instant, String)> = map.iter().map(|(k, e)| (e.expires, k.clone())).collect();
            by_expiry.sort();
            for (_, key) in by_expiry.into_iter().take(self.max_entries.div_ceil(10)) {
                map.remove(&key);
            }
        }
    }
}

#[async_trait]
impl CacheStore for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let map = self.lock();
        Ok(match map.get(key) {
            Some(Entry {
                slot: Slot::Row { payload, .. },
                expires,
            }) if *expires > Instant::now() => Some(payload.clone()),
            _ => None,
        })
    }

    async fn fill(&self, key: &str, version: i64, payload: &[u8], ttl: Duration) -> Result<()> {
        let now = Instant::now();
        let mut map = self.lock();
        if let Some(current) = map.get(key).filter(|e| e.expires > now) {
            let refused = match current.slot {
                Slot::Tombstone { version: newest } => version < newest,
                Slot::Row { version: held, .. } => version <= held,
            };
            if refused {
                return Ok(());
            }
        }
        if !map.contains_key(key) {
            self.make_room(&mut map, now);
        }
        map.insert(
            key.to_owned(),
            Entry {
                slot: Slot::Row {
                    version,
                    payload: payload.to_vec(),
                },
                expires: now + ttl.max(Duration::from_millis(1)),
            },
        );
        Ok(())
    }

    async fn invalidate(&self, keys: &[(String, i64)], ttl: Duration) -> Result<()> {
        let now = Instant::now();
        let mut map = self.lock();
        for (key, version) in keys {
            let mut version = *version;
            if let Some(Entry {
                slot: Slot::Tombstone { version: newest },
                expires,
            }) = map.get(key)
                && *expires > now
                && *newest > version
            {
                version = *newest;
            }
            if !map.contains_key(key) {
                self.make_room(&mut map, now);
            }
            map.insert(
                key.clone(),
                Entry {
                    slot: Slot::Tombstone { version },
                    expires: now + ttl.max(Duration::from_millis(1)),
                },
            );
        }
        Ok(())
    }

    async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        drop(self.lock());
        Ok(start.elapsed())
    }
}
