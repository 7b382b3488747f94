//! Exactly-once writes under re-execution, on the live servers and the embedded stores: a run
//! executed again under the same effect scope (as a queued run is, when its worker died) does
//! each Create, Update and Delete once and returns what the first execution did; two
//! executions of one run at the same moment write once between them; a run under another
//! scope writes again. The workflow's writes are none of them idempotent on their own.

use std::path::Path;

use dataflow_runtime::{RunStatus, Runtime, Workflow};
use dataflow_tests::fixture::{Backend, Fixture};
use dataflow_tests::on_both_backends;
use serde_json::{Value, json};

fn open_project(runtime: &Runtime) -> Workflow {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workflows/open_project.yaml");
    dataflow_runtime::yaml::load_file(&file, runtime.registry()).expect("the test workflow loads")
}

fn input(n: usize) -> Value {
    json!({
        "customer": {"name": format!("Customer {n}"), "email": format!("buyer{n}@example.com"), "segment": "industrial", "country": "DE", "credit_limit": 1000.0},
        "project_name": format!("Project {n}"),
    })
}

async fn counts(fx: &Fixture) -> (i64, i64, i64) {
    (
        fx.count("customers", "").await,
        fx.count("projects", "").await,
        fx.count("projects", "status = 'active' AND version = 2").await,
    )
}

async fn a_run_executed_again_writes_once(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "effects_again").await;
    let runtime = Runtime::new(dataflow_workflows::registry());
    let workflow = open_project(&runtime);
    let run = fx.tenant("acme").with_effect_scope("run:first");

    let first = runtime.run(&workflow, &run, input(1)).await;
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    assert_eq!(counts(&fx).await, (1, 1, 1));
    // Executed again from its first node: every write returns what it did the first time.
    let again = runtime.run(&workflow, &run, input(1)).await;
    assert_eq!(again.status, RunStatus::Succeeded, "{:?}", again.error);
    assert_eq!(again.outputs, first.outputs);
    assert_eq!(counts(&fx).await, (1, 1, 1), "no row written twice");

    // Without a scope (the command line) the same input is written again: the e-mail is taken.
    let unscoped = runtime.run(&workflow, &fx.tenant("acme"), input(1)).await;
    assert_eq!(unscoped.status, RunStatus::Failed);
    assert!(
        unscoped.error.as_deref().unwrap_or_default().contains("email"),
        "{:?}",
        unscoped.error
    );

    // Two executions of one run at once (a worker presumed dead still runs): one write each.
    let both = fx.tenant("acme").with_effect_scope("run:twice");
    let (one, other) = tokio::join!(runtime.run(&workflow, &both, input(2)), runtime.run(&workflow, &both, input(2)));
    assert_eq!(one.status, RunStatus::Succeeded, "{:?}", one.error);
    assert_eq!(other.status, RunStatus::Succeeded, "{:?}", other.error);
    assert_eq!(one.outputs, other.outputs);
    assert_eq!(counts(&fx).await, (2, 2, 2), "two runs, two of each row");
    assert_eq!(fx.count("dataflow_effects", "scope = 'run:twice'").await, 3, "one record per write");
}
on_both_backends!(a_run_executed_again_writes_once);

async fn a_delete_executed_again_returns_what_it_deleted(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "effects_delete").await;
    let runtime = Runtime::new(dataflow_workflows::registry());
    let workflow = open_project(&runtime);
    let tenant = fx.tenant("acme");
    let opened = runtime.run(&workflow, &tenant, input(3)).await;
    assert_eq!(opened.status, RunStatus::Succeeded, "{:?}", opened.error);
    let project = opened.outputs["project_id"].as_i64().unwrap();
    let delete = dataflow_runtime::yaml::load_str(
        "name: drop_project\ninputs: {id: {type: integer}}\nnodes: {drop: {type: ProjectDeleteNode}}\nconnections: [{from: input.id, to: drop.id}]\noutputs: {deleted: drop.deleted, ids: drop.ids}\n",
        "drop_project.yaml",
        runtime.registry(),
    )
    .unwrap();
    let run = tenant.with_effect_scope("run:drop");
    let first = runtime.run(&delete, &run, json!({"id": project})).await;
    let again = runtime.run(&delete, &run, json!({"id": project})).await;
    assert_eq!(first.outputs["deleted"], 1, "{:?}", first.error);
    assert_eq!(
        again.outputs, first.outputs,
        "executed again: what the first execution deleted, not 0"
    );
    assert_eq!(fx.count("projects", "").await, 0);
}
on_both_backends!(a_delete_executed_again_returns_what_it_deleted);
