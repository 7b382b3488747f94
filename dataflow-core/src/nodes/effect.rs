//! Exactly-once effects of the write nodes (Create, Update, Delete, BulkUpsert) when a run is
//! executed again: by a second worker after the first died, or by a node retry after a
//! timeout whose write had committed.
//!
//! A context given an effect scope ([`Context::with_effect_scope`], which the service's
//! workers set to the run's id) names every node invocation under it by its path in the run
//! ([`Context::within`]: the node's name, the item of a map, the batch of an import). A write
//! node under such a key first looks for the output recorded under it and, when there is one,
//! returns it without writing. Otherwise it writes, and records its output under the key *in the write's own
//! transaction*: the rows and the record commit together or not at all. Two executions of
//! one invocation at once (a worker presumed dead that still runs) both write, but only the
//! first record commits; the second's insert of the record finds the first's (it waits for its
//! commit on PostgreSQL; SQLite has one writer at a time) and rolls its transaction back,
//! rows included, and returns the first's output.
//!
//! The recorded output is the node's output as it was when the write committed, with no
//! projections pending (those are the outbox's to finish). Without an effect scope (the
//! command line, the library) nothing is recorded and nothing is looked up. Records are kept
//! (one small row per write of a queued run): removing a run's when it ends would let an
//! execution still under way elsewhere (a worker presumed dead) write again.
//!
//! [`Context::with_effect_scope`]: crate::Context::with_effect_scope
//! [`Context::within`]: crate::Context::within

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseTransaction, Value as SqlValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result, StoreKind};
use crate::node::Context;
use crate::store::RelationalStore;

/// The table of recorded effects.
const TABLE: &str = "dataflow_effects";

/// Creates the table of recorded effects and its index by scope. Idempotent.
pub(crate) async fn create_table(store: &RelationalStore) -> Result<()> {
    let mut table = store.sql();
    table
        .push("CREATE TABLE IF NOT EXISTS ")
        .ident(TABLE)
        .push(" (\"key\" TEXT PRIMARY KEY, \"scope\" TEXT NOT NULL, \"output\" TEXT NOT NULL, \"recorded_at\" TEXT NOT NULL)");
    store.execute(table.build(), "creating the effects table").await?;
    let mut index = store.sql();
    index
        .push("CREATE INDEX IF NOT EXISTS ")
        .ident("dataflow_effects_scope_idx")
        .push(" ON ")
        .ident(TABLE)
        .push(" (\"scope\")");
    store.execute(index.build(), "creating the effects index").await
}

/// Runs `write` once under the context's effect key: returns the output recorded by an
/// earlier execution of the invocation instead when there is one, and when `write` fails
/// because another execution wrote first (a unique value it inserted, a version it moved on,
/// a row it deleted), the output that one recorded. Without an effect key, just `write`.
pub(crate) async fn once<T: DeserializeOwned>(ctx: &Context, write: impl Future<Output = Result<T>>) -> Result<T> {
    let Some((key, _)) = ctx.effect_key() else { return write.await };
    let store = ctx.stores().relational();
    if let Some(first) = recorded(store, key).await? {
        return Ok(first);
    }
    match write.await {
        Err(failed) => match recorded(store, key).await {
            Ok(Some(first)) => Ok(first),
            _ => Err(failed),
        },
        written => written,
    }
}

async fn recorded<T: DeserializeOwned>(store: &RelationalStore, key: &str) -> Result<Option<T>> {
    let action = format!("reading the recorded effect '{key}'");
    let mut sql = store.sql();
    sql.push("SELECT \"output\" FROM ")
        .ident(TABLE)
        .push(" WHERE \"key\" = ")
        .param(SqlValue::from(key));
    let Some(row) = store.query_one(sql.build(), &action).await? else {
        return Ok(None);
    };
    let text: String = row.try_get("", "output").map_err(|e| Error::relational(&action, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| failed(&action, format!("the stored output does not decode: {e}")))
}

/// What a write did when it went to record its effect.
pub(crate) enum Recorded<T> {
    /// The context records no effects, or this execution's record is in the transaction:
    /// commit it.
    Commit(DatabaseTransaction),
    /// Another execution of the invocation recorded it first: this one's transaction was
    /// rolled back, and this is the first's output to return.
    Done(T),
}

/// In the write's transaction, before it commits: records `output` under the context's effect
/// key (nothing when the context has none).
pub(crate) async fn record<T: Serialize + DeserializeOwned>(ctx: &Context, tx: DatabaseTransaction, output: &T) -> Result<Recorded<T>> {
    let Some((key, scope)) = ctx.effect_key() else {
        return Ok(Recorded::Commit(tx));
    };
    let action = format!("recording the effect '{key}'");
    let text = serde_json::to_string(output).map_err(|e| failed(&action, e.to_string()))?;
    let store = ctx.stores().relational();
    let mut sql = store.sql();
    sql.push("INSERT INTO ")
        .ident(TABLE)
        .push(" (\"key\", \"scope\", \"output\", \"recorded_at\") VALUES (")
        .param(SqlValue::from(key))
        .push(", ")
        .param(SqlValue::from(scope))
        .push(", ")
        .param(SqlValue::from(text))
        .push(", ")
        .param(SqlValue::from(Utc::now().to_rfc3339()))
        .push(") ON CONFLICT (\"key\") DO NOTHING");
    let inserted = tx
        .execute_raw(sql.build())
        .await
        .map_err(|e| Error::relational(&action, e))?
        .rows_affected();
    if inserted == 1 {
        return Ok(Recorded::Commit(tx));
    }
    tx.rollback().await.map_err(|e| Error::relational(&action, e))?;
    let first = recorded(store, key)
        .await?
        .ok_or_else(|| failed(&action, "another execution recorded it first, and its record is gone".into()))?;
    Ok(Recorded::Done(first))
}

/// An error of the relational store that no retry mends.
fn failed(action: &str, message: String) -> Error {
    Error::Store {
        store: StoreKind::Relational,
        action: action.to_owned(),
        message,
        transient: false,
        busy: false,
    }
}
