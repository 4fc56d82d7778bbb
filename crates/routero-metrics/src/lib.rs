//! Prometheus metrics: families of counters and histograms keyed by label values, rendered in
//! the Prometheus text exposition format (version 0.0.4).
//!
//! Label values must come from bounded sets (route names, provider kinds, error codes), never
//! from key ids, user ids or client text: every distinct set of values is a series kept for the
//! life of the process. A family refuses new series past [`MAX_SERIES`] and counts them under
//! `other` instead: in the label it names as the one that grows (`collapsing`), the others kept,
//! or in every label.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Most series one family keeps; values past it are counted under the label value `other`.
pub const MAX_SERIES: usize = 1000;

/// The media type of [`Exposition::finish`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets in seconds, from 1 ms to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

type Labels = Vec<String>;

/// Series of one family by label values, with the family's label names.
struct Series<T> {
    names: &'static [&'static str],
    /// The label whose value becomes `other` past [`MAX_SERIES`] (none: every label).
    grows: Option<usize>,
    series: Mutex<BTreeMap<Labels, T>>,
}

impl<T: Default> Series<T> {
    fn new(names: &'static [&'static str]) -> Self {
        Self {
            names,
            grows: None,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    fn collapsing(mut self, label: &str) -> Self {
        self.grows = self.names.iter().position(|name| *name == label);
        self
    }

    fn with(&self, values: &[&str], change: impl FnOnce(&mut T)) {
        let mut series = self
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut key: Labels = values.iter().map(|v| (*v).to_owned()).collect();
        if series.len() >= MAX_SERIES && !series.contains_key(&key) {
            match self.grows.and_then(|index| key.get_mut(index)) {
                Some(value) => "other".clone_into(value),
                None => key.iter_mut().for_each(|value| "other".clone_into(value)),
            }
        }
        change(series.entry(key).or_default());
    }

    fn each(&self, mut visit: impl FnMut(&Labels, &T)) {
        let series = self
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (labels, value) in series.iter() {
            visit(labels, value);
        }
    }
}

/// A counter family.
pub struct Counter {
    name: &'static str,
    help: &'static str,
    series: Series<f64>,
}

impl Counter {
    /// A family named `name` (ending in `_total`) with these label names.
    pub fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            series: Series::new(labels),
        }
    }

    /// The same family, counting past [`MAX_SERIES`] under `label="other"` alone.
    #[must_use]
    pub fn collapsing(mut self, label: &str) -> Self {
        self.series = self.series.collapsing(label);
        self
    }

    /// Adds `by` to the series of `values` (one per label name, in order).
    pub fn add(&self, values: &[&str], by: f64) {
        self.series.with(values, |count| *count += by);
    }

    /// Adds one.
    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1.0);
    }
}

/// A histogram family over fixed buckets.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    buckets: &'static [f64],
    series: Series<Observed>,
}

#[derive(Default)]
struct Observed {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// A family named `name` with these label names and bucket upper bounds (ascending).
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            buckets,
            series: Series::new(labels),
        }
    }

    /// The same family, counting past [`MAX_SERIES`] under `label="other"` alone.
    #[must_use]
    pub fn collapsing(mut self, label: &str) -> Self {
        self.series = self.series.collapsing(label);
        self
    }

    /// Records `value` in the series of `values`.
    pub fn observe(&self, values: &[&str], value: f64) {
        let buckets = self.buckets;
        self.series.with(values, |observed| {
            if observed.counts.is_empty() {
                observed.counts = vec![0; buckets.len()];
            }
            for (bound, count) in buckets.iter().zip(observed.counts.iter_mut()) {
                if value <= *bound {
                    *count += 1;
                }
            }
            observed.sum += value;
            observed.count += 1;
        });
    }
}

/// Text being rendered for one scrape.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// Adds a counter family.
    pub fn counter(&mut self, counter: &Counter) -> &mut Self {
        self.header(counter.name, counter.help, "counter");
        let names = counter.series.names;
        let mut lines = String::new();
        counter.series.each(|labels, value| {
            let _ = writeln!(
                lines,
                "{}{} {}",
                counter.name,
                label_set(names, labels, None),
                number(*value)
            );
        });
        self.text.push_str(&lines);
        self
    }

    /// Adds a histogram family.
    pub fn histogram(&mut self, histogram: &Histogram) -> &mut Self {
        self.header(histogram.name, histogram.help, "histogram");
        let (name, names) = (histogram.name, histogram.series.names);
        let mut lines = String::new();
        histogram.series.each(|labels, observed| {
            for (bound, count) in histogram.buckets.iter().zip(&observed.counts) {
                let le = number(*bound);
                let set = label_set(names, labels, Some(&le));
                let _ = writeln!(lines, "{name}_bucket{set} {count}");
            }
            let set = label_set(names, labels, Some("+Inf"));
            let _ = writeln!(lines, "{name}_bucket{set} {}", observed.count);
            let set = label_set(names, labels, None);
            let _ = writeln!(lines, "{name}_sum{set} {}", number(observed.sum));
            let _ = writeln!(lines, "{name}_count{set} {}", observed.count);
        });
        self.text.push_str(&lines);
        self
    }

    /// Adds a gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.single(name, help, "gauge", value)
    }

    /// Adds a counter without labels, counted elsewhere (`name` ends in `_total`).
    pub fn total(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.single(name, help, "counter", value)
    }

    fn single(&mut self, name: &str, help: &str, kind: &str, value: f64) -> &mut Self {
        self.header(name, help, kind);
        let _ = writeln!(self.text, "{name} {}", number(value));
        self
    }

    /// The text to serve.
    pub fn finish(self) -> String {
        self.text
    }
}

fn label_set(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(name, value)| format!("{name}=\"{}\"", escape_label(value)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else if value.is_nan() {
        "NaN".to_owned()
    } else if value > 0.0 {
        "+Inf".to_owned()
    } else {
        "-Inf".to_owned()
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges_in_the_text_format() {
        let requests = Counter::new("t_requests_total", "Requests.", &["code"]);
        requests.inc(&["ok"]);
        requests.add(&["say \"hi\"\n"], 2.0);
        let latency = Histogram::new("t_seconds", "Latency.", &["route"], &[0.1, 1.0]);
        latency.observe(&["a"], 0.05);
        latency.observe(&["a"], 0.5);
        latency.observe(&["a"], 5.0);
        let mut text = Exposition::new();
        text.counter(&requests)
            .histogram(&latency)
            .gauge("t_version", "Version.", 7.0);
        let text = text.finish();
        assert!(text.contains("# TYPE t_requests_total counter\n"));
        assert!(text.contains("t_requests_total{code=\"ok\"} 1\n"));
        assert!(text.contains("t_requests_total{code=\"say \\\"hi\\\"\\n\"} 2\n"));
        assert!(text.contains("t_seconds_bucket{route=\"a\",le=\"0.1\"} 1\n"));
        assert!(text.contains("t_seconds_bucket{route=\"a\",le=\"1\"} 2\n"));
        assert!(text.contains("t_seconds_bucket{route=\"a\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("t_seconds_count{route=\"a\"} 3\n"));
        assert!(text.contains("t_version 7\n"));
    }

    #[test]
    fn series_past_the_bound_are_counted_as_other() {
        let counter = Counter::new("t_total", "T.", &["model"]);
        for i in 0..MAX_SERIES + 5 {
            counter.inc(&[&format!("m{i}")]);
        }
        let mut text = Exposition::new();
        text.counter(&counter);
        let text = text.finish();
        assert!(text.contains("t_total{model=\"other\"} 5\n"));
        assert_eq!(
            text.lines().filter(|l| l.starts_with("t_total{")).count(),
            MAX_SERIES + 1
        );
    }
}
