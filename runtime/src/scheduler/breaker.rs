//! Circuit breakers, one per store, shared by every run of a runtime: after repeated transient
//! failures of a store, nodes that need it fail at once instead of waiting on a dead server,
//! until a probe after a cooldown finds it back. It counts transient failures of the store
//! that failed and node timeouts (against the store the node waited on), but not a busy store
//! (one that answers but had no pooled connection free in time: that is load, not an outage);
//! admits a node only when every store it needs admits it; and recovers from a probe that
//! never reports (refused by another store's breaker, or its run dropped).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dataflow_core::StoreKind;
use serde_json::Value;

use crate::node::NodeFailure;

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

/// One circuit breaker per store, shared by every run of a runtime.
#[derive(Debug)]
pub(super) struct Breakers {
    states: Mutex<HashMap<StoreKind, BreakerState>>,
    threshold: u32,
    cooldown: Duration,
}

impl Breakers {
    /// Breakers that open after `threshold` consecutive transient failures (at least 1) and
    /// stay open for `cooldown`.
    pub(super) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breakers {
            states: Mutex::new(HashMap::new()),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// The first of `stores` whose breaker refuses a call now, if any.
    pub(super) fn refusing(&self, stores: &[StoreKind]) -> Option<StoreKind> {
        stores.iter().copied().find(|s| !self.admit(*s))
    }

    /// Records the outcome of a call that needed `stores`:
    /// - a transient failure of one store counts against that store only, unless the store
    ///   was busy, which counts for nothing: it answers, it only had no room in time;
    /// - a timeout counts against the store the node waited on ([`waited_on`]): a server that
    ///   hangs instead of refusing connections must open its breaker too;
    /// - anything else (a success, a permanent failure) shows the stores answering and closes
    ///   their breakers.
    pub(super) fn record(&self, stores: &[StoreKind], result: &Result<Value, NodeFailure>) {
        match result {
            Err(NodeFailure::Failed { busy: true, .. }) => {}
            Err(NodeFailure::Failed {
                transient: true,
                store: Some(store),
                ..
            }) => self.failure(*store),
            Err(NodeFailure::Timeout(_)) => {
                if let Some(store) = waited_on(stores) {
                    self.failure(store);
                }
            }
            _ => stores.iter().for_each(|s| self.success(*s)),
        }
    }

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
    pub(super) fn is_open(&self, store: StoreKind) -> bool {
        matches!(self.states.lock().expect("breaker lock").get(&store), Some(BreakerState::Open { until }) if Instant::now() < *until)
    }
}

/// The store a node that ran out of time waited on, as far as the runtime can tell: its own
/// store, the first it needs (the vector store for a Search, the graph store for a Graph node;
/// they hydrate from the relational store second), except the cache, whose calls give up after
/// `cache_timeout` and never fail a node: a Read, which needs only the cache, waited on the
/// relational store it reads through to. `None` for a node that needs no store.
fn waited_on(stores: &[StoreKind]) -> Option<StoreKind> {
    if stores.is_empty() {
        return None;
    }
    Some(
        stores
            .iter()
            .copied()
            .find(|s| *s != StoreKind::Cache)
            .unwrap_or(StoreKind::Relational),
    )
}

fn store_label(store: StoreKind) -> &'static str {
    match store {
        StoreKind::Relational => "relational",
        StoreKind::Cache => "cache",
        StoreKind::Vector => "vector",
        StoreKind::Graph => "graph",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(cooldown: Duration) -> Breakers {
        Breakers::new(1, cooldown)
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

    fn store_failure(store: StoreKind, busy: bool) -> Result<Value, NodeFailure> {
        Err(NodeFailure::Failed {
            message: "no connection".into(),
            transient: true,
            store: Some(store),
            busy,
        })
    }

    fn closed_with(b: &Breakers, store: StoreKind) -> Option<u32> {
        match b.states.lock().unwrap().get(&store) {
            Some(BreakerState::Closed { failures }) => Some(*failures),
            None => Some(0),
            Some(_) => None,
        }
    }

    /// A store that answers but had no pooled connection free in time is under load, not
    /// down: however often that happens, its breaker stays closed (it used to open, failing
    /// every node that needs the store for a cooldown, which only adds to the load's failures).
    #[test]
    fn a_busy_store_never_opens_its_breaker() {
        let b = Breakers::new(2, Duration::from_secs(3600));
        for _ in 0..10 {
            b.record(&[StoreKind::Relational], &store_failure(StoreKind::Relational, true));
        }
        assert!(!b.is_open(StoreKind::Relational));
        assert_eq!(closed_with(&b, StoreKind::Relational), Some(0), "busy counts for nothing");
        // A store that cannot be reached still opens it.
        b.record(&[StoreKind::Relational], &store_failure(StoreKind::Relational, false));
        b.record(&[StoreKind::Relational], &store_failure(StoreKind::Relational, false));
        assert!(b.is_open(StoreKind::Relational));
    }

    /// A busy answer neither counts as a failure nor clears the failures before it: a store
    /// that refuses connections between busy spells still opens its breaker.
    #[test]
    fn a_busy_answer_does_not_clear_earlier_failures() {
        let b = Breakers::new(2, Duration::from_secs(3600));
        b.record(&[StoreKind::Relational], &store_failure(StoreKind::Relational, false));
        b.record(&[StoreKind::Relational], &store_failure(StoreKind::Relational, true));
        assert_eq!(closed_with(&b, StoreKind::Relational), Some(1));
        b.record(&[StoreKind::Relational], &store_failure(StoreKind::Relational, false));
        assert!(b.is_open(StoreKind::Relational));
    }

    /// A node that ran out of time counts as a failure of the store it waited on (it used to
    /// count as a success of every store it needs, so a server that hangs instead of refusing
    /// connections never opened its breaker): its own store, or for a Read (which needs only
    /// the cache) the relational store it reads through to.
    #[test]
    fn a_timeout_counts_against_the_store_the_node_waited_on() {
        let timeout = Err(NodeFailure::Timeout(Duration::from_secs(1)));
        let b = Breakers::new(2, Duration::from_secs(3600));
        // A Search: the vector store, then the relational store it hydrates from.
        let search = [StoreKind::Vector, StoreKind::Relational];
        b.record(&search, &timeout);
        assert_eq!(closed_with(&b, StoreKind::Vector), Some(1));
        b.record(&search, &timeout);
        assert!(b.is_open(StoreKind::Vector));
        assert_eq!(closed_with(&b, StoreKind::Relational), Some(0), "the other store is not blamed");
        // A Read.
        let read = [StoreKind::Cache];
        b.record(&read, &timeout);
        b.record(&read, &timeout);
        assert!(b.is_open(StoreKind::Relational));
        assert_eq!(closed_with(&b, StoreKind::Cache), Some(0));
        // A node that needs no store blames none.
        let b = Breakers::new(1, Duration::from_secs(3600));
        b.record(&[], &timeout);
        assert!(b.states.lock().unwrap().is_empty());
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
