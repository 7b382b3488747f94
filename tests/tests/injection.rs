//! Hostile strings (`dataflow_tests::hostile`) thrown into every string input and every
//! identifier position of the 117 model nodes, through the JSON interface workflows use, on the
//! servers and on the embedded set, and into every name of a YAML workflow. Each case must be
//! refused with a clear error before any store is touched, or stored and read back byte for
//! byte; no case may change a row other than its target, return a row its filter does not
//! admit, or panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflow_core::{Context, FieldMeta, FieldType, ModelMeta, Op};
use dataflow_runtime::{NodeEnv, NodeFailure, RunStatus, Runtime, yaml};
use dataflow_tests::fixture::{Backend, Fixture};
use dataflow_tests::hostile::{corpus, forged_cursor, label};
use dataflow_tests::on_both_backends;
use dataflow_tests::world::{TENANT, World};
use serde_json::{Map, Value as Json, json};

/// Longest error message accepted as "clear": long enough for every field problem of an input,
/// short enough that no error echoes a 100,000-character input back.
const MAX_MESSAGE_BYTES: usize = 4_096;

/// Every row of every model's table, by table and primary key.
type Snapshot = BTreeMap<&'static str, BTreeMap<i64, Json>>;

/// How one case ended.
enum Outcome {
    /// The node ran; its JSON output.
    Done(Json),
    /// The node refused the input before touching a store; the error message.
    Refused(String),
}

/// Counts of outcomes by position, and one refusal message of each, printed at the end of a
/// test.
#[derive(Default)]
struct Tally(BTreeMap<String, ([usize; 2], Option<String>)>);

impl Tally {
    fn add(&mut self, position: &str, outcome: &Outcome) {
        let (counts, example) = self.0.entry(position.to_owned()).or_default();
        match outcome {
            Outcome::Done(_) => counts[1] += 1,
            Outcome::Refused(message) => {
                counts[0] += 1;
                example.get_or_insert_with(|| message.lines().next().unwrap_or_default().chars().take(160).collect());
            }
        }
    }

    fn print(&self, what: &str, backend: Backend) {
        let cases: usize = self.0.values().map(|([r, d], _)| r + d).sum();
        eprintln!("{what} on {backend:?}: {cases} cases ({} hostile strings)", corpus().len());
        for (position, ([refused, done], example)) in &self.0 {
            eprintln!(
                "  {position:40} refused {refused:6}  accepted {done:6}  {}",
                example.as_deref().unwrap_or("")
            );
        }
    }
}

/// The stores, the world of two linked rows per model, and the runtime whose registry holds
/// the 117 model nodes.
struct Cases {
    fx: Fixture,
    world: World,
    runtime: Arc<Runtime>,
    tally: Tally,
    /// Makes unique values unique.
    serial: usize,
}

impl Cases {
    async fn new(backend: Backend, projections: bool, hint: &str) -> Cases {
        let fx = if projections {
            Fixture::with_projections_on(backend, hint).await
        } else {
            Fixture::on(backend, hint).await
        };
        let world = World::create(&fx).await;
        Cases {
            fx,
            world,
            runtime: Arc::new(Runtime::new(dataflow_workflows::registry())),
            tally: Tally::default(),
            serial: 0,
        }
    }

    /// The context a model's rows are written and read in.
    fn ctx(&self, meta: &ModelMeta) -> Context {
        if meta.multi_tenant {
            self.fx.tenant(TENANT)
        } else {
            self.fx.ctx.clone()
        }
    }

    /// Runs the node `{Model}{kind}Node` on `input` as a workflow would (JSON in, JSON out) in
    /// a task of its own, so that a panic is caught and named. A failure is acceptable only
    /// as a refusal before any store: a store error, a timeout or an open breaker fails the
    /// test, as does an empty or overlong message.
    async fn run(&mut self, meta: &ModelMeta, kind: &str, position: &str, value: &str, input: Json) -> Outcome {
        let node_type = format!("{}{kind}Node", meta.name);
        let node = self
            .runtime
            .registry()
            .fixed(&node_type)
            .unwrap_or_else(|| panic!("{node_type} is not registered"));
        let (runtime, ctx) = (self.runtime.clone(), self.ctx(meta));
        let case = format!("{node_type} {position} = {}", label(value));
        let joined = tokio::spawn(async move {
            let env = NodeEnv {
                ctx: &ctx,
                runtime: &runtime,
            };
            node.run(&env, input).await
        })
        .await;
        let outcome = match joined {
            Err(e) => panic!("{case}: the node panicked: {e}"),
            Ok(Ok(output)) => Outcome::Done(output),
            Ok(Err(failure)) => {
                let message = failure.to_string();
                match &failure {
                    NodeFailure::Failed { store: Some(store), .. } => {
                        panic!("{case}: reached the {store} and failed there: {message}")
                    }
                    NodeFailure::Timeout(_) | NodeFailure::CircuitOpen(_) => panic!("{case}: {message}"),
                    NodeFailure::Failed { store: None, .. } | NodeFailure::BadInput { .. } => {}
                }
                assert!(!message.trim().is_empty(), "{case}: refused without a message");
                assert!(
                    message.len() <= MAX_MESSAGE_BYTES,
                    "{case}: the error is {} bytes long: {}…",
                    message.len(),
                    message.chars().take(300).collect::<String>()
                );
                Outcome::Refused(message)
            }
        };
        self.tally.add(&format!("{kind} {position}"), &outcome);
        outcome
    }

    /// Runs an input that names `name` where the model expects one of its field names: it
    /// must be refused unless `name` is a field of the model.
    async fn run_identifier(&mut self, meta: &'static ModelMeta, kind: &str, position: &str, name: &str, input: Json) {
        let outcome = self.run(meta, kind, position, name, input).await;
        if let Outcome::Done(output) = outcome {
            let field = name.strip_prefix('-').filter(|_| position.starts_with("sort")).unwrap_or(name);
            let operator = position.ends_with("operator") && Op::ALL.iter().any(|op| op.name() == name);
            assert!(
                operator || meta.field(field).is_some(),
                "{}{kind}Node accepted {} as {position}: {output}",
                meta.name,
                label(name)
            );
        }
    }

    /// Checks that the new row `id` holds `value` in `field`, records it as written, and
    /// removes it again when `field` is unique.
    async fn check_new_row(
        &mut self,
        meta: &'static ModelMeta,
        field: &FieldMeta,
        id: i64,
        value: &Json,
        s: &str,
        written: &mut Vec<(&str, i64)>,
    ) {
        written.push((meta.table, id));
        assert_stored(self, meta, id, field.name, value, s).await;
        if field.unique {
            let out = self.run(meta, "Delete", "cleanup", s, json!({"id": id, "hard": true})).await;
            assert!(matches!(out, Outcome::Done(_)), "removing {} {id}", meta.table);
        }
    }

    /// Every row of every model's table, read in plain SQL.
    async fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::new();
        for meta in dataflow_models::all_models() {
            out.insert(meta.table, self.fx.all_rows(meta.table).await);
        }
        out
    }

    /// Asserts that between `before` and now, only the rows in `allowed` (table, id) changed,
    /// appeared or disappeared.
    async fn assert_only_changed(&self, before: &Snapshot, allowed: &[(&str, i64)], what: &str) {
        let after = self.snapshot().await;
        let mut changed = Vec::new();
        for (table, rows) in &after {
            let old = &before[table];
            for id in rows.keys().chain(old.keys()) {
                if rows.get(id) != old.get(id) && !allowed.contains(&(table, *id)) {
                    changed.push(format!("{table} {id}"));
                }
            }
        }
        changed.dedup();
        assert!(changed.is_empty(), "{what}: rows outside the target changed: {changed:?}");
    }

    /// A valid new record for `meta`: the world's first row's fields, with the unique field
    /// (if any) given a value no row has.
    async fn new_record(&mut self, meta: &'static ModelMeta) -> Map<String, Json> {
        let stored = self.fx.stored_row(meta.table, self.world.id(meta.name, 0)).await;
        let mut record = Map::new();
        for f in meta.fields.iter().filter(|f| !f.primary_key) {
            record.insert(f.name.to_owned(), stored[f.name].clone());
        }
        for f in meta.fields.iter().filter(|f| f.unique) {
            self.serial += 1;
            let old = record[f.name].as_str().expect("unique fields are text");
            record.insert(f.name.to_owned(), json!(renumbered(old, self.serial)));
        }
        record
    }
}

/// `old` with its last run of digits replaced by `n` (zero-padded to the run's width), or
/// `-n` appended when it has no digit: a value that keeps the shape a pattern such as
/// `^SUP-[0-9]{5}$` asks for and differs from every other `renumbered` value.
fn renumbered(old: &str, n: usize) -> String {
    let Some(end) = old.rfind(|c: char| c.is_ascii_digit()).map(|i| i + 1) else {
        return format!("{old}-{n}");
    };
    let start = old[..end].rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    let width = end - start;
    format!("{}{n:0width$}{}", &old[..start], &old[end..])
}

fn text_fields(meta: &'static ModelMeta) -> Vec<&'static FieldMeta> {
    meta.fields.iter().filter(|f| f.ty == FieldType::Text).collect()
}

fn json_fields(meta: &'static ModelMeta) -> Vec<&'static FieldMeta> {
    meta.fields.iter().filter(|f| f.ty == FieldType::Json).collect()
}

/// The rows of `rows` a read in `ctx`'s scope returns: not soft-deleted, of the tenant.
fn visible<'a>(meta: &ModelMeta, rows: &'a BTreeMap<i64, Json>) -> impl Iterator<Item = (&'a i64, &'a Json)> {
    let multi_tenant = meta.multi_tenant;
    rows.iter()
        .filter(|(_, row)| row.get("deleted_at").is_none_or(Json::is_null))
        .filter(move |(_, row)| !multi_tenant || row["tenant_id"] == json!(TENANT))
}

/// A filter on one text field, and the same test in Rust over a stored value.
struct TextTest {
    name: &'static str,
    filter: fn(&str, &str) -> Json,
    admits: fn(&Json, &str) -> bool,
}

const TEXT_TESTS: &[TextTest] = &[
    TextTest {
        name: "$eq",
        filter: |f, s| json!({ f: s }),
        admits: |v, s| v.as_str() == Some(s),
    },
    TextTest {
        name: "$ne",
        filter: |f, s| json!({ f: { "$ne": s } }),
        admits: |v, s| v.as_str() != Some(s),
    },
    TextTest {
        name: "$in",
        filter: |f, s| json!({ f: { "$in": [s, "-"] } }),
        admits: |v, s| v.as_str() == Some(s) || v.as_str() == Some("-"),
    },
    TextTest {
        name: "$contains",
        filter: |f, s| json!({ f: { "$contains": s } }),
        admits: |v, s| v.as_str().is_some_and(|v| v.contains(s)),
    },
    TextTest {
        name: "$starts_with",
        filter: |f, s| json!({ f: { "$starts_with": s } }),
        admits: |v, s| v.as_str().is_some_and(|v| v.starts_with(s)),
    },
];

/// Identifier positions of the relational nodes: filter keys and operators, sort fields,
/// cursors, group-by and metric fields, patch and record keys, conflict keys, ids.
async fn identifiers(cases: &mut Cases, meta: &'static ModelMeta, corpus: &[String]) {
    let target = cases.world.id(meta.name, 0);
    let text = text_fields(meta)[0].name;
    let before = cases.snapshot().await;
    for s in corpus {
        let s = s.as_str();
        cases.run_identifier(meta, "List", "filter key", s, json!({"filter": {s: 1}})).await;
        cases
            .run_identifier(meta, "List", "filter operator", s, json!({"filter": {"id": {s: 1}}}))
            .await;
        cases.run_identifier(meta, "List", "sort", s, json!({"sort": [s]})).await;
        cases
            .run_identifier(meta, "List", "sort object", s, json!({"sort": [{"field": s, "descending": true}]}))
            .await;
        let forged = cases
            .run(meta, "List", "forged cursor", s, json!({"after": forged_cursor(s)}))
            .await;
        assert!(
            matches!(forged, Outcome::Refused(_)),
            "{} accepted a forged cursor around {}",
            meta.name,
            label(s)
        );
        if let Outcome::Done(out) = cases.run(meta, "List", "cursor", s, json!({"after": s})).await {
            panic!("{} accepted {} as a cursor: {out}", meta.name, label(s));
        }
        cases
            .run_identifier(meta, "Aggregate", "group_by", s, json!({"group_by": [s]}))
            .await;
        cases
            .run_identifier(
                meta,
                "Aggregate",
                "metric field",
                s,
                json!({"metrics": [{"op": "max", "field": s}]}),
            )
            .await;
        cases
            .run_identifier(meta, "Aggregate", "filter key", s, json!({"filter": {s: {"$is_null": false}}}))
            .await;
        cases
            .run_identifier(meta, "Update", "patch key", s, json!({"id": target, "patch": {s: "x"}}))
            .await;
        cases
            .run_identifier(meta, "Update", "filter key", s, json!({"filter": {s: "x"}, "patch": {text: "x"}}))
            .await;
        cases
            .run_identifier(meta, "Delete", "filter key", s, json!({"filter": {s: "x"}}))
            .await;
        let mut record = cases.new_record(meta).await;
        record.insert(s.to_owned(), json!("x"));
        cases
            .run_identifier(meta, "Create", "record key", s, json!({ "record": record }))
            .await;
        let mut row = cases.new_record(meta).await;
        cases
            .run_identifier(
                meta,
                "BulkUpsert",
                "conflict_key",
                s,
                json!({"rows": [row.clone()], "conflict_key": s}),
            )
            .await;
        row.insert(s.to_owned(), json!(1));
        // A row with an unknown key is reported in the output's `errors`, not stored.
        if let Outcome::Done(out) = cases.run(meta, "BulkUpsert", "row key", s, json!({ "rows": [row] })).await {
            assert!(
                meta.field(s).is_some() || (out["errors"].as_array().is_some_and(|e| e.len() == 1) && out["inserted"] == json!(0)),
                "{}BulkUpsertNode stored a row with the key {}: {out}",
                meta.name,
                label(s)
            );
        }
        if let Outcome::Done(out) = cases.run(meta, "Read", "id", s, json!({ "id": s })).await {
            panic!("{}ReadNode accepted {} as an id: {out}", meta.name, label(s));
        }
    }
    cases
        .assert_only_changed(&before, &[], &format!("{} identifier positions", meta.name))
        .await;
}

/// Filter values on every text field: each read returns exactly the rows the same test in
/// Rust admits; each Update or Delete by filter changes exactly those rows.
async fn filter_values(cases: &mut Cases, meta: &'static ModelMeta, corpus: &[String]) {
    let target = cases.world.id(meta.name, 0);
    for field in text_fields(meta) {
        let f = field.name;
        let before = cases.snapshot().await;
        for s in corpus {
            let s = s.as_str();
            for test in TEXT_TESTS {
                let expected: Vec<i64> = visible(meta, &before[meta.table])
                    .filter(|(_, row)| (test.admits)(&row[f], s))
                    .map(|(id, _)| *id)
                    .collect();
                let filter = (test.filter)(f, s);
                let position = format!("filter {f} {}", test.name);
                if let Outcome::Done(out) = cases
                    .run(meta, "List", &position, s, json!({"filter": filter, "limit": 1000}))
                    .await
                {
                    let mut got: Vec<i64> = out["records"]
                        .as_array()
                        .expect("records")
                        .iter()
                        .map(|r| r[meta.primary_key].as_i64().expect("an id"))
                        .collect();
                    got.sort_unstable();
                    assert_eq!(got, expected, "{}ListNode {position} = {}: rows returned", meta.name, label(s));
                }
                let position = format!("count {f} {}", test.name);
                if let Outcome::Done(out) = cases.run(meta, "Aggregate", &position, s, json!({ "filter": filter })).await {
                    let groups = out["groups"].as_array().expect("groups");
                    let count = groups.first().map_or(0, |g| g["count"].as_u64().expect("a count"));
                    assert_eq!(
                        count as usize,
                        expected.len(),
                        "{}AggregateNode {position} = {}",
                        meta.name,
                        label(s)
                    );
                }
            }
            // The world's values are plain words, so no hostile string equals one: Update and
            // Delete by equality must change nothing. (The patch is the target row's own valid
            // value, so that only the filter can be refused.)
            let eq = json!({ f: s });
            let valid = &before[meta.table][&target][f];
            for (kind, input) in [
                ("Update", json!({"filter": eq, "patch": {f: valid}})),
                ("Delete", json!({ "filter": eq })),
            ] {
                if let Outcome::Done(out) = cases.run(meta, kind, &format!("filter {f} $eq"), s, input).await {
                    let count = if kind == "Update" { &out["updated"] } else { &out["deleted"] };
                    assert_eq!(count, &json!(0), "{}{kind}Node by {f} = {}: {out}", meta.name, label(s));
                }
            }
        }
        cases
            .assert_only_changed(&before, &[], &format!("{} filters on {f}", meta.name))
            .await;
    }
}

/// Values written into every text and JSON field by Update, Create and BulkUpsert: refused,
/// or stored and read back (in plain SQL and through the Read node) byte for byte.
async fn written_values(cases: &mut Cases, meta: &'static ModelMeta, corpus: &[String]) {
    let target = cases.world.id(meta.name, 0);
    let as_text: fn(&str) -> Json = |s| json!(s);
    let as_json: fn(&str) -> Json = |s| json!({ s: [s, { "k": s }] });
    let fields = text_fields(meta)
        .into_iter()
        .map(|f| (f, as_text))
        .chain(json_fields(meta).into_iter().map(|f| (f, as_json)));
    for (field, value_of) in fields {
        let f = field.name;
        let before = cases.snapshot().await;
        let mut written = vec![(meta.table, target)];
        for s in corpus {
            let s = s.as_str();
            let value = value_of(s);
            let position = format!("value {f}");
            // New rows first, each removed again when `f` is unique, so that the next new row
            // and then the target row can take the same value.
            let mut record = cases.new_record(meta).await;
            record.insert(f.to_owned(), value.clone());
            if let Outcome::Done(out) = cases.run(meta, "Create", &position, s, json!({ "record": record })).await {
                let id = out["record"][meta.primary_key].as_i64().expect("an id");
                cases.check_new_row(meta, field, id, &value, s, &mut written).await;
            }
            let mut row = cases.new_record(meta).await;
            row.insert(f.to_owned(), value.clone());
            if let Outcome::Done(out) = cases.run(meta, "BulkUpsert", &position, s, json!({ "rows": [row] })).await {
                if let Some(id) = out["ids"][0].as_i64() {
                    cases.check_new_row(meta, field, id, &value, s, &mut written).await;
                } else {
                    let errors = out["errors"].to_string();
                    assert!(
                        errors.contains(f),
                        "{}BulkUpsertNode refused {} without naming {f}: {errors}",
                        meta.name,
                        label(s)
                    );
                }
            }
            if let Outcome::Done(out) = cases
                .run(meta, "Update", &position, s, json!({"id": target, "patch": {f: value}}))
                .await
            {
                assert_eq!(out["updated"], json!(1), "{}UpdateNode {f} = {}: {out}", meta.name, label(s));
                assert_stored(cases, meta, target, f, &value, s).await;
                for _ in 0..2 {
                    // A cache miss, then a hit: both must give the bytes written.
                    let Outcome::Done(read) = cases.run(meta, "Read", "after update", s, json!({ "id": target })).await else {
                        panic!("{}ReadNode refused the row it just wrote", meta.name)
                    };
                    assert_eq!(read["record"][f], value, "{}ReadNode {f} after writing {}", meta.name, label(s));
                }
            }
        }
        cases
            .assert_only_changed(&before, &written, &format!("{} values of {f}", meta.name))
            .await;
    }
}

/// Asserts that row `id` of `meta` holds exactly `value` in `field`, read in plain SQL.
async fn assert_stored(cases: &Cases, meta: &ModelMeta, id: i64, field: &str, value: &Json, s: &str) {
    let stored = cases.fx.stored_row(meta.table, id).await;
    assert_eq!(&stored[field], value, "{} {id}.{field} after writing {}", meta.table, label(s));
}

/// The relational nodes of all 13 models (Create, Read, Update, Delete, List, BulkUpsert,
/// Aggregate) with every hostile string in every identifier and value position.
async fn relational_nodes_refuse_or_store_hostile_strings(backend: Backend) {
    let corpus = corpus();
    assert!(corpus.len() >= 50, "the corpus holds {} strings", corpus.len());
    let mut cases = Cases::new(backend, false, "injection").await;
    for meta in dataflow_models::all_models() {
        identifiers(&mut cases, meta, &corpus).await;
        filter_values(&mut cases, meta, &corpus).await;
        written_values(&mut cases, meta, &corpus).await;
    }
    cases.tally.print("relational nodes", backend);
}

on_both_backends!(relational_nodes_refuse_or_store_hostile_strings);

/// Search and Graph nodes of all 13 models with every hostile string as a query, a metadata
/// filter key or value, a relation name and a target model; and hostile text written through
/// Update reaching the vector and graph projections intact.
async fn search_and_graph_nodes_refuse_or_answer_hostile_strings(backend: Backend) {
    let corpus = corpus();
    let mut cases = Cases::new(backend, true, "injection_projections").await;
    let vectors_before = cases.fx.vector_documents("products").await.len();
    let graph_before = cases.fx.graph_node_count().await;
    for meta in dataflow_models::all_models() {
        let target = cases.world.id(meta.name, 0);
        let other = cases.world.id(meta.name, 1);
        let before = cases.snapshot().await;
        for s in &corpus {
            let s = s.as_str();
            if let Outcome::Done(out) = cases.run(meta, "Search", "query", s, json!({ "query": s })).await {
                let hits = out["hits"].as_array().expect("hits");
                assert!(hits.len() <= 10, "{}SearchNode returned {} hits", meta.name, hits.len());
                if meta.multi_tenant {
                    let ids = [target, other].map(Json::from);
                    for hit in hits {
                        assert!(
                            ids.contains(&hit["record"][meta.primary_key]),
                            "{}SearchNode found a row of another tenant: {hit}",
                            meta.name
                        );
                    }
                }
            }
            cases
                .run_identifier(meta, "Search", "filter key", s, json!({"query": "drill", "filter": {s: 1}}))
                .await;
            for f in meta.fields.iter().filter(|f| f.ty == FieldType::Text && (f.indexed || f.unique)) {
                let position = format!("filter {}", f.name);
                if let Outcome::Done(out) = cases
                    .run(meta, "Search", &position, s, json!({"query": "drill", "filter": {f.name: s}}))
                    .await
                {
                    for hit in out["hits"].as_array().expect("hits") {
                        assert_eq!(
                            hit["record"][f.name],
                            json!(s),
                            "{}SearchNode filter {} = {}",
                            meta.name,
                            f.name,
                            label(s)
                        );
                    }
                }
            }
            for (op, input) in [
                ("link", json!({"op": "link", "id": target, "relation": s, "target_id": other})),
                ("unlink", json!({"op": "unlink", "id": target, "relation": s})),
                (
                    "neighbors",
                    json!({"op": "neighbors", "id": target, "relation": s, "direction": "both", "depth": 2}),
                ),
                (
                    "path",
                    json!({"op": "path", "id": target, "relation": s, "target_model": "Category", "target_id": other}),
                ),
            ] {
                if let Outcome::Done(out) = cases.run(meta, "Graph", &format!("{op} relation"), s, input).await {
                    panic!("{}GraphNode {op} accepted {} as a relation: {out}", meta.name, label(s));
                }
            }
            let path = json!({"op": "path", "id": target, "target_model": s, "target_id": other});
            if let Outcome::Done(out) = cases.run(meta, "Graph", "path target_model", s, path).await {
                panic!("{}GraphNode accepted {} as a target model: {out}", meta.name, label(s));
            }
        }
        cases
            .assert_only_changed(&before, &[], &format!("{} search and graph", meta.name))
            .await;
    }

    // Hostile text in the product's name and description: stored, and the same bytes in the
    // vector document and on the graph node.
    let meta = dataflow_models::all_models()
        .into_iter()
        .find(|m| m.name == "Product")
        .expect("Product");
    let target = cases.world.id("Product", 0);
    for s in &corpus {
        let patch = json!({"description": s});
        let Outcome::Done(out) = cases
            .run(meta, "Update", "value description", s, json!({"id": target, "patch": patch}))
            .await
        else {
            continue;
        };
        assert!(
            out.get("pending").is_none_or(|p| p == &json!([])),
            "Product {target}: projections pending after writing {}: {out}",
            label(s)
        );
        let documents = cases.fx.vector_documents("products").await;
        let (document, _) = &documents[&target.to_string()];
        // Blank fields are left out of a document; any other text is in it unchanged.
        assert!(
            s.trim().is_empty() || document.contains(s.as_str()),
            "the vector document of product {target} lacks {}",
            label(s)
        );
        let (props, _) = cases.fx.graph_node("Product", target).await.expect("the product's graph node");
        if let Some(stored) = props.get("description") {
            assert_eq!(stored, &json!(s), "the graph node of product {target} after writing {}", label(s));
        }
    }
    assert_eq!(
        cases.fx.vector_documents("products").await.len(),
        vectors_before,
        "vector documents"
    );
    assert_eq!(cases.fx.graph_node_count().await, graph_before, "graph nodes");
    cases.tally.print("search and graph nodes", backend);
}

on_both_backends!(search_and_graph_nodes_refuse_or_answer_hostile_strings);

/// A small valid workflow with a slot for a hostile string in each name position (the
/// string written as a JSON-style double-quoted YAML scalar), or none when `slot` is empty.
fn workflow_text(slot: &str, s: &str) -> String {
    let q = serde_json::to_string(s).expect("a JSON string");
    let pick = |name: &str, normal: &str| if name == slot { q.clone() } else { normal.to_owned() };
    format!(
        "name: {}\ninputs:\n  {}:\n    type: integer\nnodes:\n  {}:\n    type: {}\n    params:\n      {}: false\n  shape:\n    type: Transform\n    params:\n      select:\n        {}: {}\nconnections:\n  - {{from: {}, to: {}}}\n  - {{from: {}, to: {}}}\noutputs:\n  {}: {}\n",
        pick("workflow name", "hostile"),
        pick("input name", "product_id"),
        pick("node name", "product"),
        pick("node type", "ProductReadNode"),
        pick("param key", "include_deleted"),
        pick("transform output", "name"),
        pick("transform path", "row.name"),
        pick("connection source", "input.product_id"),
        pick("connection target", "product.id"),
        pick("connection field", "product.record"),
        pick("transform input", "shape.row"),
        pick("output name", "name"),
        pick("output source", "shape.name"),
    )
}

/// Every hostile string in every name position of a YAML workflow, and a file that is not
/// UTF-8: the loader answers with located diagnostics, never a panic, and accepts a name only
/// where it is a valid one.
#[test]
fn the_yaml_loader_refuses_hostile_names_with_located_errors() {
    let registry = dataflow_workflows::registry();
    let node_name = regex::Regex::new("^[A-Za-z_][A-Za-z0-9_-]{0,63}$").expect("a regex");
    let positions = [
        "workflow name",
        "input name",
        "node name",
        "node type",
        "param key",
        "transform output",
        "transform path",
        "connection source",
        "connection target",
        "connection field",
        "transform input",
        "output name",
        "output source",
    ];
    if let Err(e) = yaml::load_str(&workflow_text("", ""), "hostile.yaml", &registry) {
        panic!("the workflow without a hostile string does not load: {e}");
    }
    let mut tally = Tally::default();
    for s in corpus() {
        for position in positions {
            let text = workflow_text(position, &s);
            let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| yaml::load_str(&text, "hostile.yaml", &registry)))
                .unwrap_or_else(|_| panic!("the loader panicked on {} as the {position}", label(&s)));
            let outcome = match loaded {
                Ok(_) => Outcome::Done(Json::Null),
                Err(diagnostics) => {
                    let message = diagnostics.to_string();
                    assert!(message.starts_with("hostile.yaml"), "{position} = {}: {message}", label(&s));
                    assert!(
                        message.len() <= MAX_MESSAGE_BYTES * 4,
                        "{position} = {}: a {}-byte report",
                        label(&s),
                        message.len()
                    );
                    Outcome::Refused(message)
                }
            };
            if matches!(outcome, Outcome::Done(_)) {
                match position {
                    "node name" | "input name" | "output name" => {
                        assert!(node_name.is_match(&s), "the loader accepted {} as the {position}", label(&s))
                    }
                    "node type" | "param key" | "connection source" | "connection target" | "output source" => {
                        panic!("the loader accepted {} as the {position}", label(&s))
                    }
                    _ => {}
                }
            }
            tally.add(&format!("yaml {position}"), &outcome);
        }
    }
    let dir = dataflow_tests::embedded::fresh_home("injection_yaml");
    let file = dir.join("not_utf8.yaml");
    let mut bytes = workflow_text("", "").into_bytes();
    bytes.extend_from_slice(b"# \xff\xfe\xc3\x28 not UTF-8\n");
    std::fs::write(&file, bytes).expect("writing the file");
    let Err(err) = yaml::load_file(&file, &registry) else {
        panic!("a file that is not UTF-8 was loaded")
    };
    assert!(err.to_string().contains("UTF-8"), "{err}");
    tally.print("YAML loader", Backend::Embedded);
}

/// A hostile filter key or operator reaching a node through a workflow connection path (the
/// loader cannot see inside a free-form filter) is refused by the node at run time; the run
/// fails cleanly and writes nothing.
async fn filter_keys_through_connection_paths_are_refused_at_run_time(backend: Backend) {
    let mut cases = Cases::new(backend, false, "injection_paths").await;
    let registry = dataflow_workflows::registry();
    let runtime = Runtime::new(dataflow_workflows::registry());
    let before = cases.snapshot().await;
    let mut ran = 0;
    for s in corpus() {
        let key = serde_json::to_string(&format!("list.filter.{s}")).expect("a JSON string");
        let text = format!(
            "name: paths\ninputs:\n  value:\n    type: string\nnodes:\n  list:\n    type: ProductListNode\nconnections:\n  - {{from: input.value, to: {key}}}\noutputs:\n  records: list.records\n"
        );
        let Ok(workflow) = yaml::load_str(&text, "paths.yaml", &registry) else {
            continue;
        };
        ran += 1;
        let report = runtime.run(&workflow, &cases.fx.ctx, json!({"value": "x"})).await;
        let product = dataflow_models::all_models()
            .into_iter()
            .find(|m| m.name == "Product")
            .expect("Product");
        let field = s.split('.').next().unwrap_or_default();
        let outcome = if report.status == RunStatus::Succeeded {
            assert!(
                product.field(field).is_some(),
                "a run filtered products on {}: {:?}",
                label(&s),
                report.outputs
            );
            Outcome::Done(Json::Null)
        } else {
            let error = report.error.unwrap_or_default();
            assert!(
                !error.is_empty() && error.len() <= MAX_MESSAGE_BYTES,
                "run with {}: {error}",
                label(&s)
            );
            Outcome::Refused(error)
        };
        cases.tally.add("workflow filter path", &outcome);
    }
    assert!(ran > 0, "no hostile path loaded at all: nothing reached a node");
    cases.assert_only_changed(&before, &[], "workflow filter paths").await;
    cases.tally.print("filter keys through connection paths", backend);
}

on_both_backends!(filter_keys_through_connection_paths_are_refused_at_run_time);

#[test]
fn renumbered_values_keep_their_shape() {
    assert_eq!(renumbered("SUP-00001", 42), "SUP-00042");
    assert_eq!(renumbered("Q-2026-00001", 7), "Q-2026-00007");
    assert_eq!(renumbered("buyer0@acme.example", 12), "buyer12@acme.example");
    assert_eq!(renumbered("tools", 3), "tools-3");
}
