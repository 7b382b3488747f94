//! The operations behind the generated nodes, written once, generic over the model.
//!
//! `#[derive(Model)]` emits one small node type per operation (`ProductCreateNode`, ...)
//! whose `run` calls the function here with its model.

pub mod aggregate;
pub mod bulk_upsert;
pub mod create;
pub mod delete;
pub mod effect;
pub mod graph;
pub mod list;
pub mod read;
pub mod search;
pub mod update;

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult, Statement};
use serde_json::{Map, Value as Json};

use crate::consistency::projection::{ProjectionSet, RowState};
use crate::error::{Error, FieldError, FieldErrors, Result};
use crate::model::record::Record;
use crate::model::values::CheckedRecord;
use crate::model::{FieldMeta, FieldType, Model, ModelMeta};
use crate::node::Context;
use crate::sql::rows::{self, column_json};

/// For each of `records` (rows about to be written to `meta`), the foreign keys that name no
/// row the context can see: a row that is not there, is soft-deleted, or is another tenant's.
/// One query for all records and relations. `batch_ids` are primary keys written by the same
/// call, which rows may name in a relation of `meta` to itself (a parent in the same batch).
///
/// `tx` is the write's transaction: the check sees what the write will commit against, and
/// the rows found stay locked until it ends (see [`rows::referenced_rows`]), so a parent
/// deleted by another writer meanwhile is either seen deleted here or waits for the commit.
///
/// With `leave_to_constraints`, relations whose `FOREIGN KEY` constraint checks all the node
/// would (see [`constraint_checks_reference`]) are left to it: the write fails with the same
/// field error when the database refuses it ([`write_error`]).
pub(crate) async fn unknown_references(
    ctx: &Context,
    tx: &DatabaseTransaction,
    meta: &'static ModelMeta,
    records: &[&CheckedRecord],
    batch_ids: &[i64],
    leave_to_constraints: bool,
) -> Result<Vec<FieldErrors>> {
    let mut errors = vec![FieldErrors::default(); records.len()];
    let backend = ctx.stores().relational().backend();
    let named: Vec<Vec<i64>> = meta
        .relations
        .iter()
        .map(|relation| {
            if leave_to_constraints && constraint_checks_reference(backend, meta, relation) {
                return Vec::new();
            }
            let mut ids: Vec<i64> = records
                .iter()
                .filter_map(|r| r.get(relation.field).and_then(Json::as_i64))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        })
        .collect();
    if named.iter().all(Vec::is_empty) {
        return Ok(errors);
    }
    let mut scoped = Vec::with_capacity(meta.relations.len());
    for (index, (relation, ids)) in meta
        .relations
        .iter()
        .zip(&named)
        .enumerate()
        .filter(|(_, (_, ids))| !ids.is_empty())
    {
        let target = (relation.target_meta)();
        scoped.push((index, target, ctx.tenant_scope(target)?, ids.as_slice()));
    }
    let store = ctx.stores().relational();
    let Some(statement) = rows::referenced_rows(store.sql(), &scoped) else {
        return Ok(errors);
    };
    let action = format!("checking the references of {} rows", meta.table);
    let rows = tx.query_all_raw(statement).await.map_err(|e| Error::relational(&action, e))?;
    let mut found: Vec<std::collections::HashSet<i64>> = vec![Default::default(); meta.relations.len()];
    for row in rows {
        let relation: i64 = row.try_get("", "relation").map_err(|e| Error::relational(&action, e))?;
        let id: i64 = row.try_get("", "id").map_err(|e| Error::relational(&action, e))?;
        found[relation as usize].insert(id);
    }
    for ((relation, found), named) in meta.relations.iter().zip(&mut found).zip(&named) {
        if named.is_empty() {
            continue;
        }
        let target = (relation.target_meta)();
        if target.table == meta.table {
            found.extend(batch_ids);
        }
        for (record, errors) in records.iter().zip(&mut errors) {
            if let Some(id) = record.get(relation.field).and_then(Json::as_i64)
                && !found.contains(&id)
            {
                errors.push(relation.field, names_no_row(relation, id));
            }
        }
    }
    Ok(errors)
}

/// The field error's text of a foreign key that names no row the writer may name: the same
/// whether the node's check or the database's constraint found it.
pub(crate) fn names_no_row(relation: &'static crate::model::RelationMeta, id: i64) -> String {
    let target = (relation.target_meta)();
    let whose = if target.multi_tenant { " of this tenant" } else { "" };
    format!("names no {} {id}{whose} ({})", target.name, relation.name)
}

/// Whether the `FOREIGN KEY` constraint of `relation` refuses every row the node's own check
/// would: on PostgreSQL (SQLite's error does not say which constraint failed), when the
/// target has no soft delete (a soft-deleted row satisfies a foreign key but may not be
/// named) and the tenant is part of the key or the target has none.
pub(crate) fn constraint_checks_reference(
    backend: sea_orm::DbBackend,
    meta: &ModelMeta,
    relation: &'static crate::model::RelationMeta,
) -> bool {
    let target = (relation.target_meta)();
    backend == sea_orm::DbBackend::Postgres && !target.soft_delete && (!target.multi_tenant || meta.multi_tenant)
}

/// [`unknown_references`] of one record as a validation error, when it names a row that is
/// not there.
pub(crate) async fn require_references(
    ctx: &Context,
    tx: &DatabaseTransaction,
    meta: &'static ModelMeta,
    record: &CheckedRecord,
) -> Result<()> {
    match unknown_references(ctx, tx, meta, &[record], &[], true).await?.pop() {
        Some(errors) if !errors.is_empty() => Err(Error::Validation { model: meta.name, errors }),
        _ => Ok(()),
    }
}

/// The row that holds a unique value: its primary key, and whether it is soft-deleted (a
/// deleted row keeps its unique values).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holder {
    pub(crate) id: i64,
    pub(crate) deleted: bool,
}

/// The field error of a unique `field` whose `value` another row holds (`holder`, when
/// known): the same words whether the node's check or the database's index found it.
pub(crate) fn value_taken(meta: &'static ModelMeta, field: &'static FieldMeta, value: &Json, holder: Option<Holder>) -> FieldError {
    let shown = match value {
        Json::String(s) => format!("'{}'", crate::model::values::printable(s)),
        other => other.to_string(),
    };
    let message = match holder {
        Some(Holder { id, deleted: false }) => format!("{} {shown} already exists ({} {id})", field.name, meta.name),
        Some(Holder { id, deleted: true }) => format!("{} {shown} already exists ({} {id}, deleted)", field.name, meta.name),
        None => format!("{} {shown} already exists", field.name),
    };
    FieldError::new(field.name, message)
}

/// The error of a failed write of `record`: a collision with a unique index becomes the field
/// error [`value_taken`] gives, a broken `FOREIGN KEY` or `CHECK` constraint the field error
/// the node's own check gives ([`names_no_row`], the field's rule), anything else a store
/// error of `action`.
pub(crate) fn write_error(meta: &'static ModelMeta, record: &CheckedRecord, action: &str, err: sea_orm::DbErr) -> Error {
    use crate::sql::violation::{self, Broken};
    let error = match violation::broken_rule(meta, &err) {
        Some(Broken::Unique(field)) => value_taken(meta, field, record.get(field.name).unwrap_or(&Json::Null), None),
        Some(Broken::Reference(relation)) => match record.get(relation.field).and_then(Json::as_i64) {
            Some(id) => FieldError::new(relation.field, names_no_row(relation, id)),
            None => return Error::relational(action, err),
        },
        Some(Broken::Check(field)) => {
            let value = record.get(field.name).unwrap_or(&Json::Null);
            let message = crate::model::values::check_value(field, value)
                .err()
                .unwrap_or_else(|| "breaks the table's CHECK constraint".to_owned());
            FieldError::new(field.name, message)
        }
        None => return Error::relational(action, err),
    };
    Error::Validation {
        model: meta.name,
        errors: FieldErrors(vec![error]),
    }
}

/// The visible rows (tenant scope, not soft-deleted) among `ids`, by primary key.
pub(crate) async fn select_by_ids<M: Model>(ctx: &Context, tenant: Option<&str>, ids: &[i64]) -> Result<HashMap<i64, Record<M>>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let meta = M::meta();
    let store = ctx.stores().relational();
    let statement = rows::select_by_ids(store.sql(), meta, tenant, ids);
    let records = fetch_records::<M>(store.connection(), statement, &format!("reading {} rows", meta.table)).await?;
    Ok(records.into_iter().map(|r| (r.id(), r)).collect())
}

/// The visible rows (tenant scope, not soft-deleted) among `ids` of any model, as JSON objects
/// shaped like a serialized [`Record`]: fields, `version`, `created_at`, `updated_at`.
pub(crate) async fn select_json_by_ids(
    ctx: &Context,
    meta: &'static ModelMeta,
    tenant: Option<&str>,
    ids: &[i64],
) -> Result<HashMap<i64, Json>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let store = ctx.stores().relational();
    let action = format!("reading {} rows", meta.table);
    let rows = store
        .connection()
        .query_all_raw(rows::select_by_ids(store.sql(), meta, tenant, ids))
        .await
        .map_err(|e| Error::relational(&action, e))?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let decode = || -> std::result::Result<(i64, Json), sea_orm::DbErr> {
            let mut object = Map::new();
            for f in meta.fields {
                object.insert(f.name.to_owned(), column_json(&row, f.name, f.ty)?);
            }
            object.insert("version".into(), column_json(&row, "version", FieldType::Integer)?);
            for column in ["created_at", "updated_at"] {
                object.insert(column.into(), column_json(&row, column, FieldType::Timestamp)?);
            }
            Ok((row.try_get("", meta.primary_key)?, Json::Object(object)))
        };
        let (id, object) = decode().map_err(|e| Error::relational(&action, e))?;
        out.insert(id, object);
    }
    Ok(out)
}

/// Runs a query and decodes every row as a record.
pub(crate) async fn fetch_records<M: Model>(conn: &impl ConnectionTrait, stmt: Statement, action: &str) -> Result<Vec<Record<M>>> {
    let rows = conn.query_all_raw(stmt).await.map_err(|e| Error::relational(action, e))?;
    rows.iter().map(|row| decode_record(row, action)).collect()
}

pub(crate) fn decode_record<M: Model>(row: &QueryResult, action: &str) -> Result<Record<M>> {
    Record::from_row(row).map_err(|e| Error::relational(format!("{action} (decoding a row)"), e))
}

/// Reads `(id, version)` pairs returned by a write.
pub(crate) async fn fetch_versions(conn: &impl ConnectionTrait, stmt: Statement, pk: &str, action: &str) -> Result<Vec<(i64, i64)>> {
    let rows = conn.query_all_raw(stmt).await.map_err(|e| Error::relational(action, e))?;
    rows.iter()
        .map(|r| Ok((r.try_get::<i64>("", pk)?, r.try_get::<i64>("", "version")?)))
        .collect::<std::result::Result<_, sea_orm::DbErr>>()
        .map_err(|e| Error::relational(action, e))
}

/// The projection state of a stored record: present unless soft-deleted.
pub(crate) fn row_state<M: Model>(record: &Record<M>, tenant: Option<&str>) -> Result<RowState> {
    let fields = match record.deleted_at {
        Some(_) => None,
        None => Some(to_object(M::meta().name, &record.data)?),
    };
    Ok(RowState {
        id: record.id(),
        tenant: tenant.map(str::to_owned),
        version: record.version,
        fields,
    })
}

/// Writes one outbox record per row in the write's transaction, commits it, then applies the
/// projections; returns the projections left pending.
pub(crate) async fn commit_and_project(
    ctx: &Context,
    tx: DatabaseTransaction,
    meta: &'static ModelMeta,
    tenant: Option<&str>,
    rows: Vec<RowState>,
    set: ProjectionSet,
    action: &str,
) -> Result<Vec<crate::error::StoreKind>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let outbox = ctx.stores().outbox();
    let outbox_ids = outbox.enqueue(&tx, meta, tenant, &ids, set).await?;
    tx.commit().await.map_err(|e| Error::relational(action, e))?;
    Ok(outbox.settle(meta, &outbox_ids, rows, set).await)
}

/// Serializes a typed value into a JSON object (the shape every record check takes).
pub(crate) fn to_object<T: serde::Serialize>(model: &'static str, value: &T) -> Result<Map<String, Json>> {
    match serde_json::to_value(value) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(other) => Err(Error::invalid(model, "record", format!("expected a JSON object, got {other}"))),
        Err(e) => Err(Error::invalid(model, "record", e.to_string())),
    }
}
