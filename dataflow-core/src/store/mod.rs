//! The store backends (relational, cache, vector, graph) and [`StoreHandles`], the connected
//! set of them that every layer above reads and writes through.

pub mod cache;
mod coalesce;
pub mod graph;
pub mod relational;
mod sqlite;
pub mod vector;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use hashlink::LruCache;

use crate::config::Config;
use crate::consistency::embedding::RecordCache;
use crate::error::{Error, Result, StoreKind};
use crate::model::ModelMeta;
use crate::model::embed::{Embedder, HashingEmbedder};
use coalesce::Coalescer;

#[cfg(feature = "redis")]
pub use cache::RedisCache;
pub use cache::{CacheStore, MemoryCache};
#[cfg(feature = "bolt")]
pub use graph::BoltGraph;
pub use graph::{EmbeddedGraph, GraphStore};
pub use relational::{BrokenConstraint, MigrationReport, RelationalStore};
#[cfg(feature = "chroma")]
pub use vector::ChromaStore;
pub use vector::{EmbeddedVectors, VectorStore};

/// The connected stores and what reading and writing through them needs: the embedder, the
/// cache's key prefix and the models registered with them. Cheap to clone.
#[derive(Clone)]
pub struct StoreHandles {
    inner: Arc<Handles>,
}

struct Handles {
    relational: RelationalStore,
    cache: Option<Arc<dyn CacheStore>>,
    cache_prefix: String,
    vector: Option<Arc<dyn VectorStore>>,
    graph: Option<Arc<dyn GraphStore>>,
    embedder: Arc<dyn Embedder>,
    /// Calls to an embedder that joins concurrent calls ([`Embedder::joins_concurrent_calls`]).
    embeddings: Coalescer<(), Vec<String>, Vec<Vec<f32>>>,
    /// The vectors of the texts such an embedder embedded last.
    embedded: Mutex<LruCache<String, Vec<f32>>>,
    /// The embedder recorded for each vector collection, as this process last read it.
    vector_records: RecordCache,
    models: RwLock<BTreeMap<&'static str, &'static ModelMeta>>,
}

/// Callers whose texts one embedding batch carries at most (each brings any number of texts;
/// the embedder splits what it is given into batches of its own size).
const MAX_CALLERS_PER_EMBEDDING: usize = 64;

/// Texts whose vectors are kept when the embedder joins concurrent calls (an expensive one:
/// milliseconds a text), most recently used first, about 6 MB at 384 dimensions. A text comes
/// back soon: a row written again in a field that is not embedded (a classification linked to
/// its ETIM class) has the same text, and `classify_product` searches with the text its new
/// product's vector then gets.
const EMBEDDING_CACHE: usize = 4096;

/// Texts embedded on the async worker itself by a cheap embedder; more move to a blocking
/// thread (thousands of rows are milliseconds of CPU work).
const INLINE_EMBED: usize = 64;

/// `embedder.embed(texts)` on a blocking thread, checked to give one vector per text.
async fn embed_on_blocking_thread(embedder: Arc<dyn Embedder>, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
    let name = embedder.name().to_owned();
    let wanted = texts.len();
    let vectors = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder.embed(&refs)
    })
    .await
    .map_err(|e| Error::Embedding {
        embedder: name.clone(),
        message: format!("the embedding thread failed: {e}"),
    })??;
    if vectors.len() != wanted {
        return Err(Error::Embedding {
            embedder: name,
            message: format!("{} vectors for {wanted} texts", vectors.len()),
        });
    }
    Ok(vectors)
}

/// The backends named in a [`Config`], connected; see [`StoreHandles::connect`].
pub(crate) struct Connected {
    pub relational: RelationalStore,
    pub cache: Option<Arc<dyn CacheStore>>,
    pub vector: Option<Arc<dyn VectorStore>>,
    pub graph: Option<Arc<dyn GraphStore>>,
}

impl Connected {
    /// Connects to the stores named in `config`. Stores other than the relational one may be
    /// down at this point.
    pub(crate) async fn connect(config: &Config) -> Result<Connected> {
        let relational = RelationalStore::connect(config).await?;
        let cache: Option<Arc<dyn CacheStore>> = match &config.redis_url {
            Some(url) => Some(connect_redis(url, config)?),
            None if config.embedded_cache => Some(Arc::new(MemoryCache::default())),
            None => None,
        };
        // The embedded vector and graph stores live in the relational store's SQLite file, or
        // in a file of their own beside PostgreSQL.
        let embedded_file = if (config.embedded_vector && config.chroma_url.is_none()) || (config.embedded_graph && config.graph.is_none())
        {
            Some(match relational.backend() {
                sea_orm::DbBackend::Sqlite => relational.connection().database().clone(),
                _ => {
                    let file = config.embedded_file.as_deref().ok_or_else(|| {
                        Error::Config(
                            "the embedded vector and graph stores need a file beside PostgreSQL: set embedded_file (Config::with_embedded_file)"
                                .into(),
                        )
                    })?;
                    relational::open_sqlite_waiting(file, relational::SQLITE_CONNECTIONS, config.relational_timeout).await?
                }
            })
        } else {
            None
        };
        let vector: Option<Arc<dyn VectorStore>> = match (&config.chroma_url, &embedded_file) {
            (Some(url), _) => Some(connect_chroma(url, config)?),
            (None, Some(db)) if config.embedded_vector => Some(Arc::new(EmbeddedVectors::open(db.clone(), &config.vector_prefix).await?)),
            (None, _) => None,
        };
        let graph: Option<Arc<dyn GraphStore>> = match &config.graph {
            Some(g) => Some(connect_bolt(g, config).await?),
            None => match &embedded_file {
                Some(db) if config.embedded_graph => Some(Arc::new(EmbeddedGraph::open(db.clone(), &config.graph_namespace).await?)),
                _ => None,
            },
        };
        Ok(Connected {
            relational,
            cache,
            vector,
            graph,
        })
    }
}

/// The Redis cache at `url`.
#[cfg(feature = "redis")]
fn connect_redis(url: &str, config: &Config) -> Result<Arc<dyn CacheStore>> {
    Ok(Arc::new(RedisCache::new(url, config.cache_timeout)?))
}

#[cfg(not(feature = "redis"))]
fn connect_redis(_url: &str, _config: &Config) -> Result<Arc<dyn CacheStore>> {
    Err(missing_feature("redis_url", "redis"))
}

/// The Chroma server at `url`.
#[cfg(feature = "chroma")]
fn connect_chroma(url: &str, config: &Config) -> Result<Arc<dyn VectorStore>> {
    Ok(Arc::new(ChromaStore::new(url, &config.vector_prefix, config.projection_timeout)?))
}

#[cfg(not(feature = "chroma"))]
fn connect_chroma(_url: &str, _config: &Config) -> Result<Arc<dyn VectorStore>> {
    Err(missing_feature("chroma_url", "chroma"))
}

/// The Bolt graph server of `graph`.
#[cfg(feature = "bolt")]
async fn connect_bolt(graph: &crate::config::GraphConfig, config: &Config) -> Result<Arc<dyn GraphStore>> {
    let bolt = BoltGraph::connect(
        &graph.url,
        &graph.user,
        &graph.password,
        graph.database.as_deref(),
        &config.graph_namespace,
        config.projection_timeout,
    )
    .await?;
    Ok(Arc::new(bolt))
}

#[cfg(not(feature = "bolt"))]
async fn connect_bolt(_graph: &crate::config::GraphConfig, _config: &Config) -> Result<Arc<dyn GraphStore>> {
    Err(missing_feature("graph_url", "bolt"))
}

/// The error for a server configured in `setting` whose backend was not compiled in.
#[cfg(not(all(feature = "redis", feature = "chroma", feature = "bolt")))]
fn missing_feature(setting: &str, feature: &str) -> Error {
    Error::Config(format!(
        "{setting} is set, but dataflow-core was built without its `{feature}` feature: enable it (features = [\"{feature}\"]) or leave {setting} unset to use the embedded store"
    ))
}

impl StoreHandles {
    /// Stores with only the relational one; add the others with the `with_*` methods.
    pub fn new(relational: RelationalStore) -> Self {
        StoreHandles {
            inner: Arc::new(Handles {
                relational,
                cache: None,
                cache_prefix: "dataflow".into(),
                vector: None,
                graph: None,
                embedder: Arc::new(HashingEmbedder::default()),
                embeddings: Coalescer::new(StoreKind::Vector, MAX_CALLERS_PER_EMBEDDING),
                embedded: Mutex::new(LruCache::new(EMBEDDING_CACHE)),
                vector_records: RecordCache::default(),
                models: RwLock::new(BTreeMap::new()),
            }),
        }
    }

    /// Changes one part of handles that are not shared yet (only builders call this).
    fn edit(mut self, change: impl FnOnce(&mut Handles)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(handles) => change(handles),
            None => unreachable!("handles are edited only while they are being built"),
        }
        self
    }

    /// With a read-through cache and the prefix of its keys.
    pub(crate) fn with_cache(self, cache: Option<Arc<dyn CacheStore>>, prefix: String) -> Self {
        self.edit(|h| {
            h.cache = cache;
            h.cache_prefix = prefix;
        })
    }

    /// With a vector store.
    pub(crate) fn with_vector(self, vector: Option<Arc<dyn VectorStore>>) -> Self {
        self.edit(|h| h.vector = vector)
    }

    /// With a graph store.
    pub(crate) fn with_graph(self, graph: Option<Arc<dyn GraphStore>>) -> Self {
        self.edit(|h| h.graph = graph)
    }

    /// With an embedder.
    pub(crate) fn with_embedder(self, embedder: Arc<dyn Embedder>) -> Self {
        self.edit(|h| h.embedder = embedder)
    }

    /// The relational store (the source of truth).
    pub fn relational(&self) -> &RelationalStore {
        &self.inner.relational
    }

    /// The read-through cache, if one is configured.
    pub fn cache(&self) -> Option<&dyn CacheStore> {
        self.inner.cache.as_deref()
    }

    /// The vector store, if one is configured.
    pub fn vector(&self) -> Option<&dyn VectorStore> {
        self.inner.vector.as_deref()
    }

    /// The graph store, if one is configured.
    pub fn graph(&self) -> Option<&dyn GraphStore> {
        self.inner.graph.as_deref()
    }

    /// The vector store, or an error saying a node of `model` needs one.
    pub fn require_vector(&self, model: &'static str) -> Result<&dyn VectorStore> {
        self.vector().ok_or_else(|| {
            Error::Config(format!(
                "{model}: searching needs a vector store; set chroma_url (Config::with_chroma) or use the embedded one (Config::with_embedded_vector)"
            ))
        })
    }

    /// The graph store, or an error saying a node of `model` needs one.
    pub fn require_graph(&self, model: &'static str) -> Result<&dyn GraphStore> {
        self.graph().ok_or_else(|| {
            Error::Config(format!(
                "{model}: traversals need a graph store; set the graph server (Config::with_graph) or use the embedded one (Config::with_embedded_graph)"
            ))
        })
    }

    /// The embedder that turns text into vectors.
    pub fn embedder(&self) -> &dyn Embedder {
        self.inner.embedder.as_ref()
    }

    /// The embedder records this process read ([`crate::consistency::embedding`]).
    pub(crate) fn vector_records(&self) -> &RecordCache {
        &self.inner.vector_records
    }

    /// The embedding of every text, in order. A cheap embedder is called where it is (on a
    /// blocking thread for many texts); one that joins concurrent calls gets the texts of every
    /// caller waiting when its previous batch returns, in one call on a blocking thread, less
    /// the texts whose vectors it made lately (the last 4,096 texts are kept).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let embedder = self.inner.embedder.clone();
        if !embedder.joins_concurrent_calls() {
            if texts.len() <= INLINE_EMBED {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                return embedder.embed(&refs);
            }
            return embed_on_blocking_thread(embedder, texts).await;
        }
        let mut vectors: Vec<Option<Vec<f32>>> = {
            let mut kept = self.inner.embedded.lock().unwrap_or_else(|e| e.into_inner());
            texts.iter().map(|text| kept.get(text).cloned()).collect()
        };
        let missing: Vec<String> = texts
            .iter()
            .zip(&vectors)
            .filter(|(_, vector)| vector.is_none())
            .map(|(text, _)| text.clone())
            .collect();
        if !missing.is_empty() {
            let made = self
                .inner
                .embeddings
                .run((), missing.clone(), |calls: Vec<Vec<String>>| {
                    let embedder = embedder.clone();
                    async move {
                        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
                        let mut vectors = embed_on_blocking_thread(embedder, calls.concat()).await?.into_iter();
                        Ok(sizes.into_iter().map(|n| vectors.by_ref().take(n).collect()).collect())
                    }
                })
                .await?;
            let mut kept = self.inner.embedded.lock().unwrap_or_else(|e| e.into_inner());
            let mut made = missing.into_iter().zip(made).map(|(text, vector)| {
                kept.insert(text, vector.clone());
                vector
            });
            for slot in vectors.iter_mut().filter(|v| v.is_none()) {
                *slot = made.next();
            }
        }
        vectors
            .into_iter()
            .map(|vector| {
                vector.ok_or_else(|| Error::Embedding {
                    embedder: embedder.name().to_owned(),
                    message: "fewer vectors than texts".into(),
                })
            })
            .collect()
    }

    /// The cache key of one row: `{prefix}:{table}:{id}` plus `:{tenant}` for multi-tenant models.
    /// The tenant comes last so that the integer id keeps keys unambiguous.
    pub fn cache_key(&self, meta: &ModelMeta, tenant: Option<&str>, id: i64) -> String {
        match tenant {
            Some(t) => format!("{}:{}:{}:{}", self.inner.cache_prefix, meta.table, id, t),
            None => format!("{}:{}:{}", self.inner.cache_prefix, meta.table, id),
        }
    }

    /// Makes models known to these stores: `sync` applies outbox records of registered models
    /// only, and traversals hydrate and follow relations of registered models. Migrating
    /// registers the models it migrates; nodes register their own model when they run.
    pub fn register_models(&self, models: &[&'static ModelMeta]) {
        let mut map = self.inner.models.write().unwrap_or_else(|e| e.into_inner());
        for meta in models {
            map.insert(meta.name, meta);
        }
    }

    /// The registered model called `name`.
    pub fn model(&self, name: &str) -> Option<&'static ModelMeta> {
        self.inner.models.read().unwrap_or_else(|e| e.into_inner()).get(name).copied()
    }

    /// Every registered model, by name.
    pub fn models(&self) -> Vec<&'static ModelMeta> {
        self.inner
            .models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .copied()
            .collect()
    }

    /// Which backend each store uses.
    pub fn backends(&self) -> Backends {
        Backends {
            relational: match self.relational().backend() {
                sea_orm::DbBackend::Postgres => "postgres",
                sea_orm::DbBackend::Sqlite => "sqlite",
                _ => "mysql",
            },
            cache: self.cache().map(|c| c.backend()),
            vector: self.vector().map(|v| v.backend()),
            graph: self.graph().map(|g| g.backend()),
        }
    }
}

/// Which backend each store uses, e.g. for `dataflow health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    /// `postgres` or `sqlite`.
    pub relational: &'static str,
    /// `redis`, `memory`, or `None` without a cache.
    pub cache: Option<&'static str>,
    /// `chroma`, `embedded`, or `None` without a vector store.
    pub vector: Option<&'static str>,
    /// `bolt`, `embedded`, or `None` without a graph store.
    pub graph: Option<&'static str>,
}
