//! The quantities `Resources` are written in by people: cpu as cores or millicores ("2",
//! "1.5", "500m") and memory as bytes with binary suffixes ("64m", "512Mi", "4g").

/// Millicores from "500m", "2" or "1.5" (cores).
pub fn parse_cpu(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad =
        || format!("{text:?} is not a CPU amount (cores like 2 or 0.5, or millicores like 500m)");
    if let Some(m) = t.strip_suffix('m') {
        return m.parse::<u64>().map_err(|_| bad());
    }
    let cores: f64 = t.parse().map_err(|_| bad())?;
    if !cores.is_finite() || !(0.0..1e6).contains(&cores) {
        return Err(bad());
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "cores is checked to [0, 1e6): the millicores fit u64 exactly"
    )]
    Ok((cores * 1000.0).round() as u64)
}

/// Bytes from "512m", "512Mi", "4g", "4Gi", "1024k" or plain bytes (binary multiples).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a memory amount (bytes, or a number with k, m, g or t like \"64m\")"
        )
    };
    let lower = text.trim().to_ascii_lowercase();
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
}
