//! Fuzz target: node input decoding, for every fixed node of `dataflow_workflows::registry()`
//! (the 117 model nodes and the workflow crate's own), along both paths an input takes: a
//! workflow's static `params` checked when the workflow is built (`Workflow::build`), and the
//! JSON input decoded and validated when the node runs (`DynNode::run`, on the embedded
//! SQLite stores of a fixture, with a small linked world of rows to hit).
//!
//! Inputs: arbitrary JSON; JSON generated from each node's input schema (records of the
//! model's field types, filters over its fields, ids of real rows, relation and field names,
//! hostile strings); and such inputs twisted once: an unknown key added, a required key
//! removed, a key given a value of the wrong JSON type, a value nested deep. The seed corpus
//! in `tests/fuzz/corpus/inputs` holds `{"node": ..., "input": ...}` files.
//!
//! Properties: no panic and an answer within the per-case limit; a refusal comes with a
//! message and, for bad input, before any store is touched (a duplicate value of a unique
//! field, which only the database can see, is counted instead); an input with an unknown, a
//! missing or a mistyped key never runs, and building a workflow with it as params reports a
//! problem pointing at exactly that key.
//!
//! Short form: part of `cargo test`. Long form:
//! `DATAFLOW_FUZZ_SECONDS=600 cargo test --release -p dataflow-tests --test fuzz_inputs`.
//! Failing seeds are kept in `tests/proptest-regressions/fuzz_inputs.txt` and replayed first.

#[path = "../fuzz/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use common::{CASE_LIMIT, Target, corpus, deep_value, fuzz, hostile_string, in_time, json, json_number, panic_text};
use dataflow_core::{FieldType, ModelMeta, Op};
use dataflow_runtime::path::Segment;
use dataflow_runtime::schema::{SchemaView, Ty};
use dataflow_runtime::{NodeEnv, NodeFailure, NodeRef, Registry, Runtime, Workflow, WorkflowBuilder};
use dataflow_tests::fixture::{Backend, Fixture};
use dataflow_tests::world::{TENANT, World};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::Union;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};

const TARGET: Target = Target {
    name: "fuzz_inputs",
    regressions: concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/fuzz_inputs.txt"),
    short_cases: 1_500,
};

static REGISTRY: LazyLock<Registry> = LazyLock::new(dataflow_workflows::registry);

/// One node type under test.
struct NodeType {
    name: String,
    node: NodeRef,
    schema: Value,
    /// The model of a generated node.
    model: Option<&'static ModelMeta>,
}

static NODES: LazyLock<Vec<NodeType>> = LazyLock::new(|| {
    let models = dataflow_models::all_models();
    let nodes: Vec<NodeType> = REGISTRY
        .names()
        .filter_map(|name| {
            let node = REGISTRY.fixed(name)?;
            let model = node.info().model.and_then(|m| models.iter().copied().find(|meta| meta.name == m));
            Some(NodeType {
                name: name.to_string(),
                schema: node.input_schema().clone(),
                node,
                model,
            })
        })
        .collect();
    assert_eq!(nodes.iter().filter(|n| n.model.is_some()).count(), 117, "the 117 model nodes");
    nodes
});

/// The stores every case runs on, with two linked rows of every model, and the runtime
/// nodes run under. Built once per test process; cases run one at a time.
struct Stage {
    tokio: tokio::runtime::Runtime,
    fixture: Fixture,
    runtime: Arc<Runtime>,
}

static STAGE: LazyLock<Stage> = LazyLock::new(|| {
    // Multi-threaded, so a node that never yields cannot stop the time limit from firing.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let fixture = tokio.block_on(async {
        let fixture = Fixture::on(Backend::Embedded, "fuzz_inputs").await;
        World::create(&fixture).await;
        fixture
    });
    Stage {
        tokio,
        fixture,
        runtime: Arc::new(Runtime::new(dataflow_workflows::registry())),
    }
});

// ---------------------------------------------------------------------------------------------
// Inputs from schemas

/// What the generator knows beside the schema: the schema's root and the node's model.
#[derive(Clone, Copy)]
struct Scope {
    root: &'static Value,
    model: Option<&'static ModelMeta>,
}

fn deref(root: &'static Value, schema: &'static Value) -> &'static Value {
    let mut current = schema;
    for _ in 0..16 {
        match current.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => match root.pointer(pointer) {
                Some(target) => current = target,
                None => break,
            },
            None => break,
        }
    }
    current
}

/// Integers: mostly ids of the world's rows (the world's first rows are low ids), some edge
/// cases.
fn integer(schema: &Value) -> BoxedStrategy<Value> {
    let unsigned = schema.get("minimum").is_some() || schema.get("format").and_then(Value::as_str).is_some_and(|f| f.starts_with('u'));
    let low = if unsigned { 0i64 } else { -2 };
    prop_oneof![
        6 => (low..12).prop_map(Value::from),
        1 => (low..100_000).prop_map(Value::from),
        1 => json_number(),
    ]
    .boxed()
}

/// Names the schema's strings are often about: the model's fields and relations, model names.
fn name_like(model: Option<&'static ModelMeta>) -> BoxedStrategy<Value> {
    let mut names: Vec<String> = vec!["Product".into(), "Category".into(), "link".into(), "neighbors".into()];
    if let Some(meta) = model {
        names.extend(meta.fields.iter().map(|f| f.name.to_string()));
        names.extend(meta.fields.iter().map(|f| format!("-{}", f.name)));
        names.extend(meta.relations.iter().map(|r| r.name.to_string()));
        names.extend(meta.relations.iter().map(|r| r.target.to_string()));
    }
    prop_oneof![3 => prop::sample::select(names).prop_map(Value::String), 2 => hostile_string().prop_map(Value::String)].boxed()
}

/// A value of a model field's type, or sometimes not.
fn field_value(ty: FieldType) -> BoxedStrategy<Value> {
    let own = match ty {
        FieldType::Integer => (0i64..12).prop_map(Value::from).boxed(),
        FieldType::Float => (-10f64..10_000.0).prop_map(Value::from).boxed(),
        FieldType::Boolean => any::<bool>().prop_map(Value::Bool).boxed(),
        FieldType::Text => prop_oneof![3 => "[A-Z]{2}|[a-z0-9-]{1,12}|SUP-[0-9]{5}|EUR", 2 => hostile_string()]
            .prop_map(Value::String)
            .boxed(),
        FieldType::Timestamp => prop::sample::select(vec!["2024-05-01T12:00:00Z", "2031-01-01T00:00:00+01:00", "2024-02-30T00:00:00Z"])
            .prop_map(Value::from)
            .boxed(),
        FieldType::Json => json(hostile_string(), 2),
    };
    prop_oneof![6 => own, 1 => Just(Value::Null), 1 => json(hostile_string(), 1)].boxed()
}

/// A filter over the model's fields.
fn filter(model: Option<&'static ModelMeta>) -> BoxedStrategy<Value> {
    let Some(meta) = model else {
        return json(hostile_string(), 2);
    };
    // Every operator, and one that does not exist.
    let mut ops = Op::ALL.map(Op::name).to_vec();
    ops.push("$bogus");
    let condition = prop::sample::select(meta.fields.iter().collect::<Vec<_>>()).prop_flat_map(move |f| {
        let operand = prop_oneof![
            3 => field_value(f.ty),
            1 => prop::collection::vec(field_value(f.ty), 0..3).prop_map(Value::Array),
        ];
        let condition = prop_oneof![
            2 => field_value(f.ty),
            3 => (prop::sample::select(ops.clone()), operand).prop_map(|(op, v)| json!({ op: v })),
        ];
        (Just(f.name.to_string()), condition)
    });
    let leaf = prop::collection::vec(condition, 0..3).prop_map(|c| Value::Object(c.into_iter().collect::<Map<_, _>>()));
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|items| json!({"$or": items})),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|items| json!({"$and": items})),
            inner.prop_map(|f| json!({"$not": f})),
        ]
    })
    .boxed()
}

/// A record of the model: its fields (all but the primary key) with values of their types,
/// optional ones now and then left out; with `all_optional` (a patch) any of them may be.
fn record(model: Option<&'static ModelMeta>, all_optional: bool) -> BoxedStrategy<Value> {
    let Some(meta) = model else {
        return json(hostile_string(), 2);
    };
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = meta
        .fields
        .iter()
        .filter(|f| !f.primary_key)
        .map(|f| {
            let value = field_value(f.ty).prop_map(move |v| (f.name.to_string(), v));
            if f.nullable || all_optional {
                prop::option::of(value).boxed()
            } else {
                prop::option::weighted(0.95, value).boxed()
            }
        })
        .collect();
    fields
        .prop_map(|fields| Value::Object(fields.into_iter().flatten().collect()))
        .boxed()
}

/// A value the schema describes, or close to it. `key` is the property the schema is for.
fn from_schema(scope: Scope, schema: &'static Value, key: Option<&str>, depth: u32) -> BoxedStrategy<Value> {
    let schema = deref(scope.root, schema);
    let Value::Object(map) = schema else {
        return json(hostile_string(), 2);
    };
    // Positions whose meaning the schema leaves open.
    match key {
        Some("filter") => return prop_oneof![4 => filter(scope.model), 1 => Just(Value::Null)].boxed(),
        Some("patch") => return record(scope.model, true),
        Some("rows") => {
            let row = (record(scope.model, false), prop::option::weighted(0.3, 0i64..12)).prop_map(|(mut row, id)| {
                if let (Value::Object(map), Some(id)) = (&mut row, id) {
                    map.insert("id".into(), Value::from(id));
                }
                row
            });
            return prop::collection::vec(row, 0..4).prop_map(Value::Array).boxed();
        }
        Some("record") if scope.model.is_some() => return record(scope.model, false),
        _ => {}
    }
    if depth == 0 {
        return json(hostile_string(), 1);
    }
    if let Some(c) = map.get("const") {
        return Just(c.clone()).boxed();
    }
    if let Some(Value::Array(values)) = map.get("enum") {
        return prop::sample::select(values.clone()).boxed();
    }
    for alternatives in ["oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = map.get(alternatives) {
            let options: Vec<BoxedStrategy<Value>> = branches.iter().map(|b| from_schema(scope, b, key, depth)).collect();
            return Union::new(options).boxed();
        }
    }
    let types: Vec<&str> = match map.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return json(hostile_string(), 2),
    };
    let options: Vec<BoxedStrategy<Value>> = types
        .into_iter()
        .map(|t| match t {
            "null" => Just(Value::Null).boxed(),
            "boolean" => any::<bool>().prop_map(Value::Bool).boxed(),
            "integer" => integer(schema),
            "number" => prop_oneof![(-1.0f64..1.0).prop_map(Value::from), json_number()].boxed(),
            "string" => name_like(scope.model),
            "array" => {
                let item = match map.get("items") {
                    Some(items) if items.is_object() => from_schema(scope, items, key, depth - 1),
                    _ => json(hostile_string(), 1),
                };
                prop::collection::vec(item, 0..4).prop_map(Value::Array).boxed()
            }
            "object" => object(scope, map, depth),
            _ => json(hostile_string(), 1),
        })
        .collect();
    Union::new(options).boxed()
}

/// An object with every required property and some of the others.
fn object(scope: Scope, map: &'static Map<String, Value>, depth: u32) -> BoxedStrategy<Value> {
    let required: Vec<&str> = map
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(Value::Object(properties)) = map.get("properties") else {
        return json(hostile_string(), 2);
    };
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = properties
        .iter()
        .map(|(name, schema)| {
            let value = from_schema(scope, schema, Some(name), depth - 1);
            let name = name.clone();
            if required.contains(&name.as_str()) {
                value.prop_map(move |v| Some((name.clone(), v))).boxed()
            } else {
                prop::option::of(value).prop_map(move |v| v.map(|v| (name.clone(), v))).boxed()
            }
        })
        .collect();
    fields
        .prop_map(|fields| Value::Object(fields.into_iter().flatten().collect()))
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Cases

/// One change made to a generated input, with what it must cause.
#[derive(Debug, Clone)]
enum Twist {
    None,
    /// A key the node does not have, at the top level.
    Unknown(String),
    /// A required key removed.
    Missing(Index),
    /// A key given a value of a JSON type its schema does not allow.
    WrongType(Index, Index),
    /// A key's value wrapped `levels` deep.
    Deep(Index, usize),
}

#[derive(Debug, Clone)]
struct Case {
    node: usize,
    input: Value,
    twist: Twist,
}

fn cases() -> BoxedStrategy<Case> {
    let per_node: Vec<BoxedStrategy<Case>> = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let scope = Scope {
                root: &n.schema,
                model: n.model,
            };
            let twist = prop_oneof![
                4 => Just(Twist::None),
                1 => hostile_string().prop_map(Twist::Unknown),
                1 => any::<Index>().prop_map(Twist::Missing),
                1 => (any::<Index>(), any::<Index>()).prop_map(|(k, v)| Twist::WrongType(k, v)),
                // Deeper than JSON text can bring (128 levels) is out of reach of any input.
                1 => (any::<Index>(), 1usize..150).prop_map(|(k, d)| Twist::Deep(k, d)),
            ];
            let input = prop_oneof![
                6 => from_schema(scope, &n.schema, None, 6),
                1 => json(prop_oneof![3 => prop::sample::select(SchemaView::new(&n.schema).properties()).boxed(), 1 => hostile_string()].boxed(), 3),
            ];
            (input, twist).prop_map(move |(input, twist)| Case { node: i, input, twist }).boxed()
        })
        .collect();
    Union::new(per_node).boxed()
}

/// Values of each JSON type, for [`Twist::WrongType`].
fn typed_samples() -> [(&'static str, Value); 6] {
    [
        ("string", json!("x")),
        ("integer", json!(7)),
        ("number", json!(2.5)),
        ("boolean", json!(true)),
        ("array", json!([])),
        ("object", json!({})),
    ]
}

/// What a twist was applied to, for the checks.
#[derive(Debug, Clone)]
enum Applied {
    Nothing,
    Unknown(String),
    Missing(String),
    WrongType(String),
}

fn apply(node: &NodeType, input: &mut Value, twist: &Twist) -> Applied {
    let view = SchemaView::new(&node.schema);
    let Value::Object(map) = input else { return Applied::Nothing };
    match twist {
        Twist::None => Applied::Nothing,
        Twist::Unknown(key) => {
            if view.properties().contains(key) || key.starts_with('$') {
                return Applied::Nothing;
            }
            map.insert(key.clone(), json!(1));
            Applied::Unknown(key.clone())
        }
        Twist::Missing(i) => {
            let required: Vec<String> = view.required().into_iter().collect();
            if required.is_empty() {
                return Applied::Nothing;
            }
            let key = i.get(&required).clone();
            map.remove(&key);
            Applied::Missing(key)
        }
        Twist::WrongType(k, v) => {
            let keys: Vec<String> = view.properties();
            if keys.is_empty() {
                return Applied::Nothing;
            }
            let key = k.get(&keys).clone();
            let Ok(Ty::Of(allowed)) = view.resolve(&[Segment::Key(key.clone())]) else {
                return Applied::Nothing;
            };
            let wrong: Vec<Value> = typed_samples()
                .into_iter()
                .filter(|(t, _)| !Ty::one(t).fits(&Ty::Of(allowed.clone())))
                .map(|(_, value)| value)
                .collect();
            if wrong.is_empty() {
                return Applied::Nothing;
            }
            map.insert(key.clone(), v.get(&wrong).clone());
            Applied::WrongType(key)
        }
        Twist::Deep(k, levels) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            if keys.is_empty() {
                return Applied::Nothing;
            }
            let slot = map.get_mut(k.get(&keys)).expect("a key of the map");
            let inner = std::mem::take(slot);
            *slot = deep_value(*levels, None, inner);
            Applied::Nothing
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// Refusals of bad input that do not say which field, by node kind; printed at the end.
static UNNAMED: LazyLock<Mutex<BTreeMap<String, (usize, String)>>> = LazyLock::new(Mutex::default);
static REFUSED: AtomicUsize = AtomicUsize::new(0);
static DUPLICATES: AtomicUsize = AtomicUsize::new(0);

/// Whether a store error is a unique constraint refusing a duplicate (SQLite's and
/// PostgreSQL's wording).
fn unique_violation(message: &str) -> bool {
    message.contains("UNIQUE constraint failed") || message.contains("duplicate key value violates unique constraint")
}
static ACCEPTED: AtomicUsize = AtomicUsize::new(0);

/// The build path: a one-node workflow with the input as its params. A twisted key must be
/// reported at its own pointer.
fn check_build(node: &NodeType, input: &Value, applied: &Applied) -> Result<(), TestCaseError> {
    let mut builder = WorkflowBuilder::new("fuzz");
    builder.add_node("n", node.name.clone(), input.clone());
    let (built, shown) = {
        let result = builder.build(&REGISTRY);
        let shown = result.as_ref().err().map(ToString::to_string).unwrap_or_default();
        (result.map(|_: Workflow| ()), shown)
    };
    let at = |key: &str| format!("/nodes/n/params/{}", key.replace('~', "~0").replace('/', "~1"));
    match (applied, built) {
        (Applied::Nothing, _) => Ok(()),
        (_, Ok(())) => Err(fail(format!("{}: {applied:?}, yet the workflow builds", node.name))),
        (Applied::Unknown(key) | Applied::WrongType(key), Err(problems)) => {
            if problems.iter().any(|p| p.pointer == at(key)) {
                Ok(())
            } else {
                Err(fail(format!("{}: {applied:?} is not reported at {}: {shown}", node.name, at(key))))
            }
        }
        (Applied::Missing(key), Err(problems)) => {
            if problems.iter().any(|p| p.message.contains(&format!("needs input '{key}'"))) {
                Ok(())
            } else {
                Err(fail(format!("{}: the missing input '{key}' is not reported: {shown}", node.name)))
            }
        }
    }
}

/// Whether the refusal of an input that did not decode names the field: a decoding error below
/// the top level gives its path (`bad input at record.price: ...`); at the top level serde's
/// unknown, missing and duplicate field errors name it, and the filter parser's errors give
/// their path (`$.price.$gt: ...`).
fn names_a_field(message: &str) -> bool {
    const NAMING: [&str; 4] = ["unknown field `", "missing field `", "duplicate field `", "unknown variant `"];
    let Some(serde) = message.strip_prefix("bad input: ") else {
        // The node's own validation: `field 'x': ...`, `invalid limit: ...`, a missing row.
        return true;
    };
    serde.starts_with('$') || NAMING.iter().any(|named| serde.contains(named))
}

/// The run path: the node decodes and validates the input, on the embedded stores.
fn check_run(index: usize, input: Value, applied: &Applied) -> Result<(), TestCaseError> {
    let node = &NODES[index];
    let stage = &*STAGE;
    let ctx = stage.fixture.tenant(TENANT);
    let is_object = input.is_object();
    let (dyn_node, runtime) = (node.node.clone(), stage.runtime.clone());
    let outcome = stage.tokio.block_on(async move {
        let task = tokio::spawn(async move {
            let env = NodeEnv {
                ctx: &ctx,
                runtime: &runtime,
            };
            dyn_node.run(&env, input).await
        });
        tokio::time::timeout(CASE_LIMIT, task).await
    });
    let result = match outcome {
        Err(_) => return Err(fail(format!("{}: no answer within {CASE_LIMIT:?}", node.name))),
        Ok(Err(join)) if join.is_panic() => {
            return Err(fail(format!("{}: panicked: {}", node.name, panic_text(join.into_panic().as_ref()))));
        }
        Ok(Err(join)) => return Err(fail(format!("{}: the task failed: {join}", node.name))),
        Ok(Ok(result)) => result,
    };
    match result {
        Ok(output) => {
            ACCEPTED.fetch_add(1, Ordering::Relaxed);
            if !matches!(applied, Applied::Nothing) {
                return Err(fail(format!("{}: {applied:?}, yet the node ran and gave {output}", node.name)));
            }
            if !output.is_object() {
                return Err(fail(format!("{}: the output is not an object: {output}", node.name)));
            }
            Ok(())
        }
        Err(failure) => {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            let message = failure.to_string();
            if message.trim().is_empty() {
                return Err(fail(format!("{}: refused without a message", node.name)));
            }
            match &failure {
                // A value a unique field already holds in another row is only found out by the
                // database; anything else that fails in a store is a check the node lacks.
                NodeFailure::Failed { store: Some(_), .. } if unique_violation(&message) => {
                    DUPLICATES.fetch_add(1, Ordering::Relaxed);
                }
                NodeFailure::Failed { store: Some(store), .. } => {
                    return Err(fail(format!(
                        "{}: the input reached the {store} and failed there: {message}",
                        node.name
                    )));
                }
                NodeFailure::Timeout(_) | NodeFailure::CircuitOpen(_) => return Err(fail(format!("{}: {message}", node.name))),
                NodeFailure::BadInput { .. } | NodeFailure::Failed { store: None, .. } => {}
            }
            // Only object inputs: for any other, the whole input is what is wrong.
            if is_object && !names_a_field(&message) {
                let kind = node.node.info().kind.map_or_else(|| node.name.clone(), |k| format!("{k:?}"));
                let mut unnamed = UNNAMED.lock().unwrap_or_else(|e| e.into_inner());
                let entry = unnamed.entry(kind).or_insert((0, message.clone()));
                entry.0 += 1;
            }
            Ok(())
        }
    }
}

fn check(case: Case) -> Result<(), TestCaseError> {
    let index = case.node;
    let mut input = case.input;
    let applied = apply(&NODES[index], &mut input, &case.twist);
    let (build_input, build_applied) = (input.clone(), applied.clone());
    in_time(move || check_build(&NODES[index], &build_input, &build_applied))??;
    check_run(index, input, &applied)
}

fn report() {
    let unnamed = UNNAMED.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "fuzz_inputs: {} inputs ran, {} were refused ({} by a unique constraint in the store); refusals that name no field, by node kind:",
        ACCEPTED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
        DUPLICATES.load(Ordering::Relaxed)
    );
    for (kind, (count, example)) in unnamed.iter() {
        eprintln!("  {kind:12} {count:6}  e.g. {example:.160}");
    }
}

#[test]
fn fuzz_node_inputs() {
    LazyLock::force(&STAGE);
    fuzz(&TARGET, cases(), check);
    report();
}

/// The seed corpus: `{"node": "ProductListNode", "input": {...}}` per file.
#[test]
fn seed_corpus() {
    LazyLock::force(&STAGE);
    for (name, bytes) in corpus("inputs") {
        let case: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let node = case["node"].as_str().unwrap_or_else(|| panic!("{name}: no node"));
        let index = NODES
            .iter()
            .position(|n| n.name == node)
            .unwrap_or_else(|| panic!("{name}: unknown node {node}"));
        check_run(index, case["input"].clone(), &Applied::Nothing).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Every model node refuses an input that is not an object, a key it does not have and a
/// missing required key, at build time with a pointer and at run time with the key's name.
#[test]
fn every_model_node_names_unknown_and_missing_keys() {
    LazyLock::force(&STAGE);
    for (index, node) in NODES.iter().enumerate().filter(|(_, n)| n.model.is_some()) {
        for input in [json!([1]), json!("x"), json!(7)] {
            check_run(index, input, &Applied::Nothing).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut input = json!({});
        let applied = apply(node, &mut input, &Twist::Unknown("qeury".into()));
        check_build(node, &input, &applied).unwrap_or_else(|e| panic!("{e}"));
        let required = SchemaView::new(&node.schema).required();
        // Without its required keys, the first one missing is what decoding reports.
        let message = run_message(index, input);
        let named = message.contains("qeury") || required.iter().any(|r| message.contains(&format!("missing field `{r}`")));
        assert!(named, "{}: {message}", node.name);
        for key in &required {
            let mut input = json!({});
            if let Some((_, value)) = typed_samples().into_iter().next() {
                for other in required.iter().filter(|r| *r != key) {
                    input[other] = value.clone();
                }
            }
            let message = run_message(index, input);
            assert!(names_a_field(&message), "{} without {key}: {message}", node.name);
        }
    }
}

/// The message of a run that must fail.
fn run_message(index: usize, input: Value) -> String {
    let stage = &*STAGE;
    let ctx = stage.fixture.tenant(TENANT);
    let env = NodeEnv {
        ctx: &ctx,
        runtime: &stage.runtime,
    };
    let run = stage
        .tokio
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), NODES[index].node.run(&env, input)).await });
    match run {
        Ok(Err(failure)) => failure.to_string(),
        other => panic!("{}: expected a refusal, got {other:?}", NODES[index].name),
    }
}
