//! The embedded vector store: documents in an SQLite file (usually the embedded relational
//! store's own), searched by cosine distance over an in-memory copy of each collection:
//! exactly while a collection is small, through an HNSW index (`index.rs`) once it is large.
//!
//! # The in-memory copy
//!
//! A collection is loaded on its first query: its vectors, normalised, in one contiguous
//! array, and their metadata. The exact search scores every admitted vector (a dot product,
//! split over the machine's cores) and keeps the `top_k` nearest.
//!
//! Every write bumps the collection's *generation* in SQLite in the same transaction as the
//! documents. A write through this store applies itself to the copy when the copy was at the
//! generation just before; a query first reads the stored generation (one indexed lookup)
//! and reloads the copy when another process (or a write that raced) moved it on. So the
//! copy never answers with data older than what SQLite held when the query began.
//!
//! # The index
//!
//! From [`IndexSettings::exact_below`] documents on (10,000 by default), a collection's copy
//! also holds an HNSW graph (usearch) over the same normalised vectors, keyed by SQLite
//! `rowid`. It is part of the copy, so it follows the copy's guarantees: a write through this
//! store applies itself to both under one lock (a removal and an add for an updated vector);
//! a reload after another process's write keeps the previous index and applies only what
//! differs between it and the reloaded copy (every vector compared, so nothing is missed).
//!
//! The index is saved beside the SQLite file (`{file}.{collection}.usearch`, with the
//! generation it was saved at and a checksum), after every build and again once it has
//! absorbed `SAVE_EVERY` changes. A process loading a collection loads that file and brings
//! it in step the same way. A file that is missing, damaged, of other dimensions, or so far
//! behind that bringing it in step would cost more than `PATCH_LIMIT` changes on the query's
//! path, is rebuilt: on a blocking thread, from a snapshot of the copy, while queries go on
//! with the exact scan; then saved, and brought in step with the writes made meanwhile. An
//! in-memory database keeps its index in memory only. The generation in the file says how far
//! behind it is (it is logged); what decides is the comparison with the copy, which finds
//! every changed document whatever the generations say (an SQLite file replaced under the
//! same name starts its generations again).
//!
//! A search through the index takes the graph's candidates (`expansion_search` of them, at
//! least `top_k`), scores them exactly as the scan would (so distances are the same either
//! way) and keeps the best `top_k`. A metadata filter is
//! applied inside the graph search, so only admitted documents come back. When a sample of
//! the documents says the filter admits less than `INDEX_MIN_SHARE` of them, or the graph
//! returns fewer than `top_k` (a filter admitting fewer), the admitted documents are scanned
//! exactly instead.
//!
//! Why exact below 10,000 documents: measured on the project's 2-core machine (384
//! dimensions, structured vectors as in `benches/benches/vector_search.rs`, one query at a
//! time, default settings), the exact scan on one thread against the index with its
//! candidates scored again: 0.064 against 0.070 ms at 2,000 documents, 0.155 against 0.099
//! at 5,000, 0.30 against 0.13 at 10,000, 0.94 against 0.22 at 20,000, 2.7 against 0.40 at
//! 50,000. From 10,000 the index takes less than half the scan's time, and the scan's time
//! grows with every document; below it the scan takes under 0.3 ms and is exact, and what
//! the index would save does not pay for what it costs: memory, a build, linking on every
//! write, and answers that are no longer exact (recall@10 0.998 at 10,000).
//!
//! Why usearch: a maintained HNSW (regular releases) that has what this store needs:
//! removal, a search with a predicate (the metadata filter), 8-bit storage, adds from
//! several threads at once (the build uses every core), and serialisation to and from a
//! buffer (the file carries our own header). It is C++ compiled through cxx, which builds
//! with the machine's g++; no pure-Rust fallback was needed.
//!
//! The cost beyond the search: the copy's memory (4 bytes per dimension per document plus
//! its metadata) and, for an indexed collection, the index's (its own copy of the vectors
//! and the graph); the load on the first query after another process wrote; and each write's
//! linking into the graph. The figures are in `benches/README.md`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sea_orm::{DatabaseConnection, QueryResult, TransactionTrait, Value as SqlValue};
use serde_json::{Map, Value as Json};

use super::index::{Hnsw, IndexSettings};
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

/// Most changed documents a query brings into an index on its own path (after another
/// process wrote, or when it loads the index file): about 0.2 s of linking at 100,000
/// documents. More than that, and the index is rebuilt in the background instead.
const PATCH_LIMIT: usize = 2_000;

/// Changes an index absorbs before it is written to its file again, so that the next
/// process finds a file it can bring in step within [`PATCH_LIMIT`].
const SAVE_EVERY: usize = PATCH_LIMIT / 2;

/// Documents sampled to estimate the share a filter admits.
const FILTER_SAMPLE: usize = 512;

/// The least share of documents a filter may admit for the index to serve it. The graph
/// search keeps walking until it holds enough admitted documents, so it visits about
/// 1/share as many as without a filter; below this it costs about what the exact scan of
/// the admitted documents costs, which is exact.
const INDEX_MIN_SHARE: f64 = 0.05;

/// Vectors in an SQLite file, searched from memory; collections are named `{prefix}{table}`.
pub struct EmbeddedVectors {
    file: SqliteFile,
    prefix: String,
    settings: IndexSettings,
    /// The SQLite file's path, where the index files go beside it; `None` for an in-memory
    /// database or when the settings say not to persist.
    path: Option<PathBuf>,
    /// The in-memory copy of each collection used so far.
    copies: Mutex<HashMap<&'static str, Arc<Copy>>>,
}

/// One collection's in-memory copy, the lock that lets one task at a time load it, and the
/// one that lets one task at a time build its index.
#[derive(Default)]
struct Copy {
    data: RwLock<Loaded>,
    loading: tokio::sync::Mutex<()>,
    building: Arc<tokio::sync::Mutex<()>>,
    /// When the last build failed: the next waits [`RETRY_BUILD_AFTER`], so that a build
    /// that cannot succeed does not run again on every query.
    build_failed: Mutex<Option<Instant>>,
}

/// How long after a failed build the next may start.
const RETRY_BUILD_AFTER: Duration = Duration::from_secs(60);

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
    /// Each document's SQLite `rowid`: its key in the index.
    rowids: Vec<u64>,
    by_rowid: HashMap<u64, usize>,
    /// The approximate index, in step with this copy; `None` for a small collection, and
    /// while one is being built (the search is exact meanwhile).
    index: Option<Hnsw>,
}

/// What a collection's index is, from [`EmbeddedVectors::index_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStatus {
    /// Documents in the collection.
    pub documents: usize,
    /// Documents the index holds (the collection's, once it is in step); `None` when the
    /// collection is searched exactly.
    pub indexed: Option<usize>,
    /// Bytes of memory the index takes.
    pub memory: usize,
    /// The index file beside the SQLite file, if the index is persisted.
    pub file: Option<PathBuf>,
}

impl EmbeddedVectors {
    /// The vector store kept in the SQLite database `db` (creating its tables when missing),
    /// whose collections are named `{prefix}{table}` (the prefix as for Chroma), with the
    /// default [`IndexSettings`].
    pub async fn open(db: DatabaseConnection, prefix: &str) -> Result<Self> {
        Self::open_with(db, prefix, IndexSettings::default()).await
    }

    /// [`EmbeddedVectors::open`] with `settings` for when and how collections are indexed.
    pub async fn open_with(db: DatabaseConnection, prefix: &str, settings: IndexSettings) -> Result<Self> {
        super::check_prefix(prefix)?;
        let file = SqliteFile::new(db, StoreKind::Vector)?;
        for statement in SCHEMA {
            file.execute(file.pool(), "creating the vector tables", statement, vec![]).await?;
        }
        // SQLite names the main database's file, or nothing for an in-memory database.
        let mut path = None;
        if settings.persist {
            let rows = file
                .query(file.pool(), "finding the SQLite file", "PRAGMA database_list", vec![])
                .await?;
            for row in rows {
                let name: String = row.try_get("", "name").map_err(|e| file.error("finding the SQLite file", e))?;
                let location: Option<String> = row.try_get("", "file").map_err(|e| file.error("finding the SQLite file", e))?;
                if name == "main" {
                    path = location.filter(|f| !f.is_empty()).map(PathBuf::from);
                }
            }
        }
        Ok(EmbeddedVectors {
            file,
            prefix: prefix.to_owned(),
            settings,
            path,
            copies: Mutex::new(HashMap::new()),
        })
    }

    /// The file of a collection's index: `{sqlite file}.{collection}.usearch`.
    fn index_path(&self, collection: &str) -> Option<PathBuf> {
        let file = self.path.as_ref()?;
        Some(PathBuf::from(format!("{}.{}.usearch", file.display(), self.name(collection))))
    }

    /// Brings the collection's copy current, waits for an index build that is due or under
    /// way, and says what the index is: for tests, benchmarks and operators that want the
    /// index ready before they measure or serve.
    pub async fn index_status(&self, collection: &'static str) -> Result<IndexStatus> {
        let action = "preparing the index";
        let Some(copy) = self.current(collection, action).await? else {
            return Ok(IndexStatus {
                documents: 0,
                indexed: None,
                memory: 0,
                file: None,
            });
        };
        // A build may be due and not yet started (another task held the build lock for a
        // moment); a few rounds settle it.
        for _ in 0..3 {
            drop(copy.building.lock().await);
            if !self.wants_index(&copy) {
                break;
            }
            self.start_build(&copy, collection);
        }
        let data = copy.data.read().unwrap_or_else(|e| e.into_inner());
        Ok(IndexStatus {
            documents: data.ids.len(),
            indexed: data.index.as_ref().map(Hnsw::len),
            memory: data.index.as_ref().map_or(0, Hnsw::memory),
            file: data.index.as_ref().and_then(|_| self.index_path(collection)),
        })
    }

    /// Whether the copy is big enough for an index and has none, or one worn by removals.
    fn wants_index(&self, copy: &Copy) -> bool {
        let data = copy.data.read().unwrap_or_else(|e| e.into_inner());
        data.generation.is_some() && data.ids.len() >= self.settings.exact_below && data.index.as_ref().is_none_or(Hnsw::worn)
    }

    /// Builds the copy's index on a blocking thread, unless a build is under way: from a
    /// snapshot of the copy, so that queries and writes go on meanwhile (searching exactly),
    /// then saved to its file and brought in step with the writes made during the build.
    fn start_build(&self, copy: &Arc<Copy>, collection: &'static str) {
        let failed = *copy.build_failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_some_and(|at| at.elapsed() < RETRY_BUILD_AFTER) {
            return;
        }
        let Ok(guard) = copy.building.clone().try_lock_owned() else {
            return;
        };
        let (copy, settings, path) = (copy.clone(), self.settings, self.index_path(collection));
        tokio::task::spawn_blocking(move || {
            let _building = guard;
            let started = Instant::now();
            let (generation, dimensions, keys, vectors) = {
                let data = copy.data.read().unwrap_or_else(|e| e.into_inner());
                let Some(generation) = data.generation else { return };
                if data.ids.len() < settings.exact_below || data.index.as_ref().is_some_and(|i| !i.worn()) {
                    return;
                }
                (generation, data.dimensions, data.rowids.clone(), data.vectors.clone())
            };
            let built = match Hnsw::build(dimensions, &settings, &keys, &vectors) {
                Ok(built) => built,
                Err(e) => {
                    tracing::warn!(error = %e, collection, "building the vector index failed; searches stay exact");
                    *copy.build_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    return;
                }
            };
            drop(vectors);
            let took = started.elapsed();
            let saved = path.as_ref().map(|path| built.save(path, generation));
            if let Some(Err(e)) = &saved {
                tracing::warn!(error = %e, collection, "saving the vector index failed; the next process builds it again");
            }
            tracing::info!(
                collection,
                documents = keys.len(),
                seconds = took.as_secs_f64(),
                bytes = saved.and_then(|s| s.ok()),
                "built the vector index"
            );
            if let Err(e) = install(&copy, built, &settings) {
                tracing::warn!(error = %e, collection, "bringing the new vector index in step failed; searches stay exact");
                *copy.build_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
        });
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
            let mut rowids = Vec::with_capacity(rows.len());
            for row in &rows {
                page.push(self.decode(row, action, false)?);
                rowids.push(rowid(row).map_err(|e| self.file.error(action, e))?);
            }
            let full = rows.len() == LOAD_PAGE;
            drop(rows);
            fresh.apply_upserts(page, &rowids);
            if !full {
                break;
            }
        }
        txn.commit().await.map_err(|e| self.file.error(action, e))?;
        fresh.generation = Some(generation);
        let (target, settings, path) = (copy.clone(), self.settings, self.index_path(collection));
        let swapped = tokio::task::spawn_blocking(move || {
            if fresh.ids.len() >= settings.exact_below {
                // The index of the copy being replaced was in step with it, so it needs only
                // what changed since; it is taken out (searches go exact for the moment) and
                // brought in step here, off the lock. A process without one loads the file.
                let previous = {
                    let mut data = target.data.write().unwrap_or_else(|e| e.into_inner());
                    if data.generation >= Some(generation) {
                        return false; // a write of this process got there first
                    }
                    data.index.take()
                };
                let candidate = previous.or_else(|| {
                    let path = path.as_ref()?;
                    match Hnsw::load(path, fresh.dimensions, &settings) {
                        Ok((index, saved_at)) => {
                            tracing::debug!(saved_at, generation, path = %path.display(), "loaded the vector index file");
                            Some(index)
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "no usable vector index file; building one");
                            None
                        }
                    }
                });
                if let Some(mut index) = candidate.filter(|index| index.dimensions() == fresh.dimensions) {
                    let patch = index.diff(&fresh.rowids, &fresh.vectors);
                    if patch.len() <= PATCH_LIMIT {
                        match index.apply(&patch, &fresh.rowids, &fresh.vectors) {
                            Ok(()) => fresh.index = Some(index),
                            Err(e) => tracing::warn!(error = %e, "bringing the vector index in step failed; rebuilding it"),
                        }
                    }
                }
            }
            let mut data = target.data.write().unwrap_or_else(|e| e.into_inner());
            if data.generation < Some(generation) {
                *data = fresh;
            } // else a write of this process got there first
            true
        })
        .await
        .map_err(|e| self.file.error(action, format!("loading the collection: {e}")))?;
        if swapped {
            self.maintain(copy, collection);
        }
        Ok(())
    }

    /// Starts what the copy's index needs: a build when it is due, a save when it changed
    /// much since its file was written.
    fn maintain(&self, copy: &Arc<Copy>, collection: &'static str) {
        if self.wants_index(copy) {
            self.start_build(copy, collection);
            return;
        }
        let Some(path) = self.index_path(collection) else { return };
        let due = {
            let data = copy.data.read().unwrap_or_else(|e| e.into_inner());
            data.index.as_ref().is_some_and(|i| i.changes >= SAVE_EVERY)
        };
        if !due {
            return;
        }
        let Ok(guard) = copy.building.clone().try_lock_owned() else {
            return;
        };
        let copy = copy.clone();
        tokio::task::spawn_blocking(move || {
            let _saving = guard;
            // Serialising holds writes back for its memory copy only (a read lock); the
            // file is written after.
            let (serialised, counted) = {
                let data = copy.data.read().unwrap_or_else(|e| e.into_inner());
                let Some(generation) = data.generation else { return };
                let Some(index) = data.index.as_ref() else { return };
                (index.serialise(generation), index.changes)
            };
            if let Some(index) = copy.data.write().unwrap_or_else(|e| e.into_inner()).index.as_mut() {
                index.changes = index.changes.saturating_sub(counted);
            }
            if let Err(e) = serialised.and_then(|bytes| super::index::write_file(&path, &bytes)) {
                tracing::warn!(error = %e, collection, "saving the vector index failed; the next process brings an older one in step");
            }
        });
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
        let target = copy.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let mut data = target.data.write().unwrap_or_else(|e| e.into_inner());
            if data.generation == Some(generation - 1) {
                let followed = match change {
                    Change::Upsert(docs, rowids) => {
                        let touched = data.apply_upserts(docs, &rowids);
                        let Loaded {
                            index, rowids, vectors, ..
                        } = &mut *data;
                        index.as_mut().map_or(Ok(()), |i| i.add(&touched, rowids, vectors))
                    }
                    Change::Delete(ids) => {
                        let gone = data.apply_deletes(&ids);
                        data.index
                            .as_mut()
                            .map_or(Ok(()), |i| gone.iter().try_for_each(|&key| i.remove(key)))
                    }
                    Change::Clear => {
                        *data = Loaded::default();
                        Ok(())
                    }
                };
                if let Err(e) = followed {
                    // The copy itself followed; only the index did not, so it goes and the
                    // search is exact until it is rebuilt.
                    tracing::warn!(error = %e, "updating the vector index failed; rebuilding it");
                    data.index = None;
                }
                data.generation = Some(generation);
            }
        })
        .await;
        if let Err(e) = applied {
            tracing::warn!(error = %e, collection, "updating the in-memory vectors failed; the next query reloads them");
            self.copies.lock().unwrap_or_else(|e| e.into_inner()).remove(collection);
            return;
        }
        self.maintain(&copy, collection);
    }
}

/// Puts a newly built index into the copy, after bringing it in step with the writes made
/// since its snapshot: off the lock while they are many, under the write lock for the last
/// few.
fn install(copy: &Copy, mut built: Hnsw, settings: &IndexSettings) -> std::result::Result<(), String> {
    for _ in 0..3 {
        let data = copy.data.read().unwrap_or_else(|e| e.into_inner());
        if data.dimensions != built.dimensions() {
            return Ok(()); // emptied and refilled with other vectors meanwhile
        }
        let patch = built.diff(&data.rowids, &data.vectors);
        if patch.len() <= PATCH_LIMIT {
            break;
        }
        let (keys, vectors) = (data.rowids.clone(), data.vectors.clone());
        drop(data);
        built.apply(&patch, &keys, &vectors)?;
    }
    let mut data = copy.data.write().unwrap_or_else(|e| e.into_inner());
    if data.generation.is_none() || data.ids.len() < settings.exact_below || data.dimensions != built.dimensions() {
        return Ok(());
    }
    let patch = built.diff(&data.rowids, &data.vectors);
    built.apply(&patch, &data.rowids, &data.vectors)?;
    data.index = Some(built);
    Ok(())
}

/// The `position` column (the row's `rowid`) of a row read for a copy.
fn rowid(row: &QueryResult) -> std::result::Result<u64, sea_orm::DbErr> {
    row.try_get::<i64>("", "position").map(|r| r as u64)
}

/// A committed write, to apply to the in-memory copy.
enum Change {
    /// The documents, and the `rowid` each was stored under.
    Upsert(Vec<VectorDoc>, Vec<u64>),
    Delete(Vec<String>),
    Clear,
}

impl Loaded {
    /// Applies upserts of documents stored under `rowids`; returns the positions written.
    fn apply_upserts(&mut self, docs: Vec<VectorDoc>, rowids: &[u64]) -> Vec<usize> {
        let mut touched = Vec::with_capacity(docs.len());
        for (doc, &rowid) in docs.into_iter().zip(rowids) {
            if self.ids.is_empty() {
                self.dimensions = doc.embedding.len();
            }
            let unit = normalised(&doc.embedding);
            let i = match self.position.get(&doc.id) {
                Some(&i) => {
                    self.vectors[i * self.dimensions..(i + 1) * self.dimensions].copy_from_slice(&unit);
                    self.metadata[i] = doc.metadata;
                    // An upsert keeps a stored row's rowid; a copy that missed a delete and
                    // re-insert still follows the row it now has.
                    if self.rowids[i] != rowid {
                        self.by_rowid.remove(&self.rowids[i]);
                        self.rowids[i] = rowid;
                        self.by_rowid.insert(rowid, i);
                    }
                    i
                }
                None => {
                    let i = self.ids.len();
                    self.position.insert(doc.id.clone(), i);
                    self.ids.push(doc.id);
                    self.metadata.push(doc.metadata);
                    self.vectors.extend_from_slice(&unit);
                    self.rowids.push(rowid);
                    self.by_rowid.insert(rowid, i);
                    i
                }
            };
            touched.push(i);
        }
        touched
    }

    /// Removes documents by id; returns the rowids of those it held.
    fn apply_deletes(&mut self, ids: &[String]) -> Vec<u64> {
        let d = self.dimensions;
        let mut gone = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(i) = self.position.remove(id) else { continue };
            gone.push(self.rowids[i]);
            self.by_rowid.remove(&self.rowids[i]);
            let last = self.ids.len() - 1;
            if i != last {
                self.vectors.copy_within(last * d..(last + 1) * d, i * d);
                self.ids.swap(i, last);
                self.metadata.swap(i, last);
                self.rowids.swap(i, last);
                self.position.insert(self.ids[i].clone(), i);
                self.by_rowid.insert(self.rowids[i], i);
            }
            self.vectors.truncate(last * d);
            self.ids.pop();
            self.metadata.pop();
            self.rowids.pop();
        }
        gone
    }

    /// The `top_k` nearest documents `filter` admits: cosine distance, nearest first, ties
    /// by id.
    fn search(&self, query: &[f32], top_k: usize, filter: Option<&MetaFilter>) -> Vec<VectorHit> {
        let n = self.ids.len();
        if n == 0 || self.dimensions == 0 {
            return Vec::new();
        }
        let query = normalised(query);
        let share = filter.map(|f| self.admitted_share(f));
        if let Some(index) = &self.index
            && share.is_none_or(|s| s >= INDEX_MIN_SHARE)
            && let Some(hits) = self.search_index(index, &query, top_k, filter)
        {
            return hits;
        }
        match filter {
            Some(filter) if share.is_some_and(|s| s < INDEX_MIN_SHARE) => self.search_admitted(&query, top_k, filter),
            _ => self.search_exact(&query, top_k, filter),
        }
    }

    /// The share of documents `filter` admits, estimated from [`FILTER_SAMPLE`] documents
    /// spread over the copy.
    fn admitted_share(&self, filter: &MetaFilter) -> f64 {
        let n = self.ids.len();
        let sample = n.min(FILTER_SAMPLE);
        let step = n / sample;
        let admitted = (0..sample).filter(|k| filter.matches(&self.metadata[k * step])).count();
        admitted as f64 / sample as f64
    }

    /// The `top_k` nearest through the index: the graph's candidates scored exactly as the
    /// scan scores them, the best `top_k` kept; `None` when the graph found fewer than
    /// `top_k` (a filter that admits few, or an index that failed), for the exact scan to
    /// decide.
    fn search_index(&self, index: &Hnsw, query: &[f32], top_k: usize, filter: Option<&MetaFilter>) -> Option<Vec<VectorHit>> {
        let admit = |key: u64| {
            self.by_rowid
                .get(&key)
                .is_some_and(|&i| filter.is_none_or(|f| f.matches(&self.metadata[i])))
        };
        let keys = index
            .search(query, top_k, filter.map(|_| &admit as &dyn Fn(u64) -> bool))
            .inspect_err(|e| tracing::warn!(error = %e, "searching the vector index failed; searching exactly"))
            .ok()?;
        let d = self.dimensions;
        let mut chosen: Vec<(f32, usize)> = keys
            .into_iter()
            .filter_map(|key| self.by_rowid.get(&key))
            .map(|&i| (dot(query, &self.vectors[i * d..(i + 1) * d]), i))
            .collect();
        if chosen.len() < top_k {
            return None;
        }
        chosen.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| self.ids[a.1].cmp(&self.ids[b.1])));
        chosen.truncate(top_k);
        Some(chosen.into_iter().map(|(score, i)| self.hit(i, score)).collect())
    }

    /// The `top_k` nearest of the documents `filter` admits, scoring only those: for a filter
    /// that admits few of a large collection.
    fn search_admitted(&self, query: &[f32], top_k: usize, filter: &MetaFilter) -> Vec<VectorHit> {
        let d = self.dimensions;
        let mut chosen: Vec<(f32, usize)> = (0..self.ids.len())
            .filter(|&i| filter.matches(&self.metadata[i]))
            .map(|i| (dot(query, &self.vectors[i * d..(i + 1) * d]), i))
            .collect();
        let nearer = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then_with(|| self.ids[a.1].cmp(&self.ids[b.1]));
        if chosen.len() > top_k {
            chosen.select_nth_unstable_by(top_k - 1, nearer);
            chosen.truncate(top_k);
        }
        chosen.sort_by(nearer);
        chosen.into_iter().map(|(score, i)| self.hit(i, score)).collect()
    }

    fn hit(&self, i: usize, score: f32) -> VectorHit {
        VectorHit {
            id: self.ids[i].clone(),
            distance: 1.0 - score,
            metadata: self.metadata[i].clone(),
        }
    }

    /// The `top_k` nearest documents `filter` admits, scoring every document.
    fn search_exact(&self, query: &[f32], top_k: usize, filter: Option<&MetaFilter>) -> Vec<VectorHit> {
        let d = self.dimensions;
        let n = self.ids.len();
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
                *score = dot(query, &self.vectors[i * d..(i + 1) * d]);
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
        chosen.into_iter().map(|i| self.hit(i, scores[i])).collect()
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

    fn stored_name(&self, collection: &str) -> String {
        self.name(collection)
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
        let mut rowids = Vec::with_capacity(docs.len());
        for doc in &docs {
            let metadata = Json::Object(doc.metadata.clone()).to_string();
            // The rowid (kept by an update) is the document's key in the index.
            let stored = self
                .file
                .query(
                    &txn,
                    action,
                    "INSERT INTO dataflow_vectors (collection, id, embedding, document, metadata) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (collection, id) DO UPDATE SET embedding = excluded.embedding, \
                     document = excluded.document, metadata = excluded.metadata RETURNING rowid AS position",
                    vec![
                        self.name(collection).into(),
                        doc.id.clone().into(),
                        to_blob(&doc.embedding).into(),
                        doc.document.clone().into(),
                        metadata.into(),
                    ],
                )
                .await?;
            let row = stored
                .first()
                .ok_or_else(|| self.file.error(action, format!("document {} was not stored", doc.id)))?;
            rowids.push(rowid(row).map_err(|e| self.file.error(action, e))?);
        }
        self.file.commit(txn, action).await?;
        self.follow(collection, generation, Change::Upsert(docs, rowids)).await;
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
        let searched = copy.clone();
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
        // A build that could not start when it fell due (another task held the lock) starts
        // with a later query.
        self.maintain(&searched, collection);
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
        // The file would only be found stale; a refilled collection builds a new one.
        if let Some(path) = self.index_path(collection) {
            let _ = std::fs::remove_file(path);
        }
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
        data.apply_upserts(
            vec![doc("a", &[1.0, 0.0]), doc("b", &[0.0, 2.0]), doc("c", &[1.0, 1.0])],
            &[1, 2, 3],
        );
        assert_eq!(data.apply_deletes(&["a".into(), "missing".into()]), [1]);
        data.apply_upserts(vec![doc("b", &[3.0, 0.0])], &[2]);
        let hits = data.search(&[1.0, 0.0], 10, None);
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(hits[0].distance.abs() < 1e-6);
        assert!((hits[1].distance - (1.0 - std::f32::consts::FRAC_1_SQRT_2)).abs() < 1e-6);
        assert_eq!(data.position.len(), 2);
        assert_eq!((data.by_rowid[&2], data.by_rowid[&3]), (data.position["b"], data.position["c"]));
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
        store.follow("docs", 3, Change::Upsert(vec![doc("c", &[1.0, 1.0])], vec![3])).await;
        assert_eq!(held(&store), (Some(1), 2), "generation 3's change reached a copy at 1");
        store.follow("docs", 2, Change::Upsert(vec![doc("d", &[1.0, 1.0])], vec![4])).await;
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
