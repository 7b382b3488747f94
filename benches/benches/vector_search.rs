//! The embedded vector store on its own (`EmbeddedVectors` over an SQLite file, no nodes):
//! top-10 search over 100,000 documents of 384 dimensions through the HNSW index and by the
//! exact scan, without and with a metadata filter admitting about half, and the load of the
//! in-memory copy (and its index) that a store's first query pays. Prints the insert
//! throughput, the index's build time, size and recall@10 against the exact search, and the
//! process's resident memory before and after the copy is loaded. Always on the embedded
//! store: `DATAFLOW_BENCH_BACKEND` does not apply.
//!
//! ```sh
//! cargo bench -p dataflow-benches --bench vector_search
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use dataflow_benches::resident_mib;
use dataflow_core::EmbeddedVectors;
use dataflow_core::store::relational::open_sqlite;
use dataflow_core::store::vector::{IndexSettings, MetaFilter, MetaOp, VectorDoc, VectorStore};
use dataflow_tests::vectors::StructuredVectors;
use serde_json::{Value as Json, json};

/// Documents in the collection.
const DOCS: usize = 100_000;
/// Dimensions of every vector (the hashing embedder's).
const DIMENSIONS: usize = 384;
/// Documents per `upsert` call while filling the collection.
const BATCH: usize = 1_000;
/// The logical collection (stored as `bench_docs`).
const COLLECTION: &str = "docs";
/// Different query vectors the search benches cycle through.
const QUERIES: usize = 16;

/// Document `i`: a vector, and metadata with its id, a price and `active` true for about half
/// of the documents.
fn document(i: usize, vectors: &mut StructuredVectors) -> VectorDoc {
    let embedding = vectors.vector();
    let price = (vectors.rng.next_u64() % 100_000) as f64 / 100.0;
    let active = vectors.rng.next_u64() & 1 == 0;
    let Json::Object(metadata) = json!({"id": i, "price": price, "active": active}) else {
        unreachable!("a JSON object")
    };
    VectorDoc {
        id: i.to_string(),
        embedding,
        document: format!("document {i}"),
        metadata,
    }
}

/// Hands memory the allocator holds free back to the operating system (glibc's
/// `malloc_trim`), so that resident memory shows what is live rather than what a load left
/// free; `false` where that is not available.
fn trim_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            // glibc: int malloc_trim(size_t pad); no preconditions.
            safe fn malloc_trim(pad: usize) -> i32;
        }
        malloc_trim(0);
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// A store over the SQLite file at `path` with a pool of its own, as a new process would
/// open it: nothing of the collection in memory yet. Default settings: the collection is
/// indexed.
async fn open_store(path: &Path) -> EmbeddedVectors {
    open_store_with(path, IndexSettings::default()).await
}

/// [`open_store`] with other index settings ([`IndexSettings::exact`] for the exact scan).
async fn open_store_with(path: &Path, settings: IndexSettings) -> EmbeddedVectors {
    let db = open_sqlite(path, 4).await.expect("opening the SQLite file");
    EmbeddedVectors::open_with(db, "bench_", settings)
        .await
        .expect("opening the vector store")
}

/// Recall@10 of `indexed` against `exact` over `queries`, with `filter`.
async fn recall(indexed: &EmbeddedVectors, exact: &EmbeddedVectors, queries: &[Vec<f32>], filter: Option<&MetaFilter>) -> f64 {
    let (mut found, mut wanted) = (0, 0);
    for query in queries {
        let truth = exact.query(COLLECTION, query, 10, filter).await.expect("exact query");
        let hits = indexed.query(COLLECTION, query, 10, filter).await.expect("indexed query");
        found += hits.iter().filter(|h| truth.iter().any(|t| t.id == h.id)).count();
        wanted += truth.len();
    }
    found as f64 / wanted as f64
}

/// The index file of the bench's collection beside the SQLite file at `path`.
fn index_file(path: &Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.bench_{COLLECTION}.usearch", path.display()))
}

/// Bytes of the SQLite file and its write-ahead log.
fn file_mib(path: &Path) -> f64 {
    let wal = path.with_extension("db-wal");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    (size(path) + size(&wal)) as f64 / (1024.0 * 1024.0)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let home = dataflow_tests::embedded::fresh_home("vector_bench");
    let path = home.join("vectors.db");
    let store = rt.block_on(open_store(&path));

    // Fill the collection; only the upsert calls are timed, not making the vectors.
    let mut rng = StructuredVectors::new(0x9E37_79B9_7F4A_7C15, DIMENSIONS);
    let mut writing = Duration::ZERO;
    for first in (0..DOCS).step_by(BATCH) {
        let docs: Vec<VectorDoc> = (first..first + BATCH).map(|i| document(i, &mut rng)).collect();
        let start = Instant::now();
        rt.block_on(store.upsert(COLLECTION, docs)).expect("upsert");
        writing += start.elapsed();
    }
    let stored = rt.block_on(store.count(COLLECTION)).expect("count");
    assert_eq!(stored as usize, DOCS);
    eprintln!(
        "inserted {DOCS} documents x {DIMENSIONS} dimensions in batches of {BATCH}: {:.2} s in upsert = {:.0} documents/s; file {:.0} MiB",
        writing.as_secs_f64(),
        DOCS as f64 / writing.as_secs_f64(),
        file_mib(&path)
    );

    let mut rng = StructuredVectors::new(0xD1B5_4A32_D192_ED03, DIMENSIONS);
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| rng.vector()).collect();
    let _ = std::fs::remove_file(index_file(&path));

    // The writes above did not build the copy (it is built by the first query), so this is
    // the process without it, then with it. The first query finds no index file: it answers
    // by the exact scan and starts building the index in the background.
    trim_free_memory();
    let before = resident_mib();
    let start = Instant::now();
    let hits = rt.block_on(store.query(COLLECTION, &queries[0], 10, None)).expect("first query");
    let first = start.elapsed();
    assert_eq!(hits.len(), 10);
    eprintln!(
        "first query (loads the in-memory copy, starts the index build): {:.1} ms",
        first.as_secs_f64() * 1e3
    );
    // Waits for the build (the log line "built the vector index" has the build alone).
    let status = rt.block_on(store.index_status(COLLECTION)).expect("index status");
    assert_eq!(status.indexed, Some(DOCS), "the index holds the collection");
    let built = start.elapsed() - first;
    let after = resident_mib();
    eprintln!(
        "index: built and saved {:.1} s after the first query; {:.0} MiB in memory; file {:.0} MiB",
        built.as_secs_f64(),
        status.memory as f64 / (1024.0 * 1024.0),
        std::fs::metadata(index_file(&path)).map(|m| m.len()).unwrap_or(0) as f64 / (1024.0 * 1024.0)
    );
    eprintln!(
        "resident memory {before:.0} MiB before the load, {after:.0} MiB with the copy and its index (+{:.0} MiB; the vectors alone are {:.0} MiB)",
        after - before,
        (DOCS * DIMENSIONS * 4) as f64 / (1024.0 * 1024.0)
    );
    // The load's and the build's transient buffers are free now but may still be resident in
    // the allocator; without them, what remains is the copy and the index.
    if trim_free_memory() {
        let live = resident_mib();
        eprintln!(
            "resident memory after returning free memory to the OS (malloc_trim): {live:.0} MiB (+{:.0} MiB over before the load)",
            live - before
        );
    }

    // The same collection searched exactly: a second store on the file that never indexes.
    let exact = rt.block_on(open_store_with(&path, IndexSettings::exact()));
    let mut rng = StructuredVectors::new(0x0123_4567_89AB_CDEF, DIMENSIONS);
    let probes: Vec<Vec<f32>> = (0..200).map(|_| rng.vector()).collect();
    let active = MetaFilter::Compare {
        key: "active",
        op: MetaOp::Eq,
        value: json!(true),
    };
    eprintln!(
        "recall@10 of the index against the exact search over 200 queries: {:.3} without a filter, {:.3} with `active = true`",
        rt.block_on(recall(&store, &exact, &probes, None)),
        rt.block_on(recall(&store, &exact, &probes, Some(&active)))
    );

    let mut group = c.benchmark_group("vector_search");
    let mut n = 0usize;
    group.bench_function("top10_of_100000", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let (store, query) = (&store, &queries[n % QUERIES]);
            async move {
                let hits = store.query(COLLECTION, query, 10, None).await.expect("query");
                assert_eq!(hits.len(), 10);
                hits
            }
        })
    });
    group.bench_function("top10_of_100000_exact", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let (exact, query) = (&exact, &queries[n % QUERIES]);
            async move {
                let hits = exact.query(COLLECTION, query, 10, None).await.expect("query");
                assert_eq!(hits.len(), 10);
                hits
            }
        })
    });
    group.bench_function("top10_of_100000_filter_half", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let (store, query, active) = (&store, &queries[n % QUERIES], &active);
            async move {
                let hits = store.query(COLLECTION, query, 10, Some(active)).await.expect("query");
                assert_eq!(hits.len(), 10);
                debug_assert!(hits.iter().all(|h| h.metadata["active"] == json!(true)));
                hits
            }
        })
    });
    group.bench_function("top10_of_100000_filter_half_exact", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let (exact, query, active) = (&exact, &queries[n % QUERIES], &active);
            async move {
                let hits = exact.query(COLLECTION, query, 10, Some(active)).await.expect("query");
                assert_eq!(hits.len(), 10);
                hits
            }
        })
    });
    group.finish();
    drop(exact);

    // A write's cost with the index: one document upserted (the same id each time, a new
    // vector), which commits to SQLite, then updates the copy and relinks the document in the
    // graph under the copy's lock.
    let mut group = c.benchmark_group("vector_write");
    let mut rng = StructuredVectors::new(0x0F0F_0F0F_0F0F_0F0F, DIMENSIONS);
    group.bench_function("upsert_1_into_100000_indexed", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let store = &store;
            let docs: Vec<VectorDoc> = (0..iters).map(|_| document(DOCS + 1, &mut rng)).collect();
            async move {
                let start = Instant::now();
                for doc in docs {
                    store.upsert(COLLECTION, vec![doc]).await.expect("upsert");
                }
                start.elapsed()
            }
        })
    });
    group.finish();

    // The load on first use. Each sample loads the whole collection from SQLite into a new
    // copy (the file is in the OS page cache after the inserts: a disk read is not measured).
    let mut group = c.benchmark_group("vector_search_load");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));

    // A process's first query: a store opened on the file (untimed, with a pool of its own),
    // then its first query timed: read the generation, read 100,000 rows, decode and
    // normalise them into the copy, load the index file and check it against the copy,
    // search. Closing the store and freeing its copy is untimed.
    group.bench_function("first_query_after_open", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (path, query) = (&path, &queries[1]);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let fresh = open_store(path).await;
                    let start = Instant::now();
                    let hits = fresh.query(COLLECTION, query, 10, None).await.expect("query");
                    total += start.elapsed();
                    assert_eq!(hits.len(), 10);
                    drop(fresh);
                }
                total
            }
        })
    });

    // A long-running process after another one wrote: a second store on the same file
    // writes one document (untimed), which leaves the first store's copy a generation behind;
    // the first store's next query is timed, reloading the copy (and freeing the old one) and
    // bringing its index in step (one changed document).
    let other = rt.block_on(open_store(&path));
    let mut rng = StructuredVectors::new(0x2545_F491_4F6C_DD1D, DIMENSIONS);
    group.bench_function("first_query_after_foreign_write", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (store, other, query) = (&store, &other, &queries[2]);
            let extra: Vec<VectorDoc> = (0..iters).map(|_| document(DOCS, &mut rng)).collect();
            async move {
                let mut total = Duration::ZERO;
                for doc in extra {
                    other.upsert(COLLECTION, vec![doc]).await.expect("upsert through the other store");
                    let start = Instant::now();
                    let hits = store.query(COLLECTION, query, 10, None).await.expect("query");
                    total += start.elapsed();
                    assert_eq!(hits.len(), 10);
                }
                total
            }
        })
    });
    group.finish();

    drop((store, other));
    let _ = std::fs::remove_dir_all(&home);
}

criterion_group!(vector_search, benches);
criterion_main!(vector_search);
