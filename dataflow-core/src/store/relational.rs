//! The relational store: PostgreSQL or SQLite through sea-orm, and schema migration.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult,
    RuntimeErr, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

use crate::config::Config;
use crate::error::{Error, Result, is_pool_wait_timeout};
use crate::model::ModelMeta;
use crate::secrets::{redact_url, split_password};
use crate::sql::constraint::{self, Constraint};
use crate::sql::{Sql, schema};

/// Longest wait of a relational call for the server to accept a new connection: a server that
/// refuses connections (stopped) or does not answer fails the call after this long, as
/// unreachable, instead of after `relational_timeout` (the wait for a busy pool). The Chroma
/// client connects under the same bound.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the answer of one check that the server accepts connections is reused: waits
/// that run out together (every call while PostgreSQL is stopped) check once.
const SERVER_CHECK_REUSE: Duration = Duration::from_secs(1);

/// A pooled PostgreSQL connection is pinged before it is handed out only when it has been idle
/// this long. sqlx pings on every checkout by default: one more round trip per statement
/// (without it a Create went from 611 to 527 µs and a cache miss from 450 to 392 µs, the
/// relational bench, issue 22). A connection in use within the last second is as alive as a
/// ping would show; one that died meanwhile (a server restart) fails its statement, and
/// [`RelationalConnection`] then asks the server whether it is down.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// How many of the rows that break a constraint a [`MigrationReport`] shows.
const BROKEN_ROWS_SHOWN: u64 = 10;

/// What [`RelationalStore::migrate`] could not settle: constraints that stored rows break.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Each constraint that stored rows break; empty when every constraint holds.
    pub broken: Vec<BrokenConstraint>,
}

impl MigrationReport {
    /// Whether every constraint was added and holds for every stored row.
    pub fn is_clean(&self) -> bool {
        self.broken.is_empty()
    }
}

impl std::fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.broken.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{b}")?;
        }
        Ok(())
    }
}

/// A constraint that stored rows break, and the first of those rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenConstraint {
    /// The model, e.g. `Product`.
    pub model: &'static str,
    /// Its table.
    pub table: &'static str,
    /// The constraint's name, e.g. `products_price_check_1b2c3d4e`.
    pub constraint: String,
    /// What it says, e.g. `CHECK ("price" >= 0)`.
    pub definition: String,
    /// The field it guards.
    pub field: &'static str,
    /// How many stored rows break it.
    pub rows: u64,
    /// The first of them (by primary key): id and the field's value as text.
    pub examples: Vec<(i64, Option<String>)>,
}

impl std::fmt::Display for BrokenConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<String> = self
            .examples
            .iter()
            .map(|(id, value)| format!("{} {id} ({} = {})", self.model, self.field, value.as_deref().unwrap_or("NULL")))
            .collect();
        let more = match self.rows.saturating_sub(self.examples.len() as u64) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        let (rows, verb) = if self.rows == 1 { ("row", "breaks") } else { ("rows", "break") };
        write!(
            f,
            "{}: {} stored {rows} {verb} {} {}: {}{more}",
            self.table,
            self.rows,
            self.constraint,
            self.definition,
            shown.join(", ")
        )
    }
}

/// `models` and, transitively, the models their relations name, each once, in that order.
pub(crate) fn with_relation_targets(models: &[&'static ModelMeta]) -> Vec<&'static ModelMeta> {
    let mut out: Vec<&'static ModelMeta> = Vec::with_capacity(models.len());
    let mut next: Vec<&'static ModelMeta> = models.to_vec();
    while !next.is_empty() {
        let mut found = Vec::new();
        for meta in next {
            if !out.iter().any(|m| m.name == meta.name) {
                out.push(meta);
                found.extend(meta.relations.iter().map(|r| (r.target_meta)()));
            }
        }
        next = found;
    }
    out
}

/// A pooled connection to PostgreSQL or SQLite.
#[derive(Clone, Debug)]
pub struct RelationalStore {
    db: RelationalConnection,
    backend: DbBackend,
    schema: Option<String>,
}

impl RelationalStore {
    /// Connects the pool described by `config`.
    pub async fn connect(config: &Config) -> Result<Self> {
        let url = config.database_url.as_str();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DbBackend::Postgres
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if config.database_schema.is_some() {
                return Err(Error::Config("database_schema applies to PostgreSQL only".into()));
            }
            let db = open_sqlite_waiting(Path::new(path), SQLITE_CONNECTIONS, config.relational_timeout).await?;
            return Ok(RelationalStore {
                db: RelationalConnection::new(db, config.relational_timeout),
                backend: DbBackend::Sqlite,
                schema: None,
            });
        } else {
            return Err(Error::Config(format!(
                "database_url must start with postgres://, postgresql:// or sqlite://, got '{}'",
                redact_url(url)
            )));
        };
        // The password goes to the driver apart from the URL: sea-orm records the connect
        // options, URL included, in its trace spans, and a password must not be in a trace.
        let (url_without_password, password) = split_password(url);
        let mut options = ConnectOptions::new(url_without_password);
        if let Some(password) = password {
            options.map_sqlx_postgres_opts(move |o| o.password(&password));
        }
        // sqlx has one time limit for a wait for a pooled connection, whether every connection
        // is in use (busy) or the pool is opening one that the server refuses (down: it
        // retries refused connections until that limit). So the pool's limit is the short
        // connect bound, and `RelationalConnection` waits on for a busy pool up to
        // `relational_timeout`, telling the two apart by asking the server.
        options
            .max_connections(config.max_connections)
            .min_connections(1)
            .acquire_timeout(connect_timeout(config.relational_timeout))
            .test_before_acquire_if_idle_for(PING_WHEN_IDLE_FOR)
            .sqlx_logging(false);
        if let Some(schema) = &config.database_schema {
            check_schema_name(schema)?;
            options.set_schema_search_path(schema.clone());
        }
        let connect_timeout = connect_timeout(config.relational_timeout);
        let db = Database::connect(options).await.map_err(|e| {
            // No connection within the connect bound: the server is not accepting any.
            let e = if is_pool_wait_timeout(&e) {
                unreachable_server(connect_timeout, "no connection was accepted")
            } else {
                e
            };
            Error::relational(format!("connecting to {}", redact_url(url)), e).without_password_of(url)
        })?;
        Ok(RelationalStore {
            db: RelationalConnection::new(db, config.relational_timeout),
            backend,
            schema: config.database_schema.clone(),
        })
    }

    /// The pooled connection, for queries of your own (it derefs to sea-orm's
    /// [`DatabaseConnection`] for what it does not wrap).
    pub fn connection(&self) -> &RelationalConnection {
        &self.db
    }

    /// PostgreSQL or SQLite.
    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    /// Starts a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads before it writes could not upgrade its lock when
    /// another connection wrote in between, and would fail instead of waiting.
    pub async fn begin(&self) -> std::result::Result<DatabaseTransaction, sea_orm::DbErr> {
        let options = TransactionOptions {
            sqlite_transaction_mode: (self.backend == DbBackend::Sqlite).then_some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        self.db.patiently(|| self.db.db.begin_with_options(options)).await
    }

    /// A new statement for this backend.
    pub(crate) fn sql(&self) -> Sql {
        Sql::new(self.backend)
    }

    /// Creates missing tables and indexes for `models` (and for the models their relations
    /// name, which their foreign keys need) and adds columns for new optional fields, then the
    /// constraints that say the models' rules (see [`crate::OnDelete`]): a `FOREIGN KEY` per
    /// relation and a `CHECK` per field for `min`, `max`, `len` and `one_of` (`pattern` has
    /// none: the nodes check it). On PostgreSQL each is added `NOT VALID` (enforced at once for
    /// new and changed rows, without scanning the table under a long lock) and then validated
    /// against the rows already there; SQLite adds constraints only by rebuilding a table, so
    /// a table that lacks them is rebuilt, its rows copied in one transaction. Idempotent; a
    /// constraint whose rule changed on the model is replaced. A new required field on an
    /// existing table is an error (it would need a value for the existing rows).
    ///
    /// Stored rows that break a new constraint do not fail the migration: they are in the
    /// report it returns, and the constraint stays unvalidated (PostgreSQL: still enforced
    /// for new writes) or unadded (SQLite) until the rows are fixed and `migrate` runs again.
    pub async fn migrate(&self, models: &[&'static ModelMeta]) -> Result<MigrationReport> {
        if let Some(schema) = &self.schema {
            self.execute(schema::create_schema(self.sql(), schema), "creating the schema")
                .await?;
        }
        let models = with_relation_targets(models);
        for meta in &models {
            let inline = if self.backend == DbBackend::Sqlite {
                constraint::constraints(self.backend, meta)
            } else {
                Vec::new()
            };
            let statement = schema::create_table(self.sql(), meta, meta.table, &inline);
            self.execute(statement, &format!("creating table {}", meta.table)).await?;
            self.add_missing_columns(meta).await?;
            self.create_indexes(meta).await?;
        }
        let mut report = MigrationReport::default();
        for meta in &models {
            match self.backend {
                DbBackend::Postgres => self.add_constraints_postgres(meta, &mut report).await?,
                _ => self.add_constraints_sqlite(meta, &mut report).await?,
            }
        }
        Ok(report)
    }

    /// Waits for this process's turn to migrate, on PostgreSQL: `CREATE … IF NOT EXISTS` is
    /// not safe against the same statement of another session at the same moment (both see
    /// the table missing; one fails on the catalogue's unique index), so processes that start
    /// together — workers on several machines — take turns on a session advisory lock. The
    /// lock is held on a connection of its own, not the pool's (a pool of one would wait on
    /// itself), and released with [`MigrationTurn::end`] or when that connection closes, so
    /// a process that dies mid-migration holds no one up. `None` on SQLite, whose writes
    /// already take turns.
    pub async fn migration_turn(&self) -> Result<Option<MigrationTurn>> {
        use sea_orm::sqlx::Connection;
        if self.backend != DbBackend::Postgres {
            return Ok(None);
        }
        let action = "waiting for the turn to migrate";
        let pool = self.db.database().get_postgres_connection_pool();
        let options = pool.connect_options();
        let mut connection = sea_orm::sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(|e| Error::relational(action, DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into()))))?;
        sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut connection)
            .await
            .map_err(|e| Error::relational(action, DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e.into()))))?;
        Ok(Some(MigrationTurn { connection }))
    }

    async fn create_indexes(&self, meta: &'static ModelMeta) -> Result<()> {
        let tenant_prefix: &[&str] = if meta.multi_tenant { &["tenant_id"] } else { &[] };
        if meta.multi_tenant {
            self.create_index(meta, "tenant_id", &["tenant_id"], false).await?;
            if self.backend == DbBackend::Postgres {
                // The key the foreign keys of other multi-tenant models reference.
                self.create_index(meta, "tenant_id_id", &["tenant_id", meta.primary_key], true)
                    .await?;
            }
        }
        for f in meta.fields.iter().filter(|f| !f.primary_key) {
            let relation = meta.relations.iter().any(|r| r.field == f.name);
            if f.unique || f.indexed || relation {
                let cols: Vec<&str> = tenant_prefix.iter().copied().chain([f.name]).collect();
                self.create_index(meta, f.name, &cols, f.unique).await?;
            }
        }
        Ok(())
    }

    /// PostgreSQL: drops the constraints of ours whose rule changed, adds the missing ones
    /// `NOT VALID`, and validates every unvalidated one; rows that break one go in `report`.
    async fn add_constraints_postgres(&self, meta: &'static ModelMeta, report: &mut MigrationReport) -> Result<()> {
        let action = format!("reading the constraints of {}", meta.table);
        let rows = self
            .db
            .query_all_raw(constraint::existing(self.sql(), meta.table))
            .await
            .map_err(|e| Error::relational(&action, e))?;
        let mut existing: Vec<(String, bool)> = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get("", "name").map_err(|e| Error::relational(&action, e))?;
            let valid: bool = row.try_get("", "valid").map_err(|e| Error::relational(&action, e))?;
            existing.push((name, valid));
        }
        let wanted = constraint::constraints(self.backend, meta);
        for (name, _) in &existing {
            if constraint::is_ours(meta, name) && !wanted.iter().any(|c| &c.name == name) {
                let statement = constraint::drop(self.sql(), meta, name);
                self.execute(statement, &format!("dropping the constraint {name} of {}", meta.table))
                    .await?;
            }
        }
        for c in &wanted {
            let valid = match existing.iter().find(|(name, _)| name == &c.name) {
                Some((_, valid)) => *valid,
                None => {
                    let statement = constraint::add_not_valid(self.sql(), meta, c);
                    self.execute(statement, &format!("adding the constraint {} to {}", c.name, meta.table))
                        .await?;
                    false
                }
            };
            if valid {
                continue;
            }
            if let Err(e) = self.db.execute_raw(constraint::validate(self.sql(), meta, &c.name)).await {
                let broken = self.broken_rows(meta, c).await?;
                if broken.rows == 0 {
                    return Err(Error::relational(
                        format!("validating the constraint {} of {}", c.name, meta.table),
                        e,
                    ));
                }
                report.broken.push(broken);
            }
        }
        Ok(())
    }

    /// SQLite: rebuilds the table with its constraints when it lacks one of them (or has one
    /// whose rule changed), unless stored rows break one: those go in `report`.
    async fn add_constraints_sqlite(&self, meta: &'static ModelMeta, report: &mut MigrationReport) -> Result<()> {
        let wanted = constraint::constraints(self.backend, meta);
        let action = format!("reading the definition of {}", meta.table);
        let table_sql: String = match self
            .db
            .query_one_raw(constraint::sqlite_table_sql(self.sql(), meta.table))
            .await
            .map_err(|e| Error::relational(&action, e))?
        {
            Some(row) => row.try_get("", "sql").map_err(|e| Error::relational(&action, e))?,
            None => String::new(),
        };
        let declared = table_sql.matches("CONSTRAINT \"").count();
        if declared == wanted.len() && wanted.iter().all(|c| table_sql.contains(&format!("\"{}\"", c.name))) {
            return Ok(());
        }
        let before = report.broken.len();
        for c in &wanted {
            let broken = self.broken_rows(meta, c).await?;
            if broken.rows > 0 {
                report.broken.push(broken);
            }
        }
        if report.broken.len() > before {
            return Ok(());
        }
        self.rebuild_sqlite_table(meta, &wanted).await?;
        self.create_indexes(meta).await
    }

    /// SQLite: moves the table's rows into a new table with `constraints`, in one transaction
    /// on one connection with foreign keys off: dropping the old table with them on would run
    /// the `ON DELETE` actions of the tables that reference it.
    async fn rebuild_sqlite_table(&self, meta: &'static ModelMeta, constraints: &[Constraint]) -> Result<()> {
        use sea_orm::sqlx;
        let action = format!("rebuilding {} with its constraints", meta.table);
        let fail = |e: sqlx::Error| Error::relational(&action, DbErr::Custom(e.to_string()));
        let mut conn = self.db.get_sqlite_connection_pool().acquire().await.map_err(fail)?;
        sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await.map_err(fail)?;
        let rebuilt = rebuild_on(&mut conn, meta, constraints).await;
        if rebuilt.is_err() {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        let restored = sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await;
        if restored.is_err() {
            // A connection left without foreign keys must not go back to the pool.
            conn.detach();
        }
        rebuilt.map_err(fail)?;
        restored.map_err(fail)?;
        Ok(())
    }

    /// The stored rows that break `c`: how many, and the first few.
    async fn broken_rows(&self, meta: &'static ModelMeta, c: &Constraint) -> Result<BrokenConstraint> {
        let action = format!("finding the rows of {} that break {}", meta.table, c.name);
        let rows = self
            .db
            .query_all_raw(constraint::broken_rows(self.sql(), meta, c, BROKEN_ROWS_SHOWN))
            .await
            .map_err(|e| Error::relational(&action, e))?;
        let mut broken = BrokenConstraint {
            model: meta.name,
            table: meta.table,
            constraint: c.name.clone(),
            definition: c.definition().to_owned(),
            field: c.field.name,
            rows: 0,
            examples: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            let id: i64 = row.try_get("", "id").map_err(|e| Error::relational(&action, e))?;
            let value: Option<String> = row.try_get("", "value").map_err(|e| Error::relational(&action, e))?;
            broken.rows = row.try_get::<i64>("", "total").map_err(|e| Error::relational(&action, e))? as u64;
            broken.examples.push((id, value));
        }
        Ok(broken)
    }

    async fn add_missing_columns(&self, meta: &'static ModelMeta) -> Result<()> {
        let rows = self
            .db
            .query_all_raw(schema::column_names(self.sql(), meta.table))
            .await
            .map_err(|e| Error::relational(format!("reading the columns of {}", meta.table), e))?;
        let existing: Vec<String> = rows.iter().filter_map(|r| r.try_get::<String>("", "name").ok()).collect();
        for f in meta.fields {
            if existing.iter().any(|c| c == f.name) {
                continue;
            }
            if !f.nullable {
                return Err(Error::Config(format!(
                    "table {} has no column for the required field '{}' of {}: make the field an Option so existing rows can hold NULL, or migrate the table by hand",
                    meta.table, f.name, meta.name
                )));
            }
            let statement = schema::add_nullable_column(self.sql(), meta, f);
            self.execute(statement, &format!("adding column {}.{}", meta.table, f.name)).await?;
        }
        Ok(())
    }

    async fn create_index(&self, meta: &ModelMeta, name: &str, columns: &[&str], unique: bool) -> Result<()> {
        let index = format!("{}_{}_{}", meta.table, name, if unique { "key" } else { "idx" });
        let statement = schema::create_index(self.sql(), meta.table, &index, columns, unique);
        self.execute(statement, &format!("creating index {index}")).await
    }

    /// `count` unused primary keys for rows of `meta`'s table inserted in `tx`, above
    /// `explicit` (the largest id given explicitly in the same write): the next values of the
    /// table's sequence on PostgreSQL; on SQLite the ids after the largest one the table has
    /// used (its rows or its AUTOINCREMENT counter), which no other writer can take while `tx`
    /// holds the write lock.
    pub(crate) async fn next_ids(
        &self,
        tx: &DatabaseTransaction,
        meta: &ModelMeta,
        count: usize,
        explicit: Option<i64>,
        action: &str,
    ) -> Result<Vec<i64>> {
        let statement = schema::next_ids(self.sql(), meta, count);
        if self.backend == DbBackend::Sqlite {
            let row = tx
                .query_one_raw(statement)
                .await
                .map_err(|e| Error::relational(action, e))?
                .ok_or_else(|| Error::relational(action, sea_orm::DbErr::RecordNotInserted))?;
            let last: i64 = row.try_get("", "last").map_err(|e| Error::relational(action, e))?;
            let first = last.max(explicit.unwrap_or(0)) + 1;
            return Ok((first..first + count as i64).collect());
        }
        let row = tx
            .query_one_raw(statement)
            .await
            .map_err(|e| Error::relational(action, e))?
            .ok_or_else(|| Error::relational(action, sea_orm::DbErr::RecordNotInserted))?;
        let ids: Vec<i64> = row.try_get("", "ids").map_err(|e| Error::relational(action, e))?;
        if ids.len() != count {
            return Err(Error::relational(action, sea_orm::DbErr::RecordNotInserted));
        }
        Ok(ids)
    }

    /// After rows with explicit primary keys were written in `tx`, moves the table's id
    /// counter past them so later inserts do not collide: PostgreSQL's sequence is set to the
    /// largest id; SQLite's AUTOINCREMENT counter moves by itself.
    pub(crate) async fn advance_ids_past_explicit(&self, tx: &DatabaseTransaction, meta: &ModelMeta, action: &str) -> Result<()> {
        let Some(statement) = schema::advance_ids(self.sql(), meta) else {
            return Ok(());
        };
        tx.execute_raw(statement)
            .await
            .map(|_| ())
            .map_err(|e| Error::relational(action, e))
    }

    /// Whether a transaction can lock single rows and pass over rows others locked
    /// (`FOR UPDATE SKIP LOCKED`): PostgreSQL can; SQLite has one writer for the whole file.
    pub(crate) fn locks_rows(&self) -> bool {
        self.backend == DbBackend::Postgres
    }

    /// Runs a statement that returns no rows; errors name `action`.
    pub(crate) async fn execute(&self, statement: Statement, action: &str) -> Result<()> {
        self.db
            .execute_raw(statement)
            .await
            .map(|_| ())
            .map_err(|e| Error::relational(action, e))
    }

    /// Runs a statement that returns at most one row; errors name `action`.
    pub(crate) async fn query_one(&self, statement: Statement, action: &str) -> Result<Option<sea_orm::QueryResult>> {
        self.db.query_one_raw(statement).await.map_err(|e| Error::relational(action, e))
    }
}

/// How long a SQLite connection waits for another connection's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a call waits for a connection of an [`open_sqlite`] pool (sqlx's default).
const SQLITE_POOL_WAIT: Duration = Duration::from_secs(30);
/// How many connections the embedded stores keep to their SQLite file, whatever
/// `max_connections` says: one. SQLite takes one writer at a time, and a connection keeps its
/// page cache only while no other connection writes (after another connection's write it
/// reads its pages again). With one connection every call queues for it in sqlx's pool, in
/// turn, instead of polling for the write lock in SQLite's busy handler (which sleeps 1, 2,
/// 5, ... ms between tries), and its page cache stays warm. On the embedded set, with the
/// machine's other core busy, `classify_product` from 100 clients took 4.2–5.0 CPU ms a run
/// against 9.3–9.6 with 16 connections; on an idle VM the two were alike (`benches/README.md`,
/// "One SQLite connection").
pub(crate) const SQLITE_CONNECTIONS: u32 = 1;

/// Opens (creating it and its directory when missing) the SQLite database file at `path`,
/// as the embedded relational, graph and vector stores use it: write-ahead logging so
/// readers never wait for the writer, and writers that wait for each other instead of
/// failing. A call waits up to 30 s for one of its `max_connections` pooled connections.
pub async fn open_sqlite(path: &Path, max_connections: u32) -> Result<DatabaseConnection> {
    open_sqlite_waiting(path, max_connections, SQLITE_POOL_WAIT).await
}

/// [`open_sqlite`], where a call waits up to `pool_wait` for a pooled connection.
pub(crate) async fn open_sqlite_waiting(path: &Path, max_connections: u32, pool_wait: Duration) -> Result<DatabaseConnection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("creating the directory {} for the SQLite database: {e}", dir.display())))?;
    }
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections.max(1))
        .min_connections(1)
        .acquire_timeout(pool_wait)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .create_if_missing(true)
                // The FOREIGN KEY constraints `migrate` declares are enforced on every
                // connection (sqlx's default too, said here because the schema relies on it).
                .foreign_keys(true)
                // LIKE is case-sensitive on PostgreSQL; SQLite's default folds ASCII case.
                .pragma("case_sensitive_like", "ON")
        });
    Database::connect(options)
        .await
        .map_err(|e| Error::relational(format!("opening the SQLite database {}", path.display()), e))
}

fn check_schema_name(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "database_schema must match [a-z_][a-z0-9_]{{0,62}}, got {schema:?}"
        )))
    }
}

/// The pool's own limit on a wait for a connection: the connect bound, or less when
/// `relational_timeout` is less.
fn connect_timeout(relational_timeout: Duration) -> Duration {
    relational_timeout.min(CONNECT_TIMEOUT)
}

/// The error of a call that got no connection because the server accepts none: a connection
/// error, which [`Error::relational`] reports as transient and not busy.
fn unreachable_server(waited: Duration, why: &str) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(format!("the server is unreachable: {why} within {waited:?}")))
}

/// Whether a call failed because its connection was lost: the socket closed or failed, or
/// the server ended the session (SQLSTATE class 08, or 57P01-57P03: shut down, crashed,
/// cannot connect now).
fn is_connection_lost(err: &DbErr) -> bool {
    use sea_orm::sqlx;
    let sqlx_err = match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Conn(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    match sqlx_err.as_ref() {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// The relational store's pool as everything above uses it ([`RelationalStore::connection`]):
/// sea-orm's connection, whose calls tell a busy pool from a server that is down.
///
/// A call that waits for a pooled connection waits at most [`CONNECT_TIMEOUT`] at a time; when
/// that runs out, the server is asked for a connection of its own. If it gives one, every
/// pooled connection is in use (busy): the call waits again, up to `relational_timeout` in
/// all, and then fails with a busy error ([`Error::is_busy`]). If it gives none (refused, no
/// answer), the server is down, and the call fails at once with a connection error. SQLite is
/// a file: a wait there is always busy.
///
/// It derefs to [`DatabaseConnection`] for what it does not wrap (`ping`, `close`, the
/// sqlx pool); queries through [`ConnectionTrait`] and transactions through
/// [`RelationalStore::begin`] are wrapped.
#[derive(Clone, Debug)]
pub struct RelationalConnection {
    db: DatabaseConnection,
    /// How long a call waits in all while every pooled connection is in use.
    busy_wait: Duration,
    /// The last answer to "does the server accept a connection?", and when it was had.
    last_server_check: Arc<tokio::sync::Mutex<Option<(Instant, ServerCheck)>>>,
}

/// The key of the advisory lock migrations take turns on (`dataflow` in ASCII).
const MIGRATION_LOCK: i64 = 0x6461_7461_666c_6f77;

/// A process's turn to migrate PostgreSQL ([`RelationalStore::migration_turn`]): the
/// connection that holds the advisory lock.
#[derive(Debug)]
pub struct MigrationTurn {
    connection: sea_orm::sqlx::PgConnection,
}

impl MigrationTurn {
    /// Ends the turn: the next process waiting may migrate. (Dropping it ends it too, when
    /// its connection closes.)
    pub async fn end(self) {
        use sea_orm::sqlx::Connection;
        // Closing the session releases its advisory locks.
        let _ = self.connection.close().await;
    }
}

/// Whether the server accepted a connection when asked.
#[derive(Debug, Clone)]
enum ServerCheck {
    /// It did (or it answered that it has no room: busy too).
    Answers,
    /// It did not: refused, no answer, or an error of its own; why.
    Unreachable(String),
}

impl RelationalConnection {
    fn new(db: DatabaseConnection, busy_wait: Duration) -> Self {
        RelationalConnection {
            db,
            busy_wait,
            last_server_check: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// The sea-orm connection itself, for what needs one (the embedded stores' SQLite file).
    pub fn database(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Runs `call`, again while it gets no pooled connection because every one is in use,
    /// up to `busy_wait` in all; see [`RelationalConnection`].
    async fn patiently<T, F, Fut>(&self, mut call: F) -> std::result::Result<T, DbErr>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, DbErr>>,
    {
        let started = Instant::now();
        loop {
            match call().await {
                // No pooled connection in time (busy, or the server is down), or a pooled
                // connection that died (the server stopped or restarted since its last use):
                // say whether the server is down, as a new connection would have; only a busy
                // pool is worth waiting for.
                Err(e) if is_pool_wait_timeout(&e) || is_connection_lost(&e) => match self.check_server().await {
                    ServerCheck::Answers if is_pool_wait_timeout(&e) && started.elapsed() < self.busy_wait => continue,
                    ServerCheck::Answers => return Err(e),
                    ServerCheck::Unreachable(why) => return Err(unreachable_server(started.elapsed(), &why)),
                },
                other => return other,
            }
        }
    }

    /// Whether the server accepts a connection now, asked with one connection outside the
    /// pool (closed at once), or the answer of a check less than [`SERVER_CHECK_REUSE`] ago.
    async fn check_server(&self) -> ServerCheck {
        if self.db.get_database_backend() != DbBackend::Postgres {
            return ServerCheck::Answers;
        }
        let mut last = self.last_server_check.lock().await;
        if let Some((at, check)) = last.as_ref()
            && at.elapsed() < SERVER_CHECK_REUSE
        {
            return check.clone();
        }
        let check = self.connect_once().await;
        *last = Some((Instant::now(), check.clone()));
        check
    }

    async fn connect_once(&self) -> ServerCheck {
        use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
        let pool = self.db.get_postgres_connection_pool();
        let options = pool.connect_options();
        let limit = pool.options().get_acquire_timeout();
        match tokio::time::timeout(limit, options.connect()).await {
            Ok(Ok(connection)) => {
                // Closing says goodbye to the server; nobody needs to wait for that.
                tokio::spawn(connection.close());
                ServerCheck::Answers
            }
            // "Too many clients": the server answers and has no room, like a full pool.
            Ok(Err(sea_orm::sqlx::Error::Database(e))) if e.code().as_deref() == Some("53300") => ServerCheck::Answers,
            Ok(Err(e)) => ServerCheck::Unreachable(format!("a new connection failed: {e}")),
            Err(_) => ServerCheck::Unreachable("a new connection got no answer".into()),
        }
    }
}

impl std::ops::Deref for RelationalConnection {
    type Target = DatabaseConnection;

    fn deref(&self) -> &DatabaseConnection {
        &self.db
    }
}

#[async_trait]
impl ConnectionTrait for RelationalConnection {
    fn get_database_backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> std::result::Result<ExecResult, DbErr> {
        self.patiently(|| self.db.execute_raw(stmt.clone())).await
    }

    async fn execute_unprepared(&self, sql: &str) -> std::result::Result<ExecResult, DbErr> {
        self.patiently(|| self.db.execute_unprepared(sql)).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> std::result::Result<Option<QueryResult>, DbErr> {
        self.patiently(|| self.db.query_one_raw(stmt.clone())).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> std::result::Result<Vec<QueryResult>, DbErr> {
        self.patiently(|| self.db.query_all_raw(stmt.clone())).await
    }
}

/// The SQLite table rebuild of [`RelationalStore::migrate`] on `conn` (foreign keys off):
/// the new table with `constraints`, the rows copied, the old table replaced, the
/// AUTOINCREMENT counter kept; one transaction, which the caller rolls back on an error.
async fn rebuild_on(
    conn: &mut sea_orm::sqlx::SqliteConnection,
    meta: &'static ModelMeta,
    constraints: &[Constraint],
) -> std::result::Result<(), sea_orm::sqlx::Error> {
    use sea_orm::sqlx;
    let rebuilt = format!("{}__dataflow_rebuild", meta.table);
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let counter = sqlite_counter(conn, meta.table).await?;
    bound(schema::create_table(Sql::new(DbBackend::Sqlite), meta, &rebuilt, constraints))
        .execute(&mut *conn)
        .await?;
    for step in schema::sqlite_rebuild(meta, &rebuilt) {
        sqlx::query(sqlx::AssertSqlSafe(step)).execute(&mut *conn).await?;
    }
    let now = sqlite_counter(conn, meta.table).await?;
    for statement in schema::sqlite_set_sequence(meta.table, counter.max(now)) {
        bound(statement).execute(&mut *conn).await?;
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(())
}

/// The AUTOINCREMENT counter of `table` (0 when it has none yet).
async fn sqlite_counter(conn: &mut sea_orm::sqlx::SqliteConnection, table: &str) -> std::result::Result<i64, sea_orm::sqlx::Error> {
    use sea_orm::sqlx::Row;
    let row = bound(schema::sqlite_sequence(Sql::new(DbBackend::Sqlite), table))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<i64, _>("seq")?,
        None => 0,
    })
}

/// A statement of the SQL layer as an sqlx query on SQLite, its values bound.
fn bound(statement: Statement) -> sea_orm::sqlx::query::Query<'static, sea_orm::sqlx::Sqlite, sea_orm::sqlx::sqlite::SqliteArguments> {
    let mut query = sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(statement.sql));
    for value in statement.values.map(|v| v.0).unwrap_or_default() {
        query = match value {
            sea_orm::Value::String(s) => query.bind(s),
            sea_orm::Value::BigInt(n) => query.bind(n),
            other => query.bind(other.to_string()),
        };
    }
    query
}
