//! What a graph store does, run on every backend: the Bolt server and the embedded graph.
//! Each scenario writes through the `GraphStore` trait and checks what it reads back,
//! including the exact order of neighbours and the nodes and relations of shortest paths.

use dataflow_core::store::graph::{Direction, GraphNode, GraphPath, GraphRelation, GraphStore, Neighbor, NeighborQuery, PathQuery};
use dataflow_tests::fixture::Backend;
use dataflow_tests::{on_both_backends, stores};
use serde_json::{Map, Value as Json, json};

const IN_CATEGORY: GraphRelation = GraphRelation {
    name: "IN_CATEGORY",
    target: "Category",
    target_tenant: false,
};
const SUPPLIED_BY: GraphRelation = GraphRelation {
    name: "SUPPLIED_BY",
    target: "Supplier",
    target_tenant: false,
};
const CHILD_OF: GraphRelation = GraphRelation {
    name: "CHILD_OF",
    target: "Category",
    target_tenant: false,
};
const FOR_PROJECT: GraphRelation = GraphRelation {
    name: "FOR_PROJECT",
    target: "Project",
    target_tenant: true,
};
const PRODUCT: [GraphRelation; 2] = [IN_CATEGORY, SUPPLIED_BY];

fn props(value: Json) -> Map<String, Json> {
    value.as_object().cloned().expect("an object")
}

fn node(id: i64, properties: Json, edges: &[(&'static str, Option<i64>)]) -> GraphNode {
    GraphNode {
        id,
        props: props(properties),
        edges: edges.to_vec(),
    }
}

fn edges(list: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    list.iter().map(|(r, l, i)| ((*r).to_owned(), (*l).to_owned(), *i)).collect()
}

async fn upserts_merge_properties_and_move_edges(backend: Backend) {
    let graph = stores::graph(backend, "graph_upsert").await;
    graph.prepare(&["Product", "Category", "Supplier"]).await.unwrap();
    let write = |n: GraphNode| {
        let graph = graph.clone();
        async move { graph.upsert_nodes("Product", &PRODUCT, &[n]).await.unwrap() }
    };
    write(node(1, json!({"name": "drill", "price": 10}), &[("IN_CATEGORY", Some(5))])).await;
    let stored = graph.node("Product", 1).await.unwrap().expect("the node");
    assert_eq!(stored.props, props(json!({"id": 1, "name": "drill", "price": 10})));
    assert_eq!(stored.edges, edges(&[("IN_CATEGORY", "Category", 5)]));
    let target = graph.node("Category", 5).await.unwrap().expect("a bare target node");
    assert_eq!(target.props, props(json!({"id": 5})));
    assert!(target.edges.is_empty());

    // A null removes a property; edges move to the new targets; the old target stays.
    let second = node(
        1,
        json!({"name": null, "price": 12.5}),
        &[("IN_CATEGORY", Some(6)), ("SUPPLIED_BY", Some(7))],
    );
    for _ in 0..2 {
        write(second.clone()).await;
        let stored = graph.node("Product", 1).await.unwrap().unwrap();
        assert_eq!(stored.props, props(json!({"id": 1, "price": 12.5})));
        assert_eq!(
            stored.edges,
            edges(&[("IN_CATEGORY", "Category", 6), ("SUPPLIED_BY", "Supplier", 7)])
        );
        assert_eq!(graph.count("Category").await.unwrap(), 2, "writing twice changes nothing");
        assert_eq!(graph.count("Product").await.unwrap(), 1);
    }
    // No target: no edge of that relation; relations the node does not name lose theirs too.
    write(node(1, json!({}), &[("IN_CATEGORY", None)])).await;
    let stored = graph.node("Product", 1).await.unwrap().unwrap();
    assert!(stored.edges.is_empty(), "{:?}", stored.edges);
    assert_eq!(stored.props, props(json!({"id": 1, "price": 12.5})));
    assert!(graph.node("Product", 2).await.unwrap().is_none());
    assert!(graph.ping().await.is_ok());
}
on_both_backends!(upserts_merge_properties_and_move_edges);

/// A write that reaches the store after a newer one of the same node (its caller timed out,
/// the exchange went on) leaves the newer one as it is, properties and edges.
async fn an_older_version_never_replaces_a_newer_one(backend: Backend) {
    let graph = stores::graph(backend, "graph_versions").await;
    graph.prepare(&["Product", "Category", "Supplier"]).await.unwrap();
    let newer = node(1, json!({"version": 2, "price": 12}), &[("IN_CATEGORY", Some(6))]);
    let older = node(1, json!({"version": 1, "price": 10}), &[("IN_CATEGORY", Some(5))]);
    graph.upsert_nodes("Product", &PRODUCT, std::slice::from_ref(&newer)).await.unwrap();
    graph.upsert_nodes("Product", &PRODUCT, &[older]).await.unwrap();
    let stored = graph.node("Product", 1).await.unwrap().expect("the node");
    assert_eq!(stored.props, props(json!({"id": 1, "version": 2, "price": 12})));
    assert_eq!(stored.edges, edges(&[("IN_CATEGORY", "Category", 6)]));
    // The same version again, and a newer one, are applied.
    graph.upsert_nodes("Product", &PRODUCT, &[newer]).await.unwrap();
    let newest = node(1, json!({"version": 3, "price": 14}), &[("IN_CATEGORY", Some(5))]);
    graph.upsert_nodes("Product", &PRODUCT, &[newest]).await.unwrap();
    let stored = graph.node("Product", 1).await.unwrap().expect("the node");
    assert_eq!(stored.props, props(json!({"id": 1, "version": 3, "price": 14})));
    assert_eq!(stored.edges, edges(&[("IN_CATEGORY", "Category", 5)]));
}
on_both_backends!(an_older_version_never_replaces_a_newer_one);

async fn targets_of_tenant_relations_take_the_sources_tenant(backend: Backend) {
    let graph = stores::graph(backend, "graph_target_tenant").await;
    let relations = [FOR_PROJECT, IN_CATEGORY];
    graph
        .upsert_nodes(
            "Quote",
            &relations,
            &[node(
                1,
                json!({"tenant_id": "t1"}),
                &[("FOR_PROJECT", Some(9)), ("IN_CATEGORY", Some(3))],
            )],
        )
        .await
        .unwrap();
    let project = graph.node("Project", 9).await.unwrap().expect("the project node");
    assert_eq!(project.props, props(json!({"id": 9, "tenant_id": "t1"})));
    let category = graph.node("Category", 3).await.unwrap().expect("the category node");
    assert_eq!(category.props, props(json!({"id": 3})));
}
on_both_backends!(targets_of_tenant_relations_take_the_sources_tenant);

/// Categories 1 and 2 under 0; products 10 and 11 (supplier 100) and 12 (tenant t1, supplier
/// 101) in category 1; product 13 in category 2.
async fn catalogue(backend: Backend, hint: &str) -> std::sync::Arc<dyn GraphStore> {
    let graph = stores::graph(backend, hint).await;
    graph.prepare(&["Product", "Category", "Supplier"]).await.unwrap();
    graph
        .upsert_nodes(
            "Category",
            &[CHILD_OF],
            &[
                node(0, json!({"slug": "root"}), &[("CHILD_OF", None)]),
                node(1, json!({"slug": "drills"}), &[("CHILD_OF", Some(0))]),
                node(2, json!({"slug": "saws"}), &[("CHILD_OF", Some(0))]),
            ],
        )
        .await
        .unwrap();
    graph
        .upsert_nodes(
            "Product",
            &PRODUCT,
            &[
                node(10, json!({}), &[("IN_CATEGORY", Some(1)), ("SUPPLIED_BY", Some(100))]),
                node(11, json!({}), &[("IN_CATEGORY", Some(1)), ("SUPPLIED_BY", Some(100))]),
                node(
                    12,
                    json!({"tenant_id": "t1"}),
                    &[("IN_CATEGORY", Some(1)), ("SUPPLIED_BY", Some(101))],
                ),
                node(13, json!({}), &[("IN_CATEGORY", Some(2)), ("SUPPLIED_BY", None)]),
            ],
        )
        .await
        .unwrap();
    graph
}

async fn neighbours(
    graph: &dyn GraphStore,
    from: (&'static str, i64),
    relation: Option<&'static str>,
    direction: Direction,
    depth: u32,
    tenant: Option<&str>,
    limit: usize,
) -> Vec<(String, i64, u32)> {
    graph
        .neighbors(&NeighborQuery {
            label: from.0,
            id: from.1,
            relation,
            direction,
            depth,
            tenant,
            limit,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|Neighbor { label, id, depth }| (label, id, depth))
        .collect()
}

fn hits(list: &[(&str, i64, u32)]) -> Vec<(String, i64, u32)> {
    list.iter().map(|(l, i, d)| ((*l).to_owned(), *i, *d)).collect()
}

async fn neighbours_follow_direction_depth_relation_and_tenant(backend: Backend) {
    let graph = catalogue(backend, "graph_neighbours").await;
    let g = graph.as_ref();
    let p10 = ("Product", 10);
    assert_eq!(
        neighbours(g, p10, None, Direction::Out, 1, None, 50).await,
        hits(&[("Category", 1, 1), ("Supplier", 100, 1)])
    );
    assert_eq!(
        neighbours(g, p10, None, Direction::Out, 2, None, 50).await,
        hits(&[("Category", 1, 1), ("Supplier", 100, 1), ("Category", 0, 2)])
    );
    // Against the relations: the products of category 1, without the tenant's own ...
    assert_eq!(
        neighbours(g, ("Category", 1), None, Direction::In, 1, None, 50).await,
        hits(&[("Product", 10, 1), ("Product", 11, 1)])
    );
    // ... and with them for that tenant only.
    assert_eq!(
        neighbours(g, ("Category", 1), None, Direction::In, 1, Some("t1"), 50).await,
        hits(&[("Product", 10, 1), ("Product", 11, 1), ("Product", 12, 1)])
    );
    assert_eq!(
        neighbours(g, ("Category", 1), None, Direction::In, 1, Some("t2"), 50).await,
        hits(&[("Product", 10, 1), ("Product", 11, 1)])
    );
    // Both ways, nearest first, then by label and id; each node once, at its fewest hops.
    assert_eq!(
        neighbours(g, p10, None, Direction::Both, 2, None, 50).await,
        hits(&[("Category", 1, 1), ("Supplier", 100, 1), ("Category", 0, 2), ("Product", 11, 2)])
    );
    assert_eq!(
        neighbours(g, p10, None, Direction::Both, 3, Some("t1"), 50).await,
        hits(&[
            ("Category", 1, 1),
            ("Supplier", 100, 1),
            ("Category", 0, 2),
            ("Product", 11, 2),
            ("Product", 12, 2),
            ("Category", 2, 3),
            ("Supplier", 101, 3)
        ])
    );
    assert_eq!(
        neighbours(g, p10, Some("IN_CATEGORY"), Direction::Both, 5, None, 50).await,
        hits(&[("Category", 1, 1), ("Product", 11, 2)])
    );
    assert_eq!(
        neighbours(g, p10, None, Direction::Both, 5, None, 3).await,
        hits(&[("Category", 1, 1), ("Supplier", 100, 1), ("Category", 0, 2)])
    );
    // A start node outside the tenant's scope has no neighbours; nor does a missing one.
    assert!(neighbours(g, ("Product", 12), None, Direction::Both, 2, None, 50).await.is_empty());
    assert!(
        neighbours(g, ("Product", 12), None, Direction::Both, 2, Some("t2"), 50)
            .await
            .is_empty()
    );
    assert!(neighbours(g, ("Product", 99), None, Direction::Both, 2, None, 50).await.is_empty());
}
on_both_backends!(neighbours_follow_direction_depth_relation_and_tenant);

async fn path(
    graph: &dyn GraphStore,
    from: (&'static str, i64),
    to: (&'static str, i64),
    relation: Option<&'static str>,
    max_depth: u32,
    tenant: Option<&str>,
) -> Option<GraphPath> {
    graph
        .shortest_path(&PathQuery {
            from,
            to,
            relation,
            max_depth,
            tenant,
        })
        .await
        .unwrap()
}

fn steps(nodes: &[(&str, i64)], relations: &[&str]) -> Option<GraphPath> {
    Some(GraphPath {
        nodes: nodes.iter().map(|(l, i)| ((*l).to_owned(), *i)).collect(),
        relations: relations.iter().map(|r| (*r).to_owned()).collect(),
    })
}

async fn shortest_paths_ignore_direction_and_respect_depth_relation_and_tenant(backend: Backend) {
    let graph = catalogue(backend, "graph_paths").await;
    let g = graph.as_ref();
    assert_eq!(
        path(g, ("Product", 10), ("Product", 13), None, 4, None).await,
        steps(
            &[("Product", 10), ("Category", 1), ("Category", 0), ("Category", 2), ("Product", 13)],
            &["IN_CATEGORY", "CHILD_OF", "CHILD_OF", "IN_CATEGORY"]
        )
    );
    assert_eq!(path(g, ("Product", 10), ("Product", 13), None, 3, None).await, None);
    assert_eq!(
        path(g, ("Product", 10), ("Product", 11), Some("SUPPLIED_BY"), 5, None).await,
        steps(
            &[("Product", 10), ("Supplier", 100), ("Product", 11)],
            &["SUPPLIED_BY", "SUPPLIED_BY"]
        )
    );
    // Two paths of two hops lead from 10 to 11; either is a shortest path.
    let either = path(g, ("Product", 10), ("Product", 11), None, 5, None).await.expect("a path");
    assert_eq!(either.nodes.len(), 3);
    // The only way to supplier 101 passes the tenant's product 12.
    assert_eq!(path(g, ("Product", 10), ("Supplier", 101), None, 5, None).await, None);
    assert_eq!(
        path(g, ("Product", 10), ("Supplier", 101), None, 5, Some("t1")).await,
        steps(
            &[("Product", 10), ("Category", 1), ("Product", 12), ("Supplier", 101)],
            &["IN_CATEGORY", "IN_CATEGORY", "SUPPLIED_BY"]
        )
    );
    assert_eq!(path(g, ("Product", 10), ("Supplier", 404), None, 5, None).await, None);
}
on_both_backends!(shortest_paths_ignore_direction_and_respect_depth_relation_and_tenant);

async fn deleting_a_node_removes_its_edges_both_ways(backend: Backend) {
    let graph = catalogue(backend, "graph_delete").await;
    graph.delete_nodes("Product", &[10, 999]).await.unwrap();
    assert!(graph.node("Product", 10).await.unwrap().is_none());
    assert_eq!(graph.count("Product").await.unwrap(), 3);
    assert_eq!(
        neighbours(graph.as_ref(), ("Supplier", 100), None, Direction::In, 1, None, 50).await,
        hits(&[("Product", 11, 1)])
    );
    graph.delete_nodes("Category", &[1]).await.unwrap();
    let p11 = graph.node("Product", 11).await.unwrap().expect("product 11 stays");
    assert_eq!(p11.edges, edges(&[("SUPPLIED_BY", "Supplier", 100)]));
    graph.delete_nodes("Category", &[]).await.unwrap();
}
on_both_backends!(deleting_a_node_removes_its_edges_both_ways);

/// Two embedded graphs in one file under different namespaces do not see each other's nodes
/// (on the Bolt server, every test of this suite already has a namespace of its own).
#[tokio::test]
async fn namespaces_keep_embedded_graphs_in_one_file_apart() {
    let file = stores::embedded_file("graph_namespaces");
    let a = stores::embedded_graph(&file, "a_").await;
    let b = stores::embedded_graph(&file, "b_").await;
    a.upsert_nodes("Product", &PRODUCT, &[node(1, json!({}), &[("IN_CATEGORY", Some(2))])])
        .await
        .unwrap();
    assert_eq!(a.count("Product").await.unwrap(), 1);
    assert_eq!(b.count("Product").await.unwrap(), 0);
    assert!(b.node("Product", 1).await.unwrap().is_none());
    assert_eq!(
        neighbours(&a, ("Product", 1), None, Direction::Both, 2, None, 10).await,
        hits(&[("Category", 2, 1)])
    );
    let db = dataflow_core::store::relational::open_sqlite(&file, 1).await.unwrap();
    let refused = dataflow_core::EmbeddedGraph::open(db, "bad-namespace")
        .await
        .err()
        .expect("a namespace with '-' is refused");
    assert!(refused.to_string().contains("graph_namespace"), "{refused}");
}

/// Bolt: concurrent small node writes of one label share `UNWIND` statements; every node lands
/// with its own properties and edge, and of two writes of one node in one statement the copy of
/// the higher version stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bolt_writes_share_statements() {
    let namespace = format!("{}_", dataflow_tests::Services::global().await.unique_name("graph_shared_writes"));
    let graph = std::sync::Arc::new(bolt_client(&namespace).await);
    graph.prepare(&["Product", "Category", "Supplier"]).await.unwrap();
    let before = graph.write_counts();
    let mut tasks = Vec::new();
    for i in 1..=120i64 {
        let graph = graph.clone();
        tasks.push(tokio::spawn(async move {
            // Product 1 is written three times at once, at versions 1 to 3.
            let (id, version) = if i <= 3 { (1, i) } else { (i, 1) };
            let n = node(
                id,
                json!({"name": format!("p{i}"), "version": version}),
                &[("IN_CATEGORY", Some(i % 4))],
            );
            graph.upsert_nodes("Product", &PRODUCT, &[n]).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let (writes, statements) = graph.write_counts();
    assert_eq!(writes - before.0, 120);
    assert!(
        statements - before.1 < 120,
        "120 concurrent writes went out in {} statements",
        statements - before.1
    );
    assert_eq!(graph.count("Product").await.unwrap(), 118, "every node landed once");
    let p77 = graph.node("Product", 77).await.unwrap().expect("product 77");
    assert_eq!(p77.props["name"], json!("p77"), "each node is its own");
    assert_eq!(p77.edges, edges(&[("IN_CATEGORY", "Category", 1)]));
    let p1 = graph.node("Product", 1).await.unwrap().expect("product 1");
    // Whichever copy stayed, it stayed whole: its name and version belong to one write.
    let version = p1.props["version"].as_i64().expect("a version");
    assert_eq!(p1.props["name"], json!(format!("p{version}")), "{:?}", p1.props);
    assert_eq!(p1.edges, edges(&[("IN_CATEGORY", "Category", version % 4)]));
}

/// A Bolt client of its own on `namespace` (one process's connection pool and shared writes).
async fn bolt_client(namespace: &str) -> dataflow_core::BoltGraph {
    let bolt = dataflow_tests::Services::global().await.bolt().await;
    dataflow_core::BoltGraph::connect(
        &bolt.uri,
        &bolt.user,
        &bolt.password,
        Some(&bolt.database),
        namespace,
        std::time::Duration::from_secs(30),
    )
    .await
    .expect("a Bolt client")
}

/// Bolt: two writers that do not share statements (two processes: a worker and the projector,
/// or a write whose caller timed out and the `sync` after it) write the same new nodes at
/// once, and each id stays one node with one edge. Without the uniqueness constraint on `id`,
/// ArcadeDB made two nodes of most of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_of_one_new_node_make_one_node() {
    let namespace = format!("{}_", dataflow_tests::Services::global().await.unique_name("graph_two_writers"));
    let (a, b) = (bolt_client(&namespace).await, bolt_client(&namespace).await);
    a.prepare(&["Product", "Category", "Supplier"]).await.unwrap();
    for id in 1..=100i64 {
        let n = node(id, json!({"name": format!("p{id}"), "version": 1}), &[("IN_CATEGORY", Some(1))]);
        let (first, second) = tokio::join!(
            a.upsert_nodes("Product", &PRODUCT, std::slice::from_ref(&n)),
            b.upsert_nodes("Product", &PRODUCT, std::slice::from_ref(&n)),
        );
        first.expect("the first writer");
        second.expect("the second writer");
    }
    assert_eq!(a.count("Product").await.unwrap(), 100, "one node per id");
    assert_eq!(a.count("Category").await.unwrap(), 1, "one target node");
    for id in [1, 50, 100] {
        let stored = a.node("Product", id).await.unwrap().expect("the node");
        assert_eq!(stored.edges, edges(&[("IN_CATEGORY", "Category", 1)]), "product {id}");
    }
}

/// Bolt: a graph written before ids were unique may hold several nodes of one id; `prepare`
/// keeps the copy of the highest version, removes the others and makes ids unique.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_keeps_the_newest_copy_of_a_node() {
    let services = dataflow_tests::Services::global().await;
    let bolt = services.bolt().await;
    let namespace = format!("{}_", services.unique_name("graph_copies"));
    let config = neo4rs::ConfigBuilder::default()
        .uri(bolt.uri.as_str())
        .user(bolt.user.as_str())
        .password(bolt.password.as_str())
        .db(bolt.database.as_str())
        .build()
        .expect("a Bolt configuration");
    let raw = neo4rs::Graph::connect(config).await.expect("a Bolt connection");
    for version in [1, 3, 2] {
        let text = format!("CREATE (n:`{namespace}Product` {{id: 7, version: $version, name: $name}})");
        let query = neo4rs::query(&text).param("version", version).param("name", format!("v{version}"));
        raw.run(query).await.expect("writing a copy");
    }
    let graph = bolt_client(&namespace).await;
    graph.prepare(&["Product"]).await.expect("prepare over copies");
    assert_eq!(graph.count("Product").await.unwrap(), 1);
    let kept = graph.node("Product", 7).await.unwrap().expect("the node");
    assert_eq!(kept.props["name"], json!("v3"), "{:?}", kept.props);
    // Unique from now on, and preparing again changes nothing.
    let text = format!("CREATE (n:`{namespace}Product` {{id: 7}})");
    let refused = raw.run(neo4rs::query(&text)).await.expect_err("a second node of id 7");
    assert!(refused.to_string().contains("ConstraintValidationFailed"), "{refused}");
    graph.prepare(&["Product"]).await.expect("prepare again");
    assert_eq!(graph.count("Product").await.unwrap(), 1);
}
