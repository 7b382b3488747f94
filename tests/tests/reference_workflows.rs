//! The four reference workflows end to end against live PostgreSQL, Redis, Chroma and the Bolt
//! graph server, and on the embedded set, loaded from their YAML files: what each leaves behind in every store, and a
//! failing run that leaves nothing. classify_product and recommend_for_project run with both
//! embedders (hashing, and the sentence model all-MiniLM-L6-v2).

use dataflow_core::Node;
use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::graph::GraphInput;
use dataflow_models::*;
use dataflow_runtime::{NodeStatus, RunReport, RunStatus, Runtime, Workflow, yaml};
use dataflow_tests::fixture::{Backend, Fixture, sample_product};
use dataflow_tests::models::minilm;
use dataflow_tests::on_both_backends;
use dataflow_workflows::{data_dir, registry, workflow_file};
use serde_json::{Value, json};

fn load(name: &str) -> Workflow {
    yaml::load_file(workflow_file(name), &registry()).unwrap_or_else(|e| panic!("{e}"))
}

async fn run(ctx: &dataflow_core::Context, name: &str, inputs: Value) -> RunReport {
    Runtime::new(registry()).run(&load(name), ctx, inputs).await
}

fn succeeded(report: &RunReport) {
    assert_eq!(report.status, RunStatus::Succeeded, "{}: {:?}", report.workflow, report.error);
}

/// Lines of the shipped catalogue per model.
fn catalogue_counts() -> std::collections::BTreeMap<String, i64> {
    let text = std::fs::read_to_string(data_dir().join("catalog.jsonl")).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        *counts.entry(v["model"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    counts
}

async fn import(fx: &Fixture) {
    let path = data_dir().join("catalog.jsonl");
    let report = run(&fx.ctx, "import_catalog", json!({"path": path})).await;
    succeeded(&report);
    assert_eq!(report.outputs["rejected"], json!(0), "{:?}", report.outputs["rejected_lines"]);
}

fn new_products() -> Vec<Value> {
    std::fs::read_to_string(data_dir().join("new_products.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn import_catalog_fills_every_store(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "wf_import").await;
    import(&fx).await;
    let counts = catalogue_counts();
    for (model, table) in [
        ("Category", "categories"),
        ("Manufacturer", "manufacturers"),
        ("Supplier", "suppliers"),
        ("UnspscCode", "unspsc_codes"),
        ("EtimClass", "etim_classes"),
        ("SafetyStandard", "safety_standards"),
        ("Product", "products"),
        ("Classification", "classifications"),
        ("ComplianceRule", "compliance_rules"),
    ] {
        assert_eq!(fx.count(table, "TRUE").await, counts[model], "{table}");
    }
    // Every product is a vector in Chroma and a node with its category edge in the graph.
    assert_eq!(fx.vector_documents("products").await.len() as i64, counts["Product"]);
    let rows = fx.sql("SELECT id, category_id FROM products ORDER BY id LIMIT 5", vec![]).await;
    for row in rows {
        let id: i64 = row.try_get("", "id").unwrap();
        let category: i64 = row.try_get("", "category_id").unwrap();
        let (_, edges) = fx.graph_node("Product", id).await.expect("a graph node per product");
        assert!(edges.contains(&("IN_CATEGORY".into(), "Category".into(), category)), "{edges:?}");
    }
    // Importing again updates instead of duplicating.
    import(&fx).await;
    assert_eq!(fx.count("products", "TRUE").await, counts["Product"]);

    // The CSV form of the products reads the same rows.
    let report = run(&fx.ctx, "import_catalog", json!({"path": data_dir().join("products.csv")})).await;
    succeeded(&report);
    assert_eq!(report.outputs["records_read"], json!(counts["Product"]));
    assert_eq!(report.outputs["models"]["Product"]["inserted"], json!(0));
    assert_eq!(report.outputs["models"]["Product"]["updated"], json!(counts["Product"]));
}
on_both_backends!(import_catalog_fills_every_store);

async fn classify_product_votes_creates_and_links(backend: Backend) {
    classify_products(Fixture::with_projections_on(backend, "wf_classify").await).await;
}
on_both_backends!(classify_product_votes_creates_and_links);

/// The same with the sentence model as the embedder: the catalogue's vectors and the queries
/// are the model's.
async fn classify_product_votes_with_the_minilm_embedder(backend: Backend) {
    let fx = Fixture::with_projections_config_on(backend, "wf_classify_minilm", |c| c.with_embedder(minilm())).await;
    assert_eq!(fx.ctx.stores().embedder().name(), "all-MiniLM-L6-v2");
    classify_products(fx).await;
}
on_both_backends!(classify_product_votes_with_the_minilm_embedder);

/// Imports the catalogue, classifies four new products and checks what each run wrote.
async fn classify_products(fx: Fixture) {
    import(&fx).await;
    for product in new_products().into_iter().take(4) {
        let report = run(&fx.ctx, "classify_product", json!({"product": product})).await;
        succeeded(&report);
        let created = &report.outputs["product"];
        let classification = &report.outputs["classification"];
        assert_eq!(classification["product_id"], created["id"]);
        assert_eq!(classification["method"], "vote");
        let confidence = classification["confidence"].as_f64().unwrap();
        assert!(confidence > 0.0 && confidence <= 1.0);
        // The vote picked a code that products of the new product's category carry.
        let category = created["category_id"].as_i64().unwrap();
        let codes = fx
            .sql(
                &format!("SELECT DISTINCT c.unspsc_id FROM classifications c JOIN products p ON p.id = c.product_id WHERE p.category_id = {category} AND c.method = 'import'"),
                vec![],
            )
            .await
            .into_iter()
            .map(|r| r.try_get::<i64>("", "unspsc_id").unwrap())
            .collect::<Vec<_>>();
        let voted = classification["unspsc_id"].as_i64().unwrap();
        assert!(
            codes.contains(&voted),
            "{} voted {voted}, the category's codes are {codes:?}",
            created["sku"]
        );
        // The classification is in the graph with its edges.
        let id = classification["id"].as_i64().unwrap();
        let (_, edges) = fx.graph_node("Classification", id).await.expect("a graph node");
        assert!(
            edges.contains(&("CLASSIFIES".into(), "Product".into(), created["id"].as_i64().unwrap())),
            "{edges:?}"
        );
        assert!(edges.contains(&("AS_UNSPSC".into(), "UnspscCode".into(), voted)), "{edges:?}");
        if report.node("link_etim").unwrap().status == NodeStatus::Succeeded {
            let etim = fx
                .sql(&format!("SELECT etim_id FROM classifications WHERE id = {id}"), vec![])
                .await[0]
                .try_get::<Option<i64>>("", "etim_id")
                .unwrap()
                .expect("the link wrote the ETIM class");
            assert!(
                edges.iter().any(|e| e.0 == "AS_ETIM" && e.2 == etim) || {
                    let (_, edges) = fx.graph_node("Classification", id).await.unwrap();
                    edges.iter().any(|e| e.0 == "AS_ETIM" && e.2 == etim)
                }
            );
        }
    }
}

async fn a_failing_classification_leaves_no_partial_write(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "wf_classify_fail").await;
    import(&fx).await;
    let products = fx.count("products", "TRUE").await;
    let classifications = fx.count("classifications", "TRUE").await;
    let mut bad = new_products().remove(0);
    bad["price"] = json!(-5);
    bad["sku"] = json!("BAD-PRICE-1");
    let report = run(&fx.ctx, "classify_product", json!({"product": bad})).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.node("product").unwrap().status, NodeStatus::Failed);
    assert_eq!(report.node("classification").unwrap().status, NodeStatus::Cancelled);
    assert!(report.error.as_ref().unwrap().contains("price"), "{:?}", report.error);
    assert_eq!(fx.count("products", "TRUE").await, products);
    assert_eq!(fx.count("classifications", "TRUE").await, classifications);
    assert_eq!(fx.vector_documents("products").await.len() as i64, products);
}
on_both_backends!(a_failing_classification_leaves_no_partial_write);

/// Active rules attached to `category` or any category above it, counted in SQL (a recursive
/// query whose `UNION` ends at a cycle of parents), independently of the workflow.
async fn rules_of_category_and_ancestors(fx: &Fixture, category: i64) -> i64 {
    let rows = fx
        .sql(
            &format!(
                "WITH RECURSIVE up(id) AS (SELECT CAST({category} AS BIGINT) UNION SELECT c.parent_id FROM categories c JOIN up ON c.id = up.id WHERE c.parent_id IS NOT NULL) \
                 SELECT COUNT(*) AS n FROM compliance_rules WHERE active AND category_id IN (SELECT id FROM up)"
            ),
            vec![],
        )
        .await;
    rows[0].try_get("", "n").unwrap()
}

async fn compliance_check_reports_each_rule_of_the_category(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "wf_compliance").await;
    import(&fx).await;
    // A product of a category whose parent has rules too (drills under power tools).
    let row = fx
        .sql(
            "SELECT p.id, p.category_id FROM products p JOIN categories c ON c.id = p.category_id WHERE EXISTS (SELECT 1 FROM compliance_rules r WHERE r.category_id = c.parent_id AND r.active) ORDER BY p.id LIMIT 1",
            vec![],
        )
        .await;
    let product: i64 = row[0].try_get("", "id").unwrap();
    let category: i64 = row[0].try_get("", "category_id").unwrap();
    let report = run(&fx.ctx, "compliance_check", json!({"product_id": product})).await;
    succeeded(&report);
    let results = report.outputs["results"].as_array().unwrap();
    assert_eq!(
        results.len() as i64,
        rules_of_category_and_ancestors(&fx, category).await,
        "the rules of the category and of its parent: {results:?}"
    );
    assert!(
        results.iter().any(|r| r["category_id"] != json!(category)),
        "a rule of the parent category: {results:?}"
    );
    let blocking = results
        .iter()
        .filter(|r| r["severity"] == "blocking" && r["passed"] == false)
        .count();
    assert_eq!(report.outputs["blocking_failures"], json!(blocking));
    assert_eq!(report.outputs["passed"], json!(blocking == 0));
    assert!(
        results.iter().all(|r| r["standard"].is_string()),
        "every rule names its standard: {results:?}"
    );

    // A product of a category without rules, under a parent without rules, passes with no
    // results (the Graph node's empty `neighbors` used to be left out of its output, and the
    // check failed on a missing input).
    let row = fx
        .sql(
            "SELECT p.id FROM products p JOIN categories c ON c.id = p.category_id WHERE NOT EXISTS (SELECT 1 FROM compliance_rules r WHERE r.category_id = p.category_id OR r.category_id = c.parent_id) ORDER BY p.id LIMIT 1",
            vec![],
        )
        .await;
    let unruled: i64 = row[0].try_get("", "id").unwrap();
    let report = run(&fx.ctx, "compliance_check", json!({"product_id": unruled})).await;
    succeeded(&report);
    assert_eq!(report.outputs["results"], json!([]));
    assert_eq!(report.outputs["passed"], json!(true));

    let report = run(&fx.ctx, "compliance_check", json!({"product_id": 987654})).await;
    assert_eq!(report.status, RunStatus::Failed, "an unknown product fails the run");
}
on_both_backends!(compliance_check_reports_each_rule_of_the_category);

/// A category named `slug` under `parent`.
async fn category(fx: &Fixture, slug: &str, parent: Option<i64>) -> i64 {
    let record: NewCategory =
        serde_json::from_value(json!({"slug": slug, "name": slug, "description": "", "parent_id": parent, "active": true})).unwrap();
    CategoryCreateNode
        .run(&fx.ctx, CreateInput { record })
        .await
        .expect("a category")
        .record
        .id()
}

/// A product of `category` with these attributes; `i` makes its SKU.
async fn product_in(fx: &Fixture, i: usize, category: i64, attributes: Value) -> i64 {
    let mut row = sample_product(i);
    row["category_id"] = category.into();
    row["attributes"] = attributes;
    let record: NewProduct = serde_json::from_value(row).unwrap();
    ProductCreateNode
        .run(&fx.ctx, CreateInput { record })
        .await
        .expect("a product")
        .record
        .id()
}

/// A rule on `category` requiring `requirement` of the standard `standard`.
async fn rule_on(fx: &Fixture, category: i64, standard: i64, severity: &str, requirement: Value) -> i64 {
    let record: NewComplianceRule = serde_json::from_value(json!({
        "name": format!("rule on category {category}"), "description": "", "standard_id": standard,
        "category_id": category, "severity": severity, "requirement": requirement, "active": true
    }))
    .unwrap();
    ComplianceRuleCreateNode
        .run(&fx.ctx, CreateInput { record })
        .await
        .expect("a rule")
        .record
        .id()
}

async fn standard(fx: &Fixture) -> i64 {
    let record: NewSafetyStandard = serde_json::from_value(
        json!({"code": "IEC 60745-1", "title": "Hand-held tools", "body": "IEC", "scope": "", "published_at": null}),
    )
    .unwrap();
    SafetyStandardCreateNode
        .run(&fx.ctx, CreateInput { record })
        .await
        .expect("a standard")
        .record
        .id()
}

/// `(rule_id, category_id)` of each line of a compliance report.
fn rule_lines(report: &RunReport) -> Vec<(i64, i64)> {
    report.outputs["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {:?}", report.error))
        .iter()
        .map(|r| (r["rule_id"].as_i64().unwrap(), r["category_id"].as_i64().unwrap()))
        .collect()
}

/// A rule attached to the root of a three-level tree applies to a product of the leaf, and
/// fails it; a cycle of parents ends where it closes instead of looping.
async fn compliance_check_applies_the_rules_of_every_ancestor_category(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "wf_compliance_tree").await;
    let standard = standard(&fx).await;
    let root = category(&fx, "power-tools", None).await;
    let middle = category(&fx, "drills", Some(root)).await;
    let leaf = category(&fx, "hammer-drills", Some(middle)).await;
    let on_root = rule_on(&fx, root, standard, "blocking", json!({"attribute": "ce_marked", "equals": true})).await;
    let on_leaf = rule_on(&fx, leaf, standard, "warning", json!({"attribute": "voltage", "max": 36})).await;
    let product = product_in(&fx, 1, leaf, json!({"ce_marked": false, "voltage": 18})).await;

    let report = run(&fx.ctx, "compliance_check", json!({"product_id": product})).await;
    succeeded(&report);
    assert_eq!(rule_lines(&report), [(on_root, root), (on_leaf, leaf)]);
    assert_eq!(report.outputs["passed"], json!(false), "the root's blocking rule fails it");
    assert_eq!(report.outputs["blocking_failures"], json!(1));
    assert_eq!(report.outputs["results"][0]["standard"], json!("IEC 60745-1"));

    // The root made a child of the leaf: every category of the cycle is an ancestor of the
    // leaf, each counted once.
    let linked = CategoryGraphNode
        .run(
            &fx.ctx,
            GraphInput::Link {
                id: root,
                relation: "CHILD_OF".into(),
                target_id: leaf,
            },
        )
        .await
        .expect("the root linked under the leaf");
    assert!(linked.pending.is_empty(), "{:?}", linked.pending);
    let report = run(&fx.ctx, "compliance_check", json!({"product_id": product})).await;
    succeeded(&report);
    assert_eq!(rule_lines(&report), [(on_root, root), (on_leaf, leaf)]);
    assert_eq!(rules_of_category_and_ancestors(&fx, leaf).await, 2);
}
on_both_backends!(compliance_check_applies_the_rules_of_every_ancestor_category);

/// Five levels above a product's category are collected; a sixth is beyond the traversal, and
/// the check fails saying so rather than pass the product without the rules up there.
async fn compliance_check_fails_when_the_category_tree_is_deeper_than_it_reaches(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "wf_compliance_deep").await;
    let standard = standard(&fx).await;
    let mut chain = vec![category(&fx, "level-1", None).await];
    for level in 2..=7 {
        let parent = *chain.last().unwrap();
        chain.push(category(&fx, &format!("level-{level}"), Some(parent)).await);
    }
    let on_root = rule_on(
        &fx,
        chain[0],
        standard,
        "blocking",
        json!({"attribute": "ce_marked", "equals": true}),
    )
    .await;

    let five_below = product_in(&fx, 1, chain[5], json!({"ce_marked": true})).await;
    let report = run(&fx.ctx, "compliance_check", json!({"product_id": five_below})).await;
    succeeded(&report);
    assert_eq!(rule_lines(&report), [(on_root, chain[0])]);

    let six_below = product_in(&fx, 2, chain[6], json!({"ce_marked": true})).await;
    let report = run(&fx.ctx, "compliance_check", json!({"product_id": six_below})).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.node("check").unwrap().status, NodeStatus::Failed);
    let error = report.error.unwrap_or_default();
    assert!(
        error.contains(&format!("the rules of category {} (the parent of category {})", chain[0], chain[1]))
            && error.contains("deeper than the traversal reaches"),
        "{error}"
    );
}
on_both_backends!(compliance_check_fails_when_the_category_tree_is_deeper_than_it_reaches);

async fn recommend_for_project_writes_ranked_recommendations(backend: Backend) {
    recommend_for_the_sample_project(Fixture::with_projections_on(backend, "wf_recommend").await).await;
}
on_both_backends!(recommend_for_project_writes_ranked_recommendations);

/// The same with the sentence model as the embedder.
async fn recommend_for_project_ranks_with_the_minilm_embedder(backend: Backend) {
    let fx = Fixture::with_projections_config_on(backend, "wf_recommend_minilm", |c| c.with_embedder(minilm())).await;
    recommend_for_the_sample_project(fx).await;
}
on_both_backends!(recommend_for_project_ranks_with_the_minilm_embedder);

/// Imports the catalogue, opens the sample project and checks its recommendations.
async fn recommend_for_the_sample_project(fx: Fixture) {
    import(&fx).await;
    let sample: Value = serde_json::from_str(&std::fs::read_to_string(data_dir().join("sample_project.json")).unwrap()).unwrap();
    let ctx = fx.tenant(sample["tenant"].as_str().unwrap());
    let mut b = dataflow_runtime::WorkflowBuilder::new("setup");
    b.add_node("customer", "CustomerCreateNode", json!({"record": sample["customer"]}));
    b.add_node("project", "ProjectCreateNode", json!({"record": sample["project"]}));
    b.connect("customer", "record.id", "project", "record.customer_id");
    b.output("project", "project", "record.id");
    let setup = Runtime::new(registry()).run(&b.build(&registry()).unwrap(), &ctx, json!({})).await;
    succeeded(&setup);
    let project = setup.outputs["project"].as_i64().unwrap();
    let category = sample["project"]["category_id"].as_i64().unwrap();

    let report = run(&ctx, "recommend_for_project", json!({"project_id": project, "limit": 3})).await;
    succeeded(&report);
    let recommendations = report.outputs["recommendations"].as_array().unwrap();
    assert!(!recommendations.is_empty() && recommendations.len() <= 3);
    let scores: Vec<f64> = recommendations.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    let stored = fx
        .sql(
            &format!("SELECT r.product_id, p.category_id FROM recommendations r JOIN products p ON p.id = r.product_id WHERE r.project_id = {project} AND r.tenant_id = 'demo'"),
            vec![],
        )
        .await;
    assert_eq!(stored.len(), recommendations.len());
    for row in &stored {
        assert_eq!(
            row.try_get::<i64>("", "category_id").unwrap(),
            category,
            "only products of the needed category"
        );
    }
    // Recommendations are in the graph, pointing at their project and product.
    let id = report.outputs["saved"][0].as_i64().unwrap();
    let (_, edges) = fx.graph_node("Recommendation", id).await.expect("a graph node");
    assert!(edges.contains(&("RECOMMENDED_FOR".into(), "Project".into(), project)), "{edges:?}");
}
