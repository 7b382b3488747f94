//! Concurrent queries that share one request. Queries with the same key (a collection, a
//! filter, a dimension) that arrive while a request of that key is in flight wait in a queue;
//! when the request returns, the first of them sends the next one, for itself and up to
//! `max_batch - 1` others. No timer: a lone query goes out at once and pays nothing; under
//! load, requests fill up by themselves. Each caller gets its own answer, and an error of a
//! request fails exactly the callers whose queries it carried.
//!
//! Our own code rather than a crate: the batching crates we looked at (e.g. `batched-fn`)
//! collect for a fixed delay or a fixed size, which is the timer this avoids, and none hands
//! the next request to a waiting caller instead of a task of its own.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use crate::error::Result;

/// What a waiting caller is told: its answer, or that it sends the next request.
enum Turn<A> {
    Answer(Result<A>),
    Lead,
}

/// A query waiting for the request in flight to return.
struct Waiting<Q, A> {
    query: Q,
    reply: oneshot::Sender<Turn<A>>,
}

/// The queries of one key.
struct Queue<Q, A> {
    waiting: VecDeque<Waiting<Q, A>>,
    /// A request of this key is in flight (its sender hands over when it returns).
    busy: bool,
}

/// Shares requests between concurrent queries of the same key (see the module comment).
pub(crate) struct Coalescer<K, Q, A> {
    queues: Mutex<HashMap<K, Queue<Q, A>>>,
    max_batch: usize,
    queries: AtomicU64,
    requests: AtomicU64,
}

impl<K: Hash + Eq + Clone, Q, A> Coalescer<K, Q, A> {
    /// A coalescer whose requests carry at most `max_batch` queries.
    pub(crate) fn new(max_batch: usize) -> Self {
        Coalescer {
            queues: Mutex::new(HashMap::new()),
            max_batch: max_batch.max(1),
            queries: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// Queries answered and requests sent so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.queries.load(Ordering::Relaxed), self.requests.load(Ordering::Relaxed))
    }

    /// Answers `query`: sends it at once when no request of `key` is in flight, else waits
    /// for its turn in the next request. `send` sends one request for a batch of queries
    /// (this caller's first) and returns one answer per query, in order.
    pub(crate) async fn run<S, F>(&self, key: K, query: Q, send: S) -> Result<A>
    where
        Q: Clone,
        S: Fn(Vec<Q>) -> F,
        F: Future<Output = Result<Vec<A>>>,
    {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let waiting = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let queue = queues.entry(key.clone()).or_insert_with(|| Queue {
                waiting: VecDeque::new(),
                busy: false,
            });
            if queue.busy {
                let (reply, turn) = oneshot::channel();
                queue.waiting.push_back(Waiting {
                    query: query.clone(),
                    reply,
                });
                Some(turn)
            } else {
                queue.busy = true;
                None
            }
        };
        if let Some(turn) = waiting {
            match turn.await {
                Ok(Turn::Answer(answer)) => return answer,
                Ok(Turn::Lead) => {}
                // The caller that took this query into its request was dropped (its own caller
                // gave up) before answering: this query goes out on its own.
                Err(_) => {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    return send(vec![query]).await?.pop().ok_or_else(missing_answer);
                }
            }
        }
        // This caller sends the next request of `key`; whatever happens to it, the turn
        // passes on when `lead` is dropped.
        let lead = Lead { coalescer: self, key };
        let batch: Vec<Waiting<Q, A>> = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let queue = queues.get_mut(&lead.key).expect("a busy queue stays");
            let n = queue.waiting.len().min(self.max_batch - 1);
            queue.waiting.drain(..n).collect()
        };
        let mut queries = Vec::with_capacity(batch.len() + 1);
        queries.push(query);
        queries.extend(batch.iter().map(|w| w.query.clone()));
        self.requests.fetch_add(1, Ordering::Relaxed);
        let answers = send(queries).await;
        drop(lead);
        match answers {
            Ok(answers) => {
                let mut answers = answers.into_iter();
                let own = answers.next();
                for w in batch {
                    let answer = answers.next().ok_or_else(missing_answer);
                    // A caller that gave up has no receiver left; nothing to tell it.
                    let _ = w.reply.send(Turn::Answer(answer));
                }
                own.ok_or_else(missing_answer)
            }
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Turn::Answer(Err(e.clone())));
                }
                Err(e)
            }
        }
    }
}

/// The turn to send requests of one key; dropping it passes the turn to the first waiting
/// caller still there, or marks the key idle.
struct Lead<'a, K: Hash + Eq, Q, A> {
    coalescer: &'a Coalescer<K, Q, A>,
    key: K,
}

impl<K: Hash + Eq, Q, A> Drop for Lead<'_, K, Q, A> {
    fn drop(&mut self) {
        let mut queues = self.coalescer.queues.lock().unwrap_or_else(|e| e.into_inner());
        let Some(queue) = queues.get_mut(&self.key) else { return };
        while let Some(next) = queue.waiting.pop_front() {
            if next.reply.send(Turn::Lead).is_ok() {
                return;
            }
        }
        queues.remove(&self.key);
    }
}

/// A request answered fewer queries than it carried.
fn missing_answer() -> crate::Error {
    crate::Error::Store {
        store: crate::error::StoreKind::Vector,
        action: "querying".to_owned(),
        message: "the server answered fewer queries than the request carried".to_owned(),
        transient: false,
        busy: false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Callers that arrive while a request is in flight share the next one, each gets the
    /// answer to its own query, and a lone caller's query goes out alone and at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_queries_share_a_request_and_each_gets_its_own_answer() {
        let coalescer: Arc<Coalescer<&'static str, u32, u32>> = Arc::new(Coalescer::new(16));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let send = |sizes: Arc<Mutex<Vec<usize>>>| {
            move |batch: Vec<u32>| {
                let sizes = sizes.clone();
                async move {
                    sizes.lock().unwrap().push(batch.len());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(batch.iter().map(|q| q * 10).collect())
                }
            }
        };
        assert_eq!(coalescer.run("k", 7, send(sizes.clone())).await.unwrap(), 70);
        assert_eq!(*sizes.lock().unwrap(), [1], "a lone query goes out alone");
        let mut tasks = Vec::new();
        for q in 0..40u32 {
            let (coalescer, sizes) = (coalescer.clone(), sizes.clone());
            tasks.push(tokio::spawn(async move { coalescer.run("k", q, send(sizes)).await }));
        }
        for (q, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap().unwrap(), q as u32 * 10, "query {q} got its own answer");
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 41, "every query was sent once: {sizes:?}");
        assert!(sizes.len() < 41, "queued queries shared requests: {sizes:?}");
        assert!(sizes.iter().all(|&n| n <= 16), "no request above the bound: {sizes:?}");
        assert_eq!(coalescer.counts(), (41, sizes.len() as u64));
    }

    /// A failed request fails the callers it carried and no others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_fails_exactly_the_callers_of_its_request() {
        let coalescer: Arc<Coalescer<u8, u32, u32>> = Arc::new(Coalescer::new(64));
        let send = |batch: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            if batch.contains(&13) {
                Err(crate::Error::Config(format!("refused a request of {} queries", batch.len())))
            } else {
                Ok(batch)
            }
        };
        // Key 1 carries the bad query; key 2's callers share other requests.
        let mut tasks = Vec::new();
        for q in [1u32, 13, 2, 3] {
            let coalescer = coalescer.clone();
            tasks.push((1u8, q, tokio::spawn(async move { coalescer.run(1, q, send).await })));
        }
        for q in [4u32, 5, 6] {
            let coalescer = coalescer.clone();
            tasks.push((2u8, q, tokio::spawn(async move { coalescer.run(2, q, send).await })));
        }
        for (key, q, task) in tasks {
            let answer = task.await.unwrap();
            if key == 2 {
                assert_eq!(answer.unwrap(), q, "another key's callers are not touched");
            } else if q == 13 {
                assert!(answer.is_err());
            }
        }
        // The bad query's request failed; whoever shared it failed too, and nobody else did.
        assert_eq!(coalescer.run(1, 9, send).await.unwrap(), 9, "the key works afterwards");
    }

    /// A leader whose caller gives up mid-request passes the turn on: the queued callers are
    /// answered, none waits forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_gives_up_does_not_strand_the_queue() {
        let coalescer: Arc<Coalescer<u8, u32, u32>> = Arc::new(Coalescer::new(8));
        let slow = |batch: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(batch)
        };
        let first = {
            let coalescer = coalescer.clone();
            tokio::spawn(async move { coalescer.run(0, 1, slow).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut queued = Vec::new();
        for q in 2..6u32 {
            let coalescer = coalescer.clone();
            queued.push((q, tokio::spawn(async move { coalescer.run(0, q, slow).await })));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.abort();
        for (q, task) in queued {
            let answer = tokio::time::timeout(Duration::from_secs(10), task).await.expect("not stranded");
            assert_eq!(answer.unwrap().unwrap(), q);
        }
    }
}
