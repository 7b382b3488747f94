//! dataflow-workflows: the shipped declarative workflows (`workflows/*.yaml`), the nodes they
//! add ([`nodes`]), the registry that holds everything a workflow may name, and what the
//! `dataflow` command is made of: its settings ([`Settings`]), the runner of its workflows
//! ([`Runner`]), what it prints ([`render`]) and its demo ([`demo`]).

#![warn(missing_docs)]

pub mod demo;
mod error;
pub mod health;
pub mod import;
pub mod nodes;
mod progress;
pub mod records;
pub mod render;
pub mod service;
mod settings;

use std::path::{Path, PathBuf};

use dataflow_runtime::Registry;
use serde_json::{Value, json};

pub use error::Error;
pub use progress::{Runner, TaskProgress};
pub use settings::{BacklogLimits, DEFAULT_HEALTH_MAX_PENDING, DEFAULT_HEALTH_MAX_PENDING_AGE_SECS, DEFAULT_HOME, Settings, SettingsError};

pub use dataflow_models;

/// The reference workflows shipped in this crate's folder.
pub const REFERENCE_WORKFLOWS: [&str; 4] = ["import_catalog", "classify_product", "recommend_for_project", "compliance_check"];

/// The folder holding the shipped workflow files and `data/`.
pub fn workflows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The file of a shipped workflow, e.g. `classify_product` → `workflows/classify_product.yaml`.
pub fn workflow_file(name: &str) -> PathBuf {
    workflows_dir().join(format!("{name}.yaml"))
}

/// The shipped sample data folder (`workflows/data`).
pub fn data_dir() -> PathBuf {
    workflows_dir().join("data")
}

/// Everything a workflow may name: the generic nodes, the 117 model nodes and this crate's.
pub fn registry() -> Registry {
    let mut registry = dataflow_models::registry();
    nodes::register(&mut registry);
    import::register(&mut registry);
    registry
}

/// [`registry`] with `ImportRecords` confined to the folder `import_root` (see
/// [`import::register_confined`]): what a service, whose callers are not on its machine, runs.
pub fn confined_registry(import_root: &Path) -> std::io::Result<Registry> {
    let mut registry = dataflow_models::registry();
    nodes::register(&mut registry);
    import::register_confined(&mut registry, import_root)?;
    Ok(registry)
}

/// Every node type of `registry` as JSON, in the registry's order: its type, model, kind,
/// stores, summary, and input and output schemas (what `dataflow nodes --json` prints and
/// `GET /v1/nodes` answers).
pub fn describe_nodes(registry: &Registry) -> Vec<Value> {
    registry
        .names()
        .filter_map(|name| {
            let info = registry.info(name)?;
            let (input, output) = registry.schemas(name).unwrap_or_default();
            Some(json!({"type": name, "model": info.model, "kind": info.kind, "stores": info.stores, "summary": info.summary, "input": input, "output": output}))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_workflow_validates() {
        let registry = registry();
        for name in REFERENCE_WORKFLOWS {
            if let Err(e) = dataflow_runtime::yaml::load_file(workflow_file(name), &registry) {
                panic!("{name}:\n{e}");
            }
        }
    }
}
