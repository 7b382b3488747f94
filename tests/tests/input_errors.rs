//! Errors a user can act on, when a workflow runs: input that does not fit a node names the
//! node and the path in the input (`record.price`, `sort[0].descending`); a Read with
//! `required: true` fails with "not found" instead of handing `record: null` to the next
//! node; an input with `default: null` is optional. Each on the servers and on the embedded
//! set.

use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::read::ReadInput;
use dataflow_core::{Error, Node};
use dataflow_models::{ProductCreateNode, ProductReadNode};
use dataflow_runtime::{Registry, RunReport, RunStatus, Runtime, Workflow, WorkflowBuilder, yaml};
use dataflow_tests::fixture::{Backend, Fixture, sample_product};
use dataflow_tests::on_both_backends;
use serde_json::{Value, json};

fn registry() -> Registry {
    dataflow_models::registry()
}

async fn run(fx: &Fixture, workflow: &Workflow, inputs: Value) -> RunReport {
    Runtime::new(registry()).run(workflow, &fx.ctx, inputs).await
}

/// A one-node workflow whose node `node` (of type `node_type`, with `params`) takes its input
/// `field` from the workflow's input of the same name.
fn fed_from_input(node: &str, node_type: &str, params: Value, field: &str, ty: &str) -> Workflow {
    let mut b = WorkflowBuilder::new("fed");
    b.input(field, ty);
    b.add_node(node, node_type, params);
    b.connect("input", field, node, field);
    b.build(&registry()).unwrap()
}

/// The run failed, with `error` as its one line.
fn failed_with(report: &RunReport, error: &str) {
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    assert_eq!(report.error.as_deref(), Some(error));
}

on_both_backends!(a_wrong_type_in_a_record_names_the_node_and_the_field);
async fn a_wrong_type_in_a_record_names_the_node_and_the_field(backend: Backend) {
    let fx = Fixture::on(backend, "input_errors_record").await;
    let workflow = fed_from_input("create", "ProductCreateNode", json!({}), "record", "object");
    let mut product = sample_product(1);
    product["price"] = json!("abc");
    let report = run(&fx, &workflow, json!({"record": product})).await;
    failed_with(
        &report,
        "node 'create' (ProductCreateNode) failed: bad input at record.price: invalid type: string \"abc\", expected f64",
    );
    assert_eq!(fx.count("products", "").await, 0, "nothing was written");

    let workflow = fed_from_input("import", "ProductBulkUpsertNode", json!({"rows": []}), "batch_size", "any");
    let report = run(&fx, &workflow, json!({"batch_size": "big"})).await;
    failed_with(
        &report,
        "node 'import' (ProductBulkUpsertNode) failed: bad input at batch_size: invalid type: string \"big\", expected usize",
    );
}

on_both_backends!(a_sort_key_of_the_wrong_shape_says_what_was_found_and_where);
async fn a_sort_key_of_the_wrong_shape_says_what_was_found_and_where(backend: Backend) {
    let fx = Fixture::on(backend, "input_errors_sort").await;
    let workflow = fed_from_input("list", "ProductListNode", json!({}), "sort", "array");
    let prefix = "node 'list' (ProductListNode) failed: bad input at sort[0]";
    for (sort, error) in [
        (
            json!([{"field": "price", "descending": "yes"}]),
            format!("{prefix}.descending: invalid type: string \"yes\", expected a boolean"),
        ),
        (
            json!([5]),
            format!(
                "{prefix}: invalid type: integer `5`, expected a sort key: \"price\", \"-price\" or {{\"field\": \"price\", \"descending\": true}}"
            ),
        ),
        // A misspelt key was taken as an ascending sort.
        (
            json!([{"field": "price", "desc": true}]),
            format!("{prefix}: unknown field `desc`, expected `field` or `descending`"),
        ),
        (json!([{"descending": true}]), format!("{prefix}: missing field `field`")),
    ] {
        failed_with(&run(&fx, &workflow, json!({ "sort": sort })).await, &error);
    }
    // Both forms still sort.
    let report = run(&fx, &workflow, json!({"sort": ["-price", {"field": "sku", "descending": false}]})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
}

on_both_backends!(a_required_read_fails_with_not_found_instead_of_giving_null);
async fn a_required_read_fails_with_not_found_instead_of_giving_null(backend: Backend) {
    let fx = Fixture::on(backend, "input_errors_read").await;
    fx.sample_categories().await;
    let text = "\
name: check
inputs:
  product_id: {type: integer}
nodes:
  product:
    type: ProductReadNode
    params: {required: true}
  rules:
    type: CategoryGraphNode
    params: {op: neighbors, relation: APPLIES_TO, direction: in}
connections:
  - {from: input.product_id, to: product.id}
  - {from: product.record.category_id, to: rules.id}
";
    let workflow = yaml::load_str(text, "check.yaml", &registry()).unwrap();
    let report = run(&fx, &workflow, json!({"product_id": 999_999})).await;
    failed_with(&report, "node 'product' (ProductReadNode) failed: Product 999999 not found");
    assert_eq!(report.node("rules").unwrap().attempts, 0, "the node after it did not run");

    // The node itself: not found with `required`, `record: null` without, the row when there.
    let read = |id, required| {
        ProductReadNode.run(
            &fx.ctx,
            ReadInput {
                id,
                include_deleted: false,
                required,
            },
        )
    };
    match read(999_999, true).await {
        Err(Error::NotFound {
            model: "Product",
            id: 999_999,
        }) => {}
        other => panic!("expected not found, got {other:?}"),
    }
    assert!(read(999_999, false).await.unwrap().record.is_none());
    let record = serde_json::from_value(sample_product(1)).unwrap();
    let id = ProductCreateNode.run(&fx.ctx, CreateInput { record }).await.unwrap().record.id();
    for _ in 0..2 {
        // The second read is answered by the cache.
        let found = read(id, true).await.unwrap();
        assert_eq!(found.record.map(|r| r.id()), Some(id));
    }
}

on_both_backends!(an_input_whose_default_is_null_may_be_left_out);
async fn an_input_whose_default_is_null_may_be_left_out(backend: Backend) {
    let fx = Fixture::on(backend, "input_errors_default").await;
    let text = "\
name: products
inputs:
  limit: {type: integer, default: null}
nodes:
  list: {type: ProductListNode}
connections:
  - {from: input.limit, to: list.limit}
outputs:
  records: list.records
";
    let workflow = yaml::load_str(text, "products.yaml", &registry()).unwrap();
    let report = run(&fx, &workflow, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(report.outputs["records"], json!([]));
}
