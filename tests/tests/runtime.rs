//! The workflow runtime: validation that reports every problem at once, YAML diagnostics with
//! line and column, and runs against live PostgreSQL and Redis — data flowing between
//! generated nodes, Switch/Merge/Map/Transform, failure handling, retries, timeouts and the
//! concurrency limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dataflow_runtime::{
    DynNode, NodeEnv, NodeFailure, NodeInfo, NodeStatus, Registry, RetryPolicy, RunOptions, RunStatus, Runtime, WorkflowBuilder, yaml,
};
use dataflow_tests::fixture::{Fixture, sample_product};
use serde_json::{Value, json};

fn registry() -> Registry {
    dataflow_models::registry()
}

fn messages(problems: &dataflow_runtime::Problems) -> Vec<String> {
    problems.iter().map(|p| format!("{}: {}", p.pointer, p.message)).collect()
}

#[test]
fn the_registry_holds_117_model_nodes_and_the_generic_ones() {
    let registry = registry();
    let model_nodes = registry.names().filter(|n| registry.info(n).unwrap().model.is_some()).count();
    assert_eq!(model_nodes, 117);
    for generic in ["Switch", "Merge", "Map", "Transform"] {
        assert!(registry.info(generic).is_some(), "{generic} is registered");
    }
    let (input, output) = registry.schemas("ProductCreateNode").unwrap();
    assert!(input.to_string().contains("record"));
    assert!(output.to_string().contains("pending"));
}

#[test]
fn validation_reports_every_problem_at_once() {
    let mut b = WorkflowBuilder::new("broken");
    b.input("text", "string");
    b.add_node("create", "ProductCreateNod", json!({}));
    b.add_node("search", "ProductSearchNode", json!({"top_k": 5, "qeury": "x"}));
    b.add_node("read", "ProductReadNode", json!({}));
    b.add_node("read2", "ProductReadNode", json!({}));
    b.add_node("a", "Transform", json!({"select": {"v": "x"}}));
    b.add_node("b", "Transform", json!({"select": {"v": "x"}}));
    b.connect("input", "text", "read", "id");
    b.connect("search", "hits.0.record.id", "read2", "id");
    b.connect("search", "hits.0.record.sku", "read2", "id");
    b.connect("search", "hitz", "a", "x");
    b.connect("a", "v", "b", "x");
    b.connect("b", "v", "a", "y");
    let problems = b.build(&registry()).unwrap_err();
    let all = messages(&problems).join("\n");
    for expected in [
        "/nodes/create/type: node 'create' has unknown type 'ProductCreateNod' (did you mean 'ProductCreateNode'?)",
        "/nodes/search/params/qeury: node 'search' has no input 'qeury' (did you mean 'query'?)",
        "/connections/0: type mismatch: 'input.text' gives string, 'read.id' takes integer",
        "/connections/2: type mismatch: 'search.hits.0.record.sku' gives string, 'read2.id' takes integer",
        "/connections/2/to: input 'id' of node 'read2' is already fed by connection 1 ('search.hits.0.record.id')",
        "/connections/3/from: node 'search' has no output 'hitz' (did you mean 'hits'?)",
        "/connections: cycle: a → b → a",
    ] {
        assert!(all.contains(expected), "missing:\n{expected}\nin:\n{all}");
    }
    // A required input neither given nor connected.
    let mut b = WorkflowBuilder::new("missing");
    b.add_node("read", "ProductReadNode", json!({}));
    let all = messages(&b.build(&registry()).unwrap_err()).join("\n");
    assert!(
        all.contains("/nodes/read: node 'read' (ProductReadNode) needs input 'id': give it in params or connect it"),
        "{all}"
    );
}

#[test]
fn yaml_problems_name_file_line_and_column() {
    let text = "\
name: classify
inputs:
  text: {type: string}
nodes:
  similar:
    type: ProductSearchNode
    params:
      top_k: 5
  read:
    type: ProductReadNode
connections:
  - from: input.text
    to: similar.qeury
  - {from: similar.hits.0.record.id, to: read.id}
";
    let err = yaml::load_str(text, "classify.yaml", &registry()).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("classify.yaml:13:9: node 'similar' has no input 'qeury' (did you mean 'query'?)"),
        "{shown}"
    );
    assert!(shown.contains("13 |     to: similar.qeury"), "the excerpt shows the line:\n{shown}");

    let err = yaml::load_str("name: x\nnodes:\n  a:\n    type: Transform\n    prams: {}\n", "x.yaml", &registry()).unwrap_err();
    assert!(err.to_string().starts_with("x.yaml:5:5: unknown field `prams`"), "{err}");
    let err = yaml::load_str("name: x\nnodes: [1, 2\n", "x.yaml", &registry()).unwrap_err();
    assert!(err.to_string().starts_with("x.yaml:"), "{err}");
    let ok = yaml::load_str(
        "name: x\nnodes:\n  z:\n    type: Transform\n  a:\n    type: Transform\n",
        "x.yaml",
        &registry(),
    )
    .unwrap();
    assert_eq!(ok.node_names().collect::<Vec<_>>(), ["z", "a"], "nodes keep the file's order");
}

/// Category → product (its `category_id` from the category) → read back through the cache.
#[tokio::test]
async fn data_flows_between_generated_nodes() {
    let fx = Fixture::new("rt_flow").await;
    let mut b = WorkflowBuilder::new("flow");
    b.input("product", "object");
    b.add_node(
        "category",
        "CategoryCreateNode",
        json!({"record": {"slug": "rt-flow", "name": "Flow", "description": "", "parent_id": null, "active": true}}),
    );
    b.add_node("product", "ProductCreateNode", json!({}));
    b.add_node("read", "ProductReadNode", json!({}));
    b.connect("input", "product", "product", "record");
    b.connect("category", "record.id", "product", "record.category_id");
    b.connect("product", "record.id", "read", "id");
    b.output("product", "read", "record");
    let workflow = b.build(&registry()).unwrap();
    let report = Runtime::new(registry())
        .run(&workflow, &fx.ctx, json!({"product": sample_product(1)}))
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let product = &report.outputs["product"];
    let category_id = report.node("category").unwrap().output.as_ref().unwrap()["record"]["id"].clone();
    assert_eq!(product["category_id"], category_id);
    assert_eq!(fx.count("products", &format!("category_id = {category_id}")).await, 1);
    for node in &report.nodes {
        assert_eq!((node.status, node.attempts), (NodeStatus::Succeeded, 1), "{}", node.name);
        assert!(node.started_at.is_some() && node.ended_at >= node.started_at);
    }
}

/// A Switch routes; the untaken branch is skipped (and what depends on it), a Merge joins.
#[tokio::test]
async fn switch_skips_the_untaken_branch_and_merge_joins() {
    let fx = Fixture::new("rt_switch").await;
    let text = "\
name: route
inputs:
  price: {type: number}
nodes:
  expensive:
    type: Switch
    params: {op: gt, value: 100}
  label:
    type: Transform
    params: {select: {text: 'costs {price}'}}
  premium:
    type: CategoryCreateNode
    params: {record: {slug: premium, name: Premium, description: '', parent_id: null, active: true}}
  after_premium:
    type: Transform
    params: {select: {id: id}}
  cheap:
    type: Transform
    params: {select: {label: '{price} is cheap'}}
  joined:
    type: Merge
connections:
  - {from: input.price, to: expensive.value}
  - {from: expensive.then, to: label.price}
  - {from: label.text, to: premium.record.description}
  - {from: premium.record.id, to: after_premium.id}
  - {from: expensive.else, to: cheap.price}
  - {from: after_premium.id, to: joined.premium}
  - {from: cheap.label, to: joined.cheap}
outputs:
  result: joined.value
";
    let workflow = yaml::load_str(text, "route.yaml", &registry()).unwrap();
    let runtime = Runtime::new(registry());
    let report = runtime.run(&workflow, &fx.ctx, json!({"price": 20})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(report.node("label").unwrap().status, NodeStatus::Skipped);
    assert_eq!(report.node("premium").unwrap().status, NodeStatus::Skipped);
    assert_eq!(report.node("after_premium").unwrap().status, NodeStatus::Skipped);
    assert_eq!(report.node("cheap").unwrap().status, NodeStatus::Succeeded);
    assert_eq!(report.outputs["result"], json!("20 is cheap"));
    assert_eq!(
        fx.count("categories", "slug = 'premium'").await,
        0,
        "the skipped branch wrote nothing"
    );

    let report = runtime.run(&workflow, &fx.ctx, json!({"price": 250})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(report.node("cheap").unwrap().status, NodeStatus::Skipped);
    assert!(report.outputs["result"].is_i64(), "{:?}", report.outputs);
    assert_eq!(fx.count("categories", "slug = 'premium'").await, 1);
}

/// Map runs a sub-workflow per element under its concurrency limit and returns the outputs in
/// order; an element that fails fails the Map, naming the element.
#[tokio::test]
async fn map_runs_a_sub_workflow_per_element() {
    let fx = Fixture::new("rt_map").await;
    let sub = json!({
        "name": "one",
        "inputs": {"item": {"type": "string"}},
        "nodes": {
            "name": {"type": "Transform", "params": {"select": {"slug": "item", "name": "Category {item}"}}},
            "create": {"type": "CategoryCreateNode", "params": {"record": {"description": "", "parent_id": null, "active": true}}}
        },
        "connections": [
            {"from": "name.slug", "to": "create.record.slug"},
            {"from": "name.name", "to": "create.record.name"},
            {"from": "input.item", "to": "name.item"}
        ],
        "outputs": {"id": "create.record.id"}
    });
    let mut b = WorkflowBuilder::new("many");
    b.input("slugs", "array");
    b.add_node("each", "Map", json!({"workflow": sub, "concurrency": 3}));
    b.connect("input", "slugs", "each", "items");
    b.output("ids", "each", "results.*.id");
    let workflow = b.build(&registry()).unwrap();
    let progress = Arc::new(AtomicUsize::new(0));
    let seen = progress.clone();
    let runtime = Runtime::new(registry()).on_progress(move |p| {
        if let dataflow_runtime::Progress::Items { .. } = p {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    });
    let slugs: Vec<String> = (0..7).map(|i| format!("map-{i}")).collect();
    let report = runtime.run(&workflow, &fx.ctx, json!({"slugs": slugs})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let ids = report.outputs["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 7);
    assert_eq!(fx.count("categories", "slug LIKE 'map-%'").await, 7);
    assert_eq!(progress.load(Ordering::Relaxed), 7, "one progress event per element");

    let report = runtime.run(&workflow, &fx.ctx, json!({"slugs": ["map-ok", "Not A Slug"]})).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(report.error.as_ref().unwrap().contains("element 1"), "{:?}", report.error);
}

/// A node of a test's own making: counts attempts and concurrent runs, fails transiently the
/// first `fail_first` attempts, sleeps `sleep` per attempt.
struct Probe {
    info: NodeInfo,
    attempts: AtomicU32,
    fail_first: u32,
    permanent: bool,
    sleep: Duration,
    running: AtomicUsize,
    peak: AtomicUsize,
}

fn probe(name: &str, fail_first: u32, permanent: bool, sleep: Duration) -> Arc<Probe> {
    Arc::new(Probe {
        info: NodeInfo {
            type_name: name.into(),
            model: None,
            kind: None,
            stores: vec![],
            writes: false,
            summary: "test probe".into(),
        },
        attempts: AtomicU32::new(0),
        fail_first,
        permanent,
        sleep,
        running: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
    })
}

static OPEN: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| json!({"type": "object", "additionalProperties": true}));

#[async_trait]
impl DynNode for Probe {
    fn info(&self) -> &NodeInfo {
        &self.info
    }
    fn input_schema(&self) -> &Value {
        &OPEN
    }
    fn output_schema(&self) -> &Value {
        &OPEN
    }
    async fn run(&self, _: &NodeEnv<'_>, input: Value) -> Result<Value, NodeFailure> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.sleep).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if attempt <= self.fail_first {
            return Err(NodeFailure::Failed {
                message: format!("attempt {attempt} fails"),
                transient: !self.permanent,
                store: None,
                busy: false,
            });
        }
        Ok(json!({"attempt": attempt, "input": input}))
    }
}

struct ProbeRef(Arc<Probe>);

#[async_trait]
impl DynNode for ProbeRef {
    fn info(&self) -> &NodeInfo {
        self.0.info()
    }
    fn input_schema(&self) -> &Value {
        &OPEN
    }
    fn output_schema(&self) -> &Value {
        &OPEN
    }
    async fn run(&self, env: &NodeEnv<'_>, input: Value) -> Result<Value, NodeFailure> {
        self.0.run(env, input).await
    }
}

#[tokio::test]
async fn transient_failures_are_retried_permanent_ones_are_not() {
    let fx = Fixture::new("rt_retry").await;
    let flaky = probe("Flaky", 2, false, Duration::ZERO);
    let broken = probe("Broken", 5, true, Duration::ZERO);
    let mut registry = registry();
    registry
        .register_dyn(Arc::new(ProbeRef(flaky.clone())))
        .register_dyn(Arc::new(ProbeRef(broken.clone())));
    let mut b = WorkflowBuilder::new("retry");
    b.add_node("flaky", "Flaky", json!({}));
    b.retry(
        "flaky",
        RetryPolicy {
            attempts: 3,
            backoff_ms: 1,
            max_backoff_ms: 5,
        },
    );
    let report = Runtime::new(registry.clone())
        .run(&b.build(&registry).unwrap(), &fx.ctx, json!({}))
        .await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.node("flaky").unwrap().attempts, 3);

    let mut b = WorkflowBuilder::new("no-retry");
    b.add_node("broken", "Broken", json!({}));
    b.add_node("later", "ProductReadNode", json!({}));
    b.connect("broken", "attempt", "later", "id");
    let report = Runtime::new(registry.clone())
        .run(&b.build(&registry).unwrap(), &fx.ctx, json!({}))
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    let node = report.node("broken").unwrap();
    assert_eq!(
        (node.status, node.attempts),
        (NodeStatus::Failed, 1),
        "a permanent failure is not retried"
    );
    assert_eq!(report.node("later").unwrap().status, NodeStatus::Cancelled);
    assert!(report.error.unwrap().contains("node 'broken' (Broken) failed: attempt 1 fails"));
}

#[tokio::test]
async fn a_failure_cancels_what_has_not_started_unless_asked_to_continue() {
    let fx = Fixture::new("rt_cancel").await;
    let broken = probe("Broken", 100, true, Duration::ZERO);
    let slow = probe("Slow", 0, false, Duration::from_millis(50));
    let mut registry = registry();
    registry
        .register_dyn(Arc::new(ProbeRef(broken)))
        .register_dyn(Arc::new(ProbeRef(slow.clone())));
    let mut b = WorkflowBuilder::new("branches");
    b.add_node("broken", "Broken", json!({}));
    b.add_node("s1", "Slow", json!({}));
    b.add_node("s2", "Slow", json!({}));
    b.after("s2", "s1");
    let workflow = b.build(&registry).unwrap();
    let options = RunOptions {
        concurrency: 1,
        ..RunOptions::default()
    };
    let report = Runtime::with_options(registry.clone(), options.clone())
        .run(&workflow, &fx.ctx, json!({}))
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(
        report.node("s2").unwrap().status,
        NodeStatus::Cancelled,
        "not started when the run failed"
    );

    let report = Runtime::with_options(
        registry,
        RunOptions {
            continue_on_failure: true,
            ..options
        },
    )
    .run(&workflow, &fx.ctx, json!({}))
    .await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.node("s1").unwrap().status, NodeStatus::Succeeded);
    assert_eq!(
        report.node("s2").unwrap().status,
        NodeStatus::Succeeded,
        "independent branches go on"
    );
}

#[tokio::test]
async fn independent_nodes_run_concurrently_under_the_limit_and_timeouts_apply() {
    let fx = Fixture::new("rt_limit").await;
    let slow = probe("Slow", 0, false, Duration::from_millis(30));
    let mut registry = registry();
    registry.register_dyn(Arc::new(ProbeRef(slow.clone())));
    let mut b = WorkflowBuilder::new("fan");
    for i in 0..12 {
        b.add_node(format!("n{i}"), "Slow", json!({}));
    }
    let workflow = b.build(&registry).unwrap();
    let options = RunOptions {
        concurrency: 3,
        ..RunOptions::default()
    };
    let report = Runtime::with_options(registry.clone(), options)
        .run(&workflow, &fx.ctx, json!({}))
        .await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(slow.peak.load(Ordering::SeqCst), 3, "three at once, never more");

    let mut b = WorkflowBuilder::new("late");
    b.add_node("late", "Slow", json!({}));
    b.timeout("late", Duration::from_millis(5));
    let report = Runtime::new(registry.clone())
        .run(&b.build(&registry).unwrap(), &fx.ctx, json!({}))
        .await;
    let node = report.node("late").unwrap();
    assert_eq!((node.status, node.attempts), (NodeStatus::Failed, 1), "a timeout is not retried");
    assert!(node.error.as_ref().unwrap().contains("no result within"), "{:?}", node.error);
}

/// Runs beyond `max_concurrent_runs` wait their turn (and say how long), none fails for it;
/// a `Map`'s sub-runs run within their parent's admission, even with room for one run only.
#[tokio::test]
async fn runs_beyond_the_admission_limit_wait_their_turn() {
    let fx = Fixture::new("rt_admission").await;
    let slow = probe("Slow", 0, false, Duration::from_millis(30));
    let mut registry = registry();
    registry.register_dyn(Arc::new(ProbeRef(slow.clone())));
    let mut b = WorkflowBuilder::new("one");
    b.add_node("slow", "Slow", json!({}));
    let workflow = Arc::new(b.build(&registry).unwrap());
    let runtime = Runtime::with_options(
        registry.clone(),
        RunOptions {
            max_concurrent_runs: 2,
            ..RunOptions::default()
        },
    );
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let (runtime, workflow, ctx) = (runtime.clone(), workflow.clone(), fx.ctx.clone());
            tokio::spawn(async move { runtime.run(&workflow, &ctx, json!({})).await })
        })
        .collect();
    let mut queued = 0;
    for run in runs {
        let report = run.await.unwrap();
        assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
        // Each of the last six waited at least for a first run (30 ms) to end.
        queued += usize::from(report.queued_ms >= 20.0);
    }
    assert_eq!(slow.peak.load(Ordering::SeqCst), 2, "two runs at once, never more");
    assert_eq!(queued, 6, "six of eight runs waited for a turn");

    let sub = json!({"name": "each", "inputs": {"item": {"type": "integer"}}, "nodes": {"slow": {"type": "Slow"}}, "outputs": {}});
    let mut b = WorkflowBuilder::new("map");
    b.input("items", "array");
    b.add_node("each", "Map", json!({"workflow": sub, "concurrency": 3}));
    b.connect("input", "items", "each", "items");
    let workflow = b.build(&registry).unwrap();
    let alone = Runtime::with_options(
        registry.clone(),
        RunOptions {
            max_concurrent_runs: 1,
            ..RunOptions::default()
        },
    );
    let report = alone.run(&workflow, &fx.ctx, json!({"items": [1, 2, 3, 4]})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
}

#[tokio::test]
async fn bad_run_inputs_are_rejected_before_any_node_runs() {
    let fx = Fixture::new("rt_inputs").await;
    let mut b = WorkflowBuilder::new("typed");
    b.input("id", "integer");
    b.add_node("read", "ProductReadNode", json!({}));
    b.connect("input", "id", "read", "id");
    let workflow = b.build(&registry()).unwrap();
    let runtime = Runtime::new(registry());
    let report = runtime.run(&workflow, &fx.ctx, json!({"id": "seven", "extra": 1})).await;
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.clone().unwrap();
    assert!(
        error.contains("unknown input 'extra'") && error.contains("input 'id' must be integer, got a string"),
        "{error}"
    );
    assert_eq!(report.node("read").unwrap().attempts, 0);
    let report = runtime.run(&workflow, &fx.ctx, json!({})).await;
    assert!(report.error.unwrap().contains("input 'id' (integer) is required"));
}

/// With the graph server stopped, Graph nodes fail; after `breaker_threshold` transient
/// failures the breaker opens and runs fail at once naming the store; once the server is back
/// and the cooldown is over, one probe goes through and closes it again.
#[tokio::test]
async fn the_circuit_breaker_opens_on_a_dead_store_and_recovers() {
    let fx = Fixture::with_projections("rt_breaker").await;
    let category = dataflow_core::Node::run(
        &dataflow_models::CategoryCreateNode,
        &fx.ctx,
        dataflow_core::nodes::create::CreateInput {
            record: serde_json::from_value(
                json!({"slug": "breaker", "name": "Breaker", "description": "", "parent_id": null, "active": true}),
            )
            .unwrap(),
        },
    )
    .await
    .unwrap()
    .record
    .id();
    let mut b = WorkflowBuilder::new("traverse");
    b.add_node(
        "around",
        "CategoryGraphNode",
        json!({"op": "neighbors", "id": category, "direction": "both"}),
    );
    b.retry(
        "around",
        RetryPolicy {
            attempts: 1,
            backoff_ms: 1,
            max_backoff_ms: 1,
        },
    );
    let workflow = b.build(&registry()).unwrap();
    let runtime = Runtime::with_options(
        registry(),
        RunOptions {
            breaker_threshold: 2,
            breaker_cooldown: Duration::from_millis(300),
            ..RunOptions::default()
        },
    );
    assert_eq!(runtime.run(&workflow, &fx.ctx, json!({})).await.status, RunStatus::Succeeded);

    let stopped = dataflow_tests::Services::global()
        .await
        .stop(dataflow_tests::ServiceKind::Bolt)
        .await;
    for _ in 0..2 {
        let report = runtime.run(&workflow, &fx.ctx, json!({})).await;
        let error = report.node("around").unwrap().error.clone().unwrap();
        assert!(error.contains("graph store"), "{error}");
        assert!(!error.contains("circuit breaker"), "{error}");
    }
    assert!(runtime.breaker_open(dataflow_core::StoreKind::Graph));
    let report = runtime.run(&workflow, &fx.ctx, json!({})).await;
    let error = report.node("around").unwrap().error.clone().unwrap();
    assert_eq!(error, "graph store unavailable: circuit breaker open after repeated failures");

    stopped.start().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut recovered = false;
    for _ in 0..20 {
        // The first probe after the cooldown may still meet a server that is warming up.
        let report = runtime.run(&workflow, &fx.ctx, json!({})).await;
        if report.status == RunStatus::Succeeded {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(recovered, "the breaker closes once the server answers");
    assert!(!runtime.breaker_open(dataflow_core::StoreKind::Graph));
}
