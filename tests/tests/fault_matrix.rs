//! Fault matrix: a mixed workload of workflow runs (creates, updates, deletes, bulk upserts,
//! reads, searches and graph traversals) from concurrent clients while Redis, Chroma, the graph
//! server and PostgreSQL are stopped and restarted one at a time (and, on the containers
//! provider, paused, then cut off the network, in two more runs). It checks that no write a run
//! reported committed is lost, that no batch is half-written, that the vector collection, the
//! graph and the cache match PostgreSQL once `sync` has run, and how each outage shows in the
//! runs; and that a Redis outage longer than the outbox's attempts never lets the cache serve a
//! row older than PostgreSQL's. In its own test binary because it stops the servers its tests
//! share.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::read::{CacheOutcome, ReadInput};
use dataflow_core::nodes::update::UpdateInput;
use dataflow_core::{Config, Context, Node, StoreKind};
use dataflow_models::{CategoryCreateNode, NewCategory, NewProduct, ProductCreateNode, ProductReadNode, ProductUpdateNode};
use dataflow_runtime::{RetryPolicy, RunOptions, RunReport, RunStatus, Runtime, Workflow, WorkflowBuilder};
use dataflow_tests::fixture::Fixture;
use dataflow_tests::{Interruption, Provider, ServiceKind, Services};
use serde_json::{Map, Value as Json, json};

/// One test at a time: each stops servers every test of this binary uses.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Concurrent clients, each running one workflow after another.
const CLIENTS: usize = 8;
/// Runs the workload makes at least.
const MIN_RUNS: usize = 1_000;
/// Normal running before the first outage.
const WARM_UP: Duration = Duration::from_secs(4);
/// How long each server stays stopped before it is started again.
const DOWN_FOR: Duration = Duration::from_secs(5);
/// Normal running after a store recovered, before the next outage.
const SETTLE: Duration = Duration::from_secs(2);
/// Normal running after the last outage.
const TAIL: Duration = Duration::from_secs(3);
/// Longest wait for the workload to succeed again after a restart: a liveness bound (the
/// test fails instead of hanging), not a measurement.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);
/// New rows each bulk upsert writes (one batch with the existing ones below).
const BULK_NEW: usize = 12;
/// Existing rows of the client's own that each bulk upsert rewrites.
const BULK_EXISTING: usize = 8;
/// Categories the products are filed under.
const CATEGORIES: usize = 4;

/// The runtime's error for a call its open breaker refused, naming the store.
fn breaker_message(store: &str) -> String {
    format!("{store} unavailable: circuit breaker open after repeated failures")
}

/// What a run does: one workflow per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Create,
    Update,
    Delete,
    Bulk,
    Read,
    Search,
    Graph,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Create,
        Kind::Update,
        Kind::Delete,
        Kind::Bulk,
        Kind::Read,
        Kind::Search,
        Kind::Graph,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Bulk => "bulk upsert",
            Kind::Read => "read",
            Kind::Search => "search",
            Kind::Graph => "graph neighbours",
        }
    }

    fn writes(self) -> bool {
        matches!(self, Kind::Create | Kind::Update | Kind::Delete | Kind::Bulk)
    }
}

/// What each client runs, in turn; clients start at different places so the mix at any
/// moment is varied.
const CYCLE: [Kind; 12] = [
    Kind::Create,
    Kind::Read,
    Kind::Update,
    Kind::Search,
    Kind::Create,
    Kind::Graph,
    Kind::Update,
    Kind::Read,
    Kind::Bulk,
    Kind::Delete,
    Kind::Search,
    Kind::Read,
];

/// The workflows of the workload, each one node called `node` fed by the run's inputs.
struct Flows {
    create: Workflow,
    update: Workflow,
    delete: Workflow,
    bulk: Workflow,
    read: Workflow,
    search: Workflow,
    /// Neighbours of each category, by index.
    graph: Vec<Workflow>,
}

fn single_node(name: &str, node_type: &str, params: Json, inputs: &[(&str, &str)]) -> Workflow {
    let mut b = WorkflowBuilder::new(name);
    b.add_node("node", node_type, params);
    for (input, ty) in inputs {
        b.input(*input, ty);
        b.connect("input", input, "node", input);
    }
    b.build(&dataflow_workflows::registry())
        .unwrap_or_else(|p| panic!("workflow {name}: {:?}", p.iter().map(|p| &p.message).collect::<Vec<_>>()))
}

fn flows(categories: &[i64]) -> Flows {
    Flows {
        create: single_node("fm_create", "ProductCreateNode", json!({}), &[("record", "object")]),
        update: single_node(
            "fm_update",
            "ProductUpdateNode",
            json!({}),
            &[("id", "integer"), ("patch", "object")],
        ),
        delete: single_node("fm_delete", "ProductDeleteNode", json!({"hard": false}), &[("id", "integer")]),
        bulk: single_node(
            "fm_bulk",
            "ProductBulkUpsertNode",
            json!({"conflict_key": "sku"}),
            &[("rows", "array")],
        ),
        read: single_node("fm_read", "ProductReadNode", json!({}), &[("id", "integer")]),
        search: single_node("fm_search", "ProductSearchNode", json!({"top_k": 5}), &[("query", "string")]),
        graph: categories
            .iter()
            .map(|id| {
                single_node(
                    "fm_graph",
                    "CategoryGraphNode",
                    json!({"op": "neighbors", "id": id, "direction": "in", "limit": 10}),
                    &[],
                )
            })
            .collect(),
    }
}

/// One run as the workload saw it.
#[derive(Debug, Clone)]
struct RunRecord {
    kind: Kind,
    start: Instant,
    end: Instant,
    ok: bool,
    /// The run's error (naming the node and the store).
    error: Option<String>,
    /// Writes: the projections left pending.
    pending: Vec<String>,
    /// Reads: where the answer came from.
    cache: Option<String>,
}

/// A product row's state as the workload wrote it or as a store holds it.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    name: String,
    description: String,
    price: f64,
    stock: i64,
    category_id: i64,
    deleted: bool,
}

impl Expected {
    /// From a record as PostgreSQL (`to_jsonb`), a node output or a cache entry shows it.
    fn from_json(row: &Json) -> Expected {
        Expected {
            name: row["name"].as_str().unwrap_or_default().to_owned(),
            description: row["description"].as_str().unwrap_or_default().to_owned(),
            price: row["price"].as_f64().unwrap_or(f64::NAN),
            stock: row["stock"].as_i64().unwrap_or(-1),
            category_id: row["category_id"].as_i64().unwrap_or(-1),
            deleted: !row["deleted_at"].is_null(),
        }
    }

    fn product(&self, sku: &str, attributes: Json) -> Json {
        json!({"sku": sku, "name": self.name, "description": self.description, "price": self.price, "currency": "EUR",
               "stock": self.stock, "weight_kg": null, "active": true, "category_id": self.category_id,
               "manufacturer_id": null, "supplier_id": null, "attributes": attributes})
    }
}

/// What the workload knows about one row (by SKU): the last state a run reported committed, and
/// the states of writes after it whose runs failed (a failed run may still have committed,
/// when the server went away between the commit and its answer).
#[derive(Debug, Default)]
struct Entry {
    committed: Option<Expected>,
    maybe: Vec<Expected>,
}

/// One bulk upsert: all its rows carry `attributes.batch = tag`.
#[derive(Debug)]
struct BulkRun {
    tag: String,
    rows: usize,
    ok: bool,
}

/// A row a client may still write.
#[derive(Debug, Clone)]
struct Owned {
    sku: String,
    id: i64,
    /// Written by a bulk upsert: not picked by a later one, so its batch tag stays.
    bulk: bool,
}

/// What the clients share: the runtime (and so its breakers), the stores and every run.
struct Shared {
    runtime: Runtime,
    ctx: Context,
    flows: Flows,
    categories: Vec<i64>,
    stop: AtomicBool,
    runs: Mutex<Vec<RunRecord>>,
}

/// One client: its rows, its ledger, its bulk runs and the stale reads it saw.
struct Client {
    index: usize,
    step: usize,
    writes: u64,
    live: Vec<Owned>,
    ledger: BTreeMap<String, Entry>,
    bulks: Vec<BulkRun>,
    committed_writes: u64,
    stale_reads: Vec<String>,
    reads_checked: u64,
}

/// The output of the workflow's only node (`null` when it failed).
fn output(report: &RunReport) -> Json {
    report.node("node").and_then(|n| n.output.clone()).unwrap_or(Json::Null)
}

fn pending_of(out: &Json) -> Vec<String> {
    out["pending"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

impl Client {
    fn new(index: usize) -> Client {
        Client {
            index,
            step: index,
            writes: 0,
            live: Vec::new(),
            ledger: BTreeMap::new(),
            bulks: Vec::new(),
            committed_writes: 0,
            stale_reads: Vec::new(),
            reads_checked: 0,
        }
    }

    /// Distinct values for every write, so the state of a row tells which write produced it.
    fn next_values(&mut self, category_id: i64) -> Expected {
        self.writes += 1;
        let n = self.writes;
        Expected {
            name: format!("Fault drill {} #{n}", self.index),
            description: format!("fault matrix power drill of client {} write {n}", self.index),
            // Quarters survive the round trip through a double exactly.
            price: ((self.index as u64 * 7919 + n * 31) % 40_000) as f64 / 4.0 + 1.0,
            stock: n as i64,
            category_id,
            deleted: false,
        }
    }

    fn new_sku(&mut self) -> String {
        self.writes += 1;
        format!("FM-{}-{}", self.index, self.writes)
    }

    fn pick(&self) -> usize {
        (self.step * 7) % self.live.len()
    }

    async fn run(&self, shared: &Shared, kind: Kind, flow: &Workflow, inputs: Json) -> (RunReport, RunRecord) {
        let start = Instant::now();
        let report = shared.runtime.run(flow, &shared.ctx, inputs).await;
        let end = Instant::now();
        let out = output(&report);
        let record = RunRecord {
            kind,
            start,
            end,
            ok: report.status == RunStatus::Succeeded,
            error: report.error.clone(),
            pending: pending_of(&out),
            cache: out["cache"].as_str().map(str::to_owned),
        };
        (report, record)
    }

    async fn run_one(&mut self, shared: &Shared) {
        let wanted = CYCLE[self.step % CYCLE.len()];
        self.step += 1;
        let needs_row = matches!(wanted, Kind::Update | Kind::Delete | Kind::Read);
        let kind = if needs_row && self.live.is_empty() { Kind::Create } else { wanted };
        let category = shared.categories[self.step % shared.categories.len()];
        let record = match kind {
            Kind::Create => {
                let sku = self.new_sku();
                let values = self.next_values(category);
                let (report, record) = self
                    .run(
                        shared,
                        kind,
                        &shared.flows.create,
                        json!({"record": values.product(&sku, json!({}))}),
                    )
                    .await;
                let entry = self.ledger.entry(sku.clone()).or_default();
                if record.ok {
                    let stored = &output(&report)["record"];
                    assert_eq!(Expected::from_json(stored), values, "a create returns what it stored");
                    entry.committed = Some(values);
                    self.committed_writes += 1;
                    self.live.push(Owned {
                        sku,
                        id: stored["id"].as_i64().expect("an id"),
                        bulk: false,
                    });
                } else {
                    entry.maybe.push(values);
                }
                record
            }
            Kind::Update => {
                let row = self.live[self.pick()].clone();
                let base = self.ledger[&row.sku].committed.clone().expect("live rows are committed");
                let fresh = self.next_values(base.category_id);
                let values = Expected {
                    description: base.description.clone(),
                    ..fresh
                };
                let patch = json!({"name": values.name, "price": values.price, "stock": values.stock});
                let (report, record) = self
                    .run(shared, kind, &shared.flows.update, json!({"id": row.id, "patch": patch}))
                    .await;
                let entry = self.ledger.get_mut(&row.sku).expect("a ledger entry");
                if record.ok {
                    let stored = &output(&report)["record"];
                    assert_eq!(Expected::from_json(stored), values, "an update returns what it stored");
                    entry.committed = Some(values);
                    entry.maybe.clear();
                    self.committed_writes += 1;
                } else {
                    entry.maybe.push(values);
                }
                record
            }
            Kind::Delete => {
                // A row whose delete was tried is never written again, whatever the outcome.
                let row = self.live.swap_remove(self.pick());
                let entry = self.ledger.get_mut(&row.sku).expect("a ledger entry");
                let values = Expected {
                    deleted: true,
                    ..entry.committed.clone().expect("live rows are committed")
                };
                let (report, record) = self.run(shared, kind, &shared.flows.delete, json!({"id": row.id})).await;
                let entry = self.ledger.get_mut(&row.sku).expect("a ledger entry");
                if record.ok {
                    assert_eq!(output(&report)["deleted"], json!(1), "{report:?}");
                    entry.committed = Some(values);
                    entry.maybe.clear();
                    self.committed_writes += 1;
                } else {
                    entry.maybe.push(values);
                }
                record
            }
            Kind::Bulk => {
                let tag = format!("c{}-b{}", self.index, self.writes);
                let mut rows = Vec::new();
                let mut written: Vec<(String, Expected, Option<i64>)> = Vec::new();
                for _ in 0..BULK_NEW {
                    let sku = self.new_sku();
                    let values = self.next_values(category);
                    rows.push(values.product(&sku, json!({"batch": tag})));
                    written.push((sku, values, None));
                }
                // Existing rows leave the pool: no later write changes their batch tag.
                let mut taken = 0;
                while taken < BULK_EXISTING {
                    let Some(at) = self.live.iter().position(|o| !o.bulk) else { break };
                    let row = self.live.remove(at);
                    let base = self.ledger[&row.sku].committed.clone().expect("live rows are committed");
                    let values = self.next_values(base.category_id);
                    rows.push(values.product(&row.sku, json!({"batch": tag})));
                    written.push((row.sku, values, Some(row.id)));
                    taken += 1;
                }
                let (report, record) = self.run(shared, kind, &shared.flows.bulk, json!({"rows": rows})).await;
                let out = output(&report);
                if record.ok {
                    assert_eq!(out["errors"], json!([]), "no row of a bulk upsert is invalid: {out}");
                }
                for (i, (sku, values, _)) in written.iter().enumerate() {
                    let entry = self.ledger.entry(sku.clone()).or_default();
                    if record.ok {
                        entry.committed = Some(values.clone());
                        entry.maybe.clear();
                        self.committed_writes += 1;
                        if i < BULK_NEW {
                            self.live.push(Owned {
                                sku: sku.clone(),
                                id: out["ids"][i].as_i64().expect("an id per written row"),
                                bulk: true,
                            });
                        }
                    } else {
                        entry.maybe.push(values.clone());
                    }
                }
                self.bulks.push(BulkRun {
                    tag,
                    rows: written.len(),
                    ok: record.ok,
                });
                record
            }
            Kind::Read => {
                let row = self.live[self.pick()].clone();
                let (report, record) = self.run(shared, kind, &shared.flows.read, json!({"id": row.id})).await;
                if record.ok {
                    self.reads_checked += 1;
                    let got = output(&report)["record"].clone();
                    let got = (!got.is_null()).then(|| Expected::from_json(&got));
                    let entry = self.ledger.get_mut(&row.sku).expect("a ledger entry");
                    if got.is_some() && got == entry.committed {
                        entry.maybe.clear();
                    } else if let Some(seen) = got.as_ref().filter(|g| entry.maybe.contains(g)) {
                        // A failed write did commit: the row shows its values.
                        entry.committed = Some(seen.clone());
                        entry.maybe.clear();
                    } else {
                        self.stale_reads.push(format!(
                            "{} (id {}) read as {got:?} ({:?}), expected {:?}",
                            row.sku, row.id, record.cache, entry.committed
                        ));
                    }
                }
                record
            }
            Kind::Search => {
                let query = format!("fault matrix power drill of client {}", self.index);
                self.run(shared, kind, &shared.flows.search, json!({"query": query})).await.1
            }
            Kind::Graph => {
                let flow = &shared.flows.graph[self.step % shared.flows.graph.len()];
                self.run(shared, kind, flow, json!({})).await.1
            }
        };
        let ok = record.ok;
        shared.runs.lock().expect("runs").push(record);
        if ok {
            // A run answered at once (a cache hit) awaited nothing: let the other tasks (the
            // controller) have the worker.
            tokio::task::yield_now().await;
        } else {
            // Like any client, back off a little after a failure instead of spinning on an
            // open breaker.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs workflows until told to stop; returns what the client wrote and saw.
async fn client(index: usize, shared: Arc<Shared>) -> Client {
    let mut me = Client::new(index);
    while !shared.stop.load(Ordering::SeqCst) {
        me.run_one(&shared).await;
    }
    me
}

/// One outage: when the server was being stopped, was down, was being started, was back.
#[derive(Debug, Clone)]
struct Outage {
    service: ServiceKind,
    stop_begin: Instant,
    down_at: Instant,
    start_begin: Instant,
    up_at: Instant,
    /// The end of the first successful run of the kind the outage stopped, started after
    /// `up_at`.
    recovered_at: Instant,
    /// What the `sync` right after recovery did: `(applied, failed, remaining, an error of a
    /// record it failed to apply)`.
    sync: Option<(u64, u64, u64, Option<String>)>,
    /// Records left pending for a projection the stopped server does not hold.
    other: OtherPending,
}

/// The server's name in the summary.
fn service_name(service: ServiceKind) -> &'static str {
    match service {
        ServiceKind::Redis => "redis",
        ServiceKind::Chroma => "chroma",
        ServiceKind::Bolt => "graph server",
        ServiceKind::Postgres => "postgres",
    }
}

/// How the store appears in error messages.
fn store_name(service: ServiceKind) -> &'static str {
    match service {
        ServiceKind::Redis => "cache",
        ServiceKind::Chroma => "vector store",
        ServiceKind::Bolt => "graph store",
        ServiceKind::Postgres => "relational store",
    }
}

/// Outbox records left pending, when the stopped server is about to restart, for a projection
/// that server does not hold.
#[derive(Debug, Clone, Default)]
struct OtherPending {
    /// How many records.
    records: usize,
    /// Up to three distinct errors of theirs.
    examples: Vec<String>,
    /// Records whose error does not name the store of every such projection: pending because
    /// of the stopped server, which must not happen.
    unexplained: Vec<String>,
}

/// The records pending for another projection than the stopped `service`'s. A loaded machine
/// may make another store slow on its own (Chroma indexing what the sync after its restart
/// wrote): such a projection is pending with its own store's error. PostgreSQL holds the
/// outbox: nothing to read while it is down.
async fn other_pending(fx: &Fixture, service: ServiceKind) -> OtherPending {
    let stopped = match service {
        ServiceKind::Redis => StoreKind::Cache,
        ServiceKind::Chroma => StoreKind::Vector,
        ServiceKind::Bolt => StoreKind::Graph,
        ServiceKind::Postgres => return OtherPending::default(),
    };
    let records = fx.ctx.stores().outbox().pending_records(100_000).await.expect("pending records");
    let mut other = OtherPending::default();
    // A record without attempts belongs to a write still in flight: nothing tried yet.
    let tried = records.iter().filter(|r| r.attempts > 0);
    for record in tried.filter(|r| r.pending.iter().any(|&k| k != stopped)) {
        other.records += 1;
        let error = record.last_error.clone().unwrap_or_default();
        // One message per failed projection, each starting with its store's name.
        let explained = record
            .pending
            .iter()
            .filter(|&&k| k != stopped)
            .all(|k| error.split("; ").any(|part| part.starts_with(&k.to_string())));
        if !explained {
            other.unexplained.push(format!("{:?} pending: {error}", record.pending));
        }
        if other.examples.len() < 3 && !other.examples.contains(&error) {
            other.examples.push(error);
        }
    }
    other
}

/// Whether `run` shows that `service` works again.
fn shows_recovery(service: ServiceKind, run: &RunRecord) -> bool {
    run.ok
        && match service {
            ServiceKind::Redis => run.kind == Kind::Read && matches!(run.cache.as_deref(), Some("hit" | "miss")),
            ServiceKind::Chroma => run.kind == Kind::Search,
            ServiceKind::Bolt => run.kind == Kind::Graph,
            ServiceKind::Postgres => run.kind.writes(),
        }
}

/// When the first run showing that `service` works again ended (see [`shows_recovery`]).
async fn wait_for_recovery(shared: &Shared, service: ServiceKind, up_at: Instant) -> Instant {
    loop {
        let found = shared
            .runs
            .lock()
            .expect("runs")
            .iter()
            .filter(|r| r.start >= up_at && shows_recovery(service, r))
            .map(|r| r.end)
            .min();
        if let Some(at) = found {
            return at;
        }
        assert!(
            up_at.elapsed() < RECOVERY_LIMIT,
            "the workload did not succeed again after {} came back",
            service_name(service)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Differences between PostgreSQL and the projections, by projection, with examples.
#[derive(Debug, Default)]
struct Differences {
    vector: Vec<String>,
    graph: Vec<String>,
    read_node: Vec<String>,
    cache_entries: Vec<String>,
    live_rows: usize,
    deleted_rows: usize,
    cache_entries_seen: usize,
}

/// An outgoing edge of a graph node: relation, target label (without the namespace), target id.
type Edge = (String, String, i64);

fn same_number(a: &Json, b: &Json) -> bool {
    matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

/// Compares every product row of PostgreSQL with the vector collection, the graph, what the
/// Read node serves and every entry Redis holds.
async fn compare_projections(fx: &Fixture, rows: &BTreeMap<i64, Json>) -> Differences {
    let mut diff = Differences::default();
    let live = |row: &Json| row["deleted_at"].is_null();
    diff.live_rows = rows.values().filter(|r| live(r)).count();
    diff.deleted_rows = rows.len() - diff.live_rows;

    // The vector collection, read with Chroma's own API.
    let docs = fx.vector_documents("products").await;
    for (id, row) in rows {
        match (live(row), docs.get(&id.to_string())) {
            (true, None) => diff.vector.push(format!("product {id} is missing")),
            (false, Some(_)) => diff.vector.push(format!("deleted product {id} is still there")),
            (false, None) => {}
            (true, Some((document, metadata))) => {
                let text = format!(
                    "{}\n{}",
                    row["name"].as_str().unwrap_or(""),
                    row["description"].as_str().unwrap_or("")
                );
                let fields_match = metadata.get("id").and_then(Json::as_i64) == Some(*id)
                    && metadata.get("sku") == Some(&row["sku"])
                    && metadata.get("active") == Some(&row["active"])
                    && metadata.get("category_id").and_then(Json::as_i64) == row["category_id"].as_i64()
                    && metadata.get("price").is_some_and(|p| same_number(p, &row["price"]))
                    && metadata.get("version").and_then(Json::as_i64) == row["version"].as_i64();
                if document != &text || !fields_match {
                    diff.vector
                        .push(format!("product {id}: document {document:?} metadata {metadata:?}, row {row}"));
                }
            }
        }
    }
    for id in docs.keys() {
        if !id.parse::<i64>().is_ok_and(|id| rows.contains_key(&id)) {
            diff.vector.push(format!("document {id} has no row"));
        }
    }

    // The graph, read with plain Cypher on a connection of its own (the server restarted). A
    // row per node (`id(n)`): two copies of one product node would otherwise group as one.
    let bolt = Services::global().await.bolt().await;
    let config = neo4rs::ConfigBuilder::default()
        .uri(bolt.uri.as_str())
        .user(bolt.user.as_str())
        .password(bolt.password.as_str())
        .db(bolt.database.as_str())
        .max_connections(2)
        .build()
        .expect("a Bolt configuration");
    let graph = neo4rs::Graph::connect(config).await.expect("connecting to the graph server");
    let namespace = fx.graph.as_ref().expect("a fixture with projections").1.clone();
    let text = format!(
        "MATCH (n:`{namespace}Product`) OPTIONAL MATCH (n)-[r]->(t) \
         RETURN id(n) AS node, n.id AS id, properties(n) AS props, collect([type(r), labels(t)[0], t.id]) AS edges"
    );
    let mut stream = graph.execute(neo4rs::query(&text)).await.expect("reading the graph");
    let mut nodes: HashMap<i64, (Map<String, Json>, Vec<Edge>)> = HashMap::new();
    while let Some(row) = stream.next().await.expect("reading the graph") {
        let row: Map<String, Json> = row.to().expect("a graph row");
        let id = row["id"].as_i64().expect("a node id");
        let props = row["props"].as_object().cloned().unwrap_or_default();
        let mut edges: Vec<Edge> = row["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e[0].as_str()?.to_owned(),
                    e[1].as_str()?.trim_start_matches(namespace.as_str()).to_owned(),
                    e[2].as_i64()?,
                ))
            })
            .collect();
        edges.sort();
        if nodes.insert(id, (props, edges)).is_some() {
            diff.graph.push(format!("product {id} has more than one node"));
        }
    }
    for (id, row) in rows {
        match (live(row), nodes.get(id)) {
            (true, None) => diff.graph.push(format!("product {id} is missing")),
            (false, Some(_)) => diff.graph.push(format!("deleted product {id} is still there")),
            (false, None) => {}
            (true, Some((props, edges))) => {
                let category = row["category_id"].as_i64().expect("a category");
                let fields_match = props.get("sku") == Some(&row["sku"])
                    && props.get("active") == Some(&row["active"])
                    && props.get("price").is_some_and(|p| same_number(p, &row["price"]))
                    && props.get("version").and_then(Json::as_i64) == row["version"].as_i64();
                if !fields_match || edges != &vec![("IN_CATEGORY".to_owned(), "Category".to_owned(), category)] {
                    diff.graph.push(format!("product {id}: node {props:?} edges {edges:?}, row {row}"));
                }
            }
        }
    }
    for id in nodes.keys() {
        if !rows.contains_key(id) {
            diff.graph.push(format!("node {id} has no row"));
        }
    }

    // What the Read node serves, twice: the first read may fill the cache, the second is
    // answered from it.
    for (id, row) in rows {
        for pass in 0..2 {
            let out = ProductReadNode
                .run(
                    &fx.ctx,
                    ReadInput {
                        id: *id,
                        include_deleted: false,
                        required: false,
                    },
                )
                .await
                .expect("a read");
            let served = out.record.map(|r| serde_json::to_value(r).expect("a record as JSON"));
            let wrong = match (&served, live(row)) {
                (None, false) => false,
                (Some(got), true) => Expected::from_json(got) != Expected::from_json(row) || got["version"] != row["version"],
                _ => true,
            };
            if wrong {
                diff.read_node
                    .push(format!("product {id} (pass {pass}, {:?}): served {served:?}, row {row}", out.cache));
            }
        }
    }

    // Every entry Redis holds for the products, read directly.
    let client = redis::Client::open(fx.redis_url.as_str()).expect("a Redis URL");
    let mut con = client.get_multiplexed_async_connection().await.expect("connecting to Redis");
    let pattern = format!("{}:products:*", fx.cache_prefix);
    let mut cursor: u64 = 0;
    let mut keys: Vec<String> = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .expect("SCAN");
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    for key in keys {
        let Some(raw): Option<String> = redis::cmd("GET").arg(&key).query_async(&mut con).await.expect("GET") else {
            continue;
        };
        if raw.starts_with('!') {
            // A tombstone: it only ever stops older fills.
            continue;
        }
        diff.cache_entries_seen += 1;
        let id: Option<i64> = key.rsplit(':').next().and_then(|s| s.parse().ok());
        let (version, payload) = raw.split_once('|').unwrap_or(("", ""));
        let payload: Json = serde_json::from_str(payload).unwrap_or(Json::Null);
        let ok = id.and_then(|id| rows.get(&id)).is_some_and(|row| {
            live(row) && version.parse::<i64>().ok() == row["version"].as_i64() && Expected::from_json(&payload) == Expected::from_json(row)
        });
        if !ok {
            diff.cache_entries.push(format!("{key} holds {raw}"));
        }
    }
    diff
}

/// How the ledger compares with PostgreSQL.
#[derive(Debug, Default)]
struct LedgerCheck {
    rows_committed: usize,
    lost: Vec<String>,
    /// Rows that show the values of a run that reported a failure: it committed, but its
    /// answer was lost with the server.
    ambiguous: Vec<String>,
    /// Rows that are in PostgreSQL but no run wrote.
    unknown: Vec<String>,
    partial_batches: Vec<String>,
    failed_batches_applied_whole: usize,
}

/// Compares what the runs reported with the rows of PostgreSQL.
fn check_ledger(clients: &[Client], rows: &BTreeMap<i64, Json>) -> LedgerCheck {
    let mut check = LedgerCheck::default();
    let by_sku: HashMap<&str, &Json> = rows.values().map(|r| (r["sku"].as_str().unwrap_or(""), r)).collect();
    let mut known = 0;
    for client in clients {
        for (sku, entry) in &client.ledger {
            let stored = by_sku.get(sku.as_str()).map(|r| Expected::from_json(r));
            if stored.is_some() {
                known += 1;
            }
            if entry.committed.is_some() {
                check.rows_committed += 1;
            }
            match stored {
                None if entry.committed.is_none() => {}
                None => check
                    .lost
                    .push(format!("{sku}: committed as {:?}, not in PostgreSQL", entry.committed)),
                Some(s) if Some(&s) == entry.committed.as_ref() => {}
                Some(s) if entry.maybe.contains(&s) => check.ambiguous.push(format!("{sku}: {s:?}")),
                Some(s) => check.lost.push(format!(
                    "{sku}: committed as {:?} (later failed writes {:?}), PostgreSQL holds {s:?}",
                    entry.committed, entry.maybe
                )),
            }
        }
    }
    if known != rows.len() {
        let ledger: std::collections::HashSet<&str> = clients.iter().flat_map(|c| c.ledger.keys().map(String::as_str)).collect();
        check.unknown = by_sku.keys().filter(|s| !ledger.contains(*s)).map(|s| s.to_string()).collect();
    }
    let mut by_tag: HashMap<&str, usize> = HashMap::new();
    for row in rows.values() {
        if let Some(tag) = row["attributes"]["batch"].as_str() {
            *by_tag.entry(tag).or_default() += 1;
        }
    }
    for client in clients {
        for bulk in &client.bulks {
            let found = by_tag.get(bulk.tag.as_str()).copied().unwrap_or(0);
            match (bulk.ok, found) {
                (true, n) if n == bulk.rows => {}
                (false, 0) => {}
                (false, n) if n == bulk.rows => check.failed_batches_applied_whole += 1,
                (ok, n) => check.partial_batches.push(format!(
                    "batch {} ({} rows, run {}): {n} rows carry its tag",
                    bulk.tag,
                    bulk.rows,
                    if ok { "succeeded" } else { "failed" }
                )),
            }
        }
    }
    check
}

/// Applies pending outbox records until none is left.
async fn sync_until_empty(fx: &Fixture) -> (u64, usize) {
    let stores = fx.ctx.stores();
    let mut applied = 0;
    let mut pass = 0;
    loop {
        pass += 1;
        applied += stores.outbox().sync().await.expect("sync").applied;
        if stores.outbox().pending_count().await.expect("pending count") == 0 {
            return (applied, pass);
        }
        assert!(
            pass < 240,
            "outbox records stayed pending: {:?}",
            stores.outbox().pending_records(5).await
        );
        // Records that failed wait for their backoff; cache invalidations are also applied by
        // the next read (a read first repairs the cache after a failed invalidation).
        if let Some(id) = fx.all_rows("products").await.keys().next() {
            let _ = ProductReadNode
                .run(
                    &fx.ctx,
                    ReadInput {
                        id: *id,
                        include_deleted: false,
                        required: false,
                    },
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The runs that started and ended while the server was down (stopped, not yet being started).
fn inside(runs: &[RunRecord], outage: &Outage) -> Vec<RunRecord> {
    runs.iter()
        .filter(|r| r.start >= outage.down_at && r.end <= outage.start_begin)
        .cloned()
        .collect()
}

/// Checks how an outage showed in the runs; returns the problems found.
fn check_outage(runs: &[RunRecord], outage: &Outage) -> Vec<String> {
    let mut problems = Vec::new();
    let name = service_name(outage.service);
    let store = store_name(outage.service);
    let during = inside(runs, outage);
    let of = |kind: Kind| during.iter().filter(move |r| r.kind == kind);
    let failed_other = |kinds: &[Kind]| -> Vec<String> {
        during
            .iter()
            .filter(|r| kinds.contains(&r.kind) && !r.ok)
            .map(|r| format!("{}: {:?}", r.kind.name(), r.error))
            .collect()
    };
    // The kinds each outage is about: the writes, and the one that reads the stopped store.
    let queried = match outage.service {
        ServiceKind::Redis => Some(Kind::Read),
        ServiceKind::Chroma => Some(Kind::Search),
        ServiceKind::Bolt => Some(Kind::Graph),
        ServiceKind::Postgres => None,
    };
    if outage.service == ServiceKind::Postgres {
        // While PostgreSQL is down every run waits for the pool before it fails, so a few
        // dozen runs fit in the outage and not every kind need be among them: at least one
        // write must be.
        if !during.iter().any(|r| r.kind.writes()) {
            problems.push(format!("{name}: no write run started and ended while it was down"));
        }
    } else {
        for kind in [Kind::Create, Kind::Update, Kind::Delete, Kind::Bulk].into_iter().chain(queried) {
            if of(kind).count() == 0 {
                problems.push(format!("{name}: no {} run started and ended while it was down", kind.name()));
            }
        }
    }
    match outage.service {
        ServiceKind::Redis => {
            let failed = failed_other(&Kind::ALL);
            if !failed.is_empty() {
                problems.push(format!("redis down: runs failed: {failed:?}"));
            }
            if let Some(r) = of(Kind::Read).find(|r| r.cache.as_deref() != Some("unavailable")) {
                problems.push(format!("redis down: a read says the cache answered: {r:?}"));
            }
            for r in during.iter().filter(|r| matches!(r.kind, Kind::Update | Kind::Delete | Kind::Bulk)) {
                if r.ok && r.pending != ["cache"] {
                    problems.push(format!("redis down: a {} left {:?} pending, not [cache]", r.kind.name(), r.pending));
                }
            }
            for r in of(Kind::Create) {
                if r.ok && !r.pending.is_empty() {
                    problems.push(format!("redis down: a create (nothing cached yet) left {:?} pending", r.pending));
                }
            }
        }
        ServiceKind::Chroma | ServiceKind::Bolt => {
            let (queried, other, projection) = if outage.service == ServiceKind::Chroma {
                (Kind::Search, Kind::Graph, "vector")
            } else {
                (Kind::Graph, Kind::Search, "graph")
            };
            let failed = failed_other(&[Kind::Create, Kind::Update, Kind::Delete, Kind::Bulk, Kind::Read, other]);
            if !failed.is_empty() {
                problems.push(format!("{name} down: runs that do not need it failed: {failed:?}"));
            }
            // The stopped server's projection is pending; another one may be too, but only
            // for a failure of its own store (`OtherPending`).
            for r in during.iter().filter(|r| r.kind.writes() && r.ok) {
                if !r.pending.iter().any(|p| p == projection) {
                    problems.push(format!(
                        "{name} down: a {} left {:?} pending, not [{projection}]",
                        r.kind.name(),
                        r.pending
                    ));
                }
            }
            for record in outage.other.unexplained.iter().take(3) {
                problems.push(format!("{name} down: another projection is pending because of it: {record}"));
            }
            if let Some(r) = of(queried).find(|r| r.ok) {
                problems.push(format!("{name} down: a {} succeeded: {r:?}", queried.name()));
            }
            if let Some(r) = of(queried).find(|r| !r.error.as_deref().unwrap_or("").contains(store)) {
                problems.push(format!(
                    "{name} down: a {} failed without naming the {store}: {:?}",
                    queried.name(),
                    r.error
                ));
            }
            if !of(queried).any(|r| r.error.as_deref().unwrap_or("").ends_with(&breaker_message(store))) {
                problems.push(format!("{name} down: no {} failed fast on the open breaker", queried.name()));
            }
        }
        ServiceKind::Postgres => {
            for r in during.iter().filter(|r| !r.ok) {
                if !r.error.as_deref().unwrap_or("").contains(store) {
                    problems.push(format!(
                        "postgres down: a {} failed without naming the {store}: {:?}",
                        r.kind.name(),
                        r.error
                    ));
                }
            }
            if let Some(r) = during.iter().find(|r| r.kind.writes() && r.ok) {
                problems.push(format!("postgres down: a write succeeded: {r:?}"));
            }
            if !during
                .iter()
                .any(|r| r.error.as_deref().unwrap_or("").ends_with(&breaker_message(store)))
            {
                problems.push("postgres down: no run failed fast on the open breaker".to_owned());
            }
        }
    }
    problems
}

/// What happens to each server in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Stopped (its shutdown signal) and started again.
    Stop,
    /// Interrupted without stopping: its container paused, or cut off the network.
    Interrupt(Interruption),
}

impl Fault {
    fn name(self) -> String {
        match self {
            Fault::Stop => "stop and restart".into(),
            Fault::Interrupt(how) => how.to_string(),
        }
    }
}

/// A server out of service during one outage, to be brought back.
enum Out {
    Stopped(dataflow_tests::harness::Stopped),
    Interrupted(dataflow_tests::harness::Interrupted),
}

impl Out {
    async fn bring_back(self) {
        match self {
            Out::Stopped(stopped) => stopped.start().await,
            Out::Interrupted(interrupted) => interrupted.end().await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_workload_survives_each_server_stopping_and_restarting() {
    mixed_workload(Fault::Stop).await;
}

/// A paused server accepts connections and answers nothing: calls wait for their timeouts
/// instead of failing at once. Needs the containers provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_workload_survives_each_server_pausing() {
    mixed_workload(Fault::Interrupt(Interruption::Pause)).await;
}

/// A server cut off the network keeps the clients' connections open and answers nothing on
/// them, and new connections go unanswered. Needs the containers provider (and root, for the
/// packet filter in the container's network namespace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_workload_survives_each_server_cut_off_the_network() {
    mixed_workload(Fault::Interrupt(Interruption::CutOff)).await;
}

/// The mixed workload while each server in turn suffers `fault`. Every fault must end with no
/// committed row lost and no projection different from PostgreSQL after `sync`; a stop must
/// also show in the runs as [`check_outage`] expects. Interruptions are not checked phase by
/// phase: how long a call waits on a server that does not answer is the store's timeout, and
/// which runs end inside the window varies.
async fn mixed_workload(fault: Fault) {
    let _serial = SERIAL.lock().await;
    let services = Services::global().await;
    if !services.can_restart() {
        return assert_eq!(services.provider(), Provider::External, "only external servers cannot be restarted");
    }
    if fault != Fault::Stop {
        assert_eq!(
            services.provider(),
            Provider::Containers,
            "a {} needs the containers provider (a Docker engine); run this test with it, or skip it",
            fault.name()
        );
    }
    // Short store timeouts, so an outage shows in seconds.
    let fx = Fixture::with_projections_config("fault_matrix", |c| Config {
        projection_timeout: Duration::from_secs(2),
        relational_timeout: Duration::from_secs(1),
        ..c
    })
    .await;
    let mut categories = Vec::new();
    for i in 0..CATEGORIES {
        let record: NewCategory = serde_json::from_value(
            json!({"slug": format!("fault-matrix-{i}"), "name": format!("Fault matrix {i}"), "description": "drills", "parent_id": null, "active": true}),
        )
        .expect("a category");
        categories.push(
            CategoryCreateNode
                .run(&fx.ctx, CreateInput { record })
                .await
                .expect("a category")
                .record
                .id(),
        );
    }
    let runtime = Runtime::with_options(
        dataflow_workflows::registry(),
        RunOptions {
            node_timeout: Duration::from_secs(10),
            retry: RetryPolicy {
                attempts: 2,
                backoff_ms: 50,
                max_backoff_ms: 200,
            },
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(1),
            ..RunOptions::default()
        },
    );
    let shared = Arc::new(Shared {
        runtime,
        ctx: fx.ctx.clone(),
        flows: flows(&categories),
        categories,
        stop: AtomicBool::new(false),
        runs: Mutex::new(Vec::new()),
    });

    let began = Instant::now();
    let clients: Vec<_> = (0..CLIENTS).map(|i| tokio::spawn(client(i, shared.clone()))).collect();
    tokio::time::sleep(WARM_UP).await;
    let mut outages = Vec::new();
    for service in [ServiceKind::Redis, ServiceKind::Chroma, ServiceKind::Bolt, ServiceKind::Postgres] {
        let stop_begin = Instant::now();
        let out = match fault {
            Fault::Stop => Out::Stopped(services.stop(service).await),
            Fault::Interrupt(how) => Out::Interrupted(services.interrupt(service, how).await),
        };
        let down_at = Instant::now();
        tokio::time::sleep(DOWN_FOR).await;
        let start_begin = Instant::now();
        let other = other_pending(&fx, service).await;
        out.bring_back().await;
        let up_at = Instant::now();
        let recovered_at = wait_for_recovery(&shared, service, up_at).await;
        // The projection that was down catches up while the workload goes on.
        let sync = match service {
            ServiceKind::Chroma | ServiceKind::Bolt => {
                let r = fx.ctx.stores().outbox().sync().await.expect("sync after the restart");
                // Why records failed again, if some did: those tried by this sync.
                let error = fx
                    .ctx
                    .stores()
                    .outbox()
                    .pending_records(100_000)
                    .await
                    .expect("pending records")
                    .into_iter()
                    .filter(|p| p.attempts >= 2)
                    .find_map(|p| p.last_error);
                Some((r.applied, r.failed, r.remaining, error))
            }
            _ => None,
        };
        tokio::time::sleep(SETTLE).await;
        outages.push(Outage {
            service,
            stop_begin,
            down_at,
            start_begin,
            up_at,
            recovered_at,
            sync,
            other,
        });
    }
    let tail_start = Instant::now();
    tokio::time::sleep(TAIL).await;
    while shared.runs.lock().expect("runs").len() < MIN_RUNS {
        assert!(
            tail_start.elapsed() < RECOVERY_LIMIT,
            "the workload is too slow to reach {MIN_RUNS} runs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shared.stop.store(true, Ordering::SeqCst);
    let mut done = Vec::new();
    for c in clients {
        done.push(c.await.expect("a client"));
    }
    let workload_time = began.elapsed();
    let runs = shared.runs.lock().expect("runs").clone();

    // PostgreSQL against the ledger, then the projections against PostgreSQL after sync.
    let rows = fx.all_rows("products").await;
    let ledger = check_ledger(&done, &rows);
    let (synced, sync_passes) = sync_until_empty(&fx).await;
    let dead = fx.ctx.stores().outbox().dead_letters(10).await.expect("dead letters");
    let rows = fx.all_rows("products").await;
    let diff = compare_projections(&fx, &rows).await;
    let stale: Vec<&String> = done.iter().flat_map(|c| &c.stale_reads).collect();
    let reads_checked: u64 = done.iter().map(|c| c.reads_checked).sum();

    // Checks of each phase.
    let mut problems: Vec<String> = Vec::new();
    let first_stop = outages[0].stop_begin;
    if let Some(r) = runs.iter().find(|r| r.end <= first_stop && !r.ok) {
        problems.push(format!("warm-up: a run failed: {r:?}"));
    }
    // After the last recovery and settle, everything works again in the same process.
    if let Some(r) = runs.iter().find(|r| r.start >= tail_start && !r.ok) {
        problems.push(format!("tail: a run failed after every server was back: {r:?}"));
    }
    if fault == Fault::Stop {
        for outage in &outages {
            problems.extend(check_outage(&runs, outage));
        }
    }

    // The summary, for docs/reliability.md.
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n=== fault matrix, {}: {} runs from {CLIENTS} clients in {} (whole test {}), {} provider ===",
        fault.name(),
        runs.len(),
        secs(workload_time),
        secs(began.elapsed()),
        services.provider()
    );
    let _ = writeln!(s, "{:<18} {:>6} {:>6} {:>7}", "runs per kind", "runs", "ok", "failed");
    for kind in Kind::ALL {
        let of: Vec<&RunRecord> = runs.iter().filter(|r| r.kind == kind).collect();
        let ok = of.iter().filter(|r| r.ok).count();
        let _ = writeln!(s, "  {:<16} {:>6} {:>6} {:>7}", kind.name(), of.len(), ok, of.len() - ok);
    }
    let mut bounds: Vec<(Instant, String)> = vec![(began, "warm-up".to_owned())];
    for o in &outages {
        bounds.push((o.stop_begin, format!("{} down", service_name(o.service))));
        bounds.push((o.up_at, format!("{} back", service_name(o.service))));
    }
    bounds.push((tail_start, "tail".to_owned()));
    let _ = writeln!(
        s,
        "{:<22} {:>8} {:>6} {:>6} {:>7}",
        "runs per phase (start)", "length", "runs", "ok", "failed"
    );
    for (i, (from, label)) in bounds.iter().enumerate() {
        let to = bounds.get(i + 1).map(|b| b.0);
        let of: Vec<&RunRecord> = runs.iter().filter(|r| r.start >= *from && to.is_none_or(|t| r.start < t)).collect();
        let ok = of.iter().filter(|r| r.ok).count();
        let length = to.unwrap_or_else(|| runs.iter().map(|r| r.end).max().unwrap_or(*from)) - *from;
        let _ = writeln!(
            s,
            "  {label:<20} {:>8} {:>6} {:>6} {:>7}",
            secs(length),
            of.len(),
            ok,
            of.len() - ok
        );
    }
    let _ = writeln!(
        s,
        "{:<14} {:>9} {:>10} {:>12} {:>13} {:>9} {:>9}  sync after recovery (applied/failed/remaining)",
        "outage", "stopping", "down", "restarting", "to success", "overlap", "failed"
    );
    for o in &outages {
        let overlapping: Vec<&RunRecord> = runs.iter().filter(|r| r.start < o.up_at && r.end > o.stop_begin).collect();
        let failed = overlapping.iter().filter(|r| !r.ok).count();
        let _ = writeln!(
            s,
            "  {:<12} {:>9} {:>10} {:>12} {:>13} {:>9} {:>9}  {}",
            service_name(o.service),
            secs(o.down_at - o.stop_begin),
            secs(o.start_begin - o.down_at),
            secs(o.up_at - o.start_begin),
            secs(o.recovered_at.saturating_duration_since(o.up_at)),
            overlapping.len(),
            failed,
            o.sync.as_ref().map_or("-".to_owned(), |(a, f, r, _)| format!("{a}/{f}/{r}"))
        );
    }
    let failed_bulks = done.iter().flat_map(|c| &c.bulks).filter(|b| !b.ok).count();
    let bulks = done.iter().map(|c| c.bulks.len()).sum::<usize>();
    let _ = writeln!(
        s,
        "ledger: {} writes reported committed on {} rows; lost {}; rows in PostgreSQL no run wrote {}; \
         failed runs whose write had committed {} (rows)",
        done.iter().map(|c| c.committed_writes).sum::<u64>(),
        ledger.rows_committed,
        ledger.lost.len(),
        ledger.unknown.len(),
        ledger.ambiguous.len(),
    );
    let _ = writeln!(
        s,
        "batches: {bulks} bulk upserts of {} rows, {failed_bulks} failed; partially written {}; failed but written whole {}",
        BULK_NEW + BULK_EXISTING,
        ledger.partial_batches.len(),
        ledger.failed_batches_applied_whole
    );
    let _ = writeln!(s, "reads checked against the ledger: {reads_checked}; stale {}", stale.len());
    let _ = writeln!(
        s,
        "sync at the end: {synced} records applied in {sync_passes} passes; pending 0; dead letters {}",
        dead.len()
    );
    let _ = writeln!(
        s,
        "differences after sync ({} live rows, {} deleted): vector {}, graph {}, Read node {}, cache entries {} (of {} entries)",
        diff.live_rows,
        diff.deleted_rows,
        diff.vector.len(),
        diff.graph.len(),
        diff.read_node.len(),
        diff.cache_entries.len(),
        diff.cache_entries_seen
    );
    let _ = writeln!(s, "errors seen (one example per kind of run, and per breaker or not):");
    for (i, o) in outages.iter().enumerate() {
        let next = outages.get(i + 1).map_or(tail_start, |n| n.stop_begin);
        for (when, from, to) in [("down", o.stop_begin, o.up_at), ("after restart", o.up_at, next)] {
            let mut seen: BTreeMap<(Kind, bool), String> = BTreeMap::new();
            for r in runs.iter().filter(|r| r.end > from && r.start < to && !r.ok) {
                let error = r.error.clone().unwrap_or_default();
                seen.entry((r.kind, error.contains("circuit breaker"))).or_insert(error);
            }
            if seen.is_empty() {
                let _ = writeln!(s, "  {} {when}: none", service_name(o.service));
            }
            for ((kind, _), error) in seen {
                let _ = writeln!(s, "  {} {when} / {}: {error}", service_name(o.service), kind.name());
            }
        }
        if let Some((_, _, _, Some(error))) = &o.sync {
            let _ = writeln!(s, "  {} sync after recovery: {error}", service_name(o.service));
        }
        if o.other.records > 0 {
            let _ = writeln!(
                s,
                "  {} down: {} records pending for another projection, e.g. {:?}",
                service_name(o.service),
                o.other.records,
                o.other.examples
            );
        }
    }
    for (label, list) in [
        ("lost", &ledger.lost),
        ("unknown rows", &ledger.unknown),
        ("partial batches", &ledger.partial_batches),
        ("vector differences", &diff.vector),
        ("graph differences", &diff.graph),
        ("Read node differences", &diff.read_node),
        ("cache entry differences", &diff.cache_entries),
        ("problems", &problems),
    ] {
        if !list.is_empty() {
            let _ = writeln!(s, "{label} ({}), first ones:", list.len());
            for item in list.iter().take(5) {
                let _ = writeln!(s, "  {item}");
            }
        }
    }
    if !stale.is_empty() {
        let _ = writeln!(s, "stale reads ({}), first ones:", stale.len());
        for item in stale.iter().take(5) {
            let _ = writeln!(s, "  {item}");
        }
    }
    {
        use std::io::Write as _;
        // The real stderr: the numbers must show even when the test passes.
        let _ = writeln!(std::io::stderr(), "{s}");
    }

    assert!(runs.len() >= MIN_RUNS, "{} runs", runs.len());
    assert!(
        ledger.lost.is_empty(),
        "committed writes were lost: {:?}",
        &ledger.lost[..ledger.lost.len().min(5)]
    );
    assert!(ledger.unknown.is_empty(), "rows no run wrote: {:?}", ledger.unknown);
    assert!(ledger.partial_batches.is_empty(), "partial batches: {:?}", ledger.partial_batches);
    assert!(stale.is_empty(), "stale reads: {stale:?}");
    assert!(dead.is_empty(), "dead letters: {dead:?}");
    assert!(diff.vector.is_empty(), "vector differences: {:?}", diff.vector);
    assert!(diff.graph.is_empty(), "graph differences: {:?}", diff.graph);
    assert!(diff.read_node.is_empty(), "Read node differences: {:?}", diff.read_node);
    assert!(diff.cache_entries.is_empty(), "cache differences: {:?}", diff.cache_entries);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// An invalidation that failed while Redis was down must be applied before reads trust the
/// cache again, however long the outage: reads during the outage retry the pending
/// invalidations (counting attempts), and a record that ran out of attempts must not let the
/// cache serve the entry Redis kept from before the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_redis_outage_never_lets_the_cache_serve_a_row_older_than_postgres() {
    let _serial = SERIAL.lock().await;
    let services = Services::global().await;
    if !services.can_restart() {
        return assert_eq!(services.provider(), Provider::External, "only external servers cannot be restarted");
    }
    // Few attempts, so that the outage outlasts them in seconds.
    let fx = Fixture::with_projections_config("fm_long_redis", |c| Config {
        outbox_max_attempts: 3,
        ..c
    })
    .await;
    let category: NewCategory = serde_json::from_value(
        json!({"slug": "long-redis", "name": "Long Redis outage", "description": "", "parent_id": null, "active": true}),
    )
    .expect("a category");
    let category = CategoryCreateNode
        .run(&fx.ctx, CreateInput { record: category })
        .await
        .expect("a category")
        .record
        .id();
    let mut row = dataflow_tests::fixture::sample_product(1);
    row["category_id"] = json!(category);
    let record: NewProduct = serde_json::from_value(row).expect("a product");
    let id = ProductCreateNode
        .run(&fx.ctx, CreateInput { record })
        .await
        .expect("a create")
        .record
        .id();
    let read = |ctx: Context| async move {
        let out = ProductReadNode
            .run(
                &ctx,
                ReadInput {
                    id,
                    include_deleted: false,
                    required: false,
                },
            )
            .await
            .expect("a read");
        (out.record.expect("the row").data.price, out.cache)
    };
    assert_eq!(read(fx.ctx.clone()).await, (1.5, CacheOutcome::Miss));
    assert_eq!(read(fx.ctx.clone()).await, (1.5, CacheOutcome::Hit), "the row is cached");

    let stopped = services.stop(ServiceKind::Redis).await;
    let mut patch = Map::new();
    patch.insert("price".into(), json!(9.5));
    let updated = ProductUpdateNode
        .run(&fx.ctx, UpdateInput::by_id(id, patch))
        .await
        .expect("an update with Redis down");
    assert_eq!(updated.pending, vec![StoreKind::Cache]);
    // Reads go on while Redis is down, each second one of them retries the invalidation,
    // until the record has used more than all its attempts.
    let mut reads = 0;
    loop {
        assert_eq!(read(fx.ctx.clone()).await.0, 9.5, "a read while Redis is down");
        reads += 1;
        let records = fx.ctx.stores().outbox().pending_records(10).await.expect("pending records");
        let dead = fx.ctx.stores().outbox().dead_letters(10).await.expect("dead letters");
        let attempts = records.iter().chain(&dead).map(|r| r.attempts).max().unwrap_or(0);
        if attempts > 3 || !dead.is_empty() {
            break;
        }
        assert!(reads < 300, "the reads did not retry the invalidation: {records:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stopped.start().await;
    // Redis kept the entry it held before the update ...
    let key = fx
        .ctx
        .stores()
        .cache_key(<dataflow_models::Product as dataflow_core::Model>::meta(), None, id);
    let held = fx.redis_get(&key).await.unwrap_or_default();
    assert!(held.contains("\"price\":1.5"), "{held}");
    // ... and no read serves it.
    for _ in 0..20 {
        assert_eq!(read(fx.ctx.clone()).await.0, 9.5, "a read served the entry from before the update");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The invalidation was applied: the cache serves the current row.
    assert_eq!(fx.ctx.stores().outbox().pending_count().await.expect("pending"), 0);
    assert!(fx.ctx.stores().outbox().dead_letters(10).await.expect("dead letters").is_empty());
    assert_eq!(read(fx.ctx.clone()).await, (9.5, CacheOutcome::Hit));
}
