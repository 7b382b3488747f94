//! Search, graph and projection figures: Search top-10 over 10,000 products, graph
//! neighbours at depth 2 and 3, Create with every projection applied, and BulkUpsert of 10,000
//! products with projections (rows/s, and time until nothing is pending).
//! `DATAFLOW_BENCH_BACKEND=servers` (the default): live PostgreSQL, Redis, Chroma and
//! ArcadeDB's Bolt server (local processes started by the test harness), groups `projections`
//! and `projections_bulk`; `DATAFLOW_BENCH_BACKEND=embedded`: the embedded set (SQLite for the
//! rows, the graph and the vectors, the in-process cache), groups `projections_embedded` and
//! `projections_bulk_embedded`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dataflow_benches::{backend, backend_name, group_name, product, seed_catalogue};
use dataflow_core::consistency::projection::graph_relations;
use dataflow_core::nodes::bulk_upsert::BulkUpsertInput;
use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::graph::GraphInput;
use dataflow_core::nodes::search::SearchInput;
use dataflow_core::store::graph::GraphNode;
use dataflow_core::store::vector::VectorDoc;
use dataflow_core::{Model, Node};
use dataflow_models::{NewProduct, Product, ProductBulkUpsertNode, ProductCreateNode, ProductGraphNode, ProductSearchNode};
use dataflow_tests::fixture::Fixture;
use serde_json::{Value as Json, json};

const ROWS: usize = 10_000;

/// Bulk-upserts `rows` and returns how long until the outbox held nothing pending: the
/// node's own time when it applied every projection, plus `sync` rounds otherwise.
async fn bulk_until_settled(fx: &Fixture, rows: Vec<Json>) -> (Duration, Duration) {
    let start = Instant::now();
    let out = ProductBulkUpsertNode
        .run(
            &fx.ctx,
            BulkUpsertInput {
                rows,
                ..Default::default()
            },
        )
        .await
        .expect("bulk upsert");
    let written = start.elapsed();
    assert_eq!(out.errors.len(), 0);
    while fx.ctx.stores().outbox().pending_count().await.expect("pending") > 0 {
        fx.ctx.stores().outbox().sync().await.expect("sync");
    }
    (written, start.elapsed())
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let backend = backend();
    let fx = rt.block_on(Fixture::with_projections_on(backend, "bench_projections"));
    rt.block_on(seed_catalogue(&fx.ctx));
    let (written, settled) = rt.block_on(bulk_until_settled(&fx, (0..ROWS).map(product).collect()));
    eprintln!(
        "seeding 10,000 products with projections ({}): node {written:?}, 0 pending after {settled:?}",
        backend_name(backend)
    );
    let seq = AtomicUsize::new(1_000_000);

    let mut group = c.benchmark_group(group_name("projections", backend));
    group.measurement_time(Duration::from_secs(10));

    let queries = ["cordless drill 18 V", "bench product 4242", "two batteries driver", "drill driver"];
    let n = AtomicUsize::new(0);
    group.bench_function("search_top10_of_10000", |b| {
        b.to_async(&rt).iter(|| {
            let query = queries[n.fetch_add(1, Ordering::Relaxed) % queries.len()];
            let ctx = &fx.ctx;
            async move {
                let out = ProductSearchNode
                    .run(
                        ctx,
                        SearchInput {
                            query: Some(query.into()),
                            top_k: Some(10),
                            ..Default::default()
                        },
                    )
                    .await
                    .expect("search");
                assert_eq!(out.hits.len(), 10);
                out
            }
        })
    });

    for depth in [2u32, 3] {
        group.bench_function(format!("graph_neighbors_depth_{depth}"), |b| {
            b.to_async(&rt).iter(|| {
                let id = (n.fetch_add(7919, Ordering::Relaxed) % ROWS) as i64 + 1;
                let ctx = &fx.ctx;
                async move {
                    let input: GraphInput =
                        serde_json::from_value(json!({"op": "neighbors", "id": id, "direction": "both", "depth": depth})).expect("input");
                    let out = ProductGraphNode.run(ctx, input).await.expect("neighbours");
                    assert!(!out.neighbors.is_empty());
                    out
                }
            })
        });
    }

    // What one create's projections cost in each store on its own: the store calls a create
    // makes after its commit (one vector document, one graph node with its edges), without
    // the node around them. Both run concurrently inside a create.
    let stores = fx.ctx.stores();
    if let Some(vectors) = stores.vector() {
        let embedder = stores.embedder();
        group.bench_function("split_vector_upsert_one", |b| {
            b.to_async(&rt).iter(|| {
                let i = seq.fetch_add(1, Ordering::Relaxed);
                let text = format!("Bench product {i}\nCordless drill driver, 18 V, two batteries");
                let mut metadata = serde_json::Map::new();
                metadata.insert("id".into(), json!(i));
                let doc = VectorDoc {
                    id: i.to_string(),
                    embedding: embedder.embed(&[text.as_str()]).expect("an embedding").remove(0),
                    document: text,
                    metadata,
                };
                async move { vectors.upsert(Product::meta().table, vec![doc]).await.expect("vector upsert") }
            })
        });
    }
    if let Some(graph) = stores.graph() {
        let meta = Product::meta();
        let relations = graph_relations(meta);
        let relations = &relations;
        group.bench_function("split_graph_upsert_one", |b| {
            b.to_async(&rt).iter(|| {
                let i = seq.fetch_add(1, Ordering::Relaxed);
                let node = GraphNode {
                    id: i as i64,
                    props: serde_json::Map::from_iter([("sku".to_string(), json!(format!("B-{i:08}")))]),
                    edges: meta.relations.iter().map(|r| (r.name, Some(1))).collect(),
                };
                async move { graph.upsert_nodes(meta.name, relations, &[node]).await.expect("graph upsert") }
            })
        });
    }

    group.bench_function("create_with_projections", |b| {
        b.to_async(&rt).iter(|| {
            let i = seq.fetch_add(1, Ordering::Relaxed);
            let record: NewProduct = serde_json::from_value(product(i)).expect("valid");
            let ctx = &fx.ctx;
            async move {
                let out = ProductCreateNode.run(ctx, CreateInput { record }).await.expect("create");
                assert!(out.pending.is_empty());
                out
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group(group_name("projections_bulk", backend));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(60))
        .throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("bulk_upsert_10000_with_projections", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let fx = &fx;
            let seq = &seq;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let base = seq.fetch_add(ROWS, Ordering::Relaxed);
                    let (_, settled) = bulk_until_settled(fx, (base..base + ROWS).map(product).collect()).await;
                    total += settled;
                }
                total
            }
        })
    });
    group.finish();
}

criterion_group!(projections, benches);
criterion_main!(projections);
