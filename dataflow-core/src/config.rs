//! Connection settings for the stores.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::model::embed::Embedder;

use crate::secrets::redact_url;

/// Where the stores are and how to talk to them.
#[derive(Clone)]
pub struct Config {
    /// `postgres://...` or `sqlite://...` URL of the relational store.
    pub database_url: String,
    /// PostgreSQL schema to create tables in and search (default: the server's `search_path`).
    pub database_schema: Option<String>,
    /// Most pooled PostgreSQL connections. The embedded stores' SQLite file is used through one
    /// connection whatever this says (why: `store::relational::SQLITE_CONNECTIONS`).
    pub max_connections: u32,
    /// How long a relational call waits for a pooled connection while every one is in use;
    /// then it fails with a busy error ([`crate::Error::is_busy`]), which the runtime retries
    /// but its breaker does not count. A server that accepts no connection (stopped, or not
    /// answering) fails a call sooner, within [`crate::store::relational::CONNECT_TIMEOUT`] or
    /// this, whichever is less, with an error the breaker counts. Keep it below the runtime's
    /// node timeout.
    pub relational_timeout: Duration,
    /// `redis://...` URL of the cache; `None`: the in-process cache when `embedded_cache`,
    /// else no cache.
    pub redis_url: Option<String>,
    /// Prefix of every cache key, so several applications (or tests) can share one Redis.
    pub cache_prefix: String,
    /// How long a cache call may take before the node carries on without the cache.
    pub cache_timeout: Duration,
    /// `http://host:port` of a Chroma server; `None`: the embedded vector store when
    /// `embedded_vector`, else no vectors (and no Search).
    pub chroma_url: Option<String>,
    /// Prefix of every vector collection's name (`{prefix}{table}`).
    pub vector_prefix: String,
    /// The Bolt graph server; `None`: the embedded graph store when `embedded_graph`, else no
    /// graph (and no traversals).
    pub graph: Option<GraphConfig>,
    /// Prefix of every graph label (`{namespace}{Model}`), so several applications (or tests)
    /// can share one graph database: `dataflow_` by default, like the vector collections'
    /// prefix. A graph written before this default (labels without a prefix) keeps working
    /// with an empty namespace.
    pub graph_namespace: String,
    /// How long one call to the vector or graph store may take.
    pub projection_timeout: Duration,
    /// Failed attempts after which an outbox record is moved to the dead letters (one whose
    /// cache invalidation is still pending is retried until that is applied).
    pub outbox_max_attempts: u32,
    /// When a write's vector and graph projections are applied: before the write returns
    /// (the default), or by a background task of the process.
    pub projections: ProjectionMode,
    /// Keep the read-through cache in this process when `redis_url` is `None`.
    pub embedded_cache: bool,
    /// Keep vectors in the embedded vector store when `chroma_url` is `None`.
    pub embedded_vector: bool,
    /// Keep the graph in the embedded graph store when `graph` is `None`.
    pub embedded_graph: bool,
    /// The SQLite file of the embedded vector and graph stores when the relational store is
    /// PostgreSQL. With SQLite as the relational store they share its file and this is not
    /// used.
    pub embedded_file: Option<PathBuf>,
    /// The embedder that turns text into vectors for Search and the vector projections
    /// (`None`: [`crate::HashingEmbedder`] with 384 dimensions).
    pub embedder: Option<Arc<dyn Embedder>>,
}

/// When a write's vector and graph projections are applied. Either way the row and its outbox
/// record commit together and the cache entry is invalidated before the write returns, so a
/// Read after a write never sees the old row; the modes differ in when Search and Graph nodes
/// see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProjectionMode {
    /// The write node applies them before it returns: a Search or Graph node after it sees
    /// the row. The write takes as long as the slower of the vector and graph servers.
    #[default]
    Inline,
    /// A background task of the process applies them (the same work as `sync`, in batches
    /// across writes): a write wakes it, it lets other writes gather for a tenth of a second,
    /// then applies what is pending. The write's `pending` output names them.
    /// A Search or Graph node right after the write may not see the row yet. The outbox
    /// keeps what the task has not applied when the process stops, for `sync` or the next
    /// process; `stores.outbox().finish_projections()` applies it before a process ends.
    Background,
}

impl std::str::FromStr for ProjectionMode {
    type Err = UnknownProjectionMode;

    fn from_str(s: &str) -> Result<Self, UnknownProjectionMode> {
        match s {
            "inline" => Ok(ProjectionMode::Inline),
            "background" => Ok(ProjectionMode::Background),
            other => Err(UnknownProjectionMode(other.to_owned())),
        }
    }
}

/// A projection mode that is neither `inline` nor `background`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("projections: expected 'inline' or 'background', got {0:?}")]
pub struct UnknownProjectionMode(pub String);

/// The name of the SQLite file the embedded stores keep their data in, inside their directory.
pub const EMBEDDED_FILE_NAME: &str = "dataflow.db";

/// How to reach a Bolt graph server.
#[derive(Clone)]
pub struct GraphConfig {
    /// `bolt://host:port` or `neo4j://host:port`.
    pub url: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database name (the server's default when `None`).
    pub database: Option<String>,
}

impl fmt::Debug for GraphConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphConfig")
            .field("url", &redact_url(&self.url))
            .field("user", &self.user)
            .field("password", &"***")
            .field("database", &self.database)
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_schema", &self.database_schema)
            .field("max_connections", &self.max_connections)
            .field("relational_timeout", &self.relational_timeout)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("cache_prefix", &self.cache_prefix)
            .field("cache_timeout", &self.cache_timeout)
            .field("chroma_url", &self.chroma_url.as_deref().map(redact_url))
            .field("vector_prefix", &self.vector_prefix)
            .field("graph", &self.graph)
            .field("graph_namespace", &self.graph_namespace)
            .field("projection_timeout", &self.projection_timeout)
            .field("outbox_max_attempts", &self.outbox_max_attempts)
            .field("projections", &self.projections)
            .field("embedded_cache", &self.embedded_cache)
            .field("embedded_vector", &self.embedded_vector)
            .field("embedded_graph", &self.embedded_graph)
            .field("embedded_file", &self.embedded_file)
            .field("embedder", &self.embedder.as_ref().map(|e| e.name()))
            .finish()
    }
}

impl Config {
    /// Settings for a relational store at `database_url`, no cache, no vectors, no graph.
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            database_url: database_url.into(),
            database_schema: None,
            max_connections: 16,
            relational_timeout: Duration::from_secs(10),
            redis_url: None,
            cache_prefix: "dataflow".into(),
            cache_timeout: Duration::from_millis(250),
            chroma_url: None,
            vector_prefix: "dataflow_".into(),
            graph: None,
            graph_namespace: "dataflow_".into(),
            projection_timeout: Duration::from_secs(5),
            outbox_max_attempts: 10,
            projections: ProjectionMode::Inline,
            embedded_cache: false,
            embedded_vector: false,
            embedded_graph: false,
            embedded_file: None,
            embedder: None,
        }
    }

    /// Nothing to install or start: the relational, vector and graph stores in the SQLite
    /// file [`EMBEDDED_FILE_NAME`] in `dir` (created when missing) and the cache in this
    /// process.
    pub fn embedded(dir: impl AsRef<Path>) -> Self {
        let file = dir.as_ref().join(EMBEDDED_FILE_NAME);
        Config::new(format!("sqlite://{}", file.display()))
            .with_embedded_cache()
            .with_embedded_vector()
            .with_embedded_graph()
            .with_embedded_file(file)
    }

    /// Keeps vectors in the embedded vector store instead of Chroma.
    pub fn with_embedded_vector(mut self) -> Self {
        self.chroma_url = None;
        self.embedded_vector = true;
        self
    }

    /// Keeps the graph in the embedded graph store instead of a Bolt server.
    pub fn with_embedded_graph(mut self) -> Self {
        self.graph = None;
        self.embedded_graph = true;
        self
    }

    /// The SQLite file of the embedded vector and graph stores when the relational store is
    /// PostgreSQL (see [`Config::embedded_file`]).
    pub fn with_embedded_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.embedded_file = Some(file.into());
        self
    }

    /// Keeps the cache in this process instead of Redis.
    pub fn with_embedded_cache(mut self) -> Self {
        self.redis_url = None;
        self.embedded_cache = true;
        self
    }

    /// Uses this PostgreSQL schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.database_schema = Some(schema.into());
        self
    }

    /// Caches reads in Redis at `redis_url`.
    pub fn with_redis(mut self, redis_url: impl Into<String>) -> Self {
        self.embedded_cache = false;
        self.redis_url = Some(redis_url.into());
        self
    }

    /// Prefixes every cache key with `prefix`.
    pub fn with_cache_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.cache_prefix = prefix.into();
        self
    }

    /// Keeps embeddings in the Chroma server at `url`.
    pub fn with_chroma(mut self, url: impl Into<String>) -> Self {
        self.embedded_vector = false;
        self.chroma_url = Some(url.into());
        self
    }

    /// Names vector collections `{prefix}{table}`.
    pub fn with_vector_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.vector_prefix = prefix.into();
        self
    }

    /// Keeps the graph in the Bolt server described by `graph`.
    pub fn with_graph(mut self, graph: GraphConfig) -> Self {
        self.embedded_graph = false;
        self.graph = Some(graph);
        self
    }

    /// Labels graph nodes `{namespace}{Model}`.
    pub fn with_graph_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.graph_namespace = namespace.into();
        self
    }

    /// When writes apply their vector and graph projections ([`ProjectionMode`]).
    pub fn with_projections(mut self, mode: ProjectionMode) -> Self {
        self.projections = mode;
        self
    }

    /// With this embedder instead of the default hashing one.
    pub fn with_embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }
}
