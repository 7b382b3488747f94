//! `dataflow-services start|status|stop` (run it as `scripts/services`): the four servers
//! dataflow-rs works against — PostgreSQL, Redis, Chroma and ArcadeDB's Bolt server — for a
//! user on this machine, on 127.0.0.1, with their data in one folder. The servers run from the
//! same recipes as the test harness's, detached, so they outlive this command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use dataflow_tests::ServiceKind;
use dataflow_tests::harness::detached::{self, DataFolder, Ports};
use dataflow_tests::harness::probe;
use dataflow_tests::harness::recipe::{self, ARCADEDB_DATABASE, ARCADEDB_USER, Recipe, StopOutcome};

/// How long a server may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a server may take to shut down cleanly before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// PostgreSQL, Redis, Chroma and ArcadeDB (Bolt) on 127.0.0.1 for dataflow-rs, with their data
/// in one folder.
#[derive(Parser)]
#[command(name = "scripts/services")]
struct Cli {
    /// The folder of the servers' data, logs and pid files [default: $DATAFLOW_SERVICES_DATA,
    /// or .services/data in the repository]
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts the servers that are not running, waits until each is healthy, creates the
    /// database `dataflow`, and prints the DATAFLOW_* lines to export (on stdout, so
    /// `eval "$(scripts/services start)"` works). A port given once is kept for later starts.
    Start(PortArgs),
    /// Each server: running or not, pid, port, health, directory. Exits 1 when any is not
    /// running and healthy.
    Status,
    /// Stops the servers: their clean shutdown signal, then kill after 30 s. The data stays.
    Stop,
}

#[derive(Args)]
struct PortArgs {
    /// PostgreSQL's port [default: the last one used, or 5432]
    #[arg(long, value_name = "PORT")]
    postgres_port: Option<u16>,
    /// Redis's port [default: the last one used, or 6379]
    #[arg(long, value_name = "PORT")]
    redis_port: Option<u16>,
    /// Chroma's port [default: the last one used, or 8000]
    #[arg(long, value_name = "PORT")]
    chroma_port: Option<u16>,
    /// ArcadeDB's Bolt port [default: the last one used, or 7687]
    #[arg(long, value_name = "PORT")]
    bolt_port: Option<u16>,
    /// ArcadeDB's HTTP port [default: the last one used, or 2480]
    #[arg(long, value_name = "PORT")]
    arcadedb_http_port: Option<u16>,
}

impl PortArgs {
    /// The ports asked for `kind`, filled in from the recorded or usual ones where only some
    /// were given.
    fn ports(&self, folder: &DataFolder, kind: ServiceKind) -> Option<Ports> {
        let asked = match kind {
            ServiceKind::Postgres => self.postgres_port,
            ServiceKind::Redis => self.redis_port,
            ServiceKind::Chroma => self.chroma_port,
            ServiceKind::Bolt => self.bolt_port,
        };
        let http = (kind == ServiceKind::Bolt).then_some(self.arcadedb_http_port).flatten();
        if asked.is_none() && http.is_none() {
            return None;
        }
        let known = folder.recorded_ports(kind).unwrap_or_else(|| Ports::default_for(kind));
        Some(Ports {
            port: asked.unwrap_or(known.port),
            http_port: http.or(known.http_port),
        })
    }

    fn flag(kind: ServiceKind) -> &'static str {
        match kind {
            ServiceKind::Postgres => "--postgres-port",
            ServiceKind::Redis => "--redis-port",
            ServiceKind::Chroma => "--chroma-port",
            ServiceKind::Bolt => "--bolt-port",
        }
    }
}

/// A line for people, on stderr (stdout carries only what `start` asks to export).
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("services: {}", format!($($arg)*)) };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let folder = DataFolder::new(&cli.dir.unwrap_or_else(DataFolder::default_root));
    match cli.command {
        Command::Start(ports) => start(&folder, &ports),
        Command::Status => status(&folder),
        Command::Stop => stop(&folder),
    }
}

fn start(folder: &DataFolder, asked: &PortArgs) -> ExitCode {
    if let Err(e) = folder.ensure_arcadedb_password() {
        say!("{e}");
        return ExitCode::FAILURE;
    }
    // Which servers run already, and whether the others are installed and their ports free:
    // refuse before starting anything.
    let mut to_start = Vec::new();
    let mut recipes = Vec::new();
    let mut refused = Vec::new();
    for kind in detached::ALL {
        let wanted = asked.ports(folder, kind);
        let recipe = folder.recipe(kind, wanted);
        if let Some(pid) = folder.running(&recipe) {
            let running = folder.recipe(kind, None);
            let differs = wanted.is_some_and(|w| Some(w) != folder.recorded_ports(kind));
            say!(
                "{:<8} already running on 127.0.0.1:{} (pid {pid}){}",
                kind.name(),
                running.port,
                if differs { "; stop it first to move it to other ports" } else { "" }
            );
            recipes.push(running);
            continue;
        }
        if let Err(e) = recipe.argv() {
            refused.push(e.to_string());
        }
        let mut ports = vec![(recipe.port, PortArgs::flag(kind))];
        if let Some(a) = &recipe.arcadedb {
            ports.push((a.http_port, "--arcadedb-http-port"));
        }
        for (port, flag) in ports {
            let taken_here = recipes
                .iter()
                .chain(&to_start)
                .any(|r: &Recipe| r.port == port || r.arcadedb.as_ref().is_some_and(|a| a.http_port == port));
            if taken_here || !detached::port_free(port) {
                let by = detached::listener_of(port).map(|p| format!(" by {p}")).unwrap_or_else(|| {
                    if taken_here {
                        " by another of these servers".into()
                    } else {
                        String::new()
                    }
                });
                refused.push(format!(
                    "{}: port {port} on 127.0.0.1 is already in use{by}; stop that program, or choose another port: scripts/services start {flag} PORT",
                    kind.product()
                ));
            }
        }
        to_start.push(recipe);
    }
    if refused.is_empty() {
        // First-time setup (PostgreSQL's initdb) of every server before any starts.
        refused.extend(to_start.iter().filter_map(|r| r.prepare().err()).map(|e| e.to_string()));
    }
    if !refused.is_empty() {
        for line in &refused {
            say!("{line}");
        }
        say!("nothing was started");
        return ExitCode::FAILURE;
    }

    // Start them all, then wait for each: ArcadeDB's JVM and Chroma start side by side.
    let mut failed = false;
    let mut started = Vec::new();
    for recipe in to_start {
        match folder.spawn(&recipe) {
            Ok(child) => {
                say!(
                    "{:<8} starting on 127.0.0.1:{} (pid {})",
                    recipe.kind.name(),
                    recipe.port,
                    child.id()
                );
                started.push((recipe, child, Instant::now()));
            }
            Err(e) => {
                say!("{:<8} could not start: {e}", recipe.kind.name());
                failed = true;
            }
        }
    }
    for (recipe, mut child, since) in started {
        match recipe.wait_healthy(START_TIMEOUT, || child.try_wait().is_ok_and(|s| s.is_some())) {
            Ok(_) => say!("{:<8} healthy after {:.1} s", recipe.kind.name(), since.elapsed().as_secs_f64()),
            Err(e) => {
                say!("{e}");
                if child.try_wait().is_ok_and(|s| s.is_none()) {
                    recipe.stop(child.id(), STOP_GRACE);
                }
                failed = true;
            }
        }
        recipes.push(recipe);
    }
    if failed {
        say!("not every server started; the others are running (scripts/services status, scripts/services stop)");
        return ExitCode::FAILURE;
    }

    let find = |kind| recipes.iter().find(|r| r.kind == kind).expect("every server has a recipe");
    let postgres = find(ServiceKind::Postgres);
    match detached::create_database(postgres, detached::DATABASE) {
        Ok(true) => say!("created the PostgreSQL database {}", detached::DATABASE),
        Ok(false) => {}
        Err(e) => {
            say!("creating the PostgreSQL database {}: {e}", detached::DATABASE);
            return ExitCode::FAILURE;
        }
    }
    let bolt = find(ServiceKind::Bolt);
    let password = folder.arcadedb_password().unwrap_or_default();
    say!("data in {}; stop with scripts/services stop", folder.root().display());
    say!("the lines to export (or run: eval \"$(scripts/services start)\"):");
    for (var, value) in [
        ("DATAFLOW_DATABASE_URL", recipe::postgres_url(postgres.port, detached::DATABASE)),
        ("DATAFLOW_REDIS_URL", find(ServiceKind::Redis).url()),
        ("DATAFLOW_CHROMA_URL", find(ServiceKind::Chroma).url()),
        ("DATAFLOW_GRAPH_URL", bolt.url()),
        ("DATAFLOW_GRAPH_USER", ARCADEDB_USER.to_owned()),
        ("DATAFLOW_GRAPH_PASSWORD", password),
        ("DATAFLOW_GRAPH_DATABASE", ARCADEDB_DATABASE.to_owned()),
    ] {
        println!("export {var}={value}");
    }
    ExitCode::SUCCESS
}

fn status(folder: &DataFolder) -> ExitCode {
    let mut all_well = true;
    let mut rows = vec![[
        "server".to_owned(),
        "state".to_owned(),
        "pid".to_owned(),
        "port".to_owned(),
        "health".to_owned(),
        "directory".to_owned(),
    ]];
    for kind in detached::ALL {
        let recipe = folder.recipe(kind, None);
        let pid = folder.running(&recipe);
        let health = match pid {
            Some(_) if recipe.healthy() => "healthy",
            Some(_) => "UNHEALTHY",
            None => "-",
        };
        all_well &= health == "healthy";
        let port = match &recipe.arcadedb {
            Some(a) => format!("127.0.0.1:{} (HTTP {})", recipe.port, a.http_port),
            None => format!("127.0.0.1:{}", recipe.port),
        };
        rows.push([
            kind.name().to_owned(),
            if pid.is_some() { "running" } else { "stopped" }.to_owned(),
            pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            port,
            health.to_owned(),
            recipe.dir.display().to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    if all_well {
        ExitCode::SUCCESS
    } else {
        say!(
            "not every server is running and healthy: scripts/services start starts the stopped ones; each log is server.log in its directory"
        );
        ExitCode::FAILURE
    }
}

fn stop(folder: &DataFolder) -> ExitCode {
    for kind in detached::ALL.into_iter().rev() {
        let recipe = folder.recipe(kind, None);
        let Some(pid) = folder.running(&recipe) else {
            if recipe.pid_path().exists() {
                let _ = std::fs::remove_file(recipe.pid_path());
                say!("{:<8} was not running (removed its stale pid file)", kind.name());
            } else {
                say!("{:<8} was not running", kind.name());
            }
            continue;
        };
        let since = Instant::now();
        match recipe.stop(pid, STOP_GRACE) {
            StopOutcome::Clean => say!("{:<8} stopped (pid {pid}) in {:.1} s", kind.name(), since.elapsed().as_secs_f64()),
            StopOutcome::Killed => say!(
                "{:<8} killed (pid {pid}): still running {STOP_GRACE:?} after its shutdown signal",
                kind.name()
            ),
        }
        if probe::tcp_open(recipe.port) {
            say!(
                "{:<8} port {} is still open: {}",
                kind.name(),
                recipe.port,
                listener_or_unknown(recipe.port)
            );
        }
    }
    ExitCode::SUCCESS
}

fn listener_or_unknown(port: u16) -> String {
    detached::listener_of(port).unwrap_or_else(|| "held by an unknown program".into())
}
