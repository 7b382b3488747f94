//! The large-import figures of `benches/README.md`: 100,000 products (and their 5
//! categories) imported with every projection, on the servers or the embedded set
//! (`DATAFLOW_BENCH_BACKEND`), by two pipelines over the same file, each on fresh stores:
//!
//! - **streamed**: the shipped `import_catalog` (`ImportRecords`: the file read record by
//!   record, batches of 1,000 each committed with their outbox records);
//! - **whole file**: the pipeline `import_catalog` had before (`ReadRecords` reads the file
//!   into memory, one BulkUpsert per model writes every row in one transaction), with the node
//!   timeout lifted so that it finishes.
//!
//! Printed per pipeline: records, seconds, records per second, the process's resident memory
//! before and its peak growth during the import (sampled every 20 ms from `/proc/self/status`),
//! and the streamed/whole-file ratio of both. `DATAFLOW_BENCH_IMPORT_ROWS` changes the number
//! of products, `DATAFLOW_BENCH_IMPORT_BATCH` the streamed import's `batch_size`. Run: `cargo bench -p dataflow-benches --bench import`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dataflow_benches::{backend, backend_name, reference_workflow};
use dataflow_runtime::{RunOptions, RunStatus, Runtime, WorkflowBuilder};
use dataflow_tests::fixture::{Backend, Fixture, sample_product};
use serde_json::json;

/// Resident memory of this process in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Writes the catalogue file: 5 categories, then `products` products with ids.
fn write_catalogue(path: &std::path::Path, products: usize) -> u64 {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("the catalogue file"));
    for id in 1..=5 {
        let category = json!({"id": id, "slug": format!("bench-{id}"), "name": format!("Bench category {id}"), "description": "", "parent_id": null, "active": true});
        writeln!(out, "{}", json!({"model": "Category", "record": category})).unwrap();
    }
    for i in 0..products {
        let mut product = sample_product(i);
        product["id"] = json!(i + 1);
        product["description"] = json!(format!("A sturdy tool, number {i}, for drilling, fixing and cutting on site"));
        writeln!(out, "{}", json!({"model": "Product", "record": product})).unwrap();
    }
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

struct Figures {
    seconds: f64,
    records: u64,
    peak_growth: u64,
    rss_before: u64,
}

async fn measure(name: &str, backend: Backend, run: impl AsyncFnOnce(&Fixture) -> u64) -> Figures {
    let fx = Fixture::with_projections_on(backend, &format!("import_{name}")).await;
    let before = rss();
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let records = run(&fx).await;
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let figures = Figures {
        seconds,
        records,
        peak_growth: peak.load(Ordering::Relaxed).saturating_sub(before),
        rss_before: before,
    };
    println!(
        "{name:>10}: {records} records in {seconds:.1} s = {:.0} records/s; RSS {} MiB before, peak growth {} MiB",
        records as f64 / seconds,
        figures.rss_before >> 20,
        figures.peak_growth >> 20
    );
    figures
}

fn main() {
    let backend = backend();
    let products: usize = std::env::var("DATAFLOW_BENCH_IMPORT_ROWS")
        .ok()
        .map(|v| v.parse().expect("DATAFLOW_BENCH_IMPORT_ROWS: a number"))
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("dataflow-import-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("catalog.jsonl");
    let bytes = write_catalogue(&path, products);
    println!(
        "import bench on {}: {} products + 5 categories, {:.1} MiB of JSONL, every projection",
        backend_name(backend),
        products,
        bytes as f64 / (1 << 20) as f64
    );
    let batch: usize = std::env::var("DATAFLOW_BENCH_IMPORT_BATCH")
        .ok()
        .map(|v| v.parse().expect("DATAFLOW_BENCH_IMPORT_BATCH: a number"))
        .unwrap_or(dataflow_workflows::import::DEFAULT_BATCH);
    println!("streamed in batches of {batch}");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let streamed = measure("streamed", backend, async |fx| {
            let report = Runtime::new(dataflow_workflows::registry())
                .run(
                    &reference_workflow("import_catalog"),
                    &fx.ctx,
                    json!({"path": path, "batch_size": batch}),
                )
                .await;
            assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
            assert_eq!(report.outputs["rejected"], json!(0), "{}", report.outputs["rejected_lines"]);
            report.outputs["written"].as_u64().unwrap()
        })
        .await;
        let whole = measure("whole file", backend, async |fx| {
            let registry = dataflow_workflows::registry();
            let workflow = WorkflowBuilder::new("import_whole_file")
                .add_node("read", "ReadRecords", json!({"path": path}))
                .add_node("categories", "CategoryBulkUpsertNode", json!({}))
                .add_node("products", "ProductBulkUpsertNode", json!({}))
                .connect("read", "records.Category", "categories", "rows")
                .connect("read", "records.Product", "products", "rows")
                .after("products", "categories")
                .output("products", "products", "inserted")
                .output("categories", "categories", "inserted")
                .build(&registry)
                .expect("the whole-file workflow");
            let options = RunOptions {
                node_timeout: Duration::from_secs(3_600),
                ..RunOptions::default()
            };
            let report = Runtime::with_options(registry, options).run(&workflow, &fx.ctx, json!({})).await;
            assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
            report.outputs["products"].as_u64().unwrap() + report.outputs["categories"].as_u64().unwrap()
        })
        .await;
        println!(
            "streamed / whole file: {:.2}× the records/s, {:.2}× the peak memory growth",
            (streamed.records as f64 / streamed.seconds) / (whole.records as f64 / whole.seconds),
            streamed.peak_growth as f64 / whole.peak_growth.max(1) as f64
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
