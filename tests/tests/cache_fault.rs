//! Reads while Redis is down fall back to PostgreSQL. In its own test binary because it stops
//! the Redis server that the binary's tests share.

use dataflow_core::Node;
use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::read::{CacheOutcome, ReadInput};
use dataflow_models::{NewProduct, ProductCreateNode, ProductReadNode};
use dataflow_tests::fixture::{Fixture, sample_product};
use dataflow_tests::{ServiceKind, Services};

#[tokio::test]
async fn read_answers_from_postgres_while_redis_is_stopped() {
    let fx = Fixture::new("redis_down").await;
    let record: NewProduct = serde_json::from_value(sample_product(1)).unwrap();
    let id = ProductCreateNode.run(&fx.ctx, CreateInput { record }).await.unwrap().record.id();
    assert_eq!(
        ProductReadNode
            .run(
                &fx.ctx,
                ReadInput {
                    id,
                    include_deleted: false
                }
            )
            .await
            .unwrap()
            .cache,
        CacheOutcome::Miss
    );

    let services = Services::global().await;
    services.stop(ServiceKind::Redis).await;
    let read = ProductReadNode
        .run(
            &fx.ctx,
            ReadInput {
                id,
                include_deleted: false,
            },
        )
        .await
        .expect("read with Redis down");
    assert_eq!(read.cache, CacheOutcome::Unavailable);
    assert_eq!(read.record.unwrap().data.sku, "SKU-00001");

    services.start(ServiceKind::Redis).await;
    // The same process recovers without a restart once Redis is back.
    let mut outcome = CacheOutcome::Unavailable;
    for _ in 0..50 {
        outcome = ProductReadNode
            .run(
                &fx.ctx,
                ReadInput {
                    id,
                    include_deleted: false,
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
