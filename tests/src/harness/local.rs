//! Servers started as local processes for the tests: each on a free loopback port in its own
//! temporary directory, run from its [`Recipe`] under a small shell watchdog that stops the
//! server and removes the directory when the test process goes away (Rust runs no destructors
//! for statics).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::ServiceKind;
use super::recipe::{Recipe, process_alive};

/// How long a server may take to become healthy (generous for a loaded 2-core CI machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a stopped server may take to shut down cleanly before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The watchdog: runs the server in the background, records its pid, and when the parent
/// (the test process) is gone, stops the server with its shutdown signal, then SIGKILL, and
/// removes the directory. When the server itself ends (a test stopped it) the watchdog exits.
const WATCHDOG: &str = r#"
parent=$1; dir=$2; sig=$3; shift 3
"$@" >>"$dir/server.log" 2>&1 &
child=$!
echo "$child" >"$dir/server.pid"
alive() { [ -e "/proc/$1" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }
while kill -0 "$parent" 2>/dev/null; do
  alive "$child" || exit 0
  sleep 0.5
done
kill -s "$sig" "$child" 2>/dev/null
i=0
while alive "$child" && [ $i -lt 20 ]; do sleep 0.25; i=$((i+1)); done
kill -s KILL "$child" 2>/dev/null
rm -rf "$dir"
"#;

/// A server process the harness can stop and start again on the same port with the same data.
pub struct LocalServer {
    /// What runs, where, on which ports.
    pub recipe: Recipe,
    /// The running watchdog, reaped when the server is stopped.
    watchdog: Option<Child>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh directory for one server of this test process.
pub fn server_dir(kind: ServiceKind) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dataflow-tests-{}-{}-{n}", std::process::id(), kind.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

impl LocalServer {
    /// Prepares the server's directory (a PostgreSQL cluster); nothing runs until
    /// [`LocalServer::start`]. Panics when the server is not installed.
    pub fn new(recipe: Recipe) -> Self {
        recipe.prepare().unwrap_or_else(|e| panic!("{e}"));
        LocalServer { recipe, watchdog: None }
    }

    /// Starts the server under the watchdog and waits until it is healthy; panics with the
    /// server's own log when it does not become healthy in time.
    pub fn start(&mut self) {
        let argv = self.recipe.argv().unwrap_or_else(|e| panic!("{e}"));
        let kind = self.recipe.kind;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(WATCHDOG).arg("dataflow-watchdog");
        cmd.arg(std::process::id().to_string())
            .arg(&self.recipe.dir)
            .arg(kind.stop_signal());
        cmd.args(argv);
        // Servers that write files relative to their working directory (ArcadeDB's `log/`)
        // write them into the server's own temporary directory.
        cmd.current_dir(&self.recipe.dir);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        self.watchdog = Some(cmd.spawn().unwrap_or_else(|e| panic!("starting the {} watchdog: {e}", kind.name())));
        let mut polls = 0u32;
        let took = self
            .recipe
            .wait_healthy(START_TIMEOUT, || {
                // The watchdog writes the pid a moment after it starts: look only after two seconds.
                polls += 1;
                polls > 40 && self.recipe.pid().is_some_and(|p| !process_alive(p))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        announce!(
            "dataflow-tests harness: {} ready on 127.0.0.1:{} in {took:?}",
            kind.name(),
            self.recipe.port
        );
    }

    /// Stops the server (its shutdown signal, then SIGKILL after 10 s) and waits until the port
    /// is closed. The data directory stays for a later [`LocalServer::start`].
    pub fn stop(&mut self) {
        let Some(pid) = self.recipe.pid() else { return };
        self.recipe.stop(pid, STOP_GRACE);
        // The watchdog exits within half a second of its server.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.wait();
        }
        announce!("dataflow-tests harness: {} stopped", self.recipe.kind.name());
    }
}
