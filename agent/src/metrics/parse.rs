//! Parsers of the kernel files container metrics come from: one per file (cgroup v1 and v2,
//! and /proc/PID/net/dev), each taking the file's text; `None` where a value is absent or
//! not a number, so that one odd file drops one series, not the scrape.

/// A file holding one number: v1 `cpuacct.usage`, `memory.usage_in_bytes`; v2
/// `memory.current`.
pub(crate) fn single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// v1 `memory.limit_in_bytes`: the limit, or `None` when unlimited (the kernel writes its
/// page counter's maximum, rounded down to a page: anything at or above 2^62 means none).
pub(crate) fn v1_memory_limit(text: &str) -> Option<u64> {
    single(text).filter(|&v| v < 1 << 62)
}

/// v2 `memory.max`: the limit, or `None` for `max` (unlimited).
pub(crate) fn v2_memory_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        other => other.parse().ok(),
    }
}

/// A flat-keyed file's value for `key` (lines of `KEY VALUE`): `cpu.stat` (v1 and v2),
/// `memory.stat` (v1 and v2), v1 `memory.oom_control`, v2 `memory.events`.
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// One interface's byte counters from /proc/PID/net/dev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterfaceBytes {
    pub name: String,
    pub receive: u64,
    pub transmit: u64,
}

/// /proc/PID/net/dev (the counters of the process's network namespace), loopback left out
/// as cAdvisor does: two header lines, then `NAME: RX-BYTES RX-PACKETS ... TX-BYTES ...`
/// (received bytes are the first column, transmitted the ninth).
pub(crate) fn net_dev(text: &str) -> Vec<InterfaceBytes> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let fields: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            (name != "lo" && fields.len() >= 9).then(|| InterfaceBytes {
                name: name.to_string(),
                receive: fields[0],
                transmit: fields[8],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_values_and_bad_text() {
        assert_eq!(single("123456789\n"), Some(123_456_789));
        assert_eq!(single(""), None);
        assert_eq!(single("12 34\n"), None);
    }

    #[test]
    fn a_v1_memory_limit_is_none_when_unlimited() {
        assert_eq!(v1_memory_limit("67108864\n"), Some(64 << 20));
        // What an unlimited cgroup shows on x86-64 (4 KiB pages).
        assert_eq!(v1_memory_limit("9223372036854771712\n"), None);
    }

    #[test]
    fn a_v2_memory_max_is_none_for_max() {
        assert_eq!(v2_memory_max("max\n"), None);
        assert_eq!(v2_memory_max("134217728\n"), Some(128 << 20));
        assert_eq!(v2_memory_max("lots\n"), None);
    }

    #[test]
    fn cpu_stat_v1_and_v2() {
        let v1 = "nr_periods 40\nnr_throttled 7\nthrottled_time 123456\n";
        assert_eq!(keyed(v1, "nr_throttled"), Some(7));
        assert_eq!(keyed(v1, "nr_periods"), Some(40));
        let v2 = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n\
                  nr_periods 10\nnr_throttled 3\nthrottled_usec 900\n";
        assert_eq!(keyed(v2, "usage_usec"), Some(2_500_000));
        assert_eq!(keyed(v2, "nr_throttled"), Some(3));
        assert_eq!(keyed(v2, "nr_bursts"), None);
    }

    #[test]
    fn memory_stat_keys_are_matched_whole() {
        let v1 = "cache 4096\ninactive_file 8192\ntotal_cache 4096\ntotal_inactive_file 12288\n";
        assert_eq!(keyed(v1, "total_inactive_file"), Some(12288));
        assert_eq!(keyed(v1, "inactive_file"), Some(8192));
        let v2 = "anon 1048576\nfile 2097152\ninactive_file 1048576\nactive_file 1048576\n";
        assert_eq!(keyed(v2, "inactive_file"), Some(1_048_576));
    }

    #[test]
    fn oom_kills_from_v1_oom_control_and_v2_memory_events() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(keyed(v1, "oom_kill"), Some(2));
        // Kernels before 4.13 have no oom_kill line.
        assert_eq!(keyed("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"), None);
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(v2, "oom_kill"), Some(1));
    }

    #[test]
    fn net_dev_leaves_out_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:     980      10    0    0    0     0          0         0      980      10    0    0    0     0       0          0\n  \
            eth0: 1561054   5216    0    0    0     0          0         0  3283416   39612    0    0    0     0       0          0\n";
        assert_eq!(
            net_dev(text),
            vec![InterfaceBytes {
                name: "eth0".into(),
                receive: 1_561_054,
                transmit: 3_283_416,
            }]
        );
        assert!(net_dev("").is_empty());
        assert!(
            net_dev("h1\nh2\n eth0: 1 2 3\n").is_empty(),
            "too few columns"
        );
    }
}
