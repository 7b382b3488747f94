//! Each store's backends built directly, one fresh instance per test, for the conformance
//! suites: the same scenario runs on the server backend and on the embedded one.

use std::sync::Arc;
use std::time::Duration;

use dataflow_core::store::relational::open_sqlite;
use dataflow_core::{BoltGraph, CacheStore, ChromaStore, EmbeddedGraph, EmbeddedVectors, GraphStore, MemoryCache, RedisCache, VectorStore};

use crate::fixture::Backend;
use crate::harness::Services;

/// How long one call to a server may take in these tests.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A graph store of its own: the Bolt server under a fresh label namespace, or the embedded
/// graph in a fresh SQLite file.
pub async fn graph(backend: Backend, hint: &str) -> Arc<dyn GraphStore> {
    match backend {
        Backend::Servers => {
            let services = Services::global().await;
            let bolt = services.bolt().await;
            let namespace = format!("{}_", services.unique_name(hint));
            let graph = BoltGraph::connect(&bolt.uri, &bolt.user, &bolt.password, Some(&bolt.database), &namespace, TIMEOUT)
                .await
                .expect("a Bolt client");
            Arc::new(graph)
        }
        Backend::Embedded => Arc::new(embedded_graph(&embedded_file(hint), "").await),
    }
}

/// The embedded graph in the SQLite file `file`, labels behind `namespace`.
pub async fn embedded_graph(file: &std::path::Path, namespace: &str) -> EmbeddedGraph {
    let db = open_sqlite(file, 4).await.expect("opening the SQLite file");
    EmbeddedGraph::open(db, namespace).await.expect("the embedded graph")
}

/// A vector store of its own: Chroma under a fresh collection prefix, or the embedded store
/// in a fresh SQLite file.
pub async fn vector(backend: Backend, hint: &str) -> Arc<dyn VectorStore> {
    match backend {
        Backend::Servers => {
            let services = Services::global().await;
            let prefix = format!("{}_", services.unique_name(hint));
            Arc::new(ChromaStore::new(&services.chroma_url().await, &prefix, TIMEOUT).expect("a Chroma client"))
        }
        Backend::Embedded => Arc::new(embedded_vectors(&embedded_file(hint)).await),
    }
}

/// The embedded vector store in the SQLite file `file`.
pub async fn embedded_vectors(file: &std::path::Path) -> EmbeddedVectors {
    let db = open_sqlite(file, 4).await.expect("opening the SQLite file");
    EmbeddedVectors::open(db, "t_").await.expect("the embedded vector store")
}

/// A cache of its own and the prefix its keys must carry: Redis (keys under a fresh prefix),
/// or a new in-process cache.
pub async fn cache(backend: Backend, hint: &str) -> (Arc<dyn CacheStore>, String) {
    match backend {
        Backend::Servers => {
            let services = Services::global().await;
            let cache = RedisCache::new(&services.redis_url().await, TIMEOUT).expect("a Redis client");
            (Arc::new(cache), services.unique_name(hint))
        }
        Backend::Embedded => (Arc::new(MemoryCache::default()), hint.to_owned()),
    }
}

/// A fresh SQLite file for one test.
pub fn embedded_file(hint: &str) -> std::path::PathBuf {
    crate::embedded::fresh_home(hint).join(dataflow_core::config::EMBEDDED_FILE_NAME)
}
