//! [`Stores`]: what an application connects and hands to its nodes, the store handles and
//! their outbox together.

use std::sync::Arc;

use crate::config::{Config, ProjectionMode};
use crate::consistency::embedding::{ReembedProgress, ReembedReport, VectorRecord};
use crate::consistency::outbox::{self, Outbox};
use crate::error::Result;
use crate::model::ModelMeta;
use crate::model::embed::Embedder;
use crate::store::{Backends, CacheStore, Connected, GraphStore, MigrationReport, RelationalStore, StoreHandles, VectorStore};

/// The connected stores and their outbox; cheap to clone and shared by every node of a run.
///
/// The handles ([`Stores::handles`]) read and write each store; the [`Outbox`]
/// ([`Stores::outbox`]) keeps the cache, the vectors and the graph in step with the
/// relational store, and is where pending projections are synced, listed and retried.
#[derive(Clone)]
pub struct Stores {
    handles: StoreHandles,
    outbox: Outbox,
}

impl Stores {
    /// Connects to the stores named in `config`. Stores other than the relational one may be
    /// down at this point: reads fall back to PostgreSQL while the cache is down, and writes
    /// leave their vector and graph projections pending until those stores answer.
    pub async fn connect(config: &Config) -> Result<Stores> {
        let connected = Connected::connect(config).await?;
        let mut builder = Stores::builder(connected.relational);
        if let Some(embedder) = &config.embedder {
            builder = builder.embedder(embedder.clone());
        }
        Ok(builder
            .cache(connected.cache, config.cache_prefix.clone())
            .vector(connected.vector)
            .graph(connected.graph)
            .outbox_max_attempts(config.outbox_max_attempts)
            .projections(config.projections)
            .build())
    }

    /// Assembles stores from already-connected backends, starting with the relational store.
    pub fn builder(relational: RelationalStore) -> StoresBuilder {
        StoresBuilder {
            handles: StoreHandles::new(relational),
            outbox_max_attempts: 10,
            projections: ProjectionMode::Inline,
        }
    }

    /// The store handles.
    pub fn handles(&self) -> &StoreHandles {
        &self.handles
    }

    /// The outbox: pending projections, `sync`, dead letters.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The relational store (the source of truth).
    pub fn relational(&self) -> &RelationalStore {
        self.handles.relational()
    }

    /// The read-through cache, if one is configured.
    pub fn cache(&self) -> Option<&dyn CacheStore> {
        self.handles.cache()
    }

    /// The vector store, if one is configured.
    pub fn vector(&self) -> Option<&dyn VectorStore> {
        self.handles.vector()
    }

    /// The graph store, if one is configured.
    pub fn graph(&self) -> Option<&dyn GraphStore> {
        self.handles.graph()
    }

    /// The embedder that turns text into vectors.
    pub fn embedder(&self) -> &dyn Embedder {
        self.handles.embedder()
    }

    /// Re-embeds every row of `meta` with this process's embedder, `page` rows at a time,
    /// calling `progress` after each page; resumes a re-embedding that stopped. See
    /// [`crate::consistency::embedding`] for what searches and writes do meanwhile.
    pub async fn reembed(
        &self,
        meta: &'static ModelMeta,
        page: usize,
        progress: impl FnMut(ReembedProgress),
    ) -> crate::Result<ReembedReport> {
        crate::consistency::embedding::reembed(&self.handles, meta, page, progress).await
    }

    /// The embedder recorded for the vector collection of `meta` (`None`: not searched nor
    /// written since records are kept, or no vector store).
    pub async fn vector_record(&self, meta: &'static ModelMeta) -> crate::Result<Option<VectorRecord>> {
        crate::consistency::embedding::record_of(&self.handles, meta).await
    }

    /// The embedding of every text, in order, through the embedder; calls made at the same
    /// time are joined when the embedder asks for it (see [`StoreHandles::embed`]).
    pub async fn embed(&self, texts: Vec<String>) -> crate::Result<Vec<Vec<f32>>> {
        self.handles.embed(texts).await
    }

    /// The cache key of one row (see [`StoreHandles::cache_key`]).
    pub fn cache_key(&self, meta: &ModelMeta, tenant: Option<&str>, id: i64) -> String {
        self.handles.cache_key(meta, tenant, id)
    }

    /// Makes models known to these stores (see [`StoreHandles::register_models`]).
    pub fn register_models(&self, models: &[&'static ModelMeta]) {
        self.handles.register_models(models);
    }

    /// Which backend each store uses.
    pub fn backends(&self) -> Backends {
        self.handles.backends()
    }

    /// Creates or extends the tables of `models` and the outbox table, the graph indexes of
    /// their labels, and registers them (see [`RelationalStore::migrate`], which says what the
    /// report holds: stored rows that break a constraint, which do not fail the migration). A
    /// graph server that cannot be reached fails the migration, naming it.
    pub async fn migrate(&self, models: &[&'static ModelMeta]) -> Result<MigrationReport> {
        let models = &crate::store::relational::with_relation_targets(models);
        self.handles.register_models(models);
        // Processes that start together (workers on several machines) migrate in turn.
        let turn = self.relational().migration_turn().await?;
        let report = self.relational().migrate(models).await?;
        for broken in &report.broken {
            tracing::warn!(constraint = %broken.constraint, rows = broken.rows, "{broken}");
        }
        outbox::create_table(self.relational()).await?;
        crate::consistency::embedding::create_table(self.relational()).await?;
        crate::nodes::effect::create_table(self.relational()).await?;
        if let Some(graph) = self.graph() {
            let labels: Vec<&'static str> = models.iter().map(|m| m.name).collect();
            graph.prepare(&labels).await?;
        }
        if let Some(turn) = turn {
            turn.end().await;
        }
        Ok(report)
    }
}

/// Builds [`Stores`] from connected backends; see [`Stores::builder`].
pub struct StoresBuilder {
    handles: StoreHandles,
    outbox_max_attempts: u32,
    projections: ProjectionMode,
}

impl StoresBuilder {
    /// The read-through cache and the prefix of its keys.
    pub fn cache(mut self, cache: Option<Arc<dyn CacheStore>>, prefix: String) -> Self {
        self.handles = self.handles.with_cache(cache, prefix);
        self
    }

    /// The vector store.
    pub fn vector(mut self, vector: Option<Arc<dyn VectorStore>>) -> Self {
        self.handles = self.handles.with_vector(vector);
        self
    }

    /// The graph store.
    pub fn graph(mut self, graph: Option<Arc<dyn GraphStore>>) -> Self {
        self.handles = self.handles.with_graph(graph);
        self
    }

    /// The embedder (default: [`crate::HashingEmbedder`] with 384 dimensions).
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.handles = self.handles.with_embedder(embedder);
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
        let outbox = Outbox::new(self.handles.clone(), self.outbox_max_attempts, self.projections);
        Stores {
            handles: self.handles,
            outbox,
        }
    }
}
