//! The background projector ([`ProjectionMode::Background`]): a task of the process that
//! applies due outbox records whenever a write wakes it, batched across writes.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[cfg(doc)]
use crate::config::ProjectionMode;

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
    /// Wakes the task, starting it on the caller's tokio runtime when it is not running. Each
    /// round of the task runs what `round` returns; `None` (the outbox is gone) ends it.
    pub(crate) fn wake<F, Fut>(&self, round: F)
    where
        F: Fn() -> Option<Fut> + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match &*running {
            Some((wake, task)) if !task.is_finished() => wake.notify_one(),
            _ => {
                let wake = Arc::new(Notify::new());
                wake.notify_one();
                let task = tokio::spawn(run(round, wake.clone()));
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

/// The task: runs a round (the outbox's `sync` of due records) whenever a write wakes it
/// (after letting others gather for [`PROJECTOR_GATHER`]), and once a [`PROJECTOR_TICK`]
/// otherwise. It ends once `round` says the outbox is gone; what it has not applied stays in
/// the outbox.
async fn run<F, Fut>(round: F, wake: Arc<Notify>)
where
    F: Fn() -> Option<Fut>,
    Fut: Future<Output = ()>,
{
    loop {
        if tokio::time::timeout(PROJECTOR_TICK, wake.notified()).await.is_ok() {
            tokio::time::sleep(PROJECTOR_GATHER).await;
        }
        let Some(this_round) = round() else {
            return;
        };
        this_round.await;
    }
}
