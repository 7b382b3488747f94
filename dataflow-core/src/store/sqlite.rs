//! The SQLite file the embedded graph and vector stores keep their data in: statements with
//! bound values, write transactions that take the lock at once, and errors that name the
//! store they belong to.

use std::time::{Duration, Instant};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, QueryResult, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait, Value as SqlValue,
};

use crate::error::{Error, Result, StoreKind};

/// A pooled connection to an SQLite file, on behalf of one store.
#[derive(Clone)]
pub(crate) struct SqliteFile {
    db: DatabaseConnection,
    store: StoreKind,
}

impl SqliteFile {
    /// `db` must be an SQLite connection (see [`super::relational::open_sqlite`]).
    pub(crate) fn new(db: DatabaseConnection, store: StoreKind) -> Result<Self> {
        if db.get_database_backend() != DbBackend::Sqlite {
            return Err(Error::Config(format!("the embedded {store} needs an SQLite connection")));
        }
        Ok(SqliteFile { db, store })
    }

    /// The pool, for reads outside a transaction.
    pub(crate) fn pool(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Starts a write transaction holding SQLite's write lock from its first statement, so a
    /// transaction that reads before it writes waits for other writers instead of failing.
    pub(crate) async fn begin(&self, action: &str) -> Result<DatabaseTransaction> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .map_err(|e| self.error(action, e))
    }

    /// Commits `txn`.
    pub(crate) async fn commit(&self, txn: DatabaseTransaction, action: &str) -> Result<()> {
        txn.commit().await.map_err(|e| self.error(action, e))
    }

    /// Runs a statement that returns no rows on `conn` (the pool or a transaction); returns
    /// how many rows it changed.
    pub(crate) async fn execute<C: ConnectionTrait>(&self, conn: &C, action: &str, sql: &str, values: Vec<SqlValue>) -> Result<u64> {
        conn.execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| self.error(action, e))
    }

    /// Runs a query on `conn` and returns every row.
    pub(crate) async fn query<C: ConnectionTrait>(
        &self,
        conn: &C,
        action: &str,
        sql: &str,
        values: Vec<SqlValue>,
    ) -> Result<Vec<QueryResult>> {
        conn.query_all_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
            .await
            .map_err(|e| self.error(action, e))
    }

    /// `SELECT 1`; returns its latency.
    pub(crate) async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        self.query(&self.db, "pinging", "SELECT 1", vec![]).await?;
        Ok(start.elapsed())
    }

    /// An error of this store, with what was being done.
    pub(crate) fn error(&self, action: &str, e: impl Into<DbErrOrText>) -> Error {
        match e.into() {
            DbErrOrText::Db(e) => match Error::relational(action, e) {
                Error::Store {
                    action,
                    message,
                    transient,
                    busy,
                    ..
                } => Error::Store {
                    store: self.store,
                    action,
                    message,
                    transient,
                    busy,
                },
                other => other,
            },
            DbErrOrText::Text(message) => Error::Store {
                store: self.store,
                action: action.to_owned(),
                message,
                transient: false,
                busy: false,
            },
        }
    }
}

/// What went wrong in an embedded store: SQLite's error, or a stored value we cannot read.
pub(crate) enum DbErrOrText {
    /// SQLite's error.
    Db(sea_orm::DbErr),
    /// Our own description.
    Text(String),
}

impl From<sea_orm::DbErr> for DbErrOrText {
    fn from(e: sea_orm::DbErr) -> Self {
        DbErrOrText::Db(e)
    }
}

impl From<String> for DbErrOrText {
    fn from(e: String) -> Self {
        DbErrOrText::Text(e)
    }
}
