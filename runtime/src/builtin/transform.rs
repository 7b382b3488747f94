//! `Transform`: builds an object from its input, each output field a path into the input or a
//! template with `{path}` placeholders.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{info, open_object, params_of, shaped};
use crate::node::path::{FieldPath, PathError, kind};
use crate::node::registry::{NodeFactory, Registry};
use crate::node::{DynNode, NodeEnv, NodeFailure, NodeInfo, NodeRef};

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

/// Why a `Transform` template does not parse.
#[derive(Debug, thiserror::Error)]
enum TemplateError {
    #[error("template {0:?} has an unclosed '{{'")]
    Unclosed(String),
    #[error(transparent)]
    Path(#[from] PathError),
}

fn parse_template(text: &str) -> Result<Vec<TemplatePart>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TemplatePart::Text(rest[..open].to_string()));
        }
        let close = rest[open..].find('}').ok_or_else(|| TemplateError::Unclosed(text.to_string()))? + open;
        parts.push(TemplatePart::Field(FieldPath::parse(rest[open + 1..close].trim())?));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_string()));
    }
    Ok(parts)
}

pub(super) struct TransformFactory;

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
            let text = source
                .as_str()
                .ok_or_else(|| format!("select.{out}: expected a path or a template string, got a {}", kind(source)))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_text_and_fields() {
        let parts = parse_template("{record.name}: {record.description}!").unwrap();
        assert_eq!(parts.len(), 4);
        assert!(parse_template("{open").is_err());
    }
}
