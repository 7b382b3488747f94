//! Workflow definitions as written, in YAML or through the builder: [`WorkflowDef`] and its
//! parts (inputs, nodes with their retry policies, connections, outputs), and the
//! [`Problems`] validation finds in them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The name connections use for the workflow's own inputs: `input.product.name`.
pub const INPUT: &str = "input";

/// Most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 10;

/// How often and how patiently a node is retried after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, 1 to 10 (1: no retry).
    #[serde(default = "RetryPolicy::default_attempts")]
    pub attempts: u32,
    /// Backoff before the second attempt; doubles for each further one, with full jitter.
    #[serde(default = "RetryPolicy::default_backoff_ms")]
    pub backoff_ms: u64,
    /// Longest backoff.
    #[serde(default = "RetryPolicy::default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl RetryPolicy {
    fn default_attempts() -> u32 {
        3
    }
    fn default_backoff_ms() -> u64 {
        50
    }
    fn default_max_backoff_ms() -> u64 {
        2_000
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: Self::default_attempts(),
            backoff_ms: Self::default_backoff_ms(),
            max_backoff_ms: Self::default_max_backoff_ms(),
        }
    }
}

/// One declared input of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    /// `string`, `integer`, `number`, `boolean`, `object`, `array` or `any` (default).
    #[serde(rename = "type", default = "InputDef::any")]
    pub ty: String,
    /// Whether a run must give it (default: yes, unless there is a default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The value when a run does not give one. `default: null` is a default too
    /// (`Some(Value::Null)`): the input is optional and null when not given.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// What it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A key that is written is `Some`, whatever its value: serde's `Option` would read `null` as
/// "not written" and make `default: null` mean "no default".
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl InputDef {
    fn any() -> String {
        "any".into()
    }

    /// An input of JSON type `ty`.
    pub fn of(ty: &str) -> Self {
        InputDef {
            ty: ty.into(),
            required: None,
            default: None,
            description: String::new(),
        }
    }

    /// Whether a run must give it.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }
}

/// One node instance of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDef {
    /// A registered node type, e.g. `ProductSearchNode`.
    #[serde(rename = "type")]
    pub node_type: String,
    /// Static input values (generated nodes) or configuration (built-in nodes).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
    /// Time limit of one attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retry policy, replacing the runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Nodes that must finish before this one, without passing data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

/// `from` (`node.output.path` or `input.name.path`) feeds `to` (`node.input.path`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionDef {
    /// Where the value comes from.
    pub from: String,
    /// Where it goes.
    pub to: String,
}

/// A whole workflow as written: in YAML or through [`WorkflowBuilder`](crate::WorkflowBuilder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    /// The workflow's name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Declared inputs, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputDef>,
    /// Node instances, by name, in the order written.
    #[serde(with = "ordered_nodes")]
    pub nodes: Vec<(String, NodeDef)>,
    /// Data flowing between nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionDef>,
    /// The workflow's outputs: name → `node.output.path`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

mod ordered_nodes {
    //! `nodes:` is a map in the file and an ordered list in memory.
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    use super::NodeDef;

    pub fn serialize<S: Serializer>(nodes: &[(String, NodeDef)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(nodes.len()))?;
        for (name, def) in nodes {
            map.serialize_entry(name, def)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, NodeDef)>, D::Error> {
        struct Nodes;
        impl<'de> Visitor<'de> for Nodes {
            type Value = Vec<(String, NodeDef)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of node names to nodes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, NodeDef>()? {
                    out.push((k, v));
                }
                Ok(out)
            }
        }
        d.deserialize_map(Nodes)
    }
}

/// One thing wrong with a workflow: where (a JSON pointer into the definition, e.g.
/// `/nodes/similar/params/qeury` or `/connections/3/to`) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// JSON pointer into the workflow definition.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// The problems, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}", if p.pointer.is_empty() { "/" } else { &p.pointer }, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// `segment` escaped for a JSON pointer.
pub(crate) fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}
