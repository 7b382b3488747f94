//! What a vector store does, run on every backend: Chroma and the embedded store. Each
//! scenario writes through the `VectorStore` trait and checks what queries and reads return.

use std::collections::BTreeSet;

use dataflow_core::store::vector::{MetaFilter, MetaOp, VectorDoc, VectorStore};
use dataflow_tests::fixture::Backend;
use dataflow_tests::{on_both_backends, stores};
use serde_json::{Map, Value as Json, json};

fn doc(id: i64, embedding: [f32; 4], metadata: Json) -> VectorDoc {
    VectorDoc {
        id: id.to_string(),
        embedding: embedding.to_vec(),
        document: format!("document {id}"),
        metadata: metadata.as_object().cloned().expect("an object"),
    }
}

async fn ids(store: &dyn VectorStore, vector: [f32; 4], top_k: usize, filter: Option<&MetaFilter>) -> Vec<String> {
    store
        .query("items", &vector, top_k, filter)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect()
}

async fn queries_return_the_nearest_by_cosine_distance(backend: Backend) {
    let store = stores::vector(backend, "vector_nearest").await;
    let s = store.as_ref();
    assert!(ids(s, [1.0, 0.0, 0.0, 0.0], 3, None).await.is_empty(), "no collection yet");
    assert_eq!(s.count("items").await.unwrap(), 0);
    s.upsert(
        "items",
        vec![
            doc(1, [1.0, 0.0, 0.0, 0.0], json!({"id": 1})),
            doc(2, [1.0, 1.0, 0.0, 0.0], json!({"id": 2})),
            doc(3, [0.0, 1.0, 0.0, 0.0], json!({"id": 3})),
            doc(4, [-1.0, 0.0, 0.0, 0.0], json!({"id": 4})),
            doc(5, [10.0, 0.5, 0.0, 0.0], json!({"id": 5})),
        ],
    )
    .await
    .unwrap();
    assert_eq!(s.count("items").await.unwrap(), 5);
    let hits = s.query("items", &[2.0, 0.0, 0.0, 0.0], 10, None).await.unwrap();
    let order: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(order, ["1", "5", "2", "3", "4"], "nearest first, length does not count");
    let expected = [0.0, 1.0 - 10.0 / 100.25f32.sqrt(), 1.0 - std::f32::consts::FRAC_1_SQRT_2, 1.0, 2.0];
    for (hit, want) in hits.iter().zip(expected) {
        assert!(
            (hit.distance - want).abs() < 1e-3,
            "distance of {}: {} vs {want}",
            hit.id,
            hit.distance
        );
    }
    assert_eq!(hits[0].metadata, json!({"id": 1}).as_object().cloned().unwrap());
    assert_eq!(ids(s, [0.0, 1.0, 0.0, 0.0], 2, None).await, ["3", "2"]);
    assert!(ids(s, [0.0, 1.0, 0.0, 0.0], 0, None).await.is_empty());

    // Upserting an id replaces its vector and metadata.
    s.upsert("items", vec![doc(4, [0.0, 1.0, 0.1, 0.0], json!({"id": 4, "moved": true}))])
        .await
        .unwrap();
    let hits = s.query("items", &[0.0, 1.0, 0.1, 0.0], 1, None).await.unwrap();
    assert_eq!(hits[0].id, "4");
    assert_eq!(hits[0].metadata["moved"], json!(true));
    assert_eq!(s.count("items").await.unwrap(), 5);

    // Deleted ids are gone; unknown ids are ignored.
    s.delete("items", &["4".into(), "404".into()]).await.unwrap();
    assert_eq!(ids(s, [0.0, 1.0, 0.1, 0.0], 10, None).await, ["3", "2", "5", "1"]);
    assert_eq!(s.count("items").await.unwrap(), 4);

    // Reads return what was stored.
    let got = s.get("items", Some(&["2".into(), "404".into()]), 10, 0).await.unwrap();
    assert_eq!(got.len(), 1);
    // Chroma hands back the stored floats after a round trip of its own (1 - 6e-8 for 1).
    let stored = &got[0].embedding;
    assert!(
        stored.len() == 4 && stored.iter().zip([1.0, 1.0, 0.0, 0.0]).all(|(a, b)| (a - b).abs() < 1e-6),
        "{stored:?}"
    );
    assert_eq!(got[0].document, "document 2");
    let mut pages = BTreeSet::new();
    for offset in [0, 2, 4] {
        let page = s.get("items", None, 2, offset).await.unwrap();
        assert!(page.len() <= 2);
        pages.extend(page.into_iter().map(|d| d.id));
    }
    assert_eq!(pages, ["1", "2", "3", "5"].map(String::from).into());

    // A dropped collection is empty, and can be written again.
    s.drop_collection("items").await.unwrap();
    assert_eq!(s.count("items").await.unwrap(), 0);
    assert!(ids(s, [1.0, 0.0, 0.0, 0.0], 3, None).await.is_empty());
    s.upsert("items", vec![doc(7, [0.0, 0.0, 1.0, 0.0], json!({"id": 7}))])
        .await
        .unwrap();
    assert_eq!(ids(s, [1.0, 0.0, 0.0, 0.0], 3, None).await, ["7"]);
    s.drop_collection("never_written").await.unwrap();
    assert!(s.ping().await.is_ok());
}
on_both_backends!(queries_return_the_nearest_by_cosine_distance);

async fn metadata_filters_admit_what_they_describe(backend: Backend) {
    let store = stores::vector(backend, "vector_filters").await;
    let s = store.as_ref();
    let rows: Vec<Json> = (0..12)
        .map(|i| {
            json!({"id": i, "price": i as f64 * 2.5, "stock": i, "active": i % 2 == 0,
                   "sku": format!("S-{i:02}"), "tenant_id": if i < 6 { "a" } else { "b" }})
        })
        .collect();
    let docs = rows
        .iter()
        .enumerate()
        .map(|(i, m)| doc(i as i64, [1.0, i as f32 / 12.0, 0.0, 0.0], m.clone()))
        .collect();
    s.upsert("items", docs).await.unwrap();
    let metadata: Vec<Map<String, Json>> = rows.iter().map(|r| r.as_object().cloned().unwrap()).collect();
    let compare = |key, op, value| MetaFilter::Compare { key, op, value };
    let cases = vec![
        (compare("tenant_id", MetaOp::Eq, json!("a")), vec![0, 1, 2, 3, 4, 5]),
        (compare("active", MetaOp::Ne, json!(true)), vec![1, 3, 5, 7, 9, 11]),
        (compare("price", MetaOp::Gt, json!(20.0)), vec![9, 10, 11]),
        (compare("price", MetaOp::Gte, json!(20)), vec![8, 9, 10, 11]),
        (compare("stock", MetaOp::Lt, json!(2)), vec![0, 1]),
        (compare("stock", MetaOp::Lte, json!(2)), vec![0, 1, 2]),
        (compare("sku", MetaOp::In, json!(["S-03", "S-07", "nope"])), vec![3, 7]),
        (compare("stock", MetaOp::Nin, json!([0, 1, 2, 3, 4, 5, 6, 7, 8])), vec![9, 10, 11]),
        (
            MetaFilter::And(vec![
                compare("tenant_id", MetaOp::Eq, json!("b")),
                compare("active", MetaOp::Eq, json!(true)),
            ]),
            vec![6, 8, 10],
        ),
        (
            MetaFilter::Or(vec![
                compare("stock", MetaOp::Eq, json!(1)),
                compare("sku", MetaOp::Eq, json!("S-11")),
            ]),
            vec![1, 11],
        ),
        (MetaFilter::Nothing, vec![]),
    ];
    for (filter, want) in cases {
        let want: BTreeSet<String> = want.iter().map(|i: &i64| i.to_string()).collect();
        let reference: BTreeSet<String> = (0..12).filter(|&i| filter.matches(&metadata[i])).map(|i| i.to_string()).collect();
        assert_eq!(reference, want, "the reference evaluator disagrees about {filter:?}");
        let got: BTreeSet<String> = ids(s, [1.0, 0.5, 0.0, 0.0], 100, Some(&filter)).await.into_iter().collect();
        assert_eq!(got, want, "{filter:?}");
    }
    // A filter narrows before the top k are taken.
    let hits = ids(s, [1.0, 1.0, 0.0, 0.0], 2, Some(&compare("tenant_id", MetaOp::Eq, json!("a")))).await;
    assert_eq!(hits, ["5", "4"]);
}
on_both_backends!(metadata_filters_admit_what_they_describe);

async fn vectors_of_another_dimension_are_refused(backend: Backend) {
    let store = stores::vector(backend, "vector_dimensions").await;
    let s = store.as_ref();
    s.upsert("items", vec![doc(1, [1.0, 0.0, 0.0, 0.0], json!({"id": 1}))])
        .await
        .unwrap();
    let three = VectorDoc {
        embedding: vec![1.0, 0.0, 0.0],
        ..doc(2, [0.0; 4], json!({"id": 2}))
    };
    assert!(s.upsert("items", vec![three]).await.is_err());
    assert!(s.query("items", &[1.0, 0.0, 0.0], 1, None).await.is_err());
    assert_eq!(s.count("items").await.unwrap(), 1, "the refused document was not stored");
}
on_both_backends!(vectors_of_another_dimension_are_refused);

/// The in-memory copy follows writes made through another store on the same file (another
/// process, in practice): a query never answers from a copy older than the file.
#[tokio::test]
async fn the_embedded_copy_follows_writes_of_other_processes() {
    let file = stores::embedded_file("vector_other_writer");
    let (ours, theirs) = (stores::embedded_vectors(&file).await, stores::embedded_vectors(&file).await);
    ours.upsert("items", vec![doc(1, [1.0, 0.0, 0.0, 0.0], json!({"id": 1}))])
        .await
        .unwrap();
    assert_eq!(ids(&ours, [1.0, 0.0, 0.0, 0.0], 5, None).await, ["1"], "loads the copy");
    theirs
        .upsert(
            "items",
            vec![
                doc(2, [1.0, 0.1, 0.0, 0.0], json!({"id": 2})),
                doc(1, [0.0, 1.0, 0.0, 0.0], json!({"id": 1})),
            ],
        )
        .await
        .unwrap();
    assert_eq!(ids(&ours, [1.0, 0.0, 0.0, 0.0], 5, None).await, ["2", "1"]);
    theirs.delete("items", &["2".into()]).await.unwrap();
    assert_eq!(ids(&ours, [1.0, 0.0, 0.0, 0.0], 5, None).await, ["1"]);
    // And our own writes are applied to the loaded copy.
    ours.upsert("items", vec![doc(3, [1.0, 0.0, 0.0, 0.0], json!({"id": 3}))])
        .await
        .unwrap();
    assert_eq!(ids(&ours, [1.0, 0.0, 0.0, 0.0], 5, None).await, ["3", "1"]);
    theirs.drop_collection("items").await.unwrap();
    assert!(ids(&ours, [1.0, 0.0, 0.0, 0.0], 5, None).await.is_empty());
}

/// A copy loads in pages: every document of a collection larger than one page is found.
#[tokio::test]
async fn the_embedded_copy_loads_collections_larger_than_one_page() {
    let file = stores::embedded_file("vector_pages");
    let writer = stores::embedded_vectors(&file).await;
    let docs: Vec<VectorDoc> = (0..9_000)
        .map(|i| doc(i, [1.0, i as f32 / 9_000.0, 0.0, 0.0], json!({"id": i, "even": i % 2 == 0})))
        .collect();
    writer.upsert("items", docs).await.unwrap();
    let reader = stores::embedded_vectors(&file).await;
    assert_eq!(ids(&reader, [1.0, 0.0, 0.0, 0.0], 3, None).await, ["0", "1", "2"]);
    assert_eq!(ids(&reader, [0.0, 1.0, 0.0, 0.0], 2, None).await, ["8999", "8998"]);
    let even = MetaFilter::Compare {
        key: "even",
        op: MetaOp::Eq,
        value: json!(true),
    };
    assert_eq!(ids(&reader, [0.0, 1.0, 0.0, 0.0], 2, Some(&even)).await, ["8998", "8996"]);
    assert_eq!(reader.count("items").await.unwrap(), 9_000);
}

/// Many searches at once each get their own answer, the same as when sent alone; one of
/// another dimension fails alone. On Chroma, concurrent queries of one collection share
/// requests (`ChromaStore::query_counts`); the embedded store answers each in process.
async fn concurrent_queries_each_get_their_own_answer(backend: Backend) {
    let store = stores::vector(backend, "vector_concurrent").await;
    let docs: Vec<VectorDoc> = (0..40)
        .map(|i| {
            let a = i as f32 / 40.0 * std::f32::consts::PI;
            doc(
                i,
                [a.cos(), a.sin(), (i % 3) as f32 * 0.1, 0.2],
                json!({"id": i, "even": i % 2 == 0}),
            )
        })
        .collect();
    store.upsert("items", docs).await.unwrap();
    let even = MetaFilter::Compare {
        key: "even",
        op: MetaOp::Eq,
        value: json!(true),
    };
    // Each query: a direction, a top_k and maybe a filter; answered alone first.
    let queries: Vec<([f32; 4], usize, bool)> = (0..48)
        .map(|i| {
            let a = i as f32 / 48.0 * std::f32::consts::PI;
            ([a.cos(), a.sin(), 0.0, 0.1], 1 + i % 7, i % 4 == 0)
        })
        .collect();
    let mut alone = Vec::new();
    for (vector, top_k, filtered) in &queries {
        alone.push(ids(store.as_ref(), *vector, *top_k, filtered.then_some(&even)).await);
    }
    let mut tasks = Vec::new();
    for (vector, top_k, filtered) in queries.clone() {
        let (store, even) = (store.clone(), even.clone());
        tasks.push(tokio::spawn(async move {
            ids(store.as_ref(), vector, top_k, filtered.then_some(&even)).await
        }));
    }
    let wrong_dimension = {
        let store = store.clone();
        tokio::spawn(async move { store.query("items", &[1.0, 0.0, 0.0], 3, None).await })
    };
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(
            task.await.unwrap(),
            alone[i],
            "query {i} (top {}, filtered {})",
            queries[i].1,
            queries[i].2
        );
    }
    assert!(wrong_dimension.await.unwrap().is_err(), "a query of another dimension is refused");
}
on_both_backends!(concurrent_queries_each_get_their_own_answer);

/// Chroma: concurrent queries of one collection go out in fewer requests than queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chroma_queries_share_requests() {
    use dataflow_core::ChromaStore;
    let services = dataflow_tests::Services::global().await;
    let prefix = format!("{}_", services.unique_name("vector_shared"));
    let store = std::sync::Arc::new(ChromaStore::new(&services.chroma_url().await, &prefix, std::time::Duration::from_secs(30)).unwrap());
    store
        .upsert(
            "items",
            (0..20).map(|i| doc(i, [1.0, i as f32, 0.5, 0.0], json!({"id": i}))).collect(),
        )
        .await
        .unwrap();
    let before = store.query_counts();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.query("items", &[1.0, i as f32 / 10.0, 0.5, 0.0], 5, None).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().len(), 5);
    }
    let (queries, requests) = store.query_counts();
    let (queries, requests) = (queries - before.0, requests - before.1);
    assert_eq!(queries, 200);
    assert!(requests < queries, "200 concurrent queries went out in {requests} requests");
}

/// Chroma: concurrent small upserts (each a write's own projection) share requests, and every
/// document lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chroma_upserts_share_requests() {
    use dataflow_core::ChromaStore;
    let services = dataflow_tests::Services::global().await;
    let prefix = format!("{}_", services.unique_name("vector_upserts"));
    let store = std::sync::Arc::new(ChromaStore::new(&services.chroma_url().await, &prefix, std::time::Duration::from_secs(30)).unwrap());
    store
        .upsert("items", vec![doc(0, [1.0, 0.0, 0.0, 0.0], json!({"id": 0}))])
        .await
        .unwrap();
    let before = store.upsert_counts();
    let mut tasks = Vec::new();
    for i in 1..=150 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .upsert("items", vec![doc(i, [1.0, i as f32, 0.0, 1.0], json!({"id": i}))])
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let (calls, requests) = store.upsert_counts();
    assert_eq!(calls - before.0, 150);
    assert!(
        requests - before.1 < 150,
        "150 concurrent upserts went out in {} requests",
        requests - before.1
    );
    assert_eq!(store.count("items").await.unwrap(), 151, "every document landed");
    let stored = store.get("items", Some(&["77".to_owned()]), 10, 0).await.unwrap();
    assert_eq!(stored[0].metadata["id"], json!(77), "each document is its own");
}
