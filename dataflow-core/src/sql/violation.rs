//! Which rule of a model a database error says a write broke, so that a node reports it as
//! the field error its own checks would have given, not as the driver's text: a unique value a
//! concurrent writer took in between, a reference or a value that the table's constraints refuse.

use sea_orm::{DbErr, SqlErr};

use crate::model::{FieldMeta, ModelMeta, RelationMeta};
use crate::sql::constraint;

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

/// A rule of a model that a database error says a write broke.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Broken {
    /// A value of this unique field is taken.
    Unique(&'static FieldMeta),
    /// The foreign key of this relation names no row (its `FOREIGN KEY` constraint).
    Reference(&'static RelationMeta),
    /// A value of this field breaks its `CHECK` constraint.
    Check(&'static FieldMeta),
}

/// The rule of `meta` that `err` says a write to `meta`'s table broke: a unique index (see
/// [`unique_field`]), or one of the model's constraints, which PostgreSQL names in its message
/// (`violates foreign key constraint "products_category_id_fkey_…"`), as SQLite does for a
/// CHECK (`CHECK constraint failed: products_price_check_…`) but not for a foreign key.
pub(crate) fn broken_rule(meta: &'static ModelMeta, err: &DbErr) -> Option<Broken> {
    if let Some(field) = unique_field(meta, err) {
        return Some(Broken::Unique(field));
    }
    let message = err.to_string();
    let c = constraint::named_in(meta, &message)?;
    Some(match c.relation {
        Some(relation) => Broken::Reference(relation),
        None => Broken::Check(c.field),
    })
}
