//! Progress of a run on the terminal: a bar of finished nodes (and of the items of a `Map`)
//! on stderr, redrawn in place.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dataflow_core::Context;
use dataflow_runtime::{NodeStatus, Progress, RunReport, Runtime, Workflow};
use serde_json::Value;

use crate::registry;

/// Runs `workflow` with a progress bar of finished nodes (and items of a Map) on stderr. On a
/// terminal the bar is redrawn in place; elsewhere (a log, a pipe) each finished node gets a
/// line of its own, without escape codes.
pub async fn run_with_progress(workflow: &Workflow, ctx: &Context, inputs: Value) -> RunReport {
    let terminal = std::io::stderr().is_terminal();
    let total = workflow.node_names().count();
    let finished = Arc::new(AtomicUsize::new(0));
    let seen = finished.clone();
    let runtime = Runtime::new(registry()).on_progress(move |event| {
        let line = match event {
            Progress::Finished { node, status } => {
                let done = seen.fetch_add(1, Ordering::Relaxed) + 1;
                format!("{} {done}/{total} {node} {}", bar(done, total), status_word(*status))
            }
            Progress::Items { node, done, total } if terminal || done == total => {
                format!("{} {done}/{total} items ({node})", bar(*done, *total))
            }
            Progress::Items { .. } | Progress::Started { .. } => return,
        };
        let mut err = std::io::stderr().lock();
        let _ = if terminal {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    });
    let report = runtime.run(workflow, ctx, inputs).await;
    if terminal {
        eprintln!();
    }
    report
}

/// `[####----]`: `done` of `total` in 24 characters.
fn bar(done: usize, total: usize) -> String {
    let width = 24;
    let filled = (done * width).checked_div(total).unwrap_or(width).min(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// The word a report shows for a node's status.
pub fn status_word(status: NodeStatus) -> &'static str {
    match status {
        NodeStatus::Succeeded => "ok",
        NodeStatus::Failed => "FAILED",
        NodeStatus::Skipped => "skipped",
        NodeStatus::Cancelled => "cancelled",
    }
}
