//! The node's capacity: cores and memory read from the host (or given), minus a reservation,
//! and the quantities operators write them in ("1500m", "2", "512Mi", "4g").

use berth_proto::v1::Resources;

/// Millicores from "500m", "2" or "1.5" (cores).
pub fn parse_cpu(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "invalid cpu quantity {text:?} (expected cores like 2 or 1.5, or millicores like 500m)"
        )
    };
    if let Some(m) = t.strip_suffix('m') {
        return m.parse::<u64>().map_err(|_| bad());
    }
    let cores: f64 = t.parse().map_err(|_| bad())?;
    if !cores.is_finite() || !(0.0..=1e6).contains(&cores) {
        return Err(bad());
    }
    Ok((cores * 1000.0).round() as u64)
}

/// Bytes from "512m", "512Mi", "4g", "4Gi", "1024k" or plain bytes (binary multiples).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("invalid memory quantity {text:?} (expected bytes or a k, m, g suffix)");
    let lower = t.to_ascii_lowercase();
    let lower = lower.strip_suffix('i').unwrap_or(&lower);
    let lower = lower.strip_suffix('b').unwrap_or(lower);
    let (digits, shift) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 10),
        Some('m') => (&lower[..lower.len() - 1], 20),
        Some('g') => (&lower[..lower.len() - 1], 30),
        Some('t') => (&lower[..lower.len() - 1], 40),
        _ => (lower, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// The host's cores (as the scheduler may use them: the cpuset this process may run on) and
/// physical memory.
pub fn host_total() -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    Resources {
        cpu_millis: cpus * 1000,
        memory_bytes: memory,
    }
}

/// Total minus the reservation for the system and the agent, never below zero.
pub fn allocatable(total: &Resources, reserved: &Resources) -> Resources {
    Resources {
        cpu_millis: total.cpu_millis.saturating_sub(reserved.cpu_millis),
        memory_bytes: total.memory_bytes.saturating_sub(reserved.memory_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("500m"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("1.5"), Ok(1500));
        assert!(parse_cpu("abc").unwrap_err().contains("abc"));
        assert!(parse_cpu("-1").is_err());
        assert!(parse_cpu("1.5m").is_err());
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("1024"), Ok(1024));
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("512Mi"), Ok(512 << 20));
        assert_eq!(parse_memory("4G"), Ok(4 << 30));
        assert_eq!(parse_memory("64kb"), Ok(64 << 10));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("99999999999999t").is_err());
    }

    #[test]
    fn host_has_cores_and_memory_and_reservation_saturates() {
        let total = host_total();
        assert!(total.cpu_millis >= 1000 && total.memory_bytes > 0);
        let a = allocatable(
            &total,
            &Resources {
                cpu_millis: u64::MAX,
                memory_bytes: 1,
            },
        );
        assert_eq!(a.cpu_millis, 0);
        assert_eq!(a.memory_bytes, total.memory_bytes - 1);
    }
}
