//! Every generated Search and Graph node of every shipped model (13 × 2 = 26), run against
//! live PostgreSQL, Chroma and the Bolt graph server, and against the embedded set, with
//! outcomes read back around the code under test (Chroma's own API and plain Cypher, or plain
//! SQL on the embedded tables). Together with `nodes.rs` this covers all 117 nodes on both.

use std::collections::BTreeSet;

use dataflow_core::nodes::graph::{GraphInput, GraphOutput};
use dataflow_core::nodes::search::{SearchInput, SearchOutput};
use dataflow_core::{Error, Filter, Model, Node, Op};
use dataflow_models::*;
use dataflow_tests::fixture::{Backend, Fixture};
use dataflow_tests::on_both_backends;
use dataflow_tests::world::{TENANT, World};
use serde_json::{Map, Value as Json, json};

/// The stored row as JSON, read with plain SQL.
async fn stored_row(fx: &Fixture, table: &str, id: i64) -> Map<String, Json> {
    fx.stored_row(table, id).await.as_object().cloned().expect("an object")
}

/// What the graph must hold as the row's outgoing edges: one per non-null foreign key.
fn expected_edges<M: Model>(row: &Map<String, Json>) -> Vec<(String, String, i64)> {
    let mut edges: Vec<(String, String, i64)> = M::meta()
        .relations
        .iter()
        .filter_map(|r| Some((r.name.to_owned(), r.target.to_owned(), row[r.field].as_i64()?)))
        .collect();
    edges.sort();
    edges
}

/// The rows one hop away in either direction that a context with `tenant` may see, read with
/// plain SQL: the row's own targets, and rows of any model whose foreign key names it.
async fn expected_neighbors<M: Model>(fx: &Fixture, row: &Map<String, Json>, tenant: Option<&str>) -> BTreeSet<(String, i64)> {
    let meta = M::meta();
    let id = row["id"].as_i64().unwrap();
    let mut out = BTreeSet::new();
    for r in meta.relations {
        if let Some(target) = row[r.field].as_i64() {
            let target_meta = (r.target_meta)();
            if !target_meta.multi_tenant || tenant.is_some() {
                out.insert((r.target.to_owned(), target));
            }
        }
    }
    for other in dataflow_models::all_models() {
        if other.multi_tenant && tenant.is_none() {
            continue;
        }
        for r in other.relations.iter().filter(|r| r.target == meta.name) {
            let rows = fx
                .sql(
                    &format!("SELECT id FROM \"{}\" WHERE \"{}\" = $1", other.table, r.field),
                    vec![id.into()],
                )
                .await;
            for source in rows {
                out.insert((other.name.to_owned(), source.try_get("", "id").unwrap()));
            }
        }
    }
    out
}

async fn exercise<M, S, G>(search: S, graph: G, backend: Backend)
where
    M: Model + std::fmt::Debug,
    S: Node<Input = SearchInput, Output = SearchOutput<M>>,
    G: Node<Input = GraphInput, Output = GraphOutput<M>>,
{
    let meta = M::meta();
    let fx = Fixture::with_projections_on(backend, meta.table).await;
    let world = World::create(&fx).await;
    let tenant = meta.multi_tenant.then_some(TENANT);
    let ctx = match tenant {
        Some(t) => fx.tenant(t),
        None => fx.ctx.clone(),
    };
    let id = world.id(meta.name, 0);
    let row = stored_row(&fx, meta.table, id).await;

    // The vector store holds both rows; this one's document is its embed fields, its metadata the
    // primary key, version, tenant and indexed fields.
    let docs = fx.vector_documents(meta.table).await;
    assert_eq!(docs.len(), 2, "{} documents in the vector store: {docs:?}", meta.name);
    let (document, metadata) = &docs[&id.to_string()];
    let expected_document: Vec<&str> = meta
        .fields
        .iter()
        .filter(|f| f.embed)
        .filter_map(|f| row[f.name].as_str())
        .collect();
    assert_eq!(document, &expected_document.join("\n"));
    assert_eq!(metadata["id"], json!(id));
    assert_eq!(metadata["version"], row["version"]);
    if let Some(t) = tenant {
        assert_eq!(metadata["tenant_id"], json!(t));
    }
    for f in meta.fields.iter().filter(|f| (f.indexed || f.unique) && !row[f.name].is_null()) {
        let (got, want) = (&metadata[f.name], &row[f.name]);
        let same = match (got.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => got == want,
        };
        assert!(
            same,
            "metadata {}: {got} in the vector store, {want} in the relational store",
            f.name
        );
    }

    // The graph holds the row's node, with its version, and one edge per foreign key.
    let (props, edges) = fx.graph_node(meta.name, id).await.expect("the row's node");
    assert_eq!(props["id"], json!(id));
    assert_eq!(props["version"], row["version"]);
    assert_eq!(edges, expected_edges::<M>(&row));

    // Search: the row's own text finds it first; a metadata filter narrows to it.
    let hits = search
        .run(
            &ctx,
            SearchInput {
                query: Some(document.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("search")
        .hits;
    assert_eq!(hits[0].record.id(), id, "{} search", meta.name);
    assert!(hits[0].distance < 0.01, "distance {}", hits[0].distance);
    assert_eq!(hits.len(), 2);
    let other = world.id(meta.name, 1);
    let narrowed = search
        .run(
            &ctx,
            SearchInput {
                query: Some(document.clone()),
                filter: Some(Filter::compare(meta.primary_key, Op::Eq, other)),
                ..Default::default()
            },
        )
        .await
        .expect("search with a filter")
        .hits;
    assert_eq!(narrowed.iter().map(|h| h.record.id()).collect::<Vec<_>>(), vec![other]);

    // Graph neighbours one hop either way: exactly what the foreign keys say, this tenant only.
    let reached = graph
        .run(
            &ctx,
            serde_json::from_value(json!({"op": "neighbors", "id": id, "direction": "both", "hydrate": true})).unwrap(),
        )
        .await
        .expect("neighbours");
    let got: BTreeSet<(String, i64)> = reached.neighbors.iter().map(|n| (n.model.clone(), n.id)).collect();
    assert_eq!(got, expected_neighbors::<M>(&fx, &row, tenant).await, "{} neighbours", meta.name);
    assert!(
        reached
            .neighbors
            .iter()
            .all(|n| n.depth == 1 && n.record.as_ref().is_some_and(|r| r["id"] == json!(n.id)))
    );

    // Link: move the first relation to the other world row's target; the edge follows.
    match meta.relations.first() {
        Some(relation) => {
            let target = (relation.target_meta)().name;
            let new_target = world.id(target, 1);
            let linked = graph
                .run(
                    &ctx,
                    GraphInput::Link {
                        id,
                        relation: relation.name.into(),
                        target_id: new_target,
                    },
                )
                .await
                .expect("link");
            assert!(linked.pending.is_empty());
            let row = stored_row(&fx, meta.table, id).await;
            assert_eq!(row[relation.field], json!(new_target), "the foreign key is written");
            let (_, edges) = fx.graph_node(meta.name, id).await.unwrap();
            assert_eq!(edges, expected_edges::<M>(&row));
            assert!(edges.contains(&(relation.name.to_owned(), target.to_owned(), new_target)));

            let field = meta.field(relation.field).unwrap();
            let unlinked = graph
                .run(
                    &ctx,
                    GraphInput::Unlink {
                        id,
                        relation: relation.name.into(),
                        target_id: None,
                    },
                )
                .await;
            if field.nullable {
                unlinked.expect("unlink");
                let row = stored_row(&fx, meta.table, id).await;
                assert!(row[relation.field].is_null());
                let (_, edges) = fx.graph_node(meta.name, id).await.unwrap();
                assert!(!edges.iter().any(|(r, _, _)| r == relation.name), "{edges:?}");
            } else {
                let err = unlinked.expect_err("a required relation cannot be unlinked");
                assert!(matches!(err, Error::InvalidInput { part: "relation", .. }), "{err}");
            }
        }
        None => {
            let err = graph
                .run(
                    &ctx,
                    GraphInput::Link {
                        id,
                        relation: "ANY".into(),
                        target_id: 1,
                    },
                )
                .await
                .expect_err("a model without relations has nothing to link");
            assert!(err.to_string().contains("declares no relations"), "{err}");
        }
    }
    assert_eq!(fx.ctx.stores().outbox().pending_count().await.unwrap(), 0);
}

async fn category_search_and_graph_nodes(backend: Backend) {
    exercise::<Category, _, _>(CategorySearchNode, CategoryGraphNode, backend).await;
}
on_both_backends!(category_search_and_graph_nodes);

async fn manufacturer_search_and_graph_nodes(backend: Backend) {
    exercise::<Manufacturer, _, _>(ManufacturerSearchNode, ManufacturerGraphNode, backend).await;
}
on_both_backends!(manufacturer_search_and_graph_nodes);

async fn supplier_search_and_graph_nodes(backend: Backend) {
    exercise::<Supplier, _, _>(SupplierSearchNode, SupplierGraphNode, backend).await;
}
on_both_backends!(supplier_search_and_graph_nodes);

async fn unspsc_code_search_and_graph_nodes(backend: Backend) {
    exercise::<UnspscCode, _, _>(UnspscCodeSearchNode, UnspscCodeGraphNode, backend).await;
}
on_both_backends!(unspsc_code_search_and_graph_nodes);

async fn etim_class_search_and_graph_nodes(backend: Backend) {
    exercise::<EtimClass, _, _>(EtimClassSearchNode, EtimClassGraphNode, backend).await;
}
on_both_backends!(etim_class_search_and_graph_nodes);

async fn safety_standard_search_and_graph_nodes(backend: Backend) {
    exercise::<SafetyStandard, _, _>(SafetyStandardSearchNode, SafetyStandardGraphNode, backend).await;
}
on_both_backends!(safety_standard_search_and_graph_nodes);

async fn product_search_and_graph_nodes(backend: Backend) {
    exercise::<Product, _, _>(ProductSearchNode, ProductGraphNode, backend).await;
}
on_both_backends!(product_search_and_graph_nodes);

async fn classification_search_and_graph_nodes(backend: Backend) {
    exercise::<Classification, _, _>(ClassificationSearchNode, ClassificationGraphNode, backend).await;
}
on_both_backends!(classification_search_and_graph_nodes);

async fn compliance_rule_search_and_graph_nodes(backend: Backend) {
    exercise::<ComplianceRule, _, _>(ComplianceRuleSearchNode, ComplianceRuleGraphNode, backend).await;
}
on_both_backends!(compliance_rule_search_and_graph_nodes);

async fn customer_search_and_graph_nodes(backend: Backend) {
    exercise::<Customer, _, _>(CustomerSearchNode, CustomerGraphNode, backend).await;
}
on_both_backends!(customer_search_and_graph_nodes);

async fn project_search_and_graph_nodes(backend: Backend) {
    exercise::<Project, _, _>(ProjectSearchNode, ProjectGraphNode, backend).await;
}
on_both_backends!(project_search_and_graph_nodes);

async fn quote_search_and_graph_nodes(backend: Backend) {
    exercise::<Quote, _, _>(QuoteSearchNode, QuoteGraphNode, backend).await;
}
on_both_backends!(quote_search_and_graph_nodes);

async fn recommendation_search_and_graph_nodes(backend: Backend) {
    exercise::<Recommendation, _, _>(RecommendationSearchNode, RecommendationGraphNode, backend).await;
}
on_both_backends!(recommendation_search_and_graph_nodes);
