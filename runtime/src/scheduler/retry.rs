//! Retry with backoff: a node's attempts after transient failures, each after a wait drawn
//! with full jitter (uniformly between zero and a ceiling that doubles per attempt up to
//! [`RetryPolicy::max_backoff_ms`]).
//!
//! Our own loop rather than `backon`: backon's jitter adds a random part on top of the delay
//! (a wait between the delay and twice it), where full jitter spreads the retries of many runs
//! hitting one recovering store over the whole window; the last attempt here takes the input
//! by move instead of a copy; and the attempt count goes into the run report. With backon
//! the ceiling and the jitter would still be ours (a custom backoff iterator) and the loop
//! would only move into closures, so the crate would save nothing.

use std::future::Future;
use std::time::Duration;

use crate::node::NodeFailure;
use crate::workflow::RetryPolicy;

impl RetryPolicy {
    /// The upper bound of the backoff before attempt `attempt` (2 is the first retry).
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(20);
        Duration::from_millis(self.backoff_ms.saturating_mul(1 << doublings).min(self.max_backoff_ms))
    }

    /// The wait before attempt `attempt`: uniformly random up to its ceiling (full jitter).
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.backoff_ceiling(attempt).as_millis() as u64;
        Duration::from_millis(fastrand::u64(0..=ceiling))
    }
}

/// Calls `attempt` with `input` up to `attempts` times (at least once) while it fails
/// transiently, waiting the policy's backoff between attempts. Returns the last result and
/// the number of attempts made. Earlier attempts get a copy of the input, the last the input
/// itself.
pub(super) async fn retry<T, F, Fut>(policy: RetryPolicy, attempts: u32, input: T, mut attempt: F) -> (Result<T, NodeFailure>, u32)
where
    T: Clone,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<T, NodeFailure>>,
{
    let attempts = attempts.max(1);
    let mut input = Some(input);
    let mut made = 0;
    loop {
        made += 1;
        let this_input = if made >= attempts {
            input.take().expect("the input is taken by the last attempt only")
        } else {
            input.clone().expect("the input is kept until the last attempt")
        };
        match attempt(this_input).await {
            Err(failure) if failure.is_transient() && made < attempts => tokio::time::sleep(policy.backoff(made + 1)).await,
            other => return (other, made),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> NodeFailure {
        NodeFailure::Failed {
            message: "try again".into(),
            transient: true,
            store: None,
            busy: false,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            backoff_ms: 0,
            max_backoff_ms: 0,
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_the_attempts_run_out() {
        let mut calls = 0;
        let (result, made) = retry(policy(), 3, 1, |_| {
            calls += 1;
            async { Err::<i32, _>(transient()) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!((made, calls), (3, 3));
    }

    #[tokio::test]
    async fn a_permanent_failure_or_a_success_ends_the_attempts() {
        let (result, made) = retry(policy(), 3, 1, |_| async { Err::<i32, _>(NodeFailure::permanent("no")) }).await;
        assert_eq!((result.is_err(), made), (true, 1));
        let mut calls = 0;
        let (result, made) = retry(policy(), 3, 1, |x| {
            calls += 1;
            let fail = calls == 1;
            async move { if fail { Err(transient()) } else { Ok(x + 1) } }
        })
        .await;
        assert_eq!((result.ok(), made), (Some(2), 2));
    }

    #[test]
    fn the_backoff_ceiling_doubles_up_to_the_maximum() {
        let policy = RetryPolicy {
            attempts: 10,
            backoff_ms: 50,
            max_backoff_ms: 300,
        };
        let ceilings: Vec<u128> = (2..7).map(|a| policy.backoff_ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 300, 300]);
        assert!((0..100).all(|_| policy.backoff(3) <= Duration::from_millis(100)));
    }
}
