//! `dataflow serve`, `dataflow worker` and `dataflow mcp` as separate processes, as a user
//! runs them, against the harness's live servers (and the embedded stores): runs submitted
//! over HTTP execute on workers in other processes; a worker killed with `kill -9` loses no
//! run; progress streams as Server-Sent Events in order; every route refuses a missing key
//! (401), a role too low (403) and another tenant's run (404); bad bodies get 400, 413 and
//! 422 with the field named; the audit log refuses changes; and a real MCP client (rmcp's)
//! lists and calls the workflows as tools.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dataflow_tests::process::{Process, create_key, dataflow_command, printed_key, served_address, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Settings that put every store on the harness's servers, in a fresh schema and under
/// fresh prefixes (so the run queue, named after the schema, is this test's own too).
async fn server_env(hint: &str) -> Vec<(&'static str, String)> {
    dataflow_tests::process::server_settings(hint).await
}

/// Settings of the embedded stores in a fresh directory.
fn embedded_env(hint: &str) -> Vec<(&'static str, String)> {
    vec![("DATAFLOW_HOME", dataflow_tests::embedded::fresh_home(hint).display().to_string())]
}

/// The folder of this test's own workflow files.
fn test_workflows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workflows")
}

/// The `dataflow` command with `env` and nothing of the caller's `DATAFLOW_*` settings.
fn dataflow(args: &[&str], env: &[(&'static str, String)]) -> Command {
    dataflow_command(Path::new(env!("CARGO_BIN_EXE_dataflow")), args, env)
}

/// A `dataflow serve` and its admin key (created by its first start).
struct Server {
    process: Process,
    base: String,
    admin: String,
    env: Vec<(&'static str, String)>,
}

impl Server {
    fn start(env: &[(&'static str, String)]) -> Server {
        let workflows = test_workflows().display().to_string();
        let command = dataflow(&["serve", "--listen", "127.0.0.1:0", "--workflows", &workflows], env);
        let (process, lines) = start(command, "serve", |line| line.starts_with("serving "));
        let admin = printed_key(&lines).expect("the first serve prints an admin key");
        let address = served_address(lines.last().expect("the serving line")).expect("serving … on http://address");
        Server {
            process,
            base: format!("http://{address}"),
            admin,
            env: env.to_vec(),
        }
    }

    /// A key of `tenant` with `role`, from `dataflow keys create` (a process of its own).
    fn key(&self, tenant: &str, role: &str) -> String {
        create_key(Path::new(env!("CARGO_BIN_EXE_dataflow")), &self.env, tenant, role)
    }
}

/// A `dataflow worker` named `name`, beating a heartbeat every second.
fn worker(name: &str, env: &[(&'static str, String)]) -> Process {
    let workflows = test_workflows().display().to_string();
    let command = dataflow(
        &[
            "worker",
            "--name",
            name,
            "--heartbeat-secs",
            "1",
            "--concurrency",
            "4",
            "--workflows",
            &workflows,
        ],
        env,
    );
    start(command, name, |line| line.starts_with("worker ")).0
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

/// A response's status and body (JSON, or the text as a JSON string).
async fn call(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn supplier(n: usize) -> Value {
    json!({"code": format!("SUP-{n:05}"), "name": format!("Supplier {n}"), "email": format!("orders{n}@example.com"), "country": "DE", "rating": 4.0, "lead_time_days": 5, "active": true})
}

#[tokio::test]
async fn runs_submitted_over_http_execute_on_workers_in_other_processes() {
    let env = server_env("svc_http").await;
    let server = Server::start(&env);
    let _w1 = worker("svc-w1", &env);
    let _w2 = worker("svc-w2", &env);
    let operator = server.key("acme", "operator");
    let http = client();
    let (status, run) = call(
        http.post(format!("{}/v1/workflows/register_suppliers/runs?wait=true", server.base))
            .bearer_auth(&operator)
            .json(&json!({"suppliers": [supplier(1), supplier(2)]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["outputs"]["inserted"], 2, "{run}");
    assert_eq!(run["tenant"], "acme");
    let worker_name = run["worker"].as_str().unwrap();
    assert!(
        worker_name == "svc-w1" || worker_name == "svc-w2",
        "executed by a worker process, not the server: {run}"
    );

    // Twenty at once, without waiting: each is queued (202) and ends succeeded.
    let mut ids = Vec::new();
    for n in 10..30 {
        let (status, run) = call(
            http.post(format!("{}/v1/workflows/register_suppliers/runs", server.base))
                .bearer_auth(&operator)
                .json(&json!({"suppliers": [supplier(n)]})),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{run}");
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let run = wait_for_end(&http, &server.base, &operator, id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }

    // The same Idempotency-Key twice: one run.
    let submit = || {
        http.post(format!("{}/v1/workflows/register_suppliers/runs", server.base))
            .bearer_auth(&operator)
            .header("Idempotency-Key", "order-77")
            .json(&json!({"suppliers": [supplier(77)]}))
    };
    let (first_status, first) = call(submit()).await;
    let (second_status, second) = call(submit()).await;
    assert_eq!(first_status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(second_status, StatusCode::OK, "{second}");
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["idempotency_key"], "order-77");

    // Health: each of the four stores up, with its backend and latency; checked at most once
    // a second, the answer says how long ago.
    let viewer = server.key("acme", "viewer");
    let (status, health) = call(http.get(format!("{}/health", server.base)).bearer_auth(&viewer)).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "up", "{health}");
    assert_eq!(health["stores"]["relational"]["backend"], "postgres", "{health}");
    for store in ["relational", "cache", "vector", "graph"] {
        let checked = &health["stores"][store];
        assert_eq!(checked["up"], true, "{store}: {health}");
        assert!(checked["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{store}: {health}");
    }
    assert!(health["checked_ms_ago"].as_f64().is_some_and(|ms| ms < 1000.0), "{health}");
    assert!(health["outbox"]["pending"].is_u64(), "{health}");

    // Every submit is in the audit log, with who and from where.
    let admin = server.key("acme", "admin");
    let (status, audit) = call(http.get(format!("{}/v1/audit?limit=100", server.base)).bearer_auth(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let submits: Vec<&Value> = audit.as_array().unwrap().iter().filter(|e| e["action"] == "run.submit").collect();
    assert_eq!(submits.len(), 22, "one entry per created run: {audit}");
    assert!(
        submits
            .iter()
            .all(|e| e["remote"].as_str().unwrap().starts_with("127.0.0.1:") && e["tenant"] == "acme")
    );
    drop(server);
}

/// Reads run `id` until it has ended (at most two minutes).
async fn wait_for_end(http: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, run) = call(http.get(format!("{base}/v1/runs/{id}")).bearer_auth(key)).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        if matches!(run["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} has not ended: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_worker_killed_with_kill_9_mid_run_loses_no_run_and_doubles_no_row() {
    // Background projections: the three workers' projectors claim the outbox at once.
    let mut env = server_env("svc_kill").await;
    env.push(("DATAFLOW_PROJECTIONS", "background".into()));
    let server = Server::start(&env);
    let operator = server.key("acme", "operator");
    let http = client();
    // The three workers are ready before the first run is queued: one that started late could
    // find the queue drained (worker processes start slowly on a loaded machine).
    let pg = Pg::connect(&env).await;
    let mut workers = [worker("kill-w1", &env), worker("kill-w2", &env), worker("kill-w3", &env)];
    // Each run creates a customer and a project and updates the project at version 1: none
    // of the three writes is idempotent on its own. The runs are submitted while the workers
    // take them, so the kill below lands in the middle of the 200.
    let runs = 200;
    let submitting = tokio::spawn({
        let (http, base, operator) = (http.clone(), server.base.clone(), operator.clone());
        async move {
            let mut ids = Vec::new();
            for n in 0..runs {
                let (status, run) = call(
                    http.post(format!("{base}/v1/workflows/open_project/runs"))
                        .bearer_auth(&operator)
                        .json(&json!({
                            "customer": {"name": format!("Customer {n}"), "email": format!("buyer{n}@example.com"), "segment": "retail", "country": "FR", "credit_limit": 500.0},
                            "project_name": format!("Project {n}"),
                        })),
                )
                .await;
                assert_eq!(status, StatusCode::ACCEPTED, "{run}");
                ids.push(run["id"].as_str().unwrap().to_owned());
            }
            ids
        }
    });
    // The first worker is killed while the database shows it running two runs (the state it
    // leaves behind is then frozen: the runs it held are those still `running` under it).
    let deadline = Instant::now() + Duration::from_secs(120);
    while pg.count("dataflow_runs", "worker = 'kill-w1' AND status = 'running'").await < 2 {
        if Instant::now() >= deadline {
            panic!(
                "kill-w1 never ran two runs at once; runs by worker and status: {:?}",
                pg.runs_by_worker().await
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    workers[0].kill_9();
    // A statement the worker sent just before it died still completes on the server (a run's
    // end recorded): the runs it held are those still running under it once that has landed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = pg.ids("dataflow_runs", "worker = 'kill-w1' AND status = 'running'").await;
    assert!(!held.is_empty(), "kill-w1 held no run when it was killed");
    let ids = submitting.await.expect("every run was submitted");
    for id in &ids {
        let run = wait_for_end(&http, &server.base, &operator, id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["outputs"]["version"], 2, "{run}");
        if held.contains(id) {
            assert!(run["attempts"].as_i64() >= Some(2), "executed again: {run}");
            assert_ne!(run["worker"], "kill-w1", "by another worker: {run}");
        }
    }
    eprintln!(
        "kill-w1 held {} runs when it was killed; each was executed again by another worker",
        held.len()
    );
    // Rows counted in PostgreSQL: one of each per run, none doubled by the runs executed again.
    assert_eq!(pg.count("customers", "tenant_id = 'acme'").await, runs as i64);
    assert_eq!(pg.count("projects", "tenant_id = 'acme'").await, runs as i64);
    assert_eq!(pg.count("projects", "status = 'active' AND version = 2").await, runs as i64);
    // The surviving workers' projectors apply every projection, the killed one's included,
    // each record claimed by one of them at a time (SKIP LOCKED): none is left or dead.
    let deadline = Instant::now() + Duration::from_secs(120);
    while pg.count("dataflow_outbox", "TRUE").await > 0 {
        assert!(
            Instant::now() < deadline,
            "{} outbox records left",
            pg.count("dataflow_outbox", "TRUE").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Plain SQL on the PostgreSQL schema of a test's settings, beside the processes under test.
struct Pg {
    db: dataflow_core::sea_orm::DatabaseConnection,
    schema: String,
}

impl Pg {
    async fn connect(env: &[(&'static str, String)]) -> Pg {
        let setting = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()).unwrap();
        Pg {
            db: dataflow_core::sea_orm::Database::connect(setting("DATAFLOW_DATABASE_URL"))
                .await
                .unwrap(),
            schema: setting("DATAFLOW_DATABASE_SCHEMA"),
        }
    }

    async fn query(&self, sql: String) -> Vec<dataflow_core::sea_orm::QueryResult> {
        use dataflow_core::sea_orm::{ConnectionTrait, Statement};
        self.db
            .query_all_raw(Statement::from_string(self.db.get_database_backend(), sql))
            .await
            .unwrap()
    }

    /// Rows of `table` where `condition` holds.
    async fn count(&self, table: &str, condition: &str) -> i64 {
        let rows = self
            .query(format!("SELECT COUNT(*) AS n FROM \"{}\".{table} WHERE {condition}", self.schema))
            .await;
        rows[0].try_get::<i64>("", "n").unwrap()
    }

    /// How many runs each worker holds in each state, for a failure's message.
    async fn runs_by_worker(&self) -> Vec<(Option<String>, String, i64)> {
        let rows = self
            .query(format!(
                "SELECT worker, status, COUNT(*) AS n FROM \"{}\".dataflow_runs GROUP BY worker, status ORDER BY worker, status",
                self.schema
            ))
            .await;
        rows.iter()
            .map(|r| {
                (
                    r.try_get("", "worker").unwrap(),
                    r.try_get("", "status").unwrap(),
                    r.try_get("", "n").unwrap(),
                )
            })
            .collect()
    }

    /// The `id`s of the rows of `table` where `condition` holds.
    async fn ids(&self, table: &str, condition: &str) -> Vec<String> {
        let rows = self
            .query(format!("SELECT id FROM \"{}\".{table} WHERE {condition}", self.schema))
            .await;
        rows.iter().map(|r| r.try_get::<String>("", "id").unwrap()).collect()
    }
}

#[tokio::test]
async fn progress_streams_every_node_event_of_a_run_in_order() {
    let env = server_env("svc_sse").await;
    let server = Server::start(&env);
    let _w = worker("sse-w1", &env);
    let operator = server.key("acme", "operator");
    let http = client();
    let catalog = dataflow_workflows::data_dir().join("catalog.jsonl").display().to_string();
    let (status, run) = call(
        http.post(format!("{}/v1/workflows/import_catalog/runs", server.base))
            .bearer_auth(&operator)
            .json(&json!({"path": catalog})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_str().unwrap();
    let stream = http
        .get(format!("{}/v1/runs/{id}/events", server.base))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    // The stream ends when the run has ended.
    let text = stream.text().await.unwrap();
    let events = parse_sse(&text);
    let (last_name, last) = events.last().expect("events");
    assert_eq!(last_name, "end", "{text}");
    assert_eq!(last["status"], "succeeded", "{last}");
    let report_nodes: BTreeSet<String> = last["report"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["status"] == "succeeded")
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect();
    let mut started = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut items_done = std::collections::BTreeMap::new();
    let mut previous_seq = -1;
    for (name, event) in &events[..events.len() - 1] {
        let seq = event["seq"].as_i64().unwrap();
        assert_eq!(seq, previous_seq + 1, "every event, in order: {text}");
        previous_seq = seq;
        let node = event["node"].as_str().unwrap().to_owned();
        match name.as_str() {
            "started" => assert!(started.insert(node.clone()), "{node} started once"),
            "finished" => {
                assert!(started.contains(&node), "{node} finished after it started");
                finished.insert(node);
            }
            // Item progress names the node's type (`ImportRecords`), and counts up to its total.
            "items" => {
                let (done, total) = (event["done"].as_u64().unwrap(), event["total"].as_u64().unwrap());
                assert!(done <= total, "{event}");
                let last = items_done.insert(node.clone(), done).unwrap_or(0);
                assert!(done >= last, "item progress of {node} goes forward: {text}");
            }
            other => panic!("unexpected event {other}: {text}"),
        }
    }
    assert_eq!(finished, report_nodes, "a finished event for every node that ran");
    // Every batch of every model was written (each under its own effect key).
    let outputs = &last["outputs"];
    assert_eq!(outputs["rejected"], 0, "{outputs}");
    assert_eq!(outputs["written"], outputs["records_read"], "{outputs}");
    let pg = Pg::connect(&env).await;
    assert_eq!(
        (pg.count("products", "TRUE").await, pg.count("classifications", "TRUE").await),
        (300, 260)
    );
}

/// `(event name, data)` of each event of a Server-Sent Events text.
fn parse_sse(text: &str) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut name = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            }
        }
        if !data.is_empty() {
            events.push((name, serde_json::from_str(&data).unwrap_or(Value::String(data))));
        }
    }
    events
}

#[tokio::test]
async fn every_route_refuses_no_key_a_low_role_and_another_tenants_run() {
    let env = server_env("svc_auth").await;
    let server = Server::start(&env);
    let _w = worker("auth-w1", &env);
    let http = client();
    let viewer = server.key("acme", "viewer");
    let operator = server.key("acme", "operator");
    let admin = server.key("acme", "admin");
    let other = server.key("globex", "admin");
    let (_, run) = call(
        http.post(format!("{}/v1/workflows/register_suppliers/runs?wait=true", server.base))
            .bearer_auth(&operator)
            .json(&json!({"suppliers": [supplier(5)]})),
    )
    .await;
    let id = run["id"].as_str().unwrap().to_owned();
    let base = &server.base;
    // (method, path, body, least role)
    let routes: Vec<(&str, String, Value, &str)> = vec![
        ("GET", "/health".into(), Value::Null, "viewer"),
        ("GET", "/metrics".into(), Value::Null, "viewer"),
        ("GET", "/v1/openapi.json".into(), Value::Null, "viewer"),
        ("GET", "/v1/workflows".into(), Value::Null, "viewer"),
        ("GET", "/v1/nodes".into(), Value::Null, "viewer"),
        ("GET", "/v1/runs".into(), Value::Null, "viewer"),
        ("GET", format!("/v1/runs/{id}"), Value::Null, "viewer"),
        ("GET", format!("/v1/runs/{id}/events"), Value::Null, "viewer"),
        (
            "POST",
            "/v1/workflows/register_suppliers/runs".into(),
            json!({"suppliers": []}),
            "operator",
        ),
        ("POST", format!("/v1/runs/{id}/cancel"), Value::Null, "operator"),
        ("GET", "/v1/keys".into(), Value::Null, "admin"),
        ("POST", "/v1/keys".into(), json!({"role": "viewer"}), "admin"),
        ("DELETE", "/v1/keys/0000000000000000".into(), Value::Null, "admin"),
        ("GET", "/v1/audit".into(), Value::Null, "admin"),
        ("POST", "/v1/migrate".into(), Value::Null, "admin"),
        (
            "POST",
            "/mcp".into(),
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
            "viewer",
        ),
    ];
    let request = |method: &str, path: &str, body: &Value| {
        let url = format!("{base}{path}");
        let builder = match method {
            "GET" => http.get(url),
            "POST" => http.post(url),
            _ => http.delete(url),
        };
        if body.is_null() { builder } else { builder.json(body) }
    };
    for (method, path, body, least) in &routes {
        let (status, answer) = call(request(method, path, body)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without a key: {answer}");
        let (status, _) = call(request(method, path, body).bearer_auth("dfk_0123456789abcdef_00")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with an unknown key");
        for (role, key) in [("viewer", &viewer), ("operator", &operator), ("admin", &admin)] {
            let allowed = matches!(
                (*least, role),
                ("viewer", _) | ("operator", "operator" | "admin") | ("admin", "admin")
            );
            if path.starts_with("/mcp") {
                continue;
            }
            let (status, answer) = call(request(method, path, body).bearer_auth(key)).await;
            if allowed {
                assert_ne!(status, StatusCode::FORBIDDEN, "{method} {path} as {role}: {answer}");
                assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path} as {role}: {answer}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} as {role}: {answer}");
                assert!(
                    answer["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("needs the {least} role")),
                    "{answer}"
                );
            }
        }
    }
    // Another tenant's admin sees neither the run nor its events, and cannot cancel it.
    for (method, path) in [
        ("GET", format!("/v1/runs/{id}")),
        ("GET", format!("/v1/runs/{id}/events")),
        ("POST", format!("/v1/runs/{id}/cancel")),
    ] {
        let (status, answer) = call(request(method, &path, &Value::Null).bearer_auth(&other)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path} of another tenant: {answer}");
    }
    let (_, listed) = call(request("GET", "/v1/runs", &Value::Null).bearer_auth(&other)).await;
    assert_eq!(listed, json!([]), "another tenant lists none of acme's runs");
    // A revoked key is refused from then on.
    let (status, created) = call(request("POST", "/v1/keys", &json!({"role": "viewer", "name": "short-lived"})).bearer_auth(&admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap();
    assert_eq!(
        call(request("GET", "/health", &Value::Null).bearer_auth(token)).await.0,
        StatusCode::OK
    );
    let revoke = format!("/v1/keys/{}", created["id"].as_str().unwrap());
    let (status, _) = call(request("DELETE", &revoke, &Value::Null).bearer_auth(&other)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's admin cannot revoke it");
    assert_eq!(
        call(request("DELETE", &revoke, &Value::Null).bearer_auth(&admin)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(request("GET", "/health", &Value::Null).bearer_auth(token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, audit) = call(request("GET", "/v1/audit", &Value::Null).bearer_auth(&admin)).await;
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["key.create", "key.revoke", "migrate", "run.submit"] {
        assert!(actions.contains(&action), "{action} in the audit log: {audit}");
    }
    drop(server);
}

#[tokio::test]
async fn bad_bodies_get_400_413_and_422_naming_the_field_and_the_audit_log_refuses_changes() {
    let env = server_env("svc_input").await;
    let server = Server::start(&env);
    let operator = server.key("acme", "operator");
    let http = client();
    let submit = format!("{}/v1/workflows/register_suppliers/runs", server.base);
    let (status, answer) = call(http.post(&submit).bearer_auth(&operator).body("{\"suppliers\": [")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().starts_with("the body is not JSON"),
        "{answer}"
    );
    assert_eq!(answer["error"]["line"], 1);
    let (status, answer) = call(
        http.post(&submit)
            .bearer_auth(&operator)
            .json(&json!({"supplier": [], "suppliers": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let inputs: Vec<&str> = answer["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["input"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["supplier", "suppliers"], "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown input 'supplier' (did you mean 'suppliers'?)"),
        "{answer}"
    );
    let big = json!({"suppliers": [{"name": "x".repeat(2 << 20)}]});
    // The server closes the connection after a 413: a client of its own, so that the next
    // request does not go out on the closed connection.
    let (status, _) = call(client().post(&submit).bearer_auth(&operator).json(&big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, answer) = call(
        http.post(format!("{}/v1/workflows/no_such/runs", server.base))
            .bearer_auth(&operator)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("register_suppliers"),
        "lists those served: {answer}"
    );
    let (status, answer) = call(
        http.post(format!("{}/v1/keys", server.base))
            .bearer_auth(&server.admin)
            .json(&json!({"role": "root"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["field"], "role", "{answer}");

    // The audit log is append-only, whoever connects to the database.
    use dataflow_core::sea_orm::ConnectionTrait;
    let pg = Pg::connect(&env).await;
    let schema = &pg.schema;
    for statement in [
        format!("UPDATE \"{schema}\".dataflow_audit SET actor = 'someone else'"),
        format!("DELETE FROM \"{schema}\".dataflow_audit"),
        format!("TRUNCATE \"{schema}\".dataflow_audit"),
    ] {
        let refused = pg.db.execute_unprepared(&statement).await.expect_err(&statement);
        assert!(refused.to_string().contains("append-only"), "{statement}: {refused}");
    }
    drop(server);
}

#[tokio::test]
async fn serve_on_the_embedded_stores_executes_runs_itself_and_takes_them_up_after_a_crash() {
    let env = embedded_env("svc_embedded");
    let mut server = Server::start(&env);
    let operator = server.key("acme", "operator");
    let http = client();
    let (status, run) = call(
        http.post(format!("{}/v1/workflows/register_suppliers/runs?wait=true", server.base))
            .bearer_auth(&operator)
            .json(&json!({"suppliers": [supplier(1)]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["worker"].as_str().unwrap().starts_with("serve:"), "{run}");
    // An import reads only the files of the import folder (the shipped sample data here):
    // another file of the server's machine is refused, by name or through `..`.
    for path in ["/etc/hostname", "../../Cargo.toml"] {
        let (_, run) = call(
            http.post(format!("{}/v1/workflows/import_catalog/runs?wait=true", server.base))
                .bearer_auth(&operator)
                .json(&json!({"path": path})),
        )
        .await;
        assert_eq!(run["status"], "failed", "{run}");
        assert!(
            run["error"].as_str().unwrap().contains("is not a file in the import folder"),
            "{run}"
        );
    }
    // A run under way when the process is killed is executed again by the next start.
    let catalog = dataflow_workflows::data_dir().join("catalog.jsonl").display().to_string();
    let (_, run) = call(
        http.post(format!("{}/v1/workflows/import_catalog/runs", server.base))
            .bearer_auth(&operator)
            .json(&json!({"path": catalog})),
    )
    .await;
    let id = run["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while call(http.get(format!("{}/v1/runs/{id}", server.base)).bearer_auth(&operator))
        .await
        .1["status"]
        != "running"
    {
        assert!(Instant::now() < deadline, "the import never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.process.kill_9();
    // A command that opens the same stores meanwhile (`dataflow keys`) leaves the run alone:
    // only the next `serve` executes it again, as its second attempt.
    server.key("acme", "viewer");
    let workflows = test_workflows().display().to_string();
    let command = dataflow(&["serve", "--listen", "127.0.0.1:0", "--workflows", &workflows], &env);
    let (_process, lines) = start(command, "serve-again", |line| line.starts_with("serving "));
    let address = served_address(lines.last().unwrap()).unwrap();
    let run = wait_for_end(&http, &format!("http://{address}"), &operator, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempts"], 2, "{run}");
}

#[tokio::test]
async fn an_mcp_client_lists_the_workflows_as_tools_and_calls_one() {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::TokioChildProcess;
    let env = embedded_env("svc_mcp");
    let workflows = test_workflows().display().to_string();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dataflow"));
    command.args(["mcp", "--workflows", &workflows]);
    for (key, _) in std::env::vars() {
        if key.starts_with("DATAFLOW_") && !key.starts_with("DATAFLOW_TEST") {
            command.env_remove(key);
        }
    }
    for (k, v) in &env {
        command.env(k, v);
    }
    command.env("DATAFLOW_TENANT", "acme");
    let client = ().serve(TokioChildProcess::new(command).unwrap()).await.expect("the MCP session starts");
    let tools = client.list_all_tools().await.unwrap();
    let names: BTreeSet<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in [
        "classify_product",
        "compliance_check",
        "import_catalog",
        "recommend_for_project",
        "register_suppliers",
    ] {
        assert!(names.contains(expected), "{expected} in {names:?}");
    }
    let register = tools.iter().find(|t| t.name == "register_suppliers").unwrap();
    assert_eq!(register.input_schema["required"], json!(["suppliers"]));
    let mut call = CallToolRequestParams::new("register_suppliers");
    call.arguments = json!({"suppliers": [supplier(9)]}).as_object().cloned();
    let result = client.call_tool(call).await.unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let structured = result.structured_content.expect("structured outputs");
    assert_eq!(structured["status"], "succeeded", "{structured}");
    assert_eq!(structured["outputs"]["inserted"], 1, "{structured}");
    let mut bad = CallToolRequestParams::new("register_suppliers");
    bad.arguments = json!({"suppliers": 3}).as_object().cloned();
    let result = client.call_tool(bad).await.unwrap();
    assert_eq!(result.is_error, Some(true), "{result:?}");
    let text = format!("{:?}", result.content);
    assert!(text.contains("input 'suppliers' must be array"), "{text}");
    client.cancel().await.unwrap();
}
