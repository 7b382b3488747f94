//! How each store's failures look to the runtime: a busy relational pool against a server
//! that is down, a read while PostgreSQL is stopped, a Bolt server that rejects the
//! credentials against one that is starting, and Chroma's health check while its requests are
//! all in flight. In its own test binary, one test at a time, because some tests stop the
//! servers every test of the binary uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dataflow_core::nodes::read::ReadInput;
use dataflow_core::store::graph::bolt::AUTH_GRACE;
use dataflow_core::store::vector::VectorDoc;
use dataflow_core::store::vector::chroma::MAX_IN_FLIGHT;
use dataflow_core::store::{BoltGraph, ChromaStore, GraphStore, VectorStore};
use dataflow_core::{Node, StoreKind};
use dataflow_models::ProductReadNode;
use dataflow_runtime::{RetryPolicy, RunOptions, RunStatus, Runtime, WorkflowBuilder};
use dataflow_tests::fixture::{Backend, Fixture};
use dataflow_tests::{ServiceKind, Services, on_both_backends};
use serde_json::json;

/// One test at a time: some stop servers that every test of this binary uses.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One attempt per node: each failure shows as it is, and counts once.
const ONE_ATTEMPT: RetryPolicy = RetryPolicy {
    attempts: 1,
    backoff_ms: 1,
    max_backoff_ms: 1,
};

/// A runtime whose breakers open after `threshold` failures and stay open for a minute, and
/// whose nodes are tried once with a time limit of `node_timeout`.
fn runtime(threshold: u32, node_timeout: Duration) -> Runtime {
    Runtime::with_options(
        dataflow_models::registry(),
        RunOptions {
            breaker_threshold: threshold,
            breaker_cooldown: Duration::from_secs(60),
            node_timeout,
            retry: ONE_ATTEMPT,
            ..RunOptions::default()
        },
    )
}

/// A workflow of one node of `node_type` with `params`.
/// Reads a product that is not there, straight through the node (no runtime, no breaker):
/// a Read that must ask the relational store.
async fn read_missing_product(fx: &Fixture) -> dataflow_core::Result<dataflow_core::nodes::read::ReadOutput<dataflow_models::Product>> {
    ProductReadNode
        .run(
            &fx.ctx,
            ReadInput {
                id: 424242,
                include_deleted: false,
                required: false,
            },
        )
        .await
}

fn one_node(node_type: &str, params: serde_json::Value) -> dataflow_runtime::Workflow {
    let mut b = WorkflowBuilder::new("one_node");
    b.add_node("node", node_type, params);
    b.build(&dataflow_models::registry()).expect("a valid workflow")
}

/// A relational pool whose every connection is in use is busy, not down: calls wait for a
/// connection up to `relational_timeout`, then fail with a busy error, which the runtime
/// retries but its breaker does not count. The pool here has one connection, held by an open
/// transaction; the breaker would open on the first failure. Before, the wait's timeout was
/// counted like a server that is down, and the breaker opened.
async fn a_busy_pool_keeps_the_breaker_closed(backend: Backend) {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::with_projections_config_on(backend, "busy_pool", |mut c| {
        c.max_connections = 1;
        c.relational_timeout = Duration::from_secs(1);
        c
    })
    .await;
    let runtime = runtime(1, Duration::from_secs(30));
    let list = one_node("ProductListNode", json!({"limit": 5}));
    let read = one_node("ProductReadNode", json!({"id": 424242}));
    assert_eq!(runtime.run(&list, &fx.ctx, json!({})).await.status, RunStatus::Succeeded);

    let held = fx.ctx.stores().relational().begin().await.expect("the pool's only connection");
    for workflow in [&list, &read, &list] {
        let report = runtime.run(workflow, &fx.ctx, json!({})).await;
        let error = report.node("node").unwrap().error.clone().unwrap_or_default();
        assert_eq!(
            report.status,
            RunStatus::Failed,
            "{backend:?}: nothing can run while the only connection is held"
        );
        assert!(error.contains("relational store") && error.contains("busy"), "{backend:?}: {error}");
        assert!(
            !runtime.breaker_open(StoreKind::Relational),
            "{backend:?}: a busy pool opened the breaker: {error}"
        );
    }
    // The same error through the node itself: transient (worth a retry) and busy.
    let err = read_missing_product(&fx).await.expect_err("no connection is free");
    assert!(err.is_transient() && err.is_busy(), "{backend:?}: {err}");
    assert_eq!(err.store(), Some(StoreKind::Relational));

    held.rollback().await.expect("rolling back");
    let report = runtime.run(&list, &fx.ctx, json!({})).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{backend:?}: {:?}", report.error);
}
on_both_backends!(a_busy_pool_keeps_the_breaker_closed);

/// While PostgreSQL is stopped, a read that misses the cache fails within the connect bound
/// (`CONNECT_TIMEOUT`, 2 s) with a transient error of the relational store that says it is
/// unreachable and is not busy, long before the node's time limit, and the breaker counts it.
/// Before, the pool retried the refused connections until `relational_timeout` (10 s by
/// default), so the read ran into the node's 5 s limit and failed without naming the store.
#[tokio::test]
async fn a_read_against_a_stopped_postgres_fails_at_once_as_unreachable() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new("pg_down_read").await;
    let runtime = runtime(2, Duration::from_secs(5));
    let read = one_node("ProductReadNode", json!({"id": 424242}));
    assert_eq!(runtime.run(&read, &fx.ctx, json!({})).await.status, RunStatus::Succeeded);

    let stopped = Services::global().await.stop(ServiceKind::Postgres).await;
    let mut took = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let report = runtime.run(&read, &fx.ctx, json!({})).await;
        took.push(started.elapsed());
        let error = report.node("node").unwrap().error.clone().unwrap_or_default();
        assert_eq!(report.status, RunStatus::Failed);
        assert!(
            !error.contains("no result within"),
            "the read ran into the node's time limit: {error}"
        );
        assert!(error.contains("relational store") && error.contains("unreachable"), "{error}");
    }
    assert!(
        runtime.breaker_open(StoreKind::Relational),
        "two failures of a stopped server open the breaker"
    );
    let started = Instant::now();
    let err = read_missing_product(&fx).await.expect_err("PostgreSQL is stopped");
    took.push(started.elapsed());
    assert!(err.is_transient() && !err.is_busy(), "{err}");
    assert_eq!(err.store(), Some(StoreKind::Relational));
    eprintln!("reads against the stopped PostgreSQL failed after {took:?}");

    stopped.start().await;
    let err = read_missing_product(&fx).await;
    assert!(err.is_ok(), "the read succeeds again once PostgreSQL is back: {err:?}");
}

/// A node that runs out of time counts as a failure of the store it waited on, so a store that
/// hangs instead of refusing connections opens its breaker too. Here the categories table is
/// locked by an open transaction (SQLite: the write lock), so a Create of a category waits
/// until the node's time limit. Before, a timeout counted as a success and the breaker never
/// opened.
async fn a_node_that_times_out_counts_against_its_store(backend: Backend) {
    use dataflow_core::sea_orm::ConnectionTrait;
    let _serial = SERIAL.lock().await;
    let fx = Fixture::on(backend, "node_timeout").await;
    let runtime = runtime(2, Duration::from_millis(500));
    let create = |slug: &str| {
        one_node(
            "CategoryCreateNode",
            json!({"record": {"slug": slug, "name": slug, "description": "", "parent_id": null, "active": true}}),
        )
    };
    assert_eq!(
        runtime.run(&create("before"), &fx.ctx, json!({})).await.status,
        RunStatus::Succeeded
    );

    let held = fx.ctx.stores().relational().begin().await.expect("a transaction");
    if backend == Backend::Servers {
        held.execute_unprepared("LOCK TABLE categories IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("locking the table");
    }
    for slug in ["blocked-1", "blocked-2"] {
        let report = runtime.run(&create(slug), &fx.ctx, json!({})).await;
        let error = report.node("node").unwrap().error.clone().unwrap_or_default();
        assert!(error.contains("no result within"), "{backend:?}: {error}");
    }
    assert!(
        runtime.breaker_open(StoreKind::Relational),
        "{backend:?}: two timeouts open the breaker"
    );
    held.rollback().await.expect("rolling back");
}
on_both_backends!(a_node_that_times_out_counts_against_its_store);

/// A Bolt graph store whose server rejects a wrong password fails for good within
/// [`AUTH_GRACE`] (transient until then, since a starting ArcadeDB rejects every login the
/// same way), with an authentication error that names the user and never the password.
/// Before, the first rejection was final, and its message ("Authentication failed") did not
/// say whose login.
#[tokio::test]
async fn a_wrong_password_fails_for_good_naming_the_user() {
    const WRONG: &str = "not-the-password-4711";
    let _serial = SERIAL.lock().await;
    let bolt = Services::global().await.bolt().await;
    let graph = BoltGraph::connect(
        &bolt.uri,
        &bolt.user,
        WRONG,
        Some(&bolt.database),
        "wrong_password_",
        Duration::from_secs(5),
    )
    .await
    .expect("nothing is sent before the first call");
    let started = Instant::now();
    let mut transient = 0;
    let err = loop {
        let err = graph.ping().await.expect_err("the password is wrong");
        let message = err.to_string();
        assert!(message.contains(&format!("user '{}'", bolt.user)), "{message}");
        assert!(!message.contains(WRONG), "the password is shown: {message}");
        if !err.is_transient() {
            break err;
        }
        transient += 1;
        // A liveness bound: the test fails instead of waiting for good.
        assert!(
            started.elapsed() < AUTH_GRACE * 6,
            "still transient after {:?}: {message}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(err.to_string().contains("authentication failed"), "{err}");
    eprintln!(
        "a wrong password was final after {:?} ({transient} transient answers before)",
        started.elapsed()
    );
}

/// A store whose server does not know its user yet (as a starting ArcadeDB, whose users are not
/// loaded) meets transient errors that name the user, and works as soon as the server accepts
/// the login, without a new store. Before, the rejection was permanent: not retried, not
/// counted by the breaker.
#[tokio::test]
async fn a_login_the_server_rejects_for_a_while_is_transient_and_the_store_recovers() {
    let _serial = SERIAL.lock().await;
    let services = Services::global().await;
    let bolt = services.bolt().await;
    let user = services.unique_name("bolt_user");
    let password = "late-user-password-17";
    let graph = BoltGraph::connect(
        &bolt.uri,
        &user,
        password,
        Some(&bolt.database),
        &format!("{user}_"),
        Duration::from_secs(5),
    )
    .await
    .expect("nothing is sent before the first call");
    for _ in 0..3 {
        let err = graph.ping().await.expect_err("the server does not know the user yet");
        assert!(err.is_transient(), "{err}");
        assert_eq!(err.store(), Some(StoreKind::Graph));
        assert!(err.to_string().contains(&format!("user '{user}'")), "{err}");
        assert!(!err.to_string().contains(password), "the password is shown: {err}");
    }
    services
        .arcadedb_command(&format!(
            r#"create user {{"name": "{user}", "password": "{password}", "databases": {{"{}": ["admin"]}}}}"#,
            bolt.database
        ))
        .await;
    let mut answer = graph.ping().await;
    for _ in 0..50 {
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = graph.ping().await;
    }
    services.arcadedb_command(&format!("drop user {user}")).await;
    assert!(answer.is_ok(), "the store did not recover once the login was accepted: {answer:?}");
}

/// Chroma's health check answers while every request turn of the client is taken by slow
/// requests (eight reads of 3,000 documents with their embeddings): it takes no turn. Before,
/// it queued behind them and answered only after one of them had finished.
#[tokio::test]
async fn chroma_answers_its_health_check_while_every_request_is_in_flight() {
    const DOCS: usize = 3_000;
    let _serial = SERIAL.lock().await;
    let services = Services::global().await;
    let prefix = format!("{}_", services.unique_name("chroma_health"));
    let store = Arc::new(ChromaStore::new(&services.chroma_url().await, &prefix, Duration::from_secs(120)).expect("a Chroma client"));
    let docs = (0..DOCS)
        .map(|i| VectorDoc {
            id: i.to_string(),
            embedding: (0..384).map(|k| ((i * 31 + k * 7) % 101) as f32 / 101.0).collect(),
            document: format!("document {i} {}", "x".repeat(200)),
            metadata: serde_json::Map::new(),
        })
        .collect();
    store.upsert("health_docs", docs).await.expect("seeding the collection");

    let finished = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..MAX_IN_FLIGHT)
        .map(|_| {
            let (store, finished) = (store.clone(), finished.clone());
            tokio::spawn(async move {
                let read = store.get("health_docs", None, DOCS, 0).await;
                finished.fetch_add(1, Ordering::SeqCst);
                read
            })
        })
        .collect();
    while store.requests_in_flight() < MAX_IN_FLIGHT {
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "a read finished before all were in flight: make them larger"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let pinged = store.ping().await;
    let finished_by_then = finished.load(Ordering::SeqCst);
    assert!(pinged.is_ok(), "{pinged:?}");
    assert_eq!(finished_by_then, 0, "the health check waited for a read to finish");
    for reader in readers {
        assert_eq!(reader.await.unwrap().expect("a read").len(), DOCS);
    }
    store.drop_collection("health_docs").await.expect("dropping the collection");
}
