//! Workers: take queued runs and execute them through the process's one [`Runtime`],
//! recording each node's progress events as they happen and the report at the end.
//!
//! On PostgreSQL a worker is an apalis worker on the apalis-postgres queue
//! ([`run_postgres_worker`]): it registers itself, beats a heartbeat, and the jobs of a worker
//! whose heartbeat stopped for `missed_heartbeats` beats are queued again, to be executed
//! from their first node by whichever worker takes them. On the embedded store the `serve`
//! process runs its own ([`spawn_in_process`]).
//!
//! [`Runtime`]: dataflow_runtime::Runtime

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::{BackendExt, BoxDynError, Data, ParallelizeExt, WorkerBuilder, WorkerBuilderExt, WorkerContext};
use dataflow_core::Context;
use dataflow_runtime::Progress;
use tokio::sync::{Semaphore, mpsc};

use super::runs::Runs;
use super::{Service, ServiceError};

/// How a `dataflow worker` works.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The worker's name, unique among the workers of a queue (default: host and process id).
    pub name: String,
    /// Runs executed at once.
    pub concurrency: usize,
    /// How often the worker tells the queue it is alive.
    pub heartbeat: Duration,
    /// Heartbeats missed after which the worker's runs are taken up by another.
    pub missed_heartbeats: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            name: default_worker_name(),
            concurrency: 8,
            heartbeat: Duration::from_secs(10),
            missed_heartbeats: 3,
        }
    }
}

/// `<host>:<pid>`: unique among workers of one queue on as many machines as there are.
fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into());
    format!("{host}:{}", std::process::id())
}

/// Executes run `id` as worker `worker`: takes it (nothing to do when it has ended or was
/// cancelled), runs its workflow for its tenant with its progress recorded, and records how
/// it ended. An error is one of the service's own tables; the queue tries the job again.
pub(crate) async fn execute(service: &Service, id: &str, worker: &str) -> Result<(), ServiceError> {
    let runs = service.runs_store();
    let Some(taken) = runs.take(id, worker).await? else {
        return Ok(());
    };
    let workflow = match service.workflow(&taken.workflow) {
        Ok(workflow) => workflow.clone(),
        Err(e) => return runs.fail(id, taken.attempt, &e.to_string()).await,
    };
    // Writes are recorded under the run's id, so that an execution after this one (this worker
    // dies) does each of them once.
    let ctx = match Context::new(service.stores().clone()).with_tenant(&taken.tenant) {
        Ok(ctx) => ctx.with_effect_scope(format!("run:{id}")),
        Err(e) => return runs.fail(id, taken.attempt, &e.to_string()).await,
    };
    let (sender, receiver) = mpsc::unbounded_channel::<Progress>();
    let recorder = tokio::spawn(record_events(runs.clone(), id.to_owned(), taken.attempt, receiver));
    // The hook keeps the sender only while the run goes: taken out after it, so the recorder
    // ends whatever else still holds the hook.
    let hook_sender = Arc::new(Mutex::new(Some(sender)));
    let hook = hook_sender.clone();
    let report = service
        .runtime()
        .run_observed(&workflow, &ctx, taken.input, move |event| {
            if let Some(sender) = hook.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
                let _ = sender.send(event.clone());
            }
        })
        .await;
    hook_sender.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    // Every event is stored before the run is seen to end, so a client that reads the events
    // once the run has ended has them all.
    if let Ok(Err(e)) = recorder.await {
        tracing::warn!(run = id, "progress events of the run not recorded: {e}");
    }
    runs.finish(id, taken.attempt, &report).await?;
    metrics::counter!("dataflow_service_runs_executed_total", "workflow" => taken.workflow, "status" => format!("{:?}", report.status).to_lowercase()).increment(1);
    Ok(())
}

/// Stores a run's progress events in order as they come, in batches of what has come while
/// the previous batch was written.
async fn record_events(runs: Runs, id: String, attempt: i64, mut receiver: mpsc::UnboundedReceiver<Progress>) -> Result<(), ServiceError> {
    let mut seq = 0i64;
    let mut failure = None;
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while let Ok(event) = receiver.try_recv() {
            batch.push(event);
        }
        if failure.is_none()
            && let Err(e) = runs.append_events(&id, attempt, seq, &batch).await
        {
            // Keep draining: the run goes on whether or not its progress is recorded.
            failure = Some(e);
        }
        seq += batch.len() as i64;
    }
    failure.map_or(Ok(()), Err)
}

/// Starts the in-process workers of a `serve` on the embedded store: run ids from `receiver`,
/// `concurrency` executed at once.
pub(crate) fn spawn_in_process(service: Service, mut receiver: mpsc::UnboundedReceiver<String>, concurrency: usize) {
    let worker = format!("serve:{}", std::process::id());
    let permits = Arc::new(Semaphore::new(concurrency));
    tokio::spawn(async move {
        while let Some(id) = receiver.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            let service = service.clone();
            let worker = worker.clone();
            tokio::spawn(async move {
                if let Err(e) = execute(&service, &id, &worker).await {
                    tracing::error!(run = %id, "the run could not be executed: {e}");
                }
                drop(permit);
            });
        }
    });
}

/// The job handler of the PostgreSQL queue: the job is a run's id.
async fn handle(id: String, service: Data<Service>, worker: WorkerContext) -> Result<(), BoxDynError> {
    execute(&service, &id, worker.name()).await.map_err(Into::into)
}

/// Runs a worker on the PostgreSQL queue until the process is stopped.
pub async fn run_postgres_worker(service: Service, options: WorkerOptions) -> Result<(), ServiceError> {
    use apalis_postgres::{Config, PostgresStorage};
    let Some((pool, queue)) = service.postgres_queue() else {
        return Err(ServiceError::Unsupported(
            "`dataflow worker` needs PostgreSQL (`database_url`): on the embedded store, `dataflow serve` executes the runs itself".into(),
        ));
    };
    let config = Config::default()
        .queue(queue)
        .heartbeat_interval(options.heartbeat)
        .missed_heartbeats(options.missed_heartbeats);
    // Woken by the queue's NOTIFY when a run is submitted; the poll once a second finds the
    // runs that come back without one (those of a dead worker, queued again).
    let storage = PostgresStorage::<String>::new(pool)
        .with_config(config)
        .with_pubsub()
        .poll_with_interval(Duration::from_secs(1));
    WorkerBuilder::new(options.name.as_str())
        .backend(storage)
        .concurrency(options.concurrency.max(1))
        .parallelize(tokio::spawn)
        .data(service.clone())
        .build(handle)
        .run()
        .await
        .map_err(|e| ServiceError::Queue(format!("worker {}: {e}", options.name)))
}
