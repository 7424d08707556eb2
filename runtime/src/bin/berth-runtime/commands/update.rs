//! `update [--resources FILE|-] [--memory N] [--cpu-quota N] ... ID`: changes a container's
//! cgroup limits; flags override the same fields of `--resources`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use oci_spec::runtime::{LinuxCpu, LinuxPids, LinuxResources};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// JSON file of linux.resources (`-` for stdin).
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes (suffixes k, m, g accepted; -1 for none).
    #[arg(short, long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit in bytes.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit in bytes.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPU CFS quota in microseconds per period (-1 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU shares (relative weight).
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// CPUs allowed (0-3, 0,1).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of tasks (-1 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    pub id: String,
}

/// Bytes from `512`, `64k`, `64m`, `1g` or `-1`.
fn parse_bytes(flag: &str, text: &str) -> anyhow::Result<i64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (digits, unit) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 1i64 << 10),
        Some((i, 'm')) => (&lower[..i], 1 << 20),
        Some((i, 'g')) => (&lower[..i], 1 << 30),
        _ => (lower, 1),
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .with_context(|| format!("--{flag} {text:?}: expected bytes like 67108864 or 64m"))
}

fn read_resources(path: &Path) -> anyhow::Result<LinuxResources> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading resources from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text)
        .with_context(|| format!("invalid resources JSON {}", path.display()))
}

fn resources(args: &Args) -> anyhow::Result<LinuxResources> {
    let mut r = match &args.resources {
        Some(path) => read_resources(path)?,
        None => LinuxResources::default(),
    };
    if args.memory.is_some() || args.memory_reservation.is_some() || args.memory_swap.is_some() {
        let mut m = r.memory().unwrap_or_default();
        if let Some(v) = &args.memory {
            m.set_limit(Some(parse_bytes("memory", v)?));
        }
        if let Some(v) = &args.memory_reservation {
            m.set_reservation(Some(parse_bytes("memory-reservation", v)?));
        }
        if let Some(v) = &args.memory_swap {
            m.set_swap(Some(parse_bytes("memory-swap", v)?));
        }
        r.set_memory(Some(m));
    }
    let cpu_flags = args.cpu_quota.is_some()
        || args.cpu_period.is_some()
        || args.cpu_shares.is_some()
        || args.cpuset_cpus.is_some()
        || args.cpuset_mems.is_some();
    if cpu_flags {
        let mut c = r.cpu().clone().unwrap_or_else(LinuxCpu::default);
        if let Some(v) = args.cpu_quota {
            c.set_quota(Some(v));
        }
        if let Some(v) = args.cpu_period {
            c.set_period(Some(v));
        }
        if let Some(v) = args.cpu_shares {
            c.set_shares(Some(v));
        }
        if let Some(v) = &args.cpuset_cpus {
            c.set_cpus(Some(v.clone()));
        }
        if let Some(v) = &args.cpuset_mems {
            c.set_mems(Some(v.clone()));
        }
        r.set_cpu(Some(c));
    }
    if let Some(limit) = args.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(limit);
        r.set_pids(Some(p));
    }
    Ok(r)
}

pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    let r = resources(&args)?;
    berth_runtime::update::update(root, &args.id, &r)?;
    Ok(())
}
