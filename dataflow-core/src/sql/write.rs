//! Statements that write a model's rows: insert one record, update and delete by id or by
//! filter. Each returns the written rows (`RETURNING`), so a write needs no second read.

use sea_orm::{Statement, Value as SqlValue};

use crate::error::Result;
use crate::model::filter::Filter;
use crate::model::values::CheckedRecord;
use crate::model::{FieldMeta, ModelMeta};
use crate::sql::Sql;
use crate::sql::rows::{write_filter, write_scope};
use crate::sql::to_sql;

/// Which rows a write touches.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rows<'a> {
    /// The row with this primary key, already checked to be in scope (locked by the caller).
    Id(i64),
    /// The rows in scope that pass the filter.
    Filter(&'a Filter),
    /// The rows with these primary keys, already selected in scope and locked by the caller.
    Ids(&'a [i64]),
}

/// `INSERT` of one checked record (and its tenant), returning the stored record.
pub(crate) fn insert_record(mut sql: Sql, meta: &ModelMeta, record: &CheckedRecord, tenant: Option<&str>) -> Statement {
    write_insert_record(&mut sql, meta, record, tenant, 0);
    sql.build()
}

/// Appends the `INSERT` of [`insert_record`]. With `required` above 0, the row is inserted
/// only when each of the `WITH` queries `"r0"` to `"r{required - 1}"` holds a row (the rows
/// its foreign keys name, see [`crate::sql::rows::write_locked_references`]); else nothing is.
pub(crate) fn write_insert_record(sql: &mut Sql, meta: &ModelMeta, record: &CheckedRecord, tenant: Option<&str>, required: usize) {
    sql.push("INSERT INTO ").ident(meta.table).push(" (");
    sql.ident_list(record.values.iter().map(|(f, _)| f.name));
    if tenant.is_some() {
        sql.push(", \"tenant_id\"");
    }
    sql.push(if required == 0 { ") VALUES (" } else { ") SELECT " });
    for (i, (f, v)) in record.values.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.param(to_sql(f.ty, v));
    }
    if let Some(t) = tenant {
        sql.push(", ").param(SqlValue::String(Some(t.to_owned())));
    }
    if required == 0 {
        sql.push(")");
    } else {
        sql.push(" WHERE ");
        for i in 0..required {
            if i > 0 {
                sql.push(" AND ");
            }
            sql.push(&format!("EXISTS (SELECT 1 FROM \"r{i}\")"));
        }
    }
    sql.push(" RETURNING ").record_columns(meta);
}

/// `UPDATE` of the `patch`ed fields (with the version bumped and `updated_at` set) of `rows`,
/// returning the stored records.
pub(crate) fn update_rows(
    mut sql: Sql,
    meta: &'static ModelMeta,
    patch: &CheckedRecord,
    rows: Rows<'_>,
    tenant: Option<&str>,
) -> Result<Statement> {
    sql.push("UPDATE ").ident(meta.table).push(" SET ");
    for (f, v) in &patch.values {
        sql.ident(f.name).push(" = ").param(to_sql(f.ty, v)).push(", ");
    }
    let now = sql.now();
    sql.push("\"version\" = \"version\" + 1, \"updated_at\" = ").push(now);
    sql.push(" WHERE ");
    match rows {
        Rows::Id(id) => {
            sql.ident(meta.primary_key).push(" = ").param(SqlValue::BigInt(Some(id)));
        }
        Rows::Filter(filter) => {
            write_scope(&mut sql, meta, tenant, false);
            write_filter(&mut sql, meta, Some(filter))?;
        }
        Rows::Ids(ids) => {
            sql.ident(meta.primary_key).in_ids(ids);
        }
    }
    sql.push(" RETURNING ").record_columns(meta);
    Ok(sql.build())
}

/// `DELETE` of `rows` in scope, or with `soft`, an `UPDATE` that marks them deleted (and bumps
/// their version); returns the primary key and version of each.
pub(crate) fn delete_rows(mut sql: Sql, meta: &'static ModelMeta, rows: Rows<'_>, tenant: Option<&str>, soft: bool) -> Result<Statement> {
    if soft {
        let now = sql.now();
        sql.push("UPDATE ").ident(meta.table).push(" SET \"deleted_at\" = ").push(now);
        sql.push(", \"updated_at\" = ")
            .push(now)
            .push(", \"version\" = \"version\" + 1 WHERE ");
    } else {
        sql.push("DELETE FROM ").ident(meta.table).push(" WHERE ");
    }
    write_scope(&mut sql, meta, tenant, !soft);
    write_rows(&mut sql, meta, rows)?;
    sql.push(" RETURNING ").ident(meta.primary_key).push(", \"version\"");
    Ok(sql.build())
}

/// Appends ` AND <which rows>` after a scope: the primary key, the filter or the keys.
fn write_rows(sql: &mut Sql, meta: &'static ModelMeta, rows: Rows<'_>) -> Result<()> {
    match rows {
        Rows::Id(id) => {
            sql.push(" AND ")
                .ident(meta.primary_key)
                .push(" = ")
                .param(SqlValue::BigInt(Some(id)));
        }
        Rows::Filter(filter) => write_filter(sql, meta, Some(filter))?,
        Rows::Ids(ids) => {
            sql.push(" AND ").ident(meta.primary_key).in_ids(ids);
        }
    }
    Ok(())
}

/// The primary keys of `rows` in scope (with `include_deleted`, soft-deleted ones too), one
/// row each as `"id"`, locked until the transaction ends (PostgreSQL; SQLite's write
/// transaction holds the whole file): what a delete removes, fixed before the rows that
/// name them are dealt with.
pub(crate) fn lock_ids(
    mut sql: Sql,
    meta: &'static ModelMeta,
    rows: Rows<'_>,
    tenant: Option<&str>,
    include_deleted: bool,
) -> Result<Statement> {
    sql.push("SELECT ")
        .ident(meta.primary_key)
        .push(" AS \"id\" FROM ")
        .ident(meta.table)
        .push(" WHERE ");
    write_scope(&mut sql, meta, tenant, include_deleted);
    write_rows(&mut sql, meta, rows)?;
    sql.lock_rows();
    Ok(sql.build())
}

/// The rows of `child` whose foreign key `field` names one of `ids`, whatever their tenant
/// or deletion, one row each as `"id"` (and `"tenant_id"` for a multi-tenant model), locked
/// (PostgreSQL); at most `limit` of them when given.
pub(crate) fn naming_rows(mut sql: Sql, child: &ModelMeta, field: &str, ids: &[i64], limit: Option<u64>) -> Statement {
    sql.push("SELECT ").ident(child.primary_key).push(" AS \"id\"");
    if child.multi_tenant {
        sql.push(", \"tenant_id\"");
    }
    sql.push(" FROM ").ident(child.table).push(" WHERE ").ident(field).in_ids(ids);
    sql.push(" ORDER BY ").ident(child.primary_key);
    if let Some(limit) = limit {
        sql.push(" LIMIT ").param(SqlValue::BigInt(Some(limit as i64)));
    } else {
        sql.lock_rows();
    }
    sql.build()
}

/// `UPDATE` that sets the foreign key `field` of `child`'s rows `ids` to NULL (their version
/// bumped, `updated_at` set): `on_delete = "set_null"` done by the node, so the rows'
/// versions and projections follow.
pub(crate) fn clear_reference(mut sql: Sql, child: &ModelMeta, field: &str, ids: &[i64]) -> Statement {
    let now = sql.now();
    sql.push("UPDATE ")
        .ident(child.table)
        .push(" SET ")
        .ident(field)
        .push(" = NULL, \"version\" = \"version\" + 1, \"updated_at\" = ")
        .push(now)
        .push(" WHERE ")
        .ident(child.primary_key)
        .in_ids(ids);
    sql.build()
}

/// `INSERT ... ON CONFLICT DO UPDATE` of many checked records in one statement, the rows
/// travelling as a parameter per column ([`Sql::record_rows`]): on the primary key (`unique`
/// is `None`; records carry their ids) or on a unique field (per tenant; records carry no id).
/// With a tenant, a row of another tenant is left alone. Returns the primary key and version
/// of each written row and, on a unique field, its value as `"conflict_key"`.
///
/// `new_ids`: the records carry ids the table's sequence just gave, which no row holds, so the
/// statement is a plain `INSERT` (PostgreSQL's speculative insertion for `ON CONFLICT` checks
/// the key's index and logs a confirmation per row first). It returns nothing: every row is
/// inserted at version 1 under the id it carries, or the statement fails.
pub(crate) fn upsert_rows(
    mut sql: Sql,
    meta: &'static ModelMeta,
    tenant: Option<&str>,
    unique: Option<&'static FieldMeta>,
    records: &[&CheckedRecord],
    new_ids: bool,
) -> Statement {
    let columns: Vec<&'static FieldMeta> = meta.fields.iter().filter(|f| !f.primary_key || unique.is_none()).collect();
    sql.push("INSERT INTO ")
        .ident(meta.table)
        .push(" AS \"t\" (")
        .ident_list(columns.iter().map(|f| f.name));
    if tenant.is_some() {
        sql.push(", \"tenant_id\"");
    }
    sql.push(") SELECT ").ident_list(columns.iter().map(|f| f.name));
    if let Some(t) = tenant {
        sql.push(", ").param(SqlValue::String(Some(t.to_owned())));
    }
    sql.push(" FROM ").record_rows(records, &columns, "x");
    if new_ids && unique.is_none() {
        return sql.build();
    }
    // `WHERE true` tells SQLite's parser that `ON CONFLICT` starts the upsert clause.
    sql.push(" WHERE true ON CONFLICT (");
    let key_field: &'static FieldMeta = match unique {
        None => meta.field(meta.primary_key).expect("primary key exists"),
        Some(f) => {
            if tenant.is_some() {
                sql.push("\"tenant_id\", ");
            }
            f
        }
    };
    sql.ident(key_field.name).push(") DO UPDATE SET ");
    for f in columns.iter().filter(|f| !f.primary_key) {
        sql.ident(f.name).push(" = EXCLUDED.").ident(f.name).push(", ");
    }
    let now = sql.now();
    sql.push("\"version\" = \"t\".\"version\" + 1, \"updated_at\" = ").push(now);
    if meta.soft_delete {
        sql.push(", \"deleted_at\" = NULL");
    }
    if tenant.is_some() {
        sql.push(" WHERE \"t\".\"tenant_id\" = EXCLUDED.\"tenant_id\"");
    }
    // RETURNING names the target's columns unqualified: SQLite does not accept the alias there.
    sql.push(" RETURNING ").ident(meta.primary_key).push(", \"version\"");
    if let Some(f) = unique {
        sql.push(", ").ident(f.name).push(" AS \"conflict_key\"");
    }

    sql.build()
}
