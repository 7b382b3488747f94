//! The live-service harness: PostgreSQL, Redis, Chroma and a Bolt graph server for the tests
//! of one test binary, from the first provider that applies:
//!
//! 1. **external** — every `DATAFLOW_TEST_{POSTGRES,REDIS,CHROMA,NEO4J}_URL` is set;
//! 2. **containers** — a Docker engine answers a ping: throwaway containers started through
//!    testcontainers from the images `scripts/test-images` builds ([`containers`]);
//! 3. **local processes** — otherwise: throwaway servers from local binaries (installed by
//!    `scripts/install-services`) on free loopback ports.
//!
//! `DATAFLOW_TEST_PROVIDER=containers|local` forces one of the last two; a forced provider that
//! cannot start fails the run with the reason. The provider and why it was chosen are printed.
//!
//! How each server runs (program, command line, first-time setup, health check, shutdown) is
//! its [`recipe::Recipe`], which `dataflow-services` uses too for a user's servers.
//!
//! Each server starts on first use, so a binary that needs only PostgreSQL starts only that.
//! A server that cannot start panics with its own log: a store is never skipped.

/// Prints a harness line on the process's real stderr: the test runner captures `eprintln!`,
/// but which servers a run used must show in every run's output.
macro_rules! announce {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod containers;
pub mod detached;
mod docker_api;
mod local;
pub mod probe;
pub mod recipe;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dataflow_core::sea_orm::{ConnectionTrait, Database};
use tokio::sync::OnceCell;

pub use containers::Interruption;
use containers::{ContainerServer, PROVIDER_ENV};
use local::LocalServer;
use recipe::{ARCADEDB_DATABASE, ARCADEDB_USER, ArcadeDb, Recipe};

/// Where the servers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Servers named by `DATAFLOW_TEST_*_URL` variables.
    External,
    /// Servers started by the harness as containers, through testcontainers.
    Containers,
    /// Servers started by the harness as local processes.
    LocalProcesses,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::External => "external",
            Provider::Containers => "containers",
            Provider::LocalProcesses => "local-processes",
        })
    }
}

/// One of the four servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// PostgreSQL.
    Postgres,
    /// Redis.
    Redis,
    /// Chroma.
    Chroma,
    /// A Bolt/Cypher graph server (ArcadeDB locally, Neo4j when external).
    Bolt,
}

impl ServiceKind {
    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Postgres => "postgres",
            ServiceKind::Redis => "redis",
            ServiceKind::Chroma => "chroma",
            ServiceKind::Bolt => "bolt",
        }
    }
}

/// How to reach the Bolt graph server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoltEndpoint {
    /// `bolt://127.0.0.1:PORT` (or the external URL).
    pub uri: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database name.
    pub database: String,
}

const ENV_POSTGRES: &str = "DATAFLOW_TEST_POSTGRES_URL";
const ENV_REDIS: &str = "DATAFLOW_TEST_REDIS_URL";
const ENV_CHROMA: &str = "DATAFLOW_TEST_CHROMA_URL";
const ENV_NEO4J: &str = "DATAFLOW_TEST_NEO4J_URL";
/// The throwaway ArcadeDB's root password (a user's servers get a generated one).
const ARCADE_PASSWORD: &str = "dataflow-tests";

/// The servers of this test binary.
pub struct Services {
    provider: Provider,
    postgres: OnceCell<Endpoint>,
    redis: OnceCell<Endpoint>,
    chroma: OnceCell<Endpoint>,
    bolt: OnceCell<Endpoint>,
    names: AtomicU64,
}

/// A started (or external) server and its URL.
struct Endpoint {
    url: String,
    server: Server,
}

/// What runs a server of this binary.
#[derive(Clone)]
enum Server {
    /// Someone else's server.
    External,
    /// A local process the harness started.
    Local(Arc<Mutex<LocalServer>>),
    /// A container the harness started.
    Container(Arc<Mutex<ContainerServer>>),
}

static SERVICES: OnceCell<Services> = OnceCell::const_new();

impl Services {
    /// The server set of this test binary, created on first call.
    pub async fn global() -> &'static Services {
        SERVICES
            .get_or_init(|| async {
                let (provider, why) = choose_provider();
                announce!("dataflow-tests harness: provider={provider} ({why})");
                Services {
                    provider,
                    postgres: OnceCell::new(),
                    redis: OnceCell::new(),
                    chroma: OnceCell::new(),
                    bolt: OnceCell::new(),
                    names: AtomicU64::new(0),
                }
            })
            .await
    }

    /// Where the servers come from.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    fn cell(&self, kind: ServiceKind) -> &OnceCell<Endpoint> {
        match kind {
            ServiceKind::Postgres => &self.postgres,
            ServiceKind::Redis => &self.redis,
            ServiceKind::Chroma => &self.chroma,
            ServiceKind::Bolt => &self.bolt,
        }
    }

    async fn endpoint(&self, kind: ServiceKind) -> &Endpoint {
        self.cell(kind)
            .get_or_init(|| async move {
                match self.provider {
                    Provider::External => {
                        let var = match kind {
                            ServiceKind::Postgres => ENV_POSTGRES,
                            ServiceKind::Redis => ENV_REDIS,
                            ServiceKind::Chroma => ENV_CHROMA,
                            ServiceKind::Bolt => ENV_NEO4J,
                        };
                        let url = std::env::var(var).expect("checked when the provider was chosen");
                        if kind == ServiceKind::Bolt {
                            announce!(
                                "dataflow-tests harness: graph server: the Bolt server at {} ({ENV_NEO4J})",
                                dataflow_core::secrets::redact_url(&url)
                            );
                        }
                        Endpoint {
                            url,
                            server: Server::External,
                        }
                    }
                    Provider::Containers => tokio::task::spawn_blocking(move || start_container(kind))
                        .await
                        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
                    Provider::LocalProcesses => tokio::task::spawn_blocking(move || start_local(kind))
                        .await
                        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
                }
            })
            .await
    }

    /// PostgreSQL's URL (database `postgres`, user `postgres`, trust authentication on loopback).
    pub async fn postgres_url(&self) -> String {
        self.endpoint(ServiceKind::Postgres).await.url.clone()
    }

    /// Redis's URL.
    pub async fn redis_url(&self) -> String {
        self.endpoint(ServiceKind::Redis).await.url.clone()
    }

    /// Chroma's base URL.
    pub async fn chroma_url(&self) -> String {
        self.endpoint(ServiceKind::Chroma).await.url.clone()
    }

    /// The Bolt graph server.
    pub async fn bolt(&self) -> BoltEndpoint {
        let url = self.endpoint(ServiceKind::Bolt).await.url.clone();
        match self.provider {
            Provider::External => BoltEndpoint {
                uri: url,
                user: std::env::var("DATAFLOW_TEST_NEO4J_USER").unwrap_or_else(|_| "neo4j".into()),
                password: std::env::var("DATAFLOW_TEST_NEO4J_PASSWORD").unwrap_or_default(),
                database: std::env::var("DATAFLOW_TEST_NEO4J_DATABASE").unwrap_or_else(|_| "neo4j".into()),
            },
            Provider::Containers | Provider::LocalProcesses => BoltEndpoint {
                uri: url,
                user: ARCADEDB_USER.into(),
                password: ARCADE_PASSWORD.into(),
                database: ARCADEDB_DATABASE.into(),
            },
        }
    }

    /// Runs a server command of the harness's ArcadeDB, process or container (`create user {...}`, `drop user NAME`) as
    /// root over its HTTP API, and returns its answer; panics when the command fails.
    pub async fn arcadedb_command(&self, command: &str) -> String {
        let http_port = match self.started(ServiceKind::Bolt).await {
            Server::Local(server) => server
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recipe
                .arcadedb
                .as_ref()
                .map(|a| a.http_port),
            Server::Container(server) => server.lock().unwrap_or_else(|e| e.into_inner()).http_port,
            Server::External => None,
        }
        .expect("ArcadeDB's HTTP port is recorded");
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{http_port}/api/v1/server"))
            .basic_auth(ARCADEDB_USER, Some(ARCADE_PASSWORD))
            .json(&serde_json::json!({ "command": command }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("sending ArcadeDB the command {command:?}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "ArcadeDB refused the command {command:?}: {status} {text}");
        text
    }

    /// The process id of the local server of `kind`, for a caller that watches its CPU or
    /// memory in `/proc`: the server's own process (PostgreSQL's postmaster, `redis-server`,
    /// the `chroma run` process, ArcadeDB's `java`), not the watchdog shell that runs it.
    /// PostgreSQL's backends and any other helper processes are its descendants.
    ///
    /// In a container, the container's first process as the host sees it (each image execs
    /// its server).
    ///
    /// `None` with the external provider (the servers run elsewhere), for a server this
    /// binary has not started yet (servers start on first use, and this does not start one),
    /// and for a server that is stopped.
    pub fn server_pid(&self, kind: ServiceKind) -> Option<u32> {
        match &self.cell(kind).get()?.server {
            Server::External => None,
            Server::Local(server) => {
                // The watchdog records the pid of what it started; the recipe's command line
                // execs the server (`setpriv` too), so that pid is the server's.
                let pid = server.lock().unwrap_or_else(|e| e.into_inner()).recipe.pid()?;
                recipe::process_alive(pid).then_some(pid)
            }
            Server::Container(server) => server.lock().unwrap_or_else(|e| e.into_inner()).pid(),
        }
    }

    /// Whether the harness can stop and start this binary's servers (it started them).
    pub fn can_restart(&self) -> bool {
        self.provider != Provider::External
    }

    /// Stops a running server; its port and data stay. It starts again, same port and data,
    /// with [`Stopped::start`], or when the returned guard is dropped, so a test that fails
    /// midway leaves the server running for the tests after it.
    pub async fn stop(&self, kind: ServiceKind) -> Stopped {
        let server = self.started(kind).await;
        let stopping = server.clone();
        tokio::task::spawn_blocking(move || match stopping {
            Server::Local(s) => s.lock().unwrap_or_else(|e| e.into_inner()).stop(),
            Server::Container(s) => s.lock().unwrap_or_else(|e| e.into_inner()).stop(),
            Server::External => unreachable!("started() returns servers the harness runs"),
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        Stopped { server: Some(server) }
    }

    /// Interrupts a server's container without stopping it ([`Interruption`]); it serves
    /// again with [`Interrupted::end`], or when the returned guard is dropped. Containers
    /// only: panics with another provider.
    pub async fn interrupt(&self, kind: ServiceKind, how: Interruption) -> Interrupted {
        let server = self.container(kind).await;
        let interrupting = server.clone();
        tokio::task::spawn_blocking(move || interrupting.lock().unwrap_or_else(|e| e.into_inner()).interrupt(how))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        Interrupted { server: Some(server), how }
    }

    /// The server of `kind` as the harness runs it (started now if need be); panics with the
    /// external provider, whose servers the harness cannot stop or start.
    async fn started(&self, kind: ServiceKind) -> Server {
        assert!(self.can_restart(), "the {} provider cannot stop or start servers", self.provider);
        self.endpoint(kind).await.server.clone()
    }

    /// The container of `kind`; panics unless the provider is containers.
    async fn container(&self, kind: ServiceKind) -> Arc<Mutex<ContainerServer>> {
        match self.started(kind).await {
            Server::Container(server) => server,
            _ => panic!(
                "pausing a server or cutting it off the network needs the containers provider, not {}",
                self.provider
            ),
        }
    }

    /// Creates a fresh PostgreSQL schema named after `hint` and returns its name.
    pub async fn fresh_pg_schema(&self, hint: &str) -> String {
        // A connection of its own: each #[tokio::test] has its own runtime, and a pool made in
        // one runtime dies with it.
        let url = self.postgres_url().await;
        let admin = Database::connect(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e}"));
        let schema = self.unique_name(hint);
        admin
            .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
            .await
            .unwrap_or_else(|e| panic!("creating schema {schema}: {e}"));
        let _ = admin.close().await;
        schema
    }

    /// A name unique in this test run: lowercase `[a-z0-9_]`, at most 63 bytes.
    pub fn unique_name(&self, hint: &str) -> String {
        let clean: String = hint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(40)
            .collect();
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        format!("t_{clean}_{}_{n}", std::process::id())
    }
}

/// A server stopped by [`Services::stop`].
#[must_use = "the server starts again as soon as this guard is dropped"]
pub struct Stopped {
    server: Option<Server>,
}

impl Server {
    /// Starts a stopped server again, same ports and data, and waits until it is healthy.
    fn start_again(&self) {
        match self {
            Server::Local(s) => s.lock().unwrap_or_else(|e| e.into_inner()).start(),
            Server::Container(s) => s.lock().unwrap_or_else(|e| e.into_inner()).restart(),
            Server::External => {}
        }
    }
}

impl Stopped {
    /// Starts the server again on the same port with the same data, and waits until healthy.
    pub async fn start(mut self) {
        let server = self.server.take().expect("started once");
        tokio::task::spawn_blocking(move || server.start_again())
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            // Usually reached while a failed test unwinds: start it on a plain thread, and
            // let a failure to start show in the next test rather than abort this one.
            let _ = std::thread::spawn(move || server.start_again()).join();
        }
    }
}

/// A server interrupted by [`Services::interrupt`].
#[must_use = "the server serves again as soon as this guard is dropped"]
pub struct Interrupted {
    server: Option<Arc<Mutex<ContainerServer>>>,
    how: Interruption,
}

impl Interrupted {
    /// Ends the interruption: the server serves again.
    pub async fn end(mut self) {
        let (server, how) = (self.server.take().expect("ended once"), self.how);
        tokio::task::spawn_blocking(move || server.lock().unwrap_or_else(|e| e.into_inner()).resume(how))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }
}

impl Drop for Interrupted {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let how = self.how;
            let _ = std::thread::spawn(move || server.lock().unwrap_or_else(|e| e.into_inner()).resume(how)).join();
        }
    }
}

/// The provider for this binary and why: see the module's comment for the order.
fn choose_provider() -> (Provider, String) {
    let all = [ENV_POSTGRES, ENV_REDIS, ENV_CHROMA, ENV_NEO4J];
    let set = all.iter().filter(|v| std::env::var(v).is_ok_and(|s| !s.is_empty())).count();
    let forced = std::env::var(PROVIDER_ENV).ok().filter(|v| !v.is_empty());
    if set == all.len() && forced.is_none() {
        return (Provider::External, "every DATAFLOW_TEST_*_URL is set".into());
    }
    let partly = if set > 0 {
        format!(
            "; only {set} of {} DATAFLOW_TEST_*_URL variables are set, so they are not used",
            all.len()
        )
    } else {
        String::new()
    };
    let use_containers = |engine: containers::Engine, why: &str| {
        let engine = containers::use_engine(engine).unwrap_or_else(|e| panic!("the containers provider cannot start: {e}"));
        let proxy = match &engine.proxy {
            Some(p) => format!(", through the API version proxy at {}", p.display()),
            None => String::new(),
        };
        let (major, minor) = engine.api_version;
        let engine_at = engine.socket.display();
        (
            Provider::Containers,
            format!("{why}: Docker engine at {engine_at} (API {major}.{minor}){proxy}{partly}"),
        )
    };
    match forced.as_deref() {
        Some("containers") => {
            let engine = containers::find_engine()
                .unwrap_or_else(|e| panic!("{PROVIDER_ENV}=containers, but the Docker engine does not answer: {e}"));
            use_containers(engine, &format!("{PROVIDER_ENV}=containers"))
        }
        Some("local") => (Provider::LocalProcesses, format!("{PROVIDER_ENV}=local{partly}")),
        Some(other) => panic!("{PROVIDER_ENV}={other:?}: expected `containers` or `local`"),
        None => match containers::find_engine() {
            Ok(engine) => use_containers(engine, "a Docker engine answers"),
            Err(e) => (Provider::LocalProcesses, format!("no Docker engine: {e}{partly}")),
        },
    }
}

/// Starts a throwaway container of `kind` on free host ports.
fn start_container(kind: ServiceKind) -> Endpoint {
    let server = ContainerServer::start(kind);
    Endpoint {
        url: server.url(),
        server: Server::Container(Arc::new(Mutex::new(server))),
    }
}

/// Starts a throwaway server of `kind` on free ports in a fresh directory, from its recipe.
fn start_local(kind: ServiceKind) -> Endpoint {
    let arcadedb = (kind == ServiceKind::Bolt).then(|| ArcadeDb {
        http_port: probe::free_port(),
        root_password: ARCADE_PASSWORD.into(),
    });
    let recipe = Recipe::new(kind, local::server_dir(kind), probe::free_port(), arcadedb);
    let url = recipe.url();
    let mut server = LocalServer::new(recipe);
    server.start();
    if kind == ServiceKind::Bolt {
        announce!(
            "dataflow-tests harness: graph server: ArcadeDB {} over Bolt, standing in for Neo4j",
            recipe::arcadedb_version().unwrap_or_else(|| "(version unknown)".into())
        );
    }
    Endpoint {
        url,
        server: Server::Local(Arc::new(Mutex::new(server))),
    }
}
