//! The round trips each node kind makes, counted on the wire between the stores and the real
//! PostgreSQL and Redis ([`dataflow_tests::wire`]): a node that sends more than it should
//! fails here. Each call is made once before it is counted, on a pool of one connection, so
//! that the driver's first use of a statement on a connection (a preparation, one more round
//! trip) is not counted.

use std::time::Duration;

use dataflow_core::nodes::bulk_upsert::BulkUpsertInput;
use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::delete::DeleteInput;
use dataflow_core::nodes::list::ListInput;
use dataflow_core::nodes::read::{CacheOutcome, ReadInput};
use dataflow_core::nodes::update::UpdateInput;
use dataflow_core::{Context, Model, Node};
use dataflow_models::{
    NewProduct, Product, ProductBulkUpsertNode, ProductCreateNode, ProductDeleteNode, ProductListNode, ProductReadNode, ProductUpdateNode,
    SupplierCreateNode,
};
use dataflow_tests::fixture::{Fixture, sample_product};
use dataflow_tests::harness::Services;
use dataflow_tests::wire::{Protocol, Trip, WireCounter, address_of, commands, trips};
use serde_json::json;

/// A fixture whose PostgreSQL and Redis connections go through wire counters.
struct Counted {
    fx: Fixture,
    postgres: WireCounter,
    redis: WireCounter,
}

/// What one call sent: PostgreSQL's round trips and Redis's commands.
#[derive(Debug)]
struct Sent {
    postgres: Vec<Trip>,
    redis: Vec<String>,
}

impl Sent {
    /// The kinds of PostgreSQL round trips, as `statement`, `BEGIN`, `COMMIT`, `prepare`,
    /// `ping` (a simple query by its text). Every call ends with one `ping`: sqlx checks each
    /// connection that returns to the pool (off the caller's path); a `ping` before a
    /// statement would be the pool's check before handing a connection out, which is off
    /// for a connection used in the last second.
    fn postgres_kinds(&self) -> Vec<String> {
        self.postgres
            .iter()
            .map(|t| match t {
                Trip::Statement(_) => "statement".to_owned(),
                Trip::Simple(text) => text.clone(),
                Trip::Prepare(_) => "prepare".to_owned(),
                Trip::Ping => "ping".to_owned(),
            })
            .collect()
    }
}

impl Counted {
    async fn new(hint: &str) -> Counted {
        let services = Services::global().await;
        let postgres = WireCounter::start(Protocol::Postgres, address_of(&services.postgres_url().await)).await;
        let redis = WireCounter::start(Protocol::Redis, address_of(&services.redis_url().await)).await;
        let fx = Fixture::with_config(hint, |mut c| {
            // One connection: each statement is prepared on it once (by the uncounted first
            // call), where a pool hands out its connections in turn, each preparing anew.
            c.max_connections = 1;
            c.database_url = postgres.url_for(&c.database_url);
            c.redis_url = c.redis_url.map(|url| redis.url_for(&url));
            c
        })
        .await;
        fx.sample_categories().await;
        Counted { fx, postgres, redis }
    }

    /// Runs `call` twice (the first time unseen: connections and prepared statements are
    /// then warm) and returns its second output and what the second call sent.
    async fn sent<T, F: Future<Output = T>>(&self, mut call: impl FnMut() -> F) -> (T, Sent) {
        call().await;
        self.until_released().await;
        self.postgres.take();
        self.redis.take();
        let out = call().await;
        // The relay records a message before it forwards it: everything the call sent is
        // recorded by the time its answer came back, and the pool's check of the connection
        // it returns by the time the connection is idle again.
        self.until_released().await;
        let sent = Sent {
            postgres: trips(&self.postgres.take()),
            redis: commands(&self.redis.take()),
        };
        (out, sent)
    }

    /// Waits until the pool's connection is back: sqlx checks each connection returned to the
    /// pool with a ping (a Sync alone), in a task of its own after the call has its answer.
    async fn until_released(&self) {
        let pool = self.fx.db().get_postgres_connection_pool();
        while pool.num_idle() < pool.size() as usize {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn ctx(&self) -> &Context {
        &self.fx.ctx
    }
}

fn read(id: i64) -> ReadInput {
    ReadInput {
        id,
        include_deleted: false,
        required: true,
    }
}

async fn create(ctx: &Context, product: serde_json::Value) -> i64 {
    let record: NewProduct = serde_json::from_value(product).expect("a valid product");
    ProductCreateNode
        .run(ctx, CreateInput { record })
        .await
        .expect("create")
        .record
        .id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_kind_makes_only_the_round_trips_it_needs() {
    let c = Counted::new("round_trips").await;
    let ctx = c.ctx();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };

    // Create, naming no row the node checks itself (the category is left to its FOREIGN KEY):
    // one INSERT, no transaction, nothing to Redis (a new row has no cache entry).
    let ((), sent) = c
        .sent(|| {
            let i = next();
            async move {
                create(ctx, sample_product(i)).await;
            }
        })
        .await;
    assert_eq!(sent.postgres_kinds(), ["statement", "ping"], "create: {sent:#?}");
    assert!(sent.postgres[0].text().starts_with("INSERT INTO"), "create: {sent:#?}");
    assert!(sent.redis.is_empty(), "create: {sent:#?}");

    // Create naming a supplier (suppliers soft-delete, so the node checks it is not deleted):
    // the check and the INSERT are still one statement.
    let supplier = SupplierCreateNode
        .run(
            ctx,
            CreateInput {
                record: serde_json::from_value(json!({"code": "SUP-00001", "name": "Supplier", "email": "s@example.com", "country": "NL", "rating": 4.0, "lead_time_days": 3, "active": true}))
                    .expect("a valid supplier"),
            },
        )
        .await
        .expect("supplier")
        .record
        .id();
    let ((), sent) = c
        .sent(|| {
            let mut product = sample_product(next());
            product["supplier_id"] = json!(supplier);
            async move {
                create(ctx, product).await;
            }
        })
        .await;
    assert_eq!(sent.postgres_kinds(), ["statement", "ping"], "create naming a supplier: {sent:#?}");
    assert!(sent.redis.is_empty(), "create naming a supplier: {sent:#?}");

    // Create under an effect scope (a run's node): a look for the output of an earlier
    // execution (a run taken up again returns it instead of writing), then the row and the
    // record of its output in one transaction.
    let (_, sent) = c
        .sent(|| {
            let i = next();
            let ctx = ctx.with_effect_scope(format!("run-{i}")).within("create");
            async move { create(&ctx, sample_product(i)).await }
        })
        .await;
    assert_eq!(
        sent.postgres_kinds(),
        ["statement", "ping", "BEGIN", "statement", "statement", "COMMIT", "ping"],
        "create under an effect scope: {sent:#?}"
    );
    assert!(sent.postgres[0].text().contains("dataflow_effects"), "{sent:#?}");

    // Read, served by the cache: one GET, nothing to PostgreSQL.
    let id = create(ctx, sample_product(next())).await;
    ProductReadNode.run(ctx, read(id)).await.expect("read fills the cache");
    let (out, sent) = c.sent(|| ProductReadNode.run(ctx, read(id))).await;
    assert_eq!(out.expect("read").cache, CacheOutcome::Hit);
    assert_eq!(sent.postgres_kinds(), Vec::<String>::new(), "read hit: {sent:#?}");
    assert_eq!(sent.redis, ["GET"], "read hit: {sent:#?}");

    // Read, not cached: the GET, one SELECT, one cache fill (a script: the version check and
    // the SET in one step).
    let cache = ctx.stores().cache().expect("a cache");
    let key = ctx.stores().cache_key(Product::meta(), None, id);
    let (out, sent) = c
        .sent(|| async {
            cache
                .invalidate(&[(key.clone(), 1)], Duration::from_secs(60))
                .await
                .expect("invalidate");
            c.redis.take();
            ProductReadNode.run(ctx, read(id)).await
        })
        .await;
    assert_eq!(out.expect("read").cache, CacheOutcome::Miss);
    assert_eq!(sent.postgres_kinds(), ["statement", "ping"], "read miss: {sent:#?}");
    assert!(sent.postgres[0].text().starts_with("SELECT"), "read miss: {sent:#?}");
    assert_eq!(sent.redis, ["GET", "EVALSHA"], "read miss: {sent:#?}");

    // List: one SELECT.
    let (out, sent) = c
        .sent(|| {
            ProductListNode.run(
                ctx,
                ListInput {
                    filter: Some(serde_json::from_value(json!({"active": true})).expect("filter")),
                    limit: Some(10),
                    ..Default::default()
                },
            )
        })
        .await;
    assert!(!out.expect("list").records.is_empty());
    assert_eq!(sent.postgres_kinds(), ["statement", "ping"], "list: {sent:#?}");
    assert!(sent.redis.is_empty(), "list: {sent:#?}");

    // Update by id: in one transaction the row locked and read (the patch is checked against
    // it), the UPDATE and the outbox record of its projections; after the commit the row's
    // cache entry replaced by a tombstone, then the outbox record settled.
    let (out, sent) = c
        .sent(|| {
            let patch = json!({"stock": next()}).as_object().cloned().expect("an object");
            ProductUpdateNode.run(ctx, UpdateInput::by_id(id, patch))
        })
        .await;
    out.expect("update");
    assert_eq!(
        sent.postgres_kinds(),
        [
            "BEGIN",
            "statement",
            "statement",
            "statement",
            "COMMIT",
            "ping",
            "statement",
            "ping"
        ],
        "update: {sent:#?}"
    );
    assert_eq!(sent.redis, ["EVALSHA"], "update: {sent:#?}");

    // Delete by id (soft): as Update, without the read (a delete checks no patch).
    let (out, sent) = c
        .sent(|| {
            let (i, c) = (next(), &c);
            async move {
                let id = create(ctx, sample_product(i)).await;
                c.until_released().await;
                c.postgres.take();
                ProductDeleteNode
                    .run(
                        ctx,
                        DeleteInput {
                            id: Some(id),
                            filter: None,
                            hard: false,
                        },
                    )
                    .await
            }
        })
        .await;
    assert_eq!(out.expect("delete").deleted, 1);
    assert_eq!(
        sent.postgres_kinds(),
        ["BEGIN", "statement", "statement", "COMMIT", "ping", "statement", "ping"],
        "delete: {sent:#?}"
    );
    assert_eq!(sent.redis, ["EVALSHA"], "delete: {sent:#?}");

    // BulkUpsert of new rows: one transaction (the foreign keys it checks itself for per-row
    // errors, the ids, the batch under a savepoint: the unique values are looked up only when
    // the write collides), no outbox record (new rows have no cache entry), nothing to Redis.
    let (out, sent) = c
        .sent(|| {
            let rows = (0..100).map(|_| sample_product(next())).collect();
            ProductBulkUpsertNode.run(
                ctx,
                BulkUpsertInput {
                    rows,
                    ..Default::default()
                },
            )
        })
        .await;
    assert_eq!(out.expect("bulk upsert").inserted, 100);
    assert_eq!(
        sent.postgres_kinds(),
        [
            "BEGIN",
            "statement",
            "statement",
            "SAVEPOINT _sqlx_savepoint_1",
            "statement",
            "RELEASE SAVEPOINT _sqlx_savepoint_1",
            "COMMIT",
            "ping"
        ],
        "bulk upsert: {sent:#?}"
    );
    assert!(sent.redis.is_empty(), "bulk upsert of new rows: {sent:#?}");
}
