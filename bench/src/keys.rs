//! Key distributions (uniform, zipfian) and allocation-free key formatting.
//!
//! Keys are `<prefix><12 zero-padded digits>`, the same shape redis-benchmark uses for
//! `key:__rand_int__`, so a keyspace loaded by one tool is read by the other.

use rand::Rng;

/// Which key index distribution a run draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DistKind {
    /// Every key equally likely.
    Uniform,
    /// Zipfian with theta 0.99 (rank 0 hottest).
    Zipf,
}

impl DistKind {
    /// Lower-case name, as given to `--dist`.
    pub fn name(self) -> &'static str {
        match self {
            DistKind::Uniform => "uniform",
            DistKind::Zipf => "zipf",
        }
    }
}

/// Zipf exponent used by `--dist zipf` (the YCSB default).
pub const ZIPF_THETA: f64 = 0.99;

/// Largest keyspace for which zeta(n) is summed exactly; above it the tail is approximated.
const ZETA_EXACT_MAX: u64 = 10_000_000;

/// A key index generator over `0..n`.
#[derive(Debug, Clone)]
pub enum KeyDist {
    /// Uniform over `0..n`.
    Uniform {
        /// Keyspace size.
        n: u64,
    },
    /// Zipfian over ranks `0..n` (Gray et al., as in YCSB's ZipfianGenerator).
    Zipf(Zipf),
}

impl KeyDist {
    /// Builds a distribution over `0..n` (`n` is clamped to at least 1).
    pub fn new(kind: DistKind, n: u64) -> KeyDist {
        let n = n.max(1);
        match kind {
            DistKind::Uniform => KeyDist::Uniform { n },
            DistKind::Zipf => KeyDist::Zipf(Zipf::new(n, ZIPF_THETA)),
        }
    }

    /// Draws one key index in `0..n`.
    #[inline]
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match self {
            KeyDist::Uniform { n } => rng.gen_range(0..*n),
            KeyDist::Zipf(z) => z.sample(rng),
        }
    }
}

/// Precomputed constants of a zipfian distribution over `0..n`.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    theta: f64,
    zetan: f64,
    alpha: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl Zipf {
    /// Precomputes zeta(n, theta); O(min(n, 10M)) work, done once per run.
    pub fn new(n: u64, theta: f64) -> Zipf {
        let n = n.max(1);
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2.min(n), theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = if n <= 2 {
            0.0
        } else {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan)
        };
        Zipf {
            n,
            theta,
            zetan,
            alpha,
            eta,
            half_pow_theta: 0.5f64.powf(theta),
        }
    }

    /// Draws one rank in `0..n`; low ranks are the most frequent.
    #[inline]
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zetan;
        if uz < 1.0 || self.n == 1 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta || self.n == 2 {
            return 1;
        }
        let v = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(self.n - 1)
    }

    /// The exponent this generator was built with.
    pub fn theta(&self) -> f64 {
        self.theta
    }
}

/// Generalized harmonic number H(n, theta); exact up to 10M terms, Euler–Maclaurin tail above.
fn zeta(n: u64, theta: f64) -> f64 {
    let exact = n.min(ZETA_EXACT_MAX);
    let mut sum = 0.0;
    for i in 1..=exact {
        sum += 1.0 / (i as f64).powf(theta);
    }
    if n > exact {
        let (m, nf) = (exact as f64, n as f64);
        let p = 1.0 - theta;
        sum += (nf.powf(p) - m.powf(p)) / p + (nf.powf(-theta) - m.powf(-theta)) / 2.0;
    }
    sum
}

/// Digits in a formatted key index (redis-benchmark's `__rand_int__` width).
pub const KEY_DIGITS: usize = 12;

/// Longest key [`format_key`] produces.
pub const MAX_KEY_LEN: usize = 64;

/// A key formatted on the stack.
pub struct KeyBuf {
    buf: [u8; MAX_KEY_LEN],
    len: usize,
}

impl KeyBuf {
    /// The key bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[inline]
fn put_digits(buf: &mut [u8], at: usize, mut v: u64) -> usize {
    for i in (0..KEY_DIGITS).rev() {
        buf[at + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    at + KEY_DIGITS
}

/// Formats `<prefix><idx as 12 digits>`, optionally preceded by the hash tag `{<tag digits>}`
/// so that keys sharing `tag` land in one cluster slot. `prefix` is cut to fit.
#[inline]
pub fn format_key(prefix: &[u8], idx: u64, tag: Option<u64>) -> KeyBuf {
    let mut buf = [0u8; MAX_KEY_LEN];
    let mut at = 0;
    if let Some(t) = tag {
        buf[0] = b'{';
        at = put_digits(&mut buf, 1, t);
        buf[at] = b'}';
        at += 1;
    }
    let room = MAX_KEY_LEN - at - KEY_DIGITS;
    let p = &prefix[..prefix.len().min(room)];
    buf[at..at + p.len()].copy_from_slice(p);
    at += p.len();
    at = put_digits(&mut buf, at, idx);
    KeyBuf { buf, len: at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn uniform_covers_the_range() {
        let d = KeyDist::new(DistKind::Uniform, 100);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = [0u32; 100];
        for _ in 0..100_000 {
            let k = d.sample(&mut rng) as usize;
            assert!(k < 100);
            seen[k] += 1;
        }
        // Every index is hit, and none wildly more often than the 1000 expected.
        assert!(seen.iter().all(|&c| c > 700 && c < 1300), "{seen:?}");
    }

    #[test]
    fn zipf_stays_in_range_and_is_skewed() {
        for n in [1u64, 2, 3, 10, 1000, 100_000] {
            let d = KeyDist::new(DistKind::Zipf, n);
            let mut rng = SmallRng::seed_from_u64(n);
            for _ in 0..20_000 {
                assert!(d.sample(&mut rng) < n);
            }
        }
        let n = 10_000u64;
        let d = KeyDist::new(DistKind::Zipf, n);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0u32; n as usize];
        let draws = 200_000;
        for _ in 0..draws {
            counts[d.sample(&mut rng) as usize] += 1;
        }
        // Rank 0 is the most frequent and far above the uniform share (20 draws).
        let max = counts.iter().copied().max().unwrap_or(0);
        assert_eq!(counts[0], max);
        assert!(counts[0] > 10_000, "rank 0 drew {}", counts[0]);
        // The lowest 1% of ranks takes a large share of draws, the top half a small one.
        let low: u32 = counts[..100].iter().sum();
        let high: u32 = counts[5000..].iter().sum();
        assert!(low > draws * 2 / 5, "low ranks {low}");
        assert!(high < draws / 10, "high ranks {high}");
        // Frequencies fall with rank.
        assert!(counts[0] > counts[1] && counts[1] > counts[10]);
    }

    #[test]
    fn zeta_tail_approximation_is_close() {
        let exact = zeta(ZETA_EXACT_MAX, ZIPF_THETA);
        let approx_more = zeta(ZETA_EXACT_MAX * 2, ZIPF_THETA);
        assert!(approx_more > exact);
        assert!(approx_more - exact < 1.0);
    }

    #[test]
    fn key_format() {
        assert_eq!(
            format_key(b"key:", 42, None).as_bytes(),
            b"key:000000000042"
        );
        assert_eq!(
            format_key(b"key:", 7, Some(3)).as_bytes(),
            b"{000000000003}key:000000000007"
        );
        let long = [b'x'; 100];
        assert_eq!(format_key(&long, 1, Some(1)).as_bytes().len(), MAX_KEY_LEN);
    }
}
