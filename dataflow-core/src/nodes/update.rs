//! Update: patch one row by id (optionally requiring its version) or every row a filter matches.

use schemars::JsonSchema;
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::consistency::projection::ProjectionSet;
use crate::error::{Error, Result, StoreKind};
use crate::model::Model;
use crate::model::filter::Filter;
use crate::model::record::Record;
use crate::model::values::{CheckedRecord, RecordMode, check_record};
use crate::node::Context;
use crate::nodes::effect::{self, Recorded};
use crate::nodes::{commit_and_project, decode_record, row_state, to_object};
use crate::sql::{rows, write};

/// Input of an Update node: exactly one of `id` or `filter`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateInput {
    /// Update the row with this primary key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// With `id`: fail with a conflict unless the row is at this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<i64>,
    /// Update every (non-deleted) row this filter matches; `{}` matches all rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// The fields to set and their new values.
    pub patch: Map<String, Json>,
}

impl UpdateInput {
    /// Sets the fields of `patch` on the row with primary key `id`, whatever its version.
    pub fn by_id(id: i64, patch: Map<String, Json>) -> Self {
        UpdateInput {
            id: Some(id),
            expected_version: None,
            filter: None,
            patch,
        }
    }
}

/// One field an update changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FieldChange {
    /// The field.
    pub field: String,
    /// Its value before.
    pub old: Json,
    /// Its value after.
    pub new: Json,
}

/// Output of an Update node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(bound = "M: Model")]
#[schemars(bound = "M: Model")]
pub struct UpdateOutput<M: Model> {
    /// How many rows were written (0 when an update by id changed nothing).
    pub updated: u64,
    /// Primary keys of the rows written.
    pub ids: Vec<i64>,
    /// By id: the row after the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record<M>>,
    /// By id: each field whose value changed, before and after.
    #[serde(default)]
    pub changes: Vec<FieldChange>,
    /// Projections (cache, vector, graph) not applied yet: they failed, or
    /// [`crate::ProjectionMode::Background`] leaves them to the background projector. `sync`
    /// applies them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<StoreKind>,
}

/// Applies a patch by id or by filter. Under an effect key (see [`effect`]) it writes once:
/// executed again, it returns what it did the first time (rather than, say, failing on the
/// version its own first write moved past `expected_version`).
pub async fn run<M: Model>(ctx: &Context, input: UpdateInput) -> Result<UpdateOutput<M>> {
    effect::once(ctx, update(ctx, input)).await
}

async fn update<M: Model>(ctx: &Context, input: UpdateInput) -> Result<UpdateOutput<M>> {
    let meta = M::meta();
    let tenant = ctx.tenant_scope(meta)?;
    if input.patch.is_empty() {
        return Err(Error::invalid(
            meta.name,
            "patch",
            "the patch is empty: name at least one field to set",
        ));
    }
    let patch = check_record(meta, &input.patch, RecordMode::Patch).map_err(|errors| Error::Validation { model: meta.name, errors })?;
    match (input.id, input.filter) {
        (Some(id), None) => by_id::<M>(ctx, tenant, id, input.expected_version, patch).await,
        (None, Some(filter)) if input.expected_version.is_none() => by_filter::<M>(ctx, tenant, &filter, patch).await,
        (None, Some(_)) => Err(Error::invalid(
            meta.name,
            "input",
            "expected_version applies to an update by id only",
        )),
        (Some(_), Some(_)) => Err(Error::invalid(meta.name, "input", "give either id or filter, not both")),
        (None, None) => Err(Error::invalid(meta.name, "input", "give id or filter to say which rows to update")),
    }
}

async fn by_id<M: Model>(
    ctx: &Context,
    tenant: Option<&str>,
    id: i64,
    expected: Option<i64>,
    patch: CheckedRecord,
) -> Result<UpdateOutput<M>> {
    let meta = M::meta();
    let store = ctx.stores().relational();
    let action = format!("updating {} {id}", meta.name);
    let tx = store.begin().await.map_err(|e| Error::relational(&action, e))?;
    super::require_references(ctx, &tx, meta, &patch).await?;

    let before = tx
        .query_one_raw(rows::select_by_id(store.sql(), meta, tenant, id, false, true))
        .await
        .map_err(|e| Error::relational(&action, e))?;
    let before: Record<M> = match before {
        Some(row) => decode_record(&row, &action)?,
        None => return Err(Error::NotFound { model: meta.name, id }),
    };
    if let Some(expected) = expected.filter(|&v| v != before.version) {
        return Err(Error::Conflict {
            model: meta.name,
            id,
            expected,
            actual: before.version,
        });
    }

    let old = to_object(meta.name, &before.data)?;
    let changes: Vec<FieldChange> = patch
        .values
        .iter()
        .filter(|(f, new)| old.get(f.name).is_none_or(|o| !same_value(o, new)))
        .map(|(f, new)| FieldChange {
            field: f.name.to_owned(),
            old: old.get(f.name).cloned().unwrap_or(Json::Null),
            new: new.clone(),
        })
        .collect();
    if changes.is_empty() {
        tx.commit().await.map_err(|e| Error::relational(&action, e))?;
        return Ok(UpdateOutput {
            updated: 0,
            ids: Vec::new(),
            record: Some(before),
            changes,
            pending: Vec::new(),
        });
    }
    let changed = CheckedRecord {
        values: patch
            .values
            .into_iter()
            .filter(|(f, _)| changes.iter().any(|c| c.field == f.name))
            .collect(),
    };

    let statement = write::update_rows(store.sql(), meta, &changed, write::Rows::Id(id), tenant)?;
    let row = tx
        .query_one_raw(statement)
        .await
        .map_err(|e| super::write_error(meta, &changed, &action, e))?
        .ok_or(Error::NotFound { model: meta.name, id })?;
    let after: Record<M> = decode_record(&row, &action)?;
    let state = row_state(&after, tenant)?;
    let mut out = UpdateOutput {
        updated: 1,
        ids: vec![id],
        record: Some(after),
        changes,
        pending: Vec::new(),
    };
    let tx = match effect::record(ctx, tx, &out).await? {
        Recorded::Commit(tx) => tx,
        Recorded::Done(first) => return Ok(first),
    };
    let set = ProjectionSet::for_model(ctx.stores().handles(), meta);
    out.pending = commit_and_project(ctx, tx, meta, tenant, vec![state], set, &action).await?;
    Ok(out)
}

async fn by_filter<M: Model>(ctx: &Context, tenant: Option<&str>, filter: &Filter, patch: CheckedRecord) -> Result<UpdateOutput<M>> {
    let meta = M::meta();
    let store = ctx.stores().relational();
    let statement = write::update_rows(store.sql(), meta, &patch, write::Rows::Filter(filter), tenant)?;
    let action = format!("updating {} by filter", meta.table);
    let tx = store.begin().await.map_err(|e| Error::relational(&action, e))?;
    super::require_references(ctx, &tx, meta, &patch).await?;
    let written = tx
        .query_all_raw(statement)
        .await
        .map_err(|e| super::write_error(meta, &patch, &action, e))?
        .iter()
        .map(|row| decode_record::<M>(row, &action))
        .collect::<Result<Vec<_>>>()?;
    let states = written.iter().map(|r| row_state(r, tenant)).collect::<Result<Vec<_>>>()?;
    let mut out = UpdateOutput {
        updated: written.len() as u64,
        ids: written.iter().map(Record::id).collect(),
        record: None,
        changes: Vec::new(),
        pending: Vec::new(),
    };
    let tx = match effect::record(ctx, tx, &out).await? {
        Recorded::Commit(tx) => tx,
        Recorded::Done(first) => return Ok(first),
    };
    let set = ProjectionSet::for_model(ctx.stores().handles(), meta);
    out.pending = commit_and_project(ctx, tx, meta, tenant, states, set, &action).await?;
    Ok(out)
}

/// Equality of stored and patched values: numbers numerically (1 and 1.0 are the same),
/// timestamps as instants (`...:00Z` and `...:00.000000Z` are the same).
fn same_value(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::String(x), Json::String(y)) if x != y => {
            matches!((chrono::DateTime::parse_from_rfc3339(x), chrono::DateTime::parse_from_rfc3339(y)), (Ok(p), Ok(q)) if p == q)
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::same_value;
    use serde_json::json;

    #[test]
    fn equal_numbers_and_instants_are_not_changes() {
        assert!(same_value(&json!(1), &json!(1.0)));
        assert!(same_value(&json!("2022-01-15T08:30:00Z"), &json!("2022-01-15T08:30:00.000000Z")));
        assert!(!same_value(&json!("2022-01-15T08:30:00Z"), &json!("2022-01-15T08:30:01Z")));
        assert!(!same_value(&json!("a"), &json!("b")));
    }
}
