//! The error of this crate's library: what stopped the command, the demo or a run, naming the
//! file, setting, store or workflow it concerns.

use std::path::PathBuf;

use dataflow_runtime::RunStatus;

use crate::settings::SettingsError;

/// What went wrong in the settings, the stores, a workflow file, a run or the demo.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The settings were refused (which file or setting, and why).
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A store could not be connected or migrated, or a node refused its input.
    #[error(transparent)]
    Store(#[from] dataflow_core::Error),
    /// A workflow file was refused: every problem with its line and column.
    #[error(transparent)]
    Workflow(#[from] dataflow_runtime::yaml::Diagnostics),
    /// A run that had to succeed did not.
    #[error("{workflow} did not succeed ({status:?}): {detail}")]
    RunFailed {
        /// The workflow's name.
        workflow: String,
        /// How the run ended.
        status: RunStatus,
        /// The failed nodes with their errors, or the run's error.
        detail: String,
    },
    /// A run succeeded but an output it must have is missing.
    #[error("{workflow} returned no {output}")]
    MissingOutput {
        /// The workflow's name.
        workflow: &'static str,
        /// The output that is missing.
        output: &'static str,
    },
    /// A shipped data file could not be read or decoded.
    #[error("{}: {message}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A record that a store returned is not of the expected model.
    #[error("reading {what}: {source}")]
    Decode {
        /// What was read.
        what: &'static str,
        /// Why it could not be decoded.
        source: serde_json::Error,
    },
    /// The output could not be written.
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
}

impl Error {
    /// An unreadable data file.
    pub(crate) fn data(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Error {
        Error::Data {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
