//! The stores behind the nodes, and the handle that holds them.

pub mod cache;
pub mod relational;

use std::sync::Arc;

use crate::config::Config;
use crate::error::Result;
use crate::model::ModelMeta;

pub use cache::{CacheStore, RedisCache};
pub use relational::RelationalStore;

/// The connected stores; cheap to clone and shared by every node of a run.
#[derive(Clone)]
pub struct Stores {
    inner: Arc<Inner>,
}

struct Inner {
    relational: RelationalStore,
    cache: Option<Arc<dyn CacheStore>>,
    cache_prefix: String,
}

impl Stores {
    /// Connects to the stores named in `config`. A cache that is down does not fail this: reads
    /// fall back to the relational store until it answers.
    pub async fn connect(config: &Config) -> Result<Stores> {
        let relational = RelationalStore::connect(config).await?;
        let cache: Option<Arc<dyn CacheStore>> = match &config.redis_url {
            Some(url) => Some(Arc::new(RedisCache::new(url, config.cache_timeout)?)),
            None => None,
        };
        Ok(Stores::from_parts(relational, cache, config.cache_prefix.clone()))
    }

    /// Assembles stores from already-connected backends.
    pub fn from_parts(relational: RelationalStore, cache: Option<Arc<dyn CacheStore>>, cache_prefix: String) -> Stores {
        Stores {
            inner: Arc::new(Inner {
                relational,
                cache,
                cache_prefix,
            }),
        }
    }

    /// The relational store (the source of truth).
    pub fn relational(&self) -> &RelationalStore {
        &self.inner.relational
    }

    /// The read-through cache, if one is configured.
    pub fn cache(&self) -> Option<&dyn CacheStore> {
        self.inner.cache.as_deref()
    }

    /// The cache key of one row: `{prefix}:{table}:{id}` plus `:{tenant}` for multi-tenant models.
    /// The tenant comes last so that the integer id keeps keys unambiguous.
    pub fn cache_key(&self, meta: &ModelMeta, tenant: Option<&str>, id: i64) -> String {
        match tenant {
            Some(t) => format!("{}:{}:{}:{}", self.inner.cache_prefix, meta.table, id, t),
            None => format!("{}:{}:{}", self.inner.cache_prefix, meta.table, id),
        }
    }

    /// Creates or extends the tables of `models` (see [`RelationalStore::migrate`]).
    pub async fn migrate(&self, models: &[&'static ModelMeta]) -> Result<()> {
        self.inner.relational.migrate(models).await
    }
}
