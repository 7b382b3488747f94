//! dataflow-tests: the live-service harness that integration tests and benchmarks run
//! against, and per-test fixtures on top of it.

#![warn(missing_docs)]

pub mod embedded;
pub mod fixture;
pub mod harness;
pub mod hostile;
pub mod models;
pub mod process;
pub mod stores;
pub mod vectors;
pub mod wire;
pub mod world;

pub use harness::{BoltEndpoint, Interruption, Provider, ServiceKind, Services};

/// Runs the async test function `$name(backend)` once per backend set, as the tests
/// `$name::servers` and `$name::embedded`.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn servers() {
                super::$name($crate::fixture::Backend::Servers).await
            }

            #[tokio::test]
            async fn embedded() {
                super::$name($crate::fixture::Backend::Embedded).await
            }
        }
    };
}
