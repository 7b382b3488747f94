//! Serving workflows to other processes: runs submitted to a durable queue and executed by
//! workers (`worker`), an HTTP API with live progress ([`api`]), an MCP server ([`mcp`]),
//! and API keys with roles and an audit log ([`auth`]).
//!
//! [`Service`] is what a `dataflow serve`, `dataflow worker` or `dataflow mcp` process holds:
//! the stores, one [`Runtime`] for every run of the process (shared breakers and metrics),
//! the workflows it serves, the run records ([`runs`]) and the queue.
//!
//! The queue depends on the relational store. On PostgreSQL it is apalis-postgres: a run's
//! record and its job are written in one transaction, workers on any machine take jobs with
//! `SKIP LOCKED`, beat a heartbeat, and take up the jobs of a worker that stopped beating. On
//! the embedded SQLite store it is a channel inside the `serve` process, which executes the
//! runs itself; the records are in the SQLite file, and the runs a stopped process left
//! unfinished are queued again when it starts. A run executed again (its worker died) starts
//! from its first node: its record counts the attempts.

pub mod api;
pub mod auth;
mod db;
pub mod mcp;
mod openapi;
pub mod runs;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflow_core::Stores;
use dataflow_runtime::{InputProblem, Runtime, Workflow};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{Error, Settings};
use auth::{AuditEntry, Keys};
use db::Db;
use runs::{NewRun, RunRecord, Runs};

pub use auth::{ApiKey, AuditRecord, CreatedKey, Role};
pub use runs::RunState;
pub use worker::{WorkerOptions, run_postgres_worker};

/// Why a service call failed. The HTTP API answers each with its own status (see [`api`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The stores, the settings or a workflow file.
    #[error(transparent)]
    Workflows(#[from] Error),
    /// A statement on the service's tables failed.
    #[error("{action}: {source}")]
    Database {
        /// What the service was doing.
        action: String,
        /// The database's error.
        source: dataflow_core::sea_orm::DbErr,
    },
    /// The PostgreSQL queue failed.
    #[error("the run queue: {0}")]
    Queue(String),
    /// No workflow of that name is served.
    #[error("no workflow '{name}'; the workflows served are {}", served.join(", "))]
    UnknownWorkflow {
        /// The name asked for.
        name: String,
        /// The names served.
        served: Vec<String>,
    },
    /// A run's input does not match its workflow's inputs.
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    BadInput {
        /// Every problem, each naming its input.
        problems: Vec<InputProblem>,
    },
    /// A request is malformed.
    #[error("{}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    BadRequest {
        /// The field it is about, when one.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// No run (or key) of that id for the caller's tenant.
    #[error("no {what} '{id}'")]
    NotFound {
        /// `run` or `key`.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The run is past the point where the request applies (cancelling a run that started).
    #[error("run '{id}' is {state}, not queued: only a queued run can be cancelled")]
    NotCancellable {
        /// The run.
        id: String,
        /// Its state.
        state: &'static str,
    },
    /// A run waited for with `?wait=true` did not end in time; it goes on.
    #[error("run '{id}' has not ended after {waited_secs} s; it goes on: read it at /v1/runs/{id}")]
    StillRunning {
        /// The run.
        id: String,
        /// How long the request waited.
        waited_secs: u64,
    },
    /// What the service needs is not there (a worker on the embedded store).
    #[error("{0}")]
    Unsupported(String),
    /// Stored data the service cannot read.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// The system's random source failed.
    #[error("no random bytes for a key: {0}")]
    Random(String),
}

impl From<dataflow_core::Error> for ServiceError {
    fn from(e: dataflow_core::Error) -> Self {
        ServiceError::Workflows(e.into())
    }
}

/// Who asks: an API key's id (or `cli`, `mcp`), the tenant it acts for, its role, and where
/// the request came from.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's id, or the channel's name for local channels.
    pub actor: String,
    /// The tenant every run and row of the request belongs to.
    pub tenant: String,
    /// What it may do.
    pub role: Role,
    /// The client's address, or `local`.
    pub remote: String,
}

/// A run just submitted, and whether this submit created it (`false`: its idempotency key
/// named a run submitted before, which is returned instead).
#[derive(Debug, Clone, Serialize)]
pub struct Submitted {
    /// The run.
    pub run: RunRecord,
    /// Whether this submit created it.
    pub created: bool,
}

/// What a [`Service`] serves and how.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Folders whose `*.yaml` workflows are served beside the shipped ones.
    pub workflow_dirs: Vec<PathBuf>,
    /// Runs executed at once by the `serve` process itself on the embedded store (its
    /// in-process queue); ignored on PostgreSQL, where `dataflow worker`s execute them. 0 for a
    /// process that executes none and leaves the unfinished runs alone (`dataflow keys`).
    pub in_process_workers: usize,
    /// The folder whose files imports may read (see [`crate::confined_registry`]): callers of
    /// a service name files on the machine that executes their run.
    pub import_dir: PathBuf,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            workflow_dirs: Vec::new(),
            in_process_workers: 4,
            import_dir: crate::data_dir(),
        }
    }
}

/// Where runs wait for a worker.
enum Queue {
    /// apalis-postgres, in the store's database.
    Postgres {
        /// The queue's pool, to the stores' database (see [`queue_pool`]).
        pool: sqlx::PgPool,
        /// The queue's name: one per database schema, so services on one server stay apart.
        name: String,
    },
    /// A channel to this process's own workers.
    InProcess { sender: mpsc::UnboundedSender<String> },
}

struct Inner {
    stores: Stores,
    runtime: Runtime,
    workflows: BTreeMap<String, Arc<Workflow>>,
    runs: Runs,
    keys: Keys,
    queue: Queue,
    metrics: Option<PrometheusHandle>,
    /// The last answer of `GET /health` (see [`api::HEALTH_MAX_AGE`]).
    health: tokio::sync::Mutex<Option<api::CheckedHealth>>,
}

/// The service of one process: stores, runtime, served workflows, run records and queue.
/// Cheap to clone.
#[derive(Clone)]
pub struct Service(Arc<Inner>);

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("workflows", &self.0.workflows.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Connections of a process's queue pool at most: the submits of a `serve`, or a worker's
/// polls, acknowledgements, heartbeats and its listener for new runs.
const QUEUE_CONNECTIONS: u32 = 16;

/// A pool for the queue, to the stores' database, whose connections search `search_path`.
///
/// The queue has its own pool because apalis-postgres names the `hstore` type without a
/// schema, and the stores' connections search their own schema alone when one is set
/// (`database_schema`): the queue's search the `apalis` schema and `public` too. Its tables are
/// created with `apalis` first, so that the `hstore` extension, when apalis-postgres creates
/// it, goes there rather than into one service's schema.
async fn queue_pool(store_pool: &sqlx::PgPool, search_path: &str, connections: u32) -> Result<sqlx::PgPool, ServiceError> {
    let search_path = search_path.to_owned();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .min_connections(0)
        .after_connect(move |connection, _| {
            let search_path = search_path.clone();
            Box::pin(async move {
                sqlx::query("SELECT set_config('search_path', $1, false)")
                    .bind(search_path)
                    .execute(connection)
                    .await?;
                Ok(())
            })
        })
        .connect_with((*store_pool.connect_options()).clone())
        .await
        .map_err(|e| ServiceError::Queue(format!("connecting the queue's pool: {e}")))
}

/// The name of the queue of runs in the database schema `schema`.
fn queue_name(schema: Option<&str>) -> String {
    format!("dataflow_runs:{}", schema.unwrap_or("public"))
}

impl Service {
    /// Connects the stores, migrates every model and the service's own tables (and the
    /// queue's, on PostgreSQL), loads the workflows to serve, and on the embedded store
    /// starts the in-process workers, queueing again the runs left unfinished.
    pub async fn open(settings: &Settings, options: &ServiceOptions) -> Result<Service, ServiceError> {
        let stores = settings.stores().await?;
        let db = Db::new(stores.clone());
        db.migrate().await?;
        let registry = crate::confined_registry(&options.import_dir).map_err(|e| ServiceError::BadRequest {
            field: Some("--import-dir".into()),
            message: format!("{}: {e}", options.import_dir.display()),
        })?;
        let runtime = Runtime::new(registry);
        let workflows = load_workflows(&runtime, &options.workflow_dirs)?;
        let runs = Runs::new(db.clone());
        let (queue, receiver) = match db.postgres_pool() {
            Some(store_pool) => {
                let schema = settings.database_schema.as_deref();
                let setup = queue_pool(store_pool, "apalis, public", 1).await?;
                let migrated = apalis_postgres::PostgresStorage::setup(&setup).await;
                setup.close().await;
                migrated.map_err(|e| ServiceError::Queue(format!("creating the queue's tables: {e}")))?;
                let search_path = match schema {
                    Some(schema) => format!("\"{schema}\", apalis, public"),
                    None => "\"$user\", public, apalis".to_owned(),
                };
                let queue = Queue::Postgres {
                    pool: queue_pool(store_pool, &search_path, QUEUE_CONNECTIONS).await?,
                    name: queue_name(schema),
                };
                (queue, None)
            }
            None => {
                let (sender, receiver) = mpsc::unbounded_channel();
                (Queue::InProcess { sender }, Some(receiver))
            }
        };
        let service = Service(Arc::new(Inner {
            stores,
            runtime,
            workflows,
            runs: runs.clone(),
            keys: Keys::new(db),
            queue,
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().ok(),
            health: tokio::sync::Mutex::new(None),
        }));
        if let (Some(receiver), Queue::InProcess { sender }) = (receiver, &service.0.queue)
            && options.in_process_workers > 0
        {
            worker::spawn_in_process(service.clone(), receiver, options.in_process_workers);
            for id in runs.unfinished().await? {
                let _ = sender.send(id);
            }
        }
        Ok(service)
    }

    /// Whether runs are executed by this process (the embedded store's in-process queue)
    /// rather than by `dataflow worker`s.
    pub fn executes_runs_itself(&self) -> bool {
        matches!(self.0.queue, Queue::InProcess { .. })
    }

    /// The stores.
    pub fn stores(&self) -> &Stores {
        &self.0.stores
    }

    /// The runtime every run of the process goes through.
    pub fn runtime(&self) -> &Runtime {
        &self.0.runtime
    }

    /// The workflows served, by name.
    pub fn workflows(&self) -> &BTreeMap<String, Arc<Workflow>> {
        &self.0.workflows
    }

    /// The workflow `name`, or an error listing those served.
    pub fn workflow(&self, name: &str) -> Result<&Arc<Workflow>, ServiceError> {
        self.0.workflows.get(name).ok_or_else(|| ServiceError::UnknownWorkflow {
            name: name.to_owned(),
            served: self.0.workflows.keys().cloned().collect(),
        })
    }

    /// The Prometheus text of this process's metrics (empty when another recorder was
    /// installed first).
    pub fn metrics_text(&self) -> String {
        self.0.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default()
    }

    /// Submits a run of `workflow` with `input` for `caller`: checks the input against the
    /// workflow's, records the run and queues it, and writes the submit to the audit log. A
    /// second submit with the same `idempotency_key` returns the first run.
    pub async fn submit(
        &self,
        workflow: &str,
        input: Value,
        idempotency_key: Option<String>,
        caller: &Caller,
    ) -> Result<Submitted, ServiceError> {
        let served = self.workflow(workflow)?;
        let input = served.check_inputs(input).map_err(|problems| ServiceError::BadInput { problems })?;
        if let Some(key) = &idempotency_key
            && (key.is_empty() || key.len() > 200 || key.chars().any(char::is_control))
        {
            return Err(ServiceError::BadRequest {
                field: Some("idempotency_key".into()),
                message: "an idempotency key is 1 to 200 bytes without control characters".into(),
            });
        }
        let new = NewRun {
            tenant: caller.tenant.clone(),
            workflow: workflow.to_owned(),
            input,
            idempotency_key,
            submitted_by: caller.actor.clone(),
        };
        let id = ulid::Ulid::generate().to_string();
        let created = match &self.0.queue {
            Queue::Postgres { pool, name } => submit_postgres(pool, name, &id, &new).await?,
            Queue::InProcess { sender } => {
                let created = self.0.runs.insert(&id, &new).await?;
                if created {
                    // The receiver lives as long as the service; a send fails only while the
                    // process shuts down, and the next start queues the run again.
                    let _ = sender.send(id.clone());
                }
                created
            }
        };
        let run = if created {
            self.audit(caller, "run.submit", &id, json!({"workflow": workflow})).await?;
            metrics::counter!("dataflow_service_runs_submitted_total", "workflow" => workflow.to_owned()).increment(1);
            self.0.runs.get(&id, None).await?
        } else {
            let key = new.idempotency_key.as_deref().unwrap_or_default();
            self.0.runs.by_idempotency_key(&caller.tenant, key).await?
        };
        let run = run.ok_or_else(|| ServiceError::Corrupt(format!("run {id} vanished after it was recorded")))?;
        Ok(Submitted { run, created })
    }

    /// Run `id` of the caller's tenant.
    pub async fn run(&self, id: &str, caller: &Caller) -> Result<RunRecord, ServiceError> {
        self.0
            .runs
            .get(id, Some(&caller.tenant))
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "run",
                id: id.to_owned(),
            })
    }

    /// The latest `limit` runs of the caller's tenant, newest first.
    pub async fn runs(&self, caller: &Caller, limit: u32) -> Result<Vec<RunRecord>, ServiceError> {
        self.0.runs.list(&caller.tenant, limit).await
    }

    /// Waits up to `limit` for run `id` to end, and returns it ended.
    pub async fn wait(&self, id: &str, caller: &Caller, limit: Duration) -> Result<RunRecord, ServiceError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let run = self.run(id, caller).await?;
            if run.status.is_final() {
                return Ok(run);
            }
            if started.elapsed() >= limit {
                return Err(ServiceError::StillRunning {
                    id: id.to_owned(),
                    waited_secs: limit.as_secs(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Cancels run `id` of the caller's tenant if it is still queued, and says so in the
    /// audit log.
    pub async fn cancel(&self, id: &str, caller: &Caller) -> Result<RunRecord, ServiceError> {
        if !self.0.runs.cancel(id, &caller.tenant).await? {
            let run = self.run(id, caller).await?;
            return Err(ServiceError::NotCancellable {
                id: id.to_owned(),
                state: run.status.as_str(),
            });
        }
        self.audit(caller, "run.cancel", id, Value::Null).await?;
        self.run(id, caller).await
    }

    /// Progress events of run `id` after position `(attempt, seq)` (see
    /// [`runs`]); the caller must be able to read the run.
    pub async fn events_after(&self, id: &str, after: (i64, i64)) -> Result<Vec<(i64, i64, Value)>, ServiceError> {
        self.0.runs.events_after(id, after).await
    }

    /// Creates an API key for `tenant` with `role`, and says so in the audit log.
    pub async fn create_key(&self, tenant: &str, role: Role, name: &str, caller: &Caller) -> Result<CreatedKey, ServiceError> {
        let created = self.0.keys.create(tenant, role, name).await?;
        self.audit(
            &Caller {
                tenant: tenant.to_owned(),
                ..caller.clone()
            },
            "key.create",
            &created.key.id,
            json!({"role": role, "name": name}),
        )
        .await?;
        Ok(created)
    }

    /// Revokes key `id` (of the caller's tenant, unless `any_tenant`), and says so in the
    /// audit log.
    pub async fn revoke_key(&self, id: &str, caller: &Caller, any_tenant: bool) -> Result<(), ServiceError> {
        let tenant = (!any_tenant).then_some(caller.tenant.as_str());
        if !self.0.keys.revoke(id, tenant).await? {
            return Err(ServiceError::NotFound {
                what: "key",
                id: id.to_owned(),
            });
        }
        self.audit(caller, "key.revoke", id, Value::Null).await
    }

    /// The keys of `tenant` (every tenant's with `None`).
    pub async fn keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, ServiceError> {
        self.0.keys.list(tenant).await
    }

    /// The unrevoked key `token` is, if any.
    pub async fn verify_key(&self, token: &str) -> Result<Option<ApiKey>, ServiceError> {
        self.0.keys.verify(token).await
    }

    /// The latest `limit` audit entries of the caller's tenant, newest first.
    pub async fn audit_log(&self, caller: &Caller, limit: u32) -> Result<Vec<AuditRecord>, ServiceError> {
        self.0.keys.audit_log(&caller.tenant, limit).await
    }

    /// Migrates every model's tables (an admin action), and says so in the audit log.
    pub async fn migrate(&self, caller: &Caller) -> Result<Value, ServiceError> {
        let report = self.0.stores.migrate(&dataflow_models::all_models()).await?;
        let detail = json!({"clean": report.is_clean(), "report": report.to_string()});
        self.audit(caller, "migrate", "models", detail.clone()).await?;
        Ok(detail)
    }

    async fn audit(&self, caller: &Caller, action: &str, target: &str, detail: Value) -> Result<(), ServiceError> {
        self.0
            .keys
            .audit(&AuditEntry {
                actor: caller.actor.clone(),
                tenant: caller.tenant.clone(),
                action: action.to_owned(),
                target: target.to_owned(),
                remote: caller.remote.clone(),
                detail,
            })
            .await
    }

    pub(crate) fn runs_store(&self) -> &Runs {
        &self.0.runs
    }

    /// The queue's pool and name, on PostgreSQL.
    fn postgres_queue(&self) -> Option<(&sqlx::PgPool, &str)> {
        match &self.0.queue {
            Queue::Postgres { pool, name } => Some((pool, name)),
            Queue::InProcess { .. } => None,
        }
    }
}

/// Records a run and queues its job in one transaction on PostgreSQL; whether it was new.
async fn submit_postgres(pool: &sqlx::PgPool, queue: &str, id: &str, run: &NewRun) -> Result<bool, ServiceError> {
    use apalis::prelude::TaskBuilder;
    let failed = |e: sqlx::Error| ServiceError::Queue(format!("recording a run: {e}"));
    let (id, tenant, workflow, key, input, by, at) = run.insert_values(id);
    let mut tx = pool.begin().await.map_err(failed)?;
    let inserted: Option<(String,)> = sqlx::query_as(runs::INSERT_RUN)
        .bind(&id)
        .bind(tenant)
        .bind(workflow)
        .bind(key)
        .bind(input)
        .bind(by)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed)?;
    if inserted.is_none() {
        tx.rollback().await.map_err(failed)?;
        return Ok(false);
    }
    let payload = serde_json::to_vec(&id).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
    let task = TaskBuilder::new(payload).build();
    apalis_postgres::queries::push_tasks(&mut *tx, queue, vec![task])
        .await
        .map_err(|e| ServiceError::Queue(format!("queueing run {id}: {e}")))?;
    tx.commit().await.map_err(failed)?;
    Ok(true)
}

/// The shipped workflows and the `*.yaml` files of `dirs`, by name; two of one name are
/// refused, naming both files.
fn load_workflows(runtime: &Runtime, dirs: &[PathBuf]) -> Result<BTreeMap<String, Arc<Workflow>>, ServiceError> {
    let mut files: Vec<PathBuf> = crate::REFERENCE_WORKFLOWS.iter().map(|name| crate::workflow_file(name)).collect();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| ServiceError::BadRequest {
            field: Some("--workflows".into()),
            message: format!("{}: {e}", dir.display()),
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
            .collect();
        found.sort();
        files.extend(found);
    }
    let mut workflows: BTreeMap<String, (PathBuf, Arc<Workflow>)> = BTreeMap::new();
    for file in files {
        let workflow = dataflow_runtime::yaml::load_file(&file, runtime.registry()).map_err(Error::from)?;
        let name = workflow.name().to_owned();
        if let Some((first, _)) = workflows.get(&name) {
            return Err(ServiceError::BadRequest {
                field: Some("--workflows".into()),
                message: format!("two workflows are named '{name}': {} and {}", first.display(), file.display()),
            });
        }
        workflows.insert(name, (file, Arc::new(workflow)));
    }
    Ok(workflows.into_iter().map(|(name, (_, workflow))| (name, workflow)).collect())
}
