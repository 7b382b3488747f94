//! Statements on the outbox table (`dataflow_outbox`): its creation, records written with a
//! write, read in order for `sync`, narrowed, marked failed or dead, and removed.

use chrono::{DateTime, Utc};
use sea_orm::{Statement, Value as SqlValue};

use crate::kind::ProjectionSet;
use crate::model::values::CheckedRecord;
use crate::model::{FieldType, ModelMeta};
use crate::sql::{Sql, constraint, rows, write};

/// The outbox table.
pub(crate) const TABLE: &str = "dataflow_outbox";

/// The columns a record is decoded from, in order.
const RECORD_COLUMNS: &str = "\"id\", \"model\", \"row_id\", \"tenant_id\", \"cache_pending\", \"vector_pending\", \"graph_pending\", \"attempts\", \"last_error\", \"dead\", \"next_attempt_at\", \"created_at\"";

/// `CREATE TABLE IF NOT EXISTS` of the outbox, and the index `sync` reads it by.
pub(crate) fn create_table(mut sql: Sql) -> [Statement; 2] {
    let ts = sql.column_type(FieldType::Timestamp);
    let now = sql.now_default();
    let pk = sql.identity_primary_key();
    sql.push("CREATE TABLE IF NOT EXISTS ").ident(TABLE).push(" (\"id\"").push(pk);
    sql.push(", \"model\" TEXT NOT NULL, \"row_id\" BIGINT NOT NULL, \"tenant_id\" TEXT NULL");
    sql.push(", \"cache_pending\" BOOLEAN NOT NULL, \"vector_pending\" BOOLEAN NOT NULL, \"graph_pending\" BOOLEAN NOT NULL");
    sql.push(", \"attempts\" BIGINT NOT NULL DEFAULT 0, \"last_error\" TEXT NULL, \"dead\" BOOLEAN NOT NULL DEFAULT FALSE");
    sql.push(", \"next_attempt_at\" ").push(ts).push(" NOT NULL DEFAULT ").push(now);
    sql.push(", \"created_at\" ")
        .push(ts)
        .push(" NOT NULL DEFAULT ")
        .push(now)
        .push(")");
    let mut index = Sql::new(sql.backend());
    index
        .push("CREATE INDEX IF NOT EXISTS ")
        .ident("dataflow_outbox_due_idx")
        .push(" ON ")
        .ident(TABLE)
        .push(" (\"dead\", \"next_attempt_at\", \"id\")");
    [sql.build(), index.build()]
}

/// One record per row id of `model`, needing `pending`, due for `sync` at `due`; returns each
/// record's `"id"`.
pub(crate) fn insert_records(
    mut sql: Sql,
    model: &str,
    tenant: Option<&str>,
    row_ids: &[i64],
    pending: ProjectionSet,
    due: DateTime<Utc>,
) -> Statement {
    write_insert_records(&mut sql, model, tenant, "\"r\".\"id\"", pending, due);
    sql.push(" FROM ").id_rows(row_ids, "r").push(" RETURNING \"id\"");
    sql.build()
}

/// Appends `INSERT INTO` the outbox `... SELECT` of one record per row, whose id is
/// `row_id` (an expression over the `FROM` that follows), up to that `FROM`.
fn write_insert_records(sql: &mut Sql, model: &str, tenant: Option<&str>, row_id: &str, pending: ProjectionSet, due: DateTime<Utc>) {
    sql.push("INSERT INTO ").ident(TABLE).push(
        " (\"model\", \"row_id\", \"tenant_id\", \"cache_pending\", \"vector_pending\", \"graph_pending\", \"next_attempt_at\") SELECT ",
    );
    sql.param(SqlValue::String(Some(model.to_owned())))
        .push(", ")
        .push(row_id)
        .push(", ")
        .param(SqlValue::String(tenant.map(str::to_owned)))
        .push(", ")
        .param(SqlValue::Bool(Some(pending.cache)))
        .push(", ")
        .param(SqlValue::Bool(Some(pending.vector)))
        .push(", ")
        .param(SqlValue::Bool(Some(pending.graph)))
        .push(", ")
        .param(SqlValue::ChronoDateTimeUtc(Some(due)));
}

/// PostgreSQL only: one statement, atomic without a transaction of its own, that inserts a
/// checked record of `meta` and, with `outbox` (what is pending, when it is due), its outbox
/// record; returns the stored record's columns and the outbox record's id as `"outbox_id"`.
/// With `references` (the rows its foreign keys name that the node checks itself), those rows
/// are locked `FOR SHARE` and the record is inserted only when each is there: no row comes back
/// otherwise. A create needs one round trip instead of up to five (`BEGIN`, the check, the row,
/// its record, `COMMIT`).
pub(crate) fn insert_record_guarded(
    mut sql: Sql,
    meta: &ModelMeta,
    record: &CheckedRecord,
    tenant: Option<&str>,
    references: &[&rows::Named<'_>],
    outbox: Option<(ProjectionSet, DateTime<Utc>)>,
) -> Statement {
    debug_assert!(sql.is_postgres(), "SQLite has no INSERT inside WITH");
    sql.push("WITH ");
    if !references.is_empty() {
        rows::write_locked_references(&mut sql, references);
        sql.push(", ");
    }
    sql.push("\"written\" AS (");
    write::write_insert_record(&mut sql, meta, record, tenant, references.len());
    sql.push(")");
    match outbox {
        Some((pending, due)) => {
            sql.push(", \"recorded\" AS (");
            let row_id = format!("\"written\".{}", constraint::quote(meta.primary_key));
            write_insert_records(&mut sql, meta.name, tenant, &row_id, pending, due);
            sql.push(" FROM \"written\" RETURNING \"id\" AS \"outbox_id\") SELECT \"written\".*, \"recorded\".\"outbox_id\" FROM \"written\", \"recorded\"");
        }
        None => {
            sql.push(" SELECT * FROM \"written\"");
        }
    }
    sql.build()
}

/// PostgreSQL only: removes the records `outbox_ids` when every row of `expected`
/// (`(id, version, present)`) is still in the state its projections were applied from, and
/// returns the ids of the rows that moved on (`"id"`); when any did, nothing is removed. The
/// check a writer makes after applying its projections and the removal of its records, in one
/// round trip instead of two.
///
/// Two things keep it cheap on the path of every Update and Delete:
/// - One row and one record (a write by id) travel as scalar parameters. With arrays the
///   planner guesses 10 rows, the prepared statement's generic plan looks dearer than a plan
///   for the values at hand, and PostgreSQL plans the statement anew on every call.
/// - Its commit does not wait for the disk (`synchronous_commit` off for this transaction
///   alone): removing a record is bookkeeping. Lost in a crash, the record is pending again
///   and `sync` applies the row's current state once more, which changes nothing. The write
///   itself committed durably before.
pub(crate) fn settle_if_current(mut sql: Sql, meta: &ModelMeta, expected: &[(i64, i64, bool)], outbox_ids: &[i64]) -> Statement {
    debug_assert!(sql.is_postgres(), "SQLite has no DELETE inside WITH");
    let array = |ty, values: Vec<SqlValue>| SqlValue::Array(ty, Some(Box::new(values)));
    use sea_orm::sea_query::ArrayType;
    sql.push("WITH \"expected\" AS (");
    if let [(id, version, present)] = expected {
        sql.push("SELECT ")
            .param(SqlValue::BigInt(Some(*id)))
            .push("::bigint AS \"id\", ")
            .param(SqlValue::BigInt(Some(*version)))
            .push("::bigint AS \"version\", ")
            .param(SqlValue::Bool(Some(*present)))
            .push("::boolean AS \"present\"");
    } else {
        sql.push("SELECT * FROM unnest(")
            .param(array(
                ArrayType::BigInt,
                expected.iter().map(|e| SqlValue::BigInt(Some(e.0))).collect(),
            ))
            .push("::bigint[], ")
            .param(array(
                ArrayType::BigInt,
                expected.iter().map(|e| SqlValue::BigInt(Some(e.1))).collect(),
            ))
            .push("::bigint[], ")
            .param(array(ArrayType::Bool, expected.iter().map(|e| SqlValue::Bool(Some(e.2))).collect()))
            .push("::boolean[]) AS \"e\"(\"id\", \"version\", \"present\")");
    }
    sql.push("), \"current\" AS (SELECT ")
        .ident(meta.primary_key)
        .push(" AS \"id\", \"version\", ")
        .push(if meta.soft_delete { "\"deleted_at\" IS NULL" } else { "TRUE" })
        .push(" AS \"live\" FROM ")
        .ident(meta.table)
        .push(" WHERE ")
        .ident(meta.primary_key)
        .push(
            " IN (SELECT \"id\" FROM \"expected\")), \"stale\" AS (SELECT \"e\".\"id\" FROM \"expected\" \"e\" \
               LEFT JOIN \"current\" \"c\" ON \"c\".\"id\" = \"e\".\"id\" WHERE CASE WHEN \"c\".\"id\" IS NULL THEN \"e\".\"present\" \
               ELSE \"c\".\"live\" <> \"e\".\"present\" OR (\"c\".\"live\" AND \"c\".\"version\" <> \"e\".\"version\") END), \
               \"settled\" AS (DELETE FROM ",
        )
        .ident(TABLE)
        .push(" WHERE \"id\"");
    if let [id] = outbox_ids {
        sql.push(" = ").param(SqlValue::BigInt(Some(*id)));
    } else {
        sql.in_ids(outbox_ids);
    }
    // `set_config(..., true)` holds until the end of this statement's own transaction, and
    // PostgreSQL reads the setting when it commits; it runs only where a record is removed.
    sql.push(
        " AND NOT EXISTS (SELECT 1 FROM \"stale\") AND set_config('synchronous_commit', 'off', true) IS NOT NULL) \
         SELECT \"id\" FROM \"stale\"",
    );
    sql.build()
}

/// Removes the records `ids`.
pub(crate) fn delete_records(mut sql: Sql, ids: &[i64]) -> Statement {
    sql.push("DELETE FROM ").ident(TABLE).push(" WHERE \"id\"").in_ids(ids);
    sql.build()
}

/// What a failed attempt leaves on a record.
pub(crate) struct Failure<'a> {
    /// The projections still to apply.
    pub remaining: ProjectionSet,
    /// Attempts made so far.
    pub attempts: i64,
    /// Why the last one failed.
    pub error: &'a str,
    /// When to try next.
    pub next_attempt_at: DateTime<Utc>,
    /// Whether the record gave up.
    pub dead: bool,
}

/// Records a failed attempt on the records `ids`.
pub(crate) fn record_failure(mut sql: Sql, ids: &[i64], failure: &Failure<'_>) -> Statement {
    sql.push("UPDATE ").ident(TABLE).push(" SET ");
    write_pending(&mut sql, failure.remaining);
    sql.push(", \"attempts\" = ")
        .param(SqlValue::BigInt(Some(failure.attempts)))
        .push(", \"last_error\" = ")
        .param(SqlValue::String(Some(failure.error.to_owned())))
        .push(", \"next_attempt_at\" = ")
        .param(SqlValue::ChronoDateTimeUtc(Some(failure.next_attempt_at)))
        .push(", \"dead\" = ")
        .param(SqlValue::Bool(Some(failure.dead)))
        .push(" WHERE \"id\"")
        .in_ids(ids);
    sql.build()
}

/// Sets which projections the record `id` still needs.
pub(crate) fn narrow(mut sql: Sql, id: i64, remaining: ProjectionSet) -> Statement {
    sql.push("UPDATE ").ident(TABLE).push(" SET ");
    write_pending(&mut sql, remaining);
    sql.push(" WHERE \"id\" = ").param(SqlValue::BigInt(Some(id)));
    sql.build()
}

/// Which records a `sync` batch takes.
pub(crate) struct Due {
    /// Records after this id.
    pub after: i64,
    /// Up to this id (the newest when the sync began).
    pub last: i64,
    /// Whose next attempt is due by then.
    pub due_by: DateTime<Utc>,
    /// Only records still needing one of these (all when `None`).
    pub only: Option<ProjectionSet>,
    /// At most this many.
    pub limit: i64,
    /// Lock them, passing over those another runner locked (PostgreSQL).
    pub lock: bool,
}

/// The next batch of live records that are due, oldest first.
pub(crate) fn select_due(mut sql: Sql, due: &Due) -> Statement {
    sql.push("SELECT ").push(RECORD_COLUMNS).push(" FROM ").ident(TABLE);
    sql.push(" WHERE NOT \"dead\" AND \"id\" > ")
        .param(SqlValue::BigInt(Some(due.after)))
        .push(" AND \"id\" <= ")
        .param(SqlValue::BigInt(Some(due.last)))
        .push(" AND \"next_attempt_at\" <= ")
        .param(SqlValue::ChronoDateTimeUtc(Some(due.due_by)));
    if let Some(only) = due.only {
        sql.push(" AND ");
        write_any_pending(&mut sql, only);
    }
    sql.push(" ORDER BY \"id\" LIMIT ").param(SqlValue::BigInt(Some(due.limit)));
    if due.lock {
        sql.push(" FOR UPDATE SKIP LOCKED");
    }
    sql.build()
}

/// The newest record's id as `"last"` (NULL when the outbox is empty).
pub(crate) fn last_id(mut sql: Sql) -> Statement {
    sql.push("SELECT MAX(\"id\") AS \"last\" FROM ").ident(TABLE);
    sql.build()
}

/// `"n"`: how many live records still need one of `only` (any projection when `None`).
pub(crate) fn count_live(mut sql: Sql, only: Option<ProjectionSet>) -> Statement {
    sql.push("SELECT COUNT(*) AS \"n\" FROM ").ident(TABLE).push(" WHERE NOT \"dead\"");
    if let Some(only) = only {
        sql.push(" AND ");
        write_any_pending(&mut sql, only);
    }
    sql.build()
}

/// The backlog in one row: `"pending"` (live records), `"dead"` (dead letters), `"oldest"`
/// (`created_at` of the oldest live record) and `"now"` (the database's clock, so that the
/// oldest record's age is measured on the clock that stamped it). The counts are NULL when
/// the table is empty, `"oldest"` when no record is live.
pub(crate) fn backlog(mut sql: Sql) -> Statement {
    let now = sql.now();
    sql.push("SELECT SUM(CASE WHEN \"dead\" THEN 0 ELSE 1 END) AS \"pending\"")
        .push(", SUM(CASE WHEN \"dead\" THEN 1 ELSE 0 END) AS \"dead\"")
        .push(", MIN(CASE WHEN \"dead\" THEN NULL ELSE \"created_at\" END) AS \"oldest\"")
        .push(", ")
        .push(now)
        .push(" AS \"now\" FROM ")
        .ident(TABLE);
    sql.build()
}

/// Up to `limit` records, live or dead, oldest first.
pub(crate) fn list(mut sql: Sql, dead: bool, limit: i64) -> Statement {
    sql.push("SELECT ")
        .push(RECORD_COLUMNS)
        .push(" FROM ")
        .ident(TABLE)
        .push(" WHERE \"dead\" = ")
        .param(SqlValue::Bool(Some(dead)))
        .push(" ORDER BY \"id\" LIMIT ")
        .param(SqlValue::BigInt(Some(limit)));
    sql.build()
}

/// Puts dead records back in line, due `now` with their attempts reset: those among `ids`, or
/// all when `None`.
pub(crate) fn revive(mut sql: Sql, ids: Option<&[i64]>, now: DateTime<Utc>) -> Statement {
    sql.push("UPDATE ")
        .ident(TABLE)
        .push(" SET \"dead\" = FALSE, \"attempts\" = 0, \"next_attempt_at\" = ")
        .param(SqlValue::ChronoDateTimeUtc(Some(now)))
        .push(" WHERE \"dead\"");
    if let Some(ids) = ids {
        sql.push(" AND \"id\"").in_ids(ids);
    }
    sql.build()
}

/// `("cache_pending" OR ...)`: the record still needs one of the projections in `set`.
fn write_any_pending(sql: &mut Sql, set: ProjectionSet) {
    sql.push("(FALSE");
    for (on, column) in [
        (set.cache, "cache_pending"),
        (set.vector, "vector_pending"),
        (set.graph, "graph_pending"),
    ] {
        if on {
            sql.push(" OR ").ident(column);
        }
    }
    sql.push(")");
}

/// `"cache_pending" = $1, "vector_pending" = $2, "graph_pending" = $3`.
fn write_pending(sql: &mut Sql, pending: ProjectionSet) {
    sql.push("\"cache_pending\" = ")
        .param(SqlValue::Bool(Some(pending.cache)))
        .push(", \"vector_pending\" = ")
        .param(SqlValue::Bool(Some(pending.vector)))
        .push(", \"graph_pending\" = ")
        .param(SqlValue::Bool(Some(pending.graph)));
}
