//! Each vector collection keeps the embedder its vectors were made with, against live
//! PostgreSQL, Chroma, Redis and the Bolt graph server and on the embedded set: a process with
//! another embedder is refused its searches and its vector writes (the rows themselves are
//! written, their projections left pending), until `reembed` re-embeds the collection from the
//! relational store; a re-embedding stopped midway refuses searches and goes on from where it
//! stopped; and concurrent searches with the sentence model share its batches.

use std::sync::Arc;
use std::time::Duration;

use dataflow_core::nodes::search::SearchInput;
use dataflow_core::{Context, Error, Model, Node, Stores};
use dataflow_models::*;
use dataflow_tests::fixture::{Backend, Fixture, sample_product};
use dataflow_tests::models::minilm;
use dataflow_tests::on_both_backends;
use serde_json::json;

/// Products created one by one (each with its vector, inline), with descriptions of tools.
async fn create_products(ctx: &Context, from: usize, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let mut record = sample_product(i);
        record["name"] = json!(format!("Cordless drill driver {i}"));
        record["description"] = json!("Cordless drill driver with two lithium-ion batteries and a keyless chuck");
        let out = ProductCreateNode
            .run(ctx, serde_json::from_value(json!({"record": record})).unwrap())
            .await
            .expect("a product");
        ids.push(out.record.id());
    }
    ids
}

async fn search(ctx: &Context, query: &str) -> Result<Vec<i64>, Error> {
    let input: SearchInput = serde_json::from_value(json!({"query": query, "top_k": 5})).unwrap();
    let out = ProductSearchNode.run(ctx, input).await?;
    Ok(out.hits.iter().map(|h| h.record.id()).collect())
}

/// The same stores as `fx`'s, with the sentence model as the embedder.
async fn minilm_stores(fx: &Fixture) -> Stores {
    let stores = Stores::connect(&fx.config.clone().with_embedder(minilm())).await.unwrap();
    stores.migrate(&dataflow_models::all_models()).await.unwrap();
    stores
}

fn embedding_error(result: Result<Vec<i64>, Error>) -> String {
    match result {
        Err(e @ Error::Embedding { .. }) => e.to_string(),
        other => panic!("expected an embedding error, got {other:?}"),
    }
}

async fn a_collection_of_one_embedder_is_refused_to_another_until_reembedded(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "embed_records").await;
    fx.sample_categories().await;
    let hashing = &fx.ctx;
    let first = create_products(hashing, 1, 12).await;
    assert!(!search(hashing, "cordless drill driver").await.unwrap().is_empty());
    let record = fx.ctx.stores().vector_record(Product::meta()).await.unwrap().expect("a record");
    assert_eq!(
        (record.embedder.as_str(), record.dimension, record.reembedding_after),
        ("hashing-384", 384, None)
    );

    // A process with the sentence model: its searches are refused, naming both embedders and
    // the way out; its writes land in the relational store with the vector left pending.
    let minilm_ctx = Context::new(minilm_stores(&fx).await);
    let refused = embedding_error(search(&minilm_ctx, "battery screwdriver").await);
    for said in ["hashing-384", "all-MiniLM-L6-v2", "dataflow reembed Product", "searching"] {
        assert!(refused.contains(said), "{said}: {refused}");
    }
    let mut record = sample_product(100);
    record["name"] = json!("Impact wrench 100");
    let written = ProductCreateNode
        .run(&minilm_ctx, serde_json::from_value(json!({"record": record})).unwrap())
        .await
        .expect("the row is written");
    assert!(
        written.pending.contains(&dataflow_core::StoreKind::Vector),
        "the vector projection is pending: {:?}",
        written.pending
    );
    assert_eq!(
        fx.vector_documents("products").await.len(),
        first.len(),
        "no vector of the other embedder"
    );

    // Re-embedding from the relational store, page by page, with progress.
    let mut seen = Vec::new();
    let report = minilm_ctx
        .stores()
        .reembed(Product::meta(), 5, |p| seen.push((p.done, p.total)))
        .await
        .unwrap();
    assert_eq!(report.from.as_deref(), Some("hashing-384"));
    assert_eq!(report.to, "all-MiniLM-L6-v2");
    assert_eq!(report.embedded, 13);
    assert!(!report.resumed);
    assert_eq!(seen.first(), Some(&(0, 13)));
    assert_eq!(seen.last(), Some(&(13, 13)));
    assert_eq!(seen.len(), 1 + 3, "a call per page of 5: {seen:?}");
    assert_eq!(
        fx.vector_documents("products").await.len(),
        13,
        "every row, the pending one included"
    );
    let found = search(&minilm_ctx, "battery screwdriver").await.unwrap();
    assert!(first.contains(&found[0]), "a drill driver first: {found:?}");
    let record = minilm_ctx.stores().vector_record(Product::meta()).await.unwrap().unwrap();
    assert_eq!((record.embedder.as_str(), record.reembedding_after), ("all-MiniLM-L6-v2", None));

    // The hashing process reads the record again within a second and is refused in turn.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused = embedding_error(search(hashing, "cordless drill driver").await);
    assert!(refused.contains("holds vectors of the embedder all-MiniLM-L6-v2"), "{refused}");
}
on_both_backends!(a_collection_of_one_embedder_is_refused_to_another_until_reembedded);

async fn a_stopped_reembedding_refuses_searches_and_goes_on_where_it_stopped(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "embed_resume").await;
    fx.sample_categories().await;
    create_products(&fx.ctx, 1, 20).await;
    let stores = minilm_stores(&fx).await;
    // Stopped after its second page: the task is dropped at its next await, as a process
    // killed there would stop.
    let (pages, mut paged) = tokio::sync::mpsc::unbounded_channel();
    let running = tokio::spawn({
        let stores = stores.clone();
        async move {
            stores
                .reembed(Product::meta(), 5, move |p| {
                    let _ = pages.send(p.done);
                })
                .await
        }
    });
    while paged.recv().await.expect("progress") < 10 {}
    running.abort();
    let _ = running.await;
    let record = stores.vector_record(Product::meta()).await.unwrap().unwrap();
    let after = record.reembedding_after.expect("a re-embedding under way");
    assert!(after >= 10, "{record:?}");
    let ctx = Context::new(stores.clone());
    let refused = embedding_error(search(&ctx, "cordless drill").await);
    assert!(
        refused.contains("is being re-embedded") && refused.contains("dataflow reembed Product"),
        "{refused}"
    );

    let report = stores.reembed(Product::meta(), 5, |_| {}).await.unwrap();
    assert!(report.resumed, "{report:?}");
    assert_eq!(report.embedded, 20 - after as u64, "{report:?}");
    assert_eq!(fx.vector_documents("products").await.len(), 20);
    assert!(!search(&ctx, "cordless drill").await.unwrap().is_empty());
}
on_both_backends!(a_stopped_reembedding_refuses_searches_and_goes_on_where_it_stopped);

/// Many searches at once with the sentence model: each gets its own answer (the stores join
/// the concurrent embeddings into batches of the model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_searches_with_the_sentence_model_each_get_their_own_answer() {
    let fx = Fixture::with_projections_config_on(Backend::Embedded, "embed_concurrent", |c| c.with_embedder(minilm())).await;
    fx.sample_categories().await;
    let mut kinds = Vec::new();
    for (i, (name, description)) in [
        ("Cordless drill driver", "Battery drill driver with a keyless chuck and two speeds"),
        ("LED floodlight", "Outdoor floodlight, 50 W, IP65, for yards and car parks"),
        ("Safety helmet", "Hard hat with a six-point harness and chin strap"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut record = sample_product(i + 1);
        record["name"] = json!(name);
        record["description"] = json!(description);
        let out = ProductCreateNode
            .run(&fx.ctx, serde_json::from_value(json!({"record": record})).unwrap())
            .await
            .unwrap();
        kinds.push(out.record.id());
    }
    let queries = [
        "battery screwdriver",
        "exterior lighting for a car park",
        "protective headgear for builders",
    ];
    let ctx = Arc::new(fx.ctx.clone());
    let tasks: Vec<_> = (0..60)
        .map(|n| {
            let ctx = ctx.clone();
            tokio::spawn(async move { (n % 3, search(&ctx, queries[n % 3]).await.unwrap()) })
        })
        .collect();
    for task in tasks {
        let (kind, found) = task.await.unwrap();
        assert_eq!(found[0], kinds[kind], "{:?} found {found:?}", queries[kind]);
    }
    assert_eq!(fx.ctx.stores().embedder().name(), "all-MiniLM-L6-v2");
}
