//! The semantics of the relational nodes, against live PostgreSQL and Redis and (all but the
//! tests reading Redis or PostgreSQL's catalogue directly) on the embedded set: validation,
//! optimistic versions, filters and injection, caching, bulk upserts, tenants, soft delete,
//! pagination, aggregates and migration.

use dataflow_core::nodes::aggregate::{AggregateInput, AggregateOp, Metric};
use dataflow_core::nodes::bulk_upsert::BulkUpsertInput;
use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::delete::DeleteInput;
use dataflow_core::nodes::list::ListInput;
use dataflow_core::nodes::read::{CacheOutcome, ReadInput};
use dataflow_core::nodes::update::UpdateInput;
use dataflow_core::{Error, Filter, Model, Node, SortKey};
use dataflow_models::*;
use dataflow_tests::fixture::{Backend, Fixture, sample_product as product};
use dataflow_tests::on_both_backends;
use serde_json::{Value as Json, json};

fn new_product(i: usize) -> NewProduct {
    serde_json::from_value(product(i)).expect("a valid product")
}

async fn create_product(fx: &Fixture, i: usize) -> i64 {
    ProductCreateNode
        .run(&fx.ctx, CreateInput { record: new_product(i) })
        .await
        .expect("create")
        .record
        .id()
}

fn patch(value: Json) -> serde_json::Map<String, Json> {
    value.as_object().expect("object").clone()
}

async fn validation_errors_name_every_bad_field(backend: Backend) {
    let fx = Fixture::on(backend, "validation").await;
    fx.sample_categories().await;
    let mut bad = new_product(1);
    bad.price = -3.0;
    bad.sku = "lower case".into();
    bad.currency = "DOGE".into();
    let err = ProductCreateNode
        .run(&fx.ctx, CreateInput { record: bad })
        .await
        .expect_err("invalid");
    let Error::Validation { model, errors } = &err else {
        panic!("expected a validation error, got {err}")
    };
    assert_eq!(*model, "Product");
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["sku", "price", "currency"], "{err}");
    let text = err.to_string();
    assert!(text.contains("price") && text.contains("≥ 0"), "{text}");
    assert_eq!(fx.count("products", "").await, 0, "nothing was written");

    let err = ProductUpdateNode
        .run(&fx.ctx, UpdateInput::by_id(1, patch(json!({"stock": "many", "colour": "red"}))))
        .await
        .expect_err("invalid patch");
    let text = err.to_string();
    assert!(
        text.contains("field 'colour': unknown field") && text.contains("field 'stock': must be an integer"),
        "{text}"
    );
}
on_both_backends!(validation_errors_name_every_bad_field);

async fn update_with_stale_version_is_rejected(backend: Backend) {
    let fx = Fixture::on(backend, "stale").await;
    fx.sample_categories().await;
    let id = create_product(&fx, 1).await;
    let first = ProductUpdateNode
        .run(
            &fx.ctx,
            UpdateInput {
                id: Some(id),
                expected_version: Some(1),
                filter: None,
                patch: patch(json!({"stock": 5})),
            },
        )
        .await
        .expect("update at version 1");
    assert_eq!(first.record.as_ref().map(|r| r.version), Some(2));
    assert_eq!(first.changes[0].old, json!(1));
    assert_eq!(first.changes[0].new, json!(5));

    let err = ProductUpdateNode
        .run(
            &fx.ctx,
            UpdateInput {
                id: Some(id),
                expected_version: Some(1),
                filter: None,
                patch: patch(json!({"stock": 9})),
            },
        )
        .await
        .expect_err("stale version");
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err}"
    );
    let rows = fx.sql("SELECT stock, version FROM products WHERE id = $1", vec![id.into()]).await;
    assert_eq!(rows[0].try_get::<i64>("", "stock").unwrap(), 5, "the stale update changed nothing");
    assert_eq!(rows[0].try_get::<i64>("", "version").unwrap(), 2);

    let missing = ProductUpdateNode
        .run(&fx.ctx, UpdateInput::by_id(id + 1000, patch(json!({"stock": 1}))))
        .await
        .expect_err("no such row");
    assert!(matches!(missing, Error::NotFound { .. }), "{missing}");
}
on_both_backends!(update_with_stale_version_is_rejected);

async fn update_and_delete_by_filter_report_how_many_rows(backend: Backend) {
    let fx = Fixture::on(backend, "by_filter").await;
    fx.sample_categories().await;
    for i in 0..10 {
        create_product(&fx, i).await;
    }
    let filter: Filter = serde_json::from_value(json!({"active": true})).unwrap();
    let out = ProductUpdateNode
        .run(
            &fx.ctx,
            UpdateInput {
                id: None,
                expected_version: None,
                filter: Some(filter.clone()),
                patch: patch(json!({"stock": 0})),
            },
        )
        .await
        .expect("update by filter");
    assert_eq!(out.updated, 5);
    assert_eq!(fx.count("products", "stock = 0 AND active").await, 5);
    assert_eq!(fx.count("products", "version = 2").await, 5);

    let out = ProductDeleteNode
        .run(
            &fx.ctx,
            DeleteInput {
                id: None,
                filter: Some(filter),
                hard: false,
            },
        )
        .await
        .expect("delete by filter");
    assert_eq!((out.deleted, out.soft), (5, true));
    assert_eq!(fx.count("products", "deleted_at IS NOT NULL").await, 5);
}
on_both_backends!(update_and_delete_by_filter_report_how_many_rows);

#[tokio::test]
async fn filter_with_unknown_field_is_rejected_before_any_query() {
    // No tables exist in this schema: a query that reached PostgreSQL would fail with
    // "relation does not exist" instead of the input error asserted here.
    let fx = Fixture::without_tables("unknown_field").await;
    let filter: Filter = serde_json::from_value(json!({"colour": "red"})).unwrap();
    let err = ProductListNode
        .run(
            &fx.ctx,
            ListInput {
                filter: Some(filter),
                ..Default::default()
            },
        )
        .await
        .expect_err("unknown field");
    assert!(matches!(err, Error::InvalidInput { part: "filter", .. }), "{err}");
    assert!(err.to_string().contains("unknown field 'colour'"), "{err}");

    let err = serde_json::from_value::<Filter>(json!({"price": {"$regex": ".*"}})).expect_err("unknown operator");
    assert!(err.to_string().contains("unknown operator '$regex'"), "{err}");

    let filter: Filter = serde_json::from_value(json!({"price": {"$gte": "cheap"}})).unwrap();
    let err = ProductListNode
        .run(
            &fx.ctx,
            ListInput {
                filter: Some(filter),
                ..Default::default()
            },
        )
        .await
        .expect_err("wrong type");
    assert!(err.to_string().contains("field 'price': $gte: the value must be a number"), "{err}");
}

async fn identifier_injection_in_filter_keys_and_sort_fields_is_rejected(backend: Backend) {
    let fx = Fixture::on(backend, "injection").await;
    fx.sample_categories().await;
    create_product(&fx, 1).await;
    let hostile = "price\" OR 1=1 --";
    let filter: Filter = serde_json::from_value(json!({ hostile: 1 })).unwrap();
    let err = ProductListNode
        .run(
            &fx.ctx,
            ListInput {
                filter: Some(filter),
                ..Default::default()
            },
        )
        .await
        .expect_err("hostile key");
    assert!(matches!(err, Error::InvalidInput { part: "filter", .. }), "{err}");

    let err = ProductListNode
        .run(
            &fx.ctx,
            ListInput {
                sort: vec![SortKey::parse(hostile)],
                ..Default::default()
            },
        )
        .await
        .expect_err("hostile sort");
    assert!(matches!(err, Error::InvalidInput { part: "sort", .. }), "{err}");

    let err = ProductAggregateNode
        .run(
            &fx.ctx,
            AggregateInput {
                group_by: vec!["name; DROP TABLE products".into()],
                ..Default::default()
            },
        )
        .await
        .expect_err("hostile group_by");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(fx.count("products", "").await, 1, "the table is intact");
}
on_both_backends!(identifier_injection_in_filter_keys_and_sort_fields_is_rejected);

async fn values_that_look_like_sql_are_stored_byte_for_byte(backend: Backend) {
    let fx = Fixture::on(backend, "sql_values").await;
    fx.sample_categories().await;
    let mut p = new_product(1);
    p.name = "Robert'); DROP TABLE products;-- \"quoted\" $1 \\ ü 🚀".into();
    p.description = "' OR '1'='1".into();
    let id = ProductCreateNode
        .run(&fx.ctx, CreateInput { record: p.clone() })
        .await
        .expect("create")
        .record
        .id();
    let rows = fx
        .sql("SELECT name, description FROM products WHERE id = $1", vec![id.into()])
        .await;
    assert_eq!(rows[0].try_get::<String>("", "name").unwrap(), p.name);
    assert_eq!(rows[0].try_get::<String>("", "description").unwrap(), p.description);

    let filter: Filter = serde_json::from_value(json!({"name": p.name})).unwrap();
    let found = ProductListNode
        .run(
            &fx.ctx,
            ListInput {
                filter: Some(filter),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(found.records.len(), 1);
    let filter: Filter = serde_json::from_value(json!({"description": {"$contains": "'1'='1"}})).unwrap();
    let found = ProductListNode
        .run(
            &fx.ctx,
            ListInput {
                filter: Some(filter),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(found.records.len(), 1);
    let filter: Filter = serde_json::from_value(json!({"name": {"$contains": "%"}})).unwrap();
    let found = ProductListNode
        .run(
            &fx.ctx,
            ListInput {
                filter: Some(filter),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(found.records.len(), 0, "% is a literal, not a wildcard");
}
on_both_backends!(values_that_look_like_sql_are_stored_byte_for_byte);

#[tokio::test]
async fn cache_entry_is_present_after_read_and_gone_after_update() {
    let fx = Fixture::new("cache").await;
    fx.sample_categories().await;
    let id = create_product(&fx, 1).await;
    let key = format!("{}:products:{id}", fx.cache_prefix);
    assert_eq!(fx.redis_get(&key).await, None);

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
        .expect("read");
    assert_eq!(read.cache, CacheOutcome::Miss);
    let cached = fx.redis_get(&key).await.expect("the row is cached after a read");
    assert!(cached.starts_with("1|") && cached.contains("\"sku\":\"SKU-00001\""), "{cached}");

    ProductUpdateNode
        .run(&fx.ctx, UpdateInput::by_id(id, patch(json!({"name": "Renamed"}))))
        .await
        .expect("update");
    let after = fx.redis_get(&key).await.unwrap_or_default();
    assert!(!after.contains("SKU-00001"), "the cached row is gone after the update: {after}");

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
        .expect("read");
    assert_eq!(read.cache, CacheOutcome::Miss);
    assert_eq!(read.record.unwrap().data.name, "Renamed");
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
        .expect("read");
    assert_eq!((read.cache, read.record.unwrap().version), (CacheOutcome::Hit, 2));
}

async fn a_stale_fill_cannot_overwrite_a_newer_invalidation(backend: Backend) {
    let fx = Fixture::on(backend, "cache_race").await;
    fx.sample_categories().await;
    let id = create_product(&fx, 1).await;
    ProductUpdateNode
        .run(&fx.ctx, UpdateInput::by_id(id, patch(json!({"stock": 2}))))
        .await
        .expect("update");
    // A reader that fetched version 1 before the update committed now tries to fill.
    let key = format!("{}:products:{id}", fx.cache_prefix);
    let cache = fx.ctx.stores().cache().expect("a cache");
    cache
        .fill(&key, 1, b"{\"stale\":true}", std::time::Duration::from_secs(60))
        .await
        .expect("fill");
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
        .expect("read");
    assert_eq!(read.cache, CacheOutcome::Miss, "the stale fill was refused");
    assert_eq!(read.record.unwrap().data.stock, 2);
}
on_both_backends!(a_stale_fill_cannot_overwrite_a_newer_invalidation);

async fn bulk_upsert_of_ten_thousand_rows_lands_the_valid_ones_and_reports_the_invalid(backend: Backend) {
    let fx = Fixture::on(backend, "bulk").await;
    fx.sample_categories().await;
    let mut rows: Vec<Json> = (0..10_000).map(product).collect();
    rows[17]["price"] = json!(-1);
    rows[4_242]["currency"] = json!("XYZ");
    rows[9_999] = json!("not an object");
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
    assert_eq!(out.inserted, 9_997);
    assert_eq!(out.updated, 0);
    let indexes: Vec<usize> = out.errors.iter().map(|e| e.index).collect();
    assert_eq!(indexes, [17, 4_242, 9_999]);
    assert_eq!(out.errors[0].errors.0[0].field, "price");
    assert_eq!(fx.count("products", "").await, 9_997);
    assert!(out.ids[17].is_none() && out.ids[18].is_some());
    let rows = fx
        .sql("SELECT sku FROM products WHERE id = $1", vec![out.ids[18].unwrap().into()])
        .await;
    assert_eq!(rows[0].try_get::<String>("", "sku").unwrap(), "SKU-00018");

    // Upserting again on the unique sku updates instead of inserting, and reports duplicates.
    let mut again: Vec<Json> = (0..100)
        .map(|i| {
            let mut p = product(i);
            p["stock"] = json!(1_000);
            p
        })
        .collect();
    again.push(product(5));
    let out = ProductBulkUpsertNode
        .run(
            &fx.ctx,
            BulkUpsertInput {
                rows: again,
                conflict_key: Some("sku".into()),
                batch_size: Some(30),
            },
        )
        .await
        .expect("upsert on sku");
    assert_eq!(
        (out.inserted, out.updated),
        (1, 99),
        "row 17 was rejected before, so it is inserted now"
    );
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].index, 100);
    assert!(out.errors[0].errors.to_string().contains("the same sku as row 5"));
    assert_eq!(fx.count("products", "stock = 1000 AND sku < 'SKU-00100'").await, 100);

    // Rows carrying their id update in place; a new row after explicit ids still gets a fresh id.
    let id = out.ids[0].unwrap();
    let mut by_id = product(0);
    by_id["id"] = json!(id);
    by_id["name"] = json!("Updated by id");
    let out = ProductBulkUpsertNode
        .run(
            &fx.ctx,
            BulkUpsertInput {
                rows: vec![by_id],
                ..Default::default()
            },
        )
        .await
        .expect("upsert by id");
    assert_eq!((out.inserted, out.updated), (0, 1));
    let created = create_product(&fx, 20_000).await;
    assert!(created > 10_000);
}
on_both_backends!(bulk_upsert_of_ten_thousand_rows_lands_the_valid_ones_and_reports_the_invalid);

async fn multi_tenant_rows_are_invisible_across_tenants_and_a_tenant_is_required(backend: Backend) {
    let fx = Fixture::on(backend, "tenants").await;
    fx.sample_categories().await;
    let acme = fx.tenant("acme");
    let globex = fx.tenant("globex");
    let customer = |email: &str| -> NewCustomer {
        serde_json::from_value(json!({"name": "Buyer", "email": email, "segment": "retail", "country": "DE", "credit_limit": 10.0}))
            .unwrap()
    };
    let id = CustomerCreateNode
        .run(
            &acme,
            CreateInput {
                record: customer("a@acme.example"),
            },
        )
        .await
        .expect("create")
        .record
        .id();
    // The same unique email is allowed in another tenant.
    CustomerCreateNode
        .run(
            &globex,
            CreateInput {
                record: customer("a@acme.example"),
            },
        )
        .await
        .expect("create in globex");

    let read = CustomerReadNode
        .run(
            &globex,
            ReadInput {
                id,
                include_deleted: false,
                required: false,
            },
        )
        .await
        .expect("read");
    assert!(read.record.is_none());
    let read = CustomerReadNode
        .run(
            &acme,
            ReadInput {
                id,
                include_deleted: false,
                required: false,
            },
        )
        .await
        .expect("read");
    assert!(read.record.is_some());
    let list = CustomerListNode
        .run(
            &globex,
            ListInput {
                with_total: true,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(list.total, Some(1));
    assert!(list.records.iter().all(|r| r.id() != id));
    let err = CustomerUpdateNode
        .run(&globex, UpdateInput::by_id(id, patch(json!({"name": "Hijacked"}))))
        .await
        .expect_err("not visible");
    assert!(matches!(err, Error::NotFound { .. }));
    let deleted = CustomerDeleteNode
        .run(
            &globex,
            DeleteInput {
                id: Some(id),
                filter: None,
                hard: true,
            },
        )
        .await
        .expect("delete");
    assert_eq!(deleted.deleted, 0);
    let agg = CustomerAggregateNode
        .run(&globex, AggregateInput::default())
        .await
        .expect("aggregate");
    assert_eq!(agg.groups[0]["count"], json!(1));
    let mut row = serde_json::to_value(customer("b@acme.example")).unwrap();
    row["id"] = json!(id);
    let out = CustomerBulkUpsertNode
        .run(
            &globex,
            BulkUpsertInput {
                rows: vec![row],
                ..Default::default()
            },
        )
        .await
        .expect("bulk");
    assert_eq!(out.errors.len(), 1, "another tenant's id is refused");
    let rows = fx
        .sql("SELECT name, email, tenant_id FROM customers WHERE id = $1", vec![id.into()])
        .await;
    assert_eq!(rows[0].try_get::<String>("", "email").unwrap(), "a@acme.example");
    assert_eq!(rows[0].try_get::<String>("", "tenant_id").unwrap(), "acme");

    let err = CustomerCreateNode
        .run(
            &fx.ctx,
            CreateInput {
                record: customer("c@acme.example"),
            },
        )
        .await
        .expect_err("no tenant");
    assert!(matches!(err, Error::MissingTenant { model: "Customer" }), "{err}");
    let err = CustomerListNode.run(&fx.ctx, ListInput::default()).await.expect_err("no tenant");
    assert!(matches!(err, Error::MissingTenant { .. }));
    assert!(fx.ctx.with_tenant("").is_err());
}
on_both_backends!(multi_tenant_rows_are_invisible_across_tenants_and_a_tenant_is_required);

async fn soft_deleted_rows_are_invisible_unless_asked_for(backend: Backend) {
    let fx = Fixture::on(backend, "soft_delete").await;
    fx.sample_categories().await;
    let id = create_product(&fx, 1).await;
    create_product(&fx, 2).await;
    ProductReadNode
        .run(
            &fx.ctx,
            ReadInput {
                id,
                include_deleted: false,
                required: false,
            },
        )
        .await
        .expect("cache it");
    ProductDeleteNode
        .run(
            &fx.ctx,
            DeleteInput {
                id: Some(id),
                filter: None,
                hard: false,
            },
        )
        .await
        .expect("delete");

    assert!(
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
            .record
            .is_none()
    );
    let with_deleted = ProductReadNode
        .run(
            &fx.ctx,
            ReadInput {
                id,
                include_deleted: true,
                required: false,
            },
        )
        .await
        .unwrap();
    assert!(with_deleted.record.unwrap().deleted_at.is_some());
    let list = ProductListNode
        .run(
            &fx.ctx,
            ListInput {
                with_total: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(list.total, Some(1));
    let list = ProductListNode
        .run(
            &fx.ctx,
            ListInput {
                with_total: true,
                include_deleted: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(list.total, Some(2));

    let hard = ProductDeleteNode
        .run(
            &fx.ctx,
            DeleteInput {
                id: Some(id),
                filter: None,
                hard: true,
            },
        )
        .await
        .unwrap();
    assert_eq!((hard.deleted, hard.soft), (1, false));
    assert_eq!(fx.count("products", "").await, 1);
}
on_both_backends!(soft_deleted_rows_are_invisible_unless_asked_for);

async fn keyset_pagination_visits_every_row_once_in_order(backend: Backend) {
    let fx = Fixture::on(backend, "pages").await;
    fx.sample_categories().await;
    let rows: Vec<Json> = (0..237).map(product).collect();
    ProductBulkUpsertNode
        .run(
            &fx.ctx,
            BulkUpsertInput {
                rows,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let filter: Filter = serde_json::from_value(json!({"price": {"$gte": 10, "$lt": 80}})).unwrap();
    let sort = vec![SortKey::parse("-price"), SortKey::parse("sku")];
    let mut seen: Vec<(f64, String)> = Vec::new();
    let mut after = None;
    loop {
        let page = ProductListNode
            .run(
                &fx.ctx,
                ListInput {
                    filter: Some(filter.clone()),
                    sort: sort.clone(),
                    limit: Some(13),
                    after,
                    ..Default::default()
                },
            )
            .await
            .expect("page");
        seen.extend(page.records.iter().map(|r| (r.data.price, r.data.sku.clone())));
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let expected = fx
        .sql(
            "SELECT price, sku FROM products WHERE price >= 10 AND price < 80 ORDER BY price DESC, sku ASC, id ASC",
            vec![],
        )
        .await;
    let expected: Vec<(f64, String)> = expected
        .iter()
        .map(|r| (r.try_get("", "price").unwrap(), r.try_get("", "sku").unwrap()))
        .collect();
    assert_eq!(seen, expected);

    let err = ProductListNode
        .run(
            &fx.ctx,
            ListInput {
                sort: vec![SortKey::parse("name")],
                after: Some("bm90IGEgY3Vyc29y".into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("bad cursor");
    assert!(matches!(err, Error::InvalidInput { part: "cursor", .. }), "{err}");
    let err = ProductListNode
        .run(
            &fx.ctx,
            ListInput {
                limit: Some(5_000),
                ..Default::default()
            },
        )
        .await
        .expect_err("limit");
    assert!(err.to_string().contains("limit"));
}
on_both_backends!(keyset_pagination_visits_every_row_once_in_order);

async fn aggregates_group_and_compute_under_a_filter(backend: Backend) {
    let fx = Fixture::on(backend, "aggregate").await;
    fx.sample_categories().await;
    let rows: Vec<Json> = (0..50).map(product).collect();
    ProductBulkUpsertNode
        .run(
            &fx.ctx,
            BulkUpsertInput {
                rows,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let metric = |op, field: &str| Metric {
        op,
        field: Some(field.into()),
    };
    let out = ProductAggregateNode
        .run(
            &fx.ctx,
            AggregateInput {
                group_by: vec!["category_id".into()],
                metrics: vec![
                    Metric {
                        op: AggregateOp::Count,
                        field: None,
                    },
                    metric(AggregateOp::Sum, "stock"),
                    metric(AggregateOp::Avg, "price"),
                    metric(AggregateOp::Min, "price"),
                    metric(AggregateOp::Max, "sku"),
                ],
                filter: Some(serde_json::from_value(json!({"active": true})).unwrap()),
                ..Default::default()
            },
        )
        .await
        .expect("aggregate");
    let expected = fx
        .sql(
            "SELECT category_id, COUNT(*) AS n, CAST(SUM(stock) AS BIGINT) AS s, AVG(price) AS a, MIN(price) AS lo, MAX(sku) AS hi \
             FROM products WHERE active GROUP BY category_id ORDER BY category_id",
            vec![],
        )
        .await;
    assert_eq!(out.groups.len(), expected.len());
    for (group, row) in out.groups.iter().zip(&expected) {
        assert_eq!(group["category_id"], json!(row.try_get::<i64>("", "category_id").unwrap()));
        assert_eq!(group["count"], json!(row.try_get::<i64>("", "n").unwrap()));
        assert_eq!(group["sum_stock"], json!(row.try_get::<i64>("", "s").unwrap()));
        assert!((group["avg_price"].as_f64().unwrap() - row.try_get::<f64>("", "a").unwrap()).abs() < 1e-9);
        assert_eq!(group["min_price"], json!(row.try_get::<f64>("", "lo").unwrap()));
        assert_eq!(group["max_sku"], json!(row.try_get::<String>("", "hi").unwrap()));
    }
    let err = ProductAggregateNode
        .run(
            &fx.ctx,
            AggregateInput {
                metrics: vec![metric(AggregateOp::Sum, "name")],
                ..Default::default()
            },
        )
        .await
        .expect_err("sum of text");
    assert!(err.to_string().contains("sum does not apply to a string field"), "{err}");
}
on_both_backends!(aggregates_group_and_compute_under_a_filter);

#[tokio::test]
async fn migrate_is_idempotent_and_adds_missing_optional_columns() {
    let fx = Fixture::new("migrate").await;
    fx.ctx
        .stores()
        .migrate(&dataflow_models::all_models())
        .await
        .expect("second migrate");
    fx.sql("ALTER TABLE products DROP COLUMN weight_kg", vec![]).await;
    fx.ctx
        .stores()
        .migrate(&[Product::meta()])
        .await
        .expect("migrate adds the column back");
    assert_eq!(fx.count("products", "weight_kg IS NULL").await, 0);
    let cols = fx
        .sql("SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'products' AND column_name IN ('price', 'stock') ORDER BY column_name", vec![])
        .await;
    let types: Vec<String> = cols.iter().map(|r| r.try_get("", "data_type").unwrap()).collect();
    assert_eq!(types, ["double precision", "bigint"], "integers and floats are 64-bit");

    fx.sql("ALTER TABLE products DROP COLUMN stock", vec![]).await;
    let err = fx
        .ctx
        .stores()
        .migrate(&[Product::meta()])
        .await
        .expect_err("a required column cannot be added");
    assert!(err.to_string().contains("required field 'stock'"), "{err}");
}
