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

// The layers, lowest first; each module imports only from the layers above it in this list
// (docs/architecture.md draws them).
// 1. Base: passwords in URLs, errors, store kinds, settings.
pub mod config;
pub mod error;
pub mod kind;
pub mod secrets;
// 2. Models: metadata, records, values and their rules, filters and sorts, embeddings.
pub mod model;
pub use model::{embed, filter, record, values};
// 3. SQL: every statement on a model's rows and on the outbox.
pub(crate) mod sql;
// 4. Store backends and their handles.
pub mod store;
// 5. Consistency: the outbox, projections and the background projector; then the stores an
//    application connects (handles and outbox together).
pub mod consistency;
pub mod stores;
// 6. Nodes: the Node trait and its context, and the nine operations.
pub mod node;
pub mod nodes;

pub use config::{Config, GraphConfig, ProjectionMode};
pub use consistency::{Backlog, Outbox, OutboxRecord, ProjectionSet, SyncReport};
pub use dataflow_macros::Model;
pub use embed::{Embedder, HashingEmbedder};
pub use error::{Error, FieldError, FieldErrors, Result, StoreKind};
pub use filter::{Column, Filter, FilterSyntaxError, Op, SortKey};
pub use model::{FieldMeta, FieldType, Model, ModelMeta, OnDelete, RelationMeta, Rule};
pub use node::{Context, ModelNodes, Node, NodeDescriptor, NodeKind};
pub use record::Record;
#[cfg(feature = "bolt")]
pub use store::BoltGraph;
#[cfg(feature = "chroma")]
pub use store::ChromaStore;
#[cfg(feature = "redis")]
pub use store::RedisCache;
pub use store::{
    Backends, BrokenConstraint, CacheStore, EmbeddedGraph, EmbeddedVectors, GraphStore, MemoryCache, MigrationReport, RelationalStore,
    StoreHandles, VectorStore,
};
pub use stores::{Stores, StoresBuilder};

/// Crates the derive's generated code names; re-exported so a model crate needs only
/// `dataflow-core` (plus serde and schemars for its own derives).
pub use {async_trait, chrono, schemars, sea_orm, serde, serde_json};
