//! Latency histograms (microseconds), percentile summaries and error tallies by kind.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// Highest latency a histogram tracks exactly (60 s in µs); larger samples are clamped.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty histogram covering 1 µs ..= 60 s.
    pub fn new() -> Latency {
        // Constant, valid bounds: this cannot fail at run time.
        let hist = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("constant histogram bounds are valid");
        Latency { hist }
    }

    /// Records one sample (µs); 0 is recorded as 1, values beyond the range are clamped.
    #[inline]
    pub fn record(&mut self, us: u64) {
        let v = us.clamp(1, MAX_LATENCY_US);
        // Cannot fail: v is within the bounds given at construction.
        let _ = self.hist.record(v);
    }

    /// Records `count` samples of the same value.
    #[inline]
    pub fn record_n(&mut self, us: u64, count: u64) {
        let v = us.clamp(1, MAX_LATENCY_US);
        let _ = self.hist.record_n(v, count);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Both histograms share bounds, so adding cannot overflow their ranges.
        let _ = self.hist.add(&other.hist);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The percentile summary.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.hist)
    }
}

/// Percentiles of a latency histogram, all in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl LatencySummary {
    /// Summarizes `h`; an empty histogram gives all zeros.
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One kind of error: how often it happened and the first message seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorKind {
    /// Occurrences.
    pub count: u64,
    /// The first full message of this kind.
    pub sample: String,
}

/// Errors counted by kind (e.g. `ERR`, `WRONGTYPE`, `io`, `verify-mismatch`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    kinds: BTreeMap<String, ErrorKind>,
}

/// Longest sample message kept per error kind.
const MAX_SAMPLE: usize = 200;

impl ErrorCounts {
    /// Counts `n` errors of `kind`, keeping `sample` if this kind is new.
    pub fn add(&mut self, kind: &str, sample: &str, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(k) = self.kinds.get_mut(kind) {
            k.count += n;
            return;
        }
        let mut s: String = sample.chars().take(MAX_SAMPLE).collect();
        if s.len() < sample.len() {
            s.push('…');
        }
        self.kinds.insert(
            kind.to_string(),
            ErrorKind {
                count: n,
                sample: s,
            },
        );
    }

    /// Counts an error reply (`-KIND message`) by its first word.
    pub fn add_reply(&mut self, msg: &[u8]) {
        let text = String::from_utf8_lossy(msg);
        let kind = text.split_whitespace().next().unwrap_or("(empty)");
        let kind = format!("reply:{kind}");
        self.add(&kind, &text, 1);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ErrorCounts) {
        for (kind, k) in &other.kinds {
            self.add(kind, &k.sample, k.count);
        }
    }

    /// Total errors over all kinds.
    pub fn total(&self) -> u64 {
        self.kinds.values().map(|k| k.count).sum()
    }

    /// Kinds in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ErrorKind)> {
        self.kinds.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// True when no error was counted.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

/// The median of `values` (mean of the middle two for even lengths); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative tolerance of a 3-significant-digit histogram.
    fn close(actual: u64, expected: u64) -> bool {
        let tol = (expected / 500).max(1);
        actual.abs_diff(expected) <= tol
    }

    #[test]
    fn percentiles_of_a_uniform_ramp() {
        let mut l = Latency::new();
        for us in 1..=10_000 {
            l.record(us);
        }
        let s = l.summary();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min, 1);
        assert!(close(s.p50, 5_000), "{s:?}");
        assert!(close(s.p90, 9_000), "{s:?}");
        assert!(close(s.p99, 9_900), "{s:?}");
        assert!(close(s.p999, 9_990), "{s:?}");
        assert!(close(s.max, 10_000), "{s:?}");
        assert!((s.mean - 5_000.5).abs() < 10.0, "{s:?}");
    }

    #[test]
    fn outliers_show_only_in_the_tail() {
        let mut l = Latency::new();
        l.record_n(100, 9_990);
        l.record_n(50_000, 10);
        let s = l.summary();
        assert!(close(s.p50, 100) && close(s.p99, 100), "{s:?}");
        assert!(close(s.max, 50_000), "{s:?}");
        assert!(s.p999 >= 100, "{s:?}");
    }

    #[test]
    fn clamping_and_empty() {
        assert_eq!(Latency::new().summary(), LatencySummary::default());
        let mut l = Latency::new();
        l.record(0);
        l.record(u64::MAX);
        let s = l.summary();
        assert_eq!(s.min, 1);
        assert!(close(s.max, MAX_LATENCY_US));
    }

    #[test]
    fn merge_adds_samples() {
        let (mut a, mut b) = (Latency::new(), Latency::new());
        a.record_n(10, 5);
        b.record_n(1000, 5);
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 10);
        assert!(close(s.max, 1000));
        assert_eq!(s.min, 10);
    }

    #[test]
    fn error_counts_by_kind() {
        let mut e = ErrorCounts::default();
        e.add_reply(b"ERR unknown command 'FOO'");
        e.add_reply(b"ERR something else");
        e.add_reply(b"WRONGTYPE Operation against a key");
        let mut f = ErrorCounts::default();
        f.add("io", "connection reset", 3);
        f.add("io", "ignored", 0);
        e.merge(&f);
        assert_eq!(e.total(), 6);
        let kinds: Vec<_> = e.iter().map(|(k, v)| (k.to_string(), v.count)).collect();
        assert_eq!(
            kinds,
            vec![
                ("io".to_string(), 3),
                ("reply:ERR".to_string(), 2),
                ("reply:WRONGTYPE".to_string(), 1)
            ]
        );
        assert_eq!(
            e.iter()
                .find(|(k, _)| *k == "reply:ERR")
                .map(|(_, v)| v.sample.as_str()),
            Some("ERR unknown command 'FOO'")
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }
}
