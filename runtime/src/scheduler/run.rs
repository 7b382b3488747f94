//! One run of a workflow: the state of each node (one [`NodeState`] per node), the ready
//! queue, and the loop that starts ready nodes under the concurrency limit and resolves what
//! their results make ready, skipped or cancelled.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dataflow_core::Context;
use futures::FutureExt;
use serde_json::{Map, Value};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::Runtime;
use super::report::{NodeReport, NodeStatus, Progress, RunReport, RunStatus};
use crate::node::NodeFailure;
use crate::node::path::FieldPath;
use crate::workflow::{Source, Workflow};

/// One node's part of a run in progress.
struct NodeState {
    /// The input being assembled: the static input; the arrived values land in it when the
    /// node starts.
    input: Value,
    /// Values that arrived, with the index of the edge that brought them. They land when the
    /// node starts, shallow paths first, so a connection into `record.category_id` refines one
    /// into `record`.
    arrived: Vec<(usize, Value)>,
    /// Incoming edges from nodes not yet resolved.
    waiting: usize,
    /// An incoming connection was not taken (its source was skipped or routed elsewhere).
    untaken: bool,
    /// An incoming connection delivered a value (a merge runs when one did).
    delivered: bool,
    /// A node it depends on failed or was cancelled.
    blocked: bool,
    /// What the run reports about it.
    report: NodeReport,
}

/// What an attempted node came back with.
struct Attempted {
    index: usize,
    result: Result<Value, NodeFailure>,
    attempts: u32,
    started: Instant,
    ended: Instant,
}

/// A run in progress.
struct Run<'r> {
    runtime: &'r Runtime,
    workflow: &'r Workflow,
    ctx: &'r Context,
    nodes: Vec<NodeState>,
    /// Nodes whose incoming edges are all resolved, to start, skip or cancel.
    ready: Vec<usize>,
    first_error: Option<String>,
    /// Start nothing more (a node failed and the run does not continue on failure).
    stop: bool,
    started_at: DateTime<Utc>,
    clock: Instant,
}

/// Runs `workflow` after its admission wait `queued`.
pub(super) async fn run(runtime: &Runtime, workflow: &Workflow, ctx: &Context, inputs: Value, queued: Duration) -> RunReport {
    let mut run = Run {
        runtime,
        workflow,
        ctx,
        nodes: Vec::with_capacity(workflow.nodes.len()),
        ready: Vec::new(),
        first_error: None,
        stop: false,
        started_at: Utc::now(),
        clock: Instant::now(),
    };
    run.nodes = workflow
        .nodes
        .iter()
        .zip(&workflow.wiring.incoming)
        .map(|(node, &waiting)| NodeState::new(node.static_input.clone(), waiting, node.report()))
        .collect();
    let inputs = match workflow.check_inputs(inputs) {
        Ok(inputs) => inputs,
        Err(problems) => {
            let message = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            for state in &mut run.nodes {
                state.report.error = Some("the run's input was rejected".into());
            }
            return run.finish(Map::new(), Some(message), queued);
        }
    };
    run.wire(&inputs);
    run.drive().await;
    let outputs = run.outputs(&inputs);
    let error = run.first_error.take();
    run.finish(outputs, error, queued)
}

impl NodeState {
    fn new(input: Value, waiting: usize, report: NodeReport) -> Self {
        NodeState {
            input,
            arrived: Vec::new(),
            waiting,
            untaken: false,
            delivered: false,
            blocked: false,
            report,
        }
    }
}

impl crate::workflow::CompiledNode {
    /// The report of this node before it runs: cancelled, no attempts.
    fn report(&self) -> NodeReport {
        NodeReport {
            name: self.name.clone(),
            node_type: self.node.info().type_name.clone(),
            status: NodeStatus::Cancelled,
            attempts: 0,
            started_at: None,
            ended_at: None,
            duration_ms: 0.0,
            output: None,
            error: None,
        }
    }
}

impl Run<'_> {
    /// Delivers the run's inputs, and queues the nodes that wait for nothing.
    fn wire(&mut self, inputs: &Value) {
        for &k in &self.workflow.wiring.from_inputs {
            let e = &self.workflow.edges[k];
            if let Source::Input(path) = &e.from
                && let Some(value) = path.get(inputs)
            {
                self.nodes[e.to].arrived.push((k, value));
                self.nodes[e.to].delivered = true;
            }
        }
        self.ready = (0..self.nodes.len()).rev().filter(|i| self.nodes[*i].waiting == 0).collect();
    }

    /// Starts ready nodes and takes in their results until nothing runs and nothing is ready.
    async fn drive(&mut self) {
        let mut running = JoinSet::new();
        loop {
            let joined = match self.start_ready(&mut running) {
                // A node that only computes, or the only node that can run: run it here,
                // saving a task spawn and a wake-up. Panics are caught as a task's would be.
                Some(task) => AssertUnwindSafe(task)
                    .catch_unwind()
                    .await
                    .map_err(|_| "the node panicked".to_string()),
                None => match running.join_next().await {
                    Some(joined) => joined.map_err(|e| e.to_string()),
                    None => break,
                },
            };
            match joined {
                Ok(attempted) => self.finished(attempted),
                Err(e) => {
                    // A node task panicked: the run fails, naming the panic.
                    self.first_error.get_or_insert_with(|| format!("a node panicked: {e}"));
                    self.stop = true;
                }
            }
        }
    }

    /// Resolves ready nodes that will not run (skipped or cancelled) and spawns the others
    /// while the concurrency limit allows. Returns the node to run in place, if one should be.
    fn start_ready(&mut self, running: &mut JoinSet<Attempted>) -> Option<impl Future<Output = Attempted> + Send + 'static + use<>> {
        while let Some(i) = self.ready.pop() {
            let state = &self.nodes[i];
            let skip = if self.workflow.nodes[i].node.merges() {
                state.untaken && !state.delivered
            } else {
                state.untaken
            };
            if skip || self.stop || state.blocked {
                let status = if self.stop || state.blocked {
                    NodeStatus::Cancelled
                } else {
                    NodeStatus::Skipped
                };
                self.not_run(i, status);
                continue;
            }
            if running.len() >= self.runtime.options.concurrency.max(1) {
                self.ready.push(i);
                return None;
            }
            let instant = self.workflow.nodes[i].node.is_instant();
            let task = self.launch(i);
            if instant || (running.is_empty() && self.ready.is_empty()) {
                return Some(task);
            }
            running.spawn(task);
        }
        None
    }

    /// Marks node `i` skipped or cancelled, and passes that on to the nodes after it.
    fn not_run(&mut self, i: usize, status: NodeStatus) {
        let report = &mut self.nodes[i].report;
        report.status = status;
        if report.error.is_none() {
            report.error = Some(match status {
                NodeStatus::Skipped => "on a branch that was not taken".into(),
                _ => self.first_error.as_ref().map_or("cancelled".into(), |e| format!("cancelled: {e}")),
            });
        }
        self.runtime.emit(|| Progress::Finished {
            node: self.workflow.nodes[i].name.clone(),
            status,
        });
        let workflow = self.workflow;
        for &k in &workflow.wiring.outgoing[i] {
            let to = self.workflow.edges[k].to;
            match status {
                NodeStatus::Skipped => self.nodes[to].untaken = true,
                _ => self.nodes[to].blocked = true,
            }
            self.resolved(to);
        }
    }

    /// One incoming edge of node `to` is resolved; it is ready when none is left.
    fn resolved(&mut self, to: usize) {
        self.nodes[to].waiting -= 1;
        if self.nodes[to].waiting == 0 {
            self.ready.push(to);
        }
    }

    /// Lands node `i`'s arrived values in its input and makes the task that attempts it.
    fn launch(&mut self, i: usize) -> impl Future<Output = Attempted> + Send + 'static + use<> {
        let node = &self.workflow.nodes[i];
        let state = &mut self.nodes[i];
        let mut input = std::mem::take(&mut state.input);
        let mut values = std::mem::take(&mut state.arrived);
        let edges = &self.workflow.edges;
        values.sort_by_key(|(k, _)| (edges[*k].data_path().segments().len(), *k));
        // A merge learns the order its inputs were delivered in, as `$order`.
        let mut order = node.node.merges().then(|| Vec::with_capacity(values.len()));
        for (k, value) in values {
            let path = edges[k].data_path();
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
        let runtime = self.runtime.clone();
        // The node's writes are recorded under its name, when the run's are (a queued run
        // executed again does each write once: see `Context::with_effect_scope`).
        let ctx = self.ctx.within(&node.name);
        let instance = node.node.clone();
        // An unbounded node (an import) has no default limit; tokio treats `Duration::MAX` as
        // a deadline that never comes.
        let default_timeout = if instance.is_unbounded() {
            Duration::MAX
        } else {
            self.runtime.options.node_timeout
        };
        let timeout = node.timeout.unwrap_or(default_timeout);
        let retry = node.retry.unwrap_or(self.runtime.options.retry);
        let type_label = node.type_label.clone();
        self.runtime.emit(|| Progress::Started { node: node.name.clone() });
        let span = tracing::info_span!("node", name = %node.name, node_type = %instance.info().type_name);
        async move {
            let started = Instant::now();
            let (result, attempts) = runtime.attempt_all(&instance, &ctx, input, timeout, retry).await;
            let ended = Instant::now();
            let ok = if result.is_ok() { "true" } else { "false" };
            metrics::histogram!("dataflow_node_seconds", "node_type" => type_label.clone()).record((ended - started).as_secs_f64());
            metrics::counter!("dataflow_node_runs_total", "node_type" => type_label, "ok" => ok).increment(1);
            Attempted {
                index: i,
                result,
                attempts,
                started,
                ended,
            }
        }
        .instrument(span)
    }

    /// Takes in an attempted node's result: reports it and resolves the edges leaving it.
    fn finished(&mut self, attempted: Attempted) {
        let Attempted {
            index: i,
            result,
            attempts,
            started,
            ended,
        } = attempted;
        let report = &mut self.nodes[i].report;
        report.attempts = attempts;
        // Wall-clock times from the run's start and the monotonic clock: one clock read per
        // event instead of two.
        report.started_at = Some(self.started_at + (started - self.clock));
        report.ended_at = Some(self.started_at + (ended - self.clock));
        report.duration_ms = (ended - started).as_secs_f64() * 1e3;
        match result {
            Ok(output) => self.succeeded(i, output),
            Err(failure) => self.failed(i, failure, attempts),
        }
    }

    /// Node `i` returned `output`: its connections deliver (or, from a router, are not taken).
    fn succeeded(&mut self, i: usize, output: Value) {
        let node = &self.workflow.nodes[i];
        self.nodes[i].report.status = NodeStatus::Succeeded;
        self.runtime.emit(|| Progress::Finished {
            node: node.name.clone(),
            status: NodeStatus::Succeeded,
        });
        let workflow = self.workflow;
        for &k in &workflow.wiring.outgoing[i] {
            let edge = &self.workflow.edges[k];
            if let (Source::Node(_, path), Some(_)) = (&edge.from, &edge.to_path) {
                match path.get(&output) {
                    Some(value) => {
                        self.nodes[edge.to].arrived.push((k, value));
                        self.nodes[edge.to].delivered = true;
                    }
                    None if node.node.routes() => self.nodes[edge.to].untaken = true,
                    None => {}
                }
            }
            self.resolved(edge.to);
        }
        self.nodes[i].report.output = Some(output);
    }

    /// Node `i` failed: the run fails; the nodes after it cannot run.
    fn failed(&mut self, i: usize, failure: NodeFailure, attempts: u32) {
        let node = &self.workflow.nodes[i];
        let message = format!("node '{}' ({}) failed: {failure}", node.name, node.node.info().type_name);
        tracing::warn!(node = %node.name, error = %failure, attempts, "node failed");
        self.nodes[i].report.status = NodeStatus::Failed;
        self.nodes[i].report.error = Some(failure.to_string());
        self.first_error.get_or_insert(message);
        self.runtime.emit(|| Progress::Finished {
            node: node.name.clone(),
            status: NodeStatus::Failed,
        });
        if !self.runtime.options.continue_on_failure {
            self.stop = true;
        }
        // Dependants cannot run: they are cancelled as their turn comes.
        let workflow = self.workflow;
        for &k in &workflow.wiring.outgoing[i] {
            let to = self.workflow.edges[k].to;
            self.nodes[to].blocked = true;
            self.resolved(to);
        }
        self.cancel_dependants(i);
    }

    /// Says of every node downstream of failed node `failed` that has not run why it will not.
    fn cancel_dependants(&mut self, failed: usize) {
        let mut stack = vec![failed];
        while let Some(i) = stack.pop() {
            for e in &self.workflow.edges {
                let report = &mut self.nodes[e.to].report;
                if matches!(e.from, Source::Node(f, _) if f == i) && report.attempts == 0 && report.status == NodeStatus::Cancelled {
                    report.error = Some(format!("cancelled: depends on failed node '{}'", self.workflow.nodes[failed].name));
                    stack.push(e.to);
                }
            }
        }
    }

    /// The workflow's declared outputs whose source has a value.
    fn outputs(&self, inputs: &Value) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, source) in &self.workflow.outputs {
            let value = match source {
                Source::Node(i, path) => self.nodes[*i].report.output.as_ref().and_then(|o| path.get(o)),
                Source::Input(path) => path.get(inputs),
            };
            if let Some(value) = value {
                out.insert(name.clone(), value);
            }
        }
        out
    }

    /// The report of the run, which ended with `error` if it failed; counted in the metrics.
    fn finish(self, outputs: Map<String, Value>, error: Option<String>, queued: Duration) -> RunReport {
        let workflow = self.workflow.name();
        let status = if error.is_none() { RunStatus::Succeeded } else { RunStatus::Failed };
        metrics::counter!("dataflow_runs_total", "workflow" => workflow.to_string(), "status" => format!("{status:?}").to_lowercase())
            .increment(1);
        metrics::histogram!("dataflow_run_seconds", "workflow" => workflow.to_string()).record(self.clock.elapsed().as_secs_f64());
        let nodes = self
            .nodes
            .into_iter()
            .map(|state| {
                let mut report = state.report;
                if report.status == NodeStatus::Cancelled && report.error.is_none() {
                    report.error = Some("not started: the run stopped first".into());
                }
                report
            })
            .collect();
        RunReport {
            workflow: workflow.to_string(),
            status,
            started_at: self.started_at,
            duration_ms: self.clock.elapsed().as_secs_f64() * 1e3,
            queued_ms: queued.as_secs_f64() * 1e3,
            nodes,
            outputs,
            error,
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
