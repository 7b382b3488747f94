//! The embedded vector store: documents in an SQLite file (usually the embedded relational
//! store's own), searched exactly by cosine distance over an in-memory copy of each
//! collection.
//!
//! # The in-memory copy
//!
//! A collection is loaded on its first query: its vectors, normalised, in one contiguous
//! array, and their metadata. A search scores every admitted vector (a dot product, split
//! over the machine's cores) and keeps the `top_k` nearest: exact, no index to tune.
//!
//! Every write bumps the collection's *generation* in SQLite in the same transaction as the
//! documents. A write through this store applies itself to the copy when the copy was at the
//! generation just before; a query first reads the stored generation (one indexed lookup)
//! and reloads the copy when another process (or a write that raced) moved it on. So the
//! copy never answers with data older than what SQLite held when the query began.
//!
//! The cost beyond the search: the copy's memory (4 bytes per dimension per document plus
//! its metadata) and the load on the first query after another process wrote; the figures
//! are in `benches/README.md`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use sea_orm::{DatabaseConnection, QueryResult, TransactionTrait, Value as SqlValue};
use serde_json::{Map, Value as Json};

use super::{MetaFilter, VectorDoc, VectorHit, VectorStore};
use crate::error::{Error, Result, StoreKind};
use crate::store::sqlite::SqliteFile;

// The statements below spell these two names out, so that each reads as plain SQL.

/// The table of collections: `name` and the `generation` every write moves on.
pub const COLLECTIONS_TABLE: &str = "dataflow_vector_collections";
/// The table of documents: `collection`, `id`, `embedding` (little-endian `f32`s),
/// `document` and `metadata` (a JSON object).
pub const DOCUMENTS_TABLE: &str = "dataflow_vectors";

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS dataflow_vector_collections (name TEXT PRIMARY KEY NOT NULL, generation INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dataflow_vectors (collection TEXT NOT NULL, id TEXT NOT NULL, embedding BLOB NOT NULL, \
     document TEXT NOT NULL, metadata TEXT NOT NULL, UNIQUE (collection, id))",
];

/// Documents read per statement while a copy loads.
const LOAD_PAGE: usize = 4_096;

/// Fewest vectors one search thread scores; smaller collections are searched on one thread.
const ROWS_PER_THREAD: usize = 16_384;

/// Vectors in an SQLite file, searched from memory; collections are named `{prefix}{table}`.
pub struct EmbeddedVectors {
    file: SqliteFile,
    prefix: String,
    /// The in-memory copy of each collection used so far.
    copies: Mutex<HashMap<&'static str, Arc<Copy>>>,
}

/// One collection's in-memory copy, and the lock that lets one task at a time load it.
#[derive(Default)]
struct Copy {
    data: RwLock<Loaded>,
    loading: tokio::sync::Mutex<()>,
}

/// What a copy holds. `generation` is `None` until loaded (or after a write that could not be
/// applied to it).
#[derive(Default)]
struct Loaded {
    generation: Option<i64>,
    dimensions: usize,
    ids: Vec<String>,
    metadata: Vec<Map<String, Json>>,
    /// `ids.len() × dimensions` normalised components, row by row.
    vectors: Vec<f32>,
    position: HashMap<String, usize>,
}

impl EmbeddedVectors {
    /// The vector store kept in the SQLite database `db` (creating its tables when missing),
    /// whose collections are named `{prefix}{table}` (the prefix as for Chroma).
    pub async fn open(db: DatabaseConnection, prefix: &str) -> Result<Self> {
        super::check_prefix(prefix)?;
        let file = SqliteFile::new(db, StoreKind::Vector)?;
        for statement in SCHEMA {
            file.execute(file.pool(), "creating the vector tables", statement, vec![]).await?;
        }
        Ok(EmbeddedVectors {
            file,
            prefix: prefix.to_owned(),
            copies: Mutex::new(HashMap::new()),
        })
    }

    /// The stored name of a logical collection.
    fn name(&self, collection: &str) -> String {
        format!("{}{}", self.prefix, collection)
    }

    fn copy(&self, collection: &'static str) -> Arc<Copy> {
        self.copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(collection)
            .or_default()
            .clone()
    }

    /// The collection's stored generation; `None` when it was never written.
    async fn generation<C: sea_orm::ConnectionTrait>(&self, conn: &C, collection: &str, action: &str) -> Result<Option<i64>> {
        let rows = self
            .file
            .query(
                conn,
                action,
                "SELECT generation FROM dataflow_vector_collections WHERE name = ?1",
                vec![self.name(collection).into()],
            )
            .await?;
        rows.first()
            .map(|r| r.try_get("", "generation").map_err(|e| self.file.error(action, e)))
            .transpose()
    }

    /// Moves the collection's generation on inside `txn`, creating the collection; returns
    /// the new generation.
    async fn bump<C: sea_orm::ConnectionTrait>(&self, txn: &C, collection: &str, action: &str) -> Result<i64> {
        self.file
            .execute(
                txn,
                action,
                "INSERT INTO dataflow_vector_collections (name, generation) VALUES (?1, 1) \
                 ON CONFLICT (name) DO UPDATE SET generation = generation + 1",
                vec![self.name(collection).into()],
            )
            .await?;
        self.generation(txn, collection, action)
            .await?
            .ok_or_else(|| self.file.error(action, "the collection's generation was not written".to_owned()))
    }

    /// The copy of `collection`, current as of now; `None` when the collection was never
    /// written.
    async fn current(&self, collection: &'static str, action: &str) -> Result<Option<Arc<Copy>>> {
        let Some(stored) = self.generation(self.file.pool(), collection, action).await? else {
            return Ok(None);
        };
        let copy = self.copy(collection);
        if copy.data.read().unwrap_or_else(|e| e.into_inner()).generation >= Some(stored) {
            return Ok(Some(copy));
        }
        self.reload(&copy, collection, stored, action).await?;
        Ok(Some(copy))
    }

    /// Loads the copy from SQLite unless another task brought it to `stored` meanwhile.
    async fn reload(&self, copy: &Arc<Copy>, collection: &'static str, stored: i64, action: &str) -> Result<()> {
        let _loading = copy.loading.lock().await;
        if copy.data.read().unwrap_or_else(|e| e.into_inner()).generation >= Some(stored) {
            return Ok(());
        }
        // One read transaction: the documents and the generation they belong to. Pages of
        // LOAD_PAGE rows go straight into a new copy, so the load never holds more than one
        // page besides the copy itself.
        let txn = self.file.pool().begin().await.map_err(|e| self.file.error(action, e))?;
        let generation = self.generation(&txn, collection, action).await?.unwrap_or(0);
        let mut fresh = Loaded::default();
        let mut after = 0i64;
        loop {
            let rows = self
                .file
                .query(
                    &txn,
                    action,
                    "SELECT rowid AS position, id, embedding, metadata FROM dataflow_vectors \
                     WHERE collection = ?1 AND rowid > ?2 ORDER BY rowid LIMIT ?3",
                    vec![self.name(collection).into(), after.into(), (LOAD_PAGE as i64).into()],
                )
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("", "position").map_err(|e| self.file.error(action, e))?;
            let mut page = Vec::with_capacity(rows.len());
            for row in &rows {
                page.push(self.decode(row, action, false)?);
            }
            let full = rows.len() == LOAD_PAGE;
            drop(rows);
            fresh.apply_upserts(page);
            if !full {
                break;
            }
        }
        txn.commit().await.map_err(|e| self.file.error(action, e))?;
        fresh.generation = Some(generation);
        let target = copy.clone();
        tokio::task::spawn_blocking(move || {
            let mut data = target.data.write().unwrap_or_else(|e| e.into_inner());
            if data.generation < Some(generation) {
                *data = fresh;
            } // else a write of this process got there first
        })
        .await
        .map_err(|e| self.file.error(action, format!("loading the collection: {e}")))?;
        Ok(())
    }

    /// A stored document; the document text only when `with_document`.
    fn decode(&self, row: &QueryResult, action: &str, with_document: bool) -> Result<VectorDoc> {
        let id: String = row.try_get("", "id").map_err(|e| self.file.error(action, e))?;
        let blob: Vec<u8> = row.try_get("", "embedding").map_err(|e| self.file.error(action, e))?;
        let metadata: String = row.try_get("", "metadata").map_err(|e| self.file.error(action, e))?;
        let metadata =
            serde_json::from_str(&metadata).map_err(|e| self.file.error(action, format!("document {id} has unreadable metadata: {e}")))?;
        let document = if with_document {
            row.try_get("", "document").map_err(|e| self.file.error(action, e))?
        } else {
            String::new()
        };
        Ok(VectorDoc {
            id,
            embedding: blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            document,
            metadata,
        })
    }

    /// The dimension of the collection's stored vectors, if it holds any.
    async fn stored_dimensions<C: sea_orm::ConnectionTrait>(&self, conn: &C, collection: &str, action: &str) -> Result<Option<usize>> {
        let rows = self
            .file
            .query(
                conn,
                action,
                "SELECT length(embedding) AS bytes FROM dataflow_vectors WHERE collection = ?1 LIMIT 1",
                vec![self.name(collection).into()],
            )
            .await?;
        rows.first()
            .map(|r| {
                r.try_get::<i64>("", "bytes")
                    .map(|b| b as usize / 4)
                    .map_err(|e| self.file.error(action, e))
            })
            .transpose()
    }

    /// After a write committed at `generation`: applies it to the copy when the copy was
    /// one generation behind. Otherwise (a write whose change is not here yet, or a reload
    /// that already holds this one) the copy is left as it is: its generation says which
    /// writes it holds, and the next query reloads it when it is behind. It is never emptied
    /// here, because a query that already checked the generation may be about to read it.
    async fn follow(&self, collection: &'static str, generation: i64, change: Change) {
        let copy = self.copy(collection);
        let applied = tokio::task::spawn_blocking(move || {
            let mut data = copy.data.write().unwrap_or_else(|e| e.into_inner());
            if data.generation == Some(generation - 1) {
                match change {
                    Change::Upsert(docs) => data.apply_upserts(docs),
                    Change::Delete(ids) => data.apply_deletes(&ids),
                    Change::Clear => *data = Loaded::default(),
                }
                data.generation = Some(generation);
            }
        })
        .await;
        if let Err(e) = applied {
            tracing::warn!(error = %e, collection, "updating the in-memory vectors failed; the next query reloads them");
            self.copies.lock().unwrap_or_else(|e| e.into_inner()).remove(collection);
        }
    }
}

/// A committed write, to apply to the in-memory copy.
enum Change {
    Upsert(Vec<VectorDoc>),
    Delete(Vec<String>),
    Clear,
}

impl Loaded {
    fn apply_upserts(&mut self, docs: Vec<VectorDoc>) {
        for doc in docs {
            if self.ids.is_empty() {
                self.dimensions = doc.embedding.len();
            }
            let unit = normalised(&doc.embedding);
            match self.position.get(&doc.id) {
                Some(&i) => {
                    self.vectors[i * self.dimensions..(i + 1) * self.dimensions].copy_from_slice(&unit);
                    self.metadata[i] = doc.metadata;
                }
                None => {
                    self.position.insert(doc.id.clone(), self.ids.len());
                    self.ids.push(doc.id);
                    self.metadata.push(doc.metadata);
                    self.vectors.extend_from_slice(&unit);
                }
            }
        }
    }

    fn apply_deletes(&mut self, ids: &[String]) {
        let d = self.dimensions;
        for id in ids {
            let Some(i) = self.position.remove(id) else { continue };
            let last = self.ids.len() - 1;
            if i != last {
                self.vectors.copy_within(last * d..(last + 1) * d, i * d);
                self.ids.swap(i, last);
                self.metadata.swap(i, last);
                self.position.insert(self.ids[i].clone(), i);
            }
            self.vectors.truncate(last * d);
            self.ids.pop();
            self.metadata.pop();
        }
    }

    /// The `top_k` nearest documents `filter` admits: cosine distance, nearest first, ties
    /// by id.
    fn search(&self, query: &[f32], top_k: usize, filter: Option<&MetaFilter>) -> Vec<VectorHit> {
        let d = self.dimensions;
        let n = self.ids.len();
        if n == 0 || d == 0 {
            return Vec::new();
        }
        let query = normalised(query);
        let mut scores = vec![0f32; n];
        let threads = std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(1)
            .min(n.div_ceil(ROWS_PER_THREAD))
            .max(1);
        let rows_per_thread = n.div_ceil(threads);
        let score_rows = |first: usize, out: &mut [f32]| {
            for (k, score) in out.iter_mut().enumerate() {
                let i = first + k;
                *score = dot(&query, &self.vectors[i * d..(i + 1) * d]);
            }
        };
        if threads == 1 {
            score_rows(0, &mut scores);
        } else {
            std::thread::scope(|s| {
                for (t, out) in scores.chunks_mut(rows_per_thread).enumerate() {
                    let score_rows = &score_rows;
                    s.spawn(move || score_rows(t * rows_per_thread, out));
                }
            });
        }
        let nearer = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then_with(|| self.ids[*a].cmp(&self.ids[*b]));
        let chosen: Vec<usize> = match filter {
            None => {
                let mut all: Vec<usize> = (0..n).collect();
                if all.len() > top_k {
                    all.select_nth_unstable_by(top_k - 1, nearer);
                    all.truncate(top_k);
                }
                all.sort_by(nearer);
                all
            }
            // The filter is evaluated nearest first, and only until `top_k` documents passed:
            // a filter admitting half the documents is checked about 2 × top_k times.
            Some(filter) => {
                let mut order = std::collections::BinaryHeap::from(
                    (0..n)
                        .map(|i| Nearest {
                            score: scores[i],
                            index: i,
                            ids: &self.ids,
                        })
                        .collect::<Vec<_>>(),
                );
                let mut chosen = Vec::with_capacity(top_k);
                while chosen.len() < top_k {
                    let Some(next) = order.pop() else { break };
                    if filter.matches(&self.metadata[next.index]) {
                        chosen.push(next.index);
                    }
                }
                chosen
            }
        };
        chosen
            .into_iter()
            .map(|i| VectorHit {
                id: self.ids[i].clone(),
                distance: 1.0 - scores[i],
                metadata: self.metadata[i].clone(),
            })
            .collect()
    }
}

/// A scored document in a max-heap: the highest score first, then the smallest id.
struct Nearest<'a> {
    score: f32,
    index: usize,
    ids: &'a [String],
}

impl Ord for Nearest<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| self.ids[other.index].cmp(&self.ids[self.index]))
    }
}

impl PartialOrd for Nearest<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Nearest<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Nearest<'_> {}

/// `v` scaled to length 1 (a zero vector stays zero: its distance to anything is 1).
fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

/// The dot product, in sixteen independent sums so the compiler can use vector instructions.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[async_trait]
impl VectorStore for EmbeddedVectors {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn upsert(&self, collection: &'static str, docs: Vec<VectorDoc>) -> Result<()> {
        let action = "upserting documents";
        let Some(first) = docs.first() else { return Ok(()) };
        let dimensions = first.embedding.len();
        if let Some(doc) = docs.iter().find(|d| d.embedding.len() != dimensions) {
            return Err(Error::Store {
                store: StoreKind::Vector,
                action: action.into(),
                message: format!(
                    "document {} has {} dimensions, document {} has {dimensions}",
                    doc.id,
                    doc.embedding.len(),
                    first.id
                ),
                transient: false,
                busy: false,
            });
        }
        let txn = self.file.begin(action).await?;
        if let Some(stored) = self.stored_dimensions(&txn, collection, action).await?
            && stored != dimensions
        {
            return Err(self.file.error(
                action,
                format!(
                    "collection {} holds {stored}-dimensional vectors, got {dimensions}",
                    self.name(collection)
                ),
            ));
        }
        let generation = self.bump(&txn, collection, action).await?;
        for doc in &docs {
            let metadata = Json::Object(doc.metadata.clone()).to_string();
            self.file
                .execute(
                    &txn,
                    action,
                    "INSERT INTO dataflow_vectors (collection, id, embedding, document, metadata) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (collection, id) DO UPDATE SET embedding = excluded.embedding, \
                     document = excluded.document, metadata = excluded.metadata",
                    vec![
                        self.name(collection).into(),
                        doc.id.clone().into(),
                        to_blob(&doc.embedding).into(),
                        doc.document.clone().into(),
                        metadata.into(),
                    ],
                )
                .await?;
        }
        self.file.commit(txn, action).await?;
        self.follow(collection, generation, Change::Upsert(docs)).await;
        Ok(())
    }

    async fn delete(&self, collection: &'static str, ids: &[String]) -> Result<()> {
        let action = "deleting documents";
        let txn = self.file.begin(action).await?;
        if self.generation(&txn, collection, action).await?.is_none() {
            return Ok(());
        }
        let generation = self.bump(&txn, collection, action).await?;
        for id in ids {
            self.file
                .execute(
                    &txn,
                    action,
                    "DELETE FROM dataflow_vectors WHERE collection = ?1 AND id = ?2",
                    vec![self.name(collection).into(), id.clone().into()],
                )
                .await?;
        }
        self.file.commit(txn, action).await?;
        self.follow(collection, generation, Change::Delete(ids.to_vec())).await;
        Ok(())
    }

    async fn query(&self, collection: &'static str, vector: &[f32], top_k: usize, filter: Option<&MetaFilter>) -> Result<Vec<VectorHit>> {
        let action = "querying";
        if filter == Some(&MetaFilter::Nothing) || top_k == 0 {
            return Ok(Vec::new());
        }
        let Some(copy) = self.current(collection, action).await? else {
            return Ok(Vec::new());
        };
        let top_k = top_k.min(super::MAX_QUERY_RESULTS);
        let (vector, filter) = (vector.to_vec(), filter.cloned());
        let name = self.name(collection);
        let found = tokio::task::spawn_blocking(move || {
            let data = copy.data.read().unwrap_or_else(|e| e.into_inner());
            if !data.ids.is_empty() && vector.len() != data.dimensions {
                return Err(format!(
                    "collection {name} holds {}-dimensional vectors, the query has {}",
                    data.dimensions,
                    vector.len()
                ));
            }
            Ok(data.search(&vector, top_k, filter.as_ref()))
        })
        .await
        .map_err(|e| self.file.error(action, format!("searching: {e}")))?;
        found.map_err(|message| self.file.error(action, message))
    }

    async fn get(&self, collection: &'static str, ids: Option<&[String]>, limit: usize, offset: usize) -> Result<Vec<VectorDoc>> {
        let action = "reading documents";
        let mut values: Vec<SqlValue> = vec![self.name(collection).into()];
        let mut sql = "SELECT id, embedding, document, metadata FROM dataflow_vectors WHERE collection = ?1".to_owned();
        if let Some(ids) = ids {
            sql.push_str(" AND id IN (SELECT value FROM json_each(?4))");
            values.extend([
                (limit as i64).into(),
                (offset as i64).into(),
                serde_json::to_string(ids).unwrap_or_default().into(),
            ]);
        } else {
            values.extend([SqlValue::from(limit as i64), (offset as i64).into()]);
        }
        sql.push_str(" ORDER BY rowid LIMIT ?2 OFFSET ?3");
        let rows = self.file.query(self.file.pool(), action, &sql, values).await?;
        rows.iter().map(|row| self.decode(row, action, true)).collect()
    }

    async fn count(&self, collection: &'static str) -> Result<u64> {
        let action = "counting documents";
        let rows = self
            .file
            .query(
                self.file.pool(),
                action,
                "SELECT COUNT(*) AS n FROM dataflow_vectors WHERE collection = ?1",
                vec![self.name(collection).into()],
            )
            .await?;
        let n: i64 = match rows.first() {
            Some(row) => row.try_get("", "n").map_err(|e| self.file.error(action, e))?,
            None => 0,
        };
        Ok(n as u64)
    }

    async fn drop_collection(&self, collection: &'static str) -> Result<()> {
        let action = "dropping a collection";
        let txn = self.file.begin(action).await?;
        if self.generation(&txn, collection, action).await?.is_none() {
            return Ok(());
        }
        // The collection's row stays, with its generation moved on, so that a copy of the
        // dropped collection in another process can never pass for current.
        let generation = self.bump(&txn, collection, action).await?;
        self.file
            .execute(
                &txn,
                action,
                "DELETE FROM dataflow_vectors WHERE collection = ?1",
                vec![self.name(collection).into()],
            )
            .await?;
        self.file.commit(txn, action).await?;
        self.follow(collection, generation, Change::Clear).await;
        Ok(())
    }

    async fn ping(&self) -> Result<Duration> {
        self.file.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, v: &[f32]) -> VectorDoc {
        VectorDoc {
            id: id.into(),
            embedding: v.to_vec(),
            document: String::new(),
            metadata: Map::new(),
        }
    }

    #[test]
    fn the_copy_follows_upserts_and_deletes() {
        let mut data = Loaded::default();
        data.apply_upserts(vec![doc("a", &[1.0, 0.0]), doc("b", &[0.0, 2.0]), doc("c", &[1.0, 1.0])]);
        data.apply_deletes(&["a".into(), "missing".into()]);
        data.apply_upserts(vec![doc("b", &[3.0, 0.0])]);
        let hits = data.search(&[1.0, 0.0], 10, None);
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(hits[0].distance.abs() < 1e-6);
        assert!((hits[1].distance - (1.0 - std::f32::consts::FRAC_1_SQRT_2)).abs() < 1e-6);
        assert_eq!(data.position.len(), 2);
    }

    /// Two concurrent writes may finish in the other order than they committed: the later
    /// one's change then reaches a copy that lacks the earlier one. The copy must keep what it
    /// holds (a query that checked its generation may be reading it), not be emptied.
    #[tokio::test]
    async fn a_change_out_of_order_leaves_the_copy_as_it_is() {
        let dir = std::env::temp_dir().join(format!("dataflow_vectors_follow_{}", std::process::id()));
        let db = crate::store::relational::open_sqlite(&dir.join("vectors.db"), 2)
            .await
            .expect("SQLite");
        let store = EmbeddedVectors::open(db, "t_").await.expect("the store");
        store
            .upsert("docs", vec![doc("a", &[1.0, 0.0]), doc("b", &[0.0, 1.0])])
            .await
            .expect("upsert");
        assert_eq!(store.query("docs", &[1.0, 0.0], 10, None).await.expect("query").len(), 2);
        let held = |store: &EmbeddedVectors| {
            let copy = store.copy("docs");
            let data = copy.data.read().expect("the copy");
            (data.generation, data.ids.len())
        };
        assert_eq!(held(&store), (Some(1), 2));
        store.follow("docs", 3, Change::Upsert(vec![doc("c", &[1.0, 1.0])])).await;
        assert_eq!(held(&store), (Some(1), 2), "generation 3's change reached a copy at 1");
        store.follow("docs", 2, Change::Upsert(vec![doc("d", &[1.0, 1.0])])).await;
        assert_eq!(held(&store), (Some(2), 3), "generation 2's change applies to a copy at 1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dot_matches_the_plain_sum_for_any_length() {
        for n in [0, 1, 15, 16, 17, 384] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.25).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() <= plain.abs() * 1e-5 + 1e-5, "length {n}");
        }
    }
}
