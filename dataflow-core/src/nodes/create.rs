//! Create: validate one record, insert it, return the stored row.

use schemars::JsonSchema;
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};

use crate::consistency::projection::ProjectionSet;
use crate::error::{Error, Result, StoreKind};
use crate::model::record::Record;
use crate::model::values::{RecordMode, check_record};
use crate::model::{Model, ModelMeta, RelationMeta};
use crate::node::Context;
use crate::nodes::effect::{self, Recorded};
use crate::nodes::{commit_and_project, decode_record, row_state, to_object};
use crate::sql::rows::Named;
use crate::sql::{self, write};

/// Input of a Create node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(bound = "M: Model", deny_unknown_fields)]
#[schemars(bound = "M: Model")]
pub struct CreateInput<M: Model> {
    /// The new row's fields (every field but the primary key).
    pub record: M::New,
}

/// Output of a Create node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(bound = "M: Model")]
#[schemars(bound = "M: Model")]
pub struct CreateOutput<M: Model> {
    /// The row as stored, with its generated primary key, version 1 and timestamps.
    pub record: Record<M>,
    /// Projections (vector, graph) not applied yet: they failed, or
    /// [`crate::ProjectionMode::Background`] leaves them to the background projector. `sync`
    /// applies them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<StoreKind>,
}

/// Validates and inserts one row with its outbox record, then applies its projections. Under
/// an effect key (see [`effect`]) it inserts once: executed again, it returns the row it
/// inserted the first time.
pub async fn run<M: Model>(ctx: &Context, input: CreateInput<M>) -> Result<CreateOutput<M>> {
    effect::once(ctx, insert(ctx, input)).await
}

async fn insert<M: Model>(ctx: &Context, input: CreateInput<M>) -> Result<CreateOutput<M>> {
    let meta = M::meta();
    let tenant = ctx.tenant_scope(meta)?;
    // The one-statement paths below commit on their own; an effect is recorded in a
    // transaction with the row.
    let recorded = ctx.effect_key().is_some();
    let object = to_object(meta.name, &input.record)?;
    let checked = check_record(meta, &object, RecordMode::Create).map_err(|errors| Error::Validation { model: meta.name, errors })?;
    let store = ctx.stores().relational();

    let action = format!("inserting into {}", meta.table);
    // A new row has no cache entry to invalidate: only the vector and graph projections apply.
    let set = ProjectionSet {
        cache: false,
        ..ProjectionSet::for_model(ctx.stores().handles(), meta)
    };
    // The rows it names that the node checks itself, as (relation index, relation, id):
    // foreign keys whose constraint checks them need no check of the node's.
    let backend = store.backend();
    let named: Vec<(usize, &RelationMeta, i64)> = meta
        .relations
        .iter()
        .enumerate()
        .filter(|(_, r)| !super::constraint_checks_reference(backend, meta, r))
        .filter_map(|(index, r)| checked.get(r.field).and_then(serde_json::Value::as_i64).map(|id| (index, r, id)))
        .collect();
    if set.is_empty() && named.is_empty() && !recorded {
        // Nothing to check or project beside the row: one statement, no transaction.
        let row = store
            .connection()
            .query_one_raw(write::insert_record(store.sql(), meta, &checked, tenant))
            .await
            .map_err(|e| super::write_error(meta, &checked, &action, e))?
            .ok_or_else(|| Error::relational(&action, sea_orm::DbErr::RecordNotInserted))?;
        return Ok(CreateOutput {
            record: decode_record(&row, &action)?,
            pending: Vec::new(),
        });
    }
    if store.sql().is_postgres() && !recorded {
        // The checks of the rows it names, the row and its outbox record in one statement.
        let scoped: Vec<(usize, &'static ModelMeta, Option<&str>, [i64; 1])> = named
            .iter()
            .map(|&(index, r, id)| {
                let target = (r.target_meta)();
                Ok((index, target, ctx.tenant_scope(target)?, [id]))
            })
            .collect::<Result<_>>()?;
        let scoped: Vec<Named<'_>> = scoped.iter().map(|(i, t, scope, id)| (*i, *t, *scope, id.as_slice())).collect();
        let references: Vec<&Named<'_>> = scoped.iter().collect();
        let outbox = ctx.stores().outbox();
        let record_with = (!set.is_empty()).then(|| (set, outbox.due_of_new_records()));
        let statement = sql::outbox::insert_record_guarded(store.sql(), meta, &checked, tenant, &references, record_with);
        let row = store
            .connection()
            .query_one_raw(statement)
            .await
            .map_err(|e| super::write_error(meta, &checked, &action, e))?;
        if let Some(row) = row {
            let record: Record<M> = decode_record(&row, &action)?;
            let pending = if set.is_empty() {
                Vec::new()
            } else {
                let outbox_id: i64 = row.try_get("", "outbox_id").map_err(|e| Error::relational(&action, e))?;
                let state = row_state(&record, tenant)?;
                outbox.settle(meta, &[outbox_id], vec![state], set).await
            };
            return Ok(CreateOutput { record, pending });
        }
        // Nothing was written: a row it names is missing. The transaction below finds which
        // and says so (or writes the row, when it appeared meanwhile).
    }
    let tx = store.begin().await.map_err(|e| Error::relational(&action, e))?;
    super::require_references(ctx, &tx, meta, &checked).await?;
    let row = tx
        .query_one_raw(write::insert_record(store.sql(), meta, &checked, tenant))
        .await
        .map_err(|e| super::write_error(meta, &checked, &action, e))?
        .ok_or_else(|| Error::relational(&action, sea_orm::DbErr::RecordNotInserted))?;
    let record: Record<M> = decode_record(&row, &action)?;
    let done = CreateOutput {
        record: record.clone(),
        pending: Vec::new(),
    };
    let tx = match effect::record(ctx, tx, &done).await? {
        Recorded::Commit(tx) => tx,
        Recorded::Done(first) => return Ok(first),
    };
    let pending = if set.is_empty() {
        tx.commit().await.map_err(|e| Error::relational(&action, e))?;
        Vec::new()
    } else {
        let state = row_state(&record, tenant)?;
        commit_and_project(ctx, tx, meta, tenant, vec![state], set, &action).await?
    };
    Ok(CreateOutput { record, pending })
}
