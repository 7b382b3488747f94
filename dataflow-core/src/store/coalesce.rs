//! Concurrent calls that share one request: vector queries and upserts (Chroma), graph node
//! writes (Bolt), the texts of an expensive embedder (`StoreHandles::embed`). Calls with the same key (a collection and filter, a label) that arrive while a
//! request of that key is in flight wait in a queue; when the request returns, the first of
//! them sends the next one, for itself and up to `max_batch - 1` others. No timer: a lone call
//! goes out at once and pays nothing; under load, requests fill up by themselves. Each caller
//! gets its own answer, and an error of a request fails exactly the callers it carried.
//!
//! A waiting caller's wait can be bounded ([`Coalescer::with_wait_limit`]): a write must not
//! queue without end behind requests to a server that stopped answering, since its outbox record
//! is applied by `sync` once the write has said it failed. A caller that gives up is left out
//! of the requests still to go.
//!
//! Our own code rather than a crate: the batching crates we looked at (e.g. `batched-fn`)
//! collect for a fixed delay or a fixed size, which is the timer this avoids, and none hands
//! the next request to a waiting caller instead of a task of its own.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{Error, Result, StoreKind};

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

/// Makes the error of a caller that waited out its limit, from the limit.
type TimedOut = fn(Duration) -> Error;

/// Shares requests between concurrent queries of the same key (see the module comment).
pub(crate) struct Coalescer<K, Q, A> {
    queues: Mutex<HashMap<K, Queue<Q, A>>>,
    max_batch: usize,
    /// The store the requests go to, named in errors.
    store: StoreKind,
    /// How long a caller waits for its turn at most, and the error it then returns.
    wait_limit: Option<(Duration, TimedOut)>,
    queries: AtomicU64,
    requests: AtomicU64,
}

impl<K: Hash + Eq + Clone, Q, A> Coalescer<K, Q, A> {
    /// A coalescer of requests to `store` that carry at most `max_batch` queries each.
    pub(crate) fn new(store: StoreKind, max_batch: usize) -> Self {
        Coalescer {
            queues: Mutex::new(HashMap::new()),
            max_batch: max_batch.max(1),
            store,
            wait_limit: None,
            queries: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// Bounds the wait of a queued caller: after `limit` without an answer or its turn to send,
    /// it returns `error(limit)` and is left out of the requests still to go (a request that
    /// already carries it goes on; its answer is dropped).
    // Used by the Chroma and Bolt backends; the embedder's coalescer has no wait limit.
    #[cfg_attr(not(any(feature = "chroma", feature = "bolt")), allow(dead_code))]
    pub(crate) fn with_wait_limit(mut self, limit: Duration, error: TimedOut) -> Self {
        self.wait_limit = Some((limit, error));
        self
    }

    /// Queries answered and requests sent so far.
    #[cfg_attr(not(any(feature = "chroma", feature = "bolt")), allow(dead_code))]
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
        if let Some(mut turn) = waiting {
            let turn = match self.wait_limit {
                None => turn.await,
                Some((limit, error)) => match tokio::time::timeout(limit, &mut turn).await {
                    Ok(turn) => turn,
                    Err(_) => {
                        // Closing takes this caller out of the queue; what was sent before
                        // the close still counts (a turn to lead must not be lost).
                        turn.close();
                        match turn.try_recv() {
                            Ok(turn) => Ok(turn),
                            Err(_) => return Err(error(limit)),
                        }
                    }
                },
            };
            match turn {
                Ok(Turn::Answer(answer)) => return answer,
                Ok(Turn::Lead) => {}
                // The caller that took this query into its request was dropped (its own caller
                // gave up) before answering: this query goes out on its own.
                Err(_) => {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    return send(vec![query]).await?.pop().ok_or_else(|| self.missing_answer());
                }
            }
        }
        // This caller sends the next request of `key`; whatever happens to it, the turn
        // passes on when `lead` is dropped.
        let lead = Lead { coalescer: self, key };
        let batch: Vec<Waiting<Q, A>> = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let queue = queues.get_mut(&lead.key).expect("a busy queue stays");
            // Callers that gave up waiting are left out.
            queue.waiting.retain(|w| !w.reply.is_closed());
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
                    let answer = answers.next().ok_or_else(|| self.missing_answer());
                    // A caller that gave up has no receiver left; nothing to tell it.
                    let _ = w.reply.send(Turn::Answer(answer));
                }
                own.ok_or_else(|| self.missing_answer())
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

impl<K, Q, A> Coalescer<K, Q, A> {
    /// A request answered fewer queries than it carried.
    fn missing_answer(&self) -> Error {
        Error::Store {
            store: self.store,
            action: "sending a shared request".to_owned(),
            message: "the server answered fewer calls than the request carried".to_owned(),
            transient: false,
            busy: false,
        }
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
        let coalescer: Arc<Coalescer<&'static str, u32, u32>> = Arc::new(Coalescer::new(StoreKind::Vector, 16));
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
        let coalescer: Arc<Coalescer<u8, u32, u32>> = Arc::new(Coalescer::new(StoreKind::Vector, 64));
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
        let coalescer: Arc<Coalescer<u8, u32, u32>> = Arc::new(Coalescer::new(StoreKind::Vector, 8));
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

    /// With a wait limit, a caller queued behind a request that does not return gives up after
    /// the limit with the store's error, is left out of the next request, and the key goes on
    /// working once the slow request returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queued_caller_gives_up_after_the_wait_limit() {
        let coalescer: Arc<Coalescer<u8, u32, u32>> = Arc::new(
            Coalescer::new(StoreKind::Graph, 8).with_wait_limit(Duration::from_millis(100), |limit| {
                crate::Error::Config(format!("no turn within {limit:?}"))
            }),
        );
        let sent = Arc::new(Mutex::new(Vec::new()));
        let send = |sent: Arc<Mutex<Vec<Vec<u32>>>>, pause: u64| {
            move |batch: Vec<u32>| {
                let sent = sent.clone();
                async move {
                    sent.lock().unwrap().push(batch.clone());
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    Ok(batch)
                }
            }
        };
        let slow = {
            let (coalescer, sent) = (coalescer.clone(), sent.clone());
            tokio::spawn(async move { coalescer.run(0, 1, send(sent, 600)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let queued = coalescer.run(0, 2, send(sent.clone(), 0)).await;
        let err = queued.expect_err("the queued caller gives up");
        assert!(err.to_string().contains("no turn within 100ms"), "{err}");
        assert_eq!(slow.await.unwrap().unwrap(), 1, "the request in flight is not touched");
        assert_eq!(
            coalescer.run(0, 3, send(sent.clone(), 0)).await.unwrap(),
            3,
            "the key works afterwards"
        );
        assert_eq!(*sent.lock().unwrap(), [vec![1], vec![3]], "the caller that gave up was never sent");
    }
}
