//! BulkUpsert: many rows in batches inside one transaction. Every row is checked first;
//! invalid rows are reported by index and the valid ones land. A row whose unique value
//! (a `sku`, a `slug`) another row holds, in the table or earlier in the same input, is such
//! an invalid row: it is reported (`sku 'PT-1' already exists (Product 12)`), not a reason to
//! fail the others. Foreign keys are checked inside the write's transaction, before the
//! write. Unique values are left to the table's constraints at first: a batch that collides
//! with one is rolled back to its savepoint, its rows' values are looked up (those taken are
//! reported) and the rest is written again, so a batch that collides with nothing costs no
//! lookup.
//!
//! Each batch is one statement whose rows travel as one array parameter per column (`unnest`
//! on PostgreSQL) or as a single JSON parameter (`json_each` on SQLite), so there is no
//! bind-parameter limit and no per-row round trip. Rows without a primary key get one up
//! front (from the table's sequence on PostgreSQL, after the largest id on SQLite, whose
//! transaction holds the write lock), so every written row maps back to its input index; a
//! batch of such rows alone is a plain `INSERT`, without the conflict clause.

use std::collections::HashMap;

use schemars::JsonSchema;
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::consistency::projection::{ProjectionSet, RowState};
use crate::error::{Error, FieldErrors, Result, StoreKind};
use crate::model::values::{CheckedRecord, RecordMode, check_record, printable};
use crate::model::{FieldMeta, Model, ModelMeta};
use crate::node::Context;
use crate::nodes::effect::{self, Recorded};
use crate::nodes::{Holder, commit_and_project};
use crate::sql::rows::column_json;
use crate::sql::{Sql, rows, violation, write};

/// Rows per statement when `batch_size` is not given.
pub const DEFAULT_BATCH: usize = 5_000;
/// Largest accepted `batch_size`.
pub const MAX_BATCH: usize = 50_000;
/// Most rows accepted by one call.
pub const MAX_ROWS: usize = 1_000_000;
/// From this many rows on, the rows are checked on a blocking thread, split across rayon's
/// threads: checking 10,000 rows took 19 ms of a 340 ms call on one core, while the database
/// waits for them. Below it, the hand-over would cost more than it saves.
const CHECK_IN_PARALLEL_FROM: usize = 1_000;

/// Input of a BulkUpsert node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkUpsertInput {
    /// The rows, as JSON objects of the model's fields. With the primary key as conflict key a
    /// row may carry its `id` (update or insert with that id) or not (insert).
    pub rows: Vec<Json>,
    /// The field that identifies an existing row: the primary key (default) or a unique field
    /// (`"sku"`), on which a row updates the row holding the same value. Also accepted as `on`.
    #[serde(default, alias = "on", skip_serializing_if = "Option::is_none")]
    pub conflict_key: Option<String>,
    /// Rows per statement, 1 to 50,000 (default 5,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
}

/// The problems with one input row, which was not written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RowError {
    /// The row's position in `rows`, from 0.
    pub index: usize,
    /// What is wrong with it.
    pub errors: FieldErrors,
}

/// Output of a BulkUpsert node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct BulkUpsertOutput {
    /// Rows inserted.
    pub inserted: u64,
    /// Existing rows updated (soft-deleted ones are revived).
    pub updated: u64,
    /// The primary key of each input row, `null` for rejected rows; same order as `rows`.
    pub ids: Vec<Option<i64>>,
    /// Rejected rows, by index.
    pub errors: Vec<RowError>,
    /// Projections (cache, vector, graph) not applied yet for some of the written rows: they
    /// failed, or [`crate::ProjectionMode::Background`] leaves them to the background
    /// projector. `sync` applies them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<StoreKind>,
}

/// What identifies the existing row an input row writes.
#[derive(Clone, Copy)]
enum ConflictKey {
    PrimaryKey,
    Unique(&'static FieldMeta),
}

impl ConflictKey {
    /// The field's name.
    fn field_name(&self, meta: &'static ModelMeta) -> &'static str {
        match self {
            ConflictKey::PrimaryKey => meta.primary_key,
            ConflictKey::Unique(f) => f.name,
        }
    }
}

/// Checks every row, then writes the valid ones in batches inside one transaction. Under an
/// effect key (see [`effect`]) it writes once: executed again, it returns what it did the
/// first time (rows upserted by primary key without one would otherwise be inserted twice).
pub async fn run<M: Model>(ctx: &Context, input: BulkUpsertInput) -> Result<BulkUpsertOutput> {
    effect::once(ctx, upsert::<M>(ctx, input)).await
}

async fn upsert<M: Model>(ctx: &Context, input: BulkUpsertInput) -> Result<BulkUpsertOutput> {
    let meta = M::meta();
    let tenant = ctx.tenant_scope(meta)?;
    let batch = input.batch_size.unwrap_or(DEFAULT_BATCH);
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(Error::invalid(
            meta.name,
            "batch_size",
            format!("must be between 1 and {MAX_BATCH}, got {batch}"),
        ));
    }
    if input.rows.len() > MAX_ROWS {
        return Err(Error::invalid(
            meta.name,
            "rows",
            format!("at most {MAX_ROWS} rows per call, got {}", input.rows.len()),
        ));
    }
    let key = conflict_key(meta, input.conflict_key.as_deref())?;
    let mut out = BulkUpsertOutput {
        ids: vec![None; input.rows.len()],
        ..Default::default()
    };
    let valid = if input.rows.len() >= CHECK_IN_PARALLEL_FROM {
        let rows = input.rows;
        let (valid, errors) = tokio::task::spawn_blocking(move || {
            let mut errors = Vec::new();
            (check_rows(meta, &key, &rows, &mut errors), errors)
        })
        .await
        .map_err(|e| match e.try_into_panic() {
            // A check that panics is a bug: it panics here as it would have inline.
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Error::Store {
                store: StoreKind::Relational,
                action: format!("bulk upserting into {}", meta.table),
                message: format!("the rows were not checked: {e}"),
                transient: true,
                busy: false,
            },
        })?;
        out.errors = errors;
        valid
    } else {
        check_rows(meta, &key, &input.rows, &mut out.errors)
    };
    if !valid.is_empty() {
        write_rows(ctx, meta, tenant, &key, batch, valid, &mut out).await?;
    }
    out.errors.sort_by_key(|e| e.index);
    Ok(out)
}

/// The conflict key a BulkUpsert names: the primary key (the default) or a unique field.
fn conflict_key(meta: &'static ModelMeta, name: Option<&str>) -> Result<ConflictKey> {
    Ok(match name {
        None => ConflictKey::PrimaryKey,
        Some(name) if name == meta.primary_key => ConflictKey::PrimaryKey,
        Some(name) => match meta.field(name) {
            Some(f) if f.unique => ConflictKey::Unique(f),
            Some(f) => {
                let uniques: Vec<&str> = meta.unique_fields().map(|f| f.name).collect();
                return Err(Error::invalid(
                    meta.name,
                    "conflict_key",
                    format!(
                        "'{}' is not unique; use '{}' or one of: {}",
                        f.name,
                        meta.primary_key,
                        uniques.join(", ")
                    ),
                ));
            }
            None => {
                return Err(Error::invalid(
                    meta.name,
                    "conflict_key",
                    crate::model::values::unknown_field_message(meta, name),
                ));
            }
        },
    })
}

/// Checks every row; returns the valid ones with their input index, and reports the others
/// in `errors`: a row that breaks the model's rules, and a row that repeats the conflict key
/// or a unique value of an earlier row (the database could not write both). Each row's own
/// check (the model's rules) runs in parallel from [`CHECK_IN_PARALLEL_FROM`] rows on; the
/// repeats are found in one pass after, in input order.
fn check_rows(meta: &'static ModelMeta, key: &ConflictKey, rows: &[Json], errors: &mut Vec<RowError>) -> Vec<(usize, CheckedRecord)> {
    use rayon::prelude::*;
    let key_name = key.field_name(meta);
    let distinct: Vec<&str> = std::iter::once(key_name)
        .chain(meta.unique_fields().map(|f| f.name).filter(|&n| n != key_name))
        .collect();
    let checked: Vec<_> = if rows.len() >= CHECK_IN_PARALLEL_FROM {
        rows.par_iter().map(|row| check_row(meta, key, row)).collect()
    } else {
        rows.iter().map(|row| check_row(meta, key, row)).collect()
    };
    let mut seen: Vec<HashMap<String, usize>> = vec![HashMap::new(); distinct.len()];
    let mut valid: Vec<(usize, CheckedRecord)> = Vec::with_capacity(rows.len());
    for (index, checked) in checked.into_iter().enumerate() {
        let checked = match checked {
            Ok(checked) => checked,
            Err(row_errors) => {
                errors.push(RowError { index, errors: row_errors });
                continue;
            }
        };
        let mut row_errors = FieldErrors::default();
        for (name, seen) in distinct.iter().zip(&seen) {
            if let Some(value) = checked.get(name).filter(|v| !v.is_null())
                && let Some(first) = seen.get(&value.to_string())
            {
                row_errors.push(*name, format!("the same {name} as row {first}"));
            }
        }
        if !row_errors.is_empty() {
            errors.push(RowError { index, errors: row_errors });
            continue;
        }
        for (name, seen) in distinct.iter().zip(&mut seen) {
            if let Some(value) = checked.get(name).filter(|v| !v.is_null()) {
                seen.insert(value.to_string(), index);
            }
        }
        valid.push((index, checked));
    }
    valid
}

/// Of `rows`, those whose foreign keys all name a visible row, checked in the write's
/// transaction; the others are reported in `errors` like any invalid row.
async fn with_known_references(
    ctx: &Context,
    tx: &DatabaseTransaction,
    meta: &'static ModelMeta,
    rows: Vec<(usize, CheckedRecord)>,
    errors: &mut Vec<RowError>,
) -> Result<Vec<(usize, CheckedRecord)>> {
    let batch_ids: Vec<i64> = rows
        .iter()
        .filter_map(|(_, r)| r.get(meta.primary_key).and_then(Json::as_i64))
        .collect();
    let records: Vec<&CheckedRecord> = rows.iter().map(|(_, r)| r).collect();
    let unknown = super::unknown_references(ctx, tx, meta, &records, &batch_ids, false).await?;
    Ok(keep_clean(rows, unknown, errors))
}

/// The rows whose errors are empty; the others go to `errors`.
fn keep_clean(rows: Vec<(usize, CheckedRecord)>, row_errors: Vec<FieldErrors>, errors: &mut Vec<RowError>) -> Vec<(usize, CheckedRecord)> {
    let mut kept = Vec::with_capacity(rows.len());
    for ((index, record), row_errors) in rows.into_iter().zip(row_errors) {
        if row_errors.is_empty() {
            kept.push((index, record));
        } else {
            errors.push(RowError { index, errors: row_errors });
        }
    }
    kept
}

/// Most values bound in one statement of [`unique_collisions`] (SQLite's limit is 32,766).
const VALUES_PER_LOOKUP: usize = 10_000;

/// For each of `rows`, its unique values (other than the conflict key's) that a stored row
/// other than the one it writes already holds, deleted rows included: the unique index would
/// refuse them. One query per unique field and 10,000 values.
async fn unique_collisions(
    tx: &DatabaseTransaction,
    sql: Sql,
    meta: &'static ModelMeta,
    tenant: Option<&str>,
    key: &ConflictKey,
    rows: &[(usize, CheckedRecord)],
    action: &str,
) -> Result<Vec<FieldErrors>> {
    let mut errors = vec![FieldErrors::default(); rows.len()];
    let key_name = key.field_name(meta);
    let key_field = meta.field(key_name).expect("the conflict key is a field of the model");
    for field in meta.unique_fields().filter(|f| f.name != key_name) {
        let values: Vec<&Json> = rows
            .iter()
            .filter_map(|(_, r)| r.get(field.name))
            .filter(|v| !v.is_null())
            .collect();
        // The holder of each taken value, and its conflict-key value.
        let mut holders: HashMap<String, (Holder, String)> = HashMap::new();
        for part in values.chunks(VALUES_PER_LOOKUP) {
            let statement = rows::holders_of_unique_values(Sql::new(sql.backend()), meta, tenant, field, key_field, part);
            let found = tx.query_all_raw(statement).await.map_err(|e| Error::relational(action, e))?;
            for row in found {
                let holder = (|| -> std::result::Result<_, sea_orm::DbErr> {
                    let owner = Holder {
                        id: row.try_get("", "owner")?,
                        deleted: meta.soft_delete && row.try_get("", "deleted")?,
                    };
                    let owner_key = column_json(&row, "owner_key", key_field.ty)?;
                    Ok((column_json(&row, "value", field.ty)?.to_string(), (owner, owner_key.to_string())))
                })()
                .map_err(|e| Error::relational(action, e))?;
                holders.insert(holder.0, holder.1);
            }
        }
        for ((_, record), row_errors) in rows.iter().zip(&mut errors) {
            let Some(value) = record.get(field.name).filter(|v| !v.is_null()) else {
                continue;
            };
            let Some((owner, owner_key)) = holders.get(&value.to_string()) else {
                continue;
            };
            // A row may keep its own value: the holder is the row it writes.
            let own_key = record.get(key_name).map(Json::to_string).unwrap_or_default();
            if *owner_key != own_key {
                row_errors.0.push(super::value_taken(meta, field, value, Some(*owner)));
            }
        }
    }
    Ok(errors)
}

/// Writes the valid rows in batches inside one transaction, then projects them. Each batch
/// is checked (foreign keys, unique values) inside the transaction and written under a
/// savepoint: when the write collides with a unique value, the batch is rolled back to it,
/// checked, and written again.
async fn write_rows(
    ctx: &Context,
    meta: &'static ModelMeta,
    tenant: Option<&str>,
    key: &ConflictKey,
    batch: usize,
    mut valid: Vec<(usize, CheckedRecord)>,
    out: &mut BulkUpsertOutput,
) -> Result<()> {
    let store = ctx.stores().relational();
    let action = format!("bulk upserting into {}", meta.table);
    let tx = store.begin().await.map_err(|e| Error::relational(&action, e))?;
    let mut states: Vec<RowState> = Vec::with_capacity(valid.len());
    let mut set = ProjectionSet::for_model(ctx.stores().handles(), meta);
    // The cache needs only whether a row is present: its fields are copied for the vector and
    // graph projections alone (a copy of every row's fields took 10 ms of a 10,000-row call).
    let needs_fields = set.vector || set.graph;
    let mut explicit_ids = false;
    // Foreign keys first, for all rows at once (a row may name a parent in a later batch).
    valid = with_known_references(ctx, &tx, meta, valid, &mut out.errors).await?;
    if let ConflictKey::PrimaryKey = key {
        explicit_ids = valid.iter().any(|(_, r)| r.get(meta.primary_key).is_some());
        assign_ids(&tx, store, meta, &mut valid, &action).await?;
    }
    let mut rest = valid.into_iter().peekable();
    while rest.peek().is_some() {
        let mut chunk: Vec<(usize, CheckedRecord)> = rest.by_ref().take(batch).collect();
        let mut attempts = 0;
        let returned = loop {
            attempts += 1;
            // The first attempt writes without looking for taken unique values first: the
            // table's unique constraints find them, and a violation rolls the batch back to
            // its savepoint and has every later attempt check (a lookup of 10,000 values cost
            // about 12 ms of a 10,000-row call that collides with nothing, the usual case).
            if attempts > 1 {
                let collisions = unique_collisions(&tx, store.sql(), meta, tenant, key, &chunk, &action).await?;
                chunk = keep_clean(chunk, collisions, &mut out.errors);
                if chunk.is_empty() {
                    break Vec::new();
                }
            }
            let savepoint = tx.begin().await.map_err(|e| Error::relational(&action, e))?;
            // Ids the sequence gave need no conflict clause; a retry keeps it all the same.
            let new_ids = attempts == 1 && matches!(key, ConflictKey::PrimaryKey) && !explicit_ids;
            match write_batch(&savepoint, store.sql(), meta, tenant, key, &chunk, new_ids).await {
                Ok(returned) => {
                    savepoint.commit().await.map_err(|e| Error::relational(&action, e))?;
                    break returned;
                }
                Err(e) if attempts < 4 && violation::is_unique_violation(&e) => {
                    savepoint.rollback().await.map_err(|e| Error::relational(&action, e))?;
                }
                Err(e) => return Err(Error::relational(&action, e)),
            }
        };
        // Map written rows back to their input index by their conflict key.
        let mut by_key: HashMap<String, usize> = HashMap::with_capacity(chunk.len());
        for (position, (_, record)) in chunk.iter().enumerate() {
            by_key.insert(record.get(key.field_name(meta)).map(Json::to_string).unwrap_or_default(), position);
        }
        for (id, version, k) in returned {
            let Some(position) = by_key.remove(&k) else { continue };
            let (index, record) = &chunk[position];
            out.ids[*index] = Some(id);
            if version == 1 {
                out.inserted += 1;
            } else {
                out.updated += 1;
            }
            let mut fields = Map::new();
            if needs_fields {
                fields = record.values.iter().map(|(f, v)| (f.name.to_owned(), v.clone())).collect();
                fields.insert(meta.primary_key.to_owned(), Json::from(id));
            }
            states.push(RowState {
                id,
                tenant: tenant.map(str::to_owned),
                version,
                fields: Some(fields),
            });
        }
        // Rows the statement skipped: with the primary key as conflict key and a tenant, an
        // id that exists under another tenant is not touched.
        for (_, position) in by_key {
            let mut errors = FieldErrors::default();
            errors.push(meta.primary_key, "a row with this id exists and belongs to another tenant");
            out.errors.push(RowError {
                index: chunk[position].0,
                errors,
            });
        }
    }
    if explicit_ids {
        store.advance_ids_past_explicit(&tx, meta, &action).await?;
    }
    out.errors.sort_by_key(|e| e.index);
    let tx = match effect::record(ctx, tx, &*out).await? {
        Recorded::Commit(tx) => tx,
        Recorded::Done(first) => {
            *out = first;
            return Ok(());
        }
    };
    // Rows that were only inserted, under ids the sequence gave them, have never been cached:
    // there is nothing to invalidate (Create leaves the cache out for the same reason).
    if !explicit_ids && states.iter().all(|s| s.version == 1) {
        set.cache = false;
    }
    out.pending = commit_and_project(ctx, tx, meta, tenant, states, set, &action).await?;
    Ok(())
}

fn check_row(meta: &'static ModelMeta, key: &ConflictKey, row: &Json) -> std::result::Result<CheckedRecord, FieldErrors> {
    let Json::Object(object) = row else {
        let mut errors = FieldErrors::default();
        errors.push("$", "a row must be a JSON object");
        return Err(errors);
    };
    match key {
        ConflictKey::PrimaryKey => check_record(meta, object, RecordMode::CreateWithKey),
        ConflictKey::Unique(f) => {
            let mut checked = check_record(meta, object, RecordMode::Create);
            if object.get(meta.primary_key).is_some_and(|v| !v.is_null()) {
                let errors = checked.as_mut().err().map(std::mem::take).unwrap_or_default();
                let mut errors = errors;
                errors.push(
                    meta.primary_key,
                    format!("rows upserted on '{}' must not carry the primary key", printable(f.name)),
                );
                checked = Err(errors);
            }
            checked
        }
    }
}

/// Gives every row without a primary key the next free id (see
/// [`crate::store::RelationalStore::next_ids`]).
async fn assign_ids(
    tx: &DatabaseTransaction,
    store: &crate::store::RelationalStore,
    meta: &'static ModelMeta,
    rows: &mut [(usize, CheckedRecord)],
    action: &str,
) -> Result<()> {
    let pk = meta.field(meta.primary_key).expect("the derive checks the primary key exists");
    let missing = rows.iter().filter(|(_, r)| r.get(pk.name).is_none()).count();
    if missing == 0 {
        return Ok(());
    }
    // Ids given explicitly in this call must not be handed out again.
    let explicit = rows.iter().filter_map(|(_, r)| r.get(pk.name).and_then(Json::as_i64)).max();
    let ids = store.next_ids(tx, meta, missing, explicit, action).await?;
    for ((_, record), id) in rows.iter_mut().filter(|(_, r)| r.get(pk.name).is_none()).zip(ids) {
        record.values.insert(0, (pk, Json::from(id)));
    }
    Ok(())
}

/// Writes one batch; returns `(id, version, conflict-key value as JSON text)` per written row.
/// `new_ids`: every row's id was just given by the sequence (see [`write::upsert_rows`]).
async fn write_batch(
    tx: &DatabaseTransaction,
    sql: Sql,
    meta: &'static ModelMeta,
    tenant: Option<&str>,
    key: &ConflictKey,
    chunk: &[(usize, CheckedRecord)],
    new_ids: bool,
) -> std::result::Result<Vec<(i64, i64, String)>, sea_orm::DbErr> {
    let unique = match key {
        ConflictKey::PrimaryKey => None,
        ConflictKey::Unique(f) => Some(*f),
    };
    let records: Vec<&CheckedRecord> = chunk.iter().map(|(_, r)| r).collect();
    let statement = write::upsert_rows(sql, meta, tenant, unique, &records, new_ids);
    if new_ids {
        // A plain INSERT returns no rows (decoding 10,000 of them by name cost more than the
        // transfer): every row is written at version 1 under the id it carries.
        let written = tx.execute_raw(statement).await?.rows_affected();
        if written != records.len() as u64 {
            return Err(sea_orm::DbErr::Custom(format!(
                "{written} rows inserted of {} (a plain INSERT writes all of them or fails)",
                records.len()
            )));
        }
        return records
            .iter()
            .map(|r| {
                let id = r.get(meta.primary_key).and_then(Json::as_i64);
                let id = id.ok_or_else(|| sea_orm::DbErr::Custom("a row without the id it was given".into()))?;
                Ok((id, 1, Json::from(id).to_string()))
            })
            .collect();
    }
    let rows = tx.query_all_raw(statement).await?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get("", meta.primary_key)?;
            let version: i64 = r.try_get("", "version")?;
            let k = match key {
                ConflictKey::PrimaryKey => Json::from(id).to_string(),
                ConflictKey::Unique(f) => column_json(r, "conflict_key", f.ty)?.to_string(),
            };
            Ok((id, version, k))
        })
        .collect()
}
