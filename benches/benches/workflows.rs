//! Load harness for the reference workflows: `classify_product` and `recommend_for_project`
//! on the sample catalogue, p50 and p95 with one client, and `classify_product` throughput
//! with 100 concurrent clients. Prints its figures; run with
//! `cargo bench -p dataflow-benches --bench workflows`.
//!
//! `DATAFLOW_BENCH_BACKEND=servers` (the default) runs on live PostgreSQL, Redis, Chroma and
//! the Bolt graph server (harness-started local processes) and writes the figures `scripts/sla`
//! gates to `target/load/workflows.json`; `DATAFLOW_BENCH_BACKEND=embedded` runs on the
//! embedded set and writes `target/load/workflows_embedded.json`.
//! `DATAFLOW_BENCH_PROJECTIONS=background` applies the writes' vector and graph projections in
//! the background ([`dataflow_core::ProjectionMode`]), adds `_background` to the file name, and
//! also reports how long the projections took to catch up after each phase (the bench waits
//! for them before a phase that reads them). `DATAFLOW_LOAD_SEQUENTIAL` (default 200) and
//! `DATAFLOW_LOAD_RUNS` (default 1,000) shorten a run; with either changed the figures file is
//! not written, so a short run never feeds the gates. `DATAFLOW_BENCH_MAX_CONNECTIONS` sets
//! the PostgreSQL pool's size ([`dataflow_core::Config::max_connections`], default 16), for
//! tuning; with it set the figures file is not written either. `DATAFLOW_BENCH_EMBEDDER=minilm`
//! embeds with the sentence model instead of the hashing embedder (the model files from
//! `scripts/install-services`), and adds `_minilm` to the figures file's name.
//!
//! Every run also prints the CPU budget of the 100-client phase ([`dataflow_benches::cpu`]):
//! CPU milliseconds per classification spent by this process and by each local server's
//! process tree, from the first run until the projections have caught up (so background
//! projections are counted), their total, and the classification rate the machine's cores
//! allow at that cost beside the measured one. The figures file gets them as
//! `cpu_ms_per_classification_{bench,postgres,redis,chroma,graph,total}` (no gate reads them).

use std::time::{Duration, Instant};

use dataflow_benches::cpu::{CpuMeter, workload_processes};
use dataflow_benches::{
    backend, backend_name, create_sample_project, import_sample_catalog, new_product, percentile, projection_mode, reference_workflow,
    until_projected,
};
use dataflow_core::ProjectionMode;
use dataflow_runtime::{RunStatus, Runtime};
use dataflow_tests::fixture::{Backend, Fixture};
use dataflow_workflows::registry;
use futures::StreamExt;
use serde_json::json;

/// Runs of each workflow with one client, unless `DATAFLOW_LOAD_SEQUENTIAL` says otherwise.
const SEQUENTIAL: usize = 200;
const CONCURRENT_CLIENTS: usize = 100;
/// `classify_product` runs from the concurrent clients, unless `DATAFLOW_LOAD_RUNS` says
/// otherwise.
const CONCURRENT_RUNS: usize = 1_000;
/// The PostgreSQL pool's size for a tuning run (the default, 16, when unset).
const MAX_CONNECTIONS_VAR: &str = "DATAFLOW_BENCH_MAX_CONNECTIONS";

/// The count in the environment variable `var`, or `default` when it is unset.
fn count(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Err(std::env::VarError::NotPresent) => default,
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => panic!("{var}={v:?}: expected a positive count (default {default})"),
        },
        Err(e) => panic!("{var}: {e}"),
    }
}

/// Prints one line and returns `(p50, p95)` in milliseconds.
fn report(what: &str, mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what:48} n={:5}  p50 {:8.2} ms  p95 {:8.2} ms  max {:8.2} ms",
        times.len(),
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.95)),
        ms(*times.last().unwrap())
    );
    (ms(percentile(&times, 0.50)), ms(percentile(&times, 0.95)))
}

fn main() {
    let backend = backend();
    let sequential = count("DATAFLOW_LOAD_SEQUENTIAL", SEQUENTIAL);
    let concurrent_runs = count("DATAFLOW_LOAD_RUNS", CONCURRENT_RUNS);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mode = projection_mode();
        let max_connections = std::env::var_os(MAX_CONNECTIONS_VAR).map(|_| count(MAX_CONNECTIONS_VAR, 16));
        let mut pool_size = 0;
        let minilm = match std::env::var("DATAFLOW_BENCH_EMBEDDER").as_deref() {
            Err(_) | Ok("" | "hashing") => false,
            Ok("minilm") => true,
            Ok(other) => panic!("DATAFLOW_BENCH_EMBEDDER={other:?}: expected hashing or minilm"),
        };
        let fx = Fixture::with_projections_config_on(backend, "bench_workflows", |mut c| {
            if let Some(n) = max_connections {
                c.max_connections = n as u32;
            }
            if minilm {
                c = c.with_embedder(dataflow_tests::models::minilm());
            }
            pool_size = c.max_connections;
            c.with_projections(mode)
        })
        .await;
        let pool = match backend {
            Backend::Servers => format!("a pool of {pool_size} PostgreSQL connections"),
            Backend::Embedded => "one SQLite connection".to_owned(),
        };
        println!(
            "backend: {}, projections {mode:?}, embedder {} ({} sequential runs per workflow, {concurrent_runs} runs from {CONCURRENT_CLIENTS} clients, {pool})",
            backend_name(backend),
            fx.ctx.stores().embedder().name(),
            sequential
        );
        // How long the projections took to catch up after each phase (0 with inline ones).
        let mut catch_up_ms = serde_json::Map::new();
        let mut catch_up = async |phase: &str| {
            let lag = until_projected(&fx.ctx).await;
            if mode == ProjectionMode::Background {
                println!("  {phase}: projections caught up {:.1} ms after it ended", lag.as_secs_f64() * 1e3);
            }
            catch_up_ms.insert(format!("catch_up_after_{phase}_ms"), json!(lag.as_secs_f64() * 1e3));
        };
        let runtime = Runtime::new(registry());
        let started = Instant::now();
        import_sample_catalog(&runtime, &fx).await;
        println!(
            "import_catalog (676 records, every projection): {:.2} s",
            started.elapsed().as_secs_f64()
        );
        catch_up("import").await;

        let classify = reference_workflow("classify_product");
        let mut times = Vec::new();
        let mut per_node: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        for i in 0..sequential {
            let t = Instant::now();
            let r = runtime.run(&classify, &fx.ctx, json!({"product": new_product("LOAD", i)})).await;
            assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
            times.push(t.elapsed());
            for node in &r.nodes {
                per_node
                    .entry(format!("{} ({})", node.name, node.node_type))
                    .or_default()
                    .push(node.duration_ms);
            }
        }
        for (node, mut ms) in per_node {
            ms.sort_by(f64::total_cmp);
            println!(
                "  classify_product node {node:44} p50 {:8.2} ms  p95 {:8.2} ms",
                ms[ms.len() / 2],
                ms[ms.len() * 95 / 100]
            );
        }
        let (classify_p50, classify_p95) = report("classify_product, 1 client", times);
        catch_up("classify_sequential").await;

        // Read after the sequential phase: every server it needs has started by now.
        let cpu = CpuMeter::start(workload_processes(backend).await);
        let t = Instant::now();
        let runs = futures::stream::iter((0..concurrent_runs).map(|i| {
            let (runtime, classify, ctx) = (&runtime, &classify, &fx.ctx);
            async move {
                let t = Instant::now();
                let r = runtime
                    .run(classify, ctx, json!({"product": new_product("LOAD", 100_000 + i)}))
                    .await;
                (r.status, t.elapsed(), r.error)
            }
        }))
        .buffer_unordered(CONCURRENT_CLIENTS)
        .collect::<Vec<_>>()
        .await;
        let wall = t.elapsed();
        let failed = runs.iter().filter(|(s, _, _)| *s != RunStatus::Succeeded).count();
        let errors: std::collections::BTreeSet<&str> = runs.iter().filter_map(|(_, _, e)| e.as_deref()).collect();
        for error in errors {
            println!("  a failed run: {error}");
        }
        report(
            &format!("classify_product, {CONCURRENT_CLIENTS} clients"),
            runs.iter().map(|(_, d, _)| *d).collect(),
        );
        println!(
            "classify_product, {CONCURRENT_CLIENTS} clients: {concurrent_runs} runs in {:.2} s = {:.0} classifications/s, {failed} failed",
            wall.as_secs_f64(),
            concurrent_runs as f64 / wall.as_secs_f64()
        );
        catch_up("classify_concurrent").await;
        let cpu = cpu.stop();
        if backend == Backend::Embedded {
            println!("embedded backend: every store runs inside the bench process, so its CPU is the whole cost");
        }
        println!("CPU budget of the {CONCURRENT_CLIENTS}-client phase, from its first run until its projections were applied:");
        cpu.print("classification", concurrent_runs, concurrent_runs as f64 / wall.as_secs_f64());

        let (ctx, project) = create_sample_project(&runtime, &fx).await;
        catch_up("project").await;
        let recommend = reference_workflow("recommend_for_project");
        let mut times = Vec::new();
        for _ in 0..sequential {
            let t = Instant::now();
            let r = runtime.run(&recommend, &ctx, json!({"project_id": project})).await;
            assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
            times.push(t.elapsed());
        }
        let (recommend_p50, recommend_p95) = report("recommend_for_project, 1 client", times);

        // The ceiling of the classification rate: each classification makes one vector query,
        // so the vector store's own rate of top-10 queries from as many clients bounds it.
        let vectors = fx.ctx.stores().vector().expect("a vector store");
        let embedder = fx.ctx.stores().embedder();
        let queries: Vec<Vec<f32>> = (0..concurrent_runs)
            .map(|i| embedder.embed(&[format!("Cordless drill {i}").as_str()]).expect("an embedding").remove(0))
            .collect();
        let t = Instant::now();
        futures::stream::iter(queries.iter().map(|q| async move {
            vectors.query("products", q, 10, None).await.expect("a vector query");
        }))
        .buffer_unordered(CONCURRENT_CLIENTS)
        .collect::<Vec<_>>()
        .await;
        let vector_queries_per_second = concurrent_runs as f64 / t.elapsed().as_secs_f64();
        println!(
            "ceiling: {concurrent_runs} raw top-10 vector queries from {CONCURRENT_CLIENTS} clients: {vector_queries_per_second:.0} queries/s"
        );
        let classify_per_second = concurrent_runs as f64 / wall.as_secs_f64();
        // The same queries one per request (no shared requests): the ceiling a classification
        // rate was compared with before issue 18, and the ratio to it in this run.
        let mut alone = serde_json::Map::new();
        if let Some((url, prefix)) = &fx.chroma {
            let chroma = dataflow_core::ChromaStore::new(url, prefix, Duration::from_secs(30)).expect("a Chroma client");
            let chroma = &chroma;
            let t = Instant::now();
            futures::stream::iter(queries.iter().map(|q| async move {
                chroma.query_alone("products", q, 10).await.expect("a vector query");
            }))
            .buffer_unordered(CONCURRENT_CLIENTS)
            .collect::<Vec<_>>()
            .await;
            let per_second = concurrent_runs as f64 / t.elapsed().as_secs_f64();
            let ratio = classify_per_second / per_second;
            println!(
                "ceiling, one query per request: {per_second:.0} queries/s; classifications/s ÷ that ceiling = {ratio:.3} (÷ the shared ceiling: {:.3})",
                classify_per_second / vector_queries_per_second
            );
            alone.insert("vector_queries_alone_per_second_100_clients".into(), json!(per_second));
            alone.insert("classify_to_alone_ceiling_ratio".into(), json!(ratio));
        }

        // For `scripts/sla`: the figures its gates read (it reads the servers' two files only).
        let file = match (backend, mode) {
            (Backend::Servers, ProjectionMode::Inline) => "workflows",
            (Backend::Servers, ProjectionMode::Background) => "workflows_background",
            (Backend::Embedded, ProjectionMode::Inline) => "workflows_embedded",
            (Backend::Embedded, ProjectionMode::Background) => "workflows_embedded_background",
        };
        let file = format!("{file}{}.json", if minilm { "_minilm" } else { "" });
        if sequential != SEQUENTIAL || concurrent_runs != CONCURRENT_RUNS || max_connections.is_some() {
            println!("shortened or tuning run: target/load/{file} not written");
            return;
        }
        let mut figures = json!({
            "backend": backend_name(backend),
            "projections": format!("{mode:?}").to_lowercase(),
            "classify_p50_ms": classify_p50,
            "classify_p95_ms": classify_p95,
            "classify_per_second_100_clients": classify_per_second,
            "classify_failed_100_clients": failed,
            "recommend_p50_ms": recommend_p50,
            "recommend_p95_ms": recommend_p95,
            "vector_queries_per_second_100_clients": vector_queries_per_second,
        });
        figures.as_object_mut().expect("an object").extend(catch_up_ms);
        figures.as_object_mut().expect("an object").extend(alone);
        figures
            .as_object_mut()
            .expect("an object")
            .extend(cpu.figures("classification", concurrent_runs));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/load");
        std::fs::create_dir_all(&dir).expect("target/load");
        std::fs::write(dir.join(&file), serde_json::to_string_pretty(&figures).unwrap()).expect("writing the figures");
        println!("figures written to target/load/{file}");
    });
}
