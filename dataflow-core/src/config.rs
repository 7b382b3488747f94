//! Connection settings for the stores.

use std::time::Duration;

/// Where the stores are and how to talk to them.
#[derive(Debug, Clone)]
pub struct Config {
    /// `postgres://...` or `sqlite://...` URL of the relational store.
    pub database_url: String,
    /// PostgreSQL schema to create tables in and search (default: the server's `search_path`).
    pub database_schema: Option<String>,
    /// Most pooled relational connections.
    pub max_connections: u32,
    /// `redis://...` URL of the cache; `None` disables caching.
    pub redis_url: Option<String>,
    /// Prefix of every cache key, so several applications (or tests) can share one Redis.
    pub cache_prefix: String,
    /// How long a cache call may take before the node carries on without the cache.
    pub cache_timeout: Duration,
}

impl Config {
    /// Settings for a relational store at `database_url`, no cache.
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            database_url: database_url.into(),
            database_schema: None,
            max_connections: 16,
            redis_url: None,
            cache_prefix: "dataflow".into(),
            cache_timeout: Duration::from_millis(250),
        }
    }

    /// Uses this PostgreSQL schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.database_schema = Some(schema.into());
        self
    }

    /// Caches reads in Redis at `redis_url`.
    pub fn with_redis(mut self, redis_url: impl Into<String>) -> Self {
        self.redis_url = Some(redis_url.into());
        self
    }

    /// Prefixes every cache key with `prefix`.
    pub fn with_cache_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.cache_prefix = prefix.into();
        self
    }
}
