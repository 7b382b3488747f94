//! The operations behind the generated nodes, written once, generic over the model.
//!
//! `#[derive(Model)]` emits one small node type per operation (`ProductCreateNode`, ...)
//! whose `run` calls the function here with its model.

pub mod aggregate;
pub mod bulk_upsert;
pub mod create;
pub mod delete;
pub mod list;
pub mod read;
pub mod update;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult, Statement};
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::model::{FieldType, Model, ModelMeta};
use crate::node::Context;
use crate::record::Record;
use crate::sql::Sql;
use crate::values::timestamp_to_json;

/// Writes the conditions every query on `meta` carries: the tenant, and `deleted_at IS NULL`
/// unless deleted rows were asked for. Always writes at least `TRUE`, so callers can append
/// `AND ...`.
pub(crate) fn write_scope(sql: &mut Sql, meta: &ModelMeta, tenant: Option<&str>, include_deleted: bool) {
    sql.push("TRUE");
    if let Some(tenant) = tenant {
        sql.push(" AND \"tenant_id\" = ")
            .param(sea_orm::Value::String(Some(tenant.to_owned())));
    }
    if meta.soft_delete && !include_deleted {
        sql.push(" AND \"deleted_at\" IS NULL");
    }
}

/// Writes `SELECT <record columns> FROM <table> WHERE <scope>`; callers append `AND ...`.
pub(crate) fn write_select_records(sql: &mut Sql, meta: &ModelMeta, tenant: Option<&str>, include_deleted: bool) {
    sql.push("SELECT ")
        .record_columns(meta)
        .push(" FROM ")
        .ident(meta.table)
        .push(" WHERE ");
    write_scope(sql, meta, tenant, include_deleted);
}

/// The statement selecting one record by primary key within the tenant's scope.
pub(crate) fn select_by_id(sql: &mut Sql, meta: &ModelMeta, tenant: Option<&str>, id: i64, include_deleted: bool) {
    write_select_records(sql, meta, tenant, include_deleted);
    sql.push(" AND ")
        .ident(meta.primary_key)
        .push(" = ")
        .param(sea_orm::Value::BigInt(Some(id)));
}

/// Writes ` AND (filter)` when a filter is given.
pub(crate) fn write_filter(sql: &mut Sql, meta: &'static ModelMeta, filter: Option<&Filter>) -> Result<()> {
    if let Some(filter) = filter {
        sql.push(" AND (");
        filter.write_sql(meta, sql)?;
        sql.push(")");
    }
    Ok(())
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

/// How long cache entries and tombstones of `meta` live.
pub(crate) fn cache_ttl(meta: &ModelMeta) -> Duration {
    Duration::from_secs(meta.cache_ttl_secs.max(1))
}

/// Invalidates the cached rows `(id, new_version)` after a committed write. Returns whether the
/// cache confirmed it (always true without a cache). A failure is logged; the write stands.
pub(crate) async fn invalidate_cache(ctx: &Context, meta: &ModelMeta, tenant: Option<&str>, rows: &[(i64, i64)]) -> bool {
    let Some(cache) = ctx.stores().cache() else { return true };
    if rows.is_empty() {
        return true;
    }
    let keys: Vec<(String, i64)> = rows.iter().map(|&(id, v)| (ctx.stores().cache_key(meta, tenant, id), v)).collect();
    match cache.invalidate(&keys, cache_ttl(meta)).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(model = meta.name, rows = rows.len(), error = %e, "cache invalidation failed");
            false
        }
    }
}

/// Reads one column of a dynamic result (aggregates) as JSON.
pub(crate) fn column_json(row: &QueryResult, column: &str, ty: FieldType) -> std::result::Result<Json, sea_orm::DbErr> {
    Ok(match ty {
        FieldType::Integer => row.try_get::<Option<i64>>("", column)?.map(Json::from).unwrap_or(Json::Null),
        FieldType::Float => row.try_get::<Option<f64>>("", column)?.map(Json::from).unwrap_or(Json::Null),
        FieldType::Boolean => row.try_get::<Option<bool>>("", column)?.map(Json::from).unwrap_or(Json::Null),
        FieldType::Text => row.try_get::<Option<String>>("", column)?.map(Json::from).unwrap_or(Json::Null),
        FieldType::Timestamp => row
            .try_get::<Option<DateTime<Utc>>>("", column)?
            .map(|t| Json::from(timestamp_to_json(t)))
            .unwrap_or(Json::Null),
        FieldType::Json => row.try_get::<Option<Json>>("", column)?.unwrap_or(Json::Null),
    })
}

/// Serializes a typed value into a JSON object (the shape every record check takes).
pub(crate) fn to_object<T: serde::Serialize>(model: &'static str, value: &T) -> Result<Map<String, Json>> {
    match serde_json::to_value(value) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(other) => Err(Error::invalid(model, "record", format!("expected a JSON object, got {other}"))),
        Err(e) => Err(Error::invalid(model, "record", e.to_string())),
    }
}
