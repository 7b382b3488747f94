//! One node call, many times, for counting instructions per call under callgrind (`valgrind
//! --tool=callgrind`, which counts instructions the same way on a noisy machine; this VM offers
//! no hardware counters to `perf stat`). `benches/instructions` runs it twice per call kind,
//! with 200 and 1,200 calls, and divides the difference by 1,000: what the setup costs (the
//! harness, the migrations, the first connections) cancels out.
//!
//! Usage: `calls <kind> <count>`, kind one of `read_hit`, `read_miss`, `create`, `list`, on the
//! servers the test harness starts (PostgreSQL and Redis), as the `relational` bench.

use std::time::Duration;

use dataflow_benches::{product, seed_catalogue};
use dataflow_core::nodes::bulk_upsert::BulkUpsertInput;
use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::list::ListInput;
use dataflow_core::nodes::read::{CacheOutcome, ReadInput};
use dataflow_core::{Filter, Model, Node};
use dataflow_models::{NewProduct, Product, ProductBulkUpsertNode, ProductCreateNode, ProductListNode, ProductReadNode};
use dataflow_tests::fixture::Fixture;
use serde_json::json;

/// Products in the table List pages through.
const ROWS: usize = 2_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let (kind, count) = match args.as_slice() {
        [kind, count] => (kind.clone(), count.parse::<usize>().expect("a count of calls")),
        _ => panic!("usage: calls <read_hit|read_miss|create|list> <count>"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let fx = Fixture::new("calls").await;
        let ctx = &fx.ctx;
        seed_catalogue(ctx).await;
        let seeded = ProductBulkUpsertNode
            .run(
                ctx,
                BulkUpsertInput {
                    rows: (0..ROWS).map(product).collect(),
                    ..Default::default()
                },
            )
            .await
            .expect("seed");
        let ids: Vec<i64> = seeded.ids.into_iter().flatten().collect();
        let read = |id| ReadInput {
            id,
            include_deleted: false,
            required: true,
        };
        let cache = ctx.stores().cache().expect("a cache");
        let filter: Filter = serde_json::from_value(json!({"price": {"$gte": 100, "$lt": 400}, "active": true})).expect("filter");
        for n in 0..count {
            match kind.as_str() {
                "read_hit" => {
                    let out = ProductReadNode.run(ctx, read(ids[0])).await.expect("read");
                    assert!(n == 0 || out.cache == CacheOutcome::Hit);
                }
                "read_miss" => {
                    let id = ids[n % ids.len()];
                    let key = ctx.stores().cache_key(Product::meta(), None, id);
                    cache.invalidate(&[(key, 1)], Duration::from_secs(60)).await.expect("invalidate");
                    let out = ProductReadNode.run(ctx, read(id)).await.expect("read");
                    assert_eq!(out.cache, CacheOutcome::Miss);
                }
                "create" => {
                    let record: NewProduct = serde_json::from_value(product(1_000_000 + n)).expect("valid");
                    ProductCreateNode.run(ctx, CreateInput { record }).await.expect("create");
                }
                "list" => {
                    let input = ListInput {
                        filter: Some(filter.clone()),
                        limit: Some(50),
                        ..Default::default()
                    };
                    assert_eq!(ProductListNode.run(ctx, input).await.expect("list").records.len(), 50);
                }
                other => panic!("unknown call kind {other:?}: read_hit, read_miss, create or list"),
            }
        }
    });
}
