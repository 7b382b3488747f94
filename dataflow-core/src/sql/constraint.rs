//! The constraints a model's table carries so that a writer who bypasses the nodes cannot
//! break the model's rules: a `FOREIGN KEY` per relation, with its `ON DELETE` action, and a
//! `CHECK` per field for the rules SQL can express (`min`, `max`, `len`, `one_of`; not
//! `pattern`, whose regular expressions PostgreSQL and SQLite do not read alike).
//!
//! A constraint's name ends in a hash of its definition (`products_price_check_1b2c3d4e`), so
//! `migrate` knows a constraint whose rule changed on the model and replaces it.

use sea_orm::{DbBackend, Statement, Value as SqlValue};

use crate::model::{FieldMeta, ModelMeta, RelationMeta, Rule};
use crate::sql::Sql;

/// One constraint of a model's table.
#[derive(Debug, Clone)]
pub(crate) struct Constraint {
    /// `{table}_{field}_check_{hash}` or `{table}_{field}_fkey_{hash}`.
    pub(crate) name: String,
    /// The field it guards.
    pub(crate) field: &'static FieldMeta,
    /// The relation of a foreign key; `None` for a CHECK.
    pub(crate) relation: Option<&'static RelationMeta>,
    /// The text after `CONSTRAINT "name"`: `CHECK (...)` or `FOREIGN KEY (...) REFERENCES ...`.
    definition: String,
    /// A condition that holds for the rows (as `"c"`) that break it (no bound values).
    broken_by: String,
}

impl Constraint {
    /// What the constraint says, for messages: `CHECK ("price" >= 0)`.
    pub(crate) fn definition(&self) -> &str {
        &self.definition
    }
}

/// The constraints of `meta`'s table on `backend`, in field order.
///
/// On PostgreSQL the foreign key between two multi-tenant models includes the tenant
/// (`("tenant_id", "customer_id") REFERENCES "customers" ("tenant_id", "id")`), so a row cannot
/// name another tenant's row; its `SET NULL` clears only the foreign-key column. SQLite cannot
/// clear one column of such a key, so there the key is the id alone and the nodes check the
/// tenant.
pub(crate) fn constraints(backend: DbBackend, meta: &'static ModelMeta) -> Vec<Constraint> {
    let mut out = Vec::new();
    for field in meta.fields {
        if let Some(check) = check_condition(backend, field) {
            let definition = format!("CHECK ({check})");
            out.push(Constraint {
                name: name(meta.table, field.name, "check", &definition),
                field,
                relation: None,
                broken_by: format!("{} IS NOT NULL AND NOT ({check})", quote(field.name)),
                definition,
            });
        }
        if let Some(relation) = meta.relation_on(field.name) {
            let target = (relation.target_meta)();
            let with_tenant = backend == DbBackend::Postgres && meta.multi_tenant && target.multi_tenant;
            let (columns, target_columns) = if with_tenant {
                (
                    format!("\"tenant_id\", {}", quote(field.name)),
                    format!("\"tenant_id\", {}", quote(target.primary_key)),
                )
            } else {
                (quote(field.name), quote(target.primary_key))
            };
            let action = match relation.on_delete {
                crate::OnDelete::SetNull if with_tenant => format!("SET NULL ({})", quote(field.name)),
                other => other.sql().to_owned(),
            };
            let definition = format!(
                "FOREIGN KEY ({columns}) REFERENCES {} ({target_columns}) ON DELETE {action}",
                quote(target.table)
            );
            let join = if with_tenant {
                format!(
                    "\"p\".{} = \"c\".{} AND \"p\".\"tenant_id\" = \"c\".\"tenant_id\"",
                    quote(target.primary_key),
                    quote(field.name)
                )
            } else {
                format!("\"p\".{} = \"c\".{}", quote(target.primary_key), quote(field.name))
            };
            out.push(Constraint {
                name: name(meta.table, field.name, "fkey", &definition),
                field,
                relation: Some(relation),
                broken_by: format!(
                    "\"c\".{} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {} AS \"p\" WHERE {join})",
                    quote(field.name),
                    quote(target.table)
                ),
                definition,
            });
        }
    }
    out
}

/// The CHECK condition of a field's rules that SQL can express, `None` when it has none.
fn check_condition(backend: DbBackend, field: &FieldMeta) -> Option<String> {
    let column = quote(field.name);
    let length = match backend {
        DbBackend::Postgres => format!("char_length({column})"),
        _ => format!("length({column})"),
    };
    let parts: Vec<String> = field
        .rules
        .iter()
        .filter_map(|rule| match rule {
            Rule::Min(min) => Some(format!("{column} >= {}", number(*min))),
            Rule::Max(max) => Some(format!("{column} <= {}", number(*max))),
            Rule::Len { min, max } => {
                let mut bounds = Vec::new();
                if let Some(min) = min.filter(|&m| m > 0) {
                    bounds.push(format!("{length} >= {min}"));
                }
                if let Some(max) = max {
                    bounds.push(format!("{length} <= {max}"));
                }
                (!bounds.is_empty()).then(|| bounds.join(" AND "))
            }
            Rule::OneOf(values) => Some(format!(
                "{column} IN ({})",
                values.iter().map(|v| literal(v)).collect::<Vec<_>>().join(", ")
            )),
            // Rust's regular expressions are not PostgreSQL's (POSIX) nor available in SQLite.
            Rule::Pattern(_) => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" AND "))
}

/// `ALTER TABLE ... ADD CONSTRAINT ... NOT VALID` (PostgreSQL): enforced on new and changed
/// rows at once, without scanning (or long locking) the rows already there.
pub(crate) fn add_not_valid(mut sql: Sql, meta: &ModelMeta, c: &Constraint) -> Statement {
    sql.push("ALTER TABLE ")
        .ident(meta.table)
        .push(" ADD CONSTRAINT ")
        .ident(&c.name)
        .push(" ")
        .push(&c.definition)
        .push(" NOT VALID");
    sql.build()
}

/// `ALTER TABLE ... VALIDATE CONSTRAINT` (PostgreSQL): checks the rows already there while
/// writes go on (it takes a `SHARE UPDATE EXCLUSIVE` lock only).
pub(crate) fn validate(mut sql: Sql, meta: &ModelMeta, name: &str) -> Statement {
    sql.push("ALTER TABLE ").ident(meta.table).push(" VALIDATE CONSTRAINT ").ident(name);
    sql.build()
}

/// `ALTER TABLE ... DROP CONSTRAINT` (PostgreSQL).
pub(crate) fn drop(mut sql: Sql, meta: &ModelMeta, name: &str) -> Statement {
    sql.push("ALTER TABLE ").ident(meta.table).push(" DROP CONSTRAINT ").ident(name);
    sql.build()
}

/// The constraints the table has (PostgreSQL: CHECK and FOREIGN KEY ones), one row each as
/// `"name"` and `"valid"`.
pub(crate) fn existing(mut sql: Sql, table: &str) -> Statement {
    sql.push("SELECT conname::text AS \"name\", convalidated AS \"valid\" FROM pg_constraint WHERE contype IN ('c', 'f') AND conrelid = to_regclass(")
        .param(SqlValue::String(Some(format!("\"{table}\""))))
        .push(")");
    sql.build()
}

/// SQLite: the table's `CREATE TABLE` text, as `"sql"`.
pub(crate) fn sqlite_table_sql(mut sql: Sql, table: &str) -> Statement {
    sql.push("SELECT \"sql\" FROM \"sqlite_master\" WHERE \"type\" = 'table' AND \"name\" = ")
        .param(SqlValue::String(Some(table.to_owned())));
    sql.build()
}

/// The first `limit` rows that break `c`, as `"id"` and `"value"` (the column as text), and
/// how many there are in all, as `"total"` on every row.
pub(crate) fn broken_rows(mut sql: Sql, meta: &ModelMeta, c: &Constraint, limit: u64) -> Statement {
    sql.push("SELECT \"c\".")
        .ident(meta.primary_key)
        .push(" AS \"id\", CAST(\"c\".")
        .ident(c.field.name)
        .push(" AS TEXT) AS \"value\", COUNT(*) OVER () AS \"total\" FROM ")
        .ident(meta.table)
        .push(" AS \"c\" WHERE ")
        .push(&c.broken_by)
        .push(" ORDER BY \"c\".")
        .ident(meta.primary_key)
        .push(" LIMIT ")
        .param(SqlValue::BigInt(Some(limit as i64)));
    sql.build()
}

/// The table's constraints written inside `CREATE TABLE` (SQLite, which cannot add them
/// later): `, CONSTRAINT "name" definition` for each.
pub(crate) fn inline(sql: &mut Sql, constraints: &[Constraint]) {
    for c in constraints {
        sql.push(", CONSTRAINT ").ident(&c.name).push(" ").push(&c.definition);
    }
}

/// The constraint of `meta`'s table named in a database error's text, when it names one of
/// ours (of either backend: their names differ only where the definitions do).
pub(crate) fn named_in(meta: &'static ModelMeta, message: &str) -> Option<Constraint> {
    [DbBackend::Postgres, DbBackend::Sqlite]
        .into_iter()
        .flat_map(|backend| constraints(backend, meta))
        .find(|c| message.contains(&c.name))
}

/// `{table}_{field}_{kind}_{hash}`, at most 63 bytes (PostgreSQL's limit on names).
fn name(table: &str, field: &str, kind: &str, definition: &str) -> String {
    format!("{}_{:08x}", stem(table, field, kind), fnv1a(definition.as_bytes()))
}

/// The name of a constraint but its hash: `{table}_{field}_{kind}`, cut to leave room for it.
fn stem(table: &str, field: &str, kind: &str) -> String {
    let mut stem = format!("{table}_{field}_{kind}");
    stem.truncate(63 - 9);
    stem
}

/// Whether the constraint `name` on `meta`'s table is one that `migrate` made for a field of
/// the model (and may replace when the field's rule changes).
pub(crate) fn is_ours(meta: &ModelMeta, name: &str) -> bool {
    meta.fields.iter().any(|f| {
        ["check", "fkey"].iter().any(|kind| {
            name.strip_prefix(&stem(meta.table, f.name, kind))
                .and_then(|rest| rest.strip_prefix('_'))
                .is_some_and(|hash| hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit()))
        })
    })
}

/// FNV-1a, 32 bits: a hash that is the same on every machine and Rust release (the standard
/// library's hasher promises neither), which constraint names need.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0x811c_9dc5_u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// A quoted identifier as text (names come from model metadata, restricted by the derive), for
/// statements kept as text: constraint definitions and the SQLite rebuild.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal of a CHECK (DDL takes no bound parameters; the values come from the
/// model's attributes, not from input).
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A bound of `min`/`max` as SQL reads it: integral values without a fraction.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_postgres_and_change_with_the_definition() {
        let a = name("products", "price", "check", "CHECK (\"price\" >= 0)");
        let b = name("products", "price", "check", "CHECK (\"price\" >= 1)");
        assert!(a.starts_with("products_price_check_"));
        assert_ne!(a, b);
        let long = name(&"t".repeat(60), &"f".repeat(60), "fkey", "x");
        assert_eq!(long.len(), 63);
    }

    #[test]
    fn literals_and_numbers() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(-5.0), "-5");
        assert_eq!(number(0.5), "0.5");
    }
}
