//! The bench's table: every figure with what it compares, printed aligned at the end and
//! written as JSON when BENCH_OUT is set; percentiles over pooled samples.

use std::time::Duration;

use serde_json::{Value, json};

/// The sample at `percent` of the way through `samples` (sorted here), nearest rank below.
pub(crate) fn percentile(samples: &mut [f64], percent: usize) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let last = samples.len() - 1;
    samples[(last * percent / 100).min(last)]
}

/// p50 and p99, in microseconds.
pub(crate) fn p50_p99(samples: &mut [f64]) -> (f64, f64) {
    (percentile(samples, 50), percentile(samples, 99))
}

/// Durations as microseconds.
pub(crate) fn micros(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(|d| d.as_secs_f64() * 1e6).collect()
}

/// The median of per-round figures.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    percentile(&mut v, 50)
}

pub(crate) struct Report {
    rows: Vec<(String, String, String)>,
    json: Vec<Value>,
    load_before: String,
    load_after: String,
}

impl Report {
    pub(crate) fn new(load_before: String) -> Report {
        Report {
            rows: Vec::new(),
            json: Vec::new(),
            load_before,
            load_after: String::new(),
        }
    }

    fn row(&mut self, section: &str, what: &str, text: String, json: Value) {
        self.rows.push((section.into(), what.into(), text));
        let mut json = json;
        json["section"] = section.into();
        json["what"] = what.into();
        self.json.push(json);
    }

    /// Latency of `other` beside `base` (p50, p99 in µs), with what `other` adds.
    pub(crate) fn added(
        &mut self,
        section: &str,
        what: &str,
        base: (&str, (f64, f64)),
        other: (&str, (f64, f64)),
    ) {
        let ((bn, (b50, b99)), (on, (o50, o99))) = (base, other);
        let text = format!(
            "{bn} p50 {b50:.0} p99 {b99:.0} | {on} p50 {o50:.0} p99 {o99:.0} | added p50 {:+.0} p99 {:+.0} µs (p50 x{:.2})",
            o50 - b50,
            o99 - b99,
            o50 / b50
        );
        let json = json!({"base": bn, "base_p50_us": b50, "base_p99_us": b99,
            "other": on, "other_p50_us": o50, "other_p99_us": o99});
        self.row(section, what, text, json);
    }

    /// A rate of `other` beside `base`, and their ratio.
    pub(crate) fn rate(
        &mut self,
        section: &str,
        what: &str,
        unit: &str,
        base: (&str, f64),
        other: (&str, f64),
    ) {
        let ((bn, b), (on, o)) = (base, other);
        let text = format!(
            "{bn} {b:.0} {unit} | {on} {o:.0} {unit} | {on}/{bn} {:.1}%",
            o / b * 100.0
        );
        let json =
            json!({"unit": unit, "base": bn, "base_value": b, "other": on, "other_value": o});
        self.row(section, what, text, json);
    }

    /// A p50/p99 pair in `unit`.
    pub(crate) fn spread(
        &mut self,
        section: &str,
        what: &str,
        unit: &str,
        (p50, p99): (f64, f64),
        n: usize,
    ) {
        let text = format!("p50 {p50:.2} {unit}, p99 {p99:.2} {unit} (n={n})");
        let json = json!({"unit": unit, "p50": p50, "p99": p99, "n": n});
        self.row(section, what, text, json);
    }

    pub(crate) fn dns(&mut self, idle: &[Duration], loaded: &[Duration], n: usize) {
        let what = "A query web.berth, UDP, client netns -> gateway:53";
        self.spread(
            "DNS",
            &format!("{what}, idle"),
            "µs",
            p50_p99(&mut micros(idle)),
            n,
        );
        self.spread(
            "DNS",
            &format!("{what}, 2 other sockets querying"),
            "µs",
            p50_p99(&mut micros(loaded)),
            n,
        );
    }

    pub(crate) fn finish(&mut self, load_after: String) {
        self.load_after = load_after;
    }

    pub(crate) fn print(&self) {
        println!(
            "berth services bench (release), load average before: {}, after: {}",
            self.load_before, self.load_after
        );
        let mut section = "";
        for (s, what, text) in &self.rows {
            if s != section {
                println!("\n== {s}");
                section = s;
            }
            println!("  {what}\n      {text}");
        }
    }

    pub(crate) fn write_json(&self, path: &str) -> anyhow::Result<()> {
        if let Some(dir) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(dir)?;
        }
        let all = json!({"load_before": self.load_before, "load_after": self.load_after, "rows": self.json});
        std::fs::write(path, serde_json::to_string_pretty(&all)?)?;
        Ok(())
    }
}
