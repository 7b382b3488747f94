//! `dataflow validate` and the loader behind it on workflow files with mistakes a user makes:
//! static params of the wrong type or with unknown fields, a bad `retry` or `timeout_ms`, a
//! Read that may find nothing feeding an input that takes no null, an input whose default is
//! null, and a path that is not a workflow file at all. No store is involved.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dataflow_runtime::yaml;
use serde_json::Value;

/// A directory of this test process for the files it writes.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dataflow-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `name` in the scratch directory.
fn file(name: &str, text: &str) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `dataflow validate path`, with embedded stores in a directory of this process (validation
/// opens none).
fn validate(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dataflow"))
        .arg("validate")
        .arg(path)
        .env_remove("DATAFLOW_DATABASE_URL")
        .env("DATAFLOW_HOME", scratch().join("home"))
        .output()
        .expect("the dataflow binary runs")
}

/// What `dataflow validate` printed to standard error for a file it refused.
fn refusal(path: &Path) -> String {
    let out = validate(path);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{} was accepted: {}",
        path.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

fn assert_has(shown: &str, expected: &str) {
    assert!(shown.contains(expected), "missing:\n{expected}\nin:\n{shown}");
}

#[test]
fn static_params_of_the_wrong_type_or_with_unknown_fields_are_refused_at_their_lines() {
    let path = file(
        "bad_params.yaml",
        "\
name: bad_params
nodes:
  create:
    type: ProductCreateNode
    params:
      record:
        name: 5
        price: \"abc\"
        colour: red
  list:
    type: ProductListNode
    params:
      limit: -1
      sort:
        - {field: price, descending: \"yes\"}
",
    );
    let err = refusal(&path);
    assert_has(
        &err,
        "bad_params.yaml:7:9: input 'record.name' of node 'create' takes string, got an integer",
    );
    assert_has(
        &err,
        "bad_params.yaml:8:9: input 'record.price' of node 'create' takes number, got a string",
    );
    assert_has(&err, "bad_params.yaml:9:9: node 'create' has no input 'record.colour'");
    // A static record must be whole: what no connection supplies is missing.
    assert_has(
        &err,
        "bad_params.yaml:6:7: node 'create' (ProductCreateNode) needs inputs 'record.sku', 'record.description', \
         'record.currency', 'record.stock', 'record.active', 'record.category_id' and 'record.attributes': give them in \
         params or connect them",
    );
    assert_has(&err, "bad_params.yaml:13:7: input 'limit' of node 'list' must be at least 0");
    assert_has(
        &err,
        "bad_params.yaml:15:26: input 'sort.0.descending' of node 'list' takes boolean, got a string",
    );
}

#[test]
fn partial_params_completed_by_connections_validate() {
    // `record` is partly static and partly connected; `op` picks the Graph node's variant and
    // its `id` comes from a connection.
    let path = file(
        "partial.yaml",
        "\
name: partial
inputs:
  product: {type: object}
  category_id: {type: integer}
nodes:
  product:
    type: ProductCreateNode
    params:
      record: {sku: SKU-1, name: Drill, description: '', price: 10.5, currency: EUR, stock: 1, active: true, attributes: {}}
  link:
    type: ProductGraphNode
    params: {op: link, relation: IN_CATEGORY}
connections:
  - {from: input.category_id, to: product.record.category_id}
  - {from: product.record.id, to: link.id}
  - {from: input.category_id, to: link.target_id}
",
    );
    let out = validate(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A variant that does not exist is named with the ones that do.
    let path = file(
        "bad_op.yaml",
        "name: bad_op\nnodes:\n  link:\n    type: ProductGraphNode\n    params: {op: lnk, id: 1}\n",
    );
    let err = refusal(&path);
    assert_has(&err, "bad_op.yaml:5:14: input 'op' of node 'link' must be one of \"link\"");
}

#[test]
fn a_bad_retry_or_timeout_is_reported_at_its_own_line() {
    let path = file(
        "bad_timeout.yaml",
        "name: x\nnodes:\n  a:\n    type: Transform\n    timeout_ms: soon\n",
    );
    assert_has(&refusal(&path), "bad_timeout.yaml:5:5: invalid type: string \"soon\", expected u64");
    let path = file(
        "bad_retry.yaml",
        "name: x\nnodes:\n  a:\n    type: Transform\n    retry:\n      backoff_ms: 10\n      attempts: many\n",
    );
    assert_has(&refusal(&path), "bad_retry.yaml:7:7: invalid type: string \"many\", expected u32");
    let path = file(
        "bad_retry_key.yaml",
        "name: x\nnodes:\n  a:\n    type: Transform\n    retry:\n      attempts: 2\n      tries: 3\n",
    );
    assert_has(&refusal(&path), "bad_retry_key.yaml:7:7: unknown field `tries`");
}

/// compliance_check's first two nodes, with `read_params` for the Read and `extra_nodes` and
/// `connections` after them.
fn read_then_graph(read_params: &str, extra_nodes: &str, connections: &str) -> String {
    format!(
        "\
name: read_then_graph
inputs:
  product_id: {{type: integer}}
nodes:
  product:
    type: ProductReadNode
    params: {read_params}
  rules:
    type: CategoryGraphNode
    params: {{op: neighbors, relation: APPLIES_TO, direction: in}}
{extra_nodes}connections:
  - {{from: input.product_id, to: product.id}}
{connections}"
    )
}

#[test]
fn a_read_that_may_find_nothing_cannot_feed_an_input_that_takes_no_null() {
    let path = file(
        "nullable.yaml",
        &read_then_graph("{}", "", "  - {from: product.record.category_id, to: rules.id}\n"),
    );
    assert_has(
        &refusal(&path),
        "nullable.yaml:13:5: 'product.record.category_id' may be null (when 'product.record' is null), and 'rules.id' takes integer, not null: give node 'product' `required: true` (it then fails when the row is not found), or test it with a Switch (op: exists) and connect the Switch's `then`",
    );

    // Either remedy validates: the Read fails instead of giving null, or a Switch routes.
    let path = file(
        "required.yaml",
        &read_then_graph("{required: true}", "", "  - {from: product.record.category_id, to: rules.id}\n"),
    );
    let out = validate(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = file(
        "switch.yaml",
        &read_then_graph(
            "{}",
            "  found:\n    type: Switch\n    params: {op: exists}\n",
            "  - {from: product.record.category_id, to: found.value}\n  - {from: found.then, to: rules.id}\n",
        ),
    );
    let out = validate(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // `required: false`, written out, is the default.
    let path = file(
        "not_required.yaml",
        &read_then_graph("{required: false}", "", "  - {from: product.record.category_id, to: rules.id}\n"),
    );
    assert_has(&refusal(&path), "'product.record.category_id' may be null");
}

#[test]
fn an_optional_workflow_input_cannot_feed_an_input_that_takes_no_null() {
    let path = file(
        "optional_input.yaml",
        "\
name: optional_input
inputs:
  id: {type: integer, required: false}
nodes:
  read: {type: ProductReadNode}
connections:
  - {from: input.id, to: read.id}
",
    );
    assert_has(
        &refusal(&path),
        "optional_input.yaml:7:5: 'input.id' may be null, and 'read.id' takes integer, not null: make the workflow's input 'id' required or give it a default",
    );
}

#[test]
fn default_null_makes_an_input_optional() {
    let text = "\
name: default_null
inputs:
  limit: {type: integer, default: null}
nodes:
  list: {type: ProductListNode}
connections:
  - {from: input.limit, to: list.limit}
";
    let workflow = yaml::load_str(text, "default_null.yaml", &dataflow_models::registry()).unwrap();
    let limit = &workflow.inputs()["limit"];
    assert!(!limit.is_required(), "default: null makes the input optional");
    assert_eq!(limit.default, Some(Value::Null));
    let out = validate(&file("default_null.yaml", text));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Null is what a run gets, so it cannot feed an input that takes no null.
    let text = text
        .replace("to: list.limit", "to: read.id")
        .replace("list: {type: ProductListNode}", "read: {type: ProductReadNode}");
    assert_has(&refusal(&file("default_null_into_id.yaml", &text)), "'input.limit' may be null");
}

#[test]
fn a_path_that_is_not_a_regular_file_is_refused_before_it_is_read() {
    let registry = dataflow_models::registry();
    // An endless device: reading it would take memory until none is left.
    let err = yaml::load_file("/dev/zero", &registry).unwrap_err().to_string();
    assert_has(&err, "/dev/zero: not a regular file");
    let err = yaml::load_file(scratch(), &registry).unwrap_err().to_string();
    assert_has(&err, "not a regular file");

    // A file over the limit is refused by its size, without reading it.
    let big = scratch().join("big.yaml");
    let handle = std::fs::File::create(&big).unwrap();
    handle.set_len(yaml::MAX_FILE_BYTES as u64 + 1).unwrap();
    let err = yaml::load_file(&big, &registry).unwrap_err().to_string();
    assert_has(
        &err,
        &format!(
            "{} bytes: a workflow file may hold at most {}",
            yaml::MAX_FILE_BYTES + 1,
            yaml::MAX_FILE_BYTES
        ),
    );
    assert_has(&refusal(Path::new("/dev/zero")), "not a regular file");
}
