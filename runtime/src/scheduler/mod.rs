//! The scheduler: runs a [`Workflow`] node by node as inputs become ready, independent
//! branches concurrently under a limit, with per-node timeout and retry (`retry`), a circuit
//! breaker per store (`breaker`), and a [`RunReport`] at the end (`report`). [`Runtime`]
//! holds what runs share (registry, options, breakers, admission); `run` holds the state of one
//! run.

mod breaker;
mod report;
mod retry;
mod run;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dataflow_core::{Context, StoreKind};
use serde_json::{Map, Value};
use tracing::Instrument;

pub use report::{NodeReport, NodeStatus, Progress, RunReport, RunStatus};

use crate::node::registry::Registry;
use crate::node::{NodeEnv, NodeFailure, NodeRef, SubRunError, SubRuns, SubWorkflow};
use crate::workflow::{RetryPolicy, Workflow};
use breaker::Breakers;

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

type ProgressHook = Arc<dyn Fn(&Progress) + Send + Sync>;

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
            breakers: Arc::new(Breakers::new(options.breaker_threshold, options.breaker_cooldown)),
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

    /// Runs `workflow` like [`Runtime::run`], calling `hook` as this run's nodes start and
    /// finish, besides the runtime's own hook: what a service streams to the client of one
    /// run. The run shares the runtime's breakers and admission.
    pub async fn run_observed(
        &self,
        workflow: &Workflow,
        ctx: &Context,
        inputs: Value,
        hook: impl Fn(&Progress) + Send + Sync + 'static,
    ) -> RunReport {
        let shared = self.progress.clone();
        let observed = Runtime {
            progress: Some(Arc::new(move |event: &Progress| {
                if let Some(shared) = &shared {
                    shared(event);
                }
                hook(event);
            })),
            ..self.clone()
        };
        observed.run(workflow, ctx, inputs).await
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
    fn quiet(&self) -> Runtime {
        Runtime {
            progress: None,
            admission: None,
            ..self.clone()
        }
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
            run::run(self, workflow, ctx, inputs, queued).await
        }
        .instrument(span)
        .await
    }

    /// Runs `node` on `input`: attempts under the node's (or the runtime's) timeout and retry
    /// policy, each admitted by the breakers of the stores it needs. Returns the last result
    /// and the attempts made.
    async fn attempt_all(
        &self,
        node: &NodeRef,
        ctx: &Context,
        input: Value,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> (Result<Value, NodeFailure>, u32) {
        let env = NodeEnv { ctx, runtime: self };
        // A node that only computes fails the same way every time: one attempt.
        let attempts = if node.is_instant() { 1 } else { retry.attempts };
        retry::retry(retry, attempts, input, |input| self.attempt(node, &env, input, timeout)).await
    }

    /// One attempt: refused at once when a breaker of a store the node needs is open; timed
    /// out unless the node only computes; its outcome recorded by the breakers.
    async fn attempt(&self, node: &NodeRef, env: &NodeEnv<'_>, input: Value, timeout: Duration) -> Result<Value, NodeFailure> {
        let stores = &node.info().stores;
        if let Some(store) = self.breakers.refusing(stores) {
            return Err(NodeFailure::CircuitOpen(store));
        }
        let result = if node.is_instant() {
            // Nothing to wait for, so nothing to time out (and no timer to register).
            node.run(env, input).await
        } else {
            match tokio::time::timeout(timeout, node.run(env, input)).await {
                Ok(r) => r,
                Err(_) => Err(NodeFailure::Timeout(timeout)),
            }
        };
        self.breakers.record(stores, &result);
        result
    }
}

#[async_trait]
impl SubRuns for Runtime {
    async fn run_sub(&self, workflow: &SubWorkflow, ctx: &Context, inputs: Value) -> Result<Map<String, Value>, SubRunError> {
        let workflow = workflow.downcast_ref::<Workflow>().ok_or(SubRunError::NotAWorkflow)?;
        let report = self.quiet().run(workflow, ctx, inputs).await;
        match report.status {
            RunStatus::Succeeded => Ok(report.outputs),
            RunStatus::Failed => Err(SubRunError::Failed(
                report.error.unwrap_or_else(|| "the sub-workflow did not succeed".into()),
            )),
        }
    }

    /// Reports item progress of a long node.
    fn progress(&self, node: &str, done: usize, total: usize) {
        self.emit(|| Progress::Items {
            node: node.to_string(),
            done,
            total,
        });
    }
}
