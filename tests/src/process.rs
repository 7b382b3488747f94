//! Commands of ours started as separate processes (`dataflow serve`, `dataflow worker`), as a
//! user starts them: waited for until they say they are ready, their stderr passed on to the
//! caller's with their name, and killed when dropped, pass or fail.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Services;

/// How long a process may take to say it is ready (a first start migrates every model).
const READY_WITHIN: Duration = Duration::from_secs(120);

/// A child process, killed (`SIGKILL`) when dropped.
pub struct Process {
    /// The process.
    pub child: Child,
    /// The name its stderr lines are passed on with.
    pub name: String,
}

impl Process {
    /// Kills the process with `SIGKILL`, as `kill -9` does, and waits for it.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Starts `command` with its stderr read by a thread of its own (each line passed on to this
/// process's stderr as `[name] line`, so the child never blocks on a full pipe), and returns
/// it with its stderr lines up to and including the first for which `ready` holds. Panics
/// when the process ends first or is not ready within two minutes, with what it wrote.
pub fn start(mut command: Command, name: &str, ready: impl Fn(&str) -> bool) -> (Process, Vec<String>) {
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let label = name.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{label}] {line}");
            let _ = lines_tx.send(line);
        }
    });
    let mut process = Process {
        child,
        name: name.to_owned(),
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        match lines_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let done = ready(&line);
                seen.push(line);
                if done {
                    return (process, seen);
                }
            }
            Err(_) => {
                if let Ok(Some(status)) = process.child.try_wait() {
                    panic!("{} ended with {status} before it was ready:\n{}", process.name, seen.join("\n"));
                }
                assert!(
                    Instant::now() < deadline,
                    "{} not ready after {READY_WITHIN:?}:\n{}",
                    process.name,
                    seen.join("\n")
                );
            }
        }
    }
}

/// The address `dataflow serve` says it serves on, from its `serving … on http://address`
/// line.
pub fn served_address(line: &str) -> Option<String> {
    line.split("http://").nth(1)?.split_whitespace().next().map(str::to_owned)
}

/// The admin key the first `dataflow serve` on a database prints (a line that is the key).
pub fn printed_key(lines: &[String]) -> Option<String> {
    lines.iter().map(|l| l.trim()).find(|l| l.starts_with("dfk_")).map(str::to_owned)
}

/// The `DATAFLOW_*` settings that put every store of a `dataflow` process on the harness's
/// servers: a fresh PostgreSQL schema, and cache, vector and graph prefixes of their own, each
/// named after `hint`.
pub async fn server_settings(hint: &str) -> Vec<(&'static str, String)> {
    let services = Services::global().await;
    let bolt = services.bolt().await;
    vec![
        ("DATAFLOW_DATABASE_URL", services.postgres_url().await),
        ("DATAFLOW_DATABASE_SCHEMA", services.fresh_pg_schema(hint).await),
        ("DATAFLOW_REDIS_URL", services.redis_url().await),
        ("DATAFLOW_CACHE_PREFIX", services.unique_name(hint)),
        ("DATAFLOW_CHROMA_URL", services.chroma_url().await),
        ("DATAFLOW_VECTOR_PREFIX", services.unique_name(hint)),
        ("DATAFLOW_GRAPH_URL", bolt.uri.clone()),
        ("DATAFLOW_GRAPH_USER", bolt.user.clone()),
        ("DATAFLOW_GRAPH_PASSWORD", bolt.password.clone()),
        ("DATAFLOW_GRAPH_DATABASE", bolt.database.clone()),
        ("DATAFLOW_GRAPH_NAMESPACE", services.unique_name(hint)),
    ]
}

/// The command `binary args` with the settings `env` and none of the caller's own
/// `DATAFLOW_*` settings (the harness's `DATAFLOW_TEST_*` stay).
pub fn dataflow_command(binary: &Path, args: &[&str], env: &[(&'static str, String)]) -> Command {
    let mut command = Command::new(binary);
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("DATAFLOW_") && !key.starts_with("DATAFLOW_TEST") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command
}

/// A new API key of `tenant` with `role`, from `binary keys create` (a process of its own)
/// with the settings `env`.
pub fn create_key(binary: &Path, env: &[(&'static str, String)], tenant: &str, role: &str) -> String {
    let out = dataflow_command(
        binary,
        &["keys", "create", "--tenant", tenant, "--role", role, "--name", "test"],
        env,
    )
    .output()
    .expect("dataflow keys create runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("a key is text").trim().to_owned()
}
