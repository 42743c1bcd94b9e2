//! Prometheus's text exposition format (version 0.0.4), written by hand: a few dozen families
//! do not earn a client library, and the escaping rules are three lines. Also the histogram
//! the server observes into: fixed buckets of atomic counters, so an observation is a couple
//! of `fetch_add`s and never takes a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The content type Prometheus asks for and expects back.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A scrape's text, family by family. Every family is announced once (`# HELP`, `# TYPE`)
/// and its samples follow it, as the format requires.
#[derive(Default)]
pub struct Text {
    out: String,
}

impl Text {
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(
            self.out,
            "# HELP {name} {}\n# TYPE {name} {}",
            escape_help(help),
            kind.as_str()
        );
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A whole histogram family with one series (its labels), buckets cumulative.
    pub fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Snapshot) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        for (bound, cumulative) in &h.buckets {
            self.out.push_str(&bucket);
            self.labels(labels, Some(&number(*bound)));
            let _ = writeln!(self.out, " {cumulative}");
        }
        self.out.push_str(&bucket);
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {}", h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(|v| ("le", v));
        for (i, (name, value)) in labels.iter().copied().chain(le).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{name}=\"{}\"", escape_label(value));
        }
        self.out.push('}');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escape backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and line feed (a quote is fine there).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format spells it (Go's float syntax: `+Inf`, `-Inf`, `NaN`).
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Observations counted into fixed buckets. Values are integers in the histogram's base unit
/// (milliseconds, microseconds, commands…) so that the sum is an exact atomic integer;
/// `scale` turns them into the exposed unit (seconds) when rendered.
pub struct Histogram<const N: usize> {
    /// Upper bounds (inclusive, as `le` means), ascending, in the base unit.
    bounds: [u64; N],
    scale: f64,
    /// Observations per bucket, not cumulative: one `fetch_add` per observation.
    buckets: [AtomicU64; N],
    /// Observations above the last bound.
    over: AtomicU64,
    sum: AtomicU64,
}

/// A histogram as read for one scrape: bounds in the exposed unit with cumulative counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl<const N: usize> Histogram<N> {
    pub const fn new(bounds: [u64; N], scale: f64) -> Self {
        Histogram {
            bounds,
            scale,
            buckets: [const { AtomicU64::new(0) }; N],
            over: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let slot = self.bounds.partition_point(|b| *b < value);
        match self.buckets.get(slot) {
            Some(bucket) => bucket.fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Reads the buckets once and derives the count from them, so that within one scrape
    /// the buckets are cumulative and `+Inf` equals `_count` even while observations land.
    pub fn snapshot(&self) -> Snapshot {
        let mut running = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                running += n.load(Ordering::Relaxed);
                (*bound as f64 * self.scale, running)
            })
            .collect();
        Snapshot {
            buckets,
            count: running + self.over.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed) as f64 * self.scale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        let mut t = Text::default();
        t.family("barge_x", Kind::Gauge, "a \\ help\nline with \"quotes\"");
        t.sample("barge_x", &[("job_queue", "a\\b\"c\nd"), ("k", "é")], 2.0);
        let text = t.finish();
        assert_eq!(
            text,
            "# HELP barge_x a \\\\ help\\nline with \"quotes\"\n# TYPE barge_x gauge\n\
             barge_x{job_queue=\"a\\\\b\\\"c\\nd\",k=\"é\"} 2\n"
        );
    }

    #[test]
    fn numbers_use_the_formats_spelling() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(1e-4), "0.0001");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inclusive() {
        let h = Histogram::new([1, 5, 10], 0.001);
        for v in [0, 1, 2, 5, 6, 10, 11, 1000] {
            h.observe(v);
        }
        let s = h.snapshot();
        // 0 and 1 are ≤ 1; 2 and 5 ≤ 5; 6 and 10 ≤ 10; 11 and 1000 above.
        assert_eq!(s.buckets, vec![(0.001, 2), (0.005, 4), (0.01, 6)]);
        assert_eq!(s.count, 8);
        assert!((s.sum - 1.035).abs() < 1e-9);
        let mut t = Text::default();
        t.histogram("barge_wait_seconds", "Waits.", &[("q", "a")], &s);
        let text = t.finish();
        assert_eq!(
            text,
            "# HELP barge_wait_seconds Waits.\n# TYPE barge_wait_seconds histogram\n\
             barge_wait_seconds_bucket{q=\"a\",le=\"0.001\"} 2\n\
             barge_wait_seconds_bucket{q=\"a\",le=\"0.005\"} 4\n\
             barge_wait_seconds_bucket{q=\"a\",le=\"0.01\"} 6\n\
             barge_wait_seconds_bucket{q=\"a\",le=\"+Inf\"} 8\n\
             barge_wait_seconds_sum{q=\"a\"} 1.035\n\
             barge_wait_seconds_count{q=\"a\"} 8\n"
        );
    }

    #[test]
    fn an_empty_histogram_still_has_every_bucket() {
        let h = Histogram::new([1, 2], 1.0);
        let mut t = Text::default();
        t.histogram("barge_h", "H.", &[], &h.snapshot());
        let text = t.finish();
        assert!(text.contains("barge_h_bucket{le=\"1\"} 0\n"));
        assert!(text.contains("barge_h_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("barge_h_sum 0\n"));
        assert!(text.contains("barge_h_count 0\n"));
    }

    #[test]
    fn observations_from_many_threads_are_all_counted() {
        static H: Histogram<2> = Histogram::new([10, 100], 1.0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                s.spawn(move || {
                    for i in 0..10_000u64 {
                        H.observe((i + t) % 200);
                    }
                });
            }
        });
        let snap = H.snapshot();
        assert_eq!(snap.count, 40_000);
        assert!(snap.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(snap.buckets[1].1 <= snap.count);
    }
}
