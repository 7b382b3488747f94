//! The transactional outbox that keeps the projections (cache, vectors, graph) in step with
//! PostgreSQL.
//!
//! Every write commits its rows and one outbox record per affected row in one transaction.
//! After the commit the node applies the projections at once and deletes the records; a
//! projection that fails leaves its record pending, with the error and an attempt count.
//! [`Stores::sync`] applies pending records later, in order, with exponential backoff; a
//! record that keeps failing becomes a *dead letter*, listed by [`Stores::dead_letters`] and
//! put back in line by [`Stores::retry_dead`], unless its cache invalidation is still pending:
//! reads stop trusting the cache until every pending invalidation is applied, so that one is
//! retried for as long as it takes. Applying a record means making each pending
//! projection match the row's current state in PostgreSQL, so applying one twice changes
//! nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use sea_orm::{ConnectionTrait, QueryResult, Value as SqlValue};
use serde::{Deserialize, Serialize};

use crate::config::ProjectionMode;
use crate::error::{Error, Result, StoreKind};
use crate::model::ModelMeta;
use crate::projection::{ProjectionSet, RowState, apply, apply_verified, read_states};
use crate::sql::Sql;
use crate::store::{RelationalStore, Stores};

/// The outbox table, created by [`Stores::migrate`] beside the models' tables.
pub const OUTBOX_TABLE: &str = "dataflow_outbox";

/// Records `sync` takes per transaction.
const SYNC_BATCH: u64 = 500;
/// Longest wait between two attempts of one record.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One outbox record: a row whose projections are not all applied yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutboxRecord {
    /// The record's id; records are applied in this order.
    pub id: i64,
    /// The model's name, e.g. `Product`.
    pub model: String,
    /// The row's primary key.
    pub row_id: i64,
    /// The row's tenant (multi-tenant models).
    pub tenant_id: Option<String>,
    /// The projections still to apply.
    pub pending: Vec<StoreKind>,
    /// Attempts made so far (the write's own attempt counts).
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Gave up after too many attempts; only [`Stores::retry_dead`] puts it back in line.
    pub dead: bool,
    /// When `sync` may try it next.
    pub next_attempt_at: DateTime<Utc>,
    /// When the write committed it.
    pub created_at: DateTime<Utc>,
}

impl OutboxRecord {
    fn projections(&self) -> ProjectionSet {
        ProjectionSet {
            cache: self.pending.contains(&StoreKind::Cache),
            vector: self.pending.contains(&StoreKind::Vector),
            graph: self.pending.contains(&StoreKind::Graph),
        }
    }
}

/// What a `sync` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SyncReport {
    /// Records whose projections are now all applied (and that were removed).
    pub applied: u64,
    /// Records with a projection that failed again (still pending, retried later).
    pub failed: u64,
    /// Records that failed for the last allowed time and became dead letters.
    pub dead: u64,
    /// Records still pending (not dead) when the sync ended, including ones not yet due.
    pub remaining: u64,
}

/// Creates the outbox table and its index. Idempotent.
pub(crate) async fn create_table(store: &RelationalStore) -> Result<()> {
    let mut sql = store.sql();
    let ts = sql.column_type(crate::model::FieldType::Timestamp);
    let now = sql.now_default();
    let pk = sql.identity_primary_key();
    sql.push("CREATE TABLE IF NOT EXISTS ")
        .ident(OUTBOX_TABLE)
        .push(" (\"id\"")
        .push(pk);
    sql.push(", \"model\" TEXT NOT NULL, \"row_id\" BIGINT NOT NULL, \"tenant_id\" TEXT NULL");
    sql.push(", \"cache_pending\" BOOLEAN NOT NULL, \"vector_pending\" BOOLEAN NOT NULL, \"graph_pending\" BOOLEAN NOT NULL");
    sql.push(", \"attempts\" BIGINT NOT NULL DEFAULT 0, \"last_error\" TEXT NULL, \"dead\" BOOLEAN NOT NULL DEFAULT FALSE");
    sql.push(", \"next_attempt_at\" ").push(ts).push(" NOT NULL DEFAULT ").push(now);
    sql.push(", \"created_at\" ")
        .push(ts)
        .push(" NOT NULL DEFAULT ")
        .push(now)
        .push(")");
    store.execute(sql, "creating the outbox table").await?;
    let mut sql = store.sql();
    sql.push("CREATE INDEX IF NOT EXISTS ")
        .ident("dataflow_outbox_due_idx")
        .push(" ON ")
        .ident(OUTBOX_TABLE)
        .push(" (\"dead\", \"next_attempt_at\", \"id\")");
    store.execute(sql, "creating the outbox index").await
}

/// Writes one outbox record per row inside the write's transaction; returns their ids (none
/// when nothing is projected).
pub(crate) async fn enqueue(
    conn: &impl ConnectionTrait,
    stores: &Stores,
    meta: &'static ModelMeta,
    tenant: Option<&str>,
    row_ids: &[i64],
    set: ProjectionSet,
) -> Result<Vec<i64>> {
    if set.is_empty() || row_ids.is_empty() {
        return Ok(Vec::new());
    }
    let action = format!("recording {} projections in the outbox", meta.name);
    let mut ids = Vec::with_capacity(row_ids.len());
    for chunk in row_ids.chunks(10_000) {
        let mut sql = stores.relational().sql();
        sql.push("INSERT INTO ")
            .ident(OUTBOX_TABLE)
            .push(" (\"model\", \"row_id\", \"tenant_id\", \"cache_pending\", \"vector_pending\", \"graph_pending\") SELECT ");
        sql.param(SqlValue::String(Some(meta.name.to_owned())))
            .push(", \"r\".\"id\", ")
            .param(SqlValue::String(tenant.map(str::to_owned)))
            .push(", ")
            .param(SqlValue::Bool(Some(set.cache)))
            .push(", ")
            .param(SqlValue::Bool(Some(set.vector)))
            .push(", ")
            .param(SqlValue::Bool(Some(set.graph)))
            .push(" FROM ")
            .id_rows(chunk, "r")
            .push(" RETURNING \"id\"");
        let rows = conn.query_all_raw(sql.build()).await.map_err(|e| Error::relational(&action, e))?;
        for row in rows {
            ids.push(row.try_get::<i64>("", "id").map_err(|e| Error::relational(&action, e))?);
        }
    }
    Ok(ids)
}

/// After a write committed: applies its projections, then removes its outbox records, or
/// leaves them pending with the error. Returns the projections left pending. Never fails the
/// write: it is committed.
pub(crate) async fn settle(
    stores: &Stores,
    meta: &'static ModelMeta,
    outbox_ids: &[i64],
    rows: Vec<RowState>,
    set: ProjectionSet,
) -> Vec<StoreKind> {
    if set.is_empty() {
        return Vec::new();
    }
    if stores.projection_mode() == ProjectionMode::Background {
        return hand_to_projector(stores, meta, &rows, set).await;
    }
    let applied = apply_verified(stores, meta, rows, set).await;
    let failed = applied.failed_set();
    if failed.cache {
        stores.cache_needs_repair();
    }
    let bookkeeping = if failed.is_empty() {
        delete_records(stores.relational(), outbox_ids).await
    } else {
        tracing::warn!(model = meta.name, rows = outbox_ids.len(), error = %applied.error_summary(), "projections left pending");
        // The write's own attempt counts as the first; the record is due for sync at once.
        let outcome = Outcome {
            remaining: set.minus(applied.done),
            error: applied.error_summary(),
        };
        let conn = stores.relational().connection();
        record_failures(conn, stores, outbox_ids, &outcome, 1, Utc::now()).await
    };
    if let Err(e) = bookkeeping {
        // The records stay pending as written; sync applies them again, harmlessly.
        tracing::warn!(model = meta.name, error = %e, "could not update the outbox after applying projections");
    }
    failed.kinds()
}

/// [`ProjectionMode::Background`]: invalidates the cache now (a Read right after the write
/// must not be served the old row) and leaves the rest to the background projector. The
/// record stays whole, so the projector invalidates the cache once more, harmlessly; when the
/// invalidation failed here, reads distrust the cache until it is applied.
async fn hand_to_projector(stores: &Stores, meta: &'static ModelMeta, rows: &[RowState], set: ProjectionSet) -> Vec<StoreKind> {
    let cache = ProjectionSet::only(StoreKind::Cache).and(set);
    let mut cache_failed = ProjectionSet::default();
    if cache.cache {
        let applied = apply(stores, meta, rows, cache).await;
        if !applied.failed.is_empty() {
            stores.cache_needs_repair();
            cache_failed = cache;
        }
    }
    stores.wake_projector();
    set.minus(cache).or(cache_failed).kinds()
}

struct Outcome {
    remaining: ProjectionSet,
    error: String,
}

async fn delete_records(store: &RelationalStore, ids: &[i64]) -> Result<()> {
    for chunk in ids.chunks(10_000) {
        let mut sql = store.sql();
        sql.push("DELETE FROM ").ident(OUTBOX_TABLE).push(" WHERE \"id\"").in_ids(chunk);
        store.execute(sql, "removing applied outbox records").await?;
    }
    Ok(())
}

/// Records a failed attempt for `ids`: keeps only the projections still to apply, sets the
/// attempt count and when to try next, and makes the records dead letters when `attempts`
/// reached the limit.
async fn record_failures(
    conn: &impl ConnectionTrait,
    stores: &Stores,
    ids: &[i64],
    outcome: &Outcome,
    attempts: i64,
    next_attempt_at: DateTime<Utc>,
) -> Result<()> {
    let dead = becomes_dead(stores, outcome, attempts);
    let error: String = outcome.error.chars().take(2000).collect();
    for chunk in ids.chunks(10_000) {
        let mut sql = stores.relational().sql();
        sql.push("UPDATE ").ident(OUTBOX_TABLE).push(" SET ");
        write_pending(&mut sql, outcome.remaining);
        sql.push(", \"attempts\" = ")
            .param(SqlValue::BigInt(Some(attempts)))
            .push(", \"last_error\" = ")
            .param(SqlValue::String(Some(error.clone())))
            .push(", \"next_attempt_at\" = ")
            .param(SqlValue::ChronoDateTimeUtc(Some(next_attempt_at)))
            .push(", \"dead\" = ")
            .param(SqlValue::Bool(Some(dead)))
            .push(" WHERE \"id\"")
            .in_ids(chunk);
        conn.execute_raw(sql.build())
            .await
            .map_err(|e| Error::relational("recording a failed projection", e))?;
    }
    Ok(())
}

/// Whether a record that failed for the `attempts`-th time becomes a dead letter: after
/// [`Stores::outbox_max_attempts`], unless its cache invalidation is still pending. A dead
/// record is not counted as pending, so reads would trust the cache again while it may still
/// hold the row from before the write (Redis keeps its data over a restart); an invalidation
/// only fails while Redis cannot be reached, so it is retried until it is applied.
fn becomes_dead(stores: &Stores, outcome: &Outcome, attempts: i64) -> bool {
    attempts >= i64::from(stores.outbox_max_attempts()) && !outcome.remaining.cache
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

/// Seconds before attempt `attempts + 1`: 1, 2, 4, ... capped at five minutes.
fn backoff(attempts: i64) -> Duration {
    let exp = (attempts - 1).clamp(0, 16) as u32;
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

const RECORD_COLUMNS: &str = "\"id\", \"model\", \"row_id\", \"tenant_id\", \"cache_pending\", \"vector_pending\", \"graph_pending\", \"attempts\", \"last_error\", \"dead\", \"next_attempt_at\", \"created_at\"";

fn decode(row: &QueryResult) -> std::result::Result<OutboxRecord, sea_orm::DbErr> {
    let mut pending = Vec::new();
    for (column, kind) in [
        ("cache_pending", StoreKind::Cache),
        ("vector_pending", StoreKind::Vector),
        ("graph_pending", StoreKind::Graph),
    ] {
        if row.try_get::<bool>("", column)? {
            pending.push(kind);
        }
    }
    Ok(OutboxRecord {
        id: row.try_get("", "id")?,
        model: row.try_get("", "model")?,
        row_id: row.try_get("", "row_id")?,
        tenant_id: row.try_get("", "tenant_id")?,
        pending,
        attempts: row.try_get("", "attempts")?,
        last_error: row.try_get("", "last_error")?,
        dead: row.try_get("", "dead")?,
        next_attempt_at: row.try_get("", "next_attempt_at")?,
        created_at: row.try_get("", "created_at")?,
    })
}

impl Stores {
    /// Applies every pending outbox record that is due, oldest first, until none is left;
    /// records that fail again wait longer each time (1 s, 2 s, 4 s, ... up to 5 min) and
    /// become dead letters after [`Stores::outbox_max_attempts`] attempts. Safe to run from
    /// several processes at once.
    pub async fn sync(&self) -> Result<SyncReport> {
        self.sync_where(None, false).await
    }

    /// Applies every pending record of one projection now, due or not (the others stay
    /// pending). `remaining` counts the records still pending for that projection.
    pub(crate) async fn sync_projection_now(&self, kind: StoreKind) -> Result<SyncReport> {
        self.sync_where(Some(ProjectionSet::only(kind)), true).await
    }

    async fn sync_where(&self, only: Option<ProjectionSet>, ignore_backoff: bool) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let store = self.relational();
        // Records written while this sync runs are left to the next one, so a busy writer
        // cannot keep it going forever.
        let Some(last) = self.last_record_id().await? else {
            return Ok(report);
        };
        let mut after = 0i64;
        loop {
            let now = Utc::now();
            let due_by = if ignore_backoff {
                now + chrono::Duration::from_std(MAX_BACKOFF).unwrap_or_else(|_| chrono::Duration::seconds(300)) * 2
            } else {
                now
            };
            // On PostgreSQL the batch stays locked (SKIP LOCKED) while it is applied, so several
            // runners share the work. SQLite has one writer at a time, and the embedded graph and
            // vector stores write to the same file: holding the lock while applying would make
            // them wait for it. There the batch is read without a transaction and its outcome
            // written in a short one; a concurrent runner may then apply a record twice, which
            // projections tolerate (each write carries the row's version).
            let lock_batch = store.locks_rows();
            let reading = if lock_batch {
                Some(store.begin().await.map_err(|e| Error::relational("starting a sync", e))?)
            } else {
                None
            };
            let mut sql = store.sql();
            sql.push("SELECT ").push(RECORD_COLUMNS).push(" FROM ").ident(OUTBOX_TABLE);
            sql.push(" WHERE NOT \"dead\" AND \"id\" > ")
                .param(SqlValue::BigInt(Some(after)))
                .push(" AND \"id\" <= ")
                .param(SqlValue::BigInt(Some(last)))
                .push(" AND \"next_attempt_at\" <= ")
                .param(SqlValue::ChronoDateTimeUtc(Some(due_by)));
            if let Some(only) = only {
                sql.push(" AND ");
                write_any_pending(&mut sql, only);
            }
            sql.push(" ORDER BY \"id\" LIMIT ").param(SqlValue::BigInt(Some(SYNC_BATCH as i64)));
            if lock_batch {
                sql.push(" FOR UPDATE SKIP LOCKED");
            }
            let rows = match &reading {
                Some(tx) => tx.query_all_raw(sql.build()).await,
                None => store.connection().query_all_raw(sql.build()).await,
            }
            .map_err(|e| Error::relational("reading the outbox", e))?;
            let records = rows
                .iter()
                .map(decode)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::relational("reading the outbox", e))?;
            let Some(newest) = records.last().map(|r| r.id) else {
                if let Some(tx) = reading {
                    tx.commit().await.map_err(|e| Error::relational("ending a sync", e))?;
                }
                break;
            };
            after = newest;
            let batch = self.apply_batch(&records, only).await;
            let tx = match reading {
                Some(tx) => tx,
                None => store.begin().await.map_err(|e| Error::relational("starting a sync", e))?,
            };
            for (id, outcome, attempts) in &batch.failures {
                let next = now + chrono::Duration::from_std(backoff(*attempts)).unwrap_or_else(|_| chrono::Duration::seconds(300));
                record_failures(&tx, self, &[*id], outcome, *attempts, next).await?;
                report.failed += 1;
                if becomes_dead(self, outcome, *attempts) {
                    report.dead += 1;
                }
            }
            for (id, remaining) in &batch.narrowed {
                let mut sql = store.sql();
                sql.push("UPDATE ").ident(OUTBOX_TABLE).push(" SET ");
                write_pending(&mut sql, *remaining);
                sql.push(" WHERE \"id\" = ").param(SqlValue::BigInt(Some(*id)));
                tx.execute_raw(sql.build())
                    .await
                    .map_err(|e| Error::relational("updating an outbox record", e))?;
            }
            if !batch.done.is_empty() {
                let mut sql = store.sql();
                sql.push("DELETE FROM ")
                    .ident(OUTBOX_TABLE)
                    .push(" WHERE \"id\"")
                    .in_ids(&batch.done);
                tx.execute_raw(sql.build())
                    .await
                    .map_err(|e| Error::relational("removing applied outbox records", e))?;
            }
            tx.commit().await.map_err(|e| Error::relational("ending a sync", e))?;
            report.applied += batch.done.len() as u64;
        }
        report.remaining = self.count_pending(only).await?;
        Ok(report)
    }

    async fn last_record_id(&self) -> Result<Option<i64>> {
        let store = self.relational();
        let mut sql = store.sql();
        sql.push("SELECT MAX(\"id\") AS \"last\" FROM ").ident(OUTBOX_TABLE);
        let row = store
            .connection()
            .query_one_raw(sql.build())
            .await
            .map_err(|e| Error::relational("reading the outbox", e))?;
        row.map(|r| r.try_get::<Option<i64>>("", "last"))
            .transpose()
            .map(Option::flatten)
            .map_err(|e| Error::relational("reading the outbox", e))
    }

    /// Applies the projections of `records` (restricted to `only`), model by model, and sorts
    /// the records into done, narrowed (done for `only`, others still pending) and failed.
    async fn apply_batch(&self, records: &[OutboxRecord], only: Option<ProjectionSet>) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        let mut by_model: BTreeMap<&str, Vec<&OutboxRecord>> = BTreeMap::new();
        for r in records {
            by_model.entry(r.model.as_str()).or_default().push(r);
        }
        for (model, group) in by_model {
            let wanted = group.iter().fold(ProjectionSet::default(), |acc, r| acc.or(r.projections()));
            let wanted = only.map_or(wanted, |o| wanted.and(o));
            let (done, error) = match self.model(model) {
                None => (
                    ProjectionSet::default(),
                    format!("model {model} is not registered with these stores (Stores::register_models)"),
                ),
                Some(meta) => match self.states_of(meta, &group).await {
                    Ok(states) => {
                        let applied = apply_verified(self, meta, states, wanted).await;
                        (applied.done, applied.error_summary())
                    }
                    Err(e) => (ProjectionSet::default(), e.to_string()),
                },
            };
            for r in group {
                let remaining = r.projections().minus(done);
                if remaining.is_empty() {
                    outcome.done.push(r.id);
                } else if remaining.and(wanted).is_empty() {
                    outcome.narrowed.push((r.id, remaining));
                } else {
                    let outcome_of = Outcome {
                        remaining,
                        error: error.clone(),
                    };
                    outcome.failures.push((r.id, outcome_of, r.attempts + 1));
                }
            }
        }
        outcome
    }

    /// The current state of the rows of `records` (all of model `meta`); a row that is gone
    /// keeps the tenant its record names, so its cache key can be found.
    async fn states_of(&self, meta: &'static ModelMeta, records: &[&OutboxRecord]) -> Result<Vec<RowState>> {
        let mut ids: Vec<i64> = records.iter().map(|r| r.row_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut states = read_states(self, meta, &ids).await?;
        let tenants: HashMap<i64, &String> = records.iter().filter_map(|r| r.tenant_id.as_ref().map(|t| (r.row_id, t))).collect();
        for state in states.iter_mut().filter(|s| s.tenant.is_none()) {
            state.tenant = tenants.get(&state.id).map(|t| (*t).clone());
        }
        Ok(states)
    }

    /// Applies the projections of `records` again from the rows' current state, without
    /// touching the outbox: applying the same records twice leaves the stores identical.
    pub async fn apply_records(&self, records: &[OutboxRecord]) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let mut by_model: BTreeMap<&str, Vec<&OutboxRecord>> = BTreeMap::new();
        for r in records {
            by_model.entry(r.model.as_str()).or_default().push(r);
        }
        for (model, group) in by_model {
            let meta = self.model(model).ok_or_else(|| {
                Error::Config(format!(
                    "model {model} is not registered with these stores (Stores::register_models)"
                ))
            })?;
            let set = group.iter().fold(ProjectionSet::default(), |acc, r| acc.or(r.projections()));
            let states = self.states_of(meta, &group).await?;
            let applied = apply(self, meta, &states, set).await;
            if applied.failed.is_empty() {
                report.applied += group.len() as u64;
            } else {
                report.failed += group.len() as u64;
            }
        }
        report.remaining = self.pending_count().await?;
        Ok(report)
    }

    /// How many records are pending (not dead), due or not.
    pub async fn pending_count(&self) -> Result<u64> {
        self.count_pending(None).await
    }

    /// Pending records (not dead), due or not, that still need one of `only`'s projections
    /// (any projection when `None`).
    async fn count_pending(&self, only: Option<ProjectionSet>) -> Result<u64> {
        let store = self.relational();
        let mut sql = store.sql();
        sql.push("SELECT COUNT(*) AS \"n\" FROM ")
            .ident(OUTBOX_TABLE)
            .push(" WHERE NOT \"dead\"");
        if let Some(only) = only {
            sql.push(" AND ");
            write_any_pending(&mut sql, only);
        }
        let row = store
            .connection()
            .query_one_raw(sql.build())
            .await
            .map_err(|e| Error::relational("counting pending outbox records", e))?;
        let n: i64 = row
            .map(|r| r.try_get("", "n"))
            .transpose()
            .map_err(|e| Error::relational("counting pending outbox records", e))?
            .unwrap_or(0);
        Ok(n as u64)
    }

    /// Up to `limit` pending records (not dead), oldest first.
    pub async fn pending_records(&self, limit: u64) -> Result<Vec<OutboxRecord>> {
        self.list_records(false, limit).await
    }

    /// Up to `limit` dead letters, oldest first.
    pub async fn dead_letters(&self, limit: u64) -> Result<Vec<OutboxRecord>> {
        self.list_records(true, limit).await
    }

    async fn list_records(&self, dead: bool, limit: u64) -> Result<Vec<OutboxRecord>> {
        let store = self.relational();
        let mut sql = store.sql();
        sql.push("SELECT ")
            .push(RECORD_COLUMNS)
            .push(" FROM ")
            .ident(OUTBOX_TABLE)
            .push(" WHERE \"dead\" = ")
            .param(SqlValue::Bool(Some(dead)))
            .push(" ORDER BY \"id\" LIMIT ")
            .param(SqlValue::BigInt(Some(limit.min(i64::MAX as u64) as i64)));
        let rows = store
            .connection()
            .query_all_raw(sql.build())
            .await
            .map_err(|e| Error::relational("listing outbox records", e))?;
        rows.iter()
            .map(decode)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::relational("listing outbox records", e))
    }

    /// Puts dead letters back in line, due at once with their attempts reset: those with
    /// these ids, or all when `ids` is `None`. Returns how many.
    pub async fn retry_dead(&self, ids: Option<&[i64]>) -> Result<u64> {
        let store = self.relational();
        let mut sql = store.sql();
        sql.push("UPDATE ")
            .ident(OUTBOX_TABLE)
            .push(" SET \"dead\" = FALSE, \"attempts\" = 0, \"next_attempt_at\" = ")
            .param(SqlValue::ChronoDateTimeUtc(Some(Utc::now())))
            .push(" WHERE \"dead\"");
        if let Some(ids) = ids {
            sql.push(" AND \"id\"").in_ids(ids);
        }
        let result = store
            .connection()
            .execute_raw(sql.build())
            .await
            .map_err(|e| Error::relational("retrying dead letters", e))?;
        Ok(result.rows_affected())
    }
}

#[derive(Default)]
struct BatchOutcome {
    /// Records whose projections are all applied.
    done: Vec<i64>,
    /// Records done for the projections asked, with others still pending: `(id, remaining)`.
    narrowed: Vec<(i64, ProjectionSet)>,
    /// `(id, what remains and why, attempts including this one)`.
    failures: Vec<(i64, Outcome, i64)>,
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }
}
