//! The `Node` trait every generated node implements, and the context nodes run in.

use std::sync::Arc;

use async_trait::async_trait;
use schemars::{JsonSchema, Schema};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, StoreKind};
use crate::model::ModelMeta;
use crate::stores::Stores;

/// Longest tenant id accepted.
pub const MAX_TENANT_LEN: usize = 128;

/// Which of the nine operations a model node performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// Insert one row.
    Create,
    /// Get one row by primary key through the cache.
    Read,
    /// Patch rows by id (with a version check) or by filter.
    Update,
    /// Delete rows by id or filter (soft where the model asks).
    Delete,
    /// Filter, sort and page rows.
    List,
    /// Insert or update many rows in batches.
    BulkUpsert,
    /// Semantic similarity search.
    Search,
    /// Links and traversals in the graph.
    Graph,
    /// Grouped counts, sums, averages, minima and maxima.
    Aggregate,
}

/// What a node is: its registered type name, its model and operation, its primary store.
#[derive(Debug, Clone, Copy)]
pub struct NodeDescriptor {
    /// Registered name, e.g. `ProductCreateNode`.
    pub type_name: &'static str,
    /// The model's metadata.
    pub model: &'static ModelMeta,
    /// The operation.
    pub kind: NodeKind,
    /// The store the node depends on first.
    pub store: StoreKind,
    /// One line saying what the node does.
    pub summary: &'static str,
}

/// A typed workflow node: validated input in, output out, against the context's stores.
#[async_trait]
pub trait Node: Send + Sync + 'static {
    /// What the node takes.
    type Input: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static;
    /// What the node returns.
    type Output: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static;

    /// The node's name, model, operation and store.
    fn descriptor(&self) -> NodeDescriptor;

    /// Runs the node. Bad input is rejected before any store is touched.
    async fn run(&self, ctx: &Context, input: Self::Input) -> Result<Self::Output>;

    /// JSON schema of [`Node::Input`].
    fn input_schema(&self) -> Schema {
        schemars::schema_for!(Self::Input)
    }

    /// JSON schema of [`Node::Output`].
    fn output_schema(&self) -> Schema {
        schemars::schema_for!(Self::Output)
    }

    /// JSON schema of the output when the static part of the input (a workflow's `params`) is
    /// `static_input`, where that input makes the output narrower than
    /// [`Node::output_schema`] says: a Read with `required: true` never returns `record:
    /// null`. `None` (the default): [`Node::output_schema`] holds.
    fn output_schema_given(&self, static_input: &serde_json::Value) -> Option<Schema> {
        let _ = static_input;
        None
    }
}

/// The nine node types `#[derive(Model)]` generates for a model, so generic code (the runtime's
/// registry) can reach them from the model type: `<Product as ModelNodes>::Create` is
/// `ProductCreateNode`.
pub trait ModelNodes: crate::model::Model {
    /// Inserts one row.
    type Create: Node + Default;
    /// Reads one row through the cache.
    type Read: Node + Default;
    /// Patches rows.
    type Update: Node + Default;
    /// Deletes rows.
    type Delete: Node + Default;
    /// Lists rows.
    type List: Node + Default;
    /// Upserts many rows.
    type BulkUpsert: Node + Default;
    /// Similarity search.
    type Search: Node + Default;
    /// Graph links and traversals.
    type Graph: Node + Default;
    /// Grouped metrics.
    type Aggregate: Node + Default;
}

/// What a node runs with: the stores and, for multi-tenant models, the tenant.
#[derive(Clone)]
pub struct Context {
    stores: Stores,
    tenant: Option<Arc<str>>,
}

impl Context {
    /// A context without a tenant.
    pub fn new(stores: Stores) -> Self {
        Context { stores, tenant: None }
    }

    /// The same stores, acting for `tenant`. The id must be 1..=128 characters without
    /// control characters.
    pub fn with_tenant(&self, tenant: impl AsRef<str>) -> Result<Self> {
        let tenant = tenant.as_ref();
        if tenant.is_empty() || tenant.chars().count() > MAX_TENANT_LEN || tenant.chars().any(char::is_control) {
            return Err(Error::Config(format!(
                "tenant id must be 1 to {MAX_TENANT_LEN} characters without control characters, got {tenant:?}"
            )));
        }
        Ok(Context {
            stores: self.stores.clone(),
            tenant: Some(Arc::from(tenant)),
        })
    }

    /// The stores.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The tenant this context acts for, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The tenant a query on `meta` is scoped to: `Some` for multi-tenant models (an error when
    /// the context has none), `None` for the others.
    pub fn tenant_scope(&self, meta: &'static ModelMeta) -> Result<Option<&str>> {
        match (meta.multi_tenant, self.tenant()) {
            (false, _) => Ok(None),
            (true, Some(t)) => Ok(Some(t)),
            (true, None) => Err(Error::MissingTenant { model: meta.name }),
        }
    }
}
