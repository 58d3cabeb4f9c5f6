//! A tiny, seeded, portable pseudo-random number generator (SplitMix64).
//!
//! The generator is deliberately simple: the demo data must be byte-identical for the same
//! seed on every platform and every release, so nothing here depends on an external crate's
//! algorithm choice. Only integer arithmetic and exactly-rounded `f64` operations (`+ - * /`)
//! are used, never transcendental functions whose last bit may vary between `libm`s.

/// Stream tags: each part of a patient's record draws from its own stream, so adding a draw
/// in one generator never shifts the values produced by another.
pub(crate) mod stream {
    pub(crate) const DEMOGRAPHICS: u64 = 1;
    pub(crate) const VISITS: u64 = 2;
    pub(crate) const LABS: u64 = 3;
    pub(crate) const VITALS: u64 = 4;
    pub(crate) const CLINICAL: u64 = 5;
    pub(crate) const DOCUMENTS: u64 = 6;
    pub(crate) const APPOINTMENTS: u64 = 7;
    pub(crate) const USERS: u64 = 8;
    pub(crate) const CAREGIVER: u64 = 9;
}

/// SplitMix64 (Steele, Lea & Flood 2014): 64 bits of state, full period, good enough
/// statistical quality for synthetic data.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function; also a good 64-bit mixer for deriving stream seeds.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded directly with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent stream for `(seed, tag, index)`.
    pub(crate) fn derive(seed: u64, tag: u64, index: u64) -> Self {
        let a = mix(seed.wrapping_add(GOLDEN));
        let b = mix(a ^ tag.wrapping_mul(GOLDEN));
        Self::new(mix(b ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// A uniform integer in `0..n` (`0` when `n == 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-high reduction; the tiny bias is irrelevant here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform integer in `lo..=hi` (returns `lo` when `hi < lo`).
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = hi.abs_diff(lo).saturating_add(1);
        lo.wrapping_add(self.below(span) as i64)
    }

    /// A uniform `usize` in `lo..=hi`.
    pub(crate) fn range_usize(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// A uniform float in `[0, 1)` with 53 bits of precision.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// An approximately normal value (Irwin–Hall sum of four uniforms, rescaled to unit
    /// variance), clamped to `mean ± 3 sd`. Uses only exactly-rounded arithmetic.
    pub(crate) fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let sum = self.unit() + self.unit() + self.unit() + self.unit();
        // Sum of 4 U(0,1) has mean 2 and variance 4/12 = 1/3; 1/sqrt(1/3) = 1.7320508...
        let z = ((sum - 2.0) * 1.732_050_807_568_877_2).clamp(-3.0, 3.0);
        mean + z * sd
    }

    /// One element of a non-empty array, chosen uniformly.
    pub(crate) fn pick<'a, T, const N: usize>(&mut self, items: &'a [T; N]) -> &'a T {
        const { assert!(N > 0, "pick needs a non-empty array") };
        let i = self.below(N as u64) as usize;
        &items[i.min(N - 1)]
    }

    /// A uniformly shuffled copy of `items` (Fisher–Yates).
    pub(crate) fn shuffled<T: Clone>(&mut self, items: &[T]) -> Vec<T> {
        let mut v = items.to_vec();
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::derive(7, stream::LABS, 3);
        let mut b = Rng::derive(7, stream::LABS, 3);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn streams_differ() {
        let mut a = Rng::derive(7, stream::LABS, 3);
        let mut b = Rng::derive(7, stream::VITALS, 3);
        let mut c = Rng::derive(7, stream::LABS, 4);
        let x = a.next_u64();
        assert_ne!(x, b.next_u64());
        assert_ne!(x, c.next_u64());
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (reference implementation).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = Rng::new(42);
        for _ in 0..10_000 {
            let v = r.range(-3, 5);
            assert!((-3..=5).contains(&v));
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            let n = r.normal(10.0, 2.0);
            assert!((4.0..=16.0).contains(&n));
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.range(5, 1), 5);
    }
}
