//! The transactional outbox that keeps the projections (cache, vectors, graph) in step with
//! PostgreSQL.
//!
//! Every write commits its rows and one outbox record per affected row in one transaction.
//! After the commit the node applies the projections at once and deletes the records; a
//! projection that fails leaves its record pending, with the error and an attempt count.
//! [`Outbox::sync`] applies pending records later, in order, with exponential backoff; a
//! record that keeps failing becomes a *dead letter*, listed by [`Outbox::dead_letters`] and
//! put back in line by [`Outbox::retry_dead`], unless its cache invalidation is still pending:
//! reads stop trusting the cache until every pending invalidation is applied, so that one is
//! retried for as long as it takes. Applying a record means making each pending
//! projection match the row's current state in PostgreSQL, so applying one twice changes
//! nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use sea_orm::{ConnectionTrait, QueryResult};
use serde::{Deserialize, Serialize};

use crate::config::ProjectionMode;
use crate::consistency::projection::{ProjectionSet, RowState, apply, apply_verified, read_states, verify};
use crate::consistency::projector::Projector;
use crate::error::{Error, Result, StoreKind};
use crate::model::ModelMeta;
use crate::sql;
use crate::store::{RelationalStore, StoreHandles};

/// The outbox table, created by [`crate::Stores::migrate`] beside the models' tables.
pub const OUTBOX_TABLE: &str = sql::outbox::TABLE;

/// Records `sync` takes per transaction.
const SYNC_BATCH: u64 = 500;
/// Longest wait between two attempts of one record.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// With inline projections, how long after its write a record waits before `sync` may take
/// it: the writer is applying it itself meanwhile (and removes it, or marks it failed and due
/// at once). Without the wait, a `sync` running beside the workload applied the same record
/// at the same moment as its writer, and two concurrent `MERGE`s of one edge on a graph
/// server without a uniqueness constraint left the edge twice. A record whose writer died
/// before settling it is taken after this long. It covers an apply's store calls (bounded
/// by the projection timeout) and its re-checks.
const INLINE_SETTLE_GRACE: Duration = Duration::from_secs(30);

/// How often a process retries applying pending cache invalidations while the cache is down.
const CACHE_REPAIR_INTERVAL: Duration = Duration::from_secs(1);

/// The outbox of a set of stores: writes record their projections in it, and it applies
/// them (at once, by the background projector, or by [`Outbox::sync`]). Cheap to clone; one
/// per [`crate::Stores`], shared by every node that writes through them.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

/// What an [`Outbox`] shares between its clones and its background projector.
struct OutboxInner {
    stores: StoreHandles,
    max_attempts: u32,
    mode: ProjectionMode,
    cache_repair: CacheRepair,
    projector: Projector,
}

/// Set when a cache invalidation failed in this process: until the pending invalidations are
/// applied, reads do not trust the cache (it may hold rows older than PostgreSQL's).
#[derive(Default)]
struct CacheRepair {
    needed: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
}

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
    /// Gave up after too many attempts; only [`Outbox::retry_dead`] puts it back in line.
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

/// How far the projections lag behind: what `dataflow health` and `dataflow sync` report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Records still pending (not dead), due or not.
    pub pending: u64,
    /// How long ago the oldest pending record was written (by the database's clock); `None`
    /// when nothing is pending.
    pub oldest_pending_age: Option<Duration>,
    /// Dead letters, waiting for [`Outbox::retry_dead`].
    pub dead: u64,
}

/// Creates the outbox table and its index. Idempotent.
pub(crate) async fn create_table(store: &RelationalStore) -> Result<()> {
    let [table, index] = sql::outbox::create_table(store.sql());
    store.execute(table, "creating the outbox table").await?;
    store.execute(index, "creating the outbox index").await
}

/// Whether the outbox table has been created (by [`crate::Stores::migrate`]).
async fn outbox_table_exists(store: &RelationalStore) -> Result<bool> {
    let columns = store
        .connection()
        .query_all_raw(sql::schema::column_names(store.sql(), OUTBOX_TABLE))
        .await
        .map_err(|e| Error::relational("looking for the outbox table", e))?;
    Ok(!columns.is_empty())
}

struct Outcome {
    remaining: ProjectionSet,
    error: String,
}

async fn delete_records(store: &RelationalStore, ids: &[i64]) -> Result<()> {
    for chunk in ids.chunks(10_000) {
        store
            .execute(sql::outbox::delete_records(store.sql(), chunk), "removing applied outbox records")
            .await?;
    }
    Ok(())
}

/// Seconds before attempt `attempts + 1`: 1, 2, 4, ... capped at five minutes.
fn backoff(attempts: i64) -> Duration {
    let exp = (attempts - 1).clamp(0, 16) as u32;
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

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

impl Outbox {
    /// The outbox of `stores`: a record that failed `max_attempts` times (at least 1) becomes
    /// a dead letter; `mode` says when writes apply their vector and graph projections.
    pub(crate) fn new(stores: StoreHandles, max_attempts: u32, mode: ProjectionMode) -> Self {
        Outbox {
            inner: Arc::new(OutboxInner {
                stores,
                max_attempts: max_attempts.max(1),
                mode,
                cache_repair: CacheRepair::default(),
                projector: Projector::default(),
            }),
        }
    }

    /// One round of the background projector: `sync`, logging what it left.
    async fn background_round(self) {
        match self.sync().await {
            Ok(report) if report.failed > 0 => {
                tracing::warn!(
                    failed = report.failed,
                    remaining = report.remaining,
                    "background projections: records left pending for a retry"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "background projections: the outbox could not be read; retrying"),
        }
    }

    fn stores(&self) -> &StoreHandles {
        &self.inner.stores
    }

    /// When writes apply their vector and graph projections.
    pub fn projection_mode(&self) -> ProjectionMode {
        self.inner.mode
    }

    /// Failed attempts after which a record becomes a dead letter.
    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// Stops the background projector and applies every due outbox record now (`sync`):
    /// what a process with [`ProjectionMode::Background`] calls before it ends, so that its
    /// last writes do not wait for the next `sync`. A round the projector had begun is
    /// abandoned (its transaction rolls back, its records stay pending, and this sync applies
    /// them; applying twice changes nothing). The next write starts the projector again.
    pub async fn finish_projections(&self) -> Result<SyncReport> {
        self.inner.projector.stop().await;
        self.sync().await
    }

    /// Records that a cache invalidation failed: reads stop trusting the cache until the
    /// pending invalidations are applied.
    pub(crate) fn cache_needs_repair(&self) {
        self.inner.cache_repair.needed.store(true, Ordering::SeqCst);
    }

    /// Whether reads may use the cache. When an invalidation failed earlier, first tries (at
    /// most once per second) to apply the pending ones; until that succeeds, the cache is not
    /// used.
    pub(crate) async fn cache_trusted(&self) -> bool {
        let repair = &self.inner.cache_repair;
        if !repair.needed.load(Ordering::SeqCst) {
            return true;
        }
        {
            let mut last = repair.last_attempt.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < CACHE_REPAIR_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.sync_projection_now(StoreKind::Cache).await {
            Ok(report) if report.remaining == 0 => {
                repair.needed.store(false, Ordering::SeqCst);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(error = %e, "applying pending cache invalidations failed");
                false
            }
        }
    }

    /// When a record written now may be taken by `sync` or the projector: at once with
    /// background projections, after [`INLINE_SETTLE_GRACE`] with inline ones (the writer
    /// applies it itself meanwhile).
    pub(crate) fn due_of_new_records(&self) -> DateTime<Utc> {
        match self.inner.mode {
            ProjectionMode::Inline => Utc::now() + INLINE_SETTLE_GRACE,
            ProjectionMode::Background => Utc::now(),
        }
    }

    /// Writes one outbox record per row inside the write's transaction; returns their ids (none
    /// when nothing is projected).
    pub(crate) async fn enqueue(
        &self,
        conn: &impl ConnectionTrait,
        meta: &'static ModelMeta,
        tenant: Option<&str>,
        row_ids: &[i64],
        set: ProjectionSet,
    ) -> Result<Vec<i64>> {
        if set.is_empty() || row_ids.is_empty() {
            return Ok(Vec::new());
        }
        let action = format!("recording {} projections in the outbox", meta.name);
        let due = self.due_of_new_records();
        let mut ids = Vec::with_capacity(row_ids.len());
        for chunk in row_ids.chunks(10_000) {
            let statement = sql::outbox::insert_records(self.stores().relational().sql(), meta.name, tenant, chunk, set, due);
            let rows = conn.query_all_raw(statement).await.map_err(|e| Error::relational(&action, e))?;
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
        &self,
        meta: &'static ModelMeta,
        outbox_ids: &[i64],
        rows: Vec<RowState>,
        set: ProjectionSet,
    ) -> Vec<StoreKind> {
        if set.is_empty() {
            return Vec::new();
        }
        if self.inner.mode == ProjectionMode::Background {
            return self.hand_to_projector(meta, &rows, set).await;
        }
        let stores = self.stores();
        let applied = apply(stores, meta, &rows, set).await;
        let relational = stores.relational();
        if applied.failed.is_empty() && relational.sql().is_postgres() {
            // The usual case in one round trip: no row moved on, and the records go with the
            // same statement that checks it.
            let expected: Vec<(i64, i64, bool)> = rows.iter().map(|r| (r.id, r.version, r.fields.is_some())).collect();
            let statement = sql::outbox::settle_if_current(relational.sql(), meta, &expected, outbox_ids);
            match relational.connection().query_all_raw(statement).await {
                Ok(stale) if stale.is_empty() => return Vec::new(),
                // Rows moved on: the check below re-reads and re-applies them.
                Ok(_) => {}
                Err(e) => tracing::debug!(model = meta.name, error = %e, "checking and settling at once failed; checking again"),
            }
        }
        let applied = verify(stores, meta, rows, applied).await;
        let failed = applied.failed_set();
        if failed.cache {
            self.cache_needs_repair();
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
            self.record_failures(conn, outbox_ids, &outcome, 1, Utc::now()).await
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
    async fn hand_to_projector(&self, meta: &'static ModelMeta, rows: &[RowState], set: ProjectionSet) -> Vec<StoreKind> {
        let cache = ProjectionSet::only(StoreKind::Cache).and(set);
        let mut cache_failed = ProjectionSet::default();
        if cache.cache {
            let applied = apply(self.stores(), meta, rows, cache).await;
            if !applied.failed.is_empty() {
                self.cache_needs_repair();
                cache_failed = cache;
            }
        }
        let outbox = Arc::downgrade(&self.inner);
        self.inner
            .projector
            .wake(move || outbox.upgrade().map(|inner| Outbox { inner }.background_round()));
        set.minus(cache).or(cache_failed).kinds()
    }

    /// Records a failed attempt for `ids`: keeps only the projections still to apply, sets the
    /// attempt count and when to try next, and makes the records dead letters when `attempts`
    /// reached the limit.
    async fn record_failures(
        &self,
        conn: &impl ConnectionTrait,
        ids: &[i64],
        outcome: &Outcome,
        attempts: i64,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<()> {
        let dead = self.becomes_dead(outcome, attempts);
        let error: String = outcome.error.chars().take(2000).collect();
        let failure = sql::outbox::Failure {
            remaining: outcome.remaining,
            attempts,
            error: &error,
            next_attempt_at,
            dead,
        };
        for chunk in ids.chunks(10_000) {
            let statement = sql::outbox::record_failure(self.stores().relational().sql(), chunk, &failure);
            conn.execute_raw(statement)
                .await
                .map_err(|e| Error::relational("recording a failed projection", e))?;
        }
        Ok(())
    }

    /// Whether a record that failed for the `attempts`-th time becomes a dead letter: after
    /// [`Outbox::max_attempts`], unless its cache invalidation is still pending. A dead
    /// record is not counted as pending, so reads would trust the cache again while it may still
    /// hold the row from before the write (Redis keeps its data over a restart); an invalidation
    /// only fails while Redis cannot be reached, so it is retried until it is applied.
    fn becomes_dead(&self, outcome: &Outcome, attempts: i64) -> bool {
        attempts >= i64::from(self.inner.max_attempts) && !outcome.remaining.cache
    }

    /// Applies every pending outbox record that is due, oldest first, until none is left
    /// (with inline projections a write's records come due 30 s after it, or at once when
    /// its own attempt failed: until then the write is applying them itself);
    /// records that fail again wait longer each time (1 s, 2 s, 4 s, ... up to 5 min) and
    /// become dead letters after [`Outbox::max_attempts`] attempts. Safe to run from
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
        let store = self.stores().relational();
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
            let due = sql::outbox::Due {
                after,
                last,
                due_by,
                only,
                limit: SYNC_BATCH as i64,
                lock: lock_batch,
            };
            let statement = sql::outbox::select_due(store.sql(), &due);
            let rows = match &reading {
                Some(tx) => tx.query_all_raw(statement).await,
                None => store.connection().query_all_raw(statement).await,
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
                self.record_failures(&tx, &[*id], outcome, *attempts, next).await?;
                report.failed += 1;
                if self.becomes_dead(outcome, *attempts) {
                    report.dead += 1;
                }
            }
            for (id, remaining) in &batch.narrowed {
                tx.execute_raw(sql::outbox::narrow(store.sql(), *id, *remaining))
                    .await
                    .map_err(|e| Error::relational("updating an outbox record", e))?;
            }
            if !batch.done.is_empty() {
                tx.execute_raw(sql::outbox::delete_records(store.sql(), &batch.done))
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
        let store = self.stores().relational();
        let row = store
            .connection()
            .query_one_raw(sql::outbox::last_id(store.sql()))
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
            let (done, error) = match self.stores().model(model) {
                None => (
                    ProjectionSet::default(),
                    format!("model {model} is not registered with these stores (Stores::register_models)"),
                ),
                Some(meta) => match self.states_of(meta, &group).await {
                    Ok(states) => {
                        let applied = apply_verified(self.stores(), meta, states, wanted).await;
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
        let mut states = read_states(self.stores(), meta, &ids).await?;
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
            let meta = self.stores().model(model).ok_or_else(|| {
                Error::Config(format!(
                    "model {model} is not registered with these stores (Stores::register_models)"
                ))
            })?;
            let set = group.iter().fold(ProjectionSet::default(), |acc, r| acc.or(r.projections()));
            let states = self.states_of(meta, &group).await?;
            let applied = apply(self.stores(), meta, &states, set).await;
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
        let store = self.stores().relational();
        let row = store
            .connection()
            .query_one_raw(sql::outbox::count_live(store.sql(), only))
            .await
            .map_err(|e| Error::relational("counting pending outbox records", e))?;
        let n: i64 = row
            .map(|r| r.try_get("", "n"))
            .transpose()
            .map_err(|e| Error::relational("counting pending outbox records", e))?
            .unwrap_or(0);
        Ok(n as u64)
    }

    /// The backlog: how many records are pending and dead, and the age of the oldest pending
    /// one. One query, on PostgreSQL and SQLite alike. Before [`crate::Stores::migrate`] has
    /// created the outbox table, nothing is pending.
    pub async fn backlog(&self) -> Result<Backlog> {
        const ACTION: &str = "reading the outbox backlog";
        let store = self.stores().relational();
        let row = match store.connection().query_one_raw(sql::outbox::backlog(store.sql())).await {
            Ok(row) => row,
            // Asked only after the query failed, so that a healthy outbox costs one query.
            Err(e) if !outbox_table_exists(store).await? => {
                tracing::debug!(error = %e, "no outbox table yet: nothing is pending");
                return Ok(Backlog::default());
            }
            Err(e) => return Err(Error::relational(ACTION, e)),
        };
        let Some(row) = row else {
            return Ok(Backlog::default());
        };
        let count = |column: &str| -> Result<u64> {
            let n: Option<i64> = row.try_get("", column).map_err(|e| Error::relational(ACTION, e))?;
            Ok(n.unwrap_or(0).max(0) as u64)
        };
        let oldest: Option<DateTime<Utc>> = row.try_get("", "oldest").map_err(|e| Error::relational(ACTION, e))?;
        let now: DateTime<Utc> = row.try_get("", "now").map_err(|e| Error::relational(ACTION, e))?;
        Ok(Backlog {
            pending: count("pending")?,
            // A record stamped a moment after `now` was read (another connection's clock) is
            // new, not from the future.
            oldest_pending_age: oldest.map(|t| (now - t).to_std().unwrap_or(Duration::ZERO)),
            dead: count("dead")?,
        })
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
        let store = self.stores().relational();
        let statement = sql::outbox::list(store.sql(), dead, limit.min(i64::MAX as u64) as i64);
        let rows = store
            .connection()
            .query_all_raw(statement)
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
        let store = self.stores().relational();
        let result = store
            .connection()
            .execute_raw(sql::outbox::revive(store.sql(), ids, Utc::now()))
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
