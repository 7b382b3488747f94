//! The relational store: PostgreSQL or SQLite through sea-orm, and schema migration.

use std::path::Path;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::ModelMeta;
use crate::secrets::{redact_url, split_password};
use crate::sql::{Sql, schema};

/// A pooled connection to PostgreSQL or SQLite.
#[derive(Clone, Debug)]
pub struct RelationalStore {
    db: DatabaseConnection,
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
            return Ok(RelationalStore {
                db: open_sqlite(Path::new(path), config.max_connections).await?,
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
        // Without a bound, a call waits for a connection while the server is down (the pool
        // retries refused connections until its own 30 s limit), so an outage shows as runs
        // that hang and then time out without naming the store.
        options
            .max_connections(config.max_connections)
            .min_connections(1)
            .acquire_timeout(config.relational_timeout)
            .sqlx_logging(false);
        if let Some(schema) = &config.database_schema {
            check_schema_name(schema)?;
            options.set_schema_search_path(schema.clone());
        }
        let db = Database::connect(options)
            .await
            .map_err(|e| Error::relational(format!("connecting to {}", redact_url(url)), e).without_password_of(url))?;
        Ok(RelationalStore {
            db,
            backend,
            schema: config.database_schema.clone(),
        })
    }

    /// The sea-orm connection, for queries of your own.
    pub fn connection(&self) -> &DatabaseConnection {
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
        if self.backend == DbBackend::Sqlite {
            self.db
                .begin_with_options(TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..TransactionOptions::default()
                })
                .await
        } else {
            self.db.begin().await
        }
    }

    /// A new statement for this backend.
    pub(crate) fn sql(&self) -> Sql {
        Sql::new(self.backend)
    }

    /// Creates missing tables and indexes for `models` and adds columns for new optional
    /// fields. Idempotent. A new required field on an existing table is an error (it would need
    /// a value for the existing rows).
    pub async fn migrate(&self, models: &[&'static ModelMeta]) -> Result<()> {
        if let Some(schema) = &self.schema {
            self.execute(schema::create_schema(self.sql(), schema), "creating the schema")
                .await?;
        }
        for meta in models {
            self.migrate_one(meta).await?;
        }
        Ok(())
    }

    async fn migrate_one(&self, meta: &'static ModelMeta) -> Result<()> {
        self.execute(schema::create_table(self.sql(), meta), &format!("creating table {}", meta.table))
            .await?;
        self.add_missing_columns(meta).await?;

        let tenant_prefix: &[&str] = if meta.multi_tenant { &["tenant_id"] } else { &[] };
        if meta.multi_tenant {
            self.create_index(meta, "tenant_id", &["tenant_id"], false).await?;
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
        let rows = tx.query_all_raw(statement).await.map_err(|e| Error::relational(action, e))?;
        let ids = rows
            .iter()
            .map(|r| r.try_get::<i64>("", "id").map_err(|e| Error::relational(action, e)))
            .collect::<Result<Vec<i64>>>()?;
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
}

/// How long a SQLite connection waits for another connection's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens (creating it and its directory when missing) the SQLite database file at `path`,
/// as the embedded relational, graph and vector stores use it: write-ahead logging so
/// readers never wait for the writer, and writers that wait for each other instead of
/// failing.
pub async fn open_sqlite(path: &Path, max_connections: u32) -> Result<DatabaseConnection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("creating the directory {} for the SQLite database: {e}", dir.display())))?;
    }
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections.max(1))
        .min_connections(1)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .create_if_missing(true)
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
