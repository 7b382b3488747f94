//! Run records: what was submitted, by whom and for which tenant, where it stands (queued,
//! running, succeeded, failed, cancelled), its report and outputs, and the progress events of
//! each attempt, kept in the relational store so that any process can answer for any run.
//!
//! A run's state moves only forward: `queued` → `running` (again on a retry, with one more
//! attempt) → `succeeded` | `failed`, or `queued` → `cancelled`. Each change is one
//! conditional `UPDATE`, so two workers or a worker and a cancel never both win.

use dataflow_core::sea_orm::{QueryResult, Value as SqlValue};
use dataflow_runtime::{Progress, RunReport, RunStatus};
use serde::Serialize;
use serde_json::Value;

use super::ServiceError;
use super::db::{Db, integer, now, optional_text, text};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Submitted, waiting for a worker.
    Queued,
    /// A worker is executing it.
    Running,
    /// It ended and every node succeeded or was skipped.
    Succeeded,
    /// It ended with a failure (its `error` says which node and why).
    Failed,
    /// It was cancelled before a worker took it.
    Cancelled,
}

impl RunState {
    /// The state's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Result<RunState, ServiceError> {
        Ok(match text {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            other => return Err(ServiceError::Corrupt(format!("a run in the unknown state {other:?}"))),
        })
    }

    /// Whether the run has ended (nothing will change it again).
    pub fn is_final(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Failed | RunState::Cancelled)
    }
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Its id (a ULID: sorts by submission time).
    pub id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// The workflow's name.
    pub workflow: String,
    /// Where it stands.
    pub status: RunState,
    /// Its input, with the workflow's defaults filled in.
    pub input: Value,
    /// The workflow's outputs, once it ended.
    pub outputs: Option<Value>,
    /// The run's report (every node's status, attempts, times), once it ended.
    pub report: Option<Value>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Executions started: more than 1 when a worker died and another took the run again.
    pub attempts: i64,
    /// The worker of the latest attempt.
    pub worker: Option<String>,
    /// The key the submitter gave to make a second submit return this run.
    pub idempotency_key: Option<String>,
    /// Who submitted it: an API key's id, or `cli`.
    pub submitted_by: String,
    /// When it was submitted (RFC 3339).
    pub submitted_at: String,
    /// When its latest attempt started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
}

const COLUMNS: &str = "id, tenant, workflow, status, input, outputs, report, error, attempts, worker, idempotency_key, submitted_by, submitted_at, started_at, finished_at";

impl RunRecord {
    fn from_row(row: &QueryResult) -> Result<RunRecord, ServiceError> {
        let json = |column: &str| -> Result<Option<Value>, ServiceError> {
            optional_text(row, column)?
                .map(|text| serde_json::from_str(&text).map_err(|e| ServiceError::Corrupt(format!("the stored {column} of a run: {e}"))))
                .transpose()
        };
        Ok(RunRecord {
            id: text(row, "id")?,
            tenant: text(row, "tenant")?,
            workflow: text(row, "workflow")?,
            status: RunState::parse(&text(row, "status")?)?,
            input: json("input")?.unwrap_or(Value::Null),
            outputs: json("outputs")?,
            report: json("report")?,
            error: optional_text(row, "error")?,
            attempts: integer(row, "attempts")?,
            worker: optional_text(row, "worker")?,
            idempotency_key: optional_text(row, "idempotency_key")?,
            submitted_by: text(row, "submitted_by")?,
            submitted_at: text(row, "submitted_at")?,
            started_at: optional_text(row, "started_at")?,
            finished_at: optional_text(row, "finished_at")?,
        })
    }
}

/// A run to submit: its input already checked against the workflow.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The tenant it acts for.
    pub tenant: String,
    /// The workflow's name.
    pub workflow: String,
    /// Its checked input.
    pub input: Value,
    /// Makes a second submit with the same key (and tenant) return the first run.
    pub idempotency_key: Option<String>,
    /// Who submits it.
    pub submitted_by: String,
}

/// The statement that records a new run, unless the tenant already has one with its
/// idempotency key; returns the new run's id when it wrote one. Shared by the queues.
pub(crate) const INSERT_RUN: &str = "INSERT INTO dataflow_runs (id, tenant, workflow, idempotency_key, status, input, submitted_by, submitted_at) \
     VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id";

impl NewRun {
    /// The values of [`INSERT_RUN`] for this run with id `id`.
    pub(crate) fn insert_values(&self, id: &str) -> (String, String, String, Option<String>, String, String, String) {
        (
            id.to_owned(),
            self.tenant.clone(),
            self.workflow.clone(),
            self.idempotency_key.clone(),
            self.input.to_string(),
            self.submitted_by.clone(),
            now(),
        )
    }
}

/// Run records in the relational store.
#[derive(Clone)]
pub(crate) struct Runs {
    db: Db,
}

/// What a worker gets when it takes a run: what to execute, and which attempt this is.
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub tenant: String,
    pub workflow: String,
    pub input: Value,
    pub attempt: i64,
}

impl Runs {
    pub(crate) fn new(db: Db) -> Self {
        Runs { db }
    }

    /// Records `run` with id `id` (see [`INSERT_RUN`]); whether it was new.
    pub(crate) async fn insert(&self, id: &str, run: &NewRun) -> Result<bool, ServiceError> {
        let (id, tenant, workflow, key, input, by, at) = run.insert_values(id);
        let inserted = self
            .db
            .query_one(
                "recording a run",
                INSERT_RUN,
                vec![
                    id.into(),
                    tenant.into(),
                    workflow.into(),
                    key.into(),
                    input.into(),
                    by.into(),
                    at.into(),
                ],
            )
            .await?;
        Ok(inserted.is_some())
    }

    /// The run of `tenant` with idempotency key `key`.
    pub(crate) async fn by_idempotency_key(&self, tenant: &str, key: &str) -> Result<Option<RunRecord>, ServiceError> {
        let sql = format!("SELECT {COLUMNS} FROM dataflow_runs WHERE tenant = $1 AND idempotency_key = $2");
        self.db
            .query_one("reading a run", &sql, vec![tenant.into(), key.into()])
            .await?
            .map(|row| RunRecord::from_row(&row))
            .transpose()
    }

    /// Run `id`, when it belongs to `tenant` (or to anyone, with `None`).
    pub(crate) async fn get(&self, id: &str, tenant: Option<&str>) -> Result<Option<RunRecord>, ServiceError> {
        let sql = format!("SELECT {COLUMNS} FROM dataflow_runs WHERE id = $1");
        let run = self
            .db
            .query_one("reading a run", &sql, vec![id.into()])
            .await?
            .map(|row| RunRecord::from_row(&row))
            .transpose()?;
        Ok(run.filter(|run| tenant.is_none_or(|t| run.tenant == t)))
    }

    /// The latest `limit` runs of `tenant`, newest first.
    pub(crate) async fn list(&self, tenant: &str, limit: u32) -> Result<Vec<RunRecord>, ServiceError> {
        let sql = format!("SELECT {COLUMNS} FROM dataflow_runs WHERE tenant = $1 ORDER BY submitted_at DESC, id DESC LIMIT $2");
        self.db
            .query("listing runs", &sql, vec![tenant.into(), i64::from(limit).into()])
            .await?
            .iter()
            .map(RunRecord::from_row)
            .collect()
    }

    /// Cancels run `id` of `tenant` if it is still queued; whether it was.
    pub(crate) async fn cancel(&self, id: &str, tenant: &str) -> Result<bool, ServiceError> {
        let changed = self
            .db
            .execute(
                "cancelling a run",
                "UPDATE dataflow_runs SET status = 'cancelled', error = 'cancelled before it started', finished_at = $3 WHERE id = $1 AND tenant = $2 AND status = 'queued'",
                vec![id.into(), tenant.into(), now().into()],
            )
            .await?;
        Ok(changed == 1)
    }

    /// Takes run `id` for `worker`: one more attempt, unless it has ended (finished, or
    /// cancelled while queued), when there is nothing to do. A run still `running` is taken
    /// again: its worker died, and the queue gave it to this one.
    pub(crate) async fn take(&self, id: &str, worker: &str) -> Result<Option<Taken>, ServiceError> {
        let row = self
            .db
            .query_one(
                "taking a run",
                "UPDATE dataflow_runs SET status = 'running', attempts = attempts + 1, worker = $2, started_at = $3 \
                 WHERE id = $1 AND status IN ('queued', 'running') RETURNING tenant, workflow, input, attempts",
                vec![id.into(), worker.into(), now().into()],
            )
            .await?;
        row.map(|row| {
            let input = text(&row, "input")?;
            Ok(Taken {
                tenant: text(&row, "tenant")?,
                workflow: text(&row, "workflow")?,
                input: serde_json::from_str(&input).map_err(|e| ServiceError::Corrupt(format!("the stored input of run {id}: {e}")))?,
                attempt: integer(&row, "attempts")?,
            })
        })
        .transpose()
    }

    /// Records how attempt `attempt` of run `id` ended, unless a later attempt has taken the
    /// run meanwhile (then that one will); whether it was recorded.
    pub(crate) async fn finish(&self, id: &str, attempt: i64, report: &RunReport) -> Result<bool, ServiceError> {
        let status = match report.status {
            RunStatus::Succeeded => RunState::Succeeded,
            RunStatus::Failed => RunState::Failed,
        };
        let report_json =
            serde_json::to_string(report).map_err(|e| ServiceError::Corrupt(format!("a run report that is not JSON: {e}")))?;
        let changed = self
            .db
            .execute(
                "recording a run's end",
                "UPDATE dataflow_runs SET status = $3, outputs = $4, report = $5, error = $6, finished_at = $7 \
                 WHERE id = $1 AND attempts = $2 AND status = 'running'",
                vec![
                    id.into(),
                    attempt.into(),
                    status.as_str().into(),
                    Value::Object(report.outputs.clone()).to_string().into(),
                    report_json.into(),
                    report.error.clone().into(),
                    now().into(),
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    /// Ends run `id` as failed without a report: it could not be executed at all (its
    /// workflow is no longer served, its tenant was refused).
    pub(crate) async fn fail(&self, id: &str, attempt: i64, why: &str) -> Result<(), ServiceError> {
        self.db
            .execute(
                "recording a run's failure",
                "UPDATE dataflow_runs SET status = 'failed', error = $3, finished_at = $4 WHERE id = $1 AND attempts = $2 AND status = 'running'",
                vec![id.into(), attempt.into(), why.into(), now().into()],
            )
            .await?;
        Ok(())
    }

    /// Stores progress events of attempt `attempt` of run `id`, numbered from `first_seq`.
    pub(crate) async fn append_events(&self, id: &str, attempt: i64, first_seq: i64, events: &[Progress]) -> Result<(), ServiceError> {
        if events.is_empty() {
            return Ok(());
        }
        let at = now();
        let mut sql = String::from("INSERT INTO dataflow_run_events (run_id, attempt, seq, event, at) VALUES ");
        let mut values: Vec<SqlValue> = Vec::with_capacity(events.len() * 5);
        for (i, event) in events.iter().enumerate() {
            let n = values.len();
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("(${}, ${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 5));
            let event =
                serde_json::to_string(event).map_err(|e| ServiceError::Corrupt(format!("a progress event that is not JSON: {e}")))?;
            values.extend([
                id.into(),
                attempt.into(),
                (first_seq + i as i64).into(),
                event.into(),
                at.clone().into(),
            ]);
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        self.db.execute("recording a run's progress", &sql, values).await?;
        Ok(())
    }

    /// Progress events of run `id` after position `(attempt, seq)`, in order; each as
    /// `(attempt, seq, event)`.
    pub(crate) async fn events_after(&self, id: &str, after: (i64, i64)) -> Result<Vec<(i64, i64, Value)>, ServiceError> {
        let rows = self
            .db
            .query(
                "reading a run's progress",
                "SELECT attempt, seq, event FROM dataflow_run_events WHERE run_id = $1 AND (attempt > $2 OR (attempt = $2 AND seq > $3)) ORDER BY attempt, seq",
                vec![id.into(), after.0.into(), after.1.into()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let event = text(row, "event")?;
                Ok((
                    integer(row, "attempt")?,
                    integer(row, "seq")?,
                    serde_json::from_str(&event).map_err(|e| ServiceError::Corrupt(format!("a stored progress event: {e}")))?,
                ))
            })
            .collect()
    }

    /// Ids of the runs not yet ended, oldest first: what an in-process queue takes up again
    /// when its process starts.
    pub(crate) async fn unfinished(&self) -> Result<Vec<String>, ServiceError> {
        let rows = self
            .db
            .query(
                "listing unfinished runs",
                "SELECT id FROM dataflow_runs WHERE status IN ('queued', 'running') ORDER BY id",
                vec![],
            )
            .await?;
        rows.iter().map(|row| text(row, "id")).collect()
    }
}
