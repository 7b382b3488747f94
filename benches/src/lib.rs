//! dataflow-benches: criterion benchmarks of the nodes against the live servers the test
//! harness starts or the embedded stores (see `benches/README.md` for how to run them and the
//! recorded figures), the backend switch they share, and the catalogue they run on.

#![warn(missing_docs)]

pub mod cpu;

pub use cpu::{CpuSnapshot, CpuUse};

use dataflow_core::nodes::bulk_upsert::BulkUpsertInput;
use dataflow_core::{Context, Node, ProjectionMode};
use dataflow_models::{CategoryBulkUpsertNode, ManufacturerBulkUpsertNode, SupplierBulkUpsertNode};
use dataflow_runtime::{Workflow, yaml};
use dataflow_tests::fixture::Backend;
use serde_json::{Value as Json, json};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable that chooses the backends a bench runs on: `servers` (the
/// default: PostgreSQL, Redis, Chroma and the Bolt graph server, started by the test harness)
/// or `embedded` (SQLite and the in-process cache in a fresh temporary directory).
pub const BACKEND_VAR: &str = "DATAFLOW_BENCH_BACKEND";

/// The backends chosen by [`BACKEND_VAR`]; [`Backend::Servers`] when it is unset.
///
/// # Panics
///
/// On any value other than `servers` or `embedded`.
pub fn backend() -> Backend {
    match std::env::var(BACKEND_VAR) {
        Err(std::env::VarError::NotPresent) => Backend::Servers,
        Ok(value) if value == "servers" => Backend::Servers,
        Ok(value) if value == "embedded" => Backend::Embedded,
        Ok(value) => panic!("{BACKEND_VAR}={value:?}: expected `servers` (the default) or `embedded`"),
        Err(e) => panic!("{BACKEND_VAR}: expected `servers` (the default) or `embedded`: {e}"),
    }
}

/// The environment variable choosing when writes apply their vector and graph projections
/// in the workflow bench: `inline` (the default) or `background`.
pub const PROJECTIONS_VAR: &str = "DATAFLOW_BENCH_PROJECTIONS";

/// The projection mode [`PROJECTIONS_VAR`] names.
pub fn projection_mode() -> ProjectionMode {
    match std::env::var(PROJECTIONS_VAR) {
        Err(std::env::VarError::NotPresent) => ProjectionMode::Inline,
        Ok(value) => value.parse().unwrap_or_else(|e| panic!("{PROJECTIONS_VAR}: {e}")),
        Err(e) => panic!("{PROJECTIONS_VAR}: {e}"),
    }
}

/// Waits until no outbox record is pending (the background projector or inline writes have
/// applied everything) and returns how long that took.
///
/// With inline projections nothing else applies a record whose projection failed (a Chroma
/// upsert that timed out on a loaded machine leaves its record pending, and the run succeeds):
/// then this runs `sync` until it is applied (or dead), and says how many there were.
pub async fn until_projected(ctx: &Context) -> Duration {
    let start = Instant::now();
    let outbox = ctx.stores().outbox();
    let mut synced = 0;
    while outbox.pending_count().await.expect("counting pending projections") > 0 {
        if outbox.projection_mode() == ProjectionMode::Inline {
            synced += outbox.sync().await.expect("syncing the outbox").applied;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if synced > 0 {
        println!("  {synced} records whose inline projections had failed were applied by a sync");
    }
    start.elapsed()
}

/// The backend's name as [`BACKEND_VAR`] spells it.
pub fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Servers => "servers",
        Backend::Embedded => "embedded",
    }
}

/// The criterion group name of `base` on `backend`: `base` itself on the servers (the names
/// the recorded figures and `scripts/sla` use), `{base}_embedded` on the embedded set. The
/// bench ids inside a group are the same on both, so `relational/create` and
/// `relational_embedded/create` compare directly, and each has its own directory under
/// `target/criterion`.
pub fn group_name(base: &str, backend: Backend) -> String {
    match backend {
        Backend::Servers => base.to_owned(),
        Backend::Embedded => format!("{base}_embedded"),
    }
}

/// Categories in the bench catalogue (5 roots, each with 4 children).
pub const CATEGORIES: usize = 20;
/// Manufacturers in the bench catalogue.
pub const MANUFACTURERS: usize = 50;
/// Suppliers in the bench catalogue.
pub const SUPPLIERS: usize = 100;

/// Bench product `i`: a unique SKU, a price from 0.99 to 999.99, two in three active, and
/// spread over the catalogue's categories, manufacturers and suppliers.
pub fn product(i: usize) -> Json {
    json!({"sku": format!("B-{i:08}"), "name": format!("Bench product {i}"), "description": "Cordless drill driver, 18 V, two batteries",
           "price": (i % 1000) as f64 + 0.99, "currency": "EUR", "stock": (i % 50) as i64, "weight_kg": 1.5,
           "active": !i.is_multiple_of(3), "category_id": (i % CATEGORIES) as i64 + 1,
           "manufacturer_id": (i % MANUFACTURERS) as i64 + 1, "supplier_id": (i % SUPPLIERS) as i64 + 1,
           "attributes": {"voltage": 18}})
}

/// Writes the categories, manufacturers and suppliers that bench products point at, with
/// ids 1..=N (so `product(i)`'s foreign keys name real rows).
pub async fn seed_catalogue(ctx: &Context) {
    let categories = (1..=CATEGORIES)
        .map(|id| {
            let parent = if id <= 5 { Json::Null } else { json!((id - 1) % 5 + 1) };
            json!({"id": id, "slug": format!("category-{id}"), "name": format!("Category {id}"), "description": "Bench category", "parent_id": parent, "active": true})
        })
        .collect();
    let manufacturers = (1..=MANUFACTURERS)
        .map(|id| json!({"id": id, "name": format!("Maker {id}"), "country": "DE", "website": null, "description": "Bench maker"}))
        .collect();
    let suppliers = (1..=SUPPLIERS)
        .map(|id| json!({"id": id, "code": format!("SUP-{id:05}"), "name": format!("Supplier {id}"), "email": "s@example.com", "country": "NL", "rating": 4.0, "lead_time_days": 3, "active": true}))
        .collect();
    for (name, out) in [
        (
            "categories",
            CategoryBulkUpsertNode
                .run(
                    ctx,
                    BulkUpsertInput {
                        rows: categories,
                        ..Default::default()
                    },
                )
                .await,
        ),
        (
            "manufacturers",
            ManufacturerBulkUpsertNode
                .run(
                    ctx,
                    BulkUpsertInput {
                        rows: manufacturers,
                        ..Default::default()
                    },
                )
                .await,
        ),
        (
            "suppliers",
            SupplierBulkUpsertNode
                .run(
                    ctx,
                    BulkUpsertInput {
                        rows: suppliers,
                        ..Default::default()
                    },
                )
                .await,
        ),
    ] {
        let out = out.unwrap_or_else(|e| panic!("seeding {name}: {e}"));
        assert!(out.errors.is_empty() && out.pending.is_empty(), "seeding {name}: {out:?}");
    }
}

/// The reference workflow `workflows/{name}.yaml`, loaded against the full registry.
///
/// # Panics
///
/// When the file does not load: the diagnostics are the message.
pub fn reference_workflow(name: &str) -> Workflow {
    let registry = dataflow_workflows::registry();
    yaml::load_file(dataflow_workflows::workflow_file(name), &registry).unwrap_or_else(|e| panic!("{e}"))
}

/// The nearest-rank `p`-quantile (`0.0..=1.0`) of `sorted`, which must be sorted and not empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// A new product for `classify_product`: the sample new products (`new_products.jsonl`, read
/// once, so that no timed run pays for reading the file) in turn, each with the unique SKU
/// `{prefix}-{i:06}`.
pub fn new_product(prefix: &str, i: usize) -> Json {
    static SAMPLES: OnceLock<Vec<Json>> = OnceLock::new();
    let samples = SAMPLES.get_or_init(|| {
        let path = dataflow_workflows::data_dir().join("new_products.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .collect()
    });
    let mut product = samples[i % samples.len()].clone();
    product["sku"] = json!(format!("{prefix}-{i:06}"));
    product
}

/// The process's resident memory in MiB, from `VmRSS` in `/proc/self/status`.
pub fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib / 1024.0
}

/// Imports the sample catalogue (`workflows/data/catalog.jsonl`, every projection) through the
/// `import_catalog` workflow on `runtime`.
///
/// # Panics
///
/// When the import fails.
pub async fn import_sample_catalog(runtime: &dataflow_runtime::Runtime, fx: &dataflow_tests::fixture::Fixture) {
    let import = runtime
        .run(
            &reference_workflow("import_catalog"),
            &fx.ctx,
            json!({"path": dataflow_workflows::data_dir().join("catalog.jsonl")}),
        )
        .await;
    assert_eq!(import.status, dataflow_runtime::RunStatus::Succeeded, "import: {:?}", import.error);
}

/// Creates the sample project of `workflows/data/sample_project.json` (its customer, then the
/// project) through a small workflow on `runtime`; returns the context of the sample's tenant
/// and the project's id.
///
/// # Panics
///
/// When the sample does not load or the workflow fails.
pub async fn create_sample_project(runtime: &dataflow_runtime::Runtime, fx: &dataflow_tests::fixture::Fixture) -> (Context, i64) {
    let path = dataflow_workflows::data_dir().join("sample_project.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sample: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ctx = fx.tenant(sample["tenant"].as_str().expect("the sample names its tenant"));
    let setup = dataflow_runtime::WorkflowBuilder::new("setup")
        .add_node("customer", "CustomerCreateNode", json!({"record": sample["customer"]}))
        .add_node("project", "ProjectCreateNode", json!({"record": sample["project"]}))
        .connect("customer", "record.id", "project", "record.customer_id")
        .output("project", "project", "record.id")
        .build(&dataflow_workflows::registry())
        .expect("the setup workflow");
    let report = runtime.run(&setup, &ctx, json!({})).await;
    let project = report.outputs["project"]
        .as_i64()
        .unwrap_or_else(|| panic!("the sample project: {:?}", report.error));
    (ctx, project)
}
