//! Projections survive their stores going away: writes succeed with pending projections while
//! Chroma or the graph server is stopped, `sync` (or, with background projections, the
//! projector by itself) applies them once the server is back, and applying the same records
//! twice changes nothing. In its own test binary, one test at a time,
//! because these tests stop servers the binary's tests share.

use std::collections::BTreeMap;

use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::delete::DeleteInput;
use dataflow_core::nodes::update::UpdateInput;
use dataflow_core::{Node, ProjectionMode, StoreKind};
use dataflow_models::*;
use dataflow_tests::fixture::{Fixture, sample_product};
use dataflow_tests::{ServiceKind, Services};
use serde_json::{Map, Value as Json, json};
use tokio::sync::Mutex;

/// One fault test at a time: each stops a server every test of this binary uses.
static SERIAL: Mutex<()> = Mutex::const_new(());

async fn create_category(fx: &Fixture) -> i64 {
    let record: NewCategory =
        serde_json::from_value(json!({"slug": "faults", "name": "Faults", "description": "", "parent_id": null, "active": true})).unwrap();
    CategoryCreateNode.run(&fx.ctx, CreateInput { record }).await.unwrap().record.id()
}

/// Creates products `from..from + n` in `category`; returns `(id, pending projections)` of each.
async fn create_products(fx: &Fixture, category: i64, from: usize, n: usize) -> Vec<(i64, Vec<StoreKind>)> {
    let mut out = Vec::with_capacity(n);
    for i in from..from + n {
        let mut row = sample_product(i);
        row["category_id"] = category.into();
        row["description"] = format!("fault tolerant drill number {i}").into();
        let record: NewProduct = serde_json::from_value(row).unwrap();
        let created = ProductCreateNode
            .run(&fx.ctx, CreateInput { record })
            .await
            .expect("a create succeeds");
        out.push((created.record.id(), created.pending));
    }
    out
}

/// What Chroma and the graph hold for every product row in PostgreSQL must match the row:
/// document text, metadata version and price, node version and category edge. Returns the
/// snapshot it compared, for comparing two states of the stores.
async fn assert_projections_match_postgres(
    fx: &Fixture,
) -> BTreeMap<i64, (String, Map<String, Json>, Map<String, Json>, Vec<(String, String, i64)>)> {
    let rows = fx
        .sql(
            "SELECT id, name, description, price, version, category_id FROM products WHERE deleted_at IS NULL ORDER BY id",
            vec![],
        )
        .await;
    let docs = fx.vector_documents("products").await;
    assert_eq!(docs.len(), rows.len(), "Chroma holds exactly the live rows");
    let mut snapshot = BTreeMap::new();
    for row in rows {
        let id: i64 = row.try_get("", "id").unwrap();
        let name: String = row.try_get("", "name").unwrap();
        let description: String = row.try_get("", "description").unwrap();
        let version: i64 = row.try_get("", "version").unwrap();
        let price: f64 = row.try_get("", "price").unwrap();
        let category: i64 = row.try_get("", "category_id").unwrap();
        let (document, metadata) = docs
            .get(&id.to_string())
            .unwrap_or_else(|| panic!("product {id} is missing in Chroma"));
        assert_eq!(document, &format!("{name}\n{description}"));
        assert_eq!(metadata["version"], json!(version));
        assert_eq!(metadata["price"].as_f64(), Some(price));
        let (props, edges) = fx
            .graph_node("Product", id)
            .await
            .unwrap_or_else(|| panic!("product {id} is missing in the graph"));
        assert_eq!(props["version"], json!(version));
        assert_eq!(edges, vec![("IN_CATEGORY".to_owned(), "Category".to_owned(), category)]);
        snapshot.insert(id, (document.clone(), metadata.clone(), props, edges));
    }
    let nodes = fx.cypher("MATCH (n:`{ns}Product`) RETURN count(n) AS n", vec![]).await;
    assert_eq!(nodes[0]["n"], json!(snapshot.len()), "the graph holds exactly the live rows");
    snapshot
}

#[tokio::test]
async fn creates_while_chroma_is_stopped_succeed_and_sync_applies_them_when_it_returns() {
    let _serial = SERIAL.lock().await;
    let services = Services::global().await;
    let fx = Fixture::with_projections("chroma_down").await;
    let category = create_category(&fx).await;

    let stopped_chroma = services.stop(ServiceKind::Chroma).await;
    let created = create_products(&fx, category, 0, 100).await;
    assert!(
        created.iter().all(|(_, pending)| pending == &vec![StoreKind::Vector]),
        "{:?}",
        &created[..3]
    );
    assert_eq!(fx.ctx.stores().outbox().pending_count().await.unwrap(), 100);
    let records = fx.ctx.stores().outbox().pending_records(1000).await.unwrap();
    assert!(
        records
            .iter()
            .all(|r| r.pending == vec![StoreKind::Vector] && r.attempts == 1 && r.last_error.is_some())
    );
    stopped_chroma.start().await;
    let report = fx.ctx.stores().outbox().sync().await.unwrap();
    assert_eq!((report.applied, report.failed, report.remaining), (100, 0, 0), "{report:?}");
    let snapshot = assert_projections_match_postgres(&fx).await;
    assert_eq!(snapshot.len(), 100);
    assert_eq!(fx.ctx.stores().outbox().pending_count().await.unwrap(), 0);
}

/// With background projections nobody calls `sync`: the projector meets the stopped Chroma,
/// keeps the vector projections pending with their error (the graph ones land), and applies
/// them by itself once Chroma is back.
#[tokio::test]
async fn the_background_projector_keeps_what_a_stopped_chroma_refused_and_applies_it_when_it_returns() {
    let _serial = SERIAL.lock().await;
    let services = Services::global().await;
    let fx = Fixture::with_projections_config("background_chroma_down", |c| c.with_projections(ProjectionMode::Background)).await;
    let pending_records = async || fx.ctx.stores().outbox().pending_records(1000).await.unwrap();
    // The deadlines only turn a hang into a failure.
    let deadline = || std::time::Instant::now() + std::time::Duration::from_secs(120);
    let all_applied = async || {
        let until = deadline();
        while fx.ctx.stores().outbox().pending_count().await.unwrap() > 0 {
            assert!(std::time::Instant::now() < until, "{:#?}", &pending_records().await[..1]);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let category = create_category(&fx).await;
    all_applied().await;

    let stopped_chroma = services.stop(ServiceKind::Chroma).await;
    let created = create_products(&fx, category, 0, 30).await;
    assert!(
        created
            .iter()
            .all(|(_, pending)| pending == &vec![StoreKind::Vector, StoreKind::Graph])
    );
    let until = deadline();
    loop {
        let records = pending_records().await;
        assert_eq!(records.len(), 30, "nothing is dropped while Chroma is down");
        if records
            .iter()
            .all(|r| r.pending == vec![StoreKind::Vector] && r.attempts >= 1 && r.last_error.is_some())
        {
            break;
        }
        assert!(std::time::Instant::now() < until, "{:#?}", &records[..2]);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    stopped_chroma.start().await;
    all_applied().await;
    assert_eq!(assert_projections_match_postgres(&fx).await.len(), 30);
}

#[tokio::test]
async fn creates_while_the_graph_server_is_stopped_succeed_and_sync_applies_them_when_it_returns() {
    let _serial = SERIAL.lock().await;
    let services = Services::global().await;
    let fx = Fixture::with_projections("graph_down").await;
    let category = create_category(&fx).await;

    let stopped_bolt = services.stop(ServiceKind::Bolt).await;
    let created = create_products(&fx, category, 0, 100).await;
    assert!(
        created.iter().all(|(_, pending)| pending == &vec![StoreKind::Graph]),
        "{:?}",
        &created[..3]
    );
    assert_eq!(fx.ctx.stores().outbox().pending_count().await.unwrap(), 100);

    stopped_bolt.start().await;
    let report = fx.ctx.stores().outbox().sync().await.unwrap();
    assert_eq!((report.applied, report.failed, report.remaining), (100, 0, 0), "{report:?}");
    assert_eq!(assert_projections_match_postgres(&fx).await.len(), 100);
}

#[tokio::test]
async fn applying_the_same_outbox_records_twice_leaves_the_stores_identical() {
    let _serial = SERIAL.lock().await;
    let services = Services::global().await;
    let fx = Fixture::with_projections("idempotent_outbox").await;
    let category = create_category(&fx).await;
    let before = create_products(&fx, category, 0, 10).await;

    let stopped_chroma = services.stop(ServiceKind::Chroma).await;
    let stopped_bolt = services.stop(ServiceKind::Bolt).await;
    // Creates, updates and deletes while both projections are down.
    let created = create_products(&fx, category, 10, 10).await;
    for (id, _) in before.iter().take(4).chain(created.iter().take(3)) {
        let mut patch = Map::new();
        patch.insert("price".into(), json!(42.5));
        patch.insert("name".into(), json!(format!("Renamed {id}")));
        let out = ProductUpdateNode.run(&fx.ctx, UpdateInput::by_id(*id, patch)).await.unwrap();
        assert_eq!(out.pending, vec![StoreKind::Vector, StoreKind::Graph]);
    }
    for (id, _) in before.iter().skip(8).chain(created.iter().skip(8)) {
        ProductDeleteNode
            .run(
                &fx.ctx,
                DeleteInput {
                    id: Some(*id),
                    filter: None,
                    hard: false,
                },
            )
            .await
            .unwrap();
    }
    stopped_chroma.start().await;
    stopped_bolt.start().await;

    let records = fx.ctx.stores().outbox().pending_records(1000).await.unwrap();
    assert_eq!(records.len(), 10 + 7 + 4);
    let first = fx.ctx.stores().outbox().apply_records(&records).await.unwrap();
    assert_eq!(first.failed, 0);
    let once = assert_projections_match_postgres(&fx).await;
    let second = fx.ctx.stores().outbox().apply_records(&records).await.unwrap();
    assert_eq!(second.failed, 0);
    let twice = assert_projections_match_postgres(&fx).await;
    assert_eq!(once, twice, "a second application changes nothing");
    assert_eq!(once.len(), 16);

    // sync then clears the outbox; the stores stay as they are.
    let report = fx.ctx.stores().outbox().sync().await.unwrap();
    assert_eq!((report.applied, report.remaining), (21, 0));
    assert_eq!(assert_projections_match_postgres(&fx).await, once);
}

#[tokio::test]
async fn records_that_keep_failing_become_dead_letters_that_can_be_retried() {
    let _serial = SERIAL.lock().await;
    let services = Services::global().await;
    let fx = Fixture::with_projections_config("dead_letters", |c| dataflow_core::Config {
        outbox_max_attempts: 2,
        ..c
    })
    .await;
    let category = create_category(&fx).await;

    let stopped_chroma = services.stop(ServiceKind::Chroma).await;
    create_products(&fx, category, 0, 3).await;
    let report = fx.ctx.stores().outbox().sync().await.unwrap();
    assert_eq!((report.failed, report.dead, report.remaining), (3, 3, 0), "{report:?}");
    let dead = fx.ctx.stores().outbox().dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 3);
    assert!(
        dead.iter()
            .all(|r| r.dead && r.attempts == 2 && r.pending == vec![StoreKind::Vector])
    );
    assert!(
        dead[0].last_error.as_deref().unwrap_or_default().contains("vector store"),
        "{:?}",
        dead[0].last_error
    );
    stopped_chroma.start().await;
    // Dead letters are not retried by sync ...
    assert_eq!(fx.ctx.stores().outbox().sync().await.unwrap().applied, 0);
    assert!(fx.vector_documents("products").await.is_empty());
    // ... until they are put back in line.
    assert_eq!(fx.ctx.stores().outbox().retry_dead(Some(&[dead[0].id])).await.unwrap(), 1);
    assert_eq!(fx.ctx.stores().outbox().retry_dead(None).await.unwrap(), 2);
    let report = fx.ctx.stores().outbox().sync().await.unwrap();
    assert_eq!((report.applied, report.remaining), (3, 0));
    assert!(fx.ctx.stores().outbox().dead_letters(10).await.unwrap().is_empty());
    assert_eq!(assert_projections_match_postgres(&fx).await.len(), 3);
}
