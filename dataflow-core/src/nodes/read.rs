//! Read: one row by primary key, through the read-through cache.

use schemars::{JsonSchema, Schema};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::record::Record;
use crate::node::Context;
use crate::nodes::decode_record;
use crate::sql::rows;

/// Input of a Read node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadInput {
    /// The primary key.
    pub id: i64,
    /// Also return a soft-deleted row (bypasses the cache).
    #[serde(default)]
    pub include_deleted: bool,
    /// Fail with "not found" when there is no such row, instead of returning `record: null`:
    /// the nodes after this one can then count on a record.
    #[serde(default)]
    pub required: bool,
}

/// Where a Read found its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// Served from the cache.
    Hit,
    /// Not cached: read from the relational store (and cached if found).
    Miss,
    /// The cache was not asked (none configured, or deleted rows requested).
    Bypass,
    /// The cache failed, timed out, or may be stale after a failed invalidation: read from
    /// the relational store.
    Unavailable,
}

/// Output of a Read node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(bound = "M: Model")]
#[schemars(bound = "M: Model")]
pub struct ReadOutput<M: Model> {
    /// The row, or `null` when no such row exists (for this tenant).
    pub record: Option<Record<M>>,
    /// Whether the cache answered.
    pub cache: CacheOutcome,
}

/// [`ReadOutput`] when the input says `required: true`: `record` is never null.
#[derive(JsonSchema)]
#[schemars(bound = "M: Model", rename = "ReadOutput")]
#[allow(dead_code, reason = "only its schema is used, by a workflow's validation")]
struct RequiredReadOutput<M: Model> {
    /// The row.
    record: Record<M>,
    /// Whether the cache answered.
    cache: CacheOutcome,
}

/// The output schema of a Read whose static input is `static_input`, when that input makes it
/// narrower than [`ReadOutput`]'s: with `required: true`, `record` cannot be null.
pub fn output_schema_given<M: Model>(static_input: &serde_json::Value) -> Option<Schema> {
    (static_input.get("required") == Some(&serde_json::Value::Bool(true))).then(|| schemars::schema_for!(RequiredReadOutput<M>))
}

/// Gets one row: from the cache when it holds it, else from the relational store (then cached).
/// A failing cache never fails the read. With `required`, a missing row is
/// [`Error::NotFound`].
pub async fn run<M: Model>(ctx: &Context, input: ReadInput) -> Result<ReadOutput<M>> {
    let (id, required) = (input.id, input.required);
    let output = read::<M>(ctx, input).await?;
    if required && output.record.is_none() {
        return Err(Error::NotFound { model: M::meta().name, id });
    }
    Ok(output)
}

async fn read<M: Model>(ctx: &Context, input: ReadInput) -> Result<ReadOutput<M>> {
    let meta = M::meta();
    let tenant = ctx.tenant_scope(meta)?;
    let cache = ctx.stores().cache().filter(|_| !input.include_deleted);
    let Some(cache) = cache else {
        let record = fetch::<M>(ctx, tenant, input.id, input.include_deleted).await?;
        return Ok(ReadOutput {
            record,
            cache: CacheOutcome::Bypass,
        });
    };
    if !ctx.stores().outbox().cache_trusted().await {
        // An invalidation failed earlier and is not applied yet: the cache may be stale.
        let record = fetch::<M>(ctx, tenant, input.id, false).await?;
        return Ok(ReadOutput {
            record,
            cache: CacheOutcome::Unavailable,
        });
    }
    let key = ctx.stores().cache_key(meta, tenant, input.id);
    let outcome = match cache.get(&key).await {
        Ok(Some(bytes)) => match serde_json::from_slice::<Record<M>>(&bytes) {
            Ok(record) => {
                return Ok(ReadOutput {
                    record: Some(record),
                    cache: CacheOutcome::Hit,
                });
            }
            // An entry written by an older build of the model: treat as a miss and overwrite.
            Err(_) => CacheOutcome::Miss,
        },
        Ok(None) => CacheOutcome::Miss,
        Err(e) => {
            tracing::debug!(model = meta.name, error = %e, "cache unavailable, reading from the relational store");
            CacheOutcome::Unavailable
        }
    };
    let record = fetch::<M>(ctx, tenant, input.id, false).await?;
    if let (Some(r), CacheOutcome::Miss) = (&record, outcome)
        && let Ok(payload) = serde_json::to_vec(r)
        && let Err(e) = cache.fill(&key, r.version, &payload, meta.cache_ttl()).await
    {
        tracing::debug!(model = meta.name, error = %e, "cache fill failed");
    }
    Ok(ReadOutput { record, cache: outcome })
}

async fn fetch<M: Model>(ctx: &Context, tenant: Option<&str>, id: i64, include_deleted: bool) -> Result<Option<Record<M>>> {
    let meta = M::meta();
    let store = ctx.stores().relational();
    let statement = rows::select_by_id(store.sql(), meta, tenant, id, include_deleted, false);
    let action = format!("reading {} {id}", meta.name);
    let row = store
        .connection()
        .query_one_raw(statement)
        .await
        .map_err(|e| Error::relational(&action, e))?;
    row.map(|row| decode_record(&row, &action)).transpose()
}
