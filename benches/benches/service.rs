//! The service under load (issue 20), as separate processes on the harness's live servers:
//! `GET /health` latency with `wrk` (another process) holding ten connections busy, then the
//! submit-to-finish latency and the throughput of runs with 1, 2 and 4 `dataflow worker`
//! processes, and where the CPU went (per process) in each.
//!
//! The run is `open_project` (the test workflow of `workflows/tests/workflows`): a customer
//! created, a project created, the project updated, with their projections to Chroma, the
//! graph server and Redis; the same work the kill test does 200 times.
//!
//! ```sh
//! cargo build --release -p dataflow-workflows --bin dataflow
//! DATAFLOW_TEST_PROVIDER=local cargo bench -p dataflow-benches --bench service
//! ```
//! `DATAFLOW_BIN` names another `dataflow` binary; `SERVICE_BENCH_SECS` the seconds of each
//! throughput stretch (default 15).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dataflow_benches::cpu::{CpuMeter, Watched, workload_processes};
use dataflow_benches::percentile;
use dataflow_core::chrono::DateTime;
use dataflow_tests::fixture::Backend;
use dataflow_tests::process::{Process, create_key, dataflow_command, printed_key, served_address, server_settings, start};
use serde_json::{Value, json};

/// Runs in flight at once in the throughput stretches: far more than the workers take, so the
/// queue never runs dry.
const CLIENTS: usize = 32;
/// Runs each `dataflow worker` executes at once.
const WORKER_CONCURRENCY: usize = 8;
/// Runs submitted one after another for the latency of one run on an idle queue.
const SEQUENTIAL_RUNS: usize = 40;

fn dataflow_bin() -> PathBuf {
    let path = std::env::var_os("DATAFLOW_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join("release/dataflow")
    });
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --release -p dataflow-workflows --bin dataflow` (or name one with DATAFLOW_BIN)",
        path.display()
    );
    path
}

fn test_workflows() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../workflows/tests/workflows")
        .display()
        .to_string()
}

fn command(args: &[&str], env: &[(&'static str, String)]) -> Command {
    dataflow_command(&dataflow_bin(), args, env)
}

async fn server_env() -> Vec<(&'static str, String)> {
    let mut env = server_settings("bench_service").await;
    env.push(("RUST_LOG", "warn".into()));
    env
}

fn key(env: &[(&'static str, String)], role: &str) -> String {
    create_key(&dataflow_bin(), env, "bench", role)
}

/// A duration in `wrk`'s notation (`812.00us`, `1.23ms`, `2.00s`).
fn wrk_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| Duration::from_secs_f64(n * scale))
}

/// `GET /health` under `wrk`: ten connections for `secs` seconds from one thread.
fn health_under_load(base: &str, viewer: &str, server: &Process, secs: u64, env_watch: Vec<Watched>) {
    let mut watched = env_watch;
    watched.push(Watched::process(
        "serve",
        format!("dataflow serve (pid {})", server.pid()),
        server.pid(),
    ));
    let meter = CpuMeter::start(watched);
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c10",
            &format!("-d{secs}s"),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {viewer}"),
        ])
        .arg(format!("{base}/health"))
        .output()
        .expect("wrk runs (scripts/install-services installs it)");
    let budget = meter.stop();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut quantiles = Vec::new();
    let mut rate = 0.0;
    let mut errors = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [q @ ("50%" | "90%" | "99%"), value] => quantiles.push((q.to_string(), wrk_duration(value))),
            ["Requests/sec:", value] => rate = value.parse().unwrap_or(0.0),
            ["Non-2xx", ..] | ["Socket", ..] => errors.push_str(line),
            _ => {}
        }
    }
    println!(
        "\n== GET /health, wrk -t1 -c10 -d{secs}s (another process): the key checked on each request, the stores at most once a second"
    );
    for (q, value) in &quantiles {
        println!(
            "  p{}: {:.2} ms",
            q.trim_end_matches('%'),
            value.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        );
    }
    let p99 = quantiles
        .iter()
        .find(|(q, _)| q == "99%")
        .and_then(|(_, v)| *v)
        .expect("wrk prints the 99th percentile");
    println!(
        "  {rate:.0} requests/s; p99 {:.2} ms against the 100 ms target: {:.1}x under it{}",
        p99.as_secs_f64() * 1e3,
        0.1 / p99.as_secs_f64(),
        if errors.is_empty() {
            String::new()
        } else {
            format!("; errors: {errors}")
        }
    );
    budget.print("request", (rate * secs as f64) as usize, rate);
}

struct Stretch {
    latencies: Vec<Duration>,
    server_side: Vec<Duration>,
    runs: usize,
    seconds: f64,
}

/// `clients` loops submitting `open_project` with `?wait=true` until `until`; each run's
/// latency as the client saw it and as recorded (submitted to finished).
async fn submit_loop(
    base: &str,
    operator: &str,
    clients: usize,
    until: Option<Instant>,
    runs_each: usize,
    numbers: &Arc<AtomicUsize>,
) -> Stretch {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build().unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let http = http.clone();
            let url = format!("{base}/v1/workflows/open_project/runs?wait=true&wait_secs=120");
            let operator = operator.to_owned();
            let numbers = numbers.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..runs_each {
                    if until.is_some_and(|u| Instant::now() >= u) {
                        break;
                    }
                    let n = numbers.fetch_add(1, Ordering::Relaxed);
                    let body = json!({
                        "customer": {"name": format!("Customer {n}"), "email": format!("bench{n}@example.com"), "segment": "retail", "country": "DE", "credit_limit": 100.0},
                        "project_name": format!("Project {n}"),
                    });
                    let sent = Instant::now();
                    let response = http.post(&url).bearer_auth(&operator).json(&body).send().await.expect("the server answers");
                    let status = response.status();
                    let run: Value = response.json().await.expect("a JSON run");
                    let took = sent.elapsed();
                    assert!(status.is_success() && run["status"] == "succeeded", "{status}: {run}");
                    let at = |field: &str| DateTime::parse_from_rfc3339(run[field].as_str().unwrap()).unwrap();
                    let recorded = (at("finished_at") - at("submitted_at")).to_std().unwrap_or_default();
                    seen.push((took, recorded));
                }
                seen
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut server_side = Vec::new();
    for task in tasks {
        for (took, recorded) in task.await.unwrap() {
            latencies.push(took);
            server_side.push(recorded);
        }
    }
    latencies.sort();
    server_side.sort();
    Stretch {
        runs: latencies.len(),
        latencies,
        server_side,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u64 = std::env::var("SERVICE_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let env = server_env().await;
    let workflows = test_workflows();
    let (server, lines) = start(
        command(&["serve", "--listen", "127.0.0.1:0", "--workflows", &workflows], &env),
        "serve",
        |line| line.starts_with("serving "),
    );
    printed_key(&lines).expect("the first serve prints an admin key");
    let base = format!("http://{}", served_address(lines.last().unwrap()).expect("the serving line"));
    let viewer = key(&env, "viewer");
    let operator = key(&env, "operator");
    let stores = workload_processes(Backend::Servers).await;

    health_under_load(&base, &viewer, &server, secs, stores.clone());

    let numbers = Arc::new(AtomicUsize::new(0));
    let mut summary = Vec::new();
    for count in [1usize, 2, 4] {
        let workers: Vec<Process> = (0..count)
            .map(|i| {
                let name = format!("bench-w{i}");
                let concurrency = WORKER_CONCURRENCY.to_string();
                start(
                    command(
                        &["worker", "--name", &name, "--concurrency", &concurrency, "--workflows", &workflows],
                        &env,
                    ),
                    &name,
                    |line| line.starts_with("worker "),
                )
                .0
            })
            .collect();
        // Warm every worker's connections and caches before measuring.
        submit_loop(&base, &operator, CLIENTS, None, 2, &numbers).await;
        let one = submit_loop(&base, &operator, 1, None, SEQUENTIAL_RUNS, &numbers).await;
        let mut watched = stores.clone();
        watched.push(Watched::process(
            "serve",
            format!("dataflow serve (pid {})", server.pid()),
            server.pid(),
        ));
        for (i, w) in workers.iter().enumerate() {
            watched.push(Watched::process(
                ["worker0", "worker1", "worker2", "worker3"][i],
                format!("dataflow worker {i} (pid {})", w.pid()),
                w.pid(),
            ));
        }
        let meter = CpuMeter::start(watched);
        let load = submit_loop(
            &base,
            &operator,
            CLIENTS,
            Some(Instant::now() + Duration::from_secs(secs)),
            usize::MAX,
            &numbers,
        )
        .await;
        let budget = meter.stop();
        let rate = load.runs as f64 / load.seconds;
        println!("\n== {count} worker(s), {WORKER_CONCURRENCY} runs at once each: open_project submitted with ?wait=true");
        println!(
            "  one run at a time ({} runs): submit to answer p50 {:.1} ms, p95 {:.1} ms; recorded submit to finish p50 {:.1} ms",
            one.runs,
            ms(percentile(&one.latencies, 0.5)),
            ms(percentile(&one.latencies, 0.95)),
            ms(percentile(&one.server_side, 0.5)),
        );
        println!(
            "  {CLIENTS} clients for {:.1} s: {} runs = {rate:.1} runs/s; submit to answer p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms; recorded p50 {:.1} ms",
            load.seconds,
            load.runs,
            ms(percentile(&load.latencies, 0.5)),
            ms(percentile(&load.latencies, 0.95)),
            ms(percentile(&load.latencies, 0.99)),
            ms(percentile(&load.server_side, 0.5)),
        );
        budget.print("run", load.runs, rate);
        summary.push((
            count,
            ms(percentile(&one.latencies, 0.5)),
            rate,
            ms(percentile(&load.latencies, 0.95)),
        ));
        drop(workers);
    }
    println!("\n| workers | one run, p50 | runs/s ({CLIENTS} clients) | p95 under load |");
    println!("| --- | --- | --- | --- |");
    for (count, one, rate, p95) in summary {
        println!("| {count} | {one:.1} ms | {rate:.1} | {p95:.1} ms |");
    }
    drop(server);
}
