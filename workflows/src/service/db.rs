//! The service's own tables in the relational store — runs and their events, API keys, the
//! audit log — and the one way the service talks to them: statements with bound values
//! through the store's connection, on PostgreSQL and SQLite alike.
//!
//! The statements are written once, with `$1`-style placeholders; on SQLite they become
//! `?1`, SQLite's numbered form, so a value binds by its number whatever order the text
//! names it in. JSON and times are stored as text (RFC 3339, UTC, microseconds), which both
//! databases compare and sort the same way.

use chrono::{SecondsFormat, Utc};
use dataflow_core::Stores;
use dataflow_core::sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, Value as SqlValue};

use super::ServiceError;

/// Tables of the service, created by [`Db::migrate`]; the same on both databases but for the
/// audit log's key and its append-only guard.
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS dataflow_runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    workflow TEXT NOT NULL,
    idempotency_key TEXT,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    outputs TEXT,
    report TEXT,
    error TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    worker TEXT,
    submitted_by TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS dataflow_runs_idempotency ON dataflow_runs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS dataflow_runs_tenant ON dataflow_runs (tenant, submitted_at);
CREATE TABLE IF NOT EXISTS dataflow_run_events (
    run_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (run_id, attempt, seq)
);
CREATE TABLE IF NOT EXISTS dataflow_api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
";

/// The audit log on PostgreSQL: a sequence for its order, and a trigger that refuses every
/// change but an insert, whoever connects.
const AUDIT_POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS dataflow_audit (
    seq BIGSERIAL PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    tenant TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    remote TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE OR REPLACE FUNCTION dataflow_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dataflow_audit is append-only: % refused', TG_OP;
END $$;
CREATE OR REPLACE TRIGGER dataflow_audit_append_only BEFORE UPDATE OR DELETE ON dataflow_audit
    FOR EACH ROW EXECUTE FUNCTION dataflow_audit_append_only();
CREATE OR REPLACE TRIGGER dataflow_audit_no_truncate BEFORE TRUNCATE ON dataflow_audit
    FOR EACH STATEMENT EXECUTE FUNCTION dataflow_audit_append_only();
";

/// The audit log on SQLite, with the same guard as triggers that abort.
const AUDIT_SQLITE: &str = "
CREATE TABLE IF NOT EXISTS dataflow_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    tenant TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    remote TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS dataflow_audit_no_update BEFORE UPDATE ON dataflow_audit
BEGIN SELECT RAISE(ABORT, 'dataflow_audit is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS dataflow_audit_no_delete BEFORE DELETE ON dataflow_audit
BEGIN SELECT RAISE(ABORT, 'dataflow_audit is append-only: DELETE refused'); END;
";

/// The service's access to its tables: the relational store's connection (its pool, and on
/// SQLite its one connection, shared with the stores).
#[derive(Clone)]
pub(crate) struct Db {
    stores: Stores,
}

impl Db {
    pub(crate) fn new(stores: Stores) -> Self {
        Db { stores }
    }

    /// The database the tables are in.
    pub(crate) fn backend(&self) -> DbBackend {
        self.stores.relational().backend()
    }

    /// The PostgreSQL pool under the store's connection, when the store is PostgreSQL.
    pub(crate) fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        (self.backend() == DbBackend::Postgres).then(|| self.stores.relational().connection().database().get_postgres_connection_pool())
    }

    /// `sql` (written with `$n` placeholders) with `values`, for this database.
    fn statement(&self, sql: &str, values: Vec<SqlValue>) -> Statement {
        let backend = self.backend();
        let text = match backend {
            DbBackend::Sqlite => sql.replace('$', "?"),
            _ => sql.to_owned(),
        };
        Statement::from_sql_and_values(backend, text, values)
    }

    /// Runs a statement; the rows it changed.
    pub(crate) async fn execute(&self, action: &str, sql: &str, values: Vec<SqlValue>) -> Result<u64, ServiceError> {
        let statement = self.statement(sql, values);
        self.stores
            .relational()
            .connection()
            .execute_raw(statement)
            .await
            .map(|done| done.rows_affected())
            .map_err(|e| database(action, e))
    }

    /// The rows a query returns.
    pub(crate) async fn query(&self, action: &str, sql: &str, values: Vec<SqlValue>) -> Result<Vec<QueryResult>, ServiceError> {
        let statement = self.statement(sql, values);
        self.stores
            .relational()
            .connection()
            .query_all_raw(statement)
            .await
            .map_err(|e| database(action, e))
    }

    /// The first row a query returns, if any.
    pub(crate) async fn query_one(&self, action: &str, sql: &str, values: Vec<SqlValue>) -> Result<Option<QueryResult>, ServiceError> {
        Ok(self.query(action, sql, values).await?.into_iter().next())
    }

    /// Creates the service's tables where they are missing (run by every `serve`, `worker`
    /// and `keys` at start; harmless when they exist).
    pub(crate) async fn migrate(&self) -> Result<(), ServiceError> {
        let action = "creating the service's tables";
        let connection = self.stores.relational().connection();
        // In turn with other processes' migrations, as the models' tables are created.
        let turn = self.stores.relational().migration_turn().await?;
        let audit = match self.backend() {
            DbBackend::Postgres => AUDIT_POSTGRES,
            _ => AUDIT_SQLITE,
        };
        let created = async {
            connection.execute_unprepared(TABLES).await?;
            connection.execute_unprepared(audit).await
        }
        .await;
        if let Some(turn) = turn {
            turn.end().await;
        }
        created.map_err(|e| database(action, e))?;
        Ok(())
    }
}

/// A database error while doing `action`.
pub(crate) fn database(action: &str, source: DbErr) -> ServiceError {
    ServiceError::Database {
        action: action.to_owned(),
        source,
    }
}

/// Now, as the tables store times.
pub(crate) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A text column of `row`.
pub(crate) fn text(row: &QueryResult, column: &str) -> Result<String, ServiceError> {
    row.try_get::<String>("", column)
        .map_err(|e| database(&format!("reading {column}"), e))
}

/// A nullable text column of `row`.
pub(crate) fn optional_text(row: &QueryResult, column: &str) -> Result<Option<String>, ServiceError> {
    row.try_get::<Option<String>>("", column)
        .map_err(|e| database(&format!("reading {column}"), e))
}

/// An integer column of `row`.
pub(crate) fn integer(row: &QueryResult, column: &str) -> Result<i64, ServiceError> {
    // PostgreSQL's INTEGER is 32 bits; SQLite's is 64.
    row.try_get::<i64>("", column)
        .or_else(|_| row.try_get::<i32>("", column).map(i64::from))
        .map_err(|e| database(&format!("reading {column}"), e))
}
