//! How the vector and graph projections behave, against live PostgreSQL, Chroma and the Bolt
//! graph server and on the embedded set: search quality and filters, deletions, tenant scoping, traversals, bad and
//! hostile input, concurrent writers and bulk writes.

use std::collections::BTreeSet;

use dataflow_core::nodes::bulk_upsert::BulkUpsertInput;
use dataflow_core::nodes::create::{CreateInput, CreateOutput};
use dataflow_core::nodes::delete::DeleteInput;
use dataflow_core::nodes::graph::GraphInput;
use dataflow_core::nodes::read::{CacheOutcome, ReadInput};
use dataflow_core::nodes::search::SearchInput;
use dataflow_core::nodes::update::UpdateInput;
use dataflow_core::{Error, Node, ProjectionMode, StoreKind};
use dataflow_models::*;
use dataflow_tests::fixture::{Backend, Fixture, sample_product};
use dataflow_tests::on_both_backends;
use dataflow_tests::world::{MARKERS, TENANT, World};
use serde_json::{Map, Value as Json, json};

async fn create_category(fx: &Fixture, slug: &str) -> i64 {
    let record: NewCategory =
        serde_json::from_value(json!({"slug": slug, "name": slug, "description": "", "parent_id": null, "active": true})).unwrap();
    CategoryCreateNode
        .run(&fx.ctx, CreateInput { record })
        .await
        .expect("create a category")
        .record
        .id()
}

async fn create_product(fx: &Fixture, i: usize, category: i64, description: &str) -> i64 {
    let mut row = sample_product(i);
    row["category_id"] = category.into();
    row["description"] = description.into();
    let record: NewProduct = serde_json::from_value(row).unwrap();
    let out = ProductCreateNode
        .run(&fx.ctx, CreateInput { record })
        .await
        .expect("create a product");
    assert!(out.pending.is_empty(), "pending {:?}", out.pending);
    out.record.id()
}

/// Creates sample products `0..n` in `category`, all at once (each on a task of its own).
async fn create_at_once(fx: &Fixture, category: i64, n: usize) -> Vec<CreateOutput<Product>> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let ctx = fx.ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut row = sample_product(i);
            row["category_id"] = category.into();
            let record: NewProduct = serde_json::from_value(row).unwrap();
            ProductCreateNode.run(&ctx, CreateInput { record }).await
        }));
    }
    let mut outputs = Vec::with_capacity(n);
    for task in tasks {
        outputs.push(task.await.unwrap().expect("create"));
    }
    outputs
}

async fn search(fx: &Fixture, input: Json) -> Result<Vec<i64>, Error> {
    let input: SearchInput = serde_json::from_value(input).expect("a search input");
    let out = ProductSearchNode.run(&fx.ctx, input).await?;
    Ok(out.hits.iter().map(|h| h.record.id()).collect())
}

fn graph_input(value: Json) -> GraphInput {
    serde_json::from_value(value).expect("a graph input")
}

async fn a_query_with_words_of_one_description_returns_that_product_first(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "search_quality").await;
    let category = create_category(&fx, "mixed").await;
    let descriptions = [
        "Cordless hammer drill with two 18 V batteries and a carry case",
        "Nitrile safety gloves, size 9, box of 100",
        "Laser distance meter measuring up to 50 metres",
        "Angle grinder for cutting steel and stone, 125 mm disc",
        "Hard hat with adjustable headband, white",
        "Extension cable reel, 25 m, four sockets",
        "Wet and dry vacuum cleaner for workshops",
        "Circular saw blade for hardwood, 190 mm, 48 teeth",
    ];
    let queries = [
        "hammer drill batteries",
        "safety gloves",
        "laser distance meter",
        "angle grinder steel",
        "hard hat headband",
        "extension cable sockets",
        "vacuum cleaner workshop",
        "saw blade hardwood teeth",
    ];
    let mut ids = Vec::new();
    for (i, d) in descriptions.iter().enumerate() {
        ids.push(create_product(&fx, i, category, d).await);
    }
    for (query, id) in queries.iter().zip(&ids) {
        let hits = search(&fx, json!({"query": query, "top_k": 3})).await.unwrap();
        assert_eq!(hits[0], *id, "query {query:?} ranked {hits:?}");
    }
    // A vector query: the embedding of a description finds that product.
    let vector = fx.ctx.stores().embedder().embed(&[descriptions[2]]).unwrap().pop().unwrap();
    let hits = search(&fx, json!({"vector": vector, "top_k": 1})).await.unwrap();
    assert_eq!(hits, vec![ids[2]]);
}
on_both_backends!(a_query_with_words_of_one_description_returns_that_product_first);

async fn search_filters_use_the_stored_metadata_and_reject_what_vectors_do_not_carry(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "search_filters").await;
    let category = create_category(&fx, "drills").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        // sample_product: price i % 100 + 0.5, active when i is even.
        ids.push(create_product(&fx, i, category, "cordless drill").await);
    }
    let hits: BTreeSet<i64> = search(
        &fx,
        json!({"query": "cordless drill", "filter": {"price": {"$gte": 2}, "active": true}}),
    )
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(hits, BTreeSet::from([ids[2], ids[4]]));
    let hits: BTreeSet<i64> = search(
        &fx,
        json!({"query": "cordless drill", "filter": {"$or": [{"sku": "SKU-00001"}, {"id": {"$in": [ids[5]]}}]}}),
    )
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(hits, BTreeSet::from([ids[1], ids[5]]));
    assert!(
        search(&fx, json!({"query": "drill", "filter": {"id": {"$in": []}}}))
            .await
            .unwrap()
            .is_empty()
    );

    for (filter, expected) in [
        (json!({"description": "x"}), "is not stored with Product's vectors"),
        (json!({"colour": "red"}), "unknown field 'colour'"),
        (json!({"sku": {"$contains": "SKU"}}), "not available in search filters"),
        (json!({"sku": {"$gt": "A"}}), "order numbers only"),
        (json!({"$not": {"active": true}}), "cannot negate"),
        (json!({"price": {"$gte": "cheap"}}), "must be a number"),
    ] {
        let err = search(&fx, json!({"query": "drill", "filter": filter}))
            .await
            .expect_err("a bad filter");
        assert!(
            matches!(err, Error::InvalidInput { part: "filter", .. }) && err.to_string().contains(expected),
            "{filter}: {err}"
        );
    }
    for (input, part) in [
        (json!({"query": "drill", "top_k": 0}), "top_k"),
        (json!({"query": "drill", "top_k": 101}), "top_k"),
        (json!({"query": "   "}), "query"),
        (json!({"vector": [1.0, 2.0]}), "vector"),
        (json!({"query": "a", "vector": [1.0]}), "input"),
        (json!({}), "input"),
    ] {
        let err = search(&fx, input.clone()).await.expect_err("bad input");
        assert!(matches!(err, Error::InvalidInput { part: p, .. } if p == part), "{input}: {err}");
    }
}
on_both_backends!(search_filters_use_the_stored_metadata_and_reject_what_vectors_do_not_carry);

async fn rows_deleted_in_postgres_never_appear_in_search(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "search_deleted").await;
    let category = create_category(&fx, "saws").await;
    let kept = create_product(&fx, 1, category, "circular saw blade").await;
    let soft = create_product(&fx, 2, category, "circular saw blade").await;
    let bypassed = create_product(&fx, 3, category, "circular saw blade").await;

    // Through the node: the row is soft-deleted and its document leaves Chroma.
    ProductDeleteNode
        .run(
            &fx.ctx,
            DeleteInput {
                id: Some(soft),
                filter: None,
                hard: false,
            },
        )
        .await
        .unwrap();
    assert!(!fx.vector_documents("products").await.contains_key(&soft.to_string()));
    // Behind the framework's back, in plain SQL: Chroma still has the vector, but hydration
    // from PostgreSQL drops it.
    fx.sql("DELETE FROM products WHERE id = $1", vec![bypassed.into()]).await;
    assert!(fx.vector_documents("products").await.contains_key(&bypassed.to_string()));
    let hits = search(&fx, json!({"query": "circular saw blade", "top_k": 3})).await.unwrap();
    assert_eq!(hits, vec![kept]);
}
on_both_backends!(rows_deleted_in_postgres_never_appear_in_search);

async fn search_and_traversals_stay_inside_the_tenant(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "tenant_projections").await;
    let world = World::create(&fx).await;
    let other = fx.tenant("globex");
    let category = world.id("Category", 1);
    let record: NewCustomer = serde_json::from_value(
        json!({"name": format!("Buyer {}", MARKERS[0]), "email": "x@globex.example", "segment": "retail", "country": "FR", "credit_limit": 5.0}),
    )
    .unwrap();
    let globex_customer = CustomerCreateNode.run(&other, CreateInput { record }).await.unwrap().record.id();
    let record: NewProject = serde_json::from_value(
        json!({"customer_id": globex_customer, "name": "Globex depot", "description": "A depot",
        "status": "active", "budget": null, "category_id": category, "due_at": null}),
    )
    .unwrap();
    let globex_project = ProjectCreateNode.run(&other, CreateInput { record }).await.unwrap().record.id();

    // The same words find each tenant's own customer only.
    let acme = fx.tenant(TENANT);
    for (ctx, expected) in [(&acme, world.id("Customer", 0)), (&other, globex_customer)] {
        let hits = CustomerSearchNode
            .run(
                ctx,
                SearchInput {
                    query: Some(format!("Buyer {}", MARKERS[0])),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .hits;
        assert_eq!(hits[0].record.id(), expected);
        assert!(hits.iter().all(|h| h.record.id()
            != if expected == globex_customer {
                world.id("Customer", 0)
            } else {
                globex_customer
            }));
    }
    // Without a tenant, a multi-tenant model cannot be searched at all.
    let err = CustomerSearchNode
        .run(
            &fx.ctx,
            SearchInput {
                query: Some("Buyer".into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("no tenant");
    assert!(matches!(err, Error::MissingTenant { .. }));

    // From the shared category, each tenant sees its own projects; no tenant sees none.
    let projects = |ctx: dataflow_core::Context| async move {
        CategoryGraphNode
            .run(
                &ctx,
                graph_input(json!({"op": "neighbors", "id": category, "relation": "NEEDS_CATEGORY", "direction": "in"})),
            )
            .await
            .unwrap()
            .neighbors
            .iter()
            .map(|n| n.id)
            .collect::<BTreeSet<i64>>()
    };
    assert_eq!(
        projects(acme.clone()).await,
        BTreeSet::from([world.id("Project", 0), world.id("Project", 1)])
    );
    assert_eq!(projects(other.clone()).await, BTreeSet::from([globex_project]));
    assert!(projects(fx.ctx.clone()).await.is_empty());
    // A path from acme's project to globex's would cross the shared category: not for acme.
    let err = ProjectGraphNode
        .run(
            &acme,
            graph_input(json!({"op": "path", "id": world.id("Project", 0), "target_model": "Project", "target_id": globex_project})),
        )
        .await
        .expect_err("globex's project is not acme's to see");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    // Traversing from another tenant's row is refused as not found.
    let err = ProjectGraphNode
        .run(&other, graph_input(json!({"op": "neighbors", "id": world.id("Project", 0)})))
        .await
        .expect_err("acme's project");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}
on_both_backends!(search_and_traversals_stay_inside_the_tenant);

async fn traversals_follow_direction_depth_and_relation(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "traversals").await;
    let world = World::create(&fx).await;
    let product = world.id("Product", 0);
    let root = world.id("Category", 0);
    let drills = world.id("Category", 1);
    let neighbors = |input: Json| {
        let ctx = fx.ctx.clone();
        async move {
            ProductGraphNode
                .run(&ctx, graph_input(input))
                .await
                .unwrap()
                .neighbors
                .into_iter()
                .map(|n| (n.model, n.id, n.depth))
                .collect::<BTreeSet<_>>()
        }
    };
    // Out, depth 1: the product's category, maker and supplier.
    assert_eq!(
        neighbors(json!({"op": "neighbors", "id": product})).await,
        BTreeSet::from([
            ("Category".to_owned(), drills, 1),
            ("Manufacturer".to_owned(), world.id("Manufacturer", 0), 1),
            ("Supplier".to_owned(), world.id("Supplier", 0), 1),
        ])
    );
    // Out along IN_CATEGORY to depth 2 stays on that relation; any relation reaches the root.
    assert_eq!(
        neighbors(json!({"op": "neighbors", "id": product, "relation": "IN_CATEGORY", "depth": 2})).await,
        BTreeSet::from([("Category".to_owned(), drills, 1)])
    );
    assert!(
        neighbors(json!({"op": "neighbors", "id": product, "depth": 2}))
            .await
            .contains(&("Category".to_owned(), root, 2))
    );
    // In: who points at the product.
    assert_eq!(
        neighbors(json!({"op": "neighbors", "id": product, "direction": "in"})).await,
        BTreeSet::from([("Classification".to_owned(), world.id("Classification", 0), 1)])
    );
    // A shortest path from the product to the root category, with rows.
    let path = ProductGraphNode
        .run(
            &fx.ctx,
            graph_input(json!({"op": "path", "id": product, "target_model": "Category", "target_id": root, "hydrate": true})),
        )
        .await
        .unwrap()
        .path
        .expect("a path");
    let steps: Vec<(String, i64)> = path.steps.iter().map(|s| (s.model.clone(), s.id)).collect();
    assert_eq!(
        steps,
        vec![("Product".into(), product), ("Category".into(), drills), ("Category".into(), root)]
    );
    assert_eq!(path.relations, vec!["IN_CATEGORY", "CHILD_OF"]);
    assert_eq!(path.steps[2].record.as_ref().unwrap()["slug"], json!("tools"));
    // Too short a depth finds nothing.
    let none = ProductGraphNode
        .run(
            &fx.ctx,
            graph_input(json!({"op": "path", "id": product, "target_model": "Category", "target_id": root, "max_depth": 1})),
        )
        .await
        .unwrap();
    assert!(none.path.is_none());

    // Bad traversals are rejected, naming what was wrong, before any query.
    for (input, part, says) in [
        (json!({"op": "neighbors", "id": product, "depth": 6}), "depth", "between 1 and 5"),
        (json!({"op": "neighbors", "id": product, "depth": 0}), "depth", "between 1 and 5"),
        (json!({"op": "neighbors", "id": product, "limit": 0}), "limit", "between 1 and 1000"),
        (
            json!({"op": "neighbors", "id": product, "relation": "CHILD_OF"}),
            "relation",
            "outgoing relations of Product: IN_CATEGORY, MADE_BY, SUPPLIED_BY",
        ),
        (
            json!({"op": "neighbors", "id": product, "relation": "IN_CATEGORY", "direction": "in"}),
            "relation",
            "incoming relations of Product",
        ),
        (
            json!({"op": "path", "id": product, "target_model": "Widget", "target_id": 1}),
            "target_model",
            "unknown model 'Widget'",
        ),
        (
            json!({"op": "path", "id": product, "target_model": "Category", "target_id": root, "relation": "NOPE"}),
            "relation",
            "unknown relation 'NOPE'",
        ),
        (
            json!({"op": "link", "id": product, "relation": "CHILD_OF", "target_id": root}),
            "relation",
            "Product declares: IN_CATEGORY, MADE_BY, SUPPLIED_BY",
        ),
    ] {
        let err = ProductGraphNode
            .run(&fx.ctx, graph_input(input.clone()))
            .await
            .expect_err("bad input");
        assert!(
            matches!(&err, Error::InvalidInput { part: p, .. } if *p == part) && err.to_string().contains(says),
            "{input}: {err}"
        );
    }
    // Unknown operations and fields do not even deserialize.
    assert!(serde_json::from_value::<GraphInput>(json!({"op": "drop_all", "id": 1})).is_err());
    assert!(serde_json::from_value::<GraphInput>(json!({"op": "neighbors", "id": 1, "depht": 2})).is_err());
    // Linking to a row that does not exist is refused, and nothing changes.
    let err = ProductGraphNode
        .run(
            &fx.ctx,
            GraphInput::Link {
                id: product,
                relation: "IN_CATEGORY".into(),
                target_id: 999_999,
            },
        )
        .await
        .expect_err("no such category");
    assert!(
        matches!(
            err,
            Error::NotFound {
                model: "Category",
                id: 999_999
            }
        ),
        "{err}"
    );
    let row = fx.sql("SELECT category_id FROM products WHERE id = $1", vec![product.into()]).await;
    assert_eq!(row[0].try_get::<i64>("", "category_id").unwrap(), drills);
}
on_both_backends!(traversals_follow_direction_depth_and_relation);

async fn hostile_text_in_relation_names_filters_and_search_is_rejected_or_stored_literally(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "projection_injection").await;
    let world = World::create(&fx).await;
    let product = world.id("Product", 0);
    let before = fx.graph_node_count().await;
    let hostile = [
        "IN_CATEGORY]->(x) DETACH DELETE x //",
        "IN_CATEGORY` DETACH DELETE n //",
        "' OR 1=1 --",
        "IN_CATEGORY\u{0}",
    ];
    for name in hostile {
        for input in [
            json!({"op": "neighbors", "id": product, "relation": name}),
            json!({"op": "link", "id": product, "relation": name, "target_id": 1}),
            json!({"op": "unlink", "id": product, "relation": name}),
            json!({"op": "path", "id": product, "target_model": name, "target_id": 1}),
        ] {
            let err = ProductGraphNode
                .run(&fx.ctx, graph_input(input.clone()))
                .await
                .expect_err("hostile name");
            assert!(matches!(err, Error::InvalidInput { .. }), "{input}: {err}");
        }
        let err = search(&fx, json!({"query": "drill", "filter": {name: 1}}))
            .await
            .expect_err("hostile key");
        assert!(matches!(err, Error::InvalidInput { part: "filter", .. }), "{err}");
        // As search text it is just text: the search runs and nothing changes.
        search(&fx, json!({"query": name})).await.expect("search text is text");
    }
    let after = fx.graph_node_count().await;
    assert_eq!(before, after, "no node was added or removed");

    // A hostile value in an indexed text field is stored literally in every store.
    let name = "Maker\"}) MATCH (n) DETACH DELETE n //'; DROP TABLE products; --";
    let record: NewManufacturer =
        serde_json::from_value(json!({"name": name, "country": "DE", "website": null, "description": "x"})).unwrap();
    let id = ManufacturerCreateNode
        .run(&fx.ctx, CreateInput { record })
        .await
        .unwrap()
        .record
        .id();
    let (props, _) = fx.graph_node("Manufacturer", id).await.unwrap();
    assert_eq!(props["name"], json!(name));
    let docs = fx.vector_documents("manufacturers").await;
    assert_eq!(docs[&id.to_string()].1["name"], json!(name));
    assert!(docs[&id.to_string()].0.starts_with(name));
    assert_eq!(fx.count("products", "").await, 2);
}
on_both_backends!(hostile_text_in_relation_names_filters_and_search_is_rejected_or_stored_literally);

async fn concurrent_creates_in_one_category_all_reach_the_graph(backend: Backend) {
    // Each create adds an edge to the same category node: ArcadeDB reports these as
    // transient conflicts, which the backend retries (see store::graph::bolt).
    let fx = Fixture::with_projections_on(backend, "concurrent_creates").await;
    let category = create_category(&fx, "busy").await;
    for out in create_at_once(&fx, category, 24).await {
        assert!(out.pending.is_empty(), "pending {:?}", out.pending);
    }
    let counts = fx.graph_edge_counts("Product", "IN_CATEGORY", "Category").await;
    assert_eq!(counts.get(&category), Some(&24));
    assert_eq!(fx.ctx.stores().outbox().pending_count().await.unwrap(), 0);
}
on_both_backends!(concurrent_creates_in_one_category_all_reach_the_graph);

async fn concurrent_updates_of_one_row_leave_its_projections_at_its_latest_version(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "concurrent_updates").await;
    let category = create_category(&fx, "race").await;
    let id = create_product(&fx, 1, category, "contended drill").await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let ctx = fx.ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut patch = Map::new();
            patch.insert("price".into(), json!(10.0 + i as f64));
            patch.insert("name".into(), json!(format!("Contender {i}")));
            ProductUpdateNode.run(&ctx, UpdateInput::by_id(id, patch)).await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("update");
    }
    // On a loaded machine a projection can time out and stay pending (the update still
    // succeeds); `sync` applies it, and the property is about what the stores hold then.
    if !fx.ctx.stores().outbox().pending_records(100).await.unwrap().is_empty() {
        fx.ctx.stores().outbox().sync().await.expect("sync");
    }
    let pending = fx.ctx.stores().outbox().pending_records(100).await.unwrap();
    assert!(pending.is_empty(), "{pending:#?}");
    let rows = fx
        .sql("SELECT price, name, version FROM products WHERE id = $1", vec![id.into()])
        .await;
    let price: f64 = rows[0].try_get("", "price").unwrap();
    let name: String = rows[0].try_get("", "name").unwrap();
    let version: i64 = rows[0].try_get("", "version").unwrap();
    assert_eq!(version, 17);
    let docs = fx.vector_documents("products").await;
    let (document, metadata) = &docs[&id.to_string()];
    assert_eq!(metadata["version"], json!(version));
    assert_eq!(metadata["price"].as_f64(), Some(price));
    assert!(document.starts_with(&name), "{document} vs {name}");
    let (props, _) = fx.graph_node("Product", id).await.unwrap();
    assert_eq!(props["version"], json!(version));
    assert_eq!(props["price"].as_f64(), Some(price));
    assert_eq!(fx.ctx.stores().outbox().pending_count().await.unwrap(), 0);
}
on_both_backends!(concurrent_updates_of_one_row_leave_its_projections_at_its_latest_version);

async fn bulk_upsert_projects_every_row_in_batches(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "bulk_projections").await;
    let categories = [create_category(&fx, "bulk-a").await, create_category(&fx, "bulk-b").await];
    let rows: Vec<Json> = (0..1200)
        .map(|i| {
            let mut row = sample_product(i);
            row["category_id"] = categories[i % 2].into();
            row["description"] = format!("bulk item {i}").into();
            row
        })
        .collect();
    let out = ProductBulkUpsertNode
        .run(
            &fx.ctx,
            BulkUpsertInput {
                rows: rows.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("bulk upsert");
    assert_eq!((out.inserted, out.errors.len()), (1200, 0));
    assert!(out.pending.is_empty(), "pending {:?}", out.pending);
    assert_eq!(fx.vector_documents("products").await.len(), 1200);
    let counts = fx.graph_edge_counts("Product", "IN_CATEGORY", "Category").await;
    assert_eq!(counts, [(categories[0], 600), (categories[1], 600)].into());

    // Upserting again on the SKU moves every product to the first category and rewrites
    // the documents; edges and vectors follow.
    let again: Vec<Json> = rows
        .into_iter()
        .map(|mut row| {
            row["category_id"] = categories[0].into();
            row["description"] = "rewritten".into();
            row
        })
        .collect();
    let out = ProductBulkUpsertNode
        .run(
            &fx.ctx,
            BulkUpsertInput {
                rows: again,
                conflict_key: Some("sku".into()),
                ..Default::default()
            },
        )
        .await
        .expect("bulk upsert again");
    assert_eq!((out.inserted, out.updated), (0, 1200));
    let pending = fx.ctx.stores().outbox().pending_records(3).await.unwrap();
    assert!(pending.is_empty(), "{pending:#?}");
    let docs = fx.vector_documents("products").await;
    assert!(docs.values().all(|(d, md)| d.ends_with("\nrewritten") && md["version"] == json!(2)));
    let counts = fx.graph_edge_counts("Product", "IN_CATEGORY", "Category").await;
    assert_eq!(counts, [(categories[0], 1200)].into());
    let pending = fx.ctx.stores().outbox().pending_records(3).await.unwrap();
    assert!(pending.is_empty(), "{pending:#?}");
}
on_both_backends!(bulk_upsert_projects_every_row_in_batches);

/// With background projections a write returns once its row is committed and its cache entry
/// invalidated: its output names the vector and graph projections as pending, a Read right
/// after an Update is served the new row, and the projector applies the rest by itself (no
/// one calls `sync` here) to the same documents, nodes and edges an inline write leaves.
async fn background_projections_land_without_a_sync_and_reads_never_see_the_old_row(backend: Backend) {
    let fx = Fixture::with_projections_config_on(backend, "background_projections", |c| {
        c.with_projections(ProjectionMode::Background)
    })
    .await;
    let category = create_category(&fx, "background").await;
    let mut ids = Vec::new();
    for out in create_at_once(&fx, category, 20).await {
        assert_eq!(out.pending, [StoreKind::Vector, StoreKind::Graph], "left to the projector");
        ids.push(out.record.id());
    }

    // The cache is invalidated before the Update returns: the cached old row is never served.
    let id = ids[0];
    let read = |ctx: dataflow_core::Context| async move {
        ProductReadNode
            .run(
                &ctx,
                ReadInput {
                    id,
                    include_deleted: false,
                    required: false,
                },
            )
            .await
            .expect("read")
    };
    read(fx.ctx.clone()).await;
    assert_eq!(read(fx.ctx.clone()).await.cache, CacheOutcome::Hit, "the row is cached");
    let mut patch = Map::new();
    patch.insert("name".into(), json!("Renamed in the background"));
    let updated = ProductUpdateNode.run(&fx.ctx, UpdateInput::by_id(id, patch)).await.expect("update");
    assert_eq!(updated.pending, [StoreKind::Vector, StoreKind::Graph]);
    let after = read(fx.ctx.clone()).await.record.expect("the row");
    assert_eq!((after.data.name.as_str(), after.version), ("Renamed in the background", 2));

    // The projector catches up by itself; the deadline only turns a hang into a failure.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while fx.ctx.stores().outbox().pending_count().await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:#?}",
            fx.ctx.stores().outbox().pending_records(5).await.unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let docs = fx.vector_documents("products").await;
    assert_eq!(docs.len(), 20);
    let (document, metadata) = &docs[&id.to_string()];
    assert!(document.starts_with("Renamed in the background"), "{document}");
    assert_eq!(metadata["version"], json!(2));
    let counts = fx.graph_edge_counts("Product", "IN_CATEGORY", "Category").await;
    assert_eq!(counts, [(category, 20)].into());
    let (props, _) = fx.graph_node("Product", id).await.expect("the node");
    assert_eq!(props["version"], json!(2));
    let hits = search(&fx, json!({"query": "Renamed in the background", "top_k": 1}))
        .await
        .expect("search");
    assert_eq!(hits, [id]);

    // A process about to end applies what is left at once, whatever the projector was doing.
    for i in 20..30 {
        let mut row = sample_product(i);
        row["category_id"] = category.into();
        let record: NewProduct = serde_json::from_value(row).unwrap();
        ProductCreateNode.run(&fx.ctx, CreateInput { record }).await.expect("create");
    }
    let finished = fx.ctx.stores().outbox().finish_projections().await.expect("finish");
    assert_eq!((finished.failed, finished.remaining), (0, 0), "{finished:?}");
    assert_eq!(fx.vector_documents("products").await.len(), 30);
    assert_eq!(
        fx.graph_edge_counts("Product", "IN_CATEGORY", "Category").await,
        [(category, 30)].into()
    );
}
on_both_backends!(background_projections_land_without_a_sync_and_reads_never_see_the_old_row);

#[tokio::test]
async fn search_and_graph_input_is_rejected_before_any_store_is_touched() {
    // No tables exist: a query that reached PostgreSQL would fail with a store error.
    let fx = Fixture::with_projections_without_tables("projection_bad_input").await;
    for input in [
        json!({"query": "drill", "filter": {"nope": 1}}),
        json!({"query": "drill", "top_k": 1000}),
        json!({"query": "x".repeat(10_001)}),
    ] {
        let err = search(&fx, input.clone()).await.expect_err("bad input");
        assert!(matches!(err, Error::InvalidInput { .. }), "{input}: {err}");
    }
    for input in [
        json!({"op": "neighbors", "id": 1, "relation": "NOPE"}),
        json!({"op": "neighbors", "id": 1, "depth": 9}),
        json!({"op": "link", "id": 1, "relation": "NOPE", "target_id": 2}),
        json!({"op": "path", "id": 1, "target_model": "Nope", "target_id": 2}),
    ] {
        let err = ProductGraphNode
            .run(&fx.ctx, graph_input(input.clone()))
            .await
            .expect_err("bad input");
        assert!(matches!(err, Error::InvalidInput { .. }), "{input}: {err}");
    }
}
