//! Runtime overhead: what the scheduler costs per node, measured on trivial nodes (a
//! `Transform` copying one field) so store time does not hide it. A chain of 100 (each waits
//! for the one before) and a fan-out of 100 (all independent, then joined by one `Merge`).
//! Report: time per run / 100 = µs per node.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dataflow_runtime::{Registry, RunOptions, RunStatus, Runtime, Workflow, WorkflowBuilder};
use dataflow_tests::fixture::Fixture;
use serde_json::json;

const NODES: usize = 100;

fn chain(registry: &Registry) -> Workflow {
    let mut b = WorkflowBuilder::new("chain");
    b.input("v", "integer");
    for i in 0..NODES {
        b.add_node(format!("n{i}"), "Transform", json!({"select": {"v": "v"}}));
        if i == 0 {
            b.connect("input", "v", "n0", "v");
        } else {
            b.connect(&format!("n{}", i - 1), "v", &format!("n{i}"), "v");
        }
    }
    b.output("v", &format!("n{}", NODES - 1), "v");
    b.build(registry).expect("a valid chain")
}

fn fan_out(registry: &Registry) -> Workflow {
    let mut b = WorkflowBuilder::new("fan_out");
    b.input("v", "integer");
    b.add_node("join", "Merge", json!({}));
    for i in 0..NODES - 1 {
        b.add_node(format!("n{i}"), "Transform", json!({"select": {"v": "v"}}));
        b.connect("input", "v", &format!("n{i}"), "v");
        b.connect(&format!("n{i}"), "v", "join", &format!("n{i}"));
    }
    b.output("v", "join", "value");
    b.build(registry).expect("a valid fan-out")
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let fx = rt.block_on(Fixture::without_tables("bench_runtime"));
    let registry = Registry::new();
    let runtime = Runtime::with_options(
        registry.clone(),
        RunOptions {
            concurrency: NODES,
            ..RunOptions::default()
        },
    );
    let mut group = c.benchmark_group("runtime");
    group
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(NODES as u64));
    for (name, workflow) in [("chain_100", chain(&registry)), ("fan_out_100", fan_out(&registry))] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let report = runtime.run(&workflow, &fx.ctx, json!({"v": 7})).await;
                assert_eq!(report.status, RunStatus::Succeeded);
                report
            })
        });
    }
    group.finish();
}

criterion_group!(runtime, benches);
criterion_main!(runtime);
