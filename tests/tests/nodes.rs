//! Every generated relational node of every shipped model (13 × 7 = 91), run against live
//! PostgreSQL and Redis and against the embedded set (SQLite and the in-process cache), with
//! outcomes read back in plain SQL.

use chrono::DateTime;
use dataflow_core::nodes::aggregate::{AggregateInput, AggregateOutput};
use dataflow_core::nodes::bulk_upsert::{BulkUpsertInput, BulkUpsertOutput};
use dataflow_core::nodes::create::{CreateInput, CreateOutput};
use dataflow_core::nodes::delete::{DeleteInput, DeleteOutput};
use dataflow_core::nodes::list::{ListInput, ListOutput};
use dataflow_core::nodes::read::{CacheOutcome, ReadInput, ReadOutput};
use dataflow_core::nodes::update::{UpdateInput, UpdateOutput};
use dataflow_core::{Filter, Model, Node, Op};
use dataflow_models::*;
use dataflow_tests::fixture::{Backend, Fixture};
use dataflow_tests::on_both_backends;
use dataflow_tests::world::World;
use serde_json::{Value as Json, json};

/// What one model's test feeds its nodes.
struct Case {
    /// A valid new record; `i` makes unique fields unique.
    sample: fn(usize) -> Json,
    /// A valid patch that changes the sample.
    patch: Json,
    /// The tenant, for multi-tenant models.
    tenant: Option<&'static str>,
}

/// Runs the model's seven relational nodes and checks each against plain SQL.
#[allow(clippy::type_complexity)]
async fn exercise<M, C, R, U, D, L, B, A>(nodes: (C, R, U, D, L, B, A), case: Case, backend: Backend)
where
    M: Model,
    C: Node<Input = CreateInput<M>, Output = CreateOutput<M>>,
    R: Node<Input = ReadInput, Output = ReadOutput<M>>,
    U: Node<Input = UpdateInput, Output = UpdateOutput<M>>,
    D: Node<Input = DeleteInput, Output = DeleteOutput>,
    L: Node<Input = ListInput, Output = ListOutput<M>>,
    B: Node<Input = BulkUpsertInput, Output = BulkUpsertOutput>,
    A: Node<Input = AggregateInput, Output = AggregateOutput>,
{
    let (create, read, update, delete, list, bulk, aggregate) = nodes;
    let meta = M::meta();
    let table = meta.table;
    let fx = Fixture::on(backend, table).await;
    // Foreign keys must name visible rows: the world's (two rows of every model, ids 1 and 2,
    // customer-owned ones of tenant "acme"), without the rows of the model under test, whose
    // table starts empty.
    World::create(&fx).await;
    empty_with_what_names_it(&fx, meta).await;
    let ctx = match case.tenant {
        Some(t) => fx.tenant(t),
        None => fx.ctx.clone(),
    };

    // Create: the stored row has a generated id, version 1, and exactly the sample's values.
    let sample = (case.sample)(1);
    let record: M::New = serde_json::from_value(sample.clone()).expect("the sample fits the model");
    let created = create.run(&ctx, CreateInput { record }).await.expect("create").record;
    let id = created.id();
    assert!(id > 0);
    assert_eq!(created.version, 1);
    let stored = fx.stored_row(table, id).await;
    assert_fields_match(&stored, &sample);
    assert_eq!(stored["version"], json!(1));
    if let Some(t) = case.tenant {
        assert_eq!(stored["tenant_id"], json!(t));
    }

    // Read: a miss that fills the cache, then a hit; both equal to what was created.
    let first = read
        .run(
            &ctx,
            ReadInput {
                id,
                include_deleted: false,
                required: false,
            },
        )
        .await
        .expect("read");
    assert_eq!(first.cache, CacheOutcome::Miss);
    assert_eq!(first.record.as_ref().map(|r| r.id()), Some(id));
    let second = read
        .run(
            &ctx,
            ReadInput {
                id,
                include_deleted: false,
                required: false,
            },
        )
        .await
        .expect("read again");
    assert_eq!(second.cache, CacheOutcome::Hit);
    assert_eq!(
        serde_json::to_value(&second.record).unwrap(),
        serde_json::to_value(&first.record).unwrap()
    );

    // Update by id at the current version: what changed is reported and stored.
    let patch = case.patch.as_object().expect("a patch object").clone();
    let updated = update
        .run(
            &ctx,
            UpdateInput {
                id: Some(id),
                expected_version: Some(1),
                filter: None,
                patch: patch.clone(),
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.updated, 1);
    assert_eq!(updated.changes.len(), patch.len());
    let stored = fx.stored_row(table, id).await;
    assert_fields_match(&stored, &case.patch);
    assert_eq!(stored["version"], json!(2));

    // BulkUpsert: three new rows land.
    let rows: Vec<Json> = (2..=4).map(case.sample).collect();
    let report = bulk
        .run(
            &ctx,
            BulkUpsertInput {
                rows,
                ..Default::default()
            },
        )
        .await
        .expect("bulk upsert");
    assert_eq!((report.inserted, report.updated, report.errors.len()), (3, 0, 0), "{report:?}");
    assert_eq!(fx.count(table, "").await, 4);
    for (i, new_id) in report.ids.iter().enumerate() {
        let stored = fx.stored_row(table, new_id.expect("an id per row")).await;
        assert_fields_match(&stored, &(case.sample)(i + 2));
    }

    // List: all four, in primary-key order, with the total.
    let page = list
        .run(
            &ctx,
            ListInput {
                with_total: true,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(page.total, Some(4));
    let ids: Vec<i64> = page.records.iter().map(|r| r.id()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids[0], id);
    let one = list
        .run(
            &ctx,
            ListInput {
                filter: Some(Filter::compare(meta.primary_key, Op::Eq, id)),
                ..Default::default()
            },
        )
        .await
        .expect("list by filter");
    assert_eq!(one.records.len(), 1);

    // Aggregate: the count agrees with SQL.
    let agg = aggregate.run(&ctx, AggregateInput::default()).await.expect("aggregate");
    assert_eq!(agg.groups[0]["count"], json!(fx.count(table, "").await));

    // Delete by id: soft-deleted rows stay with deleted_at set; others are gone.
    let deleted = delete
        .run(
            &ctx,
            DeleteInput {
                id: Some(id),
                filter: None,
                hard: false,
            },
        )
        .await
        .expect("delete");
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.soft, meta.soft_delete);
    if meta.soft_delete {
        assert_eq!(fx.count(table, &format!("id = {id} AND deleted_at IS NOT NULL")).await, 1);
    } else {
        assert_eq!(fx.count(table, &format!("id = {id}")).await, 0);
    }
    let gone = read
        .run(
            &ctx,
            ReadInput {
                id,
                include_deleted: false,
                required: false,
            },
        )
        .await
        .expect("read after delete");
    assert!(gone.record.is_none(), "a deleted row must not be served (cache included)");
}

/// Empties `meta`'s table, after the tables whose rows name its rows (transitively): their
/// foreign-key constraints would refuse to leave those rows naming nothing.
async fn empty_with_what_names_it(fx: &Fixture, meta: &'static dataflow_core::ModelMeta) {
    fn dependents_first(meta: &'static dataflow_core::ModelMeta, order: &mut Vec<&'static dataflow_core::ModelMeta>) {
        for model in dataflow_models::all_models() {
            let names_it = model.relations.iter().any(|r| (r.target_meta)().name == meta.name);
            if names_it && model.name != meta.name && !order.iter().any(|m| m.name == model.name) {
                dependents_first(model, order);
            }
        }
        if !order.iter().any(|m| m.name == meta.name) {
            order.push(meta);
        }
    }
    let mut order = Vec::new();
    dependents_first(meta, &mut order);
    for model in order {
        fx.sql(&format!("DELETE FROM \"{}\"", model.table), vec![]).await;
    }
}

/// Every field of `expected` equals the stored column (numbers numerically, timestamps as instants).
fn assert_fields_match(stored: &Json, expected: &Json) {
    for (field, want) in expected.as_object().expect("an object") {
        let got = &stored[field];
        let same = match (got, want) {
            (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
            (Json::String(a), Json::String(b)) => match (DateTime::parse_from_rfc3339(a), DateTime::parse_from_rfc3339(b)) {
                (Ok(a), Ok(b)) => a == b,
                _ => a == b,
            },
            _ => got == want,
        };
        assert!(same, "field {field}: stored {got}, expected {want}");
    }
}

on_both_backends!(category_nodes);
async fn category_nodes(backend: Backend) {
    let case = Case {
        sample: |i| json!({"slug": format!("power-tools-{i}"), "name": format!("Power tools {i}"), "description": "Corded and cordless power tools", "parent_id": null, "active": true}),
        patch: json!({"name": "Power tools (renamed)", "active": false}),
        tenant: None,
    };
    exercise::<Category, _, _, _, _, _, _, _>(
        (
            CategoryCreateNode,
            CategoryReadNode,
            CategoryUpdateNode,
            CategoryDeleteNode,
            CategoryListNode,
            CategoryBulkUpsertNode,
            CategoryAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(manufacturer_nodes);
async fn manufacturer_nodes(backend: Backend) {
    let case = Case {
        sample: |i| json!({"name": format!("Maker {i} GmbH"), "country": "DE", "website": "https://maker.example", "description": "Makes drills and saws"}),
        patch: json!({"country": "FR", "website": null}),
        tenant: None,
    };
    exercise::<Manufacturer, _, _, _, _, _, _, _>(
        (
            ManufacturerCreateNode,
            ManufacturerReadNode,
            ManufacturerUpdateNode,
            ManufacturerDeleteNode,
            ManufacturerListNode,
            ManufacturerBulkUpsertNode,
            ManufacturerAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(supplier_nodes);
async fn supplier_nodes(backend: Backend) {
    let case = Case {
        sample: |i| json!({"code": format!("SUP-{i:05}"), "name": format!("Supplier {i}"), "email": "orders@supplier.example", "country": "NL", "rating": 4.5, "lead_time_days": 7, "active": true}),
        patch: json!({"rating": 3.0, "lead_time_days": 14}),
        tenant: None,
    };
    exercise::<Supplier, _, _, _, _, _, _, _>(
        (
            SupplierCreateNode,
            SupplierReadNode,
            SupplierUpdateNode,
            SupplierDeleteNode,
            SupplierListNode,
            SupplierBulkUpsertNode,
            SupplierAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(unspsc_code_nodes);
async fn unspsc_code_nodes(backend: Backend) {
    let case = Case {
        sample: |i| json!({"code": format!("{:08}", 27112700 + i), "title": format!("Power drills {i}"), "level": "commodity"}),
        patch: json!({"title": "Power drills, cordless"}),
        tenant: None,
    };
    exercise::<UnspscCode, _, _, _, _, _, _, _>(
        (
            UnspscCodeCreateNode,
            UnspscCodeReadNode,
            UnspscCodeUpdateNode,
            UnspscCodeDeleteNode,
            UnspscCodeListNode,
            UnspscCodeBulkUpsertNode,
            UnspscCodeAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(etim_class_nodes);
async fn etim_class_nodes(backend: Backend) {
    let case = Case {
        sample: |i| json!({"code": format!("EC{:06}", 62 + i), "description": format!("Drill {i}"), "group_code": "EG000018", "release": "9.0"}),
        patch: json!({"release": "10.0"}),
        tenant: None,
    };
    exercise::<EtimClass, _, _, _, _, _, _, _>(
        (
            EtimClassCreateNode,
            EtimClassReadNode,
            EtimClassUpdateNode,
            EtimClassDeleteNode,
            EtimClassListNode,
            EtimClassBulkUpsertNode,
            EtimClassAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(safety_standard_nodes);
async fn safety_standard_nodes(backend: Backend) {
    let case = Case {
        sample: |i| json!({"code": format!("IEC 62841-2-{i}"), "title": "Electric motor-operated hand-held tools", "body": "IEC", "scope": "Safety of hand-held drills", "published_at": "2021-06-01T00:00:00Z"}),
        patch: json!({"body": "EN", "published_at": "2022-01-15T08:30:00Z"}),
        tenant: None,
    };
    exercise::<SafetyStandard, _, _, _, _, _, _, _>(
        (
            SafetyStandardCreateNode,
            SafetyStandardReadNode,
            SafetyStandardUpdateNode,
            SafetyStandardDeleteNode,
            SafetyStandardListNode,
            SafetyStandardBulkUpsertNode,
            SafetyStandardAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(product_nodes);
async fn product_nodes(backend: Backend) {
    let case = Case {
        sample: |i| {
            json!({"sku": format!("DRL-{i:04}"), "name": format!("Cordless drill {i}"), "description": "18 V cordless drill driver with two batteries",
                   "price": 99.5, "currency": "EUR", "stock": 10, "weight_kg": 1.8, "active": true, "category_id": 1,
                   "manufacturer_id": null, "supplier_id": 2, "attributes": {"voltage": 18, "chuck_mm": 13}})
        },
        patch: json!({"price": 89.0, "stock": 4, "attributes": {"voltage": 18}}),
        tenant: None,
    };
    exercise::<Product, _, _, _, _, _, _, _>(
        (
            ProductCreateNode,
            ProductReadNode,
            ProductUpdateNode,
            ProductDeleteNode,
            ProductListNode,
            ProductBulkUpsertNode,
            ProductAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(classification_nodes);
async fn classification_nodes(backend: Backend) {
    let case = Case {
        sample: |i| json!({"product_id": (i % 2 + 1) as i64, "unspsc_id": 1, "etim_id": null, "confidence": 0.9, "method": "vote", "rationale": "4 of 5 similar drills are 27112700"}),
        patch: json!({"confidence": 0.95, "etim_id": 2}),
        tenant: None,
    };
    exercise::<Classification, _, _, _, _, _, _, _>(
        (
            ClassificationCreateNode,
            ClassificationReadNode,
            ClassificationUpdateNode,
            ClassificationDeleteNode,
            ClassificationListNode,
            ClassificationBulkUpsertNode,
            ClassificationAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(compliance_rule_nodes);
async fn compliance_rule_nodes(backend: Backend) {
    let case = Case {
        sample: |i| {
            json!({"name": format!("Drill insulation {i}"), "description": "Hand-held drills must meet IEC 62841", "standard_id": 1, "category_id": 1,
                   "severity": "blocking", "requirement": {"attribute": "voltage", "max": 230}, "active": true})
        },
        patch: json!({"severity": "warning", "active": false}),
        tenant: None,
    };
    exercise::<ComplianceRule, _, _, _, _, _, _, _>(
        (
            ComplianceRuleCreateNode,
            ComplianceRuleReadNode,
            ComplianceRuleUpdateNode,
            ComplianceRuleDeleteNode,
            ComplianceRuleListNode,
            ComplianceRuleBulkUpsertNode,
            ComplianceRuleAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(customer_nodes);
async fn customer_nodes(backend: Backend) {
    let case = Case {
        sample: |i| json!({"name": format!("Buyer {i}"), "email": format!("buyer{i}@acme.example"), "segment": "industrial", "country": "DE", "credit_limit": 50000.0}),
        patch: json!({"credit_limit": 75000.0}),
        tenant: Some("acme"),
    };
    exercise::<Customer, _, _, _, _, _, _, _>(
        (
            CustomerCreateNode,
            CustomerReadNode,
            CustomerUpdateNode,
            CustomerDeleteNode,
            CustomerListNode,
            CustomerBulkUpsertNode,
            CustomerAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(project_nodes);
async fn project_nodes(backend: Backend) {
    let case = Case {
        sample: |i| {
            json!({"customer_id": 1, "name": format!("Warehouse fit-out {i}"), "description": "Racking, lighting and power tools for a new warehouse",
                   "status": "active", "budget": 120000.0, "category_id": 1, "due_at": "2027-03-31T00:00:00Z"})
        },
        patch: json!({"status": "won", "budget": null}),
        tenant: Some("acme"),
    };
    exercise::<Project, _, _, _, _, _, _, _>(
        (
            ProjectCreateNode,
            ProjectReadNode,
            ProjectUpdateNode,
            ProjectDeleteNode,
            ProjectListNode,
            ProjectBulkUpsertNode,
            ProjectAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(quote_nodes);
async fn quote_nodes(backend: Backend) {
    let case = Case {
        sample: |i| {
            json!({"number": format!("Q-2026-{i:05}"), "customer_id": 1, "project_id": null, "total": 1999.0, "currency": "EUR",
                   "status": "draft", "valid_until": "2026-12-31T23:59:59Z", "notes": "Prices include delivery"})
        },
        patch: json!({"status": "sent", "notes": null}),
        tenant: Some("acme"),
    };
    exercise::<Quote, _, _, _, _, _, _, _>(
        (
            QuoteCreateNode,
            QuoteReadNode,
            QuoteUpdateNode,
            QuoteDeleteNode,
            QuoteListNode,
            QuoteBulkUpsertNode,
            QuoteAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}

on_both_backends!(recommendation_nodes);
async fn recommendation_nodes(backend: Backend) {
    let case = Case {
        sample: |i| json!({"project_id": 1, "product_id": (i % 2 + 1) as i64, "score": 0.82, "rationale": "Matches the project's drilling needs", "status": "proposed"}),
        patch: json!({"status": "accepted", "score": 0.9}),
        tenant: Some("acme"),
    };
    exercise::<Recommendation, _, _, _, _, _, _, _>(
        (
            RecommendationCreateNode,
            RecommendationReadNode,
            RecommendationUpdateNode,
            RecommendationDeleteNode,
            RecommendationListNode,
            RecommendationBulkUpsertNode,
            RecommendationAggregateNode,
        ),
        case,
        backend,
    )
    .await;
}
