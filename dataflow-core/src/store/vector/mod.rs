//! The vector store: embeddings of each model's `embed` fields, searched by similarity.
//!
//! A backend holds one collection per model, named by the model's table behind a prefix the
//! backend was built with. Documents are keyed by the row's primary key and carry metadata:
//! the primary key, the tenant, the row version and the model's indexed scalar fields.

#[cfg(feature = "chroma")]
pub mod chroma;
pub mod embedded;
pub mod index;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value as Json};

use crate::error::{Error, FieldErrors, Result};
use crate::model::filter::{Filter, Op};
use crate::model::values::{check_type, printable};
use crate::model::{FieldMeta, FieldType, ModelMeta};

#[cfg(feature = "chroma")]
pub use chroma::ChromaStore;
pub use embedded::{EmbeddedVectors, IndexStatus};
pub use index::IndexSettings;

/// Most results one query may ask for.
pub const MAX_QUERY_RESULTS: usize = 1000;

/// Checks a collection prefix: 1 to 64 of `[A-Za-z0-9_.-]`, starting with a letter or digit
/// (what Chroma accepts in a collection name).
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix.starts_with(|c: char| c.is_ascii_alphanumeric())
        && prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "vector_prefix must be 1 to 64 of [A-Za-z0-9_.-] starting with a letter or digit, got {prefix:?}"
        )))
    }
}

/// One stored document: its id, vector, text and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorDoc {
    /// The row's primary key, as text.
    pub id: String,
    /// The embedding.
    pub embedding: Vec<f32>,
    /// The text that was embedded.
    pub document: String,
    /// Scalar metadata (strings, numbers, booleans; no nulls).
    pub metadata: Map<String, Json>,
}

/// One query result, nearest first.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    /// The document's id (the row's primary key, as text).
    pub id: String,
    /// Cosine distance to the query vector, from 0 (same direction) to 2.
    pub distance: f32,
    /// The document's metadata.
    pub metadata: Map<String, Json>,
}

/// A vector collection store (Chroma, or the embedded backend).
#[async_trait]
pub trait VectorStore: Send + Sync {
    /// The backend's name, e.g. `chroma`.
    fn backend(&self) -> &'static str;

    /// The name `collection` is stored under (`{prefix}{collection}`).
    fn stored_name(&self, collection: &str) -> String;

    /// Inserts or replaces documents by id, creating the collection on first use.
    async fn upsert(&self, collection: &'static str, docs: Vec<VectorDoc>) -> Result<()>;

    /// Removes documents by id; ids that are not stored are ignored.
    async fn delete(&self, collection: &'static str, ids: &[String]) -> Result<()>;

    /// The `top_k` documents nearest to `vector` among those `filter` admits, nearest first.
    async fn query(&self, collection: &'static str, vector: &[f32], top_k: usize, filter: Option<&MetaFilter>) -> Result<Vec<VectorHit>>;

    /// Stored documents with these ids, or one page of all documents (`ids = None`), in no
    /// particular order.
    async fn get(&self, collection: &'static str, ids: Option<&[String]>, limit: usize, offset: usize) -> Result<Vec<VectorDoc>>;

    /// How many documents the collection holds (0 when it does not exist).
    async fn count(&self, collection: &'static str) -> Result<u64>;

    /// Removes the collection and its documents.
    async fn drop_collection(&self, collection: &'static str) -> Result<()>;

    /// A round trip to the server; returns its latency.
    async fn ping(&self) -> Result<Duration>;
}

/// A comparison a metadata filter can make: the part of the filter language's [`Op`] that
/// vector stores evaluate (Chroma orders numbers only and has no text matching or null test).
/// A type of its own, not [`Op`] itself, so that a [`MetaFilter`] cannot hold an operator
/// the stores cannot run; its spelling is [`Op`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Equal to one of a non-empty list.
    In,
    /// Equal to none of a non-empty list.
    Nin,
}

impl MetaOp {
    /// The operator's name in the filter language, e.g. `$gte`.
    pub fn name(self) -> &'static str {
        Op::from(self).name()
    }
}

impl From<MetaOp> for Op {
    fn from(op: MetaOp) -> Op {
        match op {
            MetaOp::Eq => Op::Eq,
            MetaOp::Ne => Op::Ne,
            MetaOp::Gt => Op::Gt,
            MetaOp::Gte => Op::Gte,
            MetaOp::Lt => Op::Lt,
            MetaOp::Lte => Op::Lte,
            MetaOp::In => Op::In,
            MetaOp::Nin => Op::Nin,
        }
    }
}

impl TryFrom<Op> for MetaOp {
    type Error = Op;

    /// The vector-store comparison of a filter operator, or the operator back when vector
    /// stores cannot evaluate it.
    fn try_from(op: Op) -> std::result::Result<MetaOp, Op> {
        Ok(match op {
            Op::Eq => MetaOp::Eq,
            Op::Ne => MetaOp::Ne,
            Op::Gt => MetaOp::Gt,
            Op::Gte => MetaOp::Gte,
            Op::Lt => MetaOp::Lt,
            Op::Lte => MetaOp::Lte,
            Op::In => MetaOp::In,
            Op::Nin => MetaOp::Nin,
            Op::Contains | Op::StartsWith | Op::IsNull => return Err(op),
        })
    }
}

/// A filter over document metadata, checked against a model: keys are metadata keys of the
/// model (never input text), values have the field's type.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaFilter {
    /// Every sub-filter holds (at least two).
    And(Vec<MetaFilter>),
    /// At least one sub-filter holds (at least two).
    Or(Vec<MetaFilter>),
    /// `key op value`.
    Compare {
        /// The metadata key: a field name from the model, or `tenant_id`.
        key: &'static str,
        /// The comparison.
        op: MetaOp,
        /// A scalar, or a non-empty list of scalars for `In`/`Nin`.
        value: Json,
    },
    /// Matches no document (an empty `$or` or `$in`).
    Nothing,
}

/// The metadata key of the tenant on multi-tenant models.
pub const TENANT_KEY: &str = "tenant_id";
/// The metadata key of the row version.
pub const VERSION_KEY: &str = "version";

/// The fields a model's documents carry as metadata: the primary key and the indexed, unique
/// and foreign-key scalar fields.
pub fn metadata_fields(meta: &'static ModelMeta) -> impl Iterator<Item = &'static FieldMeta> {
    meta.fields.iter().filter(move |f| {
        f.ty != FieldType::Json && (f.primary_key || f.indexed || f.unique || meta.relations.iter().any(|r| r.field == f.name))
    })
}

impl MetaFilter {
    /// All of `filters`, simplified: nothing when any is `Nothing`, the filter itself when one.
    pub fn all(mut filters: Vec<MetaFilter>) -> Option<MetaFilter> {
        if filters.contains(&MetaFilter::Nothing) {
            return Some(MetaFilter::Nothing);
        }
        match filters.len() {
            0 => None,
            1 => filters.pop(),
            _ => Some(MetaFilter::And(filters)),
        }
    }

    /// Checks a [`Filter`] against the metadata of `meta`'s documents. Returns `None` when it
    /// matches every document. Unknown or unindexed fields and operators a vector store cannot
    /// evaluate are errors naming them, all reported at once.
    pub fn from_filter(meta: &'static ModelMeta, filter: &Filter) -> Result<Option<MetaFilter>> {
        let mut errors = FieldErrors::default();
        let checked = convert(meta, filter, &mut errors, 0);
        if errors.is_empty() {
            Ok(checked)
        } else {
            Err(Error::invalid(meta.name, "filter", errors.to_string()))
        }
    }

    /// Whether a document with `metadata` passes the filter (the embedded backend's evaluator,
    /// and the reference the Chroma translation is tested against).
    pub fn matches(&self, metadata: &Map<String, Json>) -> bool {
        match self {
            MetaFilter::And(items) => items.iter().all(|f| f.matches(metadata)),
            MetaFilter::Or(items) => items.iter().any(|f| f.matches(metadata)),
            MetaFilter::Nothing => false,
            MetaFilter::Compare { key, op, value } => {
                let Some(actual) = metadata.get(*key) else {
                    return matches!(op, MetaOp::Ne | MetaOp::Nin);
                };
                match op {
                    MetaOp::Eq => scalar_eq(actual, value),
                    MetaOp::Ne => !scalar_eq(actual, value),
                    MetaOp::In => value.as_array().is_some_and(|l| l.iter().any(|v| scalar_eq(actual, v))),
                    MetaOp::Nin => !value.as_array().is_some_and(|l| l.iter().any(|v| scalar_eq(actual, v))),
                    MetaOp::Gt | MetaOp::Gte | MetaOp::Lt | MetaOp::Lte => {
                        let (Some(a), Some(b)) = (actual.as_f64(), value.as_f64()) else {
                            return false;
                        };
                        match op {
                            MetaOp::Gt => a > b,
                            MetaOp::Gte => a >= b,
                            MetaOp::Lt => a < b,
                            _ => a <= b,
                        }
                    }
                }
            }
        }
    }
}

fn scalar_eq(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn convert(meta: &'static ModelMeta, filter: &Filter, errors: &mut FieldErrors, depth: usize) -> Option<MetaFilter> {
    if depth > crate::model::filter::MAX_FILTER_DEPTH {
        errors.push(
            "$",
            format!("filters nest deeper than {} levels", crate::model::filter::MAX_FILTER_DEPTH),
        );
        return None;
    }
    match filter {
        Filter::And(items) => {
            let parts: Vec<MetaFilter> = items.iter().filter_map(|f| convert(meta, f, errors, depth + 1)).collect();
            MetaFilter::all(parts)
        }
        Filter::Or(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match convert(meta, item, errors, depth + 1) {
                    // One branch that matches everything makes the whole `$or` match everything.
                    None => return None,
                    Some(MetaFilter::Nothing) => {}
                    Some(f) => parts.push(f),
                }
            }
            match parts.len() {
                0 => Some(MetaFilter::Nothing),
                1 => parts.pop(),
                _ => Some(MetaFilter::Or(parts)),
            }
        }
        Filter::Not(_) => {
            errors.push("$not", "search filters cannot negate a filter; use $ne or $nin");
            None
        }
        Filter::Compare { field, op, value } => {
            let Some(f) = meta.field(field) else {
                errors.push(printable(field), crate::model::values::unknown_field_message(meta, field));
                return None;
            };
            if !metadata_fields(meta).any(|m| m.name == f.name) {
                let usable: Vec<&str> = metadata_fields(meta).map(|m| m.name).collect();
                errors.push(
                    f.name,
                    format!(
                        "is not stored with {}'s vectors; search filters can use: {}",
                        meta.name,
                        usable.join(", ")
                    ),
                );
                return None;
            }
            match compare(f, *op, value) {
                Ok(m) => m,
                Err(msg) => {
                    errors.push(f.name, format!("{}: {msg}", op.name()));
                    None
                }
            }
        }
    }
}

/// One comparison; `Ok(None)` when it admits every document (`$nin []`).
fn compare(f: &'static FieldMeta, op: Op, value: &Json) -> Result<Option<MetaFilter>, String> {
    let typed = |v: &Json| -> Result<Json, String> {
        if v.is_null() {
            return Err("search filters cannot test for null".into());
        }
        check_type(f, v).map_err(|m| format!("the value {m}"))
    };
    let Ok(op) = MetaOp::try_from(op) else {
        return Err("is not available in search filters (use a List node for text matching and nulls)".into());
    };
    if matches!(op, MetaOp::Gt | MetaOp::Gte | MetaOp::Lt | MetaOp::Lte) && !f.ty.is_numeric() {
        return Err("search filters order numbers only".into());
    }
    match op {
        MetaOp::In | MetaOp::Nin => {
            let Json::Array(items) = value else {
                return Err("expects an array of values".into());
            };
            if items.len() > crate::model::filter::MAX_IN_LIST {
                return Err(format!(
                    "accepts at most {} values, got {}",
                    crate::model::filter::MAX_IN_LIST,
                    items.len()
                ));
            }
            let values = items.iter().map(typed).collect::<Result<Vec<_>, _>>()?;
            if values.is_empty() {
                // `$in []` admits nothing; `$nin []` admits everything.
                return Ok((op == MetaOp::In).then_some(MetaFilter::Nothing));
            }
            Ok(Some(MetaFilter::Compare {
                key: f.name,
                op,
                value: Json::Array(values),
            }))
        }
        _ => Ok(Some(MetaFilter::Compare {
            key: f.name,
            op,
            value: typed(value)?,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_evaluates_comparisons_lists_and_combinations() {
        let md: Map<String, Json> = serde_json::from_value(json!({"price": 10.5, "active": true, "sku": "A-1"})).unwrap();
        let f = |key, op, value| MetaFilter::Compare { key, op, value };
        assert!(f("price", MetaOp::Gte, json!(10)).matches(&md));
        assert!(!f("price", MetaOp::Lt, json!(10)).matches(&md));
        assert!(f("sku", MetaOp::In, json!(["B", "A-1"])).matches(&md));
        assert!(f("missing", MetaOp::Ne, json!(1)).matches(&md));
        assert!(!MetaFilter::Nothing.matches(&md));
        assert!(MetaFilter::Or(vec![f("active", MetaOp::Eq, json!(false)), f("price", MetaOp::Eq, json!(10.5))]).matches(&md));
    }
}
