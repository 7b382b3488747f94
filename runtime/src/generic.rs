//! The runtime's own nodes beside the generated ones: `Switch` (route on a condition),
//! `Merge` (join alternatives), `Map` (a sub-workflow per list element) and `Transform`
//! (select, rename and format fields).

use std::cmp::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::exec::RunStatus;
use crate::node::{DynNode, NodeEnv, NodeFailure, NodeInfo, NodeRef};
use crate::path::FieldPath;
use crate::registry::{NodeFactory, Registry};
use crate::workflow::{Workflow, WorkflowDef};

/// The accessors every generic node shares: its info and its two schemas, held in fields
/// `info`, `input` and `output`.
macro_rules! shaped {
    () => {
        fn info(&self) -> &NodeInfo {
            &self.info
        }
        fn input_schema(&self) -> &Value {
            &self.input
        }
        fn output_schema(&self) -> &Value {
            &self.output
        }
    };
}

pub(crate) fn register(registry: &mut Registry) {
    registry
        .register_factory(Arc::new(SwitchFactory))
        .register_factory(Arc::new(MergeFactory))
        .register_factory(Arc::new(TransformFactory))
        .register_factory(Arc::new(MapFactory));
}

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

// ---------------------------------------------------------------------------------------------
// Switch

/// The test a `Switch` applies to its `value`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Test {
    /// `value` is present, not null, not false, not 0, not empty.
    #[default]
    Truthy,
    /// `value` is present and not null.
    Exists,
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    /// `value` is one of the operand's elements.
    In,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchParams {
    #[serde(default)]
    op: Test,
    #[serde(default)]
    value: Value,
}

struct SwitchFactory;

impl NodeFactory for SwitchFactory {
    fn info(&self) -> NodeInfo {
        info(
            "Switch",
            "Tests its input `value` (params `op`: truthy, exists, eq, ne, gt, gte, lt, lte, in; `value`: the operand) and passes it on as `then` or `else`; nodes connected to the branch not taken are skipped.",
        )
    }

    fn build(&self, params: &Value, _: &Registry) -> Result<(NodeRef, Value), String> {
        let params: SwitchParams = params_of(params)?;
        let needs_operand = !matches!(params.op, Test::Truthy | Test::Exists);
        if needs_operand && params.value.is_null() {
            return Err(format!("'{:?}' needs an operand in 'value'", params.op).to_lowercase());
        }
        if params.op == Test::In && !params.value.is_array() {
            return Err("'in' needs a list in 'value'".into());
        }
        Ok((
            Arc::new(Switch {
                info: self.info(),
                params,
                input: json!({"type": "object", "properties": {"value": {}}, "additionalProperties": false}),
                output: json!({"type": "object", "properties": {"matched": {"type": "boolean"}, "then": {}, "else": {}}}),
            }),
            Value::Null,
        ))
    }
}

struct Switch {
    info: NodeInfo,
    params: SwitchParams,
    input: Value,
    output: Value,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Switch {
    fn test(&self, value: &Value) -> Result<bool, NodeFailure> {
        let operand = &self.params.value;
        let ordered = |want: &[Ordering]| match compare(value, operand) {
            Some(o) => Ok(want.contains(&o)),
            None => Err(NodeFailure::permanent(format!(
                "cannot order a {} against a {}",
                crate::path::kind(value),
                crate::path::kind(operand)
            ))),
        };
        Ok(match self.params.op {
            Test::Truthy => truthy(value),
            Test::Exists => !value.is_null(),
            Test::Eq => compare(value, operand) == Some(Ordering::Equal) || value == operand,
            Test::Ne => !(compare(value, operand) == Some(Ordering::Equal) || value == operand),
            Test::Gt => ordered(&[Ordering::Greater])?,
            Test::Gte => ordered(&[Ordering::Greater, Ordering::Equal])?,
            Test::Lt => ordered(&[Ordering::Less])?,
            Test::Lte => ordered(&[Ordering::Less, Ordering::Equal])?,
            Test::In => operand
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i == value || compare(i, value) == Some(Ordering::Equal))),
        })
    }
}

#[async_trait]
impl DynNode for Switch {
    shaped!();
    fn is_instant(&self) -> bool {
        true
    }
    fn routes(&self) -> bool {
        true
    }
    async fn run(&self, _: &NodeEnv<'_>, input: Value) -> Result<Value, NodeFailure> {
        let value = input.get("value").cloned().unwrap_or(Value::Null);
        let matched = self.test(&value)?;
        let branch = if matched { "then" } else { "else" };
        Ok(json!({"matched": matched, branch: value}))
    }
}

// ---------------------------------------------------------------------------------------------
// Merge

struct MergeFactory;

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

// ---------------------------------------------------------------------------------------------
// Transform

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformParams {
    /// Output field → a path into the input (`record.id`) or a template with `{path}`
    /// placeholders (`"{record.name}: {record.description}"`).
    #[serde(default)]
    select: Map<String, Value>,
}

enum Selector {
    Path(FieldPath),
    Template(Vec<TemplatePart>),
}

enum TemplatePart {
    Text(String),
    Field(FieldPath),
}

fn parse_template(text: &str) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TemplatePart::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("template {text:?} has an unclosed '{{'"))?
            + open;
        parts.push(TemplatePart::Field(FieldPath::parse(rest[open + 1..close].trim())?));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_string()));
    }
    Ok(parts)
}

struct TransformFactory;

impl NodeFactory for TransformFactory {
    fn info(&self) -> NodeInfo {
        info(
            "Transform",
            "Builds an object from its inputs: params `select` maps each output field to an input path (`record.id`, `hits.*.record.id`) or a template (`\"{record.name}: {record.description}\"`).",
        )
    }

    fn build(&self, params: &Value, _: &Registry) -> Result<(NodeRef, Value), String> {
        let params: TransformParams = params_of(params)?;
        let mut selectors = Vec::new();
        let mut properties = Map::new();
        for (out, source) in &params.select {
            let text = source.as_str().ok_or_else(|| {
                format!(
                    "select.{out}: expected a path or a template string, got a {}",
                    crate::path::kind(source)
                )
            })?;
            let selector = if text.contains('{') {
                properties.insert(out.clone(), json!({"type": "string"}));
                Selector::Template(parse_template(text).map_err(|e| format!("select.{out}: {e}"))?)
            } else {
                properties.insert(out.clone(), json!({}));
                Selector::Path(FieldPath::parse(text).map_err(|e| format!("select.{out}: {e}"))?)
            };
            selectors.push((out.clone(), selector));
        }
        Ok((
            Arc::new(Transform {
                info: self.info(),
                selectors,
                input: open_object(),
                output: json!({"type": "object", "properties": properties, "additionalProperties": false}),
            }),
            Value::Null,
        ))
    }
}

struct Transform {
    info: NodeInfo,
    selectors: Vec<(String, Selector)>,
    input: Value,
    output: Value,
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[async_trait]
impl DynNode for Transform {
    shaped!();
    fn is_instant(&self) -> bool {
        true
    }
    async fn run(&self, _: &NodeEnv<'_>, input: Value) -> Result<Value, NodeFailure> {
        let mut out = Map::new();
        for (name, selector) in &self.selectors {
            let value = match selector {
                Selector::Path(path) => path.get(&input).unwrap_or(Value::Null),
                Selector::Template(parts) => Value::String(
                    parts
                        .iter()
                        .map(|p| match p {
                            TemplatePart::Text(t) => t.clone(),
                            TemplatePart::Field(f) => f.get(&input).map(|v| text_of(&v)).unwrap_or_default(),
                        })
                        .collect(),
                ),
            };
            out.insert(name.clone(), value);
        }
        Ok(Value::Object(out))
    }
}

// ---------------------------------------------------------------------------------------------
// Map

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

struct MapFactory;

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
                return Err(NodeFailure::BadInput(format!(
                    "'items' must be a list, got {}",
                    other.map_or("nothing", crate::path::kind)
                )));
            }
        };
        let with = match input.get("with") {
            Some(Value::Object(map)) => map.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(other) => {
                return Err(NodeFailure::BadInput(format!(
                    "'with' must be an object, got a {}",
                    crate::path::kind(other)
                )));
            }
        };
        let total = items.len();
        let quiet = env.runtime.quiet();
        let runs = futures::stream::iter(items.into_iter().enumerate().map(|(i, item)| {
            let mut inputs = with.clone();
            inputs.insert(self.item.clone(), item);
            let quiet = &quiet;
            async move { (i, quiet.run(workflow, env.ctx, Value::Object(inputs)).await) }
        }))
        .buffered(self.concurrency);
        futures::pin_mut!(runs);
        let mut results = Vec::with_capacity(total);
        let mut done = 0;
        while let Some((i, report)) = runs.next().await {
            done += 1;
            env.runtime.progress(&self.info.type_name, done, total);
            if report.status != RunStatus::Succeeded {
                return Err(NodeFailure::permanent(format!(
                    "element {i}: {}",
                    report.error.unwrap_or_else(|| "the sub-workflow did not succeed".into())
                )));
            }
            results.push(Value::Object(report.outputs));
        }
        Ok(json!({"results": results}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(params: Value) -> Switch {
        let p: SwitchParams = serde_json::from_value(params).unwrap();
        Switch {
            info: info("Switch", ""),
            params: p,
            input: Value::Null,
            output: Value::Null,
        }
    }

    #[test]
    fn switch_tests_compare_numbers_strings_and_lists() {
        assert!(switch(json!({"op": "gt", "value": 0.5})).test(&json!(0.7)).unwrap());
        assert!(!switch(json!({"op": "gt", "value": 0.5})).test(&json!(0.5)).unwrap());
        assert!(switch(json!({"op": "gte", "value": 1})).test(&json!(1.0)).unwrap());
        assert!(switch(json!({"op": "in", "value": ["a", "b"]})).test(&json!("b")).unwrap());
        assert!(switch(json!({"op": "eq", "value": {"x": 1}})).test(&json!({"x": 1})).unwrap());
        assert!(!switch(json!({})).test(&json!("")).unwrap());
        assert!(switch(json!({"op": "exists"})).test(&json!(0)).unwrap());
        assert!(switch(json!({"op": "lt", "value": 3})).test(&json!("x")).is_err());
    }

    #[test]
    fn switch_params_are_checked_when_built() {
        let registry = Registry::new();
        assert!(SwitchFactory.build(&json!({"op": "gt"}), &registry).is_err());
        assert!(SwitchFactory.build(&json!({"op": "in", "value": 3}), &registry).is_err());
        assert!(SwitchFactory.build(&json!({"op": "nope"}), &registry).is_err());
        assert!(SwitchFactory.build(&json!({"op": "gt", "value": 3}), &registry).is_ok());
    }

    #[test]
    fn templates_split_text_and_fields() {
        let parts = parse_template("{record.name}: {record.description}!").unwrap();
        assert_eq!(parts.len(), 4);
        assert!(parse_template("{open").is_err());
    }
}
