//! Search: semantic similarity over a model's `embed` fields, with metadata filters, hydrated
//! from the relational store (so rows deleted there never appear).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::consistency::embedding;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::filter::Filter;
use crate::model::record::Record;
use crate::node::Context;
use crate::nodes::select_by_ids;
use crate::store::vector::{MAX_QUERY_RESULTS, MetaFilter, MetaOp, TENANT_KEY};

/// Rows returned when `top_k` is not given.
pub const DEFAULT_TOP_K: usize = 10;
/// Largest `top_k`.
pub const MAX_TOP_K: usize = 100;
/// Longest query text, in characters.
pub const MAX_QUERY_CHARS: usize = 10_000;

/// Input of a Search node: a `query` text or a `vector`, not both.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchInput {
    /// Text to search for; embedded with the stores' embedder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// A query vector of the embedder's dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    /// How many rows to return, 1 to 100 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Which rows may match, over the fields stored with the vectors (primary key, indexed,
    /// unique and foreign-key fields): `$eq $ne $in $nin`, `$gt $gte $lt $lte` on numbers,
    /// `$and`, `$or`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

/// One search result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(bound = "M: Model")]
#[schemars(bound = "M: Model")]
pub struct SearchHit<M: Model> {
    /// The row, as stored now.
    pub record: Record<M>,
    /// Cosine distance to the query: 0 is the same direction, 2 the opposite.
    pub distance: f32,
}

/// Output of a Search node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(bound = "M: Model")]
#[schemars(bound = "M: Model")]
pub struct SearchOutput<M: Model> {
    /// The rows most similar to the query, nearest first.
    pub hits: Vec<SearchHit<M>>,
}

/// Finds the rows nearest to the query.
pub async fn run<M: Model>(ctx: &Context, input: SearchInput) -> Result<SearchOutput<M>> {
    let meta = M::meta();
    let tenant = ctx.tenant_scope(meta)?;
    if !meta.has_embed_fields() {
        return Err(Error::invalid(
            meta.name,
            "input",
            format!("{} has no embed fields, so nothing of it is searchable", meta.name),
        ));
    }
    let top_k = input.top_k.unwrap_or(DEFAULT_TOP_K);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(Error::invalid(
            meta.name,
            "top_k",
            format!("must be between 1 and {MAX_TOP_K}, got {top_k}"),
        ));
    }
    let embedder = ctx.stores().embedder();
    let vector = match (input.query, input.vector) {
        (Some(query), None) => {
            let chars = query.chars().count();
            if query.trim().is_empty() {
                return Err(Error::invalid(meta.name, "query", "is empty"));
            }
            if chars > MAX_QUERY_CHARS {
                return Err(Error::invalid(
                    meta.name,
                    "query",
                    format!("is {chars} characters long; at most {MAX_QUERY_CHARS}"),
                ));
            }
            ctx.stores().embed(vec![query]).await?.pop().unwrap_or_default()
        }
        (None, Some(vector)) => {
            if vector.len() != embedder.dimension() {
                return Err(Error::invalid(
                    meta.name,
                    "vector",
                    format!(
                        "has {} dimensions; the embedder ({}) makes {}",
                        vector.len(),
                        embedder.name(),
                        embedder.dimension()
                    ),
                ));
            }
            if vector.iter().any(|x| !x.is_finite()) || vector.iter().all(|x| *x == 0.0) {
                return Err(Error::invalid(meta.name, "vector", "must be finite and not all zeros"));
            }
            vector
        }
        (Some(_), Some(_)) => return Err(Error::invalid(meta.name, "input", "give either query or vector, not both")),
        (None, None) => return Err(Error::invalid(meta.name, "input", "give query (text) or vector")),
    };
    let mut parts = Vec::new();
    if let Some(t) = tenant {
        parts.push(MetaFilter::Compare {
            key: TENANT_KEY,
            op: MetaOp::Eq,
            value: serde_json::Value::from(t),
        });
    }
    if let Some(filter) = &input.filter
        && let Some(checked) = MetaFilter::from_filter(meta, filter)?
    {
        parts.push(checked);
    }
    let filter = MetaFilter::all(parts);
    let store = ctx.stores().handles().require_vector(meta.name)?;
    // The collection's vectors must be this embedder's, and not half re-embedded.
    embedding::check(ctx.stores().handles(), store, meta, embedding::Use::Search).await?;

    // Ask for more than top_k: rows deleted in PostgreSQL whose vectors are not removed yet
    // are dropped when hydrating. Ask again for more while they crowd out live rows.
    let mut fetch = (top_k * 2 + 5).min(MAX_QUERY_RESULTS);
    loop {
        let found = store.query(meta.table, &vector, fetch, filter.as_ref()).await?;
        let ids: Vec<i64> = found.iter().filter_map(|h| h.id.parse().ok()).collect();
        let mut rows = select_by_ids::<M>(ctx, tenant, &ids).await?;
        let hits: Vec<SearchHit<M>> = found
            .iter()
            .filter_map(|h| {
                let id: i64 = h.id.parse().ok()?;
                Some(SearchHit {
                    record: rows.remove(&id)?,
                    distance: h.distance,
                })
            })
            .take(top_k)
            .collect();
        if hits.len() >= top_k || found.len() < fetch || fetch >= MAX_QUERY_RESULTS {
            return Ok(SearchOutput { hits });
        }
        fetch = (fetch * 4).min(MAX_QUERY_RESULTS);
    }
}
