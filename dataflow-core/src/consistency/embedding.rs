//! Which embedder made each vector collection, and moving a collection to another one.
//!
//! Vectors of two embedders cannot be compared: a query embedded by one finds nonsense among
//! vectors of the other, even at the same dimension. So every collection has a record of the
//! embedder (name and dimension) its vectors come from, and a collection is searched and
//! written only by a process whose embedder is that one; any other gets an
//! [`Error::Embedding`] that names both and the way out (`dataflow reembed`).
//!
//! The records are kept in the relational store (table `dataflow_vector_embedders`, keyed by
//! the collection's stored name, prefix included), beside the outbox: one place for Chroma
//! and the embedded vector store, read by every process that shares the collections. A
//! collection gets its record at its first search or write: this process's embedder when the
//! collection is empty, else the hashing embedder (the only one before records were kept).
//! A process reads a record again at most once a second, so a re-embedding started elsewhere
//! stops its searches and writes within a second.
//!
//! `reembed` ([`crate::Stores::reembed`]) re-embeds a model's rows from the relational store with this process's
//! embedder: it records the new embedder with a cursor (searches are refused meanwhile, and
//! only processes with the new embedder write), empties the collection, then embeds the rows
//! page by page in primary-key order, moving the cursor after each page. Stopped, it is
//! resumed from the cursor by the next `reembed` with the same embedder; the rows themselves
//! are never touched, so nothing is lost. A write that a process with the old embedder made
//! meanwhile keeps its projection pending in the outbox, for `sync` by a process with the new
//! one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Value as SqlValue};

use crate::consistency::projection;
use crate::error::{Error, Result};
use crate::model::ModelMeta;
use crate::model::embed::{Embedder, HashingEmbedder};
use crate::store::{RelationalStore, StoreHandles, VectorStore};

const TABLE: &str = "dataflow_vector_embedders";

/// How long a process trusts a record it read.
const RECORD_TTL: Duration = Duration::from_secs(1);

/// The embedder recorded for a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorRecord {
    /// The embedder's name ([`crate::Embedder::name`]).
    pub embedder: String,
    /// Its vectors' length.
    pub dimension: usize,
    /// While a re-embedding is under way: the greatest primary key re-embedded so far (0
    /// before the first page).
    pub reembedding_after: Option<i64>,
}

impl VectorRecord {
    /// The record of `embedder`'s vectors, with a re-embedding's cursor when one is under way.
    fn of(embedder: &dyn Embedder, reembedding_after: Option<i64>) -> VectorRecord {
        VectorRecord {
            embedder: embedder.name().to_owned(),
            dimension: embedder.dimension(),
            reembedding_after,
        }
    }
}

/// What a caller is about to do with a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    Search,
    Write,
}

/// The records this process read, each with when.
#[derive(Default)]
pub(crate) struct RecordCache {
    records: Mutex<HashMap<String, (Instant, VectorRecord)>>,
}

impl RecordCache {
    /// The record of `collection` read less than [`RECORD_TTL`] ago.
    fn fresh(&self, collection: &str) -> Option<VectorRecord> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .get(collection)
            .filter(|(read_at, _)| read_at.elapsed() < RECORD_TTL)
            .map(|(_, record)| record.clone())
    }

    /// Keeps `record` of `collection`, read now.
    fn keep(&self, collection: &str, record: &VectorRecord) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.insert(collection.to_owned(), (Instant::now(), record.clone()));
    }

    /// Forgets the record of `collection`, so that the next check reads it again.
    fn forget(&self, collection: &str) {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).remove(collection);
    }
}

/// Creates the records' table when missing.
pub(crate) async fn create_table(store: &RelationalStore) -> Result<()> {
    let mut table = store.sql();
    table.push("CREATE TABLE IF NOT EXISTS ").ident(TABLE).push(
        " (\"collection\" TEXT PRIMARY KEY, \"embedder\" TEXT NOT NULL, \"dimension\" BIGINT NOT NULL, \"reembedding_after\" BIGINT NULL)",
    );
    store.execute(table.build(), "creating the vector embedders table").await
}

/// The record of `collection` (its stored name), as stored now.
async fn read(store: &RelationalStore, collection: &str) -> Result<Option<VectorRecord>> {
    let action = format!("reading the embedder recorded for the vector collection {collection}");
    let mut sql = store.sql();
    sql.push("SELECT \"embedder\", \"dimension\", \"reembedding_after\" FROM ")
        .ident(TABLE)
        .push(" WHERE \"collection\" = ")
        .param(SqlValue::from(collection));
    let Some(row) = store.query_one(sql.build(), &action).await? else {
        return Ok(None);
    };
    let decode = || -> std::result::Result<VectorRecord, sea_orm::DbErr> {
        Ok(VectorRecord {
            embedder: row.try_get("", "embedder")?,
            dimension: row.try_get::<i64>("", "dimension")?.max(0) as usize,
            reembedding_after: row.try_get("", "reembedding_after")?,
        })
    };
    decode().map(Some).map_err(|e| Error::relational(&action, e))
}

/// Records `record` for `collection`: inserted when `replace` is false and none is there yet
/// (the first process wins), else written over.
async fn write(store: &RelationalStore, collection: &str, record: &VectorRecord, replace: bool) -> Result<()> {
    let mut sql = store.sql();
    sql.push("INSERT INTO ")
        .ident(TABLE)
        .push(" (\"collection\", \"embedder\", \"dimension\", \"reembedding_after\") VALUES (")
        .param(SqlValue::from(collection))
        .push(", ")
        .param(SqlValue::from(record.embedder.as_str()))
        .push(", ")
        .param(SqlValue::from(record.dimension as i64))
        .push(", ")
        .param(SqlValue::BigInt(record.reembedding_after))
        .push(") ON CONFLICT (\"collection\") DO ");
    if replace {
        sql.push("UPDATE SET \"embedder\" = EXCLUDED.\"embedder\", \"dimension\" = EXCLUDED.\"dimension\", \"reembedding_after\" = EXCLUDED.\"reembedding_after\"");
    } else {
        sql.push("NOTHING");
    }
    store
        .execute(
            sql.build(),
            &format!("recording the embedder of the vector collection {collection}"),
        )
        .await
}

/// Checks that this process may `purpose` the collection of `meta` in `vectors`: its record
/// names this process's embedder (recorded now when the collection has none) and, for a
/// search, no re-embedding is under way.
pub(crate) async fn check(stores: &StoreHandles, vectors: &dyn VectorStore, meta: &'static ModelMeta, purpose: Use) -> Result<()> {
    let collection = vectors.stored_name(meta.table);
    let record = match stores.vector_records().fresh(&collection) {
        Some(record) => record,
        None => {
            let store = stores.relational();
            let record = match read(store, &collection).await? {
                Some(record) => record,
                None => {
                    // The collection's first use since records are kept: vectors already there
                    // were made by the hashing embedder, the only one before.
                    let embedder = stores.embedder();
                    let first = if vectors.count(meta.table).await? > 0 {
                        VectorRecord::of(&HashingEmbedder::default(), None)
                    } else {
                        VectorRecord::of(embedder, None)
                    };
                    write(store, &collection, &first, false).await?;
                    read(store, &collection).await?.unwrap_or(first)
                }
            };
            stores.vector_records().keep(&collection, &record);
            record
        }
    };
    let embedder = stores.embedder();
    if record.embedder != embedder.name() || record.dimension != embedder.dimension() {
        return Err(Error::Embedding {
            embedder: embedder.name().to_owned(),
            message: format!(
                "the vector collection {collection} ({}) holds vectors of the embedder {} ({} dimensions), not of this one ({} dimensions): \
                 {} it would compare vectors that mean nothing to each other. Set the embedder back to {}, or run `dataflow reembed {}` \
                 to re-embed its rows with {}",
                meta.name,
                record.embedder,
                record.dimension,
                embedder.dimension(),
                match purpose {
                    Use::Search => "searching",
                    Use::Write => "writing",
                },
                record.embedder,
                meta.name,
                embedder.name()
            ),
        });
    }
    if purpose == Use::Search
        && let Some(after) = record.reembedding_after
    {
        return Err(Error::Embedding {
            embedder: embedder.name().to_owned(),
            message: format!(
                "the vector collection {collection} ({}) is being re-embedded (rows up to id {after} done): run `dataflow reembed {}` to finish",
                meta.name, meta.name
            ),
        });
    }
    Ok(())
}

/// How far a re-embedding has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReembedProgress {
    /// Rows re-embedded so far, those of an earlier, stopped run included.
    pub done: u64,
    /// Rows of the model (all tenants).
    pub total: u64,
}

/// What a re-embedding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReembedReport {
    /// The collection's stored name.
    pub collection: String,
    /// The embedder the collection held before (`None`: no record).
    pub from: Option<String>,
    /// The embedder it holds now.
    pub to: String,
    /// Rows embedded by this run.
    pub embedded: u64,
    /// Whether this run went on from where a stopped one had come.
    pub resumed: bool,
}

/// Re-embeds every row of `meta` with this process's embedder, `page` rows at a time; see
/// the module documentation.
pub(crate) async fn reembed(
    stores: &StoreHandles,
    meta: &'static ModelMeta,
    page: usize,
    mut progress: impl FnMut(ReembedProgress),
) -> Result<ReembedReport> {
    if !meta.has_embed_fields() {
        return Err(Error::invalid(
            meta.name,
            "model",
            "has no embed fields, so it has no vector collection to re-embed",
        ));
    }
    let vectors = stores.require_vector(meta.name)?;
    let store = stores.relational();
    let collection = vectors.stored_name(meta.table);
    let embedder = stores.embedder();
    let before = read(store, &collection).await?;
    let resumed_after = before
        .as_ref()
        .filter(|r| r.embedder == embedder.name() && r.dimension == embedder.dimension())
        .and_then(|r| r.reembedding_after);
    let mut after = match resumed_after {
        Some(after) if after > 0 => after,
        _ => {
            // Searches stop and processes with another embedder stop writing before the
            // collection is emptied.
            write(store, &collection, &VectorRecord::of(embedder, Some(0)), true).await?;
            vectors.drop_collection(meta.table).await?;
            0
        }
    };
    stores.vector_records().forget(&collection);
    let total = count_rows(store, meta, None).await?;
    let mut done = count_rows(store, meta, Some(after)).await?;
    progress(ReembedProgress { done, total });
    let mut embedded = 0u64;
    loop {
        let ids = ids_after(store, meta, after, page.max(1)).await?;
        let Some(&last) = ids.last() else { break };
        let rows = projection::read_states(stores, meta, &ids).await?;
        projection::apply_vector(stores, vectors, meta, &rows).await?;
        after = last;
        write(store, &collection, &VectorRecord::of(embedder, Some(after)), true).await?;
        embedded += ids.len() as u64;
        done += ids.len() as u64;
        // Rows inserted meanwhile can take `done` past the count taken at the start.
        progress(ReembedProgress {
            done,
            total: total.max(done),
        });
    }
    write(store, &collection, &VectorRecord::of(embedder, None), true).await?;
    stores.vector_records().forget(&collection);
    Ok(ReembedReport {
        collection,
        from: before.map(|r| r.embedder),
        to: embedder.name().to_owned(),
        embedded,
        resumed: resumed_after.is_some_and(|a| a > 0),
    })
}

/// The record of the collection of `meta`, as stored now (`None`: never searched nor written
/// since records are kept, or no vector store).
pub(crate) async fn record_of(stores: &StoreHandles, meta: &'static ModelMeta) -> Result<Option<VectorRecord>> {
    match stores.vector() {
        Some(vectors) => read(stores.relational(), &vectors.stored_name(meta.table)).await,
        None => Ok(None),
    }
}

/// Rows of `meta` (every tenant, soft-deleted ones included), with a primary key up to
/// `up_to` when given.
async fn count_rows(store: &RelationalStore, meta: &'static ModelMeta, up_to: Option<i64>) -> Result<u64> {
    let action = format!("counting the rows of {} to re-embed", meta.table);
    let mut sql = store.sql();
    sql.push("SELECT COUNT(*) AS n FROM ").ident(meta.table);
    if let Some(up_to) = up_to {
        sql.push(" WHERE ")
            .ident(meta.primary_key)
            .push(" <= ")
            .param(SqlValue::from(up_to));
    }
    let row = store.query_one(sql.build(), &action).await?;
    let n: i64 = match row {
        Some(row) => row.try_get("", "n").map_err(|e| Error::relational(&action, e))?,
        None => 0,
    };
    Ok(n.max(0) as u64)
}

/// The next `page` primary keys of `meta` after `after`, in order.
async fn ids_after(store: &RelationalStore, meta: &'static ModelMeta, after: i64, page: usize) -> Result<Vec<i64>> {
    let action = format!("reading the next rows of {} to re-embed", meta.table);
    let mut sql = store.sql();
    sql.push("SELECT ")
        .ident(meta.primary_key)
        .push(" AS id FROM ")
        .ident(meta.table)
        .push(" WHERE ")
        .ident(meta.primary_key)
        .push(" > ")
        .param(SqlValue::from(after))
        .push(" ORDER BY ")
        .ident(meta.primary_key)
        .push(" LIMIT ")
        .param(SqlValue::from(page as i64));
    let rows = store
        .connection()
        .query_all_raw(sql.build())
        .await
        .map_err(|e| Error::relational(&action, e))?;
    rows.iter()
        .map(|row| row.try_get::<i64>("", "id").map_err(|e| Error::relational(&action, e)))
        .collect()
}
