//! The relational store: PostgreSQL or SQLite through sea-orm, and schema migration.

use std::path::Path;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode,
    TransactionOptions, TransactionTrait, Value as SqlValue,
};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::ModelMeta;
use crate::sql::Sql;

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
    pub fn sql(&self) -> Sql {
        Sql::new(self.backend)
    }

    /// Creates missing tables and indexes for `models` and adds columns for new optional
    /// fields. Idempotent. A new required field on an existing table is an error (it would need
    /// a value for the existing rows).
    pub async fn migrate(&self, models: &[&'static ModelMeta]) -> Result<()> {
        if let Some(schema) = &self.schema {
            let mut sql = self.sql();
            sql.push("CREATE SCHEMA IF NOT EXISTS ").ident(schema);
            self.execute(sql, "creating the schema").await?;
        }
        for meta in models {
            self.migrate_one(meta).await?;
        }
        Ok(())
    }

    async fn migrate_one(&self, meta: &'static ModelMeta) -> Result<()> {
        let mut sql = self.sql();
        sql.push("CREATE TABLE IF NOT EXISTS ").ident(meta.table).push(" (");
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
        let ts = sql.column_type(crate::model::FieldType::Timestamp);
        let now = sql.now_default();
        sql.push(", \"version\" BIGINT NOT NULL DEFAULT 1");
        for column in ["created_at", "updated_at"] {
            sql.push(", ").ident(column).push(" ").push(ts).push(" NOT NULL DEFAULT ").push(now);
        }
        if meta.soft_delete {
            sql.push(", \"deleted_at\" ").push(ts).push(" NULL");
        }
        sql.push(")");
        self.execute(sql, &format!("creating table {}", meta.table)).await?;

        self.add_missing_columns(meta).await?;

        let tenant_prefix: &[&str] = if meta.multi_tenant { &["tenant_id"] } else { &[] };
        if meta.multi_tenant {
            self.create_index(meta, "tenant_id", &["tenant_id"], false).await?;
        }
        for f in meta.fields.iter().filter(|f| !f.primary_key) {
            let relation = meta.relations.iter().any(|r| r.field == f.name);
            if f.unique {
                let cols: Vec<&str> = tenant_prefix.iter().copied().chain([f.name]).collect();
                self.create_index(meta, f.name, &cols, true).await?;
            } else if f.indexed || relation {
                let cols: Vec<&str> = tenant_prefix.iter().copied().chain([f.name]).collect();
                self.create_index(meta, f.name, &cols, false).await?;
            }
        }
        Ok(())
    }

    async fn add_missing_columns(&self, meta: &'static ModelMeta) -> Result<()> {
        let mut sql = self.sql();
        if self.backend == DbBackend::Postgres {
            sql.push("SELECT column_name AS name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ");
        } else {
            sql.push("SELECT name FROM pragma_table_info(");
        }
        sql.param(SqlValue::String(Some(meta.table.to_owned())));
        if self.backend != DbBackend::Postgres {
            sql.push(")");
        }
        let rows = self
            .db
            .query_all_raw(sql.build())
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
            let mut sql = self.sql();
            let ty = sql.column_type(f.ty);
            sql.push("ALTER TABLE ")
                .ident(meta.table)
                .push(" ADD COLUMN ")
                .ident(f.name)
                .push(" ")
                .push(ty)
                .push(" NULL");
            self.execute(sql, &format!("adding column {}.{}", meta.table, f.name)).await?;
        }
        Ok(())
    }

    async fn create_index(&self, meta: &ModelMeta, name: &str, columns: &[&str], unique: bool) -> Result<()> {
        let index = format!("{}_{}_{}", meta.table, name, if unique { "key" } else { "idx" });
        let mut sql = self.sql();
        sql.push(if unique {
            "CREATE UNIQUE INDEX IF NOT EXISTS "
        } else {
            "CREATE INDEX IF NOT EXISTS "
        });
        sql.ident(&index)
            .push(" ON ")
            .ident(meta.table)
            .push(" (")
            .ident_list(columns.iter().copied())
            .push(")");
        self.execute(sql, &format!("creating index {index}")).await
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
        let pk = meta.primary_key;
        let mut sql = self.sql();
        if self.backend == DbBackend::Sqlite {
            sql.push("SELECT MAX(COALESCE((SELECT MAX(")
                .ident(pk)
                .push(") FROM ")
                .ident(meta.table)
                .push("), 0), COALESCE((SELECT \"seq\" FROM \"sqlite_sequence\" WHERE \"name\" = ")
                .param(SqlValue::String(Some(meta.table.to_owned())))
                .push("), 0)) AS \"last\"");
            let row = tx
                .query_one_raw(sql.build())
                .await
                .map_err(|e| Error::relational(action, e))?
                .ok_or_else(|| Error::relational(action, sea_orm::DbErr::RecordNotInserted))?;
            let last: i64 = row.try_get("", "last").map_err(|e| Error::relational(action, e))?;
            let first = last.max(explicit.unwrap_or(0)) + 1;
            return Ok((first..first + count as i64).collect());
        }
        // The sequence is resolved once: calling pg_get_serial_sequence per row costs more than
        // the nextval calls themselves (65 ms against 5 ms for 10,000 ids on the bench machine).
        sql.push("WITH \"s\" AS MATERIALIZED (SELECT pg_get_serial_sequence(")
            .param(quoted(meta.table))
            .push(", ")
            .param(SqlValue::String(Some(pk.to_owned())))
            .push(")::regclass AS \"seq\") SELECT nextval(\"s\".\"seq\") AS \"id\" FROM \"s\", generate_series(1, ")
            .param(SqlValue::BigInt(Some(count as i64)))
            .push(")");
        let rows = tx.query_all_raw(sql.build()).await.map_err(|e| Error::relational(action, e))?;
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
        if self.backend == DbBackend::Sqlite {
            return Ok(());
        }
        let pk = || SqlValue::String(Some(meta.primary_key.to_owned()));
        let mut sql = self.sql();
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
        tx.execute_raw(sql.build())
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
    pub(crate) async fn execute(&self, sql: Sql, action: &str) -> Result<()> {
        self.db
            .execute_raw(sql.build())
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

/// A table name quoted as `pg_get_serial_sequence` expects it.
fn quoted(table: &str) -> SqlValue {
    SqlValue::String(Some(format!("\"{table}\"")))
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

/// Where the password of a connection URL is, as a byte range: between the first `:` after
/// `scheme://` and the last `@`. The last `@`, not the first `/`, ends it, so that a password
/// holding `/`, `@` or `#` (which should be percent-encoded, but often is not) is still found;
/// an `@` later in the URL only makes more of it hidden.
fn password_span(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let at = rest.rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some(start + colon + 1..start + at)
}

/// A connection URL with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match password_span(url) {
        Some(span) => format!("{}***{}", &url[..span.start], &url[span.end..]),
        None => url.to_owned(),
    }
}

/// `url` without its password (and the `:` before it), and the password, percent-decoded.
fn split_password(url: &str) -> (String, Option<String>) {
    match password_span(url) {
        Some(span) => {
            let password = &url[span.clone()];
            let decoded = percent_decoded(password).unwrap_or_else(|| password.to_owned());
            (format!("{}{}", &url[..span.start - 1], &url[span.end..]), Some(decoded))
        }
        None => (url.to_owned(), None),
    }
}

/// `text` with every appearance of `url`'s password, as written and percent-decoded,
/// replaced by `***`: for messages of drivers that quote the connection string they were given.
pub fn scrub_password(text: &str, url: &str) -> String {
    let Some(span) = password_span(url) else { return text.to_owned() };
    let password = &url[span];
    if password.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(password, "***");
    if let Some(decoded) = percent_decoded(password).filter(|d| !d.is_empty() && d != password) {
        out = out.replace(&decoded, "***");
    }
    out
}

/// `text` with `%XX` escapes decoded, when that gives UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::{redact_url, scrub_password};

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(redact_url("redis://:pw@127.0.0.1:6379/"), "redis://:***@127.0.0.1:6379/");
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        // Characters that should have been percent-encoded, but were not.
        assert_eq!(redact_url("postgres://app:s3c/r@t#1@db/x"), "postgres://app:***@db/x");
        assert_eq!(redact_url("sqlite:///data/x@y.db"), "sqlite:///data/x@y.db");
    }

    #[test]
    fn the_password_is_split_from_the_url() {
        assert_eq!(
            super::split_password("postgres://app:p%40ss/w@db:5432/x"),
            ("postgres://app@db:5432/x".to_owned(), Some("p@ss/w".to_owned()))
        );
        assert_eq!(
            super::split_password("postgres://app@db/x"),
            ("postgres://app@db/x".to_owned(), None)
        );
    }

    #[test]
    fn passwords_are_scrubbed_from_messages_that_quote_the_url() {
        let url = "postgres://app:s3c/r%40t@db/x";
        let message = format!("The connection string '{url}' cannot be parsed (password s3c/r@t)");
        let scrubbed = scrub_password(&message, url);
        assert_eq!(
            scrubbed,
            "The connection string 'postgres://app:***@db/x' cannot be parsed (password ***)"
        );
        assert_eq!(scrub_password("no secret here", "postgres://app@db/x"), "no secret here");
    }
}
