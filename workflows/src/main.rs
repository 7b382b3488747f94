//! `dataflow`: list nodes, validate, run and draw workflows, migrate the stores, check their
//! health and apply pending projections.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use dataflow_core::values::printable;
use dataflow_core::{Backlog, Context, ProjectionMode};
use dataflow_runtime::{GraphFormat, RunStatus};
use dataflow_workflows::service::{Caller, Role, Service, ServiceError, ServiceOptions, WorkerOptions};
use dataflow_workflows::{BacklogLimits, Runner, Settings, SettingsError, TaskProgress, registry, render};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "dataflow",
    version,
    about = "Typed data workflows over PostgreSQL, a Bolt graph, Chroma and Redis."
)]
struct Cli {
    /// Settings file (default: ./dataflow.toml when present); DATAFLOW_* variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every node type with its input and output schema.
    Nodes {
        /// Only this model's nodes.
        #[arg(long)]
        model: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Checks a workflow file and reports every problem with its line and column.
    Validate {
        /// The workflow file.
        file: PathBuf,
    },
    /// Runs a workflow file. Exit status: 0 when it succeeded, 1 when it failed, 2 when it
    /// succeeded but rejected some input records (an output `rejected` above 0: an import
    /// whose invalid rows are listed in the report).
    Run {
        /// The workflow file, or the name of a shipped workflow (e.g. classify_product).
        file: PathBuf,
        /// The run's inputs as JSON, or @file holding them.
        #[arg(long, default_value = "{}")]
        input: String,
        /// The tenant to act for (default: DATAFLOW_TENANT / the file's `tenant`).
        #[arg(long)]
        tenant: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Write the run's metrics (counters, latency histograms) to this file in the
        /// Prometheus text format.
        #[arg(long)]
        metrics: Option<PathBuf>,
    },
    /// The workflow's DAG as Mermaid or DOT source.
    Graph {
        /// The workflow file.
        file: PathBuf,
        /// Picture format.
        #[arg(long, value_enum, default_value = "mermaid")]
        format: Format,
    },
    /// Creates the tables, their constraints, the outbox and the graph indexes of every model.
    /// Exits 2 when stored rows break a constraint (listed; the rest is migrated).
    Migrate,
    /// Checks each configured store and its latency, and the backlog of pending projections.
    /// Exits 0 when all is well, 1 when a store is down, 3 when the backlog is beyond the
    /// `health_max_pending` or `health_max_pending_age_secs` setting (degraded).
    Health,
    /// Re-embeds the rows of models with the configured embedder (`embedder` setting) into
    /// their vector collections, from the relational store, page by page; stopped, it goes on
    /// from where it stopped at the next start. Searches of a collection being re-embedded are
    /// refused until it is done.
    Reembed {
        /// The models (default: every model with embed fields).
        models: Vec<String>,
        /// Rows embedded and written at once.
        #[arg(long, default_value_t = 256)]
        page: usize,
    },
    /// Applies pending outbox records to the projections and says what it did and what is left.
    Sync {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serves the workflows over HTTP: submit runs, watch their progress, read their reports
    /// (see the README's "Serving workflows"). On PostgreSQL the runs go to a queue that
    /// `dataflow worker`s execute; on the embedded stores this process executes them. With no
    /// API key stored yet, it creates an admin key and prints it once.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        served: Served,
        /// Runs this process executes at once on the embedded stores.
        #[arg(long, default_value_t = 4)]
        workers: usize,
    },
    /// Executes runs from the PostgreSQL queue until stopped; any number of workers on any
    /// number of machines share the queue.
    Worker {
        /// Runs executed at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// The worker's name (default: host:pid).
        #[arg(long)]
        name: Option<String>,
        /// Seconds between heartbeats; a worker silent for three is taken for dead and its
        /// runs are executed again by another.
        #[arg(long, default_value_t = 10)]
        heartbeat_secs: u64,
        /// Every worker and the server must serve the same workflows.
        #[command(flatten)]
        served: Served,
    },
    /// Serves the workflows as MCP tools over stdio, for an assistant that starts this command
    /// (`dataflow serve` serves them over HTTP at /mcp). Runs act for the `tenant` setting.
    Mcp {
        #[command(flatten)]
        served: Served,
    },
    /// Creates, lists and revokes the API keys of `dataflow serve`.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Imports the sample catalogue, classifies new products, recommends products for a
    /// project and checks a product's compliance, printing each result (embedded stores
    /// unless servers are configured; a second run reuses the data).
    Demo,
}

/// What `serve`, `worker` and `mcp` serve.
#[derive(clap::Args)]
struct Served {
    /// A folder of workflow files to serve beside the shipped ones (repeatable).
    #[arg(long = "workflows")]
    workflow_dirs: Vec<PathBuf>,
    /// The folder whose files `import_catalog` runs may import (a path is resolved against
    /// it; a file outside it is refused). Default: the shipped sample data.
    #[arg(long)]
    import_dir: Option<PathBuf>,
}

impl Served {
    fn options(self) -> ServiceOptions {
        ServiceOptions {
            workflow_dirs: self.workflow_dirs,
            import_dir: self.import_dir.unwrap_or_else(dataflow_workflows::data_dir),
            ..ServiceOptions::default()
        }
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Creates a key and prints it (shown only now; only its hash is stored).
    Create {
        /// The tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// viewer (read runs and health), operator (also submit and cancel runs) or admin
        /// (also keys and migrations).
        #[arg(long)]
        role: String,
        /// A name to recognise it by.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Lists the keys (without their secrets).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revokes a key: requests with it get 401 from now on.
    Revoke {
        /// The key's id (the 16 hex digits after `dfk_`).
        id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Mermaid,
    Dot,
}

/// Why the command failed: the library's errors, and the command's own about its arguments.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Workflows(#[from] dataflow_workflows::Error),
    #[error(transparent)]
    Store(#[from] dataflow_core::Error),
    #[error("--input @{path}: {source}")]
    InputFile { path: String, source: std::io::Error },
    #[error("--input is not JSON: {0}")]
    InputJson(serde_json::Error),
    #[error("--metrics: {0}")]
    Metrics(metrics_exporter_prometheus::BuildError),
    #[error("--metrics {}: {source}", path.display())]
    MetricsFile { path: PathBuf, source: std::io::Error },
    #[error(
        "no model '{}'{}; the models are {}",
        printable(model),
        match suggestions.as_slice() {
            [] => String::new(),
            some => format!(" (did you mean {}?)", some.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(" or ")),
        },
        models.join(", ")
    )]
    UnknownModel {
        model: String,
        suggestions: Vec<&'static str>,
        models: Vec<&'static str>,
    },
    #[error("printing JSON: {0}")]
    Json(serde_json::Error),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl From<SettingsError> for CliError {
    fn from(e: SettingsError) -> Self {
        CliError::Workflows(e.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(execute(cli)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `dataflow health`'s exit code when every store is up but the projections lag beyond the
/// backlog limits. Not 2, which is what clap exits with on a usage error.
const DEGRADED: u8 = 3;

/// A shipped workflow's name stands for its file.
fn resolve(file: &Path) -> PathBuf {
    if file.extension().is_none() && !file.exists() {
        let shipped = dataflow_workflows::workflow_file(&file.to_string_lossy());
        if shipped.exists() {
            return shipped;
        }
    }
    file.to_path_buf()
}

async fn execute(cli: Cli) -> Result<ExitCode, CliError> {
    let settings = || Settings::load(cli.config.as_deref());
    // One registry and one runtime (with its circuit breakers) for every run of the process.
    let runner = Runner::new(registry());
    match cli.command {
        Command::Nodes { model, json } => nodes(&runner, model.as_deref(), json),
        Command::Validate { file } => {
            let workflow = runner.load(resolve(&file))?;
            println!("{}: ok ({} nodes)", file.display(), workflow.node_names().count());
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { file, format } => {
            let workflow = runner.load(resolve(&file))?;
            print!(
                "{}",
                workflow.render(match format {
                    Format::Mermaid => GraphFormat::Mermaid,
                    Format::Dot => GraphFormat::Dot,
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            file,
            input,
            tenant,
            json,
            metrics,
        } => {
            let settings = settings()?;
            run(&runner, &settings, &file, &input, tenant, json, metrics.as_deref()).await
        }
        Command::Migrate => {
            let settings = settings()?;
            let (_, report) = settings.migrate().await?;
            println!("migrated {} models", dataflow_models::all_models().len());
            if report.is_clean() {
                return Ok(ExitCode::SUCCESS);
            }
            // The rest of the schema is in place; these constraints wait for their rows.
            eprintln!("{report}");
            eprintln!(
                "On PostgreSQL these constraints are in place but not validated: they refuse new rows that break them. On SQLite the table keeps its old definition. Fix the rows listed, then run `dataflow migrate` again."
            );
            Ok(ExitCode::from(2))
        }
        Command::Health => health(&settings()?).await,
        Command::Demo => {
            let mut out = std::io::stdout();
            dataflow_workflows::demo::run(&runner, &settings()?, &mut out).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { listen, served, workers } => serve(&settings()?, listen, served, workers).await,
        Command::Worker {
            concurrency,
            name,
            heartbeat_secs,
            served,
        } => {
            // A worker executes from the PostgreSQL queue only: on the embedded store it
            // refuses to start, without taking up the runs a `serve` there would execute.
            let options = ServiceOptions {
                in_process_workers: 0,
                ..served.options()
            };
            let service = Service::open(&settings()?, &options).await?;
            let mut worker = WorkerOptions {
                concurrency,
                heartbeat: std::time::Duration::from_secs(heartbeat_secs.max(1)),
                ..WorkerOptions::default()
            };
            if let Some(name) = name {
                worker.name = name;
            }
            eprintln!("worker {} executing up to {concurrency} runs at once", worker.name);
            dataflow_workflows::service::run_postgres_worker(service, worker).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { command } => keys(&settings()?, command).await,
        Command::Mcp { served } => {
            let settings = settings()?;
            let service = Service::open(&settings, &served.options()).await?;
            dataflow_workflows::service::mcp::serve_stdio(service, &service_tenant(&settings)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reembed { models, page } => {
            let stores = settings()?.stores().await?;
            let all = dataflow_models::all_models();
            let chosen: Vec<&'static dataflow_core::ModelMeta> = if models.is_empty() {
                all.iter().copied().filter(|m| m.has_embed_fields()).collect()
            } else {
                let names: Vec<&'static str> = all.iter().map(|m| m.name).collect();
                let mut chosen = Vec::new();
                for name in &models {
                    match all.iter().find(|m| m.name == name.as_str()) {
                        Some(meta) => chosen.push(*meta),
                        None => {
                            return Err(CliError::UnknownModel {
                                model: name.clone(),
                                suggestions: closest_models(name, &names),
                                models: names,
                            });
                        }
                    }
                }
                chosen
            };
            for meta in chosen {
                let mut shown = TaskProgress::start(format!("rows of {} re-embedded", meta.name));
                let report = stores.reembed(meta, page, |p| shown.update(p.done, p.total)).await?;
                shown.finish();
                println!(
                    "{}: {} rows embedded with {} into {}{}{}",
                    meta.name,
                    report.embedded,
                    report.to,
                    report.collection,
                    match &report.from {
                        Some(from) if *from != report.to => format!(" (was {from})"),
                        _ => String::new(),
                    },
                    if report.resumed {
                        ", going on from where a stopped run had come"
                    } else {
                        ""
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { json } => {
            let stores = settings()?.stores().await?;
            let report = stores.outbox().sync().await?;
            let after = stores.outbox().backlog().await?;
            if json {
                let shown = json!({
                    "applied": report.applied,
                    "failed": report.failed,
                    "dead": report.dead,
                    "backlog": backlog_json(&after),
                });
                println!("{}", serde_json::to_string_pretty(&shown).map_err(CliError::Json)?);
            } else {
                println!("{}", render::sync_summary(&report, &after));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The tenant of the service's own acts (the first admin key, MCP over stdio): the `tenant`
/// setting, or `default`.
fn service_tenant(settings: &Settings) -> String {
    settings.tenant.clone().unwrap_or_else(|| "default".into())
}

/// The caller of the command line's own admin actions.
fn local_caller(tenant: &str) -> Caller {
    Caller {
        actor: "cli".into(),
        tenant: tenant.to_owned(),
        role: Role::Admin,
        remote: "local".into(),
    }
}

/// `dataflow keys …`.
async fn keys(settings: &Settings, command: KeysCommand) -> Result<ExitCode, CliError> {
    // A command that only manages keys: it executes no run, even on the embedded store, where
    // a `serve` opening the same file executes them.
    let options = ServiceOptions {
        in_process_workers: 0,
        ..ServiceOptions::default()
    };
    let service = Service::open(settings, &options).await?;
    match command {
        KeysCommand::Create { tenant, role, name } => {
            let role: Role = role.parse().map_err(|message| ServiceError::BadRequest {
                field: Some("--role".into()),
                message,
            })?;
            let created = service.create_key(&tenant, role, &name, &local_caller(&tenant)).await?;
            eprintln!("created {role} key {} for tenant '{tenant}'; it is shown only now:", created.key.id);
            println!("{}", created.token);
        }
        KeysCommand::List { tenant } => {
            let rows: Vec<Vec<String>> = service
                .keys(tenant.as_deref())
                .await?
                .into_iter()
                .map(|k| {
                    vec![
                        k.id,
                        k.tenant,
                        k.role.to_string(),
                        k.name,
                        k.created_at,
                        k.revoked_at.unwrap_or_default(),
                    ]
                })
                .collect();
            print!("{}", render::table(&["id", "tenant", "role", "name", "created", "revoked"], &rows));
        }
        KeysCommand::Revoke { id } => {
            service.revoke_key(&id, &local_caller(""), true).await?;
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dataflow serve`.
async fn serve(settings: &Settings, listen: std::net::SocketAddr, served: Served, workers: usize) -> Result<ExitCode, CliError> {
    let options = ServiceOptions {
        in_process_workers: workers.max(1),
        ..served.options()
    };
    let service = Service::open(settings, &options).await?;
    if service.keys(None).await?.is_empty() {
        let tenant = service_tenant(settings);
        let created = service
            .create_key(&tenant, Role::Admin, "created by the first serve", &local_caller(&tenant))
            .await?;
        eprintln!("no API key was stored: created an admin key for tenant '{tenant}' (shown only now):");
        eprintln!("  {}", created.token);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| CliError::Listen { addr: listen, source })?;
    let executed_by = if service.executes_runs_itself() {
        "executed by this process (embedded stores)"
    } else {
        "queued in PostgreSQL for `dataflow worker`s"
    };
    let bound = listener.local_addr().map_err(|source| CliError::Listen { addr: listen, source })?;
    eprintln!(
        "serving {} workflows on http://{bound} (runs {executed_by})",
        service.workflows().len()
    );
    let app = dataflow_workflows::service::api::router(service).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|source| CliError::Listen { addr: listen, source })?;
    Ok(ExitCode::SUCCESS)
}

/// `dataflow run`: runs a workflow file with its progress on stderr and prints the report.
#[allow(clippy::too_many_arguments)]
async fn run(
    runner: &Runner,
    settings: &Settings,
    file: &Path,
    input: &str,
    tenant: Option<String>,
    json: bool,
    metrics: Option<&Path>,
) -> Result<ExitCode, CliError> {
    let exporter = match metrics {
        Some(_) => Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .map_err(CliError::Metrics)?,
        ),
        None => None,
    };
    let workflow = runner.load(resolve(file))?;
    let inputs = parse_input(input)?;
    let stores = settings.stores().await?;
    let mut ctx = Context::new(stores);
    if let Some(tenant) = tenant.or(settings.tenant.clone()) {
        ctx = ctx.with_tenant(tenant)?;
    }
    let report = runner.run(&workflow, &ctx, inputs).await;
    if ctx.stores().outbox().projection_mode() == ProjectionMode::Background {
        // The process ends here: apply what the background projector has not yet,
        // rather than leave it to the next `sync`.
        match ctx.stores().outbox().finish_projections().await {
            Ok(sync) if sync.remaining > 0 => eprintln!("{} outbox records left pending for `dataflow sync`", sync.remaining),
            Ok(_) => {}
            Err(e) => eprintln!("projections left pending for `dataflow sync`: {e}"),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(CliError::Json)?);
    } else {
        print!("{}", render::report(&report));
    }
    if let (Some(path), Some(exporter)) = (metrics, exporter) {
        std::fs::write(path, exporter.render()).map_err(|source| CliError::MetricsFile {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(match report.status {
        RunStatus::Succeeded if rejected_anything(&report.outputs) => {
            let rejected = &report.outputs["rejected"];
            eprintln!("done, but {rejected} input records were rejected (listed in the report)");
            ExitCode::from(EXIT_REJECTED)
        }
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Failed => ExitCode::FAILURE,
    })
}

/// Exit status of a run that succeeded but rejected some of its input records (an import
/// with invalid rows): the workflow says so with a non-zero output named `rejected`.
const EXIT_REJECTED: u8 = 2;

/// Whether a run's outputs report rejected input: an output `rejected` that is a non-zero
/// number or a non-empty list.
fn rejected_anything(outputs: &serde_json::Map<String, Value>) -> bool {
    match outputs.get("rejected") {
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        Some(Value::Array(items)) => !items.is_empty(),
        _ => false,
    }
}

fn parse_input(input: &str) -> Result<Value, CliError> {
    let text = match input.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|source| CliError::InputFile {
            path: path.to_owned(),
            source,
        })?,
        None => input.to_string(),
    };
    serde_json::from_str(&text).map_err(CliError::InputJson)
}

fn nodes(runner: &Runner, model: Option<&str>, as_json: bool) -> Result<ExitCode, CliError> {
    let registry = runner.registry();
    let listed: Vec<Value> = dataflow_workflows::describe_nodes(registry)
        .into_iter()
        .filter(|node| model.is_none_or(|m| node["model"].as_str() == Some(m)))
        .collect();
    if let Some(model) = model.filter(|_| listed.is_empty()) {
        let mut models: Vec<&'static str> = registry.names().filter_map(|n| registry.info(n)?.model).collect();
        models.sort_unstable();
        models.dedup();
        return Err(CliError::UnknownModel {
            model: model.to_owned(),
            suggestions: closest_models(model, &models),
            models,
        });
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&listed).map_err(CliError::Json)?);
    } else {
        let rows: Vec<Vec<String>> = listed
            .iter()
            .map(|n| {
                vec![
                    n["type"].as_str().unwrap_or_default().to_owned(),
                    n["summary"].as_str().unwrap_or_default().to_owned(),
                ]
            })
            .collect();
        print!("{}", render::table(&["type", "summary"], &rows));
        println!("{} node types", listed.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// The models a mistyped `wanted` may have meant: those equal to it but for case; else those
/// that begin with it, ignoring case (`prod` → `Product`); else the nearest by edit distance,
/// if it is near enough to be a typo.
fn closest_models(wanted: &str, models: &[&'static str]) -> Vec<&'static str> {
    let wanted = wanted.to_lowercase();
    let matching =
        |test: &dyn Fn(&str) -> bool| -> Vec<&'static str> { models.iter().copied().filter(|m| test(&m.to_lowercase())).collect() };
    let same = matching(&|m| m == wanted);
    if !same.is_empty() {
        return same;
    }
    if !wanted.is_empty() {
        let begun = matching(&|m| m.starts_with(&wanted));
        if !begun.is_empty() {
            return begun;
        }
    }
    models
        .iter()
        .map(|m| (strsim::damerau_levenshtein(&wanted, &m.to_lowercase()), *m))
        .filter(|(distance, m)| *distance <= 2.max(m.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, m)| vec![m])
        .unwrap_or_default()
}

/// The backlog as `dataflow sync --json` prints it (the age in seconds).
fn backlog_json(backlog: &Backlog) -> Value {
    json!({
        "pending": backlog.pending,
        "oldest_pending_age_secs": backlog.oldest_pending_age.map(|a| a.as_secs_f64()),
        "dead": backlog.dead,
    })
}

/// Why `backlog` makes the stores degraded: each limit it is beyond, with its setting.
fn backlog_breaches(backlog: &Backlog, limits: &BacklogLimits) -> Vec<String> {
    let mut breaches = Vec::new();
    if backlog.pending > limits.max_pending {
        breaches.push(format!("beyond health_max_pending = {}", limits.max_pending));
    }
    if backlog
        .oldest_pending_age
        .is_some_and(|age| backlog.pending > 0 && age > limits.max_pending_age)
    {
        breaches.push(format!(
            "the oldest beyond health_max_pending_age_secs = {}",
            limits.max_pending_age.as_secs()
        ));
    }
    breaches
}

/// `dataflow health`: a line per store as it is checked (kept as lines rather than a table so
/// each shows as soon as its store answered, before a slow one times out).
async fn health(settings: &Settings) -> Result<ExitCode, CliError> {
    let config = settings.config()?;
    let limits = settings.backlog_limits()?;
    let mut down = 0;
    let mut line = |store: &str, backend: &str, result: Result<std::time::Duration, String>| match result {
        Ok(latency) => println!("{store:10} {backend:9} up    {:.2} ms", latency.as_secs_f64() * 1e3),
        Err(e) => {
            down += 1;
            println!("{store:10} {backend:9} DOWN  {e}");
        }
    };
    let stores = match dataflow_core::Stores::connect(&config).await {
        Ok(stores) => stores,
        Err(e) => {
            // The row of the store that failed to connect, or of the configuration when a
            // setting was refused before any store was tried.
            let store = match &e {
                dataflow_core::Error::Store { store, .. } => match store {
                    dataflow_core::StoreKind::Relational => "relational",
                    dataflow_core::StoreKind::Cache => "cache",
                    dataflow_core::StoreKind::Vector => "vector",
                    dataflow_core::StoreKind::Graph => "graph",
                },
                _ => "settings",
            };
            let backend = match store {
                "relational" if config.database_url.starts_with("sqlite:") => "sqlite",
                "relational" => "postgres",
                _ => "-",
            };
            line(store, backend, Err(e.to_string()));
            return Ok(ExitCode::FAILURE);
        }
    };
    let health = dataflow_workflows::health::check(&stores).await;
    for check in &health.stores {
        match check.backend {
            Some(backend) => line(check.store, backend, check.result.clone()),
            None => println!("{:10} not configured", check.store),
        }
    }
    let relational = stores.backends().relational;
    // The projections' backlog, read from the outbox table in the relational store.
    let mut degraded = false;
    match health.backlog {
        Ok(backlog) => {
            let breaches = backlog_breaches(&backlog, &limits);
            degraded = !breaches.is_empty();
            let state = if degraded { "DEGRADED" } else { "ok" };
            let hint = if degraded {
                format!(": {}; `dataflow sync` applies what is due", breaches.join(", "))
            } else {
                String::new()
            };
            println!("{:10} {:9} {state:5} {}{hint}", "outbox", relational, render::backlog(&backlog));
        }
        Err(e) => line("outbox", relational, Err(e)),
    }
    Ok(if down > 0 {
        ExitCode::FAILURE
    } else if degraded {
        ExitCode::from(DEGRADED)
    } else {
        ExitCode::SUCCESS
    })
}
