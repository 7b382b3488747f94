//! How each of the four servers runs on this machine: its program and command line, its
//! first-time setup, its health check and its shutdown. The one place that knows it: the test
//! harness starts throwaway servers from a [`Recipe`], and `dataflow-services` starts a user's
//! servers from the same [`Recipe`].
//!
//! A server lives in a directory of its own, which holds its data, its log (`server.log`) and
//! the pid of its process (`server.pid`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::ServiceKind;
use super::probe;

/// The user ArcadeDB knows as its administrator.
pub const ARCADEDB_USER: &str = "root";

/// The database ArcadeDB creates at start, owned by [`ARCADEDB_USER`].
pub const ARCADEDB_DATABASE: &str = "dataflow";

/// What ArcadeDB needs beside its Bolt port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcadeDb {
    /// Its HTTP port: health check and server commands.
    pub http_port: u16,
    /// The password of [`ARCADEDB_USER`], set when ArcadeDB first starts in its directory.
    pub root_password: String,
}

/// One server on 127.0.0.1: which, where its directory is, and its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// Which server.
    pub kind: ServiceKind,
    /// Its directory: data, `server.log`, `server.pid`.
    pub dir: PathBuf,
    /// The port clients use (Bolt's for ArcadeDB).
    pub port: u16,
    /// ArcadeDB's HTTP port and root password; `None` for the other servers.
    pub arcadedb: Option<ArcadeDb>,
}

/// Why a server could not be set up or started. Each message ends with what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A program or file that `scripts/install-services` installs is missing.
    #[error("{what} is not installed ({} is missing): run scripts/install-services", missing.display())]
    NotInstalled {
        /// What is missing, e.g. `PostgreSQL`.
        what: &'static str,
        /// The file or directory that was looked for.
        missing: PathBuf,
    },
    /// A recipe for the Bolt server was made without [`ArcadeDb`].
    #[error("the Bolt server needs ArcadeDB's HTTP port and root password (Recipe::arcadedb is None)")]
    NoArcadeDbSettings,
    /// The user that runs the server cannot reach its directory.
    #[error(
        "{user}, the user PostgreSQL runs as under root, cannot write to {} (a directory above it is closed to other users): choose a data folder it can reach with --dir, e.g. /var/lib/dataflow-services",
        dir.display()
    )]
    Unreachable {
        /// The server's directory.
        dir: PathBuf,
        /// The user.
        user: String,
    },
    /// The directory could not be handed to the user that runs the server.
    #[error("giving {} to the user {user} failed: run scripts/install-services, which creates the user", dir.display())]
    Chown {
        /// The server's directory.
        dir: PathBuf,
        /// The user.
        user: String,
    },
    /// `initdb` failed.
    #[error("initdb in {} failed; its output:\n{output}", dir.display())]
    Initdb {
        /// The cluster's directory.
        dir: PathBuf,
        /// What initdb printed.
        output: String,
    },
    /// A file or process operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The server did not answer its health check in time, or exited.
    #[error(
        "{} did not become healthy on 127.0.0.1:{port} ({why}); the end of its log {}:\n{log}",
        kind.name(), log_path.display()
    )]
    Unhealthy {
        /// Which server.
        kind: ServiceKind,
        /// Its port.
        port: u16,
        /// `it exited` or how long it was given.
        why: String,
        /// Its log file.
        log_path: PathBuf,
        /// The last lines of its log.
        log: String,
    },
}

/// How a server ended when asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It shut down after its clean shutdown signal.
    Clean,
    /// It was still running after the grace period and was killed.
    Killed,
}

impl ServiceKind {
    /// The signal that shuts the server down cleanly and promptly (PostgreSQL's fast shutdown
    /// is `INT`).
    pub fn stop_signal(self) -> &'static str {
        match self {
            ServiceKind::Postgres => "INT",
            ServiceKind::Redis | ServiceKind::Chroma | ServiceKind::Bolt => "TERM",
        }
    }

    /// The server's product name, for people.
    pub fn product(self) -> &'static str {
        match self {
            ServiceKind::Postgres => "PostgreSQL",
            ServiceKind::Redis => "Redis",
            ServiceKind::Chroma => "Chroma",
            ServiceKind::Bolt => "ArcadeDB (Bolt)",
        }
    }
}

impl Recipe {
    /// A server of `kind` in `dir` on `port`; `arcadedb` is required for [`ServiceKind::Bolt`].
    pub fn new(kind: ServiceKind, dir: PathBuf, port: u16, arcadedb: Option<ArcadeDb>) -> Self {
        Recipe { kind, dir, port, arcadedb }
    }

    /// The file its log goes to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The file that holds its process id while it runs.
    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("server.pid")
    }

    /// The process id in [`Recipe::pid_path`], if any (it may be stale).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_path()).ok()?.trim().parse().ok()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no log: {e})"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The user the server runs as, when not the current one: PostgreSQL refuses to run as
    /// root, so under root it runs as `DATAFLOW_SERVICES_USER` (default `dataflow-svc`).
    pub fn run_as(&self) -> Option<String> {
        match self.kind {
            ServiceKind::Postgres => service_user(),
            _ => None,
        }
    }

    /// The URL clients connect to (PostgreSQL: its `postgres` database as user `postgres`,
    /// trusted on loopback).
    pub fn url(&self) -> String {
        url_of(self.kind, self.port)
    }

    /// Creates the directory and whatever the server needs before its first start (a
    /// PostgreSQL cluster); does nothing that is already done, so data survives.
    pub fn prepare(&self) -> Result<(), SetupError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| SetupError::Io {
            action: format!("creating {}", self.dir.display()),
            source,
        })?;
        if self.kind == ServiceKind::Postgres && !self.dir.join("data").join("PG_VERSION").exists() {
            initdb(&self.dir, self.run_as().as_deref())?;
        }
        Ok(())
    }

    /// The whole command line that runs the server in the foreground (behind `setpriv` when it
    /// runs as another user, which execs, so the pid is the server's own).
    pub fn argv(&self) -> Result<Vec<OsString>, SetupError> {
        let dir = self.dir.display().to_string();
        let port = self.port.to_string();
        let (program, args): (PathBuf, Vec<String>) = match self.kind {
            ServiceKind::Postgres => {
                let bin = postgres_bin_dir()?;
                let data = self.dir.join("data").display().to_string();
                let args = [
                    "-D",
                    &data,
                    "-p",
                    &port,
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-k",
                    &dir,
                    "-c",
                    "max_connections=300",
                    "-c",
                    "shared_buffers=128MB",
                ];
                (bin.join("postgres"), args.map(String::from).to_vec())
            }
            ServiceKind::Redis => {
                let program = which("redis-server").ok_or(SetupError::NotInstalled {
                    what: "Redis",
                    missing: "redis-server on PATH".into(),
                })?;
                // Data survives a stop and start, as on any server: an append-only file, no
                // snapshots.
                let args = [
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--dir",
                    &dir,
                ];
                (program, args.map(String::from).to_vec())
            }
            ServiceKind::Chroma => {
                let data = self.dir.join("data").display().to_string();
                let args = ["run", "--path", &data, "--host", "127.0.0.1", "--port", &port];
                (venv_file("Chroma", "bin/chroma")?, args.map(String::from).to_vec())
            }
            ServiceKind::Bolt => {
                let settings = self.arcadedb.as_ref().ok_or(SetupError::NoArcadeDbSettings)?;
                let arcade = arcadedb_dir()?;
                let java = arcade.join("jre").join("bin").join("java");
                if !java.exists() {
                    return Err(SetupError::NotInstalled {
                        what: "ArcadeDB's JRE",
                        missing: java,
                    });
                }
                let args = vec![
                    "-cp".into(),
                    format!("{}/*", arcade.join("jars").display()),
                    format!("-Darcadedb.server.rootPath={dir}"),
                    format!("-Darcadedb.server.databaseDirectory={}", self.dir.join("databases").display()),
                    format!("-Darcadedb.server.rootPassword={}", settings.root_password),
                    "-Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin".into(),
                    format!("-Darcadedb.bolt.port={port}"),
                    "-Darcadedb.bolt.host=127.0.0.1".into(),
                    "-Darcadedb.server.httpIncomingHost=127.0.0.1".into(),
                    format!("-Darcadedb.server.httpIncomingPort={}", settings.http_port),
                    format!("-Darcadedb.server.defaultDatabases={ARCADEDB_DATABASE}[{ARCADEDB_USER}]"),
                    "-Xmx512m".into(),
                    "com.arcadedb.server.ArcadeDBServer".into(),
                ];
                (java, args)
            }
        };
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(user) = self.run_as() {
            argv.extend(["setpriv", "--reuid", &user, "--regid", &user, "--init-groups", "--"].map(OsString::from));
        }
        argv.push(program.into_os_string());
        argv.extend(args.into_iter().map(OsString::from));
        Ok(argv)
    }

    /// [`Recipe::argv`] as a command that runs in the server's directory (ArcadeDB writes its
    /// `log/` relative to it), with no input.
    pub fn command(&self) -> Result<Command, SetupError> {
        let argv = self.argv()?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(&self.dir).stdin(Stdio::null());
        Ok(cmd)
    }

    /// Its own health check answers: PostgreSQL accepts a session, Redis answers `PING`,
    /// Chroma's heartbeat and ArcadeDB's readiness answer 200 and its Bolt port agrees on a
    /// protocol version.
    pub fn healthy(&self) -> bool {
        match self.kind {
            ServiceKind::Postgres => probe::tcp_open(self.port) && pg_ready(&self.dir, self.port),
            ServiceKind::Redis => probe::redis_pong(self.port),
            ServiceKind::Chroma => probe::http_status(self.port, "/api/v2/heartbeat") == Some(200),
            ServiceKind::Bolt => {
                self.arcadedb
                    .as_ref()
                    .is_some_and(|a| matches!(probe::http_status(a.http_port, "/api/v1/ready"), Some(200..=299)))
                    && probe::bolt_handshake(self.port).is_some()
            }
        }
    }

    /// Waits until [`Recipe::healthy`], and returns how long it took; fails with the end of its
    /// log when `exited()` says the process is gone or `timeout` passes.
    pub fn wait_healthy(&self, timeout: Duration, mut exited: impl FnMut() -> bool) -> Result<Duration, SetupError> {
        let started = Instant::now();
        loop {
            if self.healthy() {
                return Ok(started.elapsed());
            }
            let why = if exited() {
                Some("it exited".to_owned())
            } else if started.elapsed() > timeout {
                Some(format!("not within {timeout:?}"))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(SetupError::Unhealthy {
                    kind: self.kind,
                    port: self.port,
                    why,
                    log_path: self.log_path(),
                    log: self.log_tail(40),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process `pid` with the server's clean shutdown signal, kills it when it is
    /// still running after `grace`, and waits until its port is closed. The directory stays,
    /// for a later start with the same data.
    pub fn stop(&self, pid: u32, grace: Duration) -> StopOutcome {
        let _ = Command::new("kill")
            .args(["-s", self.kind.stop_signal(), &pid.to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let outcome = if process_alive(pid) {
            let _ = Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status();
            StopOutcome::Killed
        } else {
            StopOutcome::Clean
        };
        let closing = Instant::now() + Duration::from_secs(5);
        while probe::tcp_open(self.port) && Instant::now() < closing {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(self.pid_path());
        outcome
    }
}

/// The URL clients use for a server of `kind` on loopback `port` (PostgreSQL: its `postgres`
/// database as user `postgres`, trusted).
pub fn url_of(kind: ServiceKind, port: u16) -> String {
    match kind {
        ServiceKind::Postgres => postgres_url(port, "postgres"),
        ServiceKind::Redis => format!("redis://127.0.0.1:{port}/"),
        ServiceKind::Chroma => format!("http://127.0.0.1:{port}"),
        ServiceKind::Bolt => format!("bolt://127.0.0.1:{port}"),
    }
}

/// A PostgreSQL URL on 127.0.0.1 as user `postgres`.
pub fn postgres_url(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}")
}

/// The process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The repository's `.services` directory (or `DATAFLOW_SERVICES_DIR`), where
/// `scripts/install-services` puts the virtualenv.
pub fn services_dir() -> PathBuf {
    std::env::var_os("DATAFLOW_SERVICES_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(".services"))
}

fn venv_file(what: &'static str, relative: &str) -> Result<PathBuf, SetupError> {
    let path = services_dir().join("venv").join(relative);
    if path.exists() {
        Ok(path)
    } else {
        Err(SetupError::NotInstalled { what, missing: path })
    }
}

/// ArcadeDB's install inside the virtualenv's site-packages.
fn arcadedb_dir() -> Result<PathBuf, SetupError> {
    let lib = venv_file("ArcadeDB", "lib")?;
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages").join("arcadedb_embedded"))
        .find(|p| p.join("jars").is_dir())
        .ok_or_else(|| SetupError::NotInstalled {
            what: "ArcadeDB",
            missing: lib.join("python3.*/site-packages/arcadedb_embedded/jars"),
        })
}

/// ArcadeDB's version, read from its engine jar's name (`arcadedb-engine-26.10.2.jar`).
pub fn arcadedb_version() -> Option<String> {
    std::fs::read_dir(arcadedb_dir().ok()?.join("jars"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("arcadedb-engine-")?
                .strip_suffix(".jar")
                .map(str::to_owned)
        })
        .next()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file())
}

/// The unprivileged user that runs PostgreSQL when this process runs as root.
fn service_user() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { geteuid() } == 0;
    root.then(|| std::env::var("DATAFLOW_SERVICES_USER").unwrap_or_else(|_| "dataflow-svc".into()))
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
pub fn postgres_bin_dir() -> Result<PathBuf, SetupError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| SetupError::NotInstalled {
        what: "PostgreSQL",
        missing: "/usr/lib/postgresql/*/bin/initdb".into(),
    })
}

/// `pg_isready` through the client binary next to `postgres`.
fn pg_ready(dir: &Path, port: u16) -> bool {
    let Ok(bin) = postgres_bin_dir() else { return false };
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

/// Initialises a PostgreSQL cluster in `dir/data` (user `postgres`, trusted on loopback), owned
/// by `user` when given.
fn initdb(dir: &Path, user: Option<&str>) -> Result<(), SetupError> {
    let bin = postgres_bin_dir()?;
    if let Some(user) = user {
        let owned = Command::new("chown")
            .args(["-R", user])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !owned {
            return Err(SetupError::Chown {
                dir: dir.to_owned(),
                user: user.to_owned(),
            });
        }
    }
    if let Some(user) = user {
        let reachable = Command::new("setpriv")
            .args(["--reuid", user, "--regid", user, "--init-groups", "--", "test", "-w"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !reachable {
            return Err(SetupError::Unreachable {
                dir: dir.to_owned(),
                user: user.to_owned(),
            });
        }
    }
    let data = dir.join("data");
    let args: Vec<OsString> = [
        "-D".into(),
        data.into_os_string(),
        "-U".into(),
        "postgres".into(),
        "--auth=trust".into(),
        "-E".into(),
        "UTF8".into(),
        "--no-sync".into(),
    ]
    .into();
    let mut cmd = match user {
        Some(user) => {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid", user, "--regid", user, "--init-groups", "--"])
                .arg(bin.join("initdb"));
            cmd
        }
        None => Command::new(bin.join("initdb")),
    };
    let out = cmd.args(&args).current_dir(dir).output().map_err(|source| SetupError::Io {
        action: "running initdb".into(),
        source,
    })?;
    if !out.status.success() {
        return Err(SetupError::Initdb {
            dir: dir.to_owned(),
            output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(())
}
