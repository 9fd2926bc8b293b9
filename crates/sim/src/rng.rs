//! The simulator's randomness: a SplitMix64 generator, seeded, with no global state.
//!
//! Every random choice of a run comes from one `u64` seed through [`Rng::stream`], which
//! derives an independent generator per purpose (parameters, network, faults, clients).
//! Independent streams keep a run stable under small changes: overriding one parameter
//! does not reshuffle the network's choices.

/// A SplitMix64 generator (Steele, Lea & Flood 2014). Small, fast, and good enough for
/// simulation: every output is a bijective mix of a counter.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

/// One million: probabilities are integers in parts per million (`*_ppm`).
pub const PPM: u32 = 1_000_000;

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The generator for `purpose` within the run of `seed`: the same pair always gives
    /// the same stream, and different purposes give unrelated streams.
    pub fn stream(seed: u64, purpose: &str) -> Rng {
        let mut state = seed ^ 0x6A09_E667_F3BC_C908;
        for byte in purpose.bytes() {
            state = mix64(state ^ u64::from(byte));
        }
        Rng::new(mix64(state))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// A number in `[0, bound)`; `bound` must be positive. Uses the high half of a
    /// 128-bit product (Lemire), which has negligible bias for simulation bounds.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "Rng::below(0)");
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A number in `[low, high]`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "Rng::between({low}, {high})");
        if high - low == u64::MAX {
            return self.next_u64();
        }
        low + self.below(high - low + 1)
    }

    /// True with probability `ppm` parts per million.
    pub fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(u64::from(PPM)) < u64::from(ppm)
    }

    /// True with probability one half.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// One element of `items`, or `None` if it is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.below(items.len() as u64) as usize])
        }
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// The SplitMix64 finalizer: a bijection of `u64` that mixes every input bit into every
/// output bit. Also used as the simulator's hash combiner.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit FNV-1a hash of `bytes`: stable across platforms and runs, unlike the
/// standard library's hasher.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// Folds `words` into `hash`, order-sensitively.
pub fn hash_words(mut hash: u64, words: &[u64]) -> u64 {
    for &word in words {
        hash = mix64(hash ^ word).wrapping_add(0x9E37_79B9_7F4A_7C15);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    // The same seed gives the same stream; streams for different purposes differ.
    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: Vec<u64> = (0..4)
            .map(|_| Rng::stream(7, "network").next_u64())
            .collect();
        assert!(a.windows(2).all(|pair| pair[0] == pair[1]));
        assert_ne!(
            Rng::stream(7, "network").next_u64(),
            Rng::stream(7, "faults").next_u64()
        );
        assert_ne!(
            Rng::stream(7, "network").next_u64(),
            Rng::stream(8, "network").next_u64()
        );
    }

    // Bounded draws stay in range and hit both ends.
    #[test]
    fn between_covers_its_range() {
        let mut rng = Rng::new(1);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let value = rng.between(3, 7);
            assert!((3..=7).contains(&value));
            seen[(value - 3) as usize] = true;
        }
        assert!(seen.iter().all(|&hit| hit));
        assert!(!Rng::new(2).chance(0));
        assert!(Rng::new(2).chance(PPM));
    }
}
