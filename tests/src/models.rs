//! The sentence model of the `minilm` embedder, for the tests and benchmarks that run the
//! workflows with it: its files are those `scripts/install-services` installs in
//! `.services/models`, or `DATAFLOW_MODEL_DIR`'s. Without them the caller fails, naming the
//! install command: a skipped embedder is not a pass.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use dataflow_core::Embedder;
use dataflow_embed::MiniLmEmbedder;

/// The folder of the model files: `DATAFLOW_MODEL_DIR`, else `.services/models`.
pub fn model_dir() -> PathBuf {
    match std::env::var("DATAFLOW_MODEL_DIR") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.services/models"),
    }
}

/// all-MiniLM-L6-v2, loaded once per process.
pub fn minilm() -> Arc<dyn Embedder> {
    static MODEL: OnceLock<Arc<dyn Embedder>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let model = MiniLmEmbedder::load(&model_dir()).unwrap_or_else(|e| panic!("{e}\n(run scripts/install-services first)"));
            Arc::new(model)
        })
        .clone()
}
