//! The scheduler: runs a [`Workflow`] node by node as inputs become ready, independent
//! branches concurrently under a limit, with per-node timeout and retry, a circuit breaker per
//! store, and a [`RunReport`] at the end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use chrono::{DateTime, Utc};
use dataflow_core::{Context, StoreKind};
use futures::FutureExt;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::node::{NodeEnv, NodeFailure};
use crate::path::FieldPath;
use crate::registry::Registry;
use crate::workflow::{RetryPolicy, Source, Workflow};

/// How runs behave: concurrency, admission, defaults for timeout and retry, failure handling,
/// breakers.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Nodes running at once in one run (and sub-runs of a `Map` each count their own).
    pub concurrency: usize,
    /// Time limit of one attempt of a node without its own `timeout_ms`.
    pub node_timeout: Duration,
    /// Retry policy of a node without its own. Nodes that only compute (`Transform`,
    /// `Switch`, `Merge`, `ComputeNode`s) are tried once: their failures are not transient.
    pub retry: RetryPolicy,
    /// On a failure, keep running the branches that do not depend on the failed node (default:
    /// cancel everything not yet started).
    pub continue_on_failure: bool,
    /// Consecutive transient failures of a store that open its breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker fails calls at once before letting one probe through.
    pub breaker_cooldown: Duration,
    /// Runs of one [`Runtime`] executing at once; more wait, first come first served, before
    /// their first node, against no timeout (0: no limit). Without a limit, a hundred runs
    /// at once on a machine that finishes twenty a second all wait inside the stores (for a
    /// pooled connection, for Chroma), where waits have time limits and failures open
    /// breakers: the stores' load, not the server, then fails runs. The wait shows in
    /// [`RunReport::queued_ms`]. Sub-runs of a `Map` run within their parent's admission.
    pub max_concurrent_runs: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: 16,
            node_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            continue_on_failure: false,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(5),
            max_concurrent_runs: 32,
        }
    }
}

/// What happened to one node in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// It ran and returned an output.
    Succeeded,
    /// Its last attempt failed.
    Failed,
    /// It was on a branch a `Switch` did not take.
    Skipped,
    /// It did not start because the run failed first (or a node it depends on failed).
    Cancelled,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every node succeeded or was skipped.
    Succeeded,
    /// A node failed, or the run's input was bad.
    Failed,
}

/// One node's part of a [`RunReport`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// The node's name in the workflow.
    pub name: String,
    /// Its type.
    pub node_type: String,
    /// What happened.
    pub status: NodeStatus,
    /// Attempts made (0 when it did not run).
    pub attempts: u32,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its last attempt ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Wall time from first start to last end, in milliseconds.
    pub duration_ms: f64,
    /// Its output, when it succeeded.
    pub output: Option<Value>,
    /// Why it failed, was skipped or cancelled.
    pub error: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The workflow's name.
    pub workflow: String,
    /// How it ended.
    pub status: RunStatus,
    /// When it started (after its wait for admission).
    pub started_at: DateTime<Utc>,
    /// Wall time in milliseconds, from its start.
    pub duration_ms: f64,
    /// How long it waited for admission before it started, in milliseconds
    /// ([`RunOptions::max_concurrent_runs`]).
    pub queued_ms: f64,
    /// Every node, in definition order.
    pub nodes: Vec<NodeReport>,
    /// The workflow's declared outputs (those whose node succeeded).
    pub outputs: Map<String, Value>,
    /// The first failure, as one line naming the node.
    pub error: Option<String>,
}

impl RunReport {
    /// The report of node `name`.
    pub fn node(&self, name: &str) -> Option<&NodeReport> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Something a run reports while it goes, for progress displays.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A node started its first attempt.
    Started {
        /// The node's name.
        node: String,
    },
    /// A node finished.
    Finished {
        /// The node's name.
        node: String,
        /// How.
        status: NodeStatus,
    },
    /// A node that works through many items (a `Map`) finished one.
    Items {
        /// The node type.
        node: String,
        /// Items done.
        done: usize,
        /// Items in all.
        total: usize,
    },
}

type ProgressHook = Arc<dyn Fn(&Progress) + Send + Sync>;

#[derive(Debug, Clone, Copy)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe was let through. If it has not reported by `until` (its run was dropped, or
    /// another store's breaker refused the node before it ran), the next call is the probe:
    /// without a deadline the breaker would stay half-open, refusing every call, for good.
    HalfOpen {
        until: Instant,
    },
}

/// One circuit breaker per store, shared by every run of a [`Runtime`].
#[derive(Debug)]
struct Breakers {
    states: Mutex<HashMap<StoreKind, BreakerState>>,
    threshold: u32,
    cooldown: Duration,
}

impl Breakers {
    /// Whether a call to `store` may go ahead; an open breaker past its cooldown lets one
    /// probe through (half-open), and another one a cooldown later if that one never reports.
    fn admit(&self, store: StoreKind) -> bool {
        let mut states = self.states.lock().expect("breaker lock");
        let state = states.entry(store).or_insert(BreakerState::Closed { failures: 0 });
        let now = Instant::now();
        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } | BreakerState::HalfOpen { until } if now >= until => {
                *state = BreakerState::HalfOpen {
                    until: now + self.cooldown,
                };
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => false,
        }
    }

    fn success(&self, store: StoreKind) {
        self.states
            .lock()
            .expect("breaker lock")
            .insert(store, BreakerState::Closed { failures: 0 });
    }

    fn failure(&self, store: StoreKind) {
        let mut states = self.states.lock().expect("breaker lock");
        let state = states.entry(store).or_insert(BreakerState::Closed { failures: 0 });
        *state = match *state {
            BreakerState::Closed { failures } if failures + 1 < self.threshold => BreakerState::Closed { failures: failures + 1 },
            _ => {
                tracing::warn!(%store, cooldown = ?self.cooldown, "circuit breaker open");
                metrics::counter!("dataflow_breaker_opened_total", "store" => store_label(store)).increment(1);
                BreakerState::Open {
                    until: Instant::now() + self.cooldown,
                }
            }
        };
    }

    /// Whether the store's breaker is open now.
    fn is_open(&self, store: StoreKind) -> bool {
        matches!(self.states.lock().expect("breaker lock").get(&store), Some(BreakerState::Open { until }) if Instant::now() < *until)
    }
}

fn store_label(store: StoreKind) -> &'static str {
    match store {
        StoreKind::Relational => "relational",
        StoreKind::Cache => "cache",
        StoreKind::Vector => "vector",
        StoreKind::Graph => "graph",
    }
}

/// Runs workflows: holds the registry, the options and the circuit breakers. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    registry: Arc<Registry>,
    options: RunOptions,
    breakers: Arc<Breakers>,
    /// Permits for runs executing at once; `None` without a limit, and for sub-runs.
    admission: Option<Arc<tokio::sync::Semaphore>>,
    progress: Option<ProgressHook>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("nodes", &self.registry.len())
            .field("options", &self.options)
            .finish()
    }
}

impl Runtime {
    /// A runtime over `registry` with default options.
    pub fn new(registry: Registry) -> Self {
        Self::with_options(registry, RunOptions::default())
    }

    /// A runtime with `options`.
    pub fn with_options(registry: Registry, options: RunOptions) -> Self {
        Runtime {
            breakers: Arc::new(Breakers {
                states: Mutex::new(HashMap::new()),
                threshold: options.breaker_threshold.max(1),
                cooldown: options.breaker_cooldown,
            }),
            registry: Arc::new(registry),
            admission: (options.max_concurrent_runs > 0).then(|| Arc::new(tokio::sync::Semaphore::new(options.max_concurrent_runs))),
            options,
            progress: None,
        }
    }

    /// Calls `hook` as nodes start and finish.
    pub fn on_progress(mut self, hook: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(hook));
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The options.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// Whether the circuit breaker of `store` is open.
    pub fn breaker_open(&self, store: StoreKind) -> bool {
        self.breakers.is_open(store)
    }

    /// The same runtime without the progress hook, for sub-runs (a `Map`'s elements), whose
    /// nodes are not the nodes a progress display counts; and without admission: a sub-run
    /// runs within its parent's (waiting for a permit its parent holds could wait for good).
    pub fn quiet(&self) -> Runtime {
        Runtime {
            progress: None,
            admission: None,
            ..self.clone()
        }
    }

    /// Reports item progress of a long node.
    pub fn progress(&self, node: &str, done: usize, total: usize) {
        self.emit(|| Progress::Items {
            node: node.to_string(),
            done,
            total,
        });
    }

    /// Calls the progress hook, building the event only when there is one.
    fn emit(&self, event: impl FnOnce() -> Progress) {
        if let Some(hook) = &self.progress {
            hook(&event());
        }
    }

    /// Runs `workflow` with `inputs` (an object of the declared inputs) in `ctx`.
    pub async fn run(&self, workflow: &Workflow, ctx: &Context, inputs: Value) -> RunReport {
        let span = tracing::info_span!("workflow", name = %workflow.name());
        async {
            let queued = Instant::now();
            let _permit = match &self.admission {
                // Never closed: the runtime holds it.
                Some(admission) => Some(admission.acquire().await.expect("the admission semaphore is never closed")),
                None => None,
            };
            let queued = queued.elapsed();
            metrics::histogram!("dataflow_run_queued_seconds", "workflow" => workflow.name().to_string()).record(queued.as_secs_f64());
            self.run_inner(workflow, ctx, inputs, queued).await
        }
        .instrument(span)
        .await
    }

    async fn run_inner(&self, workflow: &Workflow, ctx: &Context, inputs: Value, queued: Duration) -> RunReport {
        let started_at = Utc::now();
        let clock = Instant::now();
        let n = workflow.nodes.len();
        let mut reports: Vec<NodeReport> = workflow
            .nodes
            .iter()
            .map(|node| NodeReport {
                name: node.name.clone(),
                node_type: node.node.info().type_name.clone(),
                status: NodeStatus::Cancelled,
                attempts: 0,
                started_at: None,
                ended_at: None,
                duration_ms: 0.0,
                output: None,
                error: None,
            })
            .collect();
        let finish = |reports: Vec<NodeReport>, outputs: Map<String, Value>, error: Option<String>| {
            let status = if error.is_none() { RunStatus::Succeeded } else { RunStatus::Failed };
            metrics::counter!("dataflow_runs_total", "workflow" => workflow.name().to_string(), "status" => format!("{status:?}").to_lowercase()).increment(1);
            metrics::histogram!("dataflow_run_seconds", "workflow" => workflow.name().to_string()).record(clock.elapsed().as_secs_f64());
            RunReport {
                workflow: workflow.name().to_string(),
                status,
                started_at,
                duration_ms: clock.elapsed().as_secs_f64() * 1e3,
                queued_ms: queued.as_secs_f64() * 1e3,
                nodes: reports,
                outputs,
                error,
            }
        };

        let inputs = match check_inputs(workflow, inputs) {
            Ok(inputs) => inputs,
            Err(message) => {
                for r in &mut reports {
                    r.error = Some("the run's input was rejected".into());
                }
                return finish(reports, Map::new(), Some(message));
            }
        };

        // Per node: the input being assembled, incoming edges not yet resolved, whether an
        // incoming connection was not taken, and whether one delivered (for merges).
        let mut assembled: Vec<Value> = workflow.nodes.iter().map(|n| n.static_input.clone()).collect();
        let mut waiting: Vec<usize> = vec![0; n];
        let mut untaken = vec![false; n];
        let mut blocked = vec![false; n];
        let mut delivered = vec![false; n];
        // Values wait here (with the index of the edge that brought them) until their node
        // starts, then land shallow paths first, so a connection into `record.category_id`
        // refines one into `record`.
        let mut arrived: Vec<Vec<(usize, Value)>> = vec![Vec::new(); n];
        let mut outgoing: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (k, e) in workflow.edges.iter().enumerate() {
            match &e.from {
                Source::Node(from, _) => {
                    waiting[e.to] += 1;
                    outgoing[*from].push(k);
                }
                Source::Input(path) => {
                    if let Some(value) = path.get(&inputs) {
                        arrived[e.to].push((k, value));
                        delivered[e.to] = true;
                    }
                }
            }
        }

        let mut ready: Vec<usize> = (0..n).filter(|i| waiting[*i] == 0).collect();
        ready.reverse();
        let mut first_error: Option<String> = None;
        let mut running = JoinSet::new();
        let mut stop = false;
        let mut inline = None;

        loop {
            // Resolve nodes that are ready but skipped, then start what the limit allows.
            while let Some(i) = ready.pop() {
                let node = &workflow.nodes[i];
                let skip = if node.node.merges() {
                    untaken[i] && !delivered[i]
                } else {
                    untaken[i]
                };
                if skip || stop || blocked[i] {
                    let status = if stop || blocked[i] {
                        NodeStatus::Cancelled
                    } else {
                        NodeStatus::Skipped
                    };
                    reports[i].status = status;
                    if reports[i].error.is_none() {
                        reports[i].error = Some(match status {
                            NodeStatus::Skipped => "on a branch that was not taken".into(),
                            _ => first_error.as_ref().map_or("cancelled".into(), |e| format!("cancelled: {e}")),
                        });
                    }
                    self.emit(|| Progress::Finished {
                        node: node.name.clone(),
                        status,
                    });
                    for &k in &outgoing[i] {
                        let to = workflow.edges[k].to;
                        match status {
                            NodeStatus::Skipped => untaken[to] = true,
                            _ => blocked[to] = true,
                        }
                        waiting[to] -= 1;
                        if waiting[to] == 0 {
                            ready.push(to);
                        }
                    }
                    continue;
                }
                if running.len() >= self.options.concurrency.max(1) {
                    ready.push(i);
                    break;
                }
                let mut input = std::mem::take(&mut assembled[i]);
                let mut values = std::mem::take(&mut arrived[i]);
                values.sort_by_key(|(k, _)| (workflow.edges[*k].data_path().segments().len(), *k));
                // A merge learns the order its inputs were delivered in, as `$order`.
                let mut order = node.node.merges().then(|| Vec::with_capacity(values.len()));
                for (k, value) in values {
                    let path = workflow.edges[k].data_path();
                    if let Some(order) = &mut order {
                        order.push(Value::String(path.root().to_string()));
                    }
                    deliver(&mut input, path, value);
                }
                if let Some(order) = order
                    && let Value::Object(map) = &mut input
                {
                    map.insert("$order".into(), Value::Array(order));
                }
                let runtime = self.clone();
                let ctx = ctx.clone();
                let instance = node.node.clone();
                let instance_is_instant = instance.is_instant();
                let timeout = node.timeout.unwrap_or(self.options.node_timeout);
                let retry = node.retry.unwrap_or(self.options.retry);
                let type_label = node.type_label.clone();
                self.emit(|| Progress::Started { node: node.name.clone() });
                let span = tracing::info_span!("node", name = %node.name, node_type = %instance.info().type_name);
                let task = async move {
                    let started = Instant::now();
                    let (result, attempts) = runtime.attempt_all(&instance, &ctx, input, timeout, retry).await;
                    let ended = Instant::now();
                    let ok = if result.is_ok() { "true" } else { "false" };
                    metrics::histogram!("dataflow_node_seconds", "node_type" => type_label.clone()).record((ended - started).as_secs_f64());
                    metrics::counter!("dataflow_node_runs_total", "node_type" => type_label, "ok" => ok).increment(1);
                    (i, result, attempts, started, ended)
                }
                .instrument(span);
                if instance_is_instant || (running.is_empty() && ready.is_empty()) {
                    // A node that only computes, or the only node that can run: run it here,
                    // saving a task spawn and a wake-up. Panics are caught as a task's would be.
                    inline = Some(
                        AssertUnwindSafe(task)
                            .catch_unwind()
                            .await
                            .map_err(|_| "the node panicked".to_string()),
                    );
                    break;
                }
                running.spawn(task);
            }
            let joined = match inline.take() {
                Some(r) => r,
                None => match running.join_next().await {
                    Some(joined) => joined.map_err(|e| e.to_string()),
                    None => break,
                },
            };
            let (i, result, attempts, started, ended) = match joined {
                Ok(r) => r,
                Err(e) => {
                    // A node task panicked: the run fails, naming the panic.
                    first_error.get_or_insert_with(|| format!("a node panicked: {e}"));
                    stop = true;
                    continue;
                }
            };
            let node = &workflow.nodes[i];
            let report = &mut reports[i];
            report.attempts = attempts;
            // Wall-clock times from the run's start and the monotonic clock: one clock read
            // per event instead of two.
            report.started_at = Some(started_at + (started - clock));
            report.ended_at = Some(started_at + (ended - clock));
            report.duration_ms = (ended - started).as_secs_f64() * 1e3;
            match result {
                Ok(output) => {
                    report.status = NodeStatus::Succeeded;
                    self.emit(|| Progress::Finished {
                        node: node.name.clone(),
                        status: NodeStatus::Succeeded,
                    });
                    for &k in &outgoing[i] {
                        let edge = &workflow.edges[k];
                        if let (Source::Node(_, path), Some(_)) = (&edge.from, &edge.to_path) {
                            match path.get(&output) {
                                Some(value) => {
                                    arrived[edge.to].push((k, value));
                                    delivered[edge.to] = true;
                                }
                                None if node.node.routes() => untaken[edge.to] = true,
                                None => {}
                            }
                        }
                        waiting[edge.to] -= 1;
                        if waiting[edge.to] == 0 {
                            ready.push(edge.to);
                        }
                    }
                    report.output = Some(output);
                }
                Err(failure) => {
                    let message = format!("node '{}' ({}) failed: {failure}", node.name, node.node.info().type_name);
                    tracing::warn!(node = %node.name, error = %failure, attempts, "node failed");
                    report.status = NodeStatus::Failed;
                    report.error = Some(failure.to_string());
                    first_error.get_or_insert(message);
                    self.emit(|| Progress::Finished {
                        node: node.name.clone(),
                        status: NodeStatus::Failed,
                    });
                    if !self.options.continue_on_failure {
                        stop = true;
                    }
                    // Dependants cannot run: they are cancelled as their turn comes.
                    for &k in &outgoing[i] {
                        let to = workflow.edges[k].to;
                        blocked[to] = true;
                        waiting[to] -= 1;
                        if waiting[to] == 0 {
                            ready.push(to);
                        }
                    }
                    cancel_dependants(workflow, i, &mut reports);
                }
            }
        }

        for r in &mut reports {
            if r.status == NodeStatus::Cancelled && r.error.is_none() {
                r.error = Some("not started: the run stopped first".into());
            }
        }
        let mut out = Map::new();
        for (name, source) in &workflow.outputs {
            if let Source::Node(i, path) = source
                && let Some(value) = reports[*i].output.as_ref().and_then(|o| path.get(o))
            {
                out.insert(name.clone(), value);
            } else if let Source::Input(path) = source
                && let Some(value) = path.get(&inputs)
            {
                out.insert(name.clone(), value);
            }
        }
        finish(reports, out, first_error)
    }

    async fn attempt_all(
        &self,
        node: &crate::node::NodeRef,
        ctx: &Context,
        input: Value,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> (Result<Value, NodeFailure>, u32) {
        let env = NodeEnv { ctx, runtime: self };
        let stores = &node.info().stores;
        // A node that only computes fails the same way every time: one attempt.
        let attempts = if node.is_instant() { 1 } else { retry.attempts.max(1) };
        let mut input = Some(input);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(store) = stores.iter().find(|s| !self.breakers.admit(**s)) {
                return (Err(NodeFailure::CircuitOpen(*store)), attempt);
            }
            // The last attempt takes the input itself; earlier ones a copy.
            let this_input = if attempt >= attempts {
                input.take().expect("the input is taken by the last attempt only")
            } else {
                input.clone().expect("the input is kept until the last attempt")
            };
            let result = if node.is_instant() {
                // Nothing to wait for, so nothing to time out (and no timer to register).
                node.run(&env, this_input).await
            } else {
                match tokio::time::timeout(timeout, node.run(&env, this_input)).await {
                    Ok(r) => r,
                    Err(_) => Err(NodeFailure::Timeout(timeout)),
                }
            };
            match &result {
                Ok(_) => stores.iter().for_each(|s| self.breakers.success(*s)),
                Err(NodeFailure::Failed {
                    transient: true,
                    store: Some(store),
                    ..
                }) => self.breakers.failure(*store),
                Err(_) => stores.iter().for_each(|s| self.breakers.success(*s)),
            }
            match result {
                Err(failure) if failure.is_transient() && attempt < attempts => {
                    let ceiling = retry.backoff_ceiling(attempt + 1).as_millis() as u64;
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=ceiling))).await;
                }
                other => return (other, attempt),
            }
        }
    }
}

fn deliver(target: &mut Value, path: &FieldPath, value: Value) {
    if target.is_null() {
        *target = Value::Object(Map::new());
    }
    // Paths were checked against the schema; a clash with a scalar param is reported by the
    // node's own input check.
    let _ = path.set(target, value);
}

fn cancel_dependants(workflow: &Workflow, failed: usize, reports: &mut [NodeReport]) {
    let mut stack = vec![failed];
    while let Some(i) = stack.pop() {
        for e in &workflow.edges {
            if matches!(e.from, Source::Node(f, _) if f == i)
                && reports[e.to].attempts == 0
                && reports[e.to].status == NodeStatus::Cancelled
            {
                reports[e.to].error = Some(format!("cancelled: depends on failed node '{}'", workflow.nodes[failed].name));
                stack.push(e.to);
            }
        }
    }
}

/// Checks the run's inputs against the declarations: required ones present, types right,
/// defaults filled in, nothing undeclared.
fn check_inputs(workflow: &Workflow, inputs: Value) -> Result<Value, String> {
    let mut map = match inputs {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => return Err(format!("the run's input must be an object, got a {}", crate::path::kind(&other))),
    };
    let mut problems = Vec::new();
    for key in map.keys() {
        if !workflow.inputs().contains_key(key) {
            let known: Vec<&str> = workflow.inputs().keys().map(String::as_str).collect();
            let hint = crate::schema::did_you_mean(key, known.iter().copied())
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            problems.push(format!("unknown input '{key}'{hint}"));
        }
    }
    for (name, def) in workflow.inputs() {
        match map.get(name) {
            None | Some(Value::Null) => {
                if let Some(default) = &def.default {
                    map.insert(name.clone(), default.clone());
                } else if def.is_required() {
                    problems.push(format!("input '{name}' ({}) is required", def.ty));
                }
            }
            Some(value) => {
                let expected = crate::schema::Ty::named(&def.ty).unwrap_or(crate::schema::Ty::Any);
                if !crate::schema::Ty::one(crate::path::kind(value)).fits(&expected) {
                    problems.push(format!("input '{name}' must be {expected}, got a {}", crate::path::kind(value)));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(Value::Object(map))
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(cooldown: Duration) -> Breakers {
        Breakers {
            states: Mutex::new(HashMap::new()),
            threshold: 1,
            cooldown,
        }
    }

    /// A Search needs the vector and the relational store. With both breakers open and only
    /// the vector store's cooldown over, the vector breaker lets the Search through as its
    /// probe and the relational one refuses it, so the probe never runs. Once the relational
    /// store is back, Searches must go through again (they used to be refused for good: the
    /// vector breaker stayed half-open, and only a Search could close it).
    #[test]
    fn a_probe_refused_by_another_store_does_not_keep_the_breaker_half_open() {
        let b = breakers(Duration::ZERO);
        b.failure(StoreKind::Vector);
        b.states.lock().unwrap().insert(
            StoreKind::Relational,
            BreakerState::Open {
                until: Instant::now() + Duration::from_secs(3600),
            },
        );
        assert!(b.admit(StoreKind::Vector), "the vector store's cooldown is over: a probe may go");
        assert!(!b.admit(StoreKind::Relational), "the relational store's breaker is still open");
        b.success(StoreKind::Relational);
        assert!(b.admit(StoreKind::Vector), "the Search after it is the vector store's probe");
        assert!(b.admit(StoreKind::Relational));
    }

    /// While a probe is out, other calls are refused; a probe whose run was dropped (it never
    /// reports) does not keep them refused past a cooldown.
    #[test]
    fn a_probe_that_never_reports_is_replaced_after_a_cooldown() {
        let b = breakers(Duration::from_secs(3600));
        b.states
            .lock()
            .unwrap()
            .insert(StoreKind::Graph, BreakerState::Open { until: Instant::now() });
        assert!(b.admit(StoreKind::Graph), "the probe");
        assert!(!b.admit(StoreKind::Graph), "one probe at a time");
        let b = breakers(Duration::ZERO);
        b.failure(StoreKind::Graph);
        assert!(b.admit(StoreKind::Graph), "the probe");
        assert!(b.admit(StoreKind::Graph), "the probe never reported: the next call probes");
        b.success(StoreKind::Graph);
        assert!(matches!(
            b.states.lock().unwrap()[&StoreKind::Graph],
            BreakerState::Closed { failures: 0 }
        ));
    }
}
