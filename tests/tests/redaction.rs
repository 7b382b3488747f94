//! Passwords in connection URLs never show: not in errors (Display or Debug), not in the
//! configuration's Debug, not in any tracing event or span field the library and runtime emit
//! while stores are unreachable. Every tracing record of this test binary is captured (a
//! subscriber of its own, all levels) and searched for the passwords.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use dataflow_core::{Config, GraphConfig, Stores};
use dataflow_runtime::{RunStatus, Runtime, WorkflowBuilder};
use dataflow_tests::harness::probe::free_port;
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Passwords of several shapes, each with a marker no message would contain by chance:
/// plain, with characters that should be percent-encoded but are not, and percent-encoded.
const PASSWORDS: [&str; 4] = ["Pw-SECRET-1", "Pw/SECRET@2", "Pw:SECRET#3", "Pw%2FSECRET%404"];

/// What a password looks like once decoded, for the percent-encoded one.
fn forms(password: &str) -> Vec<String> {
    vec![password.to_owned(), password.replace("%2F", "/").replace("%40", "@")]
}

/// Every tracing record of the process, as text.
fn captured() -> &'static Mutex<String> {
    static LOG: OnceLock<Mutex<String>> = OnceLock::new();
    LOG.get_or_init(Mutex::default)
}

/// A subscriber that writes every field of every span and event, at every level, to
/// [`captured`].
struct Capture {
    next_id: AtomicU64,
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut log = captured().lock().unwrap_or_else(|e| e.into_inner());
        log.push_str(span.metadata().name());
        span.record(&mut Fields(&mut log));
        log.push('\n');
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, values: &Record<'_>) {
        let mut log = captured().lock().unwrap_or_else(|e| e.into_inner());
        values.record(&mut Fields(&mut log));
        log.push('\n');
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut log = captured().lock().unwrap_or_else(|e| e.into_inner());
        event.record(&mut Fields(&mut log));
        log.push('\n');
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn capture_traces() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(Capture {
            next_id: AtomicU64::new(1),
        })
        .expect("the only subscriber of this test binary");
    });
}

fn assert_hidden(what: &str, text: &str, password: &str) {
    for form in forms(password) {
        assert!(!text.contains(&form), "{what} shows the password {form:?}: {text}");
    }
}

/// A store whose URL carries a password and whose server is not there: the connection error,
/// its Debug form and the configuration's Debug form hide the password.
#[tokio::test(flavor = "multi_thread")]
async fn connection_errors_hide_passwords() {
    capture_traces();
    let home = dataflow_tests::embedded::fresh_home("redaction_connect");
    let embedded = Config::embedded(&home);
    for password in PASSWORDS {
        let closed = free_port();
        let configs = [
            (
                "PostgreSQL",
                Config {
                    database_url: format!("postgres://app:{password}@127.0.0.1:{closed}/db"),
                    relational_timeout: std::time::Duration::from_millis(500),
                    ..embedded.clone()
                },
            ),
            (
                "Redis",
                embedded.clone().with_redis(format!("redis://:{password}@127.0.0.1:{closed}/0")),
            ),
            (
                "Chroma",
                embedded.clone().with_chroma(format!("http://app:{password}@127.0.0.1:{closed}")),
            ),
            (
                "graph server (password in the URL)",
                embedded.clone().with_graph(GraphConfig {
                    url: format!("bolt://neo4j:{password}@127.0.0.1:{closed}"),
                    user: "neo4j".into(),
                    password: "other".into(),
                    database: None,
                }),
            ),
            (
                "graph server (password apart)",
                embedded.clone().with_graph(GraphConfig {
                    url: format!("bolt://127.0.0.1:{closed}"),
                    user: "neo4j".into(),
                    password: password.into(),
                    database: None,
                }),
            ),
        ];
        for (store, config) in configs {
            assert_hidden(
                &format!("the Debug form of a {store} configuration"),
                &format!("{config:?}"),
                password,
            );
            match Stores::connect(&config).await {
                Err(e) => {
                    assert_hidden(&format!("a {store} connection error"), &e.to_string(), password);
                    assert_hidden(&format!("a {store} connection error (Debug)"), &format!("{e:?}"), password);
                }
                Ok(stores) => {
                    // Redis, Chroma and the graph server connect lazily: the first call fails
                    // instead.
                    let failed = match store {
                        "Redis" => stores.cache().expect("a cache").ping().await,
                        "Chroma" => stores.vector().expect("a vector store").ping().await,
                        graph if graph.starts_with("graph") => stores.graph().expect("a graph store").ping().await,
                        _ => panic!("the {store} connected with nothing listening on its port"),
                    };
                    let e = failed.expect_err("nothing listens on the port");
                    assert_hidden(&format!("a {store} error"), &format!("{e} {e:?}"), password);
                }
            }
        }
    }
    let log = captured().lock().unwrap_or_else(|e| e.into_inner()).clone();
    for password in PASSWORDS {
        assert_hidden("the traces", &log, password);
    }
    let _ = std::fs::remove_dir_all(&home);
}

/// Workflows whose projections and cache are unreachable behind URLs with passwords: the run
/// reports, node errors, and every tracing record (node spans, "node failed", "projections left
/// pending", "cache unavailable") hide the passwords.
#[tokio::test(flavor = "multi_thread")]
async fn run_reports_and_traces_hide_passwords() {
    capture_traces();
    let home = dataflow_tests::embedded::fresh_home("redaction_runs");
    // Percent-encoded, as both the Redis and the HTTP client accept it (they refuse a raw '/').
    let password = PASSWORDS[3];
    let closed = free_port();
    let config = Config {
        projection_timeout: std::time::Duration::from_millis(500),
        cache_timeout: std::time::Duration::from_millis(300),
        ..Config::embedded(&home)
            .with_redis(format!("redis://:{password}@127.0.0.1:{closed}/0"))
            .with_chroma(format!("http://app:{password}@127.0.0.1:{closed}"))
    };
    let stores = Stores::connect(&config).await.expect("Redis and Chroma connect lazily");
    stores.register_models(&dataflow_models::all_models());
    stores.migrate(&dataflow_models::all_models()).await.expect("migrate");
    let ctx = dataflow_core::Context::new(stores);
    let registry = dataflow_workflows::registry();
    let workflow = WorkflowBuilder::new("redaction")
        .add_node(
            "maker",
            "ManufacturerCreateNode",
            json!({"record": {"name": "Maker", "country": "DE", "website": null, "description": "Makes drills"}}),
        )
        .add_node("read", "ManufacturerReadNode", json!({}))
        .add_node("search", "ManufacturerSearchNode", json!({"query": "drills"}))
        .connect("maker", "record.id", "read", "id")
        .after("search", "read")
        .build(&registry)
        .expect("the workflow");
    let report = Runtime::new(dataflow_workflows::registry()).run(&workflow, &ctx, json!({})).await;
    assert_eq!(report.status, RunStatus::Failed, "the search cannot reach Chroma: {report:?}");
    let text = serde_json::to_string(&report).expect("a report serialises");
    assert!(text.contains("vector"), "the report names the failing store: {text}");
    assert_hidden("the run report", &text, password);
    let log = captured().lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(log.contains("node failed"), "the failure was traced: {log}");
    assert_hidden("the traces", &log, password);
    let _ = std::fs::remove_dir_all(&home);
}

/// A PostgreSQL URL with a password still connects once the password travels apart from the
/// URL (the harness's server trusts loopback, so this checks the URL that is left, not the
/// password check itself), and nothing traced shows it.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_url_with_a_password_still_connects() {
    capture_traces();
    let url = dataflow_tests::Services::global().await.postgres_url().await;
    let password = PASSWORDS[3];
    let with_password = url.replacen("postgres://postgres@", &format!("postgres://postgres:{password}@"), 1);
    assert_ne!(with_password, url, "the harness URL names the user postgres");
    let config = Config {
        database_url: with_password,
        ..Config::embedded(dataflow_tests::embedded::fresh_home("redaction_live"))
    };
    let stores = Stores::connect(&config).await.expect("connecting with a password in the URL");
    stores.relational().connection().ping().await.expect("SELECT 1");
    let log = captured().lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_hidden("the traces", &log, password);
}
