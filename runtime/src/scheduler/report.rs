//! What a run reports: each node's status, attempts, times and output ([`RunReport`]), and the
//! events a progress display sees while it goes ([`Progress`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

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
    /// ([`RunOptions::max_concurrent_runs`](crate::RunOptions::max_concurrent_runs)).
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

/// Something a run reports while it goes, for progress displays. As JSON, an object whose
/// `event` names the variant in snake case (`{"event": "started", "node": "vote"}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
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
