//! dataflow-workflows: the shipped declarative workflows (`workflows/*.yaml`), the nodes they
//! add ([`nodes`]), the settings of the `dataflow` command ([`Settings`]) and the registry that
//! holds everything a workflow may name.

#![warn(missing_docs)]

pub mod demo;
pub mod nodes;
pub mod progress;

use std::path::{Path, PathBuf};

use dataflow_core::{Config, GraphConfig, Stores};
use dataflow_runtime::Registry;
use serde::Deserialize;

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
    registry
}

/// The `dataflow` command's settings: a `dataflow.toml` file, overridden by `DATAFLOW_*`
/// environment variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// PostgreSQL URL (`DATAFLOW_DATABASE_URL`).
    pub database_url: Option<String>,
    /// PostgreSQL schema (`DATAFLOW_DATABASE_SCHEMA`).
    pub database_schema: Option<String>,
    /// Redis URL (`DATAFLOW_REDIS_URL`).
    pub redis_url: Option<String>,
    /// Chroma URL (`DATAFLOW_CHROMA_URL`).
    pub chroma_url: Option<String>,
    /// Bolt URL, `bolt://` or `neo4j://` (`DATAFLOW_GRAPH_URL`).
    pub graph_url: Option<String>,
    /// Graph user (`DATAFLOW_GRAPH_USER`, default `neo4j`).
    pub graph_user: Option<String>,
    /// Graph password (`DATAFLOW_GRAPH_PASSWORD`).
    pub graph_password: Option<String>,
    /// Graph database name (`DATAFLOW_GRAPH_DATABASE`).
    pub graph_database: Option<String>,
    /// Label prefix in the graph (`DATAFLOW_GRAPH_NAMESPACE`).
    pub graph_namespace: Option<String>,
    /// Key prefix in Redis (`DATAFLOW_CACHE_PREFIX`).
    pub cache_prefix: Option<String>,
    /// Collection prefix in Chroma (`DATAFLOW_VECTOR_PREFIX`).
    pub vector_prefix: Option<String>,
    /// Tenant runs act for (`DATAFLOW_TENANT`).
    pub tenant: Option<String>,
    /// Directory of the embedded stores' SQLite file (`DATAFLOW_HOME`, default `./.dataflow`).
    pub home: Option<String>,
    /// When writes apply their vector and graph projections: `inline` (default) or
    /// `background` (`DATAFLOW_PROJECTIONS`; see [`dataflow_core::ProjectionMode`]).
    pub projections: Option<String>,
}

/// Where the embedded stores live when neither `DATAFLOW_HOME` nor `home` says otherwise.
pub const DEFAULT_HOME: &str = ".dataflow";

impl Settings {
    /// Reads `file` (when given, it must exist; else `./dataflow.toml` when present), then
    /// applies the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, String> {
        let mut settings = match file {
            Some(path) => Self::read(path)?,
            None if Path::new("dataflow.toml").exists() => Self::read(Path::new("dataflow.toml"))?,
            None => Settings::default(),
        };
        settings.apply_env(|key| std::env::var(key).ok());
        Ok(settings)
    }

    fn read(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Overrides settings from `DATAFLOW_*` variables read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        let fields: [(&str, &mut Option<String>); 14] = [
            ("DATAFLOW_DATABASE_URL", &mut self.database_url),
            ("DATAFLOW_DATABASE_SCHEMA", &mut self.database_schema),
            ("DATAFLOW_REDIS_URL", &mut self.redis_url),
            ("DATAFLOW_CHROMA_URL", &mut self.chroma_url),
            ("DATAFLOW_GRAPH_URL", &mut self.graph_url),
            ("DATAFLOW_GRAPH_USER", &mut self.graph_user),
            ("DATAFLOW_GRAPH_PASSWORD", &mut self.graph_password),
            ("DATAFLOW_GRAPH_DATABASE", &mut self.graph_database),
            ("DATAFLOW_GRAPH_NAMESPACE", &mut self.graph_namespace),
            ("DATAFLOW_CACHE_PREFIX", &mut self.cache_prefix),
            ("DATAFLOW_VECTOR_PREFIX", &mut self.vector_prefix),
            ("DATAFLOW_TENANT", &mut self.tenant),
            ("DATAFLOW_HOME", &mut self.home),
            ("DATAFLOW_PROJECTIONS", &mut self.projections),
        ];
        for (key, slot) in fields {
            if let Some(value) = var(key).filter(|v| !v.is_empty()) {
                *slot = Some(value);
            }
        }
    }

    /// The directory of the embedded stores.
    pub fn home(&self) -> PathBuf {
        PathBuf::from(self.home.as_deref().unwrap_or(DEFAULT_HOME))
    }

    /// The store configuration these settings describe, store by store: each store without a
    /// server URL is the embedded one. The relational, vector and graph stores share the
    /// SQLite file in [`Settings::home`] (beside PostgreSQL, the vector and graph stores keep
    /// it to themselves); the cache is in-process.
    pub fn config(&self) -> Result<Config, String> {
        let embedded = Config::embedded(self.home());
        let mut config = match &self.database_url {
            Some(url) => Config {
                database_url: url.clone(),
                ..embedded
            },
            None => embedded,
        };
        if let Some(schema) = &self.database_schema {
            config = config.with_schema(schema);
        }
        if let Some(redis) = &self.redis_url {
            config = config.with_redis(redis);
        }
        if let Some(prefix) = &self.cache_prefix {
            config = config.with_cache_prefix(prefix);
        }
        if let Some(chroma) = &self.chroma_url {
            config = config.with_chroma(chroma);
        }
        if let Some(prefix) = &self.vector_prefix {
            config = config.with_vector_prefix(prefix);
        }
        if let Some(url) = &self.graph_url {
            config = config.with_graph(GraphConfig {
                url: url.clone(),
                user: self.graph_user.clone().unwrap_or_else(|| "neo4j".into()),
                password: self.graph_password.clone().unwrap_or_default(),
                database: self.graph_database.clone(),
            });
        }
        if let Some(namespace) = &self.graph_namespace {
            config = config.with_graph_namespace(namespace);
        }
        if let Some(mode) = &self.projections {
            config = config.with_projections(mode.parse()?);
        }
        Ok(config)
    }

    /// Connects the stores and creates what is missing (tables, outbox, indexes).
    pub async fn stores(&self) -> Result<Stores, String> {
        let config = self.config()?;
        let stores = Stores::connect(&config).await.map_err(|e| e.to_string())?;
        stores.migrate(&dataflow_models::all_models()).await.map_err(|e| e.to_string())?;
        Ok(stores)
    }
}

#[cfg(test)]
mod tests {
    use dataflow_core::ProjectionMode;

    use super::*;

    #[test]
    fn the_environment_overrides_the_file() {
        let mut s: Settings = toml::from_str("database_url = 'postgres://file'\ntenant = 'a'\n").unwrap();
        s.apply_env(|k| (k == "DATAFLOW_DATABASE_URL").then(|| "postgres://env".to_string()));
        assert_eq!(s.database_url.as_deref(), Some("postgres://env"));
        assert_eq!(s.tenant.as_deref(), Some("a"));
        assert!(toml::from_str::<Settings>("databse_url = 'x'").is_err(), "unknown keys are refused");
        let embedded = Settings::default().config().unwrap();
        assert_eq!(embedded.database_url, "sqlite://.dataflow/dataflow.db");
        assert!(embedded.embedded_cache);
        let mut mixed = Settings::default();
        mixed.apply_env(|k| match k {
            "DATAFLOW_DATABASE_URL" => Some("postgres://db/x".into()),
            "DATAFLOW_REDIS_URL" => Some("redis://cache".into()),
            "DATAFLOW_HOME" => Some("/var/lib/df".into()),
            _ => None,
        });
        assert!(embedded.embedded_vector && embedded.embedded_graph);
        let mixed = mixed.config().unwrap();
        assert_eq!(mixed.redis_url.as_deref(), Some("redis://cache"));
        assert!(!mixed.embedded_cache);
        assert!(mixed.embedded_vector && mixed.embedded_graph);
        assert_eq!(mixed.embedded_file.as_deref(), Some(Path::new("/var/lib/df/dataflow.db")));
    }

    #[test]
    fn the_projection_mode_is_a_setting_and_a_wrong_one_is_named() {
        assert_eq!(Settings::default().config().unwrap().projections, ProjectionMode::Inline);
        let mut s: Settings = toml::from_str("projections = 'inline'\n").unwrap();
        s.apply_env(|k| (k == "DATAFLOW_PROJECTIONS").then(|| "background".to_string()));
        assert_eq!(s.config().unwrap().projections, ProjectionMode::Background);
        s.projections = Some("later".into());
        let err = s.config().unwrap_err();
        assert!(
            err.contains("projections") && err.contains("'inline' or 'background'") && err.contains("\"later\""),
            "{err}"
        );
    }

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
