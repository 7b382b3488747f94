//! Delete: by id or filter; soft (marking `deleted_at`) for models that ask for it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::consistency::projection::{ProjectionSet, RowState};
use crate::error::{Error, Result, StoreKind};
use crate::model::Model;
use crate::model::filter::Filter;
use crate::node::Context;
use crate::nodes::{commit_and_project, fetch_versions};
use crate::sql::write;

/// Input of a Delete node: exactly one of `id` or `filter`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteInput {
    /// Delete the row with this primary key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Delete every row this filter matches; `{}` matches all rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Remove rows for good even when the model soft-deletes (soft-deleted rows included).
    #[serde(default)]
    pub hard: bool,
}

/// Output of a Delete node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeleteOutput {
    /// How many rows were deleted (0 when none matched).
    pub deleted: u64,
    /// Their primary keys.
    pub ids: Vec<i64>,
    /// Whether the rows were soft-deleted (still stored, hidden from reads).
    pub soft: bool,
    /// Projections (cache, vector, graph) not applied yet: they failed, or
    /// [`crate::ProjectionMode::Background`] leaves them to the background projector. `sync`
    /// applies them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<StoreKind>,
}

/// Deletes by id or filter.
pub async fn run<M: Model>(ctx: &Context, input: DeleteInput) -> Result<DeleteOutput> {
    let meta = M::meta();
    let tenant = ctx.tenant_scope(meta)?;
    let soft = meta.soft_delete && !input.hard;
    let store = ctx.stores().relational();
    let rows = match (input.id, &input.filter) {
        (Some(id), None) => write::Rows::Id(id),
        (None, Some(filter)) => write::Rows::Filter(filter),
        (Some(_), Some(_)) => return Err(Error::invalid(meta.name, "input", "give either id or filter, not both")),
        (None, None) => return Err(Error::invalid(meta.name, "input", "give id or filter to say which rows to delete")),
    };
    let statement = write::delete_rows(store.sql(), meta, rows, tenant, soft)?;
    let action = format!("deleting from {}", meta.table);
    let tx = store.begin().await.map_err(|e| Error::relational(&action, e))?;
    let written = fetch_versions(&tx, statement, meta.primary_key, &action).await?;
    let states: Vec<RowState> = written
        .iter()
        .map(|&(id, version)| RowState {
            id,
            tenant: tenant.map(str::to_owned),
            // A removed row's cache tombstone must outrank the version it had.
            version: if soft { version } else { version + 1 },
            fields: None,
        })
        .collect();
    let set = ProjectionSet::for_model(ctx.stores().handles(), meta);
    let pending = commit_and_project(ctx, tx, meta, tenant, states, set, &action).await?;
    Ok(DeleteOutput {
        deleted: written.len() as u64,
        ids: written.iter().map(|(id, _)| *id).collect(),
        soft,
        pending,
    })
}
