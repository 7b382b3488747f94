//! Errors: what went wrong, in which model, field or store.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::kind::StoreKind;

/// Result with dataflow's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One problem with one field of one input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FieldError {
    /// The field (or `$`-path inside a filter) that is wrong.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field '{}': {}", self.field, self.message)
    }
}

/// Every field problem found in one input, reported together.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    /// Records a problem with `field`.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// True when no problem was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What went wrong in a node, a filter, a store or the configuration.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Values that break the model's types or rules; nothing was written.
    #[error("{model}: invalid record: {errors}")]
    Validation {
        /// The model whose rules were broken.
        model: &'static str,
        /// Every broken rule.
        errors: FieldErrors,
    },
    /// An input that cannot be used as given (unknown field, bad operator, bad cursor, ...);
    /// rejected before any store was touched.
    #[error("{model}: invalid {part}: {message}")]
    InvalidInput {
        /// The model the input was for.
        model: &'static str,
        /// Which part of the input: `filter`, `sort`, `cursor`, `patch`, ...
        part: &'static str,
        /// What is wrong, naming the offending field or operator.
        message: String,
    },
    /// No row with this primary key (visible to this tenant).
    #[error("{model} {id} not found")]
    NotFound {
        /// The model.
        model: &'static str,
        /// The primary key that was asked for.
        id: i64,
    },
    /// Optimistic concurrency: the row changed since the caller read it.
    #[error("{model} {id}: version conflict: expected version {expected}, the row is at version {actual}")]
    Conflict {
        /// The model.
        model: &'static str,
        /// The row's primary key.
        id: i64,
        /// The version the caller expected.
        expected: i64,
        /// The version the row has.
        actual: i64,
    },
    /// A multi-tenant model was used without a tenant in the context.
    #[error("{model} is multi-tenant: the execution context must name a tenant")]
    MissingTenant {
        /// The model.
        model: &'static str,
    },
    /// A store failed; `transient` errors (connection lost, timeout, busy) may succeed on
    /// retry.
    #[error("{store} failed while {action}: {message}")]
    Store {
        /// Which store.
        store: StoreKind,
        /// What dataflow was doing, e.g. `inserting into products`.
        action: String,
        /// The store's own message.
        message: String,
        /// Whether a retry may succeed.
        transient: bool,
        /// The store answers but had no room for the call in time (every pooled connection
        /// stayed in use): `transient` too, but no sign that the store is down, so it does
        /// not count towards opening the store's circuit breaker. False for a store that
        /// cannot be reached (refused or lost connections, no answer).
        busy: bool,
    },
    /// Bad configuration: a URL that does not parse, an unknown option, ...
    #[error("configuration: {0}")]
    Config(String),
    /// The embedder could not turn texts into vectors, or vectors made by another embedder
    /// were met (a collection written with one embedder and searched with another).
    #[error("embedder {embedder}: {message}")]
    Embedding {
        /// The embedder's name ([`crate::Embedder::name`]).
        embedder: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Whether retrying the same call may succeed (a lost connection, a timeout, a busy pool).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Store { transient: true, .. })
    }

    /// Whether a store answered but had no room for the call in time (the `busy` flag of
    /// [`Error::Store`]): retryable, and no sign that the store is down.
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Store { busy: true, .. })
    }

    /// The store that failed, for a store error.
    pub fn store(&self) -> Option<StoreKind> {
        match self {
            Error::Store { store, .. } => Some(*store),
            _ => None,
        }
    }

    /// An [`Error::InvalidInput`].
    pub fn invalid(model: &'static str, part: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            model,
            part,
            message: message.into(),
        }
    }

    /// Wraps a relational-store error with what was being done. A wait for a pooled
    /// connection that ran out is `busy` (the pool of [`crate::RelationalStore`] reports a
    /// server that accepts no connection as a connection error instead); a connection that
    /// cannot be made or was lost is transient.
    pub fn relational(action: impl Into<String>, err: sea_orm::DbErr) -> Self {
        let busy = is_pool_wait_timeout(&err);
        let transient = busy || matches!(err, sea_orm::DbErr::Conn(_) | sea_orm::DbErr::ConnectionAcquire(_)) || is_transient_sqlx(&err);
        let message = if busy {
            "busy: every pooled connection stayed in use for the wait limit (relational_timeout)".to_owned()
        } else {
            err.to_string()
        };
        Error::Store {
            store: StoreKind::Relational,
            action: action.into(),
            message,
            transient,
            busy,
        }
    }

    /// This error with the password of the connection URL `url` replaced by `***` wherever
    /// its text quotes it (drivers quote the connection string they could not use).
    pub fn without_password_of(self, url: &str) -> Self {
        let scrub = |text: String| crate::secrets::scrub_password(&text, url);
        match self {
            Error::Store {
                store,
                action,
                message,
                transient,
                busy,
            } => Error::Store {
                store,
                action: scrub(action),
                message: scrub(message),
                transient,
                busy,
            },
            Error::Config(message) => Error::Config(scrub(message)),
            other => other,
        }
    }

    /// Wraps a cache error with what was being done.
    pub fn cache(action: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Store {
            store: StoreKind::Cache,
            action: action.into(),
            message: message.to_string(),
            transient: true,
            busy: false,
        }
    }
}

/// A wait for a pooled connection that ran out of time: sea-orm's acquire timeout, or sqlx's
/// own where sea-orm passes it through (as it does from `Database::connect`).
pub(crate) fn is_pool_wait_timeout(err: &sea_orm::DbErr) -> bool {
    use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr, sqlx};
    match err {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Conn(RuntimeErr::SqlxError(e)) => {
            matches!(e.as_ref(), sqlx::Error::PoolTimedOut)
        }
        _ => false,
    }
}

fn is_transient_sqlx(err: &sea_orm::DbErr) -> bool {
    use sea_orm::sqlx;
    let sqlx_err = match err {
        sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        | sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))
        | sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    matches!(
        sqlx_err.as_ref(),
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed
    )
}
