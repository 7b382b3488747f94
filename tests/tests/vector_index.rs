//! The embedded vector store's approximate (HNSW) index, on real SQLite files: its recall
//! against the store's own exact search, filters, deletes and updates, the index file beside
//! the SQLite file (missing, stale, damaged), and a second store on the same file standing in
//! for another process. Behaviour only: no test here measures time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use dataflow_core::EmbeddedVectors;
use dataflow_core::store::relational::open_sqlite;
use dataflow_core::store::vector::{IndexSettings, MetaFilter, MetaOp, VectorDoc, VectorHit, VectorStore};
use dataflow_tests::vectors::StructuredVectors;
use serde_json::{Value as Json, json};

/// Dimensions of every vector (the hashing embedder's).
const DIMENSIONS: usize = 384;
/// Documents in the collection of most tests.
const DOCS: usize = 10_000;
/// The logical collection.
const COLLECTION: &str = "docs";

/// Index from 1,000 documents on, so that a 10,000-document collection is indexed whatever
/// the default threshold.
fn indexed() -> IndexSettings {
    IndexSettings {
        exact_below: 1_000,
        ..IndexSettings::default()
    }
}

/// Document `i`: its vector, and metadata with its id, a tenant (one of four) and a bucket
/// (one of a hundred).
fn document(i: usize, embedding: Vec<f32>) -> VectorDoc {
    let Json::Object(metadata) = json!({"id": i, "tenant": i % 4, "bucket": i % 100}) else {
        unreachable!("an object")
    };
    VectorDoc {
        id: i.to_string(),
        embedding,
        document: format!("document {i}"),
        metadata,
    }
}

/// The collection's documents: `count` seeded random vectors.
fn documents(count: usize) -> Vec<VectorDoc> {
    let mut rng = StructuredVectors::new(0x9E37_79B9_7F4A_7C15, DIMENSIONS);
    (0..count).map(|i| document(i, rng.vector())).collect()
}

/// Query vectors, none of them a stored one.
fn queries(count: usize) -> Vec<Vec<f32>> {
    let mut rng = StructuredVectors::new(0xD1B5_4A32_D192_ED03, DIMENSIONS);
    (0..count).map(|_| rng.vector()).collect()
}

/// A fresh SQLite file for one test.
fn fresh_file(hint: &str) -> PathBuf {
    dataflow_tests::embedded::fresh_home(hint).join("vectors.db")
}

/// A store over `file` with a pool of its own, as another process would open it.
async fn open(file: &Path, settings: IndexSettings) -> EmbeddedVectors {
    let db = open_sqlite(file, 4).await.expect("opening the SQLite file");
    EmbeddedVectors::open_with(db, "t_", settings)
        .await
        .expect("the embedded vector store")
}

/// The index file of the test collection beside `file`.
fn index_file(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.t_{COLLECTION}.usearch", file.display()))
}

async fn fill(store: &EmbeddedVectors, docs: Vec<VectorDoc>) {
    let mut docs = docs.into_iter().peekable();
    while docs.peek().is_some() {
        store.upsert(COLLECTION, docs.by_ref().take(1_000).collect()).await.expect("upsert");
    }
}

/// Waits for the collection's index and checks it holds every document.
async fn ready(store: &EmbeddedVectors) {
    let status = store.index_status(COLLECTION).await.expect("index status");
    assert_eq!(status.indexed, Some(status.documents), "the index holds the collection: {status:?}");
}

async fn search(store: &EmbeddedVectors, vector: &[f32], filter: Option<&MetaFilter>) -> Vec<VectorHit> {
    store.query(COLLECTION, vector, 10, filter).await.expect("query")
}

fn ids(hits: &[VectorHit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

/// The share of the exact top-10s that the indexed search found, over `queries`; checks on
/// the way that every hit the index returns carries the exact search's distance for it.
async fn recall(indexed: &EmbeddedVectors, exact: &EmbeddedVectors, queries: &[Vec<f32>], filter: Option<&MetaFilter>) -> f64 {
    let (mut found, mut wanted) = (0, 0);
    for query in queries {
        let (approximate, truth) = (search(indexed, query, filter).await, search(exact, query, filter).await);
        assert_eq!(approximate.len(), truth.len(), "as many hits as the exact search");
        let truth_ids: HashSet<&str> = ids(&truth).into_iter().collect();
        found += approximate.iter().filter(|h| truth_ids.contains(h.id.as_str())).count();
        wanted += truth.len();
        for hit in &approximate {
            if let Some(same) = truth.iter().find(|t| t.id == hit.id) {
                assert_eq!(
                    hit.distance, same.distance,
                    "document {} scored as the exact search scores it",
                    hit.id
                );
            }
        }
        assert!(
            approximate.windows(2).all(|w| w[0].distance <= w[1].distance),
            "nearest first: {approximate:?}"
        );
    }
    found as f64 / wanted as f64
}

#[tokio::test]
async fn the_index_finds_at_least_95_percent_of_the_exact_top_10() {
    let file = fresh_file("index_recall");
    let store = open(&file, indexed()).await;
    fill(&store, documents(DOCS)).await;
    ready(&store).await;
    let exact = open(&file, IndexSettings::exact()).await;
    let recall = recall(&store, &exact, &queries(100), None).await;
    eprintln!("recall@10 over {DOCS} x {DIMENSIONS}: {recall:.3}");
    assert!(recall >= 0.95, "recall@10 {recall:.3} < 0.95");
    assert!(index_file(&file).exists(), "the index is saved beside the SQLite file");
}

#[tokio::test]
async fn filters_are_honoured_whichever_way_the_search_goes() {
    let file = fresh_file("index_filters");
    let store = open(&file, indexed()).await;
    fill(&store, documents(DOCS)).await;
    ready(&store).await;
    let exact = open(&file, IndexSettings::exact()).await;
    let queries = queries(30);
    let compare = |key, op, value| MetaFilter::Compare { key, op, value };

    // A quarter of the documents (one tenant): the index serves it, with the filter applied
    // in the graph search.
    let tenant = compare("tenant", MetaOp::Eq, json!(1));
    for query in &queries[..10] {
        let hits = search(&store, query, Some(&tenant)).await;
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.metadata["tenant"] == json!(1)), "only tenant 1: {hits:?}");
    }
    let tenant_recall = recall(&store, &exact, &queries, Some(&tenant)).await;
    assert!(tenant_recall >= 0.95, "recall@10 within one tenant {tenant_recall:.3}");

    // One document in a hundred: the exact scan of the admitted ones, so the same answer as
    // the exact store's.
    let bucket = compare("bucket", MetaOp::Eq, json!(7));
    for query in &queries[..5] {
        let hits = search(&store, query, Some(&bucket)).await;
        assert!(hits.iter().all(|h| h.metadata["bucket"] == json!(7)));
        assert_eq!(hits, search(&exact, query, Some(&bucket)).await);
    }

    // Fewer admitted documents than asked for: all of them, nearest first.
    let three = compare("id", MetaOp::In, json!([5, 500, 5000]));
    let hits = search(&store, &queries[0], Some(&three)).await;
    let mut found = ids(&hits);
    found.sort_unstable();
    assert_eq!(found, ["5", "500", "5000"]);
    assert_eq!(hits, search(&exact, &queries[0], Some(&three)).await);
}

#[tokio::test]
async fn deletes_and_updates_reach_the_index() {
    let file = fresh_file("index_writes");
    let store = open(&file, indexed()).await;
    let docs = documents(DOCS);
    fill(&store, docs.clone()).await;
    ready(&store).await;

    // A stored vector finds its own document first.
    let top = |hits: Vec<VectorHit>| hits.first().map(|h| h.id.clone()).expect("a hit");
    assert_eq!(top(search(&store, &docs[42].embedding, None).await), "42");

    // Deleted: gone from the answers.
    let gone: Vec<String> = ["42", "43", "9999"].map(String::from).to_vec();
    store.delete(COLLECTION, &gone).await.expect("delete");
    for id in [42usize, 43, 9999] {
        let hits = search(&store, &docs[id].embedding, None).await;
        assert!(!ids(&hits).contains(&id.to_string().as_str()), "{id} was deleted: {hits:?}");
        assert_eq!(hits.len(), 10);
    }

    // Updated: document 7 takes document 42's old vector and new metadata.
    let mut moved = document(7, docs[42].embedding.clone());
    moved.metadata.insert("tenant".into(), json!(99));
    store.upsert(COLLECTION, vec![moved]).await.expect("update");
    let hits = search(&store, &docs[42].embedding, None).await;
    assert_eq!(ids(&hits)[0], "7");
    assert!(hits[0].distance.abs() < 1e-5);
    assert_eq!(hits[0].metadata["tenant"], json!(99));
    let near_old = search(&store, &docs[7].embedding, None).await;
    assert_ne!(ids(&near_old).first(), Some(&"7"), "document 7's old vector is not its any more");

    // Re-inserted after its delete: found again.
    store.upsert(COLLECTION, vec![docs[43].clone()]).await.expect("re-insert");
    assert_eq!(top(search(&store, &docs[43].embedding, None).await), "43");

    let status = store.index_status(COLLECTION).await.expect("status");
    assert_eq!(status.documents, DOCS - 2);
    assert_eq!(status.indexed, Some(DOCS - 2));
    assert_eq!(store.count(COLLECTION).await.expect("count"), (DOCS - 2) as u64);
}

#[tokio::test]
async fn a_missing_stale_or_damaged_index_file_is_rebuilt_or_brought_in_step() {
    let file = fresh_file("index_file");
    let docs = documents(DOCS);
    {
        let store = open(&file, indexed()).await;
        fill(&store, docs.clone()).await;
        ready(&store).await;
    }
    let path = index_file(&file);
    assert!(path.exists());
    let exact = open(&file, IndexSettings::exact()).await;
    let probe = queries(5);
    let agree = |a: Vec<VectorHit>, b: Vec<VectorHit>| {
        let (a, b): (HashSet<String>, HashSet<String>) = (a.into_iter().map(|h| h.id).collect(), b.into_iter().map(|h| h.id).collect());
        a.intersection(&b).count()
    };

    // Missing: the first query answers (exactly, while the index is built), then the index
    // is back, in memory and on disk.
    std::fs::remove_file(&path).expect("removing the index file");
    let store = open(&file, indexed()).await;
    assert_eq!(ids(&search(&store, &docs[3].embedding, None).await)[0], "3");
    ready(&store).await;
    assert!(path.exists(), "rebuilt and saved");
    drop(store);

    // Stale: written at an older generation. Writes through a store that keeps no index
    // (another process) leave the file behind; a new store loads it and brings it in step.
    let before = std::fs::metadata(&path).expect("the file").modified().expect("mtime");
    exact.delete(COLLECTION, &["1".to_owned(), "2".to_owned()]).await.expect("delete");
    let mut rng = StructuredVectors::new(0x1234_5678, DIMENSIONS);
    let fresh: Vec<VectorDoc> = (DOCS..DOCS + 20).map(|i| document(i, rng.vector())).collect();
    exact.upsert(COLLECTION, fresh.clone()).await.expect("upsert");
    assert_eq!(std::fs::metadata(&path).expect("the file").modified().expect("mtime"), before);
    let store = open(&file, indexed()).await;
    ready(&store).await;
    for doc in &fresh[..5] {
        assert_eq!(
            ids(&search(&store, &doc.embedding, None).await)[0],
            doc.id,
            "a document written after the file"
        );
    }
    for id in [1usize, 2] {
        assert!(!ids(&search(&store, &docs[id].embedding, None).await).contains(&id.to_string().as_str()));
    }
    let found: usize = {
        let mut found = 0;
        for q in &probe {
            found += agree(search(&store, q, None).await, search(&exact, q, None).await);
        }
        found
    };
    assert!(
        found >= probe.len() * 9,
        "{found} of {} agree with the exact search",
        probe.len() * 10
    );
    drop(store);

    // Far behind (more changes than are worth patching on a query's path): rebuilt.
    let many: Vec<VectorDoc> = (DOCS + 20..DOCS + 2_600).map(|i| document(i, rng.vector())).collect();
    fill(&exact, many.clone()).await;
    let store = open(&file, indexed()).await;
    ready(&store).await;
    assert_eq!(ids(&search(&store, &many[2_000].embedding, None).await)[0], many[2_000].id);
    drop(store);

    // Damaged: a file of the right name that is not an index, then one cut short.
    let whole = std::fs::read(&path).expect("the index file");
    for damaged in [b"not an index at all".to_vec(), whole[..whole.len() / 2].to_vec()] {
        std::fs::write(&path, &damaged).expect("damaging the file");
        let store = open(&file, indexed()).await;
        assert_eq!(ids(&search(&store, &docs[4].embedding, None).await)[0], "4");
        ready(&store).await;
        assert_eq!(ids(&search(&store, &fresh[7].embedding, None).await)[0], fresh[7].id);
        assert!(
            std::fs::metadata(&path).expect("the file").len() > damaged.len() as u64,
            "rewritten"
        );
    }
}

#[tokio::test]
async fn a_second_store_on_the_same_file_sees_the_first_ones_writes() {
    let file = fresh_file("index_processes");
    let docs = documents(DOCS);
    let first = open(&file, indexed()).await;
    fill(&first, docs.clone()).await;
    ready(&first).await;
    let second = open(&file, indexed()).await;
    ready(&second).await;

    let mut rng = StructuredVectors::new(0xABCD_EF01, DIMENSIONS);
    let new = document(DOCS, rng.vector());
    first.upsert(COLLECTION, vec![new.clone()]).await.expect("upsert");
    first.delete(COLLECTION, &["5".to_owned()]).await.expect("delete");
    let mut changed = document(6, docs[5].embedding.clone());
    changed.metadata.insert("tenant".into(), json!(42));
    first.upsert(COLLECTION, vec![changed]).await.expect("update");

    for store in [&second, &first] {
        assert_eq!(ids(&search(store, &new.embedding, None).await)[0], new.id);
        let hits = search(store, &docs[5].embedding, None).await;
        assert_eq!(ids(&hits)[0], "6", "document 6 has document 5's old vector");
        assert_eq!(hits[0].metadata["tenant"], json!(42));
        assert!(!ids(&hits).contains(&"5"));
        let status = store.index_status(COLLECTION).await.expect("status");
        assert_eq!(status.indexed, Some(DOCS));
    }

    // And the other way round.
    second.delete(COLLECTION, std::slice::from_ref(&new.id)).await.expect("delete");
    assert!(!ids(&search(&first, &new.embedding, None).await).contains(&new.id.as_str()));
}

#[tokio::test]
async fn small_collections_and_in_memory_databases_keep_no_index_file() {
    // Below the threshold: searched exactly, no index, no file.
    let file = fresh_file("index_small");
    let store = open(
        &file,
        IndexSettings {
            exact_below: 5_000,
            ..IndexSettings::default()
        },
    )
    .await;
    fill(&store, documents(1_000)).await;
    let status = store.index_status(COLLECTION).await.expect("status");
    assert_eq!((status.documents, status.indexed), (1_000, None));
    assert!(!index_file(&file).exists());

    // An in-memory database indexes in memory and writes no file.
    let mut options = dataflow_core::sea_orm::ConnectOptions::new("sqlite::memory:");
    options.max_connections(1);
    let db = dataflow_core::sea_orm::Database::connect(options).await.expect("in-memory SQLite");
    let memory = EmbeddedVectors::open_with(db, "t_", indexed()).await.expect("the store");
    let docs = documents(2_000);
    fill(&memory, docs.clone()).await;
    let status = memory.index_status(COLLECTION).await.expect("status");
    assert_eq!((status.indexed, status.file), (Some(2_000), None));
    assert_eq!(ids(&search(&memory, &docs[1_234].embedding, None).await)[0], "1234");
}
