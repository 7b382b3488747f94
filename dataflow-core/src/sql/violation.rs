//! Which rule of a model a database error says a write broke, so that a node reports it as
//! the field error its own checks would have given, not as the driver's text. The nodes check
//! unique values before they write; this catches what a concurrent writer took in between.

use sea_orm::{DbErr, SqlErr};

use crate::model::{FieldMeta, ModelMeta};

/// The unique field of `meta` whose index `err` says a write collided with, when it says so.
///
/// PostgreSQL names the index (`duplicate key value violates unique constraint
/// "products_sku_key"`; the migration names unique indexes `{table}_{field}_key`), SQLite
/// its columns (`UNIQUE constraint failed: products.tenant_id, products.sku`).
pub(crate) fn unique_field(meta: &'static ModelMeta, err: &DbErr) -> Option<&'static FieldMeta> {
    let Some(SqlErr::UniqueConstraintViolation(message)) = err.sql_err() else {
        return None;
    };
    meta.unique_fields().find(|f| {
        let index = format!("\"{}_{}_key\"", meta.table, f.name);
        let column = format!("{}.{}", meta.table, f.name);
        message.contains(&index) || message.split([':', ',']).any(|part| part.trim() == column)
    })
}

/// Whether `err` is a collision with any unique index (the primary key's included).
pub(crate) fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}
