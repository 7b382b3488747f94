//! Statements that read a model's rows: the scope every query carries (tenant, soft
//! delete), records by id, by ids and by filter, row counts, versions and states for the
//! projections, the foreign-key check; and a column read back as JSON.

use chrono::{DateTime, Utc};
use sea_orm::{QueryResult, Statement, Value as SqlValue};
use serde_json::Value as Json;

use crate::error::Result;
use crate::model::filter::{CheckedSort, Filter};
use crate::model::values::timestamp_to_json;
use crate::model::{FieldMeta, FieldType, ModelMeta};
use crate::sql::Sql;

/// Writes the conditions every query on `meta` carries: the tenant, and `deleted_at IS NULL`
/// unless deleted rows were asked for. Always writes at least `TRUE`, so callers can append
/// `AND ...`.
pub(crate) fn write_scope(sql: &mut Sql, meta: &ModelMeta, tenant: Option<&str>, include_deleted: bool) {
    sql.push("TRUE");
    if let Some(tenant) = tenant {
        sql.push(" AND \"tenant_id\" = ").param(SqlValue::String(Some(tenant.to_owned())));
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

/// The record with primary key `id` within the tenant's scope; `lock` keeps the row locked
/// until the transaction ends (see [`Sql::lock_rows`]).
pub(crate) fn select_by_id(mut sql: Sql, meta: &ModelMeta, tenant: Option<&str>, id: i64, include_deleted: bool, lock: bool) -> Statement {
    write_select_records(&mut sql, meta, tenant, include_deleted);
    sql.push(" AND ")
        .ident(meta.primary_key)
        .push(" = ")
        .param(SqlValue::BigInt(Some(id)));
    if lock {
        sql.lock_rows();
    }
    sql.build()
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

/// The visible records (tenant scope, not soft-deleted) among `ids`.
pub(crate) fn select_by_ids(mut sql: Sql, meta: &ModelMeta, tenant: Option<&str>, ids: &[i64]) -> Statement {
    write_select_records(&mut sql, meta, tenant, false);
    sql.push(" AND ").ident(meta.primary_key).in_ids(ids);
    sql.build()
}

/// One page of a List: the records in scope that pass `filter`, after the cursor `after`, in
/// `sort` order, `limit` of them.
pub(crate) fn select_page(
    mut sql: Sql,
    meta: &'static ModelMeta,
    scope: (Option<&str>, bool),
    filter: Option<&Filter>,
    sort: &CheckedSort,
    after: Option<&str>,
    limit: i64,
) -> Result<Statement> {
    let (tenant, include_deleted) = scope;
    write_select_records(&mut sql, meta, tenant, include_deleted);
    write_filter(&mut sql, meta, filter)?;
    if let Some(cursor) = after {
        sql.push(" AND ");
        sort.write_after(meta, cursor, &mut sql)?;
    }
    sort.write_order_by(&mut sql);
    sql.push(" LIMIT ").param(SqlValue::BigInt(Some(limit)));
    Ok(sql.build())
}

/// `SELECT COUNT(*) AS "n"` of the rows in scope that pass `filter`.
pub(crate) fn count_rows(
    mut sql: Sql,
    meta: &'static ModelMeta,
    scope: (Option<&str>, bool),
    filter: Option<&Filter>,
) -> Result<Statement> {
    let (tenant, include_deleted) = scope;
    sql.push("SELECT COUNT(*) AS \"n\" FROM ").ident(meta.table).push(" WHERE ");
    write_scope(&mut sql, meta, tenant, include_deleted);
    write_filter(&mut sql, meta, filter)?;
    Ok(sql.build())
}

/// The rows that foreign keys name: per relation, its index in `meta.relations`, the target,
/// the target's tenant scope and the ids named.
pub(crate) type Named<'a> = (usize, &'static ModelMeta, Option<&'a str>, &'a [i64]);

/// The rows that foreign keys name, as `(relation, id)`: for each relation (its index in
/// `meta.relations`), the ids among those named that exist in the target's scope. `named`
/// gives, per relation, the target, its tenant scope and the ids named; one statement for all.
/// `None` when no id is named at all.
pub(crate) fn referenced_rows(mut sql: Sql, named: &[Named<'_>]) -> Option<Statement> {
    // On PostgreSQL the rows found are locked (`FOR SHARE`) until the write's transaction
    // ends, so a parent cannot be deleted between this check and the commit; a locking clause
    // is not allowed beside UNION, but is inside a WITH query. On SQLite the write transaction
    // holds the database's write lock already.
    let named: Vec<&Named<'_>> = named.iter().filter(|(_, _, _, ids)| !ids.is_empty()).collect();
    if named.is_empty() {
        return None;
    }
    if sql.is_postgres() {
        sql.push("WITH ");
        write_locked_references(&mut sql, &named);
        for i in 0..named.len() {
            if i > 0 {
                sql.push(" UNION ALL ");
            }
            sql.push(&format!("SELECT relation, id FROM \"r{i}\""));
        }
    } else {
        for (i, n) in named.iter().enumerate() {
            if i > 0 {
                sql.push(" UNION ALL ");
            }
            write_referenced(&mut sql, n);
        }
    }
    Some(sql.build())
}

/// PostgreSQL: appends `"r0" AS (... FOR SHARE), "r1" AS (...)`, one `WITH` query per entry
/// of `named` (its rows found and locked until the transaction ends), for a `WITH` clause.
pub(crate) fn write_locked_references(sql: &mut Sql, named: &[&Named<'_>]) {
    for (i, n) in named.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push(&format!("\"r{i}\" AS ("));
        write_referenced(sql, n);
        sql.push(" FOR SHARE)");
    }
}

/// `SELECT <relation> AS relation, pk AS id FROM target WHERE <scope> AND pk IN ids`.
fn write_referenced(sql: &mut Sql, &(index, target, tenant, ids): &Named<'_>) {
    sql.push("SELECT CAST(")
        .push(&index.to_string())
        .push(" AS BIGINT) AS relation, ")
        .ident(target.primary_key)
        .push(" AS id FROM ")
        .ident(target.table)
        .push(" WHERE ");
    write_scope(sql, target, tenant, false);
    sql.push(" AND ").ident(target.primary_key).in_ids(ids);
}

/// `"id"`, `"version"` and (soft-delete models) `"live"` of the rows among `ids`, whatever
/// their tenant or deletion.
pub(crate) fn versions(mut sql: Sql, meta: &ModelMeta, ids: &[i64]) -> Statement {
    sql.push("SELECT ").ident(meta.primary_key).push(" AS \"id\", \"version\"");
    if meta.soft_delete {
        sql.push(", \"deleted_at\" IS NULL AS \"live\"");
    }
    write_from_ids(&mut sql, meta, ids);
    sql.build()
}

/// The record columns (and the tenant of multi-tenant models) of the rows among `ids`,
/// whatever their tenant or deletion: what the projections are computed from.
pub(crate) fn states(mut sql: Sql, meta: &ModelMeta, ids: &[i64]) -> Statement {
    sql.push("SELECT ").record_columns(meta);
    if meta.multi_tenant {
        sql.push(", \"tenant_id\"");
    }
    write_from_ids(&mut sql, meta, ids);
    sql.build()
}

/// ` FROM "table" WHERE "pk" = ANY(ids)`: rows by primary key, whatever their tenant or
/// deletion (the projections read them so).
fn write_from_ids(sql: &mut Sql, meta: &ModelMeta, ids: &[i64]) {
    sql.push(" FROM ")
        .ident(meta.table)
        .push(" WHERE ")
        .ident(meta.primary_key)
        .in_ids(ids);
}

/// `"owner"` (primary key), `"owner_key"` (the column `key`), `"value"` and, for soft-delete
/// models, whether it is `"deleted"`, of the rows of
/// `meta` whose unique field `field` holds one of `values`, deleted ones included (the unique
/// index covers them), within the tenant: the rows a write of those values would collide with.
pub(crate) fn holders_of_unique_values(
    mut sql: Sql,
    meta: &ModelMeta,
    tenant: Option<&str>,
    field: &FieldMeta,
    key: &FieldMeta,
    values: &[&Json],
) -> Statement {
    sql.push("SELECT ")
        .ident(meta.primary_key)
        .push(" AS \"owner\", ")
        .ident(key.name)
        .push(" AS \"owner_key\", ");
    if meta.soft_delete {
        sql.push("\"deleted_at\" IS NOT NULL AS \"deleted\", ");
    }
    sql.ident(field.name).push(" AS \"value\" FROM ").ident(meta.table).push(" WHERE ");
    write_scope(&mut sql, meta, tenant, true);
    sql.push(" AND ").ident(field.name);
    if sql.is_postgres() {
        // One array parameter: 10,000 values as many parameters cost the server more to parse
        // and plan than the lookup itself.
        let (array, cast) = crate::sql::typed_array(field.ty, values.iter().map(|v| Some(*v)));
        let cast = if field.ty == FieldType::Timestamp {
            "::text[]::timestamptz[]"
        } else {
            cast
        };
        sql.push(" = ANY(").param(array).push(cast).push(")");
    } else {
        sql.push(" IN (");
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.param(crate::sql::to_sql(field.ty, value));
        }
        sql.push(")");
    }
    sql.build()
}
