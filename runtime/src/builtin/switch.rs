//! `Switch`: tests its input `value` and passes it on as `then` or `else`; the nodes connected
//! to the branch not taken are skipped.

use std::cmp::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use dataflow_core::Op;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{info, params_of, shaped};
use crate::node::path::kind;
use crate::node::registry::{NodeFactory, Registry};
use crate::node::{DynNode, NodeEnv, NodeFailure, NodeInfo, NodeRef};

/// The test a `Switch` applies to its `value`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Test {
    /// `value` is present, not null, not false, not 0, not empty.
    #[default]
    Truthy,
    /// `value` is present and not null.
    Exists,
    /// `value` compared with the operand by one of the filter language's operators (those in
    /// [`COMPARISONS`]).
    Compare(Op),
}

/// The operators a `Switch` compares with: the filter language's, spelled without the `$`
/// (`op: gte`). The others (`nin`, `contains`, ...) are not offered here.
const COMPARISONS: [Op; 7] = [Op::Eq, Op::Ne, Op::Gt, Op::Gte, Op::Lt, Op::Lte, Op::In];

/// Every `op` spelling, in the order the error for an unknown one lists them.
const SPELLINGS: [&str; 9] = ["truthy", "exists", "eq", "ne", "gt", "gte", "lt", "lte", "in"];

impl Test {
    /// The YAML spelling: `truthy`, `exists`, `gte`, ...
    fn spelling(self) -> &'static str {
        match self {
            Test::Truthy => "truthy",
            Test::Exists => "exists",
            Test::Compare(op) => op.name().trim_start_matches('$'),
        }
    }
}

impl<'de> Deserialize<'de> for Test {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "truthy" => Ok(Test::Truthy),
            "exists" => Ok(Test::Exists),
            _ => COMPARISONS
                .into_iter()
                .find(|op| op.name().trim_start_matches('$') == name)
                .map(Test::Compare)
                .ok_or_else(|| serde::de::Error::unknown_variant(&name, &SPELLINGS)),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchParams {
    #[serde(default)]
    op: Test,
    #[serde(default)]
    value: Value,
}

pub(super) struct SwitchFactory;

impl NodeFactory for SwitchFactory {
    fn info(&self) -> NodeInfo {
        info(
            "Switch",
            "Tests its input `value` (params `op`: truthy, exists, eq, ne, gt, gte, lt, lte, in; `value`: the operand) and passes it on as `then` or `else`; nodes connected to the branch not taken are skipped.",
        )
    }

    fn build(&self, params: &Value, _: &Registry) -> Result<(NodeRef, Value), String> {
        let params: SwitchParams = params_of(params)?;
        if matches!(params.op, Test::Compare(_)) && params.value.is_null() {
            return Err(format!("'{}' needs an operand in 'value'", params.op.spelling()));
        }
        if params.op == Test::Compare(Op::In) && !params.value.is_array() {
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
                kind(value),
                kind(operand)
            ))),
        };
        let equal = || compare(value, operand) == Some(Ordering::Equal) || value == operand;
        let op = match self.params.op {
            Test::Truthy => return Ok(truthy(value)),
            Test::Exists => return Ok(!value.is_null()),
            Test::Compare(op) => op,
        };
        Ok(match op {
            Op::Eq => equal(),
            Op::Ne => !equal(),
            Op::Gt => ordered(&[Ordering::Greater])?,
            Op::Gte => ordered(&[Ordering::Greater, Ordering::Equal])?,
            Op::Lt => ordered(&[Ordering::Less])?,
            Op::Lte => ordered(&[Ordering::Less, Ordering::Equal])?,
            Op::In => operand
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i == value || compare(i, value) == Some(Ordering::Equal))),
            // Not in COMPARISONS, so never deserialised.
            other => return Err(NodeFailure::permanent(format!("'{}' is not a Switch test", other.name()))),
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
        assert!(switch(json!({"op": "ne", "value": 2})).test(&json!(3)).unwrap());
        assert!(switch(json!({"op": "lte", "value": 2})).test(&json!(2)).unwrap());
        assert!(!switch(json!({})).test(&json!("")).unwrap());
        assert!(switch(json!({"op": "exists"})).test(&json!(0)).unwrap());
        assert!(switch(json!({"op": "lt", "value": 3})).test(&json!("x")).is_err());
    }

    #[test]
    fn switch_params_are_checked_when_built() {
        let registry = Registry::new();
        let err = |params: Value| SwitchFactory.build(&params, &registry).err().expect("refused");
        assert_eq!(err(json!({"op": "gt"})), "'gt' needs an operand in 'value'");
        assert_eq!(err(json!({"op": "in", "value": 3})), "'in' needs a list in 'value'");
        assert!(err(json!({"op": "nope"})).starts_with("unknown variant `nope`, expected one of `truthy`, `exists`, `eq`"));
        assert!(err(json!({"op": "nin", "value": [1]})).starts_with("unknown variant `nin`"));
        assert!(SwitchFactory.build(&json!({"op": "gt", "value": 3}), &registry).is_ok());
    }
}
