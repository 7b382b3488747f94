//! The stores behind the nodes, and the handle that holds them.

pub mod cache;
pub mod graph;
pub mod relational;
mod sqlite;
pub mod vector;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::config::{Config, ProjectionMode};
use crate::embed::{Embedder, HashingEmbedder};
use crate::error::{Error, Result, StoreKind};
use crate::model::ModelMeta;

pub use cache::{CacheStore, MemoryCache, RedisCache};
pub use graph::{BoltGraph, EmbeddedGraph, GraphStore};
pub use relational::RelationalStore;
pub use vector::{ChromaStore, EmbeddedVectors, VectorStore};

/// The connected stores; cheap to clone and shared by every node of a run.
#[derive(Clone)]
pub struct Stores {
    inner: Arc<Inner>,
}

struct Inner {
    relational: RelationalStore,
    cache: Option<Arc<dyn CacheStore>>,
    cache_prefix: String,
    vector: Option<Arc<dyn VectorStore>>,
    graph: Option<Arc<dyn GraphStore>>,
    embedder: Arc<dyn Embedder>,
    models: RwLock<BTreeMap<&'static str, &'static ModelMeta>>,
    outbox_max_attempts: u32,
    cache_repair: CacheRepair,
    projections: ProjectionMode,
    /// The background projector ([`ProjectionMode::Background`]) and what wakes it, started
    /// by the first write that needs it and again when its tokio runtime went away.
    projector: Mutex<Option<(Arc<tokio::sync::Notify>, tokio::task::JoinHandle<()>)>>,
}

/// Set when a cache invalidation failed in this process: until the pending invalidations are
/// applied, reads do not trust the cache (it may hold rows older than PostgreSQL's).
#[derive(Default)]
struct CacheRepair {
    needed: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
}

/// How often a process retries applying pending cache invalidations while the cache is down.
const CACHE_REPAIR_INTERVAL: Duration = Duration::from_secs(1);

/// How long the background projector sleeps without a write waking it: records that failed
/// come due again after their backoff, and nothing else would wake it for them.
const PROJECTOR_TICK: Duration = Duration::from_secs(1);

/// How long the background projector lets writes gather after one woke it, so that one
/// round applies many records in one call per store instead of one call per write.
const PROJECTOR_GATHER: Duration = Duration::from_millis(100);

/// The background projector: applies due outbox records (`sync`) whenever a write wakes it
/// (after letting others gather for [`PROJECTOR_GATHER`]), and once a [`PROJECTOR_TICK`]
/// otherwise. It holds the stores weakly and ends once they are dropped; what it has not
/// applied stays in the outbox.
async fn run_projector(stores: Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    loop {
        if tokio::time::timeout(PROJECTOR_TICK, wake.notified()).await.is_ok() {
            tokio::time::sleep(PROJECTOR_GATHER).await;
        }
        let Some(inner) = stores.upgrade() else {
            return;
        };
        let stores = Stores { inner };
        match stores.sync().await {
            Ok(report) if report.failed > 0 => {
                tracing::warn!(
                    failed = report.failed,
                    remaining = report.remaining,
                    "background projections: records left pending for a retry"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "background projections: the outbox could not be read; retrying"),
        }
    }
}

impl Stores {
    /// Connects to the stores named in `config`. Stores other than the relational one may be
    /// down at this point: reads fall back to PostgreSQL while the cache is down, and writes
    /// leave their vector and graph projections pending until those stores answer.
    pub async fn connect(config: &Config) -> Result<Stores> {
        let relational = RelationalStore::connect(config).await?;
        let cache: Option<Arc<dyn CacheStore>> = match &config.redis_url {
            Some(url) => Some(Arc::new(RedisCache::new(url, config.cache_timeout)?)),
            None if config.embedded_cache => Some(Arc::new(MemoryCache::default())),
            None => None,
        };
        // The embedded vector and graph stores live in the relational store's SQLite file, or
        // in a file of their own beside PostgreSQL.
        let embedded_file = if (config.embedded_vector && config.chroma_url.is_none()) || (config.embedded_graph && config.graph.is_none())
        {
            Some(match relational.backend() {
                sea_orm::DbBackend::Sqlite => relational.connection().clone(),
                _ => {
                    let file = config.embedded_file.as_deref().ok_or_else(|| {
                        Error::Config(
                            "the embedded vector and graph stores need a file beside PostgreSQL: set embedded_file (Config::with_embedded_file)"
                                .into(),
                        )
                    })?;
                    relational::open_sqlite(file, config.max_connections).await?
                }
            })
        } else {
            None
        };
        let vector: Option<Arc<dyn VectorStore>> = match (&config.chroma_url, &embedded_file) {
            (Some(url), _) => Some(Arc::new(ChromaStore::new(url, &config.vector_prefix, config.projection_timeout)?)),
            (None, Some(db)) if config.embedded_vector => Some(Arc::new(EmbeddedVectors::open(db.clone(), &config.vector_prefix).await?)),
            (None, _) => None,
        };
        let graph: Option<Arc<dyn GraphStore>> = match &config.graph {
            Some(g) => Some(Arc::new(
                BoltGraph::connect(
                    &g.url,
                    &g.user,
                    &g.password,
                    g.database.as_deref(),
                    &config.graph_namespace,
                    config.projection_timeout,
                )
                .await?,
            )),
            None => match &embedded_file {
                Some(db) if config.embedded_graph => Some(Arc::new(EmbeddedGraph::open(db.clone(), &config.graph_namespace).await?)),
                _ => None,
            },
        };
        Ok(Stores::builder(relational)
            .cache(cache, config.cache_prefix.clone())
            .vector(vector)
            .graph(graph)
            .outbox_max_attempts(config.outbox_max_attempts)
            .projections(config.projections)
            .build())
    }

    /// Assembles stores from already-connected backends, starting with the relational store.
    pub fn builder(relational: RelationalStore) -> StoresBuilder {
        StoresBuilder {
            relational,
            cache: None,
            cache_prefix: "dataflow".into(),
            vector: None,
            graph: None,
            embedder: Arc::new(HashingEmbedder::default()),
            outbox_max_attempts: 10,
            projections: ProjectionMode::Inline,
        }
    }

    /// When writes apply their vector and graph projections.
    pub fn projection_mode(&self) -> ProjectionMode {
        self.inner.projections
    }

    /// Hands the pending projections to the background projector, starting it on the
    /// caller's tokio runtime on first use, and again when the runtime it ran on has shut down
    /// (stores may outlive a runtime).
    pub(crate) fn wake_projector(&self) {
        let mut projector = self.inner.projector.lock().expect("the projector lock");
        match &*projector {
            Some((wake, task)) if !task.is_finished() => wake.notify_one(),
            _ => {
                let wake = Arc::new(tokio::sync::Notify::new());
                wake.notify_one();
                let task = tokio::spawn(run_projector(Arc::downgrade(&self.inner), wake.clone()));
                *projector = Some((wake, task));
            }
        }
    }

    /// Stops the background projector and applies every due outbox record now (`sync`):
    /// what a process with [`ProjectionMode::Background`] calls before it ends, so that its
    /// last writes do not wait for the next `sync`. A round the projector had begun is
    /// abandoned (its transaction rolls back, its records stay pending, and this sync applies
    /// them; applying twice changes nothing). The next write starts the projector again.
    pub async fn finish_projections(&self) -> Result<crate::outbox::SyncReport> {
        let running = self.inner.projector.lock().expect("the projector lock").take();
        if let Some((_, task)) = running {
            task.abort();
            // Cancelled, or ended by itself: either way it holds nothing any more.
            let _ = task.await;
        }
        self.sync().await
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

    /// The embedder, shared, for work moved to another thread.
    pub(crate) fn shared_embedder(&self) -> Arc<dyn Embedder> {
        self.inner.embedder.clone()
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
    /// only, and traversals hydrate and follow relations of registered models. [`Stores::migrate`]
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

    /// Failed attempts after which an outbox record becomes a dead letter.
    pub fn outbox_max_attempts(&self) -> u32 {
        self.inner.outbox_max_attempts
    }

    /// Creates or extends the tables of `models` and the outbox table, the graph indexes of
    /// their labels, and registers them (see [`RelationalStore::migrate`]). A graph server that
    /// cannot be reached fails the migration, naming it.
    pub async fn migrate(&self, models: &[&'static ModelMeta]) -> Result<()> {
        self.register_models(models);
        self.inner.relational.migrate(models).await?;
        crate::outbox::create_table(&self.inner.relational).await?;
        if let Some(graph) = self.graph() {
            let labels: Vec<&'static str> = models.iter().map(|m| m.name).collect();
            graph.prepare(&labels).await?;
        }
        Ok(())
    }

    /// Records that a cache invalidation failed: reads stop trusting the cache until the
    /// pending invalidations are applied.
    pub(crate) fn cache_needs_repair(&self) {
        self.inner.cache_repair.needed.store(true, Ordering::SeqCst);
    }

    /// Whether reads may use the cache. When an invalidation failed earlier, first tries (at
    /// most once per second) to apply the pending ones; until that succeeds, the cache is not
    /// used.
    pub(crate) async fn cache_trusted(&self) -> bool {
        let repair = &self.inner.cache_repair;
        if !repair.needed.load(Ordering::SeqCst) {
            return true;
        }
        {
            let mut last = repair.last_attempt.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < CACHE_REPAIR_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.sync_projection_now(StoreKind::Cache).await {
            Ok(report) if report.remaining == 0 => {
                repair.needed.store(false, Ordering::SeqCst);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(error = %e, "applying pending cache invalidations failed");
                false
            }
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

impl Stores {
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

/// Builds [`Stores`] from connected backends; see [`Stores::builder`].
pub struct StoresBuilder {
    relational: RelationalStore,
    cache: Option<Arc<dyn CacheStore>>,
    cache_prefix: String,
    vector: Option<Arc<dyn VectorStore>>,
    graph: Option<Arc<dyn GraphStore>>,
    embedder: Arc<dyn Embedder>,
    outbox_max_attempts: u32,
    projections: ProjectionMode,
}

impl StoresBuilder {
    /// The read-through cache and the prefix of its keys.
    pub fn cache(mut self, cache: Option<Arc<dyn CacheStore>>, prefix: String) -> Self {
        self.cache = cache;
        self.cache_prefix = prefix;
        self
    }

    /// The vector store.
    pub fn vector(mut self, vector: Option<Arc<dyn VectorStore>>) -> Self {
        self.vector = vector;
        self
    }

    /// The graph store.
    pub fn graph(mut self, graph: Option<Arc<dyn GraphStore>>) -> Self {
        self.graph = graph;
        self
    }

    /// The embedder (default: [`HashingEmbedder`] with 384 dimensions).
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = embedder;
        self
    }

    /// Failed attempts after which an outbox record becomes a dead letter (at least 1).
    pub fn outbox_max_attempts(mut self, attempts: u32) -> Self {
        self.outbox_max_attempts = attempts.max(1);
        self
    }

    /// When writes apply their vector and graph projections (default: inline).
    pub fn projections(mut self, mode: ProjectionMode) -> Self {
        self.projections = mode;
        self
    }

    /// The stores.
    pub fn build(self) -> Stores {
        Stores {
            inner: Arc::new(Inner {
                relational: self.relational,
                cache: self.cache,
                cache_prefix: self.cache_prefix,
                vector: self.vector,
                graph: self.graph,
                embedder: self.embedder,
                models: RwLock::new(BTreeMap::new()),
                outbox_max_attempts: self.outbox_max_attempts,
                cache_repair: CacheRepair::default(),
                projections: self.projections,
                projector: Mutex::new(None),
            }),
        }
    }
}
