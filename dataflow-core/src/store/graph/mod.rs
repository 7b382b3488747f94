//! The graph store: every model row as a node labelled with its model, every declared relation
//! as an edge from the row holding the foreign key to the row it names.
//!
//! Labels and relation types are `&'static str` throughout: they come from model metadata,
//! never from input. A backend places them in a namespace (a label prefix) it was built with.

#[cfg(feature = "bolt")]
pub mod bolt;
pub mod embedded;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};

#[cfg(feature = "bolt")]
pub use bolt::BoltGraph;
pub use embedded::EmbeddedGraph;

/// Deepest traversal a neighbours or path query may ask for.
pub const MAX_DEPTH: u32 = 5;

/// Checks a label namespace: at most 64 of `[A-Za-z0-9_]` (empty is fine).
pub(crate) fn check_namespace(namespace: &str) -> Result<()> {
    if namespace.len() > 64 || !namespace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::Config(format!(
            "graph_namespace must be at most 64 of [A-Za-z0-9_], got {namespace:?}"
        )));
    }
    Ok(())
}

/// One declared relation of a label, as the graph needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphRelation {
    /// The relation (edge type), e.g. `IN_CATEGORY`.
    pub name: &'static str,
    /// The target's label (its model name).
    pub target: &'static str,
    /// The target model is multi-tenant: a target node created for the edge gets the
    /// source's tenant.
    pub target_tenant: bool,
}

/// The state of one row's node: its properties and the target of each relation.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphNode {
    /// The row's primary key.
    pub id: i64,
    /// Scalar properties to set; a `null` removes the property.
    pub props: Map<String, Json>,
    /// Per relation of the label, the target's primary key (`None`: no edge).
    pub edges: Vec<(&'static str, Option<i64>)>,
}

/// Which way to follow relations from a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Along relations this node declares (e.g. a product to its category).
    #[default]
    Out,
    /// Against them (e.g. a category to its products).
    In,
    /// Both ways.
    Both,
}

/// Which tenant's nodes a traversal may visit: nodes without a tenant, plus this tenant's.
pub type TenantScope<'a> = Option<&'a str>;

/// A neighbours query.
#[derive(Debug, Clone)]
pub struct NeighborQuery<'a> {
    /// The start node's label.
    pub label: &'static str,
    /// The start node's primary key.
    pub id: i64,
    /// Follow only this relation (any when `None`).
    pub relation: Option<&'static str>,
    /// Which way.
    pub direction: Direction,
    /// How many hops at most, 1..=[`MAX_DEPTH`].
    pub depth: u32,
    /// The tenant whose nodes may be visited besides tenant-free ones.
    pub tenant: TenantScope<'a>,
    /// Most neighbours returned.
    pub limit: usize,
}

/// A node reached by a traversal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    /// Its label (model name).
    pub label: String,
    /// Its primary key.
    pub id: i64,
    /// Fewest hops from the start node.
    pub depth: u32,
}

/// A shortest-path query between two nodes, ignoring relation directions.
#[derive(Debug, Clone)]
pub struct PathQuery<'a> {
    /// Start label and primary key.
    pub from: (&'static str, i64),
    /// End label and primary key.
    pub to: (&'static str, i64),
    /// Follow only this relation (any when `None`).
    pub relation: Option<&'static str>,
    /// Most hops, 1..=[`MAX_DEPTH`].
    pub max_depth: u32,
    /// The tenant whose nodes may be visited besides tenant-free ones.
    pub tenant: TenantScope<'a>,
}

/// A path: nodes in order and the relation between each consecutive pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphPath {
    /// `(label, primary key)` of each node, start first.
    pub nodes: Vec<(String, i64)>,
    /// The relation type of each hop (`nodes.len() - 1` of them).
    pub relations: Vec<String>,
}

/// A node as stored, for checks and repair.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredNode {
    /// Its properties.
    pub props: Map<String, Json>,
    /// Its outgoing edges: `(relation, target label, target primary key)`, sorted.
    pub edges: Vec<(String, String, i64)>,
}

/// A graph database (a Bolt server, or the embedded backend).
#[async_trait]
pub trait GraphStore: Send + Sync {
    /// The backend's name, e.g. `bolt`.
    fn backend(&self) -> &'static str;

    /// Creates what queries on these labels need (an index on the key). Idempotent.
    async fn prepare(&self, labels: &[&'static str]) -> Result<()>;

    /// Creates or updates nodes of `label`: sets their properties and makes each relation's
    /// edge point at the given target (creating a bare target node if it has none yet),
    /// removing edges that point elsewhere. Idempotent.
    async fn upsert_nodes(&self, label: &'static str, relations: &[GraphRelation], nodes: &[GraphNode]) -> Result<()>;

    /// Removes nodes of `label` and their edges; absent ids are ignored.
    async fn delete_nodes(&self, label: &'static str, ids: &[i64]) -> Result<()>;

    /// Nodes reachable from a node within the query's depth, nearest first.
    async fn neighbors(&self, query: &NeighborQuery<'_>) -> Result<Vec<Neighbor>>;

    /// A shortest path between two nodes, if one exists within the depth.
    async fn shortest_path(&self, query: &PathQuery<'_>) -> Result<Option<GraphPath>>;

    /// One node with its outgoing edges, as stored.
    async fn node(&self, label: &'static str, id: i64) -> Result<Option<StoredNode>>;

    /// How many nodes carry `label`.
    async fn count(&self, label: &'static str) -> Result<u64>;

    /// A round trip to the server; returns its latency.
    async fn ping(&self) -> Result<Duration>;
}
