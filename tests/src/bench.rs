//! What the benchmark binaries (`src/bin/bench-*.rs`) share: their knobs from the environment,
//! percentiles, the machine's size, and writing their results as JSON.

use std::fs;
use std::path::{Path, PathBuf};

/// `key` from the environment as a number, or `default`; a value that is not a number stops
/// the run (a typo must not silently become the default).
pub fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// The `q` quantile (0..=1) of `values` by nearest rank (0 for none): the p99 of fewer than
/// 100 samples is their maximum.
pub fn pct(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = usize::try_from(whole((q * float_len(v.len())).ceil()))
        .unwrap_or(usize::MAX)
        .clamp(1, v.len());
    v[rank - 1]
}

/// A count or size as a float, for figures and ratios.
#[allow(
    clippy::cast_precision_loss,
    reason = "benchmark figures stay far below 2^52, where f64 is exact"
)]
pub fn float(n: u64) -> f64 {
    n as f64
}

/// [`float`] for a length.
#[allow(
    clippy::cast_precision_loss,
    reason = "benchmark figures stay far below 2^52, where f64 is exact"
)]
pub fn float_len(n: usize) -> f64 {
    n as f64
}

/// [`float`] for a signed figure (a difference, a time in ms).
#[allow(
    clippy::cast_precision_loss,
    reason = "benchmark figures stay far below 2^52, where f64 is exact"
)]
pub fn float_signed(n: i64) -> f64 {
    n as f64
}

/// A figure rounded toward zero to a whole number, for display in whole units; negative
/// and NaN give 0, too large saturates.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "saturating float-to-int is the point: a rounded figure for display"
)]
pub fn whole(x: f64) -> u64 {
    x as u64
}

/// The 1-minute load average (the machine may be shared with other work).
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// n, min, p50, p99, max and mean of `values` as JSON (null for none).
pub fn stats(values: &[f64]) -> serde_json::Value {
    if values.is_empty() {
        return serde_json::Value::Null;
    }
    let mean = values.iter().sum::<f64>() / float_len(values.len());
    serde_json::json!({
        "n": values.len(),
        "min": pct(values, 0.0),
        "p50": pct(values, 0.5),
        "p99": pct(values, 0.99),
        "max": pct(values, 1.0),
        "mean": mean,
    })
}

/// The CPUs this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// A /proc/meminfo field in kB (0 when missing), e.g. `"MemTotal:"`.
pub fn meminfo_kb(field: &str) -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Writes `results` as pretty JSON to `path` (making its directory) and says where.
pub fn write_results(path: &Path, results: &serde_json::Value) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("create the results dir");
    }
    fs::write(path, serde_json::to_string_pretty(results).expect("JSON"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    println!("results: {}", path.display());
}

/// Where the results go: `$BENCH_OUT`, or `target/bench/NAME` in the workspace.
pub fn out_path(name: &str) -> PathBuf {
    std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/bench").join(name))
}

/// The lines of `$BENCH_PLACEMENT` (the output of `cargo bench --bench placement`, run by the
/// bench script beforehand) that `keep` accepts; none without it.
pub fn placement_lines(keep: impl Fn(&str) -> bool) -> Vec<String> {
    std::env::var_os("BENCH_PLACEMENT")
        .map(|p| {
            fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("BENCH_PLACEMENT {}: {e}", Path::new(&p).display()))
        })
        .unwrap_or_default()
        .lines()
        .filter(|l| keep(l))
        .map(str::to_string)
        .collect()
}

/// The figures of one line of `cargo bench --bench placement`: `placement: 9500 of 10000
/// replicas placed (...) over 1000 nodes: 110271 placements/s median …; 500 unschedulable,
/// apart …`. The rate counts placed replicas only.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementLine {
    pub line: String,
    /// The workload: `9500 of 10000 replicas placed (...) over 1000 nodes`.
    pub what: String,
    pub per_s: f64,
    pub placed: u64,
    pub total: u64,
    pub unschedulable: u64,
}

impl PlacementLine {
    /// None for a line of any other shape (e.g. `  e.g. <reason>`).
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("placement: ")?;
        let (what, figures) = rest.split_once(": ")?;
        let mut words = what.split_whitespace();
        let placed = words.next()?.parse().ok()?;
        let total = words.nth(1)?.parse().ok()?;
        let per_s = figures.split(" placements/s").next()?.parse().ok()?;
        let unschedulable = figures
            .split(" unschedulable")
            .next()?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()?;
        Some(Self {
            line: line.to_string(),
            what: what.to_string(),
            per_s,
            placed,
            total,
            unschedulable,
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "line": self.line,
            "per_s": self.per_s,
            "placed": self.placed,
            "total": self.total,
            "unschedulable": self.unschedulable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::PlacementLine;

    #[test]
    fn a_placement_line_gives_its_figures() {
        let line = "placement: 9500 of 10000 replicas placed (100 deployments x 100) over 1000 \
                    nodes: 110271 placements/s median of 9 rounds (min 1, max 2, 9.07 \
                    us/placement); 500 unschedulable, apart (116075 decisions/s counting them); \
                    deterministic across rounds";
        let p = PlacementLine::parse(line).expect("parsed");
        assert_eq!(
            (p.per_s, p.placed, p.total, p.unschedulable),
            (110271.0, 9500, 10000, 500)
        );
        assert_eq!(
            p.what,
            "9500 of 10000 replicas placed (100 deployments x 100) over 1000 nodes"
        );
        assert_eq!(PlacementLine::parse("  e.g. 0/3 nodes are available"), None);
    }
}
