//! `dataflow-services` (what `scripts/services` runs) end to end: the four servers start in a
//! temporary data folder on free ports, outlive the command, serve, stop, and start again with
//! their data. Never on the usual ports, which a user's own servers may hold.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dataflow_core::sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use dataflow_tests::harness::probe;

/// A data folder of this test; dropping it stops whatever runs from it and removes it, so a
/// failed test leaves no server behind.
struct Folder(PathBuf);

impl Folder {
    fn new(hint: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dataflow-services-{hint}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Folder(dir)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dataflow-services"))
            .arg("--dir")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("running dataflow-services")
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = self.run(&["stop"]);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `export NAME=value` lines of `start`'s stdout.
fn exports(out: &Output) -> HashMap<String, String> {
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Five distinct free ports: PostgreSQL, Redis, Chroma, Bolt, ArcadeDB's HTTP.
fn free_ports() -> Vec<u16> {
    // Held together while chosen, so no two are the same.
    let held: Vec<TcpListener> = (0..5).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    held.iter().map(|l| l.local_addr().expect("its address").port()).collect()
}

fn port_args(ports: &[u16]) -> Vec<String> {
    [
        "--postgres-port",
        "--redis-port",
        "--chroma-port",
        "--bolt-port",
        "--arcadedb-http-port",
    ]
    .iter()
    .zip(ports)
    .flat_map(|(flag, port)| [flag.to_string(), port.to_string()])
    .collect()
}

async fn pg_value(url: &str, sql: &str) -> String {
    let db = Database::connect(url).await.unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a row");
    let value = row.try_get::<String>("", "v").expect("a text column v");
    let _ = db.close().await;
    value
}

async fn pg_exec(url: &str, sql: &str) {
    let db = Database::connect(url).await.unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    db.execute_unprepared(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = db.close().await;
}

async fn graph_answers(env: &HashMap<String, String>) -> i64 {
    let config = neo4rs::ConfigBuilder::default()
        .uri(env["DATAFLOW_GRAPH_URL"].as_str())
        .user(env["DATAFLOW_GRAPH_USER"].as_str())
        .password(env["DATAFLOW_GRAPH_PASSWORD"].as_str())
        .db(env["DATAFLOW_GRAPH_DATABASE"].as_str())
        .max_connections(1)
        .build()
        .expect("a Bolt configuration");
    let graph = neo4rs::Graph::connect(config)
        .await
        .expect("connecting to ArcadeDB with the printed user and password");
    let mut rows = graph.execute(neo4rs::query("RETURN 41 + 1 AS n")).await.expect("a Cypher query");
    let row = rows.next().await.expect("reading the answer").expect("a row");
    row.get::<i64>("n").expect("n")
}

#[tokio::test]
async fn servers_start_serve_stop_and_start_again_with_their_data() {
    let folder = Folder::new("lifecycle");
    let ports = free_ports();
    let args = port_args(&ports);
    let mut start_args = vec!["start"];
    start_args.extend(args.iter().map(String::as_str));

    let started = folder.run(&start_args);
    let log = text(&started.stderr);
    assert!(started.status.success(), "start failed:\n{log}");
    let env = exports(&started);
    let password = std::fs::read_to_string(folder.0.join("bolt").join("root-password")).expect("the kept password");
    assert_eq!(
        env["DATAFLOW_DATABASE_URL"],
        format!("postgres://postgres@127.0.0.1:{}/dataflow", ports[0])
    );
    assert_eq!(env["DATAFLOW_REDIS_URL"], format!("redis://127.0.0.1:{}/", ports[1]));
    assert_eq!(env["DATAFLOW_CHROMA_URL"], format!("http://127.0.0.1:{}", ports[2]));
    assert_eq!(env["DATAFLOW_GRAPH_URL"], format!("bolt://127.0.0.1:{}", ports[3]));
    assert_eq!(env["DATAFLOW_GRAPH_USER"], "root");
    assert_eq!(env["DATAFLOW_GRAPH_DATABASE"], "dataflow");
    assert_eq!(env["DATAFLOW_GRAPH_PASSWORD"], password.trim());
    assert!(password.trim().len() >= 16, "a generated password: {password:?}");
    assert!(log.contains("created the PostgreSQL database dataflow"), "{log}");

    // The command has exited; the servers still serve.
    let status = folder.run(&["status"]);
    let table = text(&status.stdout);
    assert!(status.status.success(), "{table}{}", text(&status.stderr));
    for server in ["postgres", "redis", "chroma", "bolt"] {
        let line = table
            .lines()
            .find(|l| l.starts_with(server))
            .unwrap_or_else(|| panic!("{server}: {table}"));
        assert!(line.contains("running") && line.contains("healthy"), "{line}");
        assert!(line.contains(&folder.0.join(server).display().to_string()), "{line}");
    }
    assert!(table.contains(&format!("127.0.0.1:{} (HTTP {})", ports[3], ports[4])), "{table}");

    // Each store answers at the printed address.
    let url = &env["DATAFLOW_DATABASE_URL"];
    assert_eq!(pg_value(url, "SELECT current_database()::text AS v").await, "dataflow");
    pg_exec(url, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before the stop')").await;
    let redis = redis::Client::open(env["DATAFLOW_REDIS_URL"].as_str()).expect("a Redis URL");
    let mut con = redis.get_multiplexed_async_connection().await.expect("Redis");
    let _: () = redis::cmd("SET")
        .arg("kept")
        .arg("before the stop")
        .query_async(&mut con)
        .await
        .expect("SET");
    drop(con);
    assert_eq!(
        probe::http_status(probe::port_of(&env["DATAFLOW_CHROMA_URL"]), "/api/v2/heartbeat"),
        Some(200)
    );
    assert_eq!(graph_answers(&env).await, 42);

    // Starting again changes nothing and prints the same lines.
    let again = folder.run(&["start"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stderr).matches("already running").count(), 4, "{}", text(&again.stderr));
    assert_eq!(exports(&again), env);

    let stopped = folder.run(&["stop"]);
    let said = text(&stopped.stderr);
    assert!(stopped.status.success(), "{said}");
    assert_eq!(said.matches(" stopped (pid ").count(), 4, "{said}");
    for port in &ports {
        assert!(!probe::tcp_open(*port), "port {port} is closed after stop: {said}");
    }
    let status = folder.run(&["status"]);
    assert!(!status.status.success(), "status fails while the servers are stopped");
    assert_eq!(text(&status.stdout).matches(" stopped ").count(), 4, "{}", text(&status.stdout));

    // Started again without ports: the same ports, the same password, the same data.
    let restarted = folder.run(&["start"]);
    assert!(restarted.status.success(), "{}", text(&restarted.stderr));
    assert_eq!(exports(&restarted), env);
    assert_eq!(pg_value(url, "SELECT v FROM kept").await, "before the stop");
    let mut con = redis.get_multiplexed_async_connection().await.expect("Redis");
    let kept: String = redis::cmd("GET").arg("kept").query_async(&mut con).await.expect("GET");
    assert_eq!(kept, "before the stop");
    assert_eq!(graph_answers(&env).await, 42);

    let stopped = folder.run(&["stop"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
}

#[test]
fn start_refuses_a_port_in_use_and_starts_nothing() {
    let folder = Folder::new("taken");
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let port = taken.local_addr().expect("its address").port();
    let mut ports = free_ports();
    ports[1] = port;
    let args = port_args(&ports);
    let mut start_args = vec!["start"];
    start_args.extend(args.iter().map(String::as_str));

    let refused = folder.run(&start_args);
    let said = text(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains(&format!("Redis: port {port} on 127.0.0.1 is already in use")),
        "{said}"
    );
    assert!(
        said.contains(&format!("(pid {})", std::process::id())),
        "names the program holding it: {said}"
    );
    assert!(said.contains("--redis-port PORT") && said.contains("nothing was started"), "{said}");
    for other in [ports[0], ports[2], ports[3], ports[4]] {
        assert!(!probe::tcp_open(other), "nothing listens on {other}");
    }
    let status = folder.run(&["status"]);
    assert!(!status.status.success());
    assert_eq!(text(&status.stdout).matches(" stopped ").count(), 4, "{}", text(&status.stdout));
    drop(taken);
    assert!(!Path::new(&folder.0.join("postgres").join("server.pid")).exists());
}
