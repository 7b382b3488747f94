//! The node interface, the runtime's lowest layer: nodes as the runtime sees them (JSON in,
//! JSON out, with their schemas and the stores they need), field paths, schema reading and the
//! registry. Typed [`dataflow_core::Node`]s are adapted by [`TypedNode`]; the built-in nodes
//! implement [`DynNode`] directly. Nothing here imports from the layers above (workflow,
//! scheduler, built-in nodes): what a node needs of the scheduler is the [`SubRuns`] trait.

pub mod path;
pub mod registry;
pub mod schema;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dataflow_core::{Context, Node, NodeKind, StoreKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// What a node type is, for listings (`dataflow nodes`) and validation.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// Registered name, e.g. `ProductCreateNode` or `Switch`.
    pub type_name: String,
    /// The model, for generated nodes.
    pub model: Option<&'static str>,
    /// The operation, for generated nodes.
    pub kind: Option<NodeKind>,
    /// Stores a run of the node needs; the circuit breakers of these stores guard it.
    pub stores: Vec<StoreKind>,
    /// Whether a run may write to the relational store.
    pub writes: bool,
    /// One line saying what the node does.
    pub summary: String,
}

/// Why one attempt of a node failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeFailure {
    /// The node itself failed (validation, a store error, ...).
    #[error("{message}")]
    Failed {
        /// What went wrong.
        message: String,
        /// Whether a retry may succeed.
        transient: bool,
        /// The store that failed, when a store failed.
        store: Option<StoreKind>,
        /// The store answered but had no room for the call in time (see
        /// [`dataflow_core::Error::is_busy`]): transient, and no sign that it is down, so its
        /// breaker does not count it.
        busy: bool,
    },
    /// The assembled input does not fit the node's input type.
    #[error("bad input{}: {message}", at.as_ref().map(|at| format!(" at {at}")).unwrap_or_default())]
    BadInput {
        /// Where in the input, as a path such as `record.price` or `sort[0].descending`;
        /// `None` when the input as a whole is wrong (a missing top-level field).
        at: Option<String>,
        /// What is wrong there.
        message: String,
    },
    /// The attempt did not finish in time (not retried: a write may have committed).
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The store's circuit breaker is open: recent calls failed, so this one is not tried.
    #[error("{0} unavailable: circuit breaker open after repeated failures")]
    CircuitOpen(StoreKind),
}

impl NodeFailure {
    /// Whether the retry policy may try again.
    pub fn is_transient(&self) -> bool {
        matches!(self, NodeFailure::Failed { transient: true, .. })
    }

    /// Input that does not fit the node, the message cut to a few hundred characters: serde
    /// quotes the offending key or value, which may be as long as the input itself.
    pub fn bad_input(message: impl Into<String>) -> Self {
        NodeFailure::BadInput {
            at: None,
            message: shorten(message.into(), MAX_MESSAGE_CHARS),
        }
    }

    /// Input that does not fit the node at `path` (`record.price`), both cut like
    /// [`NodeFailure::bad_input`]'s message: a path quotes keys of the input.
    pub fn bad_input_at(path: impl Into<String>, message: impl Into<String>) -> Self {
        NodeFailure::BadInput {
            at: Some(shorten(path.into(), MAX_MESSAGE_CHARS)),
            message: shorten(message.into(), MAX_MESSAGE_CHARS),
        }
    }

    /// A failure that is not worth retrying.
    pub fn permanent(message: impl Into<String>) -> Self {
        NodeFailure::Failed {
            message: message.into(),
            transient: false,
            store: None,
            busy: false,
        }
    }
}

impl From<dataflow_core::Error> for NodeFailure {
    fn from(err: dataflow_core::Error) -> Self {
        NodeFailure::Failed {
            transient: err.is_transient(),
            store: err.store(),
            busy: err.is_busy(),
            message: err.to_string(),
        }
    }
}

/// Longest message the runtime repeats from its input, in characters: messages quote names,
/// paths and values from a definition or an input, and a 100,000-character name must not make
/// a 100,000-character report.
pub(crate) const MAX_MESSAGE_CHARS: usize = 500;

/// `text` cut to `max` characters, with how much was left out, when it is longer.
pub(crate) fn shorten(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text,
        Some((cut, _)) => format!("{}… ({} more bytes)", &text[..cut], text.len() - cut),
    }
}

/// `input` as the node's input type `T`, or where and why it does not fit: serde's own message
/// (`invalid type: string "abc", expected f64`) with the path it failed at (`record.price`).
pub fn decode_input<T: DeserializeOwned>(input: Value) -> Result<T, NodeFailure> {
    serde_path_to_error::deserialize(input).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        // The path of an error about the input as a whole is ".".
        if path == "." {
            NodeFailure::bad_input(message)
        } else {
            NodeFailure::bad_input_at(path, message)
        }
    })
}

/// A compiled sub-workflow as this layer sees it: opaque, and run only through [`SubRuns`].
/// The workflow type lives in the layer above; naming it here would make the layers a circle
/// (a workflow holds nodes, a `Map` node holds a workflow).
pub type SubWorkflow = dyn Any + Send + Sync;

/// Why a sub-run did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubRunError {
    /// The sub-workflow ran and failed: its first error, as one line naming the node.
    #[error("{0}")]
    Failed(String),
    /// What was handed over is not a workflow the runtime can run.
    #[error("a sub-workflow must be a built Workflow")]
    NotAWorkflow,
}

/// What a node may ask of the runtime running it besides its stores: runs of a sub-workflow (a
/// `Map` runs one per element) and progress through many items. The runtime implements it.
#[async_trait]
pub trait SubRuns: Send + Sync {
    /// Runs `workflow` (a [`crate::Workflow`]) with `inputs` in `ctx` under the runtime's
    /// policies and breakers, without progress events and within the caller's admission.
    /// Returns the run's declared outputs, or why it did not succeed.
    async fn run_sub(&self, workflow: &SubWorkflow, ctx: &Context, inputs: Value) -> Result<Map<String, Value>, SubRunError>;

    /// Reports that node type `node` has finished `done` of its `total` items.
    fn progress(&self, node: &str, done: usize, total: usize);
}

/// A shared runner runs as what it shares (so `&Arc<Runtime>` gives a [`NodeEnv`] too).
#[async_trait]
impl<T: SubRuns + ?Sized> SubRuns for Arc<T> {
    async fn run_sub(&self, workflow: &SubWorkflow, ctx: &Context, inputs: Value) -> Result<Map<String, Value>, SubRunError> {
        (**self).run_sub(workflow, ctx, inputs).await
    }

    fn progress(&self, node: &str, done: usize, total: usize) {
        (**self).progress(node, done, total)
    }
}

/// What a node runs with: the stores (and tenant) of the run, and the runtime, for nodes that
/// run sub-workflows.
pub struct NodeEnv<'a> {
    /// The stores and tenant.
    pub ctx: &'a Context,
    /// The runtime running this node (a `&Runtime` coerces to it).
    pub runtime: &'a dyn SubRuns,
}

/// A node instance the scheduler can run: JSON input in, JSON output out.
#[async_trait]
pub trait DynNode: Send + Sync {
    /// What the node is.
    fn info(&self) -> &NodeInfo;
    /// JSON schema of the input.
    fn input_schema(&self) -> &Value;
    /// JSON schema of the output.
    fn output_schema(&self) -> &Value;
    /// JSON schema of the output when the node's static input (its `params`) is
    /// `static_input`, where that makes it narrower than [`DynNode::output_schema`] (a Read
    /// with `required: true` always gives a record); `None` when it does not.
    fn output_schema_given(&self, static_input: &Value) -> Option<Value> {
        let _ = static_input;
        None
    }
    /// Whether this node merges alternatives: it runs when at least one incoming connection
    /// delivered, instead of being skipped when one did not.
    fn merges(&self) -> bool {
        false
    }
    /// Whether this node routes: an output field it leaves out means "this branch is not
    /// taken", and the nodes connected to it are skipped.
    fn routes(&self) -> bool {
        false
    }
    /// Whether the node only computes (no store, no waiting), so the scheduler may run it in
    /// place instead of spawning a task for it.
    fn is_instant(&self) -> bool {
        false
    }
    /// Whether the node's work grows with its input without bound (an import that reads a
    /// file in batches, each committed on its own): the runtime's default node timeout, sized
    /// for a few store calls, does not apply to it. A `timeout_ms` the workflow gives it still
    /// does.
    fn is_unbounded(&self) -> bool {
        false
    }
    /// Runs one attempt.
    async fn run(&self, env: &NodeEnv<'_>, input: Value) -> Result<Value, NodeFailure>;
}

/// A typed [`Node`] behind the JSON interface: the input is deserialised into `N::Input` (the
/// node then validates it further) and the output serialised.
pub struct TypedNode<N: Node> {
    node: N,
    info: NodeInfo,
    input_schema: Value,
    output_schema: Value,
}

impl<N: Node> TypedNode<N> {
    /// Wraps `node`, computing its schemas once.
    pub fn new(node: N) -> Self {
        let d = node.descriptor();
        let mut stores = vec![d.store];
        if d.store != StoreKind::Relational && d.store != StoreKind::Cache {
            // Search and Graph hydrate their results from the relational store.
            stores.push(StoreKind::Relational);
        }
        let writes = matches!(
            d.kind,
            NodeKind::Create | NodeKind::Update | NodeKind::Delete | NodeKind::BulkUpsert | NodeKind::Graph
        );
        TypedNode {
            info: NodeInfo {
                type_name: d.type_name.to_string(),
                model: Some(d.model.name),
                kind: Some(d.kind),
                stores,
                writes,
                summary: d.summary.to_string(),
            },
            input_schema: node.input_schema().to_value(),
            output_schema: node.output_schema().to_value(),
            node,
        }
    }
}

#[async_trait]
impl<N: Node> DynNode for TypedNode<N> {
    fn info(&self) -> &NodeInfo {
        &self.info
    }

    fn input_schema(&self) -> &Value {
        &self.input_schema
    }

    fn output_schema(&self) -> &Value {
        &self.output_schema
    }

    fn output_schema_given(&self, static_input: &Value) -> Option<Value> {
        self.node.output_schema_given(static_input).map(|schema| schema.to_value())
    }

    async fn run(&self, env: &NodeEnv<'_>, input: Value) -> Result<Value, NodeFailure> {
        let input: N::Input = decode_input(input)?;
        let output = self.node.run(env.ctx, input).await?;
        serde_json::to_value(output).map_err(|e| NodeFailure::permanent(format!("output does not serialise: {e}")))
    }
}

/// A shared node instance.
pub type NodeRef = Arc<dyn DynNode>;

type Compute<I, O> = Box<dyn Fn(I) -> Result<O, String> + Send + Sync>;

/// A node that computes its output from its input alone (no store): scoring, voting,
/// reshaping. Typed like a generated node: the input is deserialised into `I`, the output
/// serialised from `O`, both with schemas, so connections into and out of it are checked.
pub struct ComputeNode<I, O> {
    info: NodeInfo,
    input_schema: Value,
    output_schema: Value,
    compute: Compute<I, O>,
}

impl<I, O> ComputeNode<I, O>
where
    I: serde::de::DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static,
    O: Serialize + schemars::JsonSchema + Send + Sync + 'static,
{
    /// A node registered as `type_name`; `compute` returns the output or says what is wrong.
    pub fn new(type_name: &str, summary: &str, compute: impl Fn(I) -> Result<O, String> + Send + Sync + 'static) -> Self {
        ComputeNode {
            info: NodeInfo {
                type_name: type_name.to_string(),
                model: None,
                kind: None,
                stores: Vec::new(),
                writes: false,
                summary: summary.to_string(),
            },
            input_schema: schemars::schema_for!(I).to_value(),
            output_schema: schemars::schema_for!(O).to_value(),
            compute: Box::new(compute),
        }
    }
}

#[async_trait]
impl<I, O> DynNode for ComputeNode<I, O>
where
    I: serde::de::DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static,
    O: Serialize + schemars::JsonSchema + Send + Sync + 'static,
{
    fn info(&self) -> &NodeInfo {
        &self.info
    }

    fn input_schema(&self) -> &Value {
        &self.input_schema
    }

    fn output_schema(&self) -> &Value {
        &self.output_schema
    }

    fn is_instant(&self) -> bool {
        true
    }

    async fn run(&self, _: &NodeEnv<'_>, input: Value) -> Result<Value, NodeFailure> {
        let input: I = decode_input(input)?;
        let output = (self.compute)(input).map_err(NodeFailure::permanent)?;
        serde_json::to_value(output).map_err(|e| NodeFailure::permanent(format!("output does not serialise: {e}")))
    }
}
