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

/// What a node runs with: the stores, for multi-tenant models the tenant, and when the work
/// may be executed again (a queued run) the key its writes are recorded under.
#[derive(Clone)]
pub struct Context {
    stores: Stores,
    tenant: Option<Arc<str>>,
    effects: Option<EffectKey>,
}

/// Where the writes of a context are recorded for exactly-once re-execution (see
/// [`crate::nodes::effect`]): the scope (a run) and the path of the invocation under way in it.
#[derive(Clone)]
struct EffectKey {
    scope: Arc<str>,
    key: Arc<str>,
}

impl Context {
    /// A context without a tenant.
    pub fn new(stores: Stores) -> Self {
        Context {
            stores,
            tenant: None,
            effects: None,
        }
    }

    /// The same context, with the writes of the work done under it recorded under `scope` (a
    /// run's id), so that the work executed again under the same scope does each write once:
    /// Create, Update, Delete and BulkUpsert return the output recorded by the first
    /// execution instead of writing again (see [`crate::nodes::effect`]). Each invocation
    /// needs its own key under the scope: [`Context::within`] gives it.
    pub fn with_effect_scope(&self, scope: impl AsRef<str>) -> Self {
        let scope: Arc<str> = Arc::from(scope.as_ref());
        Context {
            effects: Some(EffectKey { key: scope.clone(), scope }),
            ..self.clone()
        }
    }

    /// The context for one part of the work under way (a node by its name, an item of a map by
    /// its index): its writes are recorded under this context's key and `/segment`. The same
    /// context when writes are not recorded.
    pub fn within(&self, segment: impl std::fmt::Display) -> Self {
        let mut ctx = self.clone();
        if let Some(effects) = &mut ctx.effects {
            effects.key = Arc::from(format!("{}/{segment}", effects.key));
        }
        ctx
    }

    /// The key this context's writes are recorded under and its scope, when they are.
    pub fn effect_key(&self) -> Option<(&str, &str)> {
        self.effects.as_ref().map(|e| (&*e.key, &*e.scope))
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
            tenant: Some(Arc::from(tenant)),
            ..self.clone()
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
