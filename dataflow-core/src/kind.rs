//! The stores by kind, and sets of the three projections (cache, vectors, graph) that a
//! write keeps in step with the relational store.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The four kinds of store behind the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// PostgreSQL or SQLite: the source of truth.
    Relational,
    /// Redis: the read-through cache.
    Cache,
    /// Chroma: vector embeddings.
    Vector,
    /// A Bolt/Cypher graph database.
    Graph,
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreKind::Relational => "relational store",
            StoreKind::Cache => "cache",
            StoreKind::Vector => "vector store",
            StoreKind::Graph => "graph store",
        })
    }
}

/// Which projections a write must keep in step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectionSet {
    /// Cached rows are invalidated.
    pub cache: bool,
    /// The vector collection holds the row's document.
    pub vector: bool,
    /// The graph holds the row's node and edges.
    pub graph: bool,
}

impl ProjectionSet {
    /// No projection.
    pub fn is_empty(self) -> bool {
        !(self.cache || self.vector || self.graph)
    }

    /// The stores of these projections.
    pub fn kinds(self) -> Vec<StoreKind> {
        let mut kinds = Vec::with_capacity(3);
        if self.cache {
            kinds.push(StoreKind::Cache);
        }
        if self.vector {
            kinds.push(StoreKind::Vector);
        }
        if self.graph {
            kinds.push(StoreKind::Graph);
        }
        kinds
    }

    /// Just the projection on `kind` (nothing for the relational store).
    pub fn only(kind: StoreKind) -> Self {
        ProjectionSet {
            cache: kind == StoreKind::Cache,
            vector: kind == StoreKind::Vector,
            graph: kind == StoreKind::Graph,
        }
    }

    /// The projections in `self` but not in `other`.
    pub fn minus(self, other: ProjectionSet) -> Self {
        ProjectionSet {
            cache: self.cache && !other.cache,
            vector: self.vector && !other.vector,
            graph: self.graph && !other.graph,
        }
    }

    /// The projections in either.
    pub fn or(self, other: ProjectionSet) -> Self {
        ProjectionSet {
            cache: self.cache || other.cache,
            vector: self.vector || other.vector,
            graph: self.graph || other.graph,
        }
    }

    /// The projections in both.
    pub fn and(self, other: ProjectionSet) -> Self {
        ProjectionSet {
            cache: self.cache && other.cache,
            vector: self.vector && other.vector,
            graph: self.graph && other.graph,
        }
    }
}
