//! `dataflow demo`: the shipped workflows on the sample data, start to finish, with nothing
//! to install: import the catalogue, classify new products, recommend products for a
//! project and check a product's compliance, printing each result as a table.
//!
//! A second run reuses what the first left behind: the catalogue is not imported again, and
//! products and recommendations from an earlier run are shown, not made again.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use dataflow_core::nodes::graph::GraphInput;
use dataflow_core::nodes::list::ListInput;
use dataflow_core::nodes::read::ReadInput;
use dataflow_core::store::graph::Direction;
use dataflow_core::{Context, Model, Node, Stores};
use dataflow_models::{
    Classification, ClassificationGraphNode, ClassificationListNode, Customer, CustomerCreateNode, CustomerListNode, EtimClass, Product,
    ProductListNode, ProductReadNode, Project, ProjectCreateNode, ProjectListNode, Recommendation, RecommendationListNode,
    UnspscCodeReadNode,
};
use dataflow_runtime::{RunReport, RunStatus, Workflow};
use serde_json::{Value, json};

use crate::{Error, Runner, Settings, data_dir, render, workflow_file};

/// How many of the shipped new products the demo classifies.
pub const PRODUCTS_TO_CLASSIFY: usize = 3;
/// How many recommendations the demo asks for.
pub const RECOMMENDATIONS: usize = 5;

/// Runs the demo with `settings`' stores and `runner`'s runtime, writing what it shows to `out`
/// (progress bars go to stderr).
pub async fn run(runner: &Runner, settings: &Settings, out: &mut dyn Write) -> Result<(), Error> {
    let started = Instant::now();
    let stores = settings.stores().await?;
    let ctx = Context::new(stores.clone());
    let mut show = Shown { out, runner };
    show.line("dataflow demo: the shipped workflows on the sample catalogue")?;
    show.stores(&stores, settings)?;

    show.heading("1. import_catalog: workflows/data/catalog.jsonl")?;
    import(&ctx, &mut show).await?;

    show.heading(&format!(
        "2. classify_product: {PRODUCTS_TO_CLASSIFY} new products, by vote of their most similar classified products"
    ))?;
    let classified = classify(&ctx, &mut show).await?;

    show.heading("3. recommend_for_project: products for the sample project")?;
    recommend(&ctx, &mut show).await?;

    if let Some(&(product_id, ref sku)) = classified.first() {
        show.heading(&format!("4. compliance_check: {sku} against its category's rules"))?;
        compliance(&ctx, product_id, &mut show).await?;
    }

    show.heading("Where things are")?;
    show.footer(&stores, settings, started)?;
    Ok(())
}

/// The demo's output, a line at a time, and the runner of its workflows.
struct Shown<'a> {
    out: &'a mut dyn Write,
    runner: &'a Runner,
}

impl Shown<'_> {
    fn line(&mut self, text: &str) -> Result<(), Error> {
        writeln!(self.out, "{text}").map_err(Error::Output)
    }

    fn heading(&mut self, text: &str) -> Result<(), Error> {
        self.line("")?;
        self.line(text)?;
        self.line(&"-".repeat(text.chars().count()))
    }

    /// Rows under a header, each column as wide as its widest cell.
    fn table(&mut self, header: &[&str], rows: &[Vec<String>]) -> Result<(), Error> {
        self.out.write_all(render::table(header, rows).as_bytes()).map_err(Error::Output)
    }

    /// Loads a shipped workflow.
    fn load(&self, name: &str) -> Result<Workflow, Error> {
        self.runner.load(workflow_file(name))
    }

    /// Runs `workflow`, which must succeed, with its progress on stderr.
    async fn run(&self, workflow: &Workflow, ctx: &Context, inputs: Value) -> Result<RunReport, Error> {
        succeeded(self.runner.run(workflow, ctx, inputs).await)
    }

    fn stores(&mut self, stores: &Stores, settings: &Settings) -> Result<(), Error> {
        let b = stores.backends();
        let home = settings.home().join(dataflow_core::config::EMBEDDED_FILE_NAME);
        let place = |backend: &str| match backend {
            "sqlite" | "embedded" => format!("in {}", home.display()),
            "memory" => "in this process".to_owned(),
            _ => "server".to_owned(),
        };
        let mut rows: Vec<Vec<String>> = [
            ("relational", Some(b.relational)),
            ("graph", b.graph),
            ("vector", b.vector),
            ("cache", b.cache),
        ]
        .into_iter()
        .map(|(store, backend)| {
            let backend = backend.unwrap_or("none");
            vec![store.to_owned(), backend.to_owned(), place(backend)]
        })
        .collect();
        // Which embedder made the vectors the votes and rankings below stand on.
        let embedder = stores.handles().embedder();
        rows.push(vec![
            "embedder".to_owned(),
            embedder.name().to_owned(),
            format!("{} dimensions", embedder.dimension()),
        ]);
        self.table(&["store", "backend", "where"], &rows)
    }

    fn footer(&mut self, stores: &Stores, settings: &Settings, started: Instant) -> Result<(), Error> {
        let b = stores.backends();
        let embedded = [Some(b.relational), b.graph, b.vector]
            .into_iter()
            .flatten()
            .any(|s| s == "sqlite" || s == "embedded");
        if embedded {
            let file = settings.home().join(dataflow_core::config::EMBEDDED_FILE_NAME);
            self.line(&format!(
                "The data is in {} (one SQLite file); run the demo again to reuse it, or delete {} to start over.",
                file.display(),
                settings.home().display()
            ))?;
        }
        if embedded {
            // What `scripts/services start` prints: the graph server it starts is ArcadeDB,
            // whose Bolt plugin listens on 7687 and whose user is `root` (Neo4j's `neo4j` is
            // refused), with a password generated at its first start.
            self.line("The same against servers: scripts/services start installs and starts PostgreSQL, Redis, Chroma and ArcadeDB")?;
            self.line("on this machine and prints the lines to paste, with the password it generated at its first start:")?;
            self.line(
                "  export DATAFLOW_DATABASE_URL=postgres://postgres@127.0.0.1:5432/dataflow DATAFLOW_REDIS_URL=redis://127.0.0.1:6379/",
            )?;
            self.line("  export DATAFLOW_CHROMA_URL=http://127.0.0.1:8000 DATAFLOW_GRAPH_URL=bolt://127.0.0.1:7687")?;
            self.line("  export DATAFLOW_GRAPH_USER=root DATAFLOW_GRAPH_PASSWORD=... DATAFLOW_GRAPH_DATABASE=dataflow")?;
            self.line("then run the demo again: cargo run --release -p dataflow-workflows -- demo")?;
        }
        self.line(
            "Run one workflow yourself: cargo run --release -p dataflow-workflows -- run compliance_check --input '{\"product_id\": 2}'",
        )?;
        self.line(&format!("Demo finished in {:.1} s.", started.elapsed().as_secs_f64()))
    }
}

/// A run that must succeed: its error otherwise, naming the workflow.
fn succeeded(report: RunReport) -> Result<RunReport, Error> {
    if report.status == RunStatus::Succeeded {
        return Ok(report);
    }
    let failed: Vec<String> = report
        .nodes
        .iter()
        .filter_map(|n| n.error.as_ref().map(|e| format!("{}: {e}", n.name)))
        .collect();
    Err(Error::RunFailed {
        detail: if failed.is_empty() {
            report.error.clone().unwrap_or_default()
        } else {
            failed.join("; ")
        },
        workflow: report.workflow,
        status: report.status,
    })
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The JSON document in `file`.
fn read_json(file: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::data(file, e))?;
    serde_json::from_str(&text).map_err(|e| Error::data(file, e))
}

/// At most `n` characters of `s`, with `…` when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(n - 1).collect();
        cut.push('…');
        cut
    }
}

/// How many rows a model's table holds.
async fn count<N, M>(ctx: &Context, node: N) -> Result<u64, Error>
where
    M: Model,
    N: Node<Input = ListInput, Output = dataflow_core::nodes::list::ListOutput<M>>,
{
    let listed = node
        .run(
            ctx,
            ListInput {
                limit: Some(1),
                with_total: true,
                ..Default::default()
            },
        )
        .await?;
    Ok(listed.total.unwrap_or(0))
}

async fn import(ctx: &Context, show: &mut Shown<'_>) -> Result<(), Error> {
    let products = count(ctx, ProductListNode).await?;
    if products > 0 {
        return show.line(&format!(
            "already imported: {products} products in the store (the catalogue's, and those classified by earlier runs); \
             the catalogue is not imported twice"
        ));
    }
    let started = Instant::now();
    let path = data_dir().join("catalog.jsonl");
    let report = show.run(&show.load("import_catalog")?, ctx, json!({"path": path})).await?;
    let o = &report.outputs;
    let per_model: Vec<String> = o
        .get("models")
        .and_then(Value::as_object)
        .map(|models| {
            models
                .iter()
                .filter_map(|(model, counts)| {
                    // The table's name reads as the plural: "300 products".
                    let table = dataflow_models::all_models().into_iter().find(|m| m.name == model)?.table;
                    Some(format!("{} {table}", counts.get("inserted")?.as_u64()?))
                })
                .collect()
        })
        .unwrap_or_default();
    show.line(&format!(
        "imported {} records: {} in {:.1} s (rows, graph nodes and edges, vectors)",
        o.get("records_read").map(text).unwrap_or_default(),
        per_model.join(", "),
        started.elapsed().as_secs_f64()
    ))
}

/// Classifies the first new products; returns `(product id, SKU)` of each.
async fn classify(ctx: &Context, show: &mut Shown<'_>) -> Result<Vec<(i64, String)>, Error> {
    let file = data_dir().join("new_products.jsonl");
    let lines = std::fs::read_to_string(&file).map_err(|e| Error::data(&file, e))?;
    let workflow = show.load("classify_product")?;
    let mut rows = Vec::new();
    let mut classified = Vec::new();
    for line in lines.lines().filter(|l| !l.trim().is_empty()).take(PRODUCTS_TO_CLASSIFY) {
        let product: Value = serde_json::from_str(line).map_err(|e| Error::data(&file, e))?;
        let sku = text(&product["sku"]);
        let existing = ProductListNode
            .run(
                ctx,
                ListInput {
                    filter: Some(Product::SKU.eq(sku.clone())),
                    limit: Some(1),
                    ..Default::default()
                },
            )
            .await?
            .records;
        let (product_id, note) = match existing.first() {
            Some(found) => (found.id(), "from an earlier run".to_owned()),
            None => {
                let report = show.run(&workflow, ctx, json!({"product": product})).await?;
                let id = report.outputs["product"]["id"].as_i64().ok_or(Error::MissingOutput {
                    workflow: "classify_product",
                    output: "product id",
                })?;
                (id, format!("{} similar products voted", text(&report.outputs["voters"])))
            }
        };
        let classification = ClassificationListNode
            .run(
                ctx,
                ListInput {
                    filter: Some(Classification::PRODUCT_ID.eq(product_id)),
                    sort: vec![Classification::ID.desc()],
                    limit: Some(1),
                    ..Default::default()
                },
            )
            .await?
            .records
            .into_iter()
            .next();
        let Some(classification) = classification else {
            rows.push(vec![
                sku.clone(),
                clip(&text(&product["name"]), 34),
                "not classified".into(),
                String::new(),
                String::new(),
                note,
            ]);
            continue;
        };
        let unspsc = unspsc_label(ctx, &classification.data).await?;
        let etim = etim_label(ctx, &classification.data).await?;
        rows.push(vec![
            sku.clone(),
            clip(&text(&product["name"]), 34),
            unspsc,
            etim,
            format!("{:.2}", classification.data.confidence),
            note,
        ]);
        classified.push((product_id, sku));
    }
    show.table(&["SKU", "product", "UNSPSC", "ETIM (via the graph)", "confidence", "note"], &rows)?;
    Ok(classified)
}

async fn unspsc_label(ctx: &Context, c: &Classification) -> Result<String, Error> {
    let code = UnspscCodeReadNode
        .run(
            ctx,
            ReadInput {
                id: c.unspsc_id,
                include_deleted: false,
                required: false,
            },
        )
        .await?
        .record;
    Ok(code
        .map(|r| format!("{} {}", r.data.code, clip(&r.data.title, 28)))
        .unwrap_or_default())
}

/// The ETIM class the classification is linked to, found by following its `AS_ETIM` edge.
async fn etim_label(ctx: &Context, c: &Classification) -> Result<String, Error> {
    let reached = ClassificationGraphNode
        .run(
            ctx,
            GraphInput::Neighbors {
                id: c.id,
                relation: Some("AS_ETIM".into()),
                direction: Direction::Out,
                depth: 1,
                limit: Some(1),
                hydrate: true,
            },
        )
        .await?;
    let Some(record) = reached.neighbors.into_iter().find_map(|n| n.record) else {
        return Ok("-".into());
    };
    let class: EtimClass = serde_json::from_value(record).map_err(|source| Error::Decode {
        what: "an ETIM class",
        source,
    })?;
    Ok(format!("{} {}", class.code, clip(&class.description, 24)))
}

/// The sample project under its tenant: found by name, else created with its customer.
async fn sample_project(ctx: &Context) -> Result<(i64, String), Error> {
    let file = data_dir().join("sample_project.json");
    let sample = read_json(&file)?;
    let name = text(&sample["project"]["name"]);
    let found = ProjectListNode
        .run(
            ctx,
            ListInput {
                filter: Some(Project::NAME.eq(name.clone())),
                limit: Some(1),
                ..Default::default()
            },
        )
        .await?
        .records;
    if let Some(project) = found.first() {
        return Ok((project.id(), name));
    }
    let email = text(&sample["customer"]["email"]);
    let customers = CustomerListNode
        .run(
            ctx,
            ListInput {
                filter: Some(Customer::EMAIL.eq(email)),
                limit: Some(1),
                ..Default::default()
            },
        )
        .await?
        .records;
    let customer_id = match customers.first() {
        Some(c) => c.id(),
        None => {
            let record = serde_json::from_value(sample["customer"].clone()).map_err(|e| Error::data(&file, format!("customer: {e}")))?;
            CustomerCreateNode
                .run(ctx, dataflow_core::nodes::create::CreateInput { record })
                .await?
                .record
                .id()
        }
    };
    let mut project = sample["project"].clone();
    project["customer_id"] = json!(customer_id);
    let record = serde_json::from_value(project).map_err(|e| Error::data(&file, format!("project: {e}")))?;
    let created = ProjectCreateNode
        .run(ctx, dataflow_core::nodes::create::CreateInput { record })
        .await?;
    Ok((created.record.id(), name))
}

async fn recommend(ctx: &Context, show: &mut Shown<'_>) -> Result<(), Error> {
    let tenant = {
        let file = data_dir().join("sample_project.json");
        let sample = read_json(&file)?;
        text(&sample["tenant"])
    };
    let ctx = ctx.with_tenant(tenant.clone())?;
    let (project_id, name) = sample_project(&ctx).await?;
    show.line(&format!("project {project_id} \"{name}\" (tenant {tenant})"))?;
    let stored = |ctx: Context| async move {
        RecommendationListNode
            .run(
                &ctx,
                ListInput {
                    filter: Some(Recommendation::PROJECT_ID.eq(project_id)),
                    sort: vec![Recommendation::SCORE.desc(), Recommendation::ID.asc()],
                    limit: Some(RECOMMENDATIONS as u32),
                    ..Default::default()
                },
            )
            .await
            .map(|l| l.records)
    };
    let mut recommendations = stored(ctx.clone()).await?;
    if recommendations.is_empty() {
        let report = show
            .run(
                &show.load("recommend_for_project")?,
                &ctx,
                json!({"project_id": project_id, "limit": RECOMMENDATIONS}),
            )
            .await?;
        show.line(&format!(
            "{} candidates found by similarity and the project's category in the graph; {} left out by a blocking rule",
            report
                .nodes
                .iter()
                .find(|n| n.name == "candidates")
                .and_then(|n| n.output.as_ref())
                .and_then(|o| o["hits"].as_array())
                .map_or(0, Vec::len),
            text(&report.outputs["excluded"])
        ))?;
        recommendations = stored(ctx.clone()).await?;
    } else {
        show.line("recommendations from an earlier run:")?;
    }
    let mut rows = Vec::new();
    for (rank, r) in recommendations.iter().enumerate() {
        let product = ProductReadNode
            .run(
                &ctx,
                ReadInput {
                    id: r.data.product_id,
                    include_deleted: false,
                    required: false,
                },
            )
            .await?
            .record;
        let (sku, product_name) = product
            .map(|p: dataflow_core::Record<Product>| (p.data.sku, p.data.name))
            .unwrap_or_default();
        rows.push(vec![
            (rank + 1).to_string(),
            sku,
            clip(&product_name, 40),
            format!("{:.3}", r.data.score),
            clip(r.data.rationale.split_once(": ").map_or(&r.data.rationale[..], |(_, why)| why), 40),
        ]);
    }
    show.table(&["#", "SKU", "product", "score", "why"], &rows)
}

async fn compliance(ctx: &Context, product_id: i64, show: &mut Shown<'_>) -> Result<(), Error> {
    let report = show
        .run(&show.load("compliance_check")?, ctx, json!({"product_id": product_id}))
        .await?;
    let results = report.outputs["results"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                clip(&text(&r["rule"]), 36),
                text(&r["standard"]),
                text(&r["severity"]),
                if r["passed"] == json!(true) { "pass".into() } else { "FAIL".into() },
                clip(&text(&r["detail"]), 44),
            ]
        })
        .collect();
    if rows.is_empty() {
        show.line("no rules apply to this product's category")?;
    } else {
        show.table(&["rule", "standard", "severity", "result", "detail"], &rows)?;
    }
    let blocking = report.outputs["blocking_failures"].as_u64().unwrap_or(0);
    show.line(&format!(
        "overall: {} ({blocking} blocking failure{})",
        if report.outputs["passed"] == json!(true) {
            "passed"
        } else {
            "FAILED"
        },
        if blocking == 1 { "" } else { "s" }
    ))
}
