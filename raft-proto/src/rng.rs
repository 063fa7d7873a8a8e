//! A small deterministic pseudo-random generator (SplitMix64), seeded from the config, so that
//! the core never touches a global source of randomness.

/// SplitMix64: tiny, fast, and good enough for election jitter and simulation schedules.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `low..high` (`low` when the range is empty).
    pub(crate) fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low)
    }

    /// `true` with probability `numerator / denominator`.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.range(0, denominator) < numerator
    }

    /// A value in `0..n` (0 when `n` is 0), for the codec's tests.
    #[cfg(all(test, feature = "codec"))]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.range(0, n)
    }

    /// `n` random bytes, for the codec's tests.
    #[cfg(all(test, feature = "codec"))]
    pub(crate) fn bytes(&mut self, n: usize) -> alloc::vec::Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
