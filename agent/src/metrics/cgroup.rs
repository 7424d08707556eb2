//! A container's resource figures, read from its cgroup's files when a scrape asks (cgroup v1
//! on a legacy or hybrid host, v2 on a unified one), in cAdvisor's units.

use std::path::{Path, PathBuf};

use super::parse;

/// Where the node's cgroup hierarchies are mounted.
#[derive(Debug, Clone)]
pub(crate) enum Hierarchies {
    /// One directory per controller (a hybrid host counts as v1, as the runtime manages it:
    /// its cgroup2 mount holds no controller the figures come from).
    V1 {
        cpuacct: PathBuf,
        cpu: PathBuf,
        memory: PathBuf,
    },
    /// The unified hierarchy.
    V2 { root: PathBuf },
}

impl Hierarchies {
    /// The layout under `root` (normally /sys/fs/cgroup): v2 when the root itself is the
    /// unified hierarchy (it has `cgroup.controllers`), v1 otherwise. The controller names
    /// resolve through the symlinks a combined mount (`cpu,cpuacct`) comes with.
    pub(crate) fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() {
            Self::V2 {
                root: root.to_path_buf(),
            }
        } else {
            Self::V1 {
                cpuacct: root.join("cpuacct"),
                cpu: root.join("cpu"),
                memory: root.join("memory"),
            }
        }
    }
}

/// One container's figures; `None` where its file was missing or unreadable (a container
/// that stops during the scrape loses its series, not the scrape).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Stats {
    pub cpu_seconds: Option<f64>,
    pub throttled_periods: Option<u64>,
    pub memory_usage: Option<u64>,
    /// Usage less inactive file cache: what the kernel cannot simply drop.
    pub working_set: Option<u64>,
    /// `Some(0)` when unlimited, as cAdvisor reports it.
    pub memory_limit: Option<u64>,
    pub oom_kills: Option<u64>,
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// Nanoseconds or microseconds as seconds (a ratio: precision loss is the point).
#[allow(clippy::cast_precision_loss)]
fn seconds(value: u64, per_second: f64) -> f64 {
    value as f64 / per_second
}

/// Reads the figures of the cgroup at `rel` (relative to each hierarchy's root).
pub(crate) fn stats(h: &Hierarchies, rel: &Path) -> Stats {
    match h {
        Hierarchies::V1 {
            cpuacct,
            cpu,
            memory,
        } => {
            let mem = memory.join(rel);
            let usage = read(&mem, "memory.usage_in_bytes").and_then(|t| parse::single(&t));
            let inactive =
                read(&mem, "memory.stat").and_then(|t| parse::keyed(&t, "total_inactive_file"));
            Stats {
                cpu_seconds: read(&cpuacct.join(rel), "cpuacct.usage")
                    .and_then(|t| parse::single(&t))
                    .map(|ns| seconds(ns, 1e9)),
                throttled_periods: read(&cpu.join(rel), "cpu.stat")
                    .and_then(|t| parse::keyed(&t, "nr_throttled")),
                memory_usage: usage,
                working_set: usage.map(|u| u.saturating_sub(inactive.unwrap_or(0))),
                memory_limit: read(&mem, "memory.limit_in_bytes")
                    .map(|t| parse::v1_memory_limit(&t).unwrap_or(0)),
                oom_kills: read(&mem, "memory.oom_control")
                    .and_then(|t| parse::keyed(&t, "oom_kill")),
            }
        }
        Hierarchies::V2 { root } => {
            let dir = root.join(rel);
            let cpu_stat = read(&dir, "cpu.stat");
            let usage = read(&dir, "memory.current").and_then(|t| parse::single(&t));
            let inactive =
                read(&dir, "memory.stat").and_then(|t| parse::keyed(&t, "inactive_file"));
            Stats {
                cpu_seconds: cpu_stat
                    .as_deref()
                    .and_then(|t| parse::keyed(t, "usage_usec"))
                    .map(|us| seconds(us, 1e6)),
                throttled_periods: cpu_stat
                    .as_deref()
                    .and_then(|t| parse::keyed(t, "nr_throttled")),
                memory_usage: usage,
                working_set: usage.map(|u| u.saturating_sub(inactive.unwrap_or(0))),
                memory_limit: read(&dir, "memory.max")
                    .map(|t| parse::v2_memory_max(&t).unwrap_or(0)),
                oom_kills: read(&dir, "memory.events").and_then(|t| parse::keyed(&t, "oom_kill")),
            }
        }
    }
}

/// The process's network namespace's interfaces (loopback left out); empty when it is gone.
pub(crate) fn network(pid: u32) -> Vec<parse::InterfaceBytes> {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|t| parse::net_dev(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn v1_files_become_cadvisor_figures() {
        let root = tempfile::tempdir().unwrap();
        let h = Hierarchies::detect(root.path());
        let rel = Path::new("berth-agent/n1/c1");
        write(
            &root.path().join("cpuacct").join(rel),
            "cpuacct.usage",
            "2500000000\n",
        );
        write(
            &root.path().join("cpu").join(rel),
            "cpu.stat",
            "nr_periods 9\nnr_throttled 4\n",
        );
        let mem = root.path().join("memory").join(rel);
        write(&mem, "memory.usage_in_bytes", "10000\n");
        write(&mem, "memory.stat", "total_inactive_file 3000\n");
        write(&mem, "memory.limit_in_bytes", "9223372036854771712\n");
        write(
            &mem,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        let s = stats(&h, rel);
        assert_eq!(
            s,
            Stats {
                cpu_seconds: Some(2.5),
                throttled_periods: Some(4),
                memory_usage: Some(10_000),
                working_set: Some(7_000),
                memory_limit: Some(0),
                oom_kills: Some(1),
            }
        );
    }

    #[test]
    fn v2_files_become_the_same_figures() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "cgroup.controllers", "cpu memory pids\n");
        let h = Hierarchies::detect(root.path());
        let rel = Path::new("berth-agent/n1/c1");
        let dir = root.path().join(rel);
        write(
            &dir,
            "cpu.stat",
            "usage_usec 1500000\nnr_periods 5\nnr_throttled 2\n",
        );
        write(&dir, "memory.current", "8192\n");
        write(&dir, "memory.stat", "anon 4096\ninactive_file 10000\n");
        write(&dir, "memory.max", "67108864\n");
        write(
            &dir,
            "memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        );
        let s = stats(&h, rel);
        assert_eq!(s.cpu_seconds, Some(1.5));
        assert_eq!(s.throttled_periods, Some(2));
        assert_eq!(s.memory_usage, Some(8192));
        assert_eq!(s.working_set, Some(0), "never below zero");
        assert_eq!(s.memory_limit, Some(64 << 20));
        assert_eq!(s.oom_kills, Some(0));
    }

    #[test]
    fn a_missing_cgroup_gives_no_figures() {
        let root = tempfile::tempdir().unwrap();
        let h = Hierarchies::detect(root.path());
        assert_eq!(stats(&h, Path::new("gone")), Stats::default());
        assert!(network(u32::MAX).is_empty());
    }
}
