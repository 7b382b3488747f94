//! Schema statements: a model's table, its added columns and indexes, the PostgreSQL schema,
//! and the primary keys a bulk write takes ahead of its rows.

use sea_orm::{DbBackend, Statement, Value as SqlValue};

use crate::model::{FieldMeta, FieldType, ModelMeta};
use crate::sql::Sql;
use crate::sql::constraint::{self, Constraint};

/// `CREATE SCHEMA IF NOT EXISTS`.
pub(crate) fn create_schema(mut sql: Sql, schema: &str) -> Statement {
    sql.push("CREATE SCHEMA IF NOT EXISTS ").ident(schema);
    sql.build()
}

/// `CREATE TABLE IF NOT EXISTS` for a model, named `table` (its own, or the new table of a
/// rebuild): its fields, the tenant of multi-tenant models, the columns dataflow maintains
/// (`version`, `created_at`, `updated_at`, `deleted_at`) and the `constraints` given (SQLite
/// takes constraints only here; PostgreSQL gets none here and adds them after).
pub(crate) fn create_table(mut sql: Sql, meta: &ModelMeta, table: &str, constraints: &[Constraint]) -> Statement {
    sql.push("CREATE TABLE IF NOT EXISTS ").ident(table).push(" (");
    for (i, f) in meta.fields.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.ident(f.name);
        if f.primary_key {
            let pk = sql.identity_primary_key();
            sql.push(pk);
        } else {
            let ty = sql.column_type(f.ty);
            sql.push(" ").push(ty).push(if f.nullable { " NULL" } else { " NOT NULL" });
        }
    }
    if meta.multi_tenant {
        sql.push(", \"tenant_id\" TEXT NOT NULL");
    }
    let ts = sql.column_type(FieldType::Timestamp);
    let now = sql.now_default();
    sql.push(", \"version\" BIGINT NOT NULL DEFAULT 1");
    for column in ["created_at", "updated_at"] {
        sql.push(", ").ident(column).push(" ").push(ts).push(" NOT NULL DEFAULT ").push(now);
    }
    if meta.soft_delete {
        sql.push(", \"deleted_at\" ").push(ts).push(" NULL");
    }
    constraint::inline(&mut sql, constraints);
    sql.push(")");
    sql.build()
}

/// The columns of a model's table, in the order [`create_table`] writes them.
pub(crate) fn table_columns(meta: &ModelMeta) -> Vec<&'static str> {
    let mut columns: Vec<&'static str> = meta.fields.iter().map(|f| f.name).collect();
    if meta.multi_tenant {
        columns.push("tenant_id");
    }
    columns.extend(["version", "created_at", "updated_at"]);
    if meta.soft_delete {
        columns.push("deleted_at");
    }
    columns
}

/// SQLite: the statements that move the rows of `table` into `rebuilt` (created by
/// [`create_table`] with its constraints) and put it in the old table's place: the way SQLite
/// adds constraints to a table. The caller keeps the AUTOINCREMENT counter (see
/// [`sqlite_set_sequence`]).
pub(crate) fn sqlite_rebuild(meta: &ModelMeta, rebuilt: &str) -> [String; 3] {
    let q = constraint::quote;
    let columns = table_columns(meta).iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
    [
        format!("INSERT INTO {} ({columns}) SELECT {columns} FROM {}", q(rebuilt), q(meta.table)),
        format!("DROP TABLE {}", q(meta.table)),
        format!("ALTER TABLE {} RENAME TO {}", q(rebuilt), q(meta.table)),
    ]
}

/// SQLite: the AUTOINCREMENT counter of `table`, as `"seq"` (no row when it has none).
pub(crate) fn sqlite_sequence(mut sql: Sql, table: &str) -> Statement {
    sql.push("SELECT \"seq\" FROM \"sqlite_sequence\" WHERE \"name\" = ")
        .param(SqlValue::String(Some(table.to_owned())));
    sql.build()
}

/// SQLite: sets the AUTOINCREMENT counter of `table` to `seq`.
pub(crate) fn sqlite_set_sequence(table: &str, seq: i64) -> [Statement; 2] {
    let mut delete = Sql::new(DbBackend::Sqlite);
    delete
        .push("DELETE FROM \"sqlite_sequence\" WHERE \"name\" = ")
        .param(SqlValue::String(Some(table.to_owned())));
    let mut insert = Sql::new(DbBackend::Sqlite);
    insert
        .push("INSERT INTO \"sqlite_sequence\" (\"name\", \"seq\") VALUES (")
        .param(SqlValue::String(Some(table.to_owned())))
        .push(", ")
        .param(SqlValue::BigInt(Some(seq)))
        .push(")");
    [delete.build(), insert.build()]
}

/// The names of `table`'s columns, one row each as `"name"`.
pub(crate) fn column_names(mut sql: Sql, table: &str) -> Statement {
    if sql.backend() == DbBackend::Postgres {
        sql.push("SELECT column_name AS name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ");
        sql.param(SqlValue::String(Some(table.to_owned())));
    } else {
        sql.push("SELECT name FROM pragma_table_info(")
            .param(SqlValue::String(Some(table.to_owned())))
            .push(")");
    }
    sql.build()
}

/// `ALTER TABLE ... ADD COLUMN` of a nullable field.
pub(crate) fn add_nullable_column(mut sql: Sql, meta: &ModelMeta, field: &FieldMeta) -> Statement {
    let ty = sql.column_type(field.ty);
    sql.push("ALTER TABLE ")
        .ident(meta.table)
        .push(" ADD COLUMN ")
        .ident(field.name)
        .push(" ")
        .push(ty)
        .push(" NULL");
    sql.build()
}

/// `CREATE [UNIQUE] INDEX IF NOT EXISTS "{index}" ON "{table}" (columns)`.
pub(crate) fn create_index(mut sql: Sql, table: &str, index: &str, columns: &[&str], unique: bool) -> Statement {
    sql.push(if unique {
        "CREATE UNIQUE INDEX IF NOT EXISTS "
    } else {
        "CREATE INDEX IF NOT EXISTS "
    });
    sql.ident(index)
        .push(" ON ")
        .ident(table)
        .push(" (")
        .ident_list(columns.iter().copied())
        .push(")");
    sql.build()
}

/// `count` unused primary keys of `meta`'s table, in one row as the array `"ids"`
/// (PostgreSQL: the next values of the table's sequence); on SQLite one row `"last"`: the
/// largest id the table has used, its rows' or its AUTOINCREMENT counter's, after which the
/// caller counts.
pub(crate) fn next_ids(mut sql: Sql, meta: &ModelMeta, count: usize) -> Statement {
    let pk = meta.primary_key;
    if sql.backend() == DbBackend::Sqlite {
        sql.push("SELECT MAX(COALESCE((SELECT MAX(")
            .ident(pk)
            .push(") FROM ")
            .ident(meta.table)
            .push("), 0), COALESCE((SELECT \"seq\" FROM \"sqlite_sequence\" WHERE \"name\" = ")
            .param(SqlValue::String(Some(meta.table.to_owned())))
            .push("), 0)) AS \"last\"");
        return sql.build();
    }
    // The sequence is resolved once: calling pg_get_serial_sequence per row costs more than
    // the nextval calls themselves (65 ms against 5 ms for 10,000 ids on the bench machine).
    // The ids come back as one array, not a row each (rows are decoded by column name).
    sql.push("WITH \"s\" AS MATERIALIZED (SELECT pg_get_serial_sequence(")
        .param(quoted(meta.table))
        .push(", ")
        .param(SqlValue::String(Some(pk.to_owned())))
        .push(")::regclass AS \"seq\") SELECT array_agg(nextval(\"s\".\"seq\")) AS \"ids\" FROM \"s\", generate_series(1, ")
        .param(SqlValue::BigInt(Some(count as i64)))
        .push(")");
    sql.build()
}

/// PostgreSQL: moves the table's sequence past its largest id (after rows with explicit ids
/// were written). `None` on SQLite, whose AUTOINCREMENT counter moves by itself.
pub(crate) fn advance_ids(mut sql: Sql, meta: &ModelMeta) -> Option<Statement> {
    if sql.backend() == DbBackend::Sqlite {
        return None;
    }
    let pk = || SqlValue::String(Some(meta.primary_key.to_owned()));
    sql.push("SELECT setval(pg_get_serial_sequence(")
        .param(quoted(meta.table))
        .push(", ")
        .param(pk())
        .push("), GREATEST((SELECT MAX(")
        .ident(meta.primary_key)
        .push(") FROM ")
        .ident(meta.table)
        .push("), nextval(pg_get_serial_sequence(")
        .param(quoted(meta.table))
        .push(", ")
        .param(pk())
        .push("))))");
    Some(sql.build())
}

/// A table name quoted as `pg_get_serial_sequence` expects it.
fn quoted(table: &str) -> SqlValue {
    SqlValue::String(Some(format!("\"{table}\"")))
}
