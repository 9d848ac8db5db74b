//! SplitMix64 and the "interesting value" pickers the mutators share.

/// A small deterministic generator: the same seed gives the same case everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Mixed once so that neighbouring seeds start far apart.
        let mut rng = Rng(seed ^ 0x6C64_616D_2D66_757A);
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index chosen with the given weights (not all zero).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut r = self.next_u64() % total;
        for (i, &w) in weights.iter().enumerate() {
            if r < u64::from(w) {
                return i;
            }
            r -= u64::from(w);
        }
        unreachable!("r < total")
    }

    /// Integers that break arithmetic: signs, zero, powers of two near type
    /// limits, and the extremes.
    pub fn interesting_i64(&mut self) -> i64 {
        const VALUES: &[i64] = &[
            0,
            1,
            -1,
            2,
            3,
            -2,
            7,
            10,
            255,
            256,
            65535,
            1 << 20,
            i32::MAX as i64,
            1 << 31,
            1 << 32,
            1 << 40,
            1 << 62,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
            -(1 << 40),
        ];
        if self.chance(0.15) {
            self.next_u64() as i64
        } else {
            *self.pick(VALUES)
        }
    }

    /// A dimension: mostly the hostile values, sometimes a plausible small size.
    pub fn interesting_dim(&mut self) -> i64 {
        if self.chance(0.3) {
            self.range(0, 40) as i64
        } else {
            self.interesting_i64()
        }
    }

    pub fn interesting_u32(&mut self) -> u32 {
        const VALUES: &[u32] = &[
            0,
            1,
            2,
            3,
            0x7f,
            0xff,
            0x100,
            0xffff,
            0x1_0000,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            0xffff_ffff,
        ];
        if self.chance(0.2) {
            self.next_u64() as u32
        } else {
            *self.pick(VALUES)
        }
    }

    pub fn interesting_f32(&mut self) -> f32 {
        const VALUES: &[f32] = &[
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            1e-45,
            1e30,
            -1e30,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        *self.pick(VALUES)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
