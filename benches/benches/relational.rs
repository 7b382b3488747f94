//! Relational node latency and throughput: Create, Read (cache miss, cache hit), List,
//! BulkUpsert, and raw sqlx as the ceiling for each write: a single-row INSERT for Create, COPY
//! for BulkUpsert. `DATAFLOW_BENCH_BACKEND=servers` (the default): live PostgreSQL and Redis,
//! local processes started by the test harness, groups `relational` and `bulk`;
//! `DATAFLOW_BENCH_BACKEND=embedded`: SQLite and the in-process cache, groups
//! `relational_embedded` and `bulk_embedded`, without the two PostgreSQL-only ceilings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dataflow_benches::{backend, group_name, product, seed_catalogue};
use dataflow_core::nodes::bulk_upsert::BulkUpsertInput;
use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::list::ListInput;
use dataflow_core::nodes::read::{CacheOutcome, ReadInput};
use dataflow_core::{Context, Filter, MemoryCache, Model, Node, Stores};
use dataflow_models::{NewProduct, Product, ProductBulkUpsertNode, ProductCreateNode, ProductListNode, ProductReadNode};
use dataflow_tests::fixture::{Backend, Fixture};
use serde_json::{Value as Json, json};

const ROWS: usize = 10_000;

/// The context the nodes run in: the relational store and a cache, nothing else. On the
/// servers that is the fixture's own (PostgreSQL and Redis). The embedded fixture connects
/// all four stores, and a write would then also embed the row and apply its vector and graph
/// projections; so that both backends do the same work, the embedded context keeps the
/// fixture's SQLite store with a fresh in-process cache, and leaves the vector and graph
/// stores out.
fn relational_and_cache(fx: &Fixture) -> Context {
    match fx.backend {
        Backend::Servers => fx.ctx.clone(),
        Backend::Embedded => {
            let stores = Stores::builder(fx.ctx.stores().relational().clone())
                .cache(Some(Arc::new(MemoryCache::default())), fx.cache_prefix.clone())
                .build();
            stores.register_models(&dataflow_models::all_models());
            Context::new(stores)
        }
    }
}

fn benches(c: &mut Criterion) {
    let backend = backend();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let fx = rt.block_on(Fixture::on(backend, "bench"));
    let ctx = relational_and_cache(&fx);
    let seq = AtomicUsize::new(1_000_000);

    // The categories, manufacturers and suppliers the products name (writes check them),
    // then a table of 10,000 products for List and Read.
    rt.block_on(seed_catalogue(&ctx));
    let seeded = rt.block_on(ProductBulkUpsertNode.run(
        &ctx,
        BulkUpsertInput {
            rows: (0..ROWS).map(product).collect(),
            ..Default::default()
        },
    ));
    let seeded = seeded.expect("seed");
    assert!(seeded.errors.is_empty(), "seeding: {:?}", &seeded.errors[..1]);
    let ids: Vec<i64> = seeded.ids.into_iter().flatten().collect();
    rt.block_on(fx.sql("ANALYZE products", vec![]));

    let mut group = c.benchmark_group(group_name("relational", backend));
    group.measurement_time(Duration::from_secs(8));

    group.bench_function("create", |b| {
        b.to_async(&rt).iter(|| {
            let i = seq.fetch_add(1, Ordering::Relaxed);
            let record: NewProduct = serde_json::from_value(product(i)).expect("valid");
            let ctx = &ctx;
            async move { ProductCreateNode.run(ctx, CreateInput { record }).await.expect("create") }
        })
    });

    // A product that names no supplier: its category and manufacturer (models without soft
    // delete) are what PostgreSQL's FOREIGN KEY constraints check on their own, so on the
    // servers the node sends the INSERT alone; a supplier (soft-deleted ones may not be
    // named) keeps the node's own check and its transaction.
    group.bench_function("create_without_supplier", |b| {
        b.to_async(&rt).iter(|| {
            let i = seq.fetch_add(1, Ordering::Relaxed);
            let mut product = product(i);
            product["supplier_id"] = Json::Null;
            let record: NewProduct = serde_json::from_value(product).expect("valid");
            let ctx = &ctx;
            async move { ProductCreateNode.run(ctx, CreateInput { record }).await.expect("create") }
        })
    });

    // The ceiling for Create: the same single-row INSERT ... RETURNING through sqlx directly.
    // PostgreSQL only: on the embedded set this bench is skipped (no SQLite counterpart is
    // offered as a ceiling).
    if backend == Backend::Servers {
        let raw_pool = fx.db().get_postgres_connection_pool().clone();
        group.bench_function("raw_sqlx_insert", |b| {
            b.to_async(&rt).iter(|| {
                let i = seq.fetch_add(1, Ordering::Relaxed);
                let pool = raw_pool.clone();
                async move {
                    dataflow_core::sea_orm::sqlx::query(
                        "INSERT INTO products (sku, name, description, price, currency, stock, weight_kg, active, category_id, manufacturer_id, supplier_id, attributes) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING *",
                    )
                    .bind(format!("R-{i:08}"))
                    .bind("Bench product")
                    .bind("Cordless drill driver, 18 V, two batteries")
                    .bind(10.99f64)
                    .bind("EUR")
                    .bind(5i64)
                    .bind(1.5f64)
                    .bind(true)
                    .bind(3i64)
                    .bind(1i64)
                    .bind(2i64)
                    .bind(json!({"voltage": 18}))
                    .fetch_one(&pool)
                    .await
                    .expect("raw insert")
                }
            })
        });
    }

    let hot = ids[42];
    rt.block_on(ProductReadNode.run(
        &ctx,
        ReadInput {
            id: hot,
            include_deleted: false,
            required: false,
        },
    ))
    .expect("warm");
    group.bench_function("read_cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let out = ProductReadNode
                .run(
                    &ctx,
                    ReadInput {
                        id: hot,
                        include_deleted: false,
                        required: false,
                    },
                )
                .await
                .expect("read");
            debug_assert_eq!(out.cache, CacheOutcome::Hit);
            out
        })
    });

    // A miss every time: the entry is invalidated (untimed) before each timed read.
    let cache = ctx.stores().cache().expect("a cache");
    group.bench_function("read_cache_miss", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let ctx = &ctx;
            let ids = &ids;
            async move {
                let mut total = Duration::ZERO;
                for n in 0..iters {
                    let id = ids[n as usize % ids.len()];
                    let key = ctx.stores().cache_key(Product::meta(), None, id);
                    cache.invalidate(&[(key, 1)], Duration::from_secs(60)).await.expect("invalidate");
                    let start = Instant::now();
                    let out = ProductReadNode
                        .run(
                            ctx,
                            ReadInput {
                                id,
                                include_deleted: false,
                                required: false,
                            },
                        )
                        .await
                        .expect("read");
                    total += start.elapsed();
                    assert_eq!(out.cache, CacheOutcome::Miss);
                }
                total
            }
        })
    });

    let filter: Filter = serde_json::from_value(json!({"price": {"$gte": 100, "$lt": 400}, "active": true})).expect("filter");
    group.bench_function("list_50_of_10000", |b| {
        b.to_async(&rt).iter(|| async {
            let page = ProductListNode
                .run(
                    &ctx,
                    ListInput {
                        filter: Some(filter.clone()),
                        limit: Some(50),
                        ..Default::default()
                    },
                )
                .await
                .expect("list");
            assert_eq!(page.records.len(), 50);
            page
        })
    });
    group.finish();

    let mut group = c.benchmark_group(group_name("bulk", backend));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("bulk_upsert_10000", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let ctx = &ctx;
            let seq = &seq;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let base = seq.fetch_add(ROWS, Ordering::Relaxed);
                    let rows: Vec<Json> = (base..base + ROWS).map(product).collect();
                    let start = Instant::now();
                    let out = ProductBulkUpsertNode
                        .run(
                            ctx,
                            BulkUpsertInput {
                                rows,
                                ..Default::default()
                            },
                        )
                        .await
                        .expect("bulk");
                    total += start.elapsed();
                    assert_eq!(out.inserted as usize, ROWS);
                }
                total
            }
        })
    });

    // The ceiling: the same rows as CSV through sqlx's COPY into a table of the same shape.
    // PostgreSQL only: on the embedded set this bench is skipped (SQLite has no COPY).
    if backend == Backend::Servers {
        rt.block_on(fx.sql("CREATE TABLE products_copy (LIKE products INCLUDING ALL)", vec![]));
        let pool = fx.db().get_postgres_connection_pool().clone();
        group.bench_function("raw_sqlx_copy_10000", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let pool = pool.clone();
                let seq = &seq;
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let base = seq.fetch_add(ROWS, Ordering::Relaxed);
                        let start = Instant::now();
                        let mut csv = String::with_capacity(ROWS * 160);
                        for i in base..base + ROWS {
                            let p = product(i);
                            csv.push_str(&format!(
                                "{},{},\"{}\",\"{}\",{},{},{},{},{},{},{},{},\"{}\"\n",
                                i, p["sku"].as_str().unwrap(), p["name"].as_str().unwrap(), p["description"].as_str().unwrap(),
                                p["price"], p["currency"].as_str().unwrap(), p["stock"], p["weight_kg"], p["active"],
                                p["category_id"], p["manufacturer_id"], p["supplier_id"], p["attributes"].to_string().replace('"', "\"\"")
                            ));
                        }
                        let mut conn = pool.acquire().await.expect("connection");
                        let mut copy = conn
                            .copy_in_raw("COPY products_copy (id, sku, name, description, price, currency, stock, weight_kg, active, category_id, manufacturer_id, supplier_id, attributes) FROM STDIN (FORMAT csv)")
                            .await
                            .expect("copy in");
                        copy.send(csv.as_bytes()).await.expect("send");
                        let n = copy.finish().await.expect("finish");
                        total += start.elapsed();
                        assert_eq!(n as usize, ROWS);
                    }
                    total
                }
            })
        });
    }
    group.finish();
}

criterion_group!(relational, benches);
criterion_main!(relational);
