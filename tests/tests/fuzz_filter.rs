//! Fuzz target: the JSON filter language (`Filter::from_json`) and its translation to SQL
//! (`Filter::write_sql`) against every shipped model, plus sort keys and keyset cursors, the
//! other untrusted part of a List node's input.
//!
//! Inputs: arbitrary JSON, filter-shaped JSON (real and near-miss field names, the operators
//! and misspelt ones, values of every type), `$and`/`$or`/`$not` chains up to 20,000 levels
//! deep, and the seed corpus in `tests/fuzz/corpus/filter` (one JSON filter per file).
//! Properties: nothing panics or overflows the stack; a parsed filter survives `to_json` and
//! back unchanged; on every model, a filter is accepted exactly when each of its comparisons
//! is, a comparison on a name that is not a field of the model is always rejected, and every
//! rejection names the field and the operator.
//!
//! Short form: part of `cargo test`. Long form:
//! `DATAFLOW_FUZZ_SECONDS=600 cargo test --release -p dataflow-tests --test fuzz_filter`.
//! Failing seeds are kept in `tests/proptest-regressions/fuzz_filter.txt` and replayed first.

#[path = "../fuzz/common.rs"]
mod common;

use std::sync::LazyLock;

use common::{Target, corpus, deep_value, drop_deep, fuzz, hostile_string, in_time, json, json_number};
use dataflow_core::filter::{CheckedSort, MAX_FILTER_DEPTH};
use dataflow_core::sea_orm::DbBackend;
use dataflow_core::values::printable;
use dataflow_core::{FieldMeta, FieldType, Filter, ModelMeta, Op, SortKey};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};

const TARGET: Target = Target {
    name: "fuzz_filter",
    regressions: concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/fuzz_filter.txt"),
    short_cases: 1_500,
};

/// Longest message a single rejected comparison may have: it names the field, the operator
/// and what is wrong, and must not echo a long input back.
const MAX_MESSAGE_BYTES: usize = 4_096;

static MODELS: LazyLock<Vec<&'static ModelMeta>> = LazyLock::new(dataflow_models::all_models);

/// Every field name of every model, and the columns a table has beside its fields, which a
/// filter must never reach.
static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut names: Vec<String> = MODELS.iter().flat_map(|m| m.fields.iter().map(|f| f.name.to_string())).collect();
    names.extend(["tenant_id", "deleted_at", "version", "created_at", "updated_at"].map(str::to_string));
    names.sort();
    names.dedup();
    names
});

/// A field name: mostly one of `model`'s (when given) or of any model, sometimes misspelt,
/// differently cased, or hostile.
fn field_name(model: Option<&'static ModelMeta>) -> BoxedStrategy<String> {
    let real = prop::sample::select(NAMES.clone());
    let own = match model {
        Some(meta) => prop::sample::select(meta.field_names()).prop_map(str::to_string).boxed(),
        None => real.clone().boxed(),
    };
    prop_oneof![
        8 => own,
        4 => real.clone(),
        1 => (real.clone(), any::<prop::sample::Index>()).prop_map(|(name, at)| {
            let mut chars: Vec<char> = name.chars().collect();
            chars.remove(at.index(chars.len()));
            chars.into_iter().collect()
        }),
        1 => real.prop_map(|name| name.to_uppercase()),
        2 => hostile_string(),
    ]
    .boxed()
}

/// An operator name: mostly real, sometimes not.
fn op_name() -> BoxedStrategy<String> {
    prop_oneof![
        20 => prop::sample::select(Op::ALL.map(Op::name).to_vec()).prop_map(str::to_string),
        1 => prop::sample::select(vec!["$EQ", "$regex", "$where", "$", "eq", "$in ", "$and", "$not", "$exists"]).prop_map(str::to_string),
        1 => hostile_string(),
    ]
    .boxed()
}

/// An operand: any scalar, timestamps good and bad, short lists, and rarely a list longer than
/// `$in` accepts.
fn operand() -> BoxedStrategy<Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        hostile_string().prop_map(Value::String),
        prop::sample::select(vec![
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00.123456+02:00",
            "2024-13-01T00:00:00Z",
            "2024-05-01",
            "yesterday",
        ])
        .prop_map(Value::from),
    ];
    prop_oneof![
        8 => scalar.clone(),
        3 => prop::collection::vec(scalar, 0..8).prop_map(Value::Array),
        1 => json(hostile_string(), 3),
        1 => Just(Value::Array(vec![Value::from(1); 10_001])),
    ]
    .boxed()
}

/// A value of a field's type, or now and then one that only looks like it.
fn typed_value(ty: FieldType) -> BoxedStrategy<Value> {
    let own = match ty {
        FieldType::Integer => prop_oneof![(-5i64..1_000).prop_map(Value::from), json_number()].boxed(),
        FieldType::Float => prop_oneof![(-1e6f64..1e6).prop_map(Value::from), json_number()].boxed(),
        FieldType::Boolean => any::<bool>().prop_map(Value::Bool).boxed(),
        FieldType::Text => hostile_string().prop_map(Value::String).boxed(),
        FieldType::Timestamp => prop::sample::select(vec![
            "2024-05-01T12:00:00Z",
            "1970-01-01T00:00:00.000001+14:00",
            "2024-02-30T00:00:00Z",
        ])
        .prop_map(Value::from)
        .boxed(),
        FieldType::Json => json(hostile_string(), 2),
    };
    prop_oneof![8 => own, 1 => operand()].boxed()
}

/// A condition on one of `meta`'s fields with operators and values that mostly fit its type.
fn typed_condition(meta: &'static ModelMeta) -> BoxedStrategy<(String, Value)> {
    prop::sample::select(meta.fields.iter().collect::<Vec<&'static FieldMeta>>())
        .prop_flat_map(|field| {
            let op_and_operand = prop::sample::select(Op::ALL.map(Op::name).to_vec()).prop_flat_map(move |op| {
                let operand = match op {
                    "$in" | "$nin" => prop::collection::vec(typed_value(field.ty), 0..5).prop_map(Value::Array).boxed(),
                    "$is_null" => any::<bool>().prop_map(Value::Bool).boxed(),
                    _ => typed_value(field.ty),
                };
                (Just(op.to_string()), operand)
            });
            let condition = prop_oneof![
                3 => typed_value(field.ty),
                1 => Just(Value::Null),
                4 => prop::collection::vec(op_and_operand, 1..3).prop_map(|ops| Value::Object(ops.into_iter().collect())),
            ];
            (Just(field.name.to_string()), condition)
        })
        .boxed()
}

/// JSON shaped like a filter over mostly `model`'s fields, `depth` combinator levels at most.
fn filter_json(model: Option<&'static ModelMeta>, depth: u32) -> BoxedStrategy<Value> {
    let untyped = (
        field_name(model),
        prop_oneof![
            3 => operand(),
            5 => prop::collection::vec((op_name(), operand()), 0..3)
                .prop_map(|ops| Value::Object(ops.into_iter().collect::<Map<_, _>>())),
        ],
    );
    let condition = match model {
        Some(meta) => prop_oneof![4 => typed_condition(meta), 1 => untyped].boxed(),
        None => untyped.boxed(),
    };
    let leaf = prop::collection::vec(condition, 0..4).prop_map(|c| Value::Object(c.into_iter().collect()));
    leaf.prop_recursive(depth, 64, 4, |inner| {
        let combinator = prop_oneof![
            10 => Just("$and".to_string()),
            10 => Just("$or".to_string()),
            10 => Just("$not".to_string()),
            1 => "\\$[a-z]{1,4}".boxed()
        ];
        (combinator, prop::collection::vec(inner.clone(), 0..4), any::<bool>(), inner).prop_map(|(op, items, single, sibling)| {
            let body = if op == "$not" && single {
                items.into_iter().next().unwrap_or(json!({}))
            } else {
                Value::Array(items)
            };
            // Sometimes beside other conditions, so the object holds an implicit `$and`.
            let mut object = match sibling {
                Value::Object(map) if !single => map,
                _ => Map::new(),
            };
            object.insert(op, body);
            Value::Object(object)
        })
    })
    .boxed()
}

/// How a very deep filter is nested.
#[derive(Debug, Clone, Copy)]
enum Chain {
    Not,
    And,
    Or,
    /// `{"$not": ..., "price": 1}`: two conditions per level.
    NotBesideField,
}

#[derive(Debug, Clone)]
enum Case {
    /// JSON handed to `Filter::from_json`.
    Json(Value),
    /// A chain of `depth` combinators, built in the test (values that deep cannot be dropped
    /// recursively, and proptest would).
    Deep(Chain, usize),
    /// Sort keys as JSON and a cursor, for `CheckedSort`.
    Sort {
        keys: Value,
        values: Vec<Value>,
        cursor: Option<String>,
    },
}

fn cases() -> impl Strategy<Value = Case> {
    let chain = prop_oneof![Just(Chain::Not), Just(Chain::And), Just(Chain::Or), Just(Chain::NotBesideField)];
    let depth = prop_oneof![
        4 => (MAX_FILTER_DEPTH / 2 - 2)..(MAX_FILTER_DEPTH + 3),
        // Far past the limit, and deep enough that a parser recursing all the way down would
        // overflow a 2 MiB stack.
        1 => 0usize..20_000,
    ];
    let sort_key = prop_oneof![
        field_name(None).prop_map(Value::String),
        field_name(None).prop_map(|f| Value::String(format!("-{f}"))),
        (field_name(None), any::<bool>()).prop_map(|(f, d)| json!({"field": f, "descending": d})),
        json(hostile_string(), 2),
    ];
    let cursor = prop_oneof![
        2 => Just(None),
        1 => hostile_string().prop_map(Some),
        1 => json(hostile_string(), 3).prop_map(|v| Some(base64_url(v.to_string().as_bytes()))),
    ];
    prop_oneof![
        6 => prop::sample::select(MODELS.clone()).prop_flat_map(|meta| filter_json(Some(meta), 4)).prop_map(Case::Json),
        1 => filter_json(None, 4).prop_map(Case::Json),
        2 => json(field_name(None), 4).prop_map(Case::Json),
        1 => (chain, depth).prop_map(|(c, d)| Case::Deep(c, d)),
        2 => (
            prop::collection::vec(sort_key, 0..4).prop_map(Value::Array),
            prop::collection::vec(operand(), 0..4),
            cursor,
        )
            .prop_map(|(keys, values, cursor)| Case::Sort { keys, values, cursor }),
    ]
}

/// URL-safe base64 without padding, the cursor encoding, so forged cursors get past decoding.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Builds a chain `depth` deep without recursion.
fn chain(kind: Chain, depth: usize) -> Value {
    let leaf = json!({"price": {"$gte": 1}});
    match kind {
        Chain::Not => deep_value(depth, Some("$not"), leaf),
        // Built by hand: `json!` serialises interpolated values, recursively.
        Chain::And | Chain::Or => {
            let key = if matches!(kind, Chain::And) { "$and" } else { "$or" };
            let mut value = leaf;
            for _ in 0..depth {
                value = Value::Object(Map::from_iter([(key.to_string(), Value::Array(vec![value]))]));
            }
            value
        }
        Chain::NotBesideField => {
            let mut value = leaf;
            for _ in 0..depth {
                value = Value::Object(Map::from_iter([("$not".to_string(), value), ("price".to_string(), Value::from(1))]));
            }
            value
        }
    }
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// Every comparison of a filter.
fn comparisons(filter: &Filter, out: &mut Vec<Filter>) {
    match filter {
        Filter::And(items) | Filter::Or(items) => items.iter().for_each(|f| comparisons(f, out)),
        Filter::Not(inner) => comparisons(inner, out),
        compare @ Filter::Compare { .. } => out.push(compare.clone()),
    }
}

fn write(filter: &Filter, meta: &'static ModelMeta, backend: DbBackend) -> Result<String, String> {
    filter.sql_condition(meta, backend).map_err(|e| e.to_string())
}

/// The properties of one parsed filter, on every model and both SQL dialects.
fn check_filter(filter: &Filter) -> Result<(), TestCaseError> {
    let back = Filter::from_json(&filter.to_json());
    if back.as_ref() != Ok(filter) {
        return Err(fail(format!("to_json does not parse back to the same filter: {back:?}")));
    }
    let mut leaves = Vec::new();
    comparisons(filter, &mut leaves);
    for meta in MODELS.iter().copied() {
        let prefix = format!("{}: invalid filter: ", meta.name);
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            let whole = write(filter, meta, backend);
            let mut all_ok = true;
            for leaf in &leaves {
                let Filter::Compare { field, op, .. } = leaf else {
                    unreachable!("only comparisons")
                };
                match write(leaf, meta, backend) {
                    Ok(_) if meta.field(field).is_none() => {
                        return Err(fail(format!("{}: the unknown field {field:?} was accepted", meta.name)));
                    }
                    Ok(_) => {}
                    Err(message) => {
                        all_ok = false;
                        let named = format!("field '{}'", printable(field));
                        if !message.contains(&named) {
                            return Err(fail(format!("{}: the rejection does not name {named}: {message}", meta.name)));
                        }
                        if meta.field(field).is_some() && !message.contains(op.name()) {
                            return Err(fail(format!(
                                "{}: the rejection does not name the operator {}: {message}",
                                meta.name,
                                op.name()
                            )));
                        }
                        if message.len() > MAX_MESSAGE_BYTES {
                            return Err(fail(format!("{}: a {}-byte message: {message:.300}", meta.name, message.len())));
                        }
                        let own = message.strip_prefix(&prefix).unwrap_or(&message);
                        if !whole.as_ref().is_err_and(|w| w.contains(own)) {
                            return Err(fail(format!(
                                "{}: the filter's result {whole:?} does not report its comparison's problem: {own}",
                                meta.name
                            )));
                        }
                    }
                }
            }
            if all_ok && whole.is_err() {
                return Err(fail(format!(
                    "{}: every comparison is accepted, the filter is not: {whole:?}",
                    meta.name
                )));
            }
        }
    }
    Ok(())
}

fn check_json(value: &Value) -> Result<(), TestCaseError> {
    match Filter::from_json(value).map_err(|e| e.to_string()) {
        Ok(filter) => check_filter(&filter),
        Err(message) if message.len() > MAX_MESSAGE_BYTES => Err(fail(format!("a {}-byte message: {message:.300}", message.len()))),
        Err(message) if !message.starts_with('$') => Err(fail(format!("the message does not say where: {message}"))),
        Err(_) => Ok(()),
    }
}

fn check_deep(kind: Chain, depth: usize) -> Result<(), TestCaseError> {
    let value = chain(kind, depth);
    let result = Filter::from_json(&value).map_err(|e| e.to_string());
    drop_deep(value);
    // Levels the filter tree has: one per combinator, two per level beside a field.
    let levels = if matches!(kind, Chain::NotBesideField) { 2 * depth } else { depth };
    match result {
        Ok(filter) if levels > MAX_FILTER_DEPTH => Err(fail(format!("{levels} levels were accepted: {filter:?}"))),
        Ok(filter) => check_filter(&filter),
        Err(message) if levels <= MAX_FILTER_DEPTH => Err(fail(format!("{levels} levels were refused: {message}"))),
        Err(message) if !message.contains("nest deeper") => Err(fail(format!("{levels} levels: {message}"))),
        Err(_) => Ok(()),
    }
}

fn check_sort(keys: &Value, values: &[Value], cursor: Option<&str>) -> Result<(), TestCaseError> {
    let Ok(keys) = serde_json::from_value::<Vec<SortKey>>(keys.clone()) else {
        return Ok(());
    };
    for meta in MODELS.iter().copied() {
        let sort = match CheckedSort::check(meta, &keys) {
            Ok(sort) => sort,
            Err(e) => {
                let message = e.to_string();
                if !keys.iter().any(|k| message.contains(&format!("field '{}'", printable(&k.field)))) {
                    return Err(fail(format!(
                        "{}: the sort's rejection names none of its fields: {message}",
                        meta.name
                    )));
                }
                continue;
            }
        };
        if let Some(k) = keys.iter().find(|k| meta.field(&k.field).is_none()) {
            return Err(fail(format!("{}: the unknown sort field {:?} was accepted", meta.name, k.field)));
        }
        let made = sort.cursor_after(values.to_vec());
        for cursor in [Some(made.as_str()), cursor].into_iter().flatten() {
            for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
                if let Err(e) = sort.after_condition(meta, cursor, backend) {
                    let message = e.to_string();
                    if message.len() > MAX_MESSAGE_BYTES {
                        return Err(fail(format!("a {}-byte cursor message: {message:.300}", message.len())));
                    }
                }
            }
        }
    }
    Ok(())
}

fn check(case: Case) -> Result<(), TestCaseError> {
    in_time(move || match case {
        Case::Json(value) => check_json(&value),
        Case::Deep(kind, depth) => check_deep(kind, depth),
        Case::Sort { keys, values, cursor } => check_sort(&keys, &values, cursor.as_deref()),
    })?
}

#[test]
fn fuzz_filters() {
    fuzz(&TARGET, cases(), check);
}

/// The seed corpus: each file one JSON filter, checked like a generated one.
#[test]
fn seed_corpus() {
    for (name, bytes) in corpus("filter") {
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_json(&value).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn operators_and_unknown_fields_are_named() {
    let meta = MODELS.iter().copied().find(|m| m.name == "Product").expect("the Product model");
    let filter = Filter::from_json(&json!({"price": {"$contains": "x"}, "tenant_id": "acme", "sku": {"$in": "A"}})).unwrap();
    let message = write(&filter, meta, DbBackend::Postgres).unwrap_err();
    assert!(message.contains("field 'price': $contains"), "{message}");
    assert!(message.contains("unknown field 'tenant_id'"), "{message}");
    assert!(message.contains("field 'sku': $in"), "{message}");
    assert_eq!(Op::In.name(), "$in");
    check_json(&json!({"$or": [{"price": {"$gt": 1}}, {"$not": {"sku": null}}]})).unwrap();
}
