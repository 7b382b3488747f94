//! The runtime's built-in nodes beside the generated ones, the top layer of the runtime:
//! `Switch` (route on a condition), `Merge` (join alternatives), `Map` (a sub-workflow per
//! list element) and `Transform` (select, rename and format fields). [`register`] adds them
//! to a registry; [`Registry::new`] is a registry holding them.

mod map;
mod merge;
mod switch;
mod transform;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

pub use map::MAX_MAP_CONCURRENCY;

use crate::node::NodeInfo;
use crate::node::registry::Registry;

/// Registers the built-in nodes (`Switch`, `Merge`, `Transform`, `Map`) in `registry`.
pub fn register(registry: &mut Registry) -> &mut Registry {
    registry
        .register_factory(Arc::new(switch::SwitchFactory))
        .register_factory(Arc::new(merge::MergeFactory))
        .register_factory(Arc::new(transform::TransformFactory))
        .register_factory(Arc::new(map::MapFactory))
}

impl Registry {
    /// A registry with the built-in nodes (`Switch`, `Merge`, `Map`, `Transform`) only.
    pub fn new() -> Self {
        let mut registry = Registry::empty();
        register(&mut registry);
        registry
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// The accessors every built-in node shares: its info and its two schemas, held in fields
/// `info`, `input` and `output`.
macro_rules! shaped {
    () => {
        fn info(&self) -> &crate::node::NodeInfo {
            &self.info
        }
        fn input_schema(&self) -> &serde_json::Value {
            &self.input
        }
        fn output_schema(&self) -> &serde_json::Value {
            &self.output
        }
    };
}
use shaped;

fn info(name: &str, summary: &str) -> NodeInfo {
    NodeInfo {
        type_name: name.to_string(),
        model: None,
        kind: None,
        stores: Vec::new(),
        writes: false,
        summary: summary.to_string(),
    }
}

fn params_of<T: for<'de> Deserialize<'de> + Default>(params: &Value) -> Result<T, String> {
    match params {
        Value::Null => Ok(T::default()),
        _ => serde_json::from_value(params.clone()).map_err(|e| e.to_string()),
    }
}

fn open_object() -> Value {
    json!({"type": "object", "additionalProperties": true})
}
