//! The embedded vector store on its own (`EmbeddedVectors` over an SQLite file, no nodes):
//! exact top-10 search over 100,000 documents of 384 dimensions, without and with a metadata
//! filter admitting about half, and the load of the in-memory copy that a store's first query
//! pays. Prints the insert throughput and the process's resident memory before and after the
//! copy is loaded. Always on the embedded store: `DATAFLOW_BENCH_BACKEND` does not apply.
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
use dataflow_core::store::vector::{MetaFilter, MetaOp, VectorDoc, VectorStore};
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

/// xorshift64*: deterministic pseudo-random numbers, so every run stores the same vectors.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    fn component(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vector(&mut self) -> Vec<f32> {
        (0..DIMENSIONS).map(|_| self.component()).collect()
    }
}

/// Document `i`: a random vector, and metadata with its id, a price and `active` true for
/// about half of the documents.
fn document(i: usize, rng: &mut XorShift) -> VectorDoc {
    let embedding = rng.vector();
    let price = (rng.next() % 100_000) as f64 / 100.0;
    let active = rng.next() & 1 == 0;
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
/// open it: nothing of the collection in memory yet.
async fn open_store(path: &Path) -> EmbeddedVectors {
    let db = open_sqlite(path, 4).await.expect("opening the SQLite file");
    EmbeddedVectors::open(db, "bench_").await.expect("opening the vector store")
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
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
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

    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| rng.vector()).collect();

    // The writes above did not build the copy (it is built by the first query), so this is
    // the process without it, then with it.
    trim_free_memory();
    let before = resident_mib();
    let start = Instant::now();
    let hits = rt.block_on(store.query(COLLECTION, &queries[0], 10, None)).expect("first query");
    let first = start.elapsed();
    assert_eq!(hits.len(), 10);
    let after = resident_mib();
    eprintln!(
        "first query (loads the in-memory copy): {:.1} ms; resident memory {before:.0} MiB before, {after:.0} MiB after (+{:.0} MiB; the vectors alone are {:.0} MiB)",
        first.as_secs_f64() * 1e3,
        after - before,
        (DOCS * DIMENSIONS * 4) as f64 / (1024.0 * 1024.0)
    );
    // The load's transient buffers (the rows read, the decoded documents) are free now but may
    // still be resident in the allocator; without them, what remains is the copy itself.
    if trim_free_memory() {
        let live = resident_mib();
        eprintln!(
            "resident memory after returning free memory to the OS (malloc_trim): {live:.0} MiB (+{:.0} MiB over before the load)",
            live - before
        );
    }

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
    let active = MetaFilter::Compare {
        key: "active",
        op: MetaOp::Eq,
        value: json!(true),
    };
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
    // normalise them into the copy, search. Closing the store and freeing its copy is
    // untimed.
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
    // the first store's next query is timed, reloading the copy (and freeing the old one).
    let other = rt.block_on(open_store(&path));
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
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
