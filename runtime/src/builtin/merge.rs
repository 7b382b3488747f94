//! `Merge`: joins alternative branches; runs when at least one incoming connection delivered.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{info, open_object, shaped};
use crate::node::registry::{NodeFactory, Registry};
use crate::node::{DynNode, NodeEnv, NodeFailure, NodeInfo, NodeRef};

pub(super) struct MergeFactory;

impl NodeFactory for MergeFactory {
    fn info(&self) -> NodeInfo {
        info(
            "Merge",
            "Joins alternative branches: runs when at least one incoming connection delivered; `value` is the first delivered input (in connection order), `values` all of them by input name.",
        )
    }

    fn build(&self, params: &Value, _: &Registry) -> Result<(NodeRef, Value), String> {
        if !(params.is_null() || params.as_object().is_some_and(Map::is_empty)) {
            return Err("Merge takes no parameters".into());
        }
        Ok((
            Arc::new(Merge {
                info: self.info(),
                input: open_object(),
                output: json!({"type": "object", "properties": {"value": {}, "values": {"type": "object"}}}),
            }),
            Value::Null,
        ))
    }
}

struct Merge {
    info: NodeInfo,
    input: Value,
    output: Value,
}

#[async_trait]
impl DynNode for Merge {
    shaped!();
    fn is_instant(&self) -> bool {
        true
    }
    fn merges(&self) -> bool {
        true
    }
    async fn run(&self, _: &NodeEnv<'_>, input: Value) -> Result<Value, NodeFailure> {
        // The scheduler delivers inputs in connection order and records that order in `$order`.
        let mut values = match input {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let order = values.remove("$order");
        let first = order
            .as_ref()
            .and_then(Value::as_array)
            .and_then(|names| names.iter().filter_map(Value::as_str).find_map(|n| values.get(n).cloned()))
            .unwrap_or(Value::Null);
        Ok(json!({"value": first, "values": values}))
    }
}
