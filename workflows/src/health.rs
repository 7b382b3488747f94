//! The health of a set of stores: each store's backend and the round trip of a ping (or why it
//! failed), the four checked at once, and the outbox backlog. `dataflow health` prints it;
//! `GET /health` answers it as JSON.

use std::time::{Duration, Instant};

use dataflow_core::{Backlog, Stores};
use serde_json::{Value, json};

/// One store's check.
#[derive(Debug, Clone)]
pub struct StoreCheck {
    /// `relational`, `cache`, `vector` or `graph`.
    pub store: &'static str,
    /// Its backend (`postgres`, `redis`, ...); `None` when the store is not configured.
    pub backend: Option<&'static str>,
    /// The ping's round trip, or why it failed (`Ok(ZERO)` when not configured).
    pub result: Result<Duration, String>,
}

/// Every store's check and the outbox backlog.
#[derive(Debug, Clone)]
pub struct Health {
    /// The relational store, the cache, the vector store and the graph, in that order.
    pub stores: Vec<StoreCheck>,
    /// The projections' backlog, or why it could not be read.
    pub backlog: Result<Backlog, String>,
}

impl Health {
    /// Whether every configured store answered.
    pub fn up(&self) -> bool {
        self.stores.iter().all(|s| s.result.is_ok())
    }

    /// As `GET /health` answers it: `status` (`up` or `down`), per store `up`, `backend` and
    /// `latency_ms` or `error` (`configured: false` for a store that is not), and the outbox.
    pub fn to_json(&self) -> Value {
        let stores: serde_json::Map<String, Value> = self
            .stores
            .iter()
            .map(|s| {
                let value = match (s.backend, &s.result) {
                    (None, _) => json!({"configured": false}),
                    (Some(backend), Ok(latency)) => json!({"up": true, "backend": backend, "latency_ms": latency.as_secs_f64() * 1e3}),
                    (Some(backend), Err(e)) => json!({"up": false, "backend": backend, "error": e}),
                };
                (s.store.to_owned(), value)
            })
            .collect();
        let outbox = match &self.backlog {
            Ok(b) => {
                json!({"pending": b.pending, "dead": b.dead, "oldest_pending_age_secs": b.oldest_pending_age.map(|a| a.as_secs_f64())})
            }
            Err(e) => json!({"error": e}),
        };
        json!({"status": if self.up() { "up" } else { "down" }, "stores": stores, "outbox": outbox})
    }
}

/// Pings every store of `stores` at once and reads the outbox backlog.
pub async fn check(stores: &Stores) -> Health {
    let relational = async {
        let started = Instant::now();
        let result = stores.relational().connection().ping().await;
        result.map(|_| started.elapsed()).map_err(|e| e.to_string())
    };
    let cache = async {
        match stores.cache() {
            Some(cache) => Some((cache.backend(), cache.ping().await.map_err(|e| e.to_string()))),
            None => None,
        }
    };
    let vector = async {
        match stores.vector() {
            Some(vector) => Some((vector.backend(), vector.ping().await.map_err(|e| e.to_string()))),
            None => None,
        }
    };
    let graph = async {
        match stores.graph() {
            Some(graph) => Some((graph.backend(), graph.ping().await.map_err(|e| e.to_string()))),
            None => None,
        }
    };
    let (relational, cache, vector, graph, backlog) = tokio::join!(relational, cache, vector, graph, stores.outbox().backlog());
    let mut checks = vec![StoreCheck {
        store: "relational",
        backend: Some(stores.backends().relational),
        result: relational,
    }];
    for (store, checked) in [("cache", cache), ("vector", vector), ("graph", graph)] {
        checks.push(match checked {
            Some((backend, result)) => StoreCheck {
                store,
                backend: Some(backend),
                result,
            },
            None => StoreCheck {
                store,
                backend: None,
                result: Ok(Duration::ZERO),
            },
        });
    }
    Health {
        stores: checks,
        backlog: backlog.map_err(|e| e.to_string()),
    }
}
