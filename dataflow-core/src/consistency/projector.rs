//! The background projector ([`ProjectionMode::Background`]): a task of the process that
//! applies due outbox records whenever a write wakes it, batched across writes.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[cfg(doc)]
use crate::config::ProjectionMode;
use crate::consistency::outbox::{Outbox, OutboxInner};

/// How long the background projector sleeps without a write waking it: records that failed
/// come due again after their backoff, and nothing else would wake it for them.
const PROJECTOR_TICK: Duration = Duration::from_secs(1);

/// How long the background projector lets writes gather after one woke it, so that one
/// round applies many records in one call per store instead of one call per write.
const PROJECTOR_GATHER: Duration = Duration::from_millis(100);

/// The projector's task and what wakes it, started by the first write that needs it and
/// again when the tokio runtime it ran on went away (an outbox may outlive a runtime).
#[derive(Default)]
pub(crate) struct Projector {
    running: Mutex<Option<(Arc<Notify>, JoinHandle<()>)>>,
}

impl Projector {
    /// Wakes the task, starting it on the caller's tokio runtime when it is not running.
    pub(crate) fn wake(&self, outbox: Weak<OutboxInner>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match &*running {
            Some((wake, task)) if !task.is_finished() => wake.notify_one(),
            _ => {
                let wake = Arc::new(Notify::new());
                wake.notify_one();
                let task = tokio::spawn(run(outbox, wake.clone()));
                *running = Some((wake, task));
            }
        }
    }

    /// Stops the task. A round it had begun is abandoned: its transaction rolls back and its
    /// records stay pending.
    pub(crate) async fn stop(&self) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((_, task)) = running {
            task.abort();
            // Cancelled, or ended by itself: either way it holds nothing any more.
            let _ = task.await;
        }
    }
}

/// The task: applies due outbox records (`sync`) whenever a write wakes it (after letting
/// others gather for [`PROJECTOR_GATHER`]), and once a [`PROJECTOR_TICK`] otherwise. It holds
/// the outbox weakly and ends once it is dropped; what it has not applied stays in the outbox.
async fn run(outbox: Weak<OutboxInner>, wake: Arc<Notify>) {
    loop {
        if tokio::time::timeout(PROJECTOR_TICK, wake.notified()).await.is_ok() {
            tokio::time::sleep(PROJECTOR_GATHER).await;
        }
        let Some(inner) = outbox.upgrade() else {
            return;
        };
        match Outbox::from_inner(inner).sync().await {
            Ok(report) if report.failed > 0 => {
                tracing::warn!(
                    failed = report.failed,
                    remaining = report.remaining,
                    "background projections: records left pending for a retry"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "background projections: the outbox could not be read; retrying"),
        }
    }
}
