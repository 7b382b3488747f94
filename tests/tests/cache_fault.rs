//! Reads while Redis is down fall back to PostgreSQL, and updates made while it is down are
//! never hidden by the entries it held. In its own test binary, one test at a time, because
//! these tests stop the Redis server that the binary's tests share.

use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::read::{CacheOutcome, ReadInput};
use dataflow_core::nodes::update::UpdateInput;
use dataflow_core::{Context, Model, Node, StoreKind};
use dataflow_models::{NewProduct, Product, ProductCreateNode, ProductReadNode, ProductUpdateNode};
use dataflow_tests::fixture::{Fixture, sample_product};
use dataflow_tests::{ServiceKind, Services};
use serde_json::{Map, json};
use tokio::sync::Mutex;

/// One test at a time: each stops the Redis server every test of this binary uses.
static SERIAL: Mutex<()> = Mutex::const_new(());

async fn read(ctx: &Context, id: i64) -> (f64, CacheOutcome) {
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
    (out.record.expect("the product").data.price, out.cache)
}

#[tokio::test]
async fn updates_while_redis_is_stopped_are_never_hidden_by_its_old_entries() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("redis_stale").await;
    fx.sample_categories().await;
    let record: NewProduct = serde_json::from_value(sample_product(1)).unwrap();
    let id = ProductCreateNode.run(&fx.ctx, CreateInput { record }).await.unwrap().record.id();
    assert_eq!(read(&fx.ctx, id).await, (1.5, CacheOutcome::Miss));
    assert_eq!(read(&fx.ctx, id).await, (1.5, CacheOutcome::Hit));
    let key = fx.ctx.stores().cache_key(Product::meta(), None, id);

    let services = Services::global().await;
    let stopped_redis = services.stop(ServiceKind::Redis).await;
    let mut prices = Vec::new();
    for price in [2.5, 3.5, 4.5] {
        let mut patch = Map::new();
        patch.insert("price".into(), json!(price));
        let out = ProductUpdateNode
            .run(&fx.ctx, UpdateInput::by_id(id, patch))
            .await
            .expect("an update succeeds with Redis down");
        assert_eq!(out.pending, vec![StoreKind::Cache]);
        prices.push(price);
    }
    stopped_redis.start().await;
    // Redis kept its data: it still holds the row at its old price ...
    let held = fx.redis_get(&key).await.expect("the old entry survived the restart");
    assert!(held.contains("\"price\":1.5"), "{held}");
    // ... but no read serves it, before or after the pending invalidations are applied.
    let mut reads = 0;
    while reads < 10 || fx.ctx.stores().outbox().pending_count().await.unwrap() > 0 {
        let (price, _) = read(&fx.ctx, id).await;
        assert_eq!(price, 4.5, "a stale price was served");
        reads += 1;
        assert!(reads < 600, "the pending invalidations were never applied");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(fx.redis_get(&key).await.is_none_or(|v| !v.contains("\"price\":1.5")));
    // The cache is trusted again, and serves the current row.
    assert_eq!(read(&fx.ctx, id).await, (4.5, CacheOutcome::Hit));
    assert_eq!(prices.last(), Some(&4.5));
}

#[tokio::test]
async fn read_answers_from_postgres_while_redis_is_stopped() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("redis_down").await;
    fx.sample_categories().await;
    let record: NewProduct = serde_json::from_value(sample_product(1)).unwrap();
    let id = ProductCreateNode.run(&fx.ctx, CreateInput { record }).await.unwrap().record.id();
    assert_eq!(
        ProductReadNode
            .run(
                &fx.ctx,
                ReadInput {
                    id,
                    include_deleted: false,
                    required: false,
                }
            )
            .await
            .unwrap()
            .cache,
        CacheOutcome::Miss
    );

    let services = Services::global().await;
    let stopped_redis = services.stop(ServiceKind::Redis).await;
    let read = ProductReadNode
        .run(
            &fx.ctx,
            ReadInput {
                id,
                include_deleted: false,
                required: false,
            },
        )
        .await
        .expect("read with Redis down");
    assert_eq!(read.cache, CacheOutcome::Unavailable);
    assert_eq!(read.record.unwrap().data.sku, "SKU-00001");

    stopped_redis.start().await;
    // The same process recovers without a restart once Redis is back.
    let mut outcome = CacheOutcome::Unavailable;
    for _ in 0..50 {
        outcome = ProductReadNode
            .run(
                &fx.ctx,
                ReadInput {
                    id,
                    include_deleted: false,
                    required: false,
                },
            )
            .await
            .unwrap()
            .cache;
        if outcome != CacheOutcome::Unavailable {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_ne!(outcome, CacheOutcome::Unavailable, "the cache is used again after Redis returns");
}
