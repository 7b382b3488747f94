//! Text embeddings: the [`Embedder`] trait and the default [`HashingEmbedder`].
//!
//! The default needs no model download and gives the same vector for the same text on every
//! machine and every run. It hashes features of the text (words, word pairs and character
//! trigrams) into a fixed number of dimensions with a signed hash, then L2-normalises.
//!
//! **Good at:** texts that share words land near each other, so a query made of a product's
//! own words finds that product first; plurals count as their singular; typos and other
//! inflections still share most character trigrams; it is fast (about a microsecond per word)
//! and fully deterministic.
//!
//! **Bad at:** meaning. Synonyms with no letters in common ("drill" / "borer"), paraphrases,
//! negation and other languages are invisible to it. Plug a model-backed [`Embedder`] in
//! through [`crate::StoresBuilder::embedder`] where meaning matters (the `dataflow-embed` crate's
//! `MiniLmEmbedder` is one).

use std::borrow::Cow;

use crate::error::Result;

/// Turns texts into vectors of a fixed dimension, for similarity search.
///
/// Implementations must be deterministic for a given configuration: the same text must give
/// the same vector in every process, since vectors written by one process are searched by
/// another.
pub trait Embedder: Send + Sync {
    /// A name that identifies the embedder and its configuration, e.g. `hashing-384`.
    fn name(&self) -> &str;

    /// Length of every vector this embedder returns.
    fn dimension(&self) -> usize;

    /// One vector per text, each of length [`Embedder::dimension`], or an
    /// [`crate::Error::Embedding`] saying why none could be made.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;

    /// Whether one call costs enough (a model's forward pass: milliseconds of CPU) that calls
    /// made at the same time are joined into one batch and run on a blocking thread, off the
    /// async workers. Cheap embedders (hashing: microseconds) are called where they are.
    fn joins_concurrent_calls(&self) -> bool {
        false
    }
}

/// Dimensions of the default embedder.
pub const DEFAULT_DIMENSION: usize = 384;

/// Common English words that carry no topic; they are left out of the word features (their
/// trigrams still count, with a low weight).
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it", "its", "of", "on", "or", "that", "the",
    "this", "to", "with",
];

const WORD_WEIGHT: f32 = 1.0;
const PAIR_WEIGHT: f32 = 0.5;
const TRIGRAM_WEIGHT: f32 = 0.25;

/// Feature hashing of words, word pairs and character trigrams; see the module documentation
/// for what it is good and bad at.
#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    dimension: usize,
    name: String,
}

impl Default for HashingEmbedder {
    fn default() -> Self {
        HashingEmbedder::new(DEFAULT_DIMENSION)
    }
}

impl HashingEmbedder {
    /// An embedder with `dimension` dimensions (at least 16).
    pub fn new(dimension: usize) -> Self {
        let dimension = dimension.max(16);
        HashingEmbedder {
            dimension,
            name: format!("hashing-{dimension}"),
        }
    }

    /// The vector of one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dimension];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        let mut previous: Option<Cow<'_, str>> = None;
        for word in &words {
            let stop = STOP_WORDS.contains(word);
            if !stop {
                let stem = stem(word);
                self.add(&mut v, b'w', stem.as_bytes(), WORD_WEIGHT);
                if let Some(prev) = &previous {
                    let pair = format!("{prev} {stem}");
                    self.add(&mut v, b'p', pair.as_bytes(), PAIR_WEIGHT);
                }
                previous = Some(stem);
            }
            let padded: Vec<char> = std::iter::once('#').chain(word.chars()).chain(std::iter::once('#')).collect();
            let weight = if stop { TRIGRAM_WEIGHT / 4.0 } else { TRIGRAM_WEIGHT };
            let mut buf = [0u8; 12];
            for window in padded.windows(3) {
                let mut len = 0;
                for c in window {
                    len += c.encode_utf8(&mut buf[len..]).len();
                }
                self.add(&mut v, b't', &buf[..len], weight);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in &mut v {
                *x /= norm;
            }
        }
        v
    }

    fn add(&self, v: &mut [f32], kind: u8, feature: &[u8], weight: f32) {
        let h = fnv1a(kind, feature);
        let index = (h % self.dimension as u64) as usize;
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        v[index] += sign * weight;
    }
}

impl Embedder for HashingEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

/// Harman's "S" stemmer for word features: plurals count as their singular ("drills" as
/// "drill", "batteries" as "battery"). Verb endings are left alone.
fn stem(word: &str) -> Cow<'_, str> {
    if !word.is_ascii() || word.len() <= 3 {
        return Cow::Borrowed(word);
    }
    if let Some(base) = word.strip_suffix("ies")
        && !(base.ends_with('e') || base.ends_with('a'))
    {
        return Cow::Owned(format!("{base}y"));
    }
    if let Some(base) = word.strip_suffix("es")
        && !(base.ends_with('a') || base.ends_with('e') || base.ends_with('o'))
    {
        return Cow::Owned(format!("{base}e"));
    }
    if let Some(base) = word.strip_suffix('s')
        && !(base.ends_with('u') || base.ends_with('s'))
    {
        return Cow::Borrowed(base);
    }
    Cow::Borrowed(word)
}

/// 64-bit FNV-1a of `kind` followed by `bytes`: stable across platforms and releases, unlike
/// the standard library's hasher.
fn fnv1a(kind: u8, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in std::iter::once(&kind).chain(bytes) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's high bits mix poorly for short inputs; a final avalanche spreads them.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Cosine distance (1 − cosine similarity) of two vectors of the same length, in `[0, 2]`.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 1.0;
    }
    1.0 - dot / (na.sqrt() * nb.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_normalised_and_of_the_declared_dimension() {
        let e = HashingEmbedder::default();
        let a = e.embed_one("Cordless hammer drill, 18 V");
        assert_eq!(a.len(), 384);
        assert_eq!(a, e.embed_one("Cordless hammer drill, 18 V"));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(e.embed_one("").iter().all(|x| *x == 0.0));
    }

    #[test]
    fn texts_that_share_words_are_nearer_than_texts_that_do_not() {
        let e = HashingEmbedder::default();
        let drill = e.embed_one("cordless hammer drill with two batteries");
        let query = e.embed_one("hammer drill");
        let gloves = e.embed_one("nitrile safety gloves, size 9");
        assert!(cosine_distance(&query, &drill) < cosine_distance(&query, &gloves));
        // An inflection still shares most trigrams.
        let drills = e.embed_one("drills");
        assert!(cosine_distance(&drills, &drill) < cosine_distance(&drills, &gloves));
    }

    #[test]
    fn plural_and_verb_endings_share_a_stem() {
        assert_eq!(stem("drills"), "drill");
        assert_eq!(stem("batteries"), "battery");
        assert_eq!(stem("tubes"), "tube");
        assert_eq!(stem("glass"), "glass");
        assert_eq!(stem("virus"), "virus");
        assert_eq!(stem("is"), "is");
    }

    #[test]
    fn the_hash_is_stable_across_releases() {
        // Vectors written by one build are searched by another: these values must never change.
        assert_eq!(fnv1a(b'w', b"drill"), 0x0b97_8f3e_2c80_2172);
    }
}
