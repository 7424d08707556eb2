//! Resource flags: memory sizes, CPU fractions as CFS quota/period, and the pids limit.

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};

use super::{BundleError, RunOverrides};

/// The CFS period berth uses (docker's): 100 ms.
pub(super) const CFS_PERIOD_US: u64 = 100_000;

/// Parses `64m`, `1g`, `512k`, `100b` or a plain byte count (binary units, as docker does).
pub fn parse_memory(text: &str) -> Result<i64, BundleError> {
    let bad = || BundleError::BadMemory(text.to_string());
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, shift) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 10),
        Some((i, 'm')) => (&lower[..i], 20),
        Some((i, 'g')) => (&lower[..i], 30),
        Some((i, 't')) => (&lower[..i], 40),
        Some(_) => (lower, 0),
        None => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(1i64 << shift).ok_or_else(bad)?;
    if bytes <= 0 {
        return Err(bad());
    }
    Ok(bytes)
}

/// `--cpus 0.5` as (quota, period) in microseconds.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "cpus is checked to (0, 1024]: the quota is at most 1.024e8, exact in f64 and i64"
)]
pub fn cpus_to_cfs(cpus: f64) -> Result<(i64, u64), BundleError> {
    if !cpus.is_finite() || cpus <= 0.0 || cpus > 1024.0 {
        return Err(BundleError::BadCpus(cpus));
    }
    let quota = (cpus * CFS_PERIOD_US as f64).round() as i64;
    // The kernel's minimum quota is 1 ms.
    Ok((quota.max(1000), CFS_PERIOD_US))
}

pub(super) fn apply(res: &mut LinuxResources, o: &RunOverrides) -> Result<(), BundleError> {
    if let Some(limit) = o.memory_bytes {
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(limit));
        res.set_memory(Some(memory));
    }
    if let Some(cpus) = o.cpus {
        let (quota, period) = cpus_to_cfs(cpus)?;
        let mut cpu = LinuxCpu::default();
        cpu.set_quota(Some(quota));
        cpu.set_period(Some(period));
        res.set_cpu(Some(cpu));
    }
    if let Some(limit) = o.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(limit);
        res.set_pids(Some(pids));
    }
    Ok(())
}
