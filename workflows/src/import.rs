//! `ImportRecords`: a catalogue file of any size into the stores, streamed in bounded batches.
//!
//! The file is read record by record and never held whole: a first pass reports unreadable
//! lines and counts the records of each model; then one pass per dependency tier of the
//! models in the file (categories, manufacturers, suppliers... before products, products
//! before their classifications) hands each model's records to its BulkUpsert node in
//! batches of `batch_size`. Each batch commits on its own with its outbox records, so memory
//! stays flat in the file's size, a failure loses nothing already committed, and running the
//! import again converges (rows with ids, or `on` a unique field, update instead of
//! duplicating). Every rejected record is reported with its line. The node is unbounded: the
//! runtime's default node timeout does not apply to it.
//!
//! A model that references itself (a category's parent) needs its parents earlier in the
//! file than their children when they fall in different batches.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use dataflow_core::nodes::bulk_upsert::{BulkUpsertOutput, MAX_BATCH};
use dataflow_core::{FieldErrors, ModelMeta, StoreKind};
use dataflow_runtime::{DynNode, NodeEnv, NodeFailure, NodeInfo, NodeRef, Registry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::records::{self, Records};

/// Records per batch when `batch_size` is not given.
pub const DEFAULT_BATCH: usize = 1_000;
/// Rejected records listed in the output; the count covers all of them.
pub const MAX_LISTED: usize = 1_000;
/// The node's registered name.
pub const NAME: &str = "ImportRecords";

fn default_model() -> String {
    "Product".into()
}

/// Input of `ImportRecords`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportInput {
    /// The file: `.jsonl` / `.ndjson` lines `{"model": M, "record": {...}}` (or bare records
    /// of `model`), or a `.csv` of `model` with a header of its field names.
    pub path: String,
    /// The model of CSV rows and of JSONL lines without a `model` tag.
    #[serde(default = "default_model")]
    pub model: String,
    /// Records per batch, each its own transaction: 1 to 50,000 (default 1,000).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// The field that identifies an existing row, per model (`{"Product": "sku"}`): a unique
    /// field, or the primary key (the default).
    #[serde(default)]
    pub on: BTreeMap<String, String>,
}

/// What the import did with one model's records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModelCounts {
    /// Records read from the file.
    pub read: u64,
    /// Rows inserted.
    pub inserted: u64,
    /// Existing rows updated.
    pub updated: u64,
    /// Records rejected (they break a rule of the model, or name a row that is not there).
    pub rejected: u64,
}

/// A record that was not written, or a line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Rejected {
    /// 1-based line of the file (CSV: the header is line 1).
    pub line: usize,
    /// The record's model, when the line could be read.
    pub model: Option<String>,
    /// What is wrong, by field (`$` for the line as a whole).
    pub errors: FieldErrors,
}

/// Output of `ImportRecords`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ImportOutput {
    /// Records read (lines that could be read as a record of a model).
    pub records_read: u64,
    /// Rows inserted or updated.
    pub written: u64,
    /// Lines not written: unreadable, or records rejected.
    pub rejected: u64,
    /// Per model, the models of the file only.
    pub models: BTreeMap<String, ModelCounts>,
    /// The first 1,000 rejected lines, by line.
    pub rejected_lines: Vec<Rejected>,
    /// Projections left pending by some batch (see the BulkUpsert node's `pending`).
    pub pending: Vec<StoreKind>,
}

/// The `ImportRecords` node: the BulkUpsert node of every model, and its schemas.
pub struct ImportRecords {
    info: NodeInfo,
    input_schema: Value,
    output_schema: Value,
    bulk: HashMap<&'static str, NodeRef>,
    /// The folder files must be in, when confined (see [`register_confined`]).
    root: Option<PathBuf>,
}

impl ImportRecords {
    /// The node over the BulkUpsert nodes `registry` holds for the shipped models.
    pub fn new(registry: &Registry) -> Self {
        let bulk: HashMap<&'static str, NodeRef> = dataflow_models::all_models()
            .into_iter()
            .filter_map(|m| Some((m.name, registry.fixed(&format!("{}BulkUpsertNode", m.name))?)))
            .collect();
        ImportRecords {
            info: NodeInfo {
                type_name: NAME.into(),
                model: None,
                kind: None,
                stores: vec![StoreKind::Relational],
                writes: true,
                summary: "Imports a catalogue file (JSONL of {\"model\", \"record\"} lines, or CSV of one model) in batches, \
                          reference data first; reports every rejected record by line."
                    .into(),
            },
            input_schema: schemars::schema_for!(ImportInput).to_value(),
            output_schema: schemars::schema_for!(ImportOutput).to_value(),
            bulk,
            root: None,
        }
    }

    /// The file `path` names: as given, or when the node is confined, resolved against its
    /// folder (links followed) and refused outside it.
    fn file(&self, path: &str) -> Result<String, String> {
        let Some(root) = &self.root else { return Ok(path.to_owned()) };
        let outside = || {
            format!(
                "path: '{path}' is not a file in the import folder {} (`--import-dir`): a service reads only the files of that folder",
                root.display()
            )
        };
        let resolved = root.join(path).canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("path: no file '{path}' in the import folder {}", root.display()),
            _ => outside(),
        })?;
        if !resolved.starts_with(root) {
            return Err(outside());
        }
        Ok(resolved.display().to_string())
    }
}

/// Registers `ImportRecords` over the BulkUpsert nodes already in `registry`.
pub fn register(registry: &mut Registry) {
    let node = Arc::new(ImportRecords::new(registry));
    registry.register_dyn(node);
}

/// Registers `ImportRecords` confined to the folder `root` (which must exist): a path is
/// resolved against it, links followed, and a file outside it is refused. A service's callers
/// name files on the machine that executes the import, so they may name only that folder's.
pub fn register_confined(registry: &mut Registry, root: &Path) -> std::io::Result<()> {
    let mut node = ImportRecords::new(registry);
    node.root = Some(root.canonicalize()?);
    registry.register_dyn(Arc::new(node));
    Ok(())
}

#[async_trait]
impl DynNode for ImportRecords {
    fn info(&self) -> &NodeInfo {
        &self.info
    }

    fn input_schema(&self) -> &Value {
        &self.input_schema
    }

    fn output_schema(&self) -> &Value {
        &self.output_schema
    }

    fn is_unbounded(&self) -> bool {
        true
    }

    async fn run(&self, env: &NodeEnv<'_>, input: Value) -> Result<Value, NodeFailure> {
        let mut input: ImportInput = dataflow_runtime::node::decode_input(input)?;
        input.path = self.file(&input.path).map_err(NodeFailure::bad_input)?;
        let plan = Plan::new(&input).map_err(NodeFailure::bad_input)?;
        let output = Import {
            node: self,
            env,
            plan,
            out: ImportOutput::default(),
            done: 0,
            total: 0,
        }
        .run()
        .await?;
        serde_json::to_value(output).map_err(|e| NodeFailure::permanent(format!("output does not serialise: {e}")))
    }
}

/// What the input asks for, checked before the file is read.
struct Plan {
    path: String,
    model: &'static ModelMeta,
    batch: usize,
    on: HashMap<&'static str, String>,
}

impl Plan {
    fn new(input: &ImportInput) -> Result<Plan, String> {
        let model = records::model_meta(&input.model).map_err(|e| format!("model: {e}"))?;
        let batch = input.batch_size.unwrap_or(DEFAULT_BATCH);
        if !(1..=MAX_BATCH).contains(&batch) {
            return Err(format!("batch_size: must be between 1 and {MAX_BATCH}, got {batch}"));
        }
        let mut on = HashMap::new();
        for (name, field) in &input.on {
            let meta = records::model_meta(name).map_err(|e| format!("on: {e}"))?;
            match meta.field(field) {
                Some(f) if f.unique || f.primary_key => {}
                _ => {
                    let keys: Vec<&str> = std::iter::once(meta.primary_key)
                        .chain(meta.unique_fields().map(|f| f.name))
                        .collect();
                    return Err(format!(
                        "on.{name}: '{}' is not a unique field of {name}; one of: {}",
                        dataflow_core::values::printable(field),
                        keys.join(", ")
                    ));
                }
            }
            on.insert(meta.name, field.clone());
        }
        Ok(Plan {
            path: input.path.clone(),
            model,
            batch,
            on,
        })
    }

    fn records(&self) -> Result<Records, NodeFailure> {
        Records::open(Path::new(&self.path), self.model).map_err(NodeFailure::permanent)
    }
}

/// One import under way.
struct Import<'a> {
    node: &'a ImportRecords,
    env: &'a NodeEnv<'a>,
    plan: Plan,
    out: ImportOutput,
    /// Records written or rejected so far, for progress.
    done: usize,
    /// Records in the file.
    total: usize,
}

impl Import<'_> {
    async fn run(mut self) -> Result<ImportOutput, NodeFailure> {
        // Pass 1: unreadable lines, and the records of each model.
        let mut read: BTreeMap<&'static str, u64> = BTreeMap::new();
        for line in self.plan.records()? {
            let line = line.map_err(NodeFailure::permanent)?;
            match line.record {
                Ok((meta, _)) => *read.entry(meta.name).or_default() += 1,
                Err(e) => self.reject(
                    line.line,
                    None,
                    FieldErrors(vec![dataflow_core::FieldError::new("$", e.to_string())]),
                ),
            }
        }
        self.total = read.values().sum::<u64>() as usize;
        self.out.records_read = self.total as u64;
        for (name, n) in &read {
            self.out.models.entry((*name).to_owned()).or_default().read = *n;
        }
        self.progress();
        // One pass per tier of the models present, referenced models first.
        for tier in tiers(read.keys().copied()) {
            let mut batches: HashMap<&'static str, Vec<(usize, Value)>> = HashMap::new();
            for line in self.plan.records()? {
                let line = line.map_err(NodeFailure::permanent)?;
                let Ok((meta, record)) = line.record else { continue };
                if !tier.contains(&meta.name) {
                    continue;
                }
                let batch = batches.entry(meta.name).or_default();
                batch.push((line.line, record));
                if batch.len() >= self.plan.batch {
                    let full = std::mem::take(batch);
                    self.write(meta.name, full).await?;
                }
            }
            for name in tier {
                if let Some(rest) = batches.remove(name).filter(|b| !b.is_empty()) {
                    self.write(name, rest).await?;
                }
            }
        }
        self.out.rejected_lines.sort_by_key(|r| r.line);
        Ok(self.out)
    }

    /// Writes one batch of `model` through its BulkUpsert node (its own transaction).
    async fn write(&mut self, model: &'static str, batch: Vec<(usize, Value)>) -> Result<(), NodeFailure> {
        let node = self
            .node
            .bulk
            .get(model)
            .ok_or_else(|| NodeFailure::permanent(format!("no BulkUpsert node for {model} in the registry")))?;
        let lines: Vec<usize> = batch.iter().map(|(line, _)| *line).collect();
        let rows: Vec<Value> = batch.into_iter().map(|(_, record)| record).collect();
        let mut input = json!({ "rows": rows, "batch_size": lines.len() });
        if let Some(key) = self.plan.on.get(model) {
            input["conflict_key"] = json!(key);
        }
        // Each batch is a write of its own: under a run's effect scope it is recorded under
        // its model and lines, so a run executed again writes each batch once.
        let ctx = self.env.ctx.within(format_args!(
            "{model}@{}-{}",
            lines.first().copied().unwrap_or(0),
            lines.last().copied().unwrap_or(0)
        ));
        let env = NodeEnv {
            ctx: &ctx,
            runtime: self.env.runtime,
        };
        let output = node.run(&env, input).await.map_err(|e| {
            NodeFailure::permanent(format!(
                "{model} records of lines {}-{}: {e}; {} rows of this file were written before it, and running the import again continues",
                lines.first().copied().unwrap_or(0),
                lines.last().copied().unwrap_or(0),
                self.out.written
            ))
        })?;
        let output: BulkUpsertOutput = serde_json::from_value(output)
            .map_err(|e| NodeFailure::permanent(format!("a BulkUpsert output that does not read back: {e}")))?;
        let counts = self.out.models.entry(model.to_owned()).or_default();
        counts.inserted += output.inserted;
        counts.updated += output.updated;
        counts.rejected += output.errors.len() as u64;
        self.out.written += output.inserted + output.updated;
        for mut error in output.errors {
            for field_error in &mut error.errors.0 {
                field_error.message = rows_as_lines(&field_error.message, &lines);
            }
            self.reject(lines[error.index], Some(model), error.errors);
        }
        for store in output.pending {
            if !self.out.pending.contains(&store) {
                self.out.pending.push(store);
            }
        }
        self.done += lines.len();
        self.progress();
        Ok(())
    }

    fn reject(&mut self, line: usize, model: Option<&str>, errors: FieldErrors) {
        self.out.rejected += 1;
        if self.out.rejected_lines.len() < MAX_LISTED {
            self.out.rejected_lines.push(Rejected {
                line,
                model: model.map(str::to_owned),
                errors,
            });
        }
    }

    fn progress(&self) {
        self.env.runtime.progress(NAME, self.done, self.total);
    }
}

/// A BulkUpsert message that points at another row of its input (`the same sku as row 2`)
/// pointing at that row's file line instead (`the same sku as line 7`): the batch's row
/// numbers mean nothing to the file's reader.
fn rows_as_lines(message: &str, lines: &[usize]) -> String {
    if let Some((head, row)) = message.rsplit_once(" as row ")
        && head.starts_with("the same ")
        && let Some(line) = row.parse::<usize>().ok().and_then(|r| lines.get(r))
    {
        return format!("{head} as line {line}");
    }
    message.to_owned()
}

/// The models named, in tiers: a model comes after every other model it references, so a
/// tier's rows can name the rows of earlier tiers. A reference to itself does not count; a
/// cycle between models puts them in one tier.
fn tiers<'a>(present: impl Iterator<Item = &'a str>) -> Vec<Vec<&'static str>> {
    let mut tiers: BTreeMap<usize, Vec<&'static str>> = BTreeMap::new();
    for meta in present.filter_map(|name| records::model_meta(name).ok()) {
        tiers.entry(reference_depth(meta, &mut Vec::new())).or_default().push(meta.name);
    }
    tiers.into_values().collect()
}

/// How many references deep `meta` sits: 0 for a model that references no other, else one
/// more than the deepest model it references. `path` holds the models being followed, so a
/// cycle ends where it closes.
fn reference_depth(meta: &'static ModelMeta, path: &mut Vec<&'static str>) -> usize {
    if path.contains(&meta.name) {
        return 0;
    }
    path.push(meta.name);
    let depth = meta
        .relations
        .iter()
        .map(|r| (r.target_meta)())
        .filter(|target| target.name != meta.name)
        .map(|target| reference_depth(target, path) + 1)
        .max()
        .unwrap_or(0);
    path.pop();
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_of_the_batch_is_named_by_its_line() {
        assert_eq!(rows_as_lines("the same sku as row 1", &[4, 9]), "the same sku as line 9");
        assert_eq!(rows_as_lines("must be at least 0", &[4, 9]), "must be at least 0");
        assert_eq!(rows_as_lines("the same sku as row 7", &[4, 9]), "the same sku as row 7");
    }

    #[test]
    fn referenced_models_come_in_earlier_tiers() {
        let tiers = tiers(["Classification", "Product", "Category", "UnspscCode"].into_iter());
        let tier_of = |name: &str| tiers.iter().position(|t| t.contains(&name)).unwrap();
        assert!(tier_of("Category") < tier_of("Product"));
        assert!(tier_of("Product") < tier_of("Classification"));
        assert!(tier_of("UnspscCode") < tier_of("Classification"));
    }
}
