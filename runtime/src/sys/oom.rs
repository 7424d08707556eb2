//! OOM detection: how often the kernel's OOM killer acted in a memory cgroup, on cgroup v1
//! (`memory.oom_control`) and on cgroup2 wherever it is mounted (`/sys/fs/cgroup`, or
//! `/sys/fs/cgroup/unified` on hybrid hosts).

use std::path::{Path, PathBuf};

/// Where the v1 memory controller is mounted on the hosts berth runs on.
const V1_MEMORY: &str = "/sys/fs/cgroup/memory";

/// How many times the OOM killer fired in the cgroup at `path` (from the root of a
/// hierarchy, e.g. `/berth-ID`); 0 when no memory cgroup of that path exists.
pub fn oom_kills(path: &Path) -> u64 {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if let Ok(text) =
        std::fs::read_to_string(Path::new(V1_MEMORY).join(rel).join("memory.oom_control"))
    {
        return counter(&text, "oom_kill");
    }
    cgroup2_mounts()
        .into_iter()
        .find_map(|mount| std::fs::read_to_string(mount.join(rel).join("memory.events")).ok())
        .map_or(0, |text| counter(&text, "oom_kill"))
}

/// Where cgroup2 is mounted, from /proc/self/mounts.
fn cgroup2_mounts() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, target, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .collect()
}

/// The value of `key N` in a flat-keyed cgroup file; 0 when absent.
fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::counter;

    #[test]
    fn counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(counter(v1, "oom_kill"), 2);
        let v2 = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(v2, "oom_kill"), 1);
        assert_eq!(counter("low 0\n", "oom_kill"), 0);
    }

    #[test]
    fn a_cgroup_that_does_not_exist_has_no_kills() {
        let path = format!("/berth-no-such-cgroup-{}", std::process::id());
        assert_eq!(super::oom_kills(std::path::Path::new(&path)), 0);
    }
}
