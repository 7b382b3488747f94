//! Servers started as local processes: each on a free loopback port in its own temporary
//! directory, supervised by a small shell watchdog that stops the server and removes the
//! directory when the test process goes away (Rust runs no destructors for statics).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::ServiceKind;
use super::probe;

/// How long a server may take to become healthy (generous for a loaded 2-core CI machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

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
    pub kind: ServiceKind,
    pub port: u16,
    /// A second port (ArcadeDB's HTTP port for its health check).
    pub aux_port: Option<u16>,
    pub dir: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    /// Run the program as this user (PostgreSQL under root).
    run_as: Option<String>,
    /// Signal for a clean, fast shutdown.
    stop_signal: &'static str,
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

/// The unprivileged user that runs PostgreSQL when the tests run as root.
pub fn service_user() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { geteuid() } == 0;
    root.then(|| std::env::var("DATAFLOW_SERVICES_USER").unwrap_or_else(|_| "dataflow-svc".into()))
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// `program args...` as `user` when given (setpriv execs, so the pid is the server's own).
fn command_as(user: Option<&str>, program: &Path, args: &[String]) -> Command {
    match user {
        Some(user) => {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid", user, "--regid", user, "--init-groups", "--"])
                .arg(program)
                .args(args);
            cmd
        }
        None => {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
    }
}

impl LocalServer {
    /// Describes a server; nothing runs until [`LocalServer::start`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: ServiceKind,
        port: u16,
        aux_port: Option<u16>,
        dir: PathBuf,
        program: PathBuf,
        args: Vec<String>,
        run_as: Option<String>,
        stop_signal: &'static str,
    ) -> Self {
        LocalServer {
            kind,
            port,
            aux_port,
            dir,
            program,
            args,
            run_as,
            stop_signal,
            watchdog: None,
        }
    }

    /// Starts the server under the watchdog and waits until it is healthy; panics with the
    /// server's own log when it does not become healthy in time.
    pub fn start(&mut self) {
        let started = Instant::now();
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(WATCHDOG).arg("dataflow-watchdog");
        cmd.arg(std::process::id().to_string()).arg(&self.dir).arg(self.stop_signal);
        if let Some(user) = &self.run_as {
            cmd.args(["setpriv", "--reuid", user, "--regid", user, "--init-groups", "--"]);
        }
        cmd.arg(&self.program).args(&self.args);
        // Servers that write files relative to their working directory (ArcadeDB's `log/`)
        // write them into the server's own temporary directory.
        cmd.current_dir(&self.dir);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        self.watchdog = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting the {} watchdog: {e}", self.kind.name())),
        );
        while !self.healthy() {
            if started.elapsed() > START_TIMEOUT
                || (started.elapsed() > Duration::from_secs(2) && self.pid().is_some_and(|p| !process_alive(p)))
            {
                panic!(
                    "{} did not become healthy on 127.0.0.1:{} within {:?}; its log ({}):\n{}",
                    self.kind.name(),
                    self.port,
                    started.elapsed(),
                    self.log_path().display(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        announce!(
            "dataflow-tests harness: {} ready on 127.0.0.1:{} in {:?}",
            self.kind.name(),
            self.port,
            started.elapsed()
        );
    }

    /// Stops the server (its shutdown signal, then SIGKILL after 10 s) and waits until the port
    /// is closed. The data directory stays for a later [`LocalServer::start`].
    pub fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        let _ = Command::new("kill").args(["-s", self.stop_signal, &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if process_alive(pid) {
            let _ = Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status();
        }
        while probe::tcp_open(self.port) && Instant::now() < deadline + Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(self.dir.join("server.pid"));
        // The watchdog exits within half a second of its server.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.wait();
        }
        announce!("dataflow-tests harness: {} stopped", self.kind.name());
    }

    fn healthy(&self) -> bool {
        match self.kind {
            ServiceKind::Postgres => probe::tcp_open(self.port) && pg_ready(&self.dir, self.port),
            ServiceKind::Redis => probe::redis_pong(self.port),
            ServiceKind::Chroma => probe::http_status(self.port, "/api/v2/heartbeat") == Some(200),
            ServiceKind::Bolt => {
                self.aux_port
                    .is_some_and(|p| matches!(probe::http_status(p, "/api/v1/ready"), Some(200..=299)))
                    && probe::bolt_handshake(self.port).is_some()
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("server.pid")).ok()?.trim().parse().ok()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no log: {e})"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// `pg_isready`-style check through the bundled client binary next to `postgres`.
fn pg_ready(dir: &Path, port: u16) -> bool {
    let Some(bin) = postgres_bin_dir() else { return false };
    Command::new(bin.join("pg_isready"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-t",
            "2",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Initialises a PostgreSQL cluster in `dir/data`, owned by `user` when given.
pub fn initdb(dir: &Path, user: Option<&str>) -> PathBuf {
    let bin = postgres_bin_dir()
        .unwrap_or_else(|| panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run scripts/install-services"));
    let data = dir.join("data");
    if let Some(user) = user {
        let status = Command::new("chown").args(["-R", user]).arg(dir).status().expect("chown");
        assert!(
            status.success(),
            "chown {} to {user} failed: run scripts/install-services to create the user",
            dir.display()
        );
    }
    let args = vec![
        "-D".into(),
        data.display().to_string(),
        "-U".into(),
        "postgres".into(),
        "--auth=trust".into(),
        "-E".into(),
        "UTF8".into(),
        "--no-sync".into(),
    ];
    let out = command_as(user, &bin.join("initdb"), &args)
        .output()
        .unwrap_or_else(|e| panic!("running initdb: {e}"));
    if !out.status.success() {
        panic!(
            "initdb failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    data
}
