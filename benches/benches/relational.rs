//! Relational node latency and throughput, each node beside the raw calls it makes at least,
//! measured in the same run: Create beside a single-row INSERT through sqlx, Read (cache hit)
//! beside one `GET` through the `redis` crate, Read (cache miss) beside `GET` + `SELECT` by id +
//! `SET`, List beside the same `SELECT` decoded into the same `Record<Product>`, Update and
//! Delete beside their `UPDATE` and the cache entry's `SET`, BulkUpsert beside `COPY`. After the
//! criterion groups it prints node / floor for each pair (criterion medians), then runs 100
//! clients of a Create+Read workflow through the runtime and writes its throughput to
//! `target/load/relational.json` (gate `create_read_workflows_per_second_100` in
//! `benches/sla.toml`).
//!
//! `DATAFLOW_BENCH_BACKEND=servers` (the default): live PostgreSQL and Redis, local processes
//! started by the test harness, groups `relational` and `bulk`; `DATAFLOW_BENCH_BACKEND=embedded`:
//! SQLite and the in-process cache, groups `relational_embedded` and `bulk_embedded`, without
//! the raw floors (they are PostgreSQL and Redis clients) and without the workflow scenario.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use dataflow_benches::cpu::{CpuMeter, workload_processes};
use dataflow_benches::{backend, group_name, product, seed_catalogue};
use dataflow_core::nodes::bulk_upsert::BulkUpsertInput;
use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::delete::DeleteInput;
use dataflow_core::nodes::list::ListInput;
use dataflow_core::nodes::read::{CacheOutcome, ReadInput};
use dataflow_core::nodes::update::UpdateInput;
use dataflow_core::sea_orm::sqlx::{self, PgPool, Row, postgres::PgRow};
use dataflow_core::{Context, Filter, MemoryCache, Model, Node, Record, Stores};
use dataflow_models::{
    NewProduct, Product, ProductBulkUpsertNode, ProductCreateNode, ProductDeleteNode, ProductListNode, ProductReadNode, ProductUpdateNode,
};
use dataflow_runtime::{RunStatus, Runtime, yaml};
use dataflow_tests::fixture::{Backend, Fixture};
use futures::StreamExt;
use serde_json::{Value as Json, json};

const ROWS: usize = 10_000;
/// Clients of the Create+Read workflow scenario, and the runs they share.
const WORKFLOW_CLIENTS: usize = 100;
const WORKFLOW_RUNS: usize = 10_000;

/// The node benches of group `relational` and the raw floor each is read against.
const FLOORS: &[(&str, &str)] = &[
    ("create", "raw_sqlx_insert"),
    ("create_without_supplier", "raw_sqlx_insert"),
    ("read_cache_hit", "raw_redis_get"),
    ("read_cache_miss", "raw_get_select_set"),
    ("list_50_of_10000", "raw_select_50_decoded"),
    ("update", "raw_update_and_tombstone"),
    ("delete", "raw_delete_and_tombstone"),
];

/// The record columns of `products`, in the order [`product_record`] decodes them.
const PRODUCT_COLUMNS: &str = "\"id\", \"sku\", \"name\", \"description\", \"price\", \"currency\", \"stock\", \"weight_kg\", \"active\", \
                               \"category_id\", \"manufacturer_id\", \"supplier_id\", \"attributes\", \"version\", \"created_at\", \"updated_at\", \"deleted_at\"";

/// The single-row INSERT of the Create floor, and of the rows the Delete benches delete.
const RAW_INSERT: &str = "INSERT INTO products (sku, name, description, price, currency, stock, weight_kg, active, category_id, manufacturer_id, supplier_id, attributes) \
                          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING *";

/// A row of `products` decoded by hand into the struct the nodes return: the raw floor's
/// share of the decoding work.
fn product_record(row: &PgRow) -> Record<Product> {
    Record {
        data: Product {
            id: row.get(0),
            sku: row.get(1),
            name: row.get(2),
            description: row.get(3),
            price: row.get(4),
            currency: row.get(5),
            stock: row.get(6),
            weight_kg: row.get(7),
            active: row.get(8),
            category_id: row.get(9),
            manufacturer_id: row.get(10),
            supplier_id: row.get(11),
            attributes: row.get(12),
        },
        version: row.get(13),
        created_at: row.get(14),
        updated_at: row.get(15),
        deleted_at: row.get(16),
    }
}

/// Inserts bench product `i` through sqlx and returns its id.
async fn raw_insert(pool: &PgPool, i: usize) -> i64 {
    sqlx::query(RAW_INSERT)
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
        .fetch_one(pool)
        .await
        .expect("raw insert")
        .get::<i64, _>("id")
}

/// Bench products `base..` in PostgreSQL's binary COPY format, columns as in the COPY floor.
fn binary_copy_rows(base: usize, rows: &[Json]) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => {
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(b);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let mut out = Vec::with_capacity(rows.len() * 200);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&[0u8; 8]);
    for (i, p) in rows.iter().enumerate() {
        out.extend_from_slice(&13i16.to_be_bytes());
        let int = |f: &str| p[f].as_i64().map(i64::to_be_bytes);
        let float = |f: &str| p[f].as_f64().map(|v| v.to_bits().to_be_bytes());
        field(&mut out, Some(&((base + i) as i64).to_be_bytes()));
        for f in ["sku", "name", "description"] {
            field(&mut out, p[f].as_str().map(str::as_bytes));
        }
        field(&mut out, float("price").as_ref().map(|b| &b[..]));
        field(&mut out, p["currency"].as_str().map(str::as_bytes));
        field(&mut out, int("stock").as_ref().map(|b| &b[..]));
        field(&mut out, float("weight_kg").as_ref().map(|b| &b[..]));
        field(&mut out, p["active"].as_bool().map(|b| [u8::from(b)]).as_ref().map(|b| &b[..]));
        for f in ["category_id", "manufacturer_id", "supplier_id"] {
            field(&mut out, int(f).as_ref().map(|b| &b[..]));
        }
        let mut jsonb = vec![1u8];
        jsonb.extend_from_slice(p["attributes"].to_string().as_bytes());
        field(&mut out, Some(&jsonb));
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Creates `table` as `products` is: its columns, defaults, indexes and FOREIGN KEY
/// constraints (`LIKE ... INCLUDING ALL` leaves the foreign keys out, and their checks are a
/// third of what PostgreSQL spends on a bulk insert into `products`).
fn floor_table(rt: &tokio::runtime::Runtime, fx: &Fixture, table: &str) {
    rt.block_on(async {
        fx.sql(&format!("CREATE TABLE {table} (LIKE products INCLUDING ALL)"), vec![]).await;
        let foreign_keys = fx
            .sql(
                "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid = 'products'::regclass AND contype = 'f'",
                vec![],
            )
            .await;
        assert!(!foreign_keys.is_empty(), "products has its foreign keys");
        for row in foreign_keys {
            let definition: String = row.try_get("", "def").expect("a constraint definition");
            fx.sql(&format!("ALTER TABLE {table} ADD {definition}"), vec![]).await;
        }
    });
}

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

/// The raw clients of the floors: a sqlx pool on the fixture's schema, and a Redis connection
/// of the `redis` crate's own (multiplexed, as the cache's is).
struct Raw {
    pool: PgPool,
    redis: redis::aio::MultiplexedConnection,
    /// The node's SELECT by id (sqlx takes a built statement as `&'static str`).
    select_by_id: &'static str,
}

impl Raw {
    async fn connect(fx: &Fixture) -> Raw {
        let client = redis::Client::open(fx.redis_url.as_str()).expect("redis url");
        // A pool of its own, with what sqlx can do at all: no ping before a connection is
        // handed out (sqlx's default pings each checkout), on the fixture's schema.
        let fixture_pool = fx.db().get_postgres_connection_pool();
        let options = fixture_pool
            .connect_options()
            .as_ref()
            .clone()
            .options([("search_path", fx.schema.as_str())]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(fixture_pool.options().get_max_connections())
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .expect("the floors' pool");
        Raw {
            pool,
            redis: client.get_multiplexed_async_connection().await.expect("redis connection"),
            select_by_id: format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE \"deleted_at\" IS NULL AND \"id\" = $1").leak(),
        }
    }

    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET").arg(key).query_async(&mut self.redis.clone()).await.expect("GET")
    }

    async fn set(&self, key: &str, value: &[u8]) {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(600_000)
            .query_async(&mut self.redis.clone())
            .await
            .expect("SET");
    }

    async fn select_by_id(&self, id: i64) -> Record<Product> {
        let row = sqlx::query(self.select_by_id)
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .expect("select by id");
        product_record(&row)
    }
}

fn benches(c: &mut Criterion, rt: &tokio::runtime::Runtime, fx: &Fixture) {
    let backend = fx.backend;
    let ctx = relational_and_cache(fx);
    let seq = AtomicUsize::new(1_000_000);
    let raw = (backend == Backend::Servers).then(|| rt.block_on(Raw::connect(fx)));

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
        b.to_async(rt).iter(|| {
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
        b.to_async(rt).iter(|| {
            let i = seq.fetch_add(1, Ordering::Relaxed);
            let mut product = product(i);
            product["supplier_id"] = Json::Null;
            let record: NewProduct = serde_json::from_value(product).expect("valid");
            let ctx = &ctx;
            async move { ProductCreateNode.run(ctx, CreateInput { record }).await.expect("create") }
        })
    });

    if let Some(raw) = &raw {
        // The floor of Create: the same single-row INSERT ... RETURNING through sqlx directly.
        group.bench_function("raw_sqlx_insert", |b| {
            b.to_async(rt).iter(|| raw_insert(&raw.pool, seq.fetch_add(1, Ordering::Relaxed)))
        });
    }

    let hot = ids[42];
    let read = |id| ReadInput {
        id,
        include_deleted: false,
        required: false,
    };
    rt.block_on(ProductReadNode.run(&ctx, read(hot))).expect("warm");
    group.bench_function("read_cache_hit", |b| {
        b.to_async(rt).iter(|| async {
            let out = ProductReadNode.run(&ctx, read(hot)).await.expect("read");
            debug_assert_eq!(out.cache, CacheOutcome::Hit);
            out
        })
    });
    let hot_key = ctx.stores().cache_key(Product::meta(), None, hot);
    if let Some(raw) = &raw {
        // The floor of a hit: one GET of the same entry, no decoding.
        group.bench_function("raw_redis_get", |b| {
            b.to_async(rt)
                .iter(|| async { raw.get(&hot_key).await.expect("the entry is cached") })
        });
    }

    // A miss every time: the entry is invalidated (untimed) before each timed read.
    let cache = ctx.stores().cache().expect("a cache");
    group.bench_function("read_cache_miss", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let ctx = &ctx;
            let ids = &ids;
            async move {
                let mut total = Duration::ZERO;
                for n in 0..iters {
                    let id = ids[n as usize % ids.len()];
                    let key = ctx.stores().cache_key(Product::meta(), None, id);
                    cache.invalidate(&[(key, 1)], Duration::from_secs(60)).await.expect("invalidate");
                    let start = Instant::now();
                    let out = ProductReadNode.run(ctx, read(id)).await.expect("read");
                    total += start.elapsed();
                    assert_eq!(out.cache, CacheOutcome::Miss);
                }
                total
            }
        })
    });
    if let Some(raw) = &raw {
        // The floor of a miss: GET (absent), SELECT by id decoded, SET of the encoded row.
        group.bench_function("raw_select_by_id", |b| {
            b.to_async(rt).iter(|| {
                let id = ids[seq.fetch_add(1, Ordering::Relaxed) % ids.len()];
                raw.select_by_id(id)
            })
        });
        let prefix = format!("{}:raw-miss:", fx.cache_prefix);
        group.bench_function("raw_get_select_set", |b| {
            b.to_async(rt).iter(|| {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let (id, key) = (ids[n % ids.len()], format!("{prefix}{n}"));
                async move {
                    assert!(raw.get(&key).await.is_none());
                    let record = raw.select_by_id(id).await;
                    raw.set(&key, &serde_json::to_vec(&record).expect("encode")).await;
                }
            })
        });
    }

    let filter: Filter = serde_json::from_value(json!({"price": {"$gte": 100, "$lt": 400}, "active": true})).expect("filter");
    group.bench_function("list_50_of_10000", |b| {
        b.to_async(rt).iter(|| async {
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
    if let Some(raw) = &raw {
        // The floor of List: the node's statement (51 rows, the 51st says whether a next page
        // exists), every row decoded into the same struct.
        let sql: &'static str = format!(
            "SELECT {PRODUCT_COLUMNS} FROM products WHERE TRUE AND \"deleted_at\" IS NULL AND (\"price\" >= $1 AND \"price\" < $2 AND \"active\" = $3) \
             ORDER BY \"id\" ASC LIMIT $4"
        )
        .leak();
        group.bench_function("raw_select_50_decoded", |b| {
            b.to_async(rt).iter(|| async {
                let rows = sqlx::query(sql)
                    .bind(100f64)
                    .bind(400f64)
                    .bind(true)
                    .bind(51i64)
                    .fetch_all(&raw.pool)
                    .await
                    .expect("select");
                let records: Vec<Record<Product>> = rows.iter().map(product_record).collect();
                assert_eq!(records.len(), 51);
                records
            })
        });
    }

    // Update: one field of a seeded row, whatever its version; the node invalidates the row's
    // cache entry after its commit. The value is new on every call: a patch that changes
    // nothing writes nothing (the node reads the row and commits), which a stock of `n % 50`
    // made of every call from the second pass over the rows on.
    group.bench_function("update", |b| {
        b.to_async(rt).iter(|| {
            let n = seq.fetch_add(1, Ordering::Relaxed);
            let mut patch = serde_json::Map::new();
            patch.insert("stock".into(), json!(n));
            let ctx = &ctx;
            let id = ids[n % ids.len()];
            async move { ProductUpdateNode.run(ctx, UpdateInput::by_id(id, patch)).await.expect("update") }
        })
    });
    let tombstone = |id: i64, version: i64| (ctx.stores().cache_key(Product::meta(), None, id), format!("!{version}"));
    if let Some(raw) = &raw {
        // The floor of Update: the UPDATE ... RETURNING of the row, then its cache entry
        // replaced (a tombstone, as the cache's invalidation writes).
        let sql: &'static str = format!(
            "UPDATE products SET \"stock\" = $1, \"version\" = \"version\" + 1, \"updated_at\" = now() \
             WHERE \"deleted_at\" IS NULL AND \"id\" = $2 RETURNING {PRODUCT_COLUMNS}"
        )
        .leak();
        group.bench_function("raw_update_and_tombstone", |b| {
            b.to_async(rt).iter(|| {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let id = ids[n % ids.len()];
                async move {
                    let row = sqlx::query(sql).bind(n as i64).bind(id).fetch_one(&raw.pool).await.expect("update");
                    let record = product_record(&row);
                    let (key, value) = tombstone(id, record.version);
                    raw.set(&key, value.as_bytes()).await;
                    record
                }
            })
        });
    }

    // Delete (soft, as Product's): a row inserted untimed before each timed delete.
    if let Some(raw) = &raw {
        group.bench_function("delete", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (ctx, seq) = (&ctx, &seq);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let id = raw_insert(&raw.pool, seq.fetch_add(1, Ordering::Relaxed)).await;
                        let start = Instant::now();
                        let input = DeleteInput {
                            id: Some(id),
                            filter: None,
                            hard: false,
                        };
                        let out = ProductDeleteNode.run(ctx, input).await.expect("delete");
                        total += start.elapsed();
                        assert_eq!(out.deleted, 1);
                    }
                    total
                }
            })
        });
        group.bench_function("raw_delete_and_tombstone", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let seq = &seq;
                let tombstone = &tombstone;
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let id = raw_insert(&raw.pool, seq.fetch_add(1, Ordering::Relaxed)).await;
                        let start = Instant::now();
                        let version: i64 = sqlx::query(
                            "UPDATE products SET \"deleted_at\" = now(), \"version\" = \"version\" + 1, \"updated_at\" = now() \
                             WHERE \"deleted_at\" IS NULL AND \"id\" = $1 RETURNING \"id\", \"version\"",
                        )
                        .bind(id)
                        .fetch_one(&raw.pool)
                        .await
                        .expect("delete")
                        .get(1);
                        let (key, value) = tombstone(id, version);
                        raw.set(&key, value.as_bytes()).await;
                        total += start.elapsed();
                    }
                    total
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group(group_name("bulk", backend));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("bulk_upsert_10000", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let ctx = &ctx;
            timed_batches(iters, &seq, move |_, rows| async move {
                let input = BulkUpsertInput {
                    rows,
                    ..Default::default()
                };
                let out = ProductBulkUpsertNode.run(ctx, input).await.expect("bulk");
                assert_eq!(out.inserted as usize, ROWS);
            })
        })
    });

    // The floor: the same rows as CSV through sqlx's COPY into a table of the same shape,
    // indexes and constraints.
    if let Some(raw) = &raw {
        floor_table(rt, fx, "products_copy");
        group.bench_function("raw_sqlx_copy_10000", |b| {
            b.to_async(rt).iter_custom(|iters| {
                // The CSV is written from each product inside the clock, as it was measured.
                timed_batches(iters, &seq, move |base, _| async move {
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
                    let mut conn = raw.pool.acquire().await.expect("connection");
                    let mut copy = conn
                        .copy_in_raw("COPY products_copy (id, sku, name, description, price, currency, stock, weight_kg, active, category_id, manufacturer_id, supplier_id, attributes) FROM STDIN (FORMAT csv)")
                        .await
                        .expect("copy in");
                    copy.send(csv.as_bytes()).await.expect("send");
                    let n = copy.finish().await.expect("finish");
                    assert_eq!(n as usize, ROWS);
                })
            })
        });
    }

    // Two ways an upsert can take its rows, raw, into a table of the same shape and indexes:
    // arrays bound as parameters and `unnest`ed into one INSERT ... ON CONFLICT, and binary COPY
    // into a temporary staging table, then one INSERT ... SELECT ... ON CONFLICT from it.
    if let Some(raw) = &raw {
        floor_table(rt, fx, "products_unnest");
        floor_table(rt, fx, "products_staged");
        const CONFLICT: &str = "ON CONFLICT (id) DO UPDATE SET sku = EXCLUDED.sku, name = EXCLUDED.name, description = EXCLUDED.description, \
                                price = EXCLUDED.price, currency = EXCLUDED.currency, stock = EXCLUDED.stock, weight_kg = EXCLUDED.weight_kg, \
                                active = EXCLUDED.active, category_id = EXCLUDED.category_id, manufacturer_id = EXCLUDED.manufacturer_id, \
                                supplier_id = EXCLUDED.supplier_id, attributes = EXCLUDED.attributes, version = t.version + 1, updated_at = now() \
                                RETURNING id, version";
        const COLUMNS: &str =
            "id, sku, name, description, price, currency, stock, weight_kg, active, category_id, manufacturer_id, supplier_id, attributes";
        let unnest: &'static str = format!(
            "INSERT INTO products_unnest AS t ({COLUMNS}) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::float8[], \
             $6::text[], $7::bigint[], $8::float8[], $9::boolean[], $10::bigint[], $11::bigint[], $12::bigint[], $13::jsonb[]) {CONFLICT}"
        )
        .leak();
        group.bench_function("raw_unnest_upsert_10000", |b| {
            b.to_async(rt).iter_custom(|iters| {
                timed_batches(iters, &seq, move |base, rows| async move {
                    let text = |f: &str| {
                        rows.iter()
                            .map(|p| p[f].as_str().unwrap_or_default().to_owned())
                            .collect::<Vec<_>>()
                    };
                    let int = |f: &str| rows.iter().map(|p| p[f].as_i64()).collect::<Vec<_>>();
                    let float = |f: &str| rows.iter().map(|p| p[f].as_f64()).collect::<Vec<_>>();
                    let returned = sqlx::query(unnest)
                        .bind((base..base + ROWS).map(|i| i as i64).collect::<Vec<_>>())
                        .bind(text("sku"))
                        .bind(text("name"))
                        .bind(text("description"))
                        .bind(float("price"))
                        .bind(text("currency"))
                        .bind(int("stock"))
                        .bind(float("weight_kg"))
                        .bind(rows.iter().map(|p| p["active"].as_bool()).collect::<Vec<_>>())
                        .bind(int("category_id"))
                        .bind(int("manufacturer_id"))
                        .bind(int("supplier_id"))
                        .bind(rows.iter().map(|p| p["attributes"].clone()).collect::<Vec<_>>())
                        .fetch_all(&raw.pool)
                        .await
                        .expect("unnest upsert");
                    assert_eq!(returned.len(), ROWS);
                })
            })
        });
        let staged: &'static str = format!("INSERT INTO products_staged AS t ({COLUMNS}) SELECT {COLUMNS} FROM staging {CONFLICT}").leak();
        let copy_staging: &'static str = format!("COPY staging ({COLUMNS}) FROM STDIN (FORMAT binary)").leak();
        group.bench_function("raw_binary_copy_staging_upsert_10000", |b| {
            b.to_async(rt).iter_custom(|iters| {
                timed_batches(iters, &seq, move |base, rows| async move {
                    let data = binary_copy_rows(base, &rows);
                    let mut tx = raw.pool.begin().await.expect("begin");
                    sqlx::query(
                        "CREATE TEMPORARY TABLE staging (id bigint, sku text, name text, description text, price float8, currency text, stock bigint, \
                         weight_kg float8, active boolean, category_id bigint, manufacturer_id bigint, supplier_id bigint, attributes jsonb) ON COMMIT DROP",
                    )
                    .execute(&mut *tx)
                    .await
                    .expect("staging table");
                    let mut copy = tx.copy_in_raw(copy_staging).await.expect("copy in");
                    copy.send(data).await.expect("send");
                    copy.finish().await.expect("finish");
                    let returned = sqlx::query(staged).fetch_all(&mut *tx).await.expect("upsert from staging");
                    tx.commit().await.expect("commit");
                    assert_eq!(returned.len(), ROWS);
                })
            })
        });
    }
    group.finish();
}

/// Times `write` on `iters` fresh batches of [`ROWS`] bench products numbered from `seq`,
/// each built before its clock starts; `write` gets the batch's first number and its rows.
async fn timed_batches<Fut: Future<Output = ()>>(
    iters: u64,
    seq: &AtomicUsize,
    mut write: impl FnMut(usize, Vec<Json>) -> Fut,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let base = seq.fetch_add(ROWS, Ordering::Relaxed);
        let rows: Vec<Json> = (base..base + ROWS).map(product).collect();
        let start = Instant::now();
        write(base, rows).await;
        total += start.elapsed();
    }
    total
}

/// Criterion's median of `group/bench` in this run, in microseconds.
fn median_us(group: &str, bench: &str) -> Option<f64> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let estimates: Json = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    Some(estimates["median"]["point_estimate"].as_f64()? / 1e3)
}

/// Prints every node beside its floor: both medians and their ratio.
fn print_floors() {
    println!("\nnode / raw floor (criterion medians of this run):");
    let bulk = [
        ("bulk_upsert_10000", "raw_sqlx_copy_10000"),
        ("raw_unnest_upsert_10000", "raw_sqlx_copy_10000"),
        ("raw_binary_copy_staging_upsert_10000", "raw_sqlx_copy_10000"),
    ];
    let pairs = FLOORS.iter().map(|p| ("relational", *p)).chain(bulk.iter().map(|p| ("bulk", *p)));
    for (group, (node, floor)) in pairs {
        match (median_us(group, node), median_us(group, floor)) {
            (Some(n), Some(f)) => println!("  {node:26} {n:11.1} µs   {floor:26} {f:11.1} µs   ratio {:5.2}", n / f),
            _ => println!("  {node:26} or {floor}: not measured in this run"),
        }
    }
}

/// The Create+Read workflow of the concurrent scenario: a product created, then read back
/// by the id the create returned.
const CREATE_READ: &str = "
name: create_read
description: creates a product and reads it back
inputs:
  product:
    type: object
    description: the new product
nodes:
  create:
    type: ProductCreateNode
  read:
    type: ProductReadNode
    params:
      required: true
connections:
  - {from: input.product, to: create.record}
  - {from: create.record.id, to: read.id}
outputs:
  sku: read.record.sku
";

/// 100 clients run the Create+Read workflow through the runtime, 10,000 runs in all; prints
/// the throughput and where the CPU went, and writes the figures for `scripts/sla`.
fn create_read_workflows(rt: &tokio::runtime::Runtime, fx: &Fixture) {
    let registry = dataflow_workflows::registry();
    let workflow = yaml::load_str(CREATE_READ, "create_read.yaml", &registry).unwrap_or_else(|e| panic!("{e}"));
    let runtime = Runtime::new(registry);
    let ctx = relational_and_cache(fx);
    let figures = rt.block_on(async {
        let run = |i: usize| {
            let (runtime, workflow, ctx) = (&runtime, &workflow, &ctx);
            async move { runtime.run(workflow, ctx, json!({"product": product(i)})).await.status }
        };
        // Warm the pool and the statement caches.
        for i in 0..200 {
            assert_eq!(run(5_000_000 + i).await, RunStatus::Succeeded);
        }
        // The servers this bench runs on (PostgreSQL and Redis), so that the budget has a total.
        let watched = workload_processes(fx.backend).await.into_iter().filter(|w| w.is_measured()).collect();
        let cpu = CpuMeter::start(watched);
        let start = Instant::now();
        let statuses: Vec<RunStatus> = futures::stream::iter((0..WORKFLOW_RUNS).map(|i| run(6_000_000 + i)))
            .buffer_unordered(WORKFLOW_CLIENTS)
            .collect()
            .await;
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu.stop();
        let failed = statuses.iter().filter(|s| **s != RunStatus::Succeeded).count();
        let per_second = WORKFLOW_RUNS as f64 / wall;
        println!(
            "\ncreate_read workflow, {WORKFLOW_CLIENTS} clients: {WORKFLOW_RUNS} runs in {wall:.2} s = {per_second:.0} workflows/s, {failed} failed"
        );
        cpu.print("workflow", WORKFLOW_RUNS, per_second);
        let mut figures = cpu.figures("workflow", WORKFLOW_RUNS);
        figures.insert("create_read_workflows_per_second_100".into(), json!(per_second));
        figures.insert("create_read_failed_100".into(), json!(failed));
        figures
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/load");
    std::fs::create_dir_all(&dir).expect("target/load");
    std::fs::write(dir.join("relational.json"), serde_json::to_string_pretty(&figures).expect("json"))
        .expect("target/load/relational.json");
    println!("figures written to target/load/relational.json");
}

fn main() {
    let backend = backend();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let fx = rt.block_on(Fixture::on(backend, "bench"));
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, &rt, &fx);
    criterion.final_summary();
    if backend == Backend::Servers {
        print_floors();
        // Criterion's filter (`-- relational/create`) also selects the scenario: it runs when
        // no filter is given or the filter names it.
        let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
        if filters.is_empty() || filters.iter().any(|f| "create_read_workflows".contains(f.as_str())) {
            create_read_workflows(&rt, &fx);
        }
    }
}
