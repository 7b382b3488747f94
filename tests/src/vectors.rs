//! Seeded vectors with structure, for the embedded vector index's tests and its bench: the
//! same numbers on every run, and neighbourhoods an approximate index can find.

/// Hidden factors behind every vector: the data has this intrinsic dimension.
pub const FACTORS: usize = 32;
/// Weight of the uniform noise added to each component besides the factors.
pub const NOISE: f32 = 0.3;

/// xorshift64*: deterministic pseudo-random numbers.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    pub fn component(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Vectors with structure (embeddings of text are far from uniform too): each a random mix of
/// [`FACTORS`] fixed directions plus a little noise. Uniform random vectors have no
/// neighbourhoods: in 384 dimensions every point is about equally far from any query, and no
/// approximate index finds their top 10 (`benches/README.md` has the figures).
pub struct StructuredVectors {
    /// The generator of the mixes and the noise; also usable for other seeded values.
    pub rng: XorShift,
    dimensions: usize,
    factors: Vec<f32>,
}

impl StructuredVectors {
    /// Vectors of `dimensions` components from `seed`; the fixed directions are the same for
    /// every seed, so vectors of different seeds are neighbours too.
    pub fn new(seed: u64, dimensions: usize) -> Self {
        let mut fixed = XorShift(0x5151_5151_5151_5151);
        StructuredVectors {
            rng: XorShift(seed),
            dimensions,
            factors: (0..FACTORS * dimensions).map(|_| fixed.component()).collect(),
        }
    }

    /// The next vector.
    pub fn vector(&mut self) -> Vec<f32> {
        let weights: Vec<f32> = (0..FACTORS).map(|_| self.rng.component()).collect();
        (0..self.dimensions)
            .map(|j| {
                let mixed: f32 = weights
                    .iter()
                    .enumerate()
                    .map(|(f, w)| w * self.factors[f * self.dimensions + j])
                    .sum();
                mixed + NOISE * self.rng.component()
            })
            .collect()
    }
}
