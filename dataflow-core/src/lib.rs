//! dataflow-core: the vocabulary of dataflow-rs — models and their metadata, the `Node` trait
//! and the node operations, filters, the stores and their backends, errors and configuration.
//!
//! ```text
//! use dataflow_core::{Model, Context, Node};
//!
//! #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema, Model)]
//! #[dataflow(table = "products")]
//! pub struct Product {
//!     #[dataflow(primary_key)]
//!     pub id: i64,
//!     #[dataflow(len(min = 1, max = 200))]
//!     pub name: String,
//!     #[dataflow(min = 0.0)]
//!     pub price: f64,
//! }
//!
//! let created = ProductCreateNode.run(&ctx, ProductCreateInput { record: NewProduct { name: "Drill".into(), price: 99.0 } }).await?;
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod consistency;
pub mod embed;
pub mod error;
pub mod filter;
pub mod kind;
pub mod model;
pub mod node;
pub mod nodes;
pub mod record;
pub mod secrets;
pub mod sql;
pub mod store;
pub mod stores;
pub mod values;

pub use config::{Config, GraphConfig, ProjectionMode};
pub use consistency::{Outbox, OutboxRecord, ProjectionSet, SyncReport};
pub use dataflow_macros::Model;
pub use embed::{Embedder, HashingEmbedder};
pub use error::{Error, FieldError, FieldErrors, Result, StoreKind};
pub use filter::{Column, Filter, Op, SortKey};
pub use model::{FieldMeta, FieldType, Model, ModelMeta, RelationMeta, Rule};
pub use node::{Context, ModelNodes, Node, NodeDescriptor, NodeKind};
pub use record::Record;
pub use store::{
    Backends, BoltGraph, CacheStore, ChromaStore, EmbeddedGraph, EmbeddedVectors, GraphStore, MemoryCache, RedisCache, RelationalStore,
    StoreHandles, VectorStore,
};
pub use stores::{Stores, StoresBuilder};

/// Crates the derive's generated code names; re-exported so a model crate needs only
/// `dataflow-core` (plus serde and schemars for its own derives).
pub use {async_trait, chrono, schemars, sea_orm, serde, serde_json};
