//! `Map`: runs a sub-workflow for each element of a list, a bounded number at once, through the
//! runtime's [`SubRuns`](crate::node::SubRuns).

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{info, shaped};
use crate::node::path::kind;
use crate::node::registry::{NodeFactory, Registry};
use crate::node::{DynNode, NodeEnv, NodeFailure, NodeInfo, NodeRef};
use crate::workflow::{Workflow, WorkflowDef};

fn default_concurrency() -> usize {
    8
}

fn default_item() -> String {
    "item".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MapParams {
    /// The sub-workflow run for each element.
    workflow: WorkflowDef,
    /// Sub-runs at once.
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    /// The sub-workflow input that receives the element.
    #[serde(default = "default_item")]
    item: String,
}

pub(super) struct MapFactory;

/// Most sub-runs a `Map` runs at once.
pub const MAX_MAP_CONCURRENCY: usize = 256;

impl NodeFactory for MapFactory {
    fn info(&self) -> NodeInfo {
        info(
            "Map",
            "Runs a sub-workflow (params `workflow`) for each element of input `items`, at most `concurrency` at once (default 8); each element goes to the sub-workflow input named by `item` (default `item`), the object `with` to its other inputs. Output `results`: each run's outputs, in order.",
        )
    }

    fn build(&self, params: &Value, registry: &Registry) -> Result<(NodeRef, Value), String> {
        let input = json!({
            "type": "object",
            "properties": {"items": {"type": "array"}, "with": {"type": "object"}},
            "required": ["items"],
            "additionalProperties": false
        });
        let output = json!({"type": "object", "properties": {"results": {"type": "array"}}});
        if params.is_null() {
            // The registry's listing: the shape without a sub-workflow.
            return Ok((
                Arc::new(MapNode {
                    info: self.info(),
                    workflow: None,
                    concurrency: 1,
                    item: default_item(),
                    input,
                    output,
                }),
                Value::Null,
            ));
        }
        let params: MapParams = serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
        if params.concurrency == 0 || params.concurrency > MAX_MAP_CONCURRENCY {
            return Err(format!(
                "concurrency must be 1 to {MAX_MAP_CONCURRENCY}, got {}",
                params.concurrency
            ));
        }
        let workflow = Workflow::build(params.workflow, registry).map_err(|problems| {
            let lines: Vec<String> = problems.iter().map(|p| format!("workflow{}: {}", p.pointer, p.message)).collect();
            lines.join("; ")
        })?;
        if !workflow.inputs().contains_key(&params.item) {
            return Err(format!("the sub-workflow has no input '{}' to receive each element", params.item));
        }
        Ok((
            Arc::new(MapNode {
                info: self.info(),
                workflow: Some(Arc::new(workflow)),
                concurrency: params.concurrency,
                item: params.item,
                input,
                output,
            }),
            Value::Null,
        ))
    }
}

struct MapNode {
    info: NodeInfo,
    workflow: Option<Arc<Workflow>>,
    concurrency: usize,
    item: String,
    input: Value,
    output: Value,
}

#[async_trait]
impl DynNode for MapNode {
    shaped!();
    async fn run(&self, env: &NodeEnv<'_>, input: Value) -> Result<Value, NodeFailure> {
        let workflow = self
            .workflow
            .as_ref()
            .ok_or_else(|| NodeFailure::permanent("Map has no sub-workflow"))?;
        let items = match input.get("items") {
            Some(Value::Array(items)) => items.clone(),
            other => {
                return Err(NodeFailure::bad_input_at(
                    "items",
                    format!("must be a list, got {}", other.map_or("nothing", kind)),
                ));
            }
        };
        let with = match input.get("with") {
            Some(Value::Object(map)) => map.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(other) => {
                return Err(NodeFailure::bad_input_at(
                    "with",
                    format!("must be an object, got a {}", kind(other)),
                ));
            }
        };
        let total = items.len();
        let sub: &crate::node::SubWorkflow = &**workflow;
        let runs = futures::stream::iter(items.into_iter().enumerate().map(|(i, item)| {
            let mut inputs = with.clone();
            inputs.insert(self.item.clone(), item);
            // Each item's writes have their own effect keys (see `Context::within`).
            let ctx = env.ctx.within(i);
            async move { (i, env.runtime.run_sub(sub, &ctx, Value::Object(inputs)).await) }
        }))
        .buffered(self.concurrency);
        futures::pin_mut!(runs);
        let mut results = Vec::with_capacity(total);
        let mut done = 0;
        while let Some((i, outcome)) = runs.next().await {
            done += 1;
            env.runtime.progress(&self.info.type_name, done, total);
            let outputs = outcome.map_err(|error| NodeFailure::permanent(format!("element {i}: {error}")))?;
            results.push(Value::Object(outputs));
        }
        Ok(json!({"results": results}))
    }
}
