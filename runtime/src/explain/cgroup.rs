//! A process's cgroups: which hierarchy holds each controller, and the memory, CPU and pids
//! limits and usage in effect there (v1, v2 or hybrid).

use std::fs;
use std::path::{Path, PathBuf};

use super::mounts::MountInfo;
use super::{Cgroup, CgroupPath, CpuFacts, ExplainError, MemoryFacts, PidsFacts, read};

/// A cgroup filesystem mounted on this machine: its mount point, root and controllers.
struct CgroupMount {
    dir: PathBuf,
    root: String,
    v2: bool,
    controllers: Vec<String>,
}

fn cgroup_mounts() -> Vec<CgroupMount> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(info) = MountInfo::parse(line) else {
            continue;
        };
        let v2 = info.fs_type == "cgroup2";
        if !v2 && info.fs_type != "cgroup" {
            continue;
        }
        let controllers = if v2 {
            Vec::new()
        } else {
            info.super_options
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains("release_agent"))
                .map(str::to_string)
                .collect()
        };
        out.push(CgroupMount {
            dir: PathBuf::from(&info.mount_point),
            root: info.root.clone(),
            v2,
            controllers,
        });
    }
    out
}

pub(super) fn cgroup(proc_dir: &Path) -> Result<Cgroup, ExplainError> {
    let text = read(&proc_dir.join("cgroup"))?;
    let paths = cgroup_paths(&text, &cgroup_mounts());
    let has_v1 = paths.iter().any(|p| !p.controllers.is_empty());
    let has_v2 = paths
        .iter()
        .any(|p| p.controllers.is_empty() && p.hierarchy == 0);
    let version = match (has_v1, has_v2) {
        (true, true) => "hybrid",
        (true, false) => "v1",
        _ => "v2",
    }
    .to_string();
    let memory = memory_facts(&paths);
    let cpu = cpu_facts(&paths);
    let pids = pids_facts(&paths);
    Ok(Cgroup {
        version,
        paths,
        memory,
        cpu,
        pids,
    })
}

/// Each line of /proc/PID/cgroup, with the directory it names on this machine's mounts.
fn cgroup_paths(text: &str, mounts: &[CgroupMount]) -> Vec<CgroupPath> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(h), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let hierarchy: u32 = h.parse().unwrap_or(0);
        let controllers: Vec<String> = ctrl
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let mount = if controllers.is_empty() {
            mounts.iter().find(|m| m.v2)
        } else {
            mounts.iter().find(|m| {
                !m.v2
                    && controllers
                        .iter()
                        .all(|c| m.controllers.iter().any(|mc| mc == c))
            })
        };
        let dir = mount.map(|m| {
            // The path is relative to the hierarchy's root; the mount may show a subtree.
            let rel = path.strip_prefix(m.root.as_str()).unwrap_or(path);
            m.dir.join(rel.trim_start_matches('/'))
        });
        paths.push(CgroupPath {
            hierarchy,
            controllers,
            path: path.to_string(),
            dir,
        });
    }
    paths
}

/// A controller's file: in its v1 hierarchy, or else in the v2 one if it has it.
fn controller_file(
    paths: &[CgroupPath],
    controller: &str,
    v1_file: &str,
    v2_file: &str,
) -> Option<PathBuf> {
    let v1_dir = paths
        .iter()
        .find(|p| p.controllers.iter().any(|x| x == controller))
        .and_then(|p| p.dir.clone());
    if let Some(dir) = v1_dir {
        return Some(dir.join(v1_file));
    }
    let v2_dir = paths
        .iter()
        .find(|p| p.controllers.is_empty() && p.hierarchy == 0)
        .and_then(|p| p.dir.clone());
    let file = v2_dir?.join(v2_file);
    file.exists().then_some(file)
}

fn memory_facts(paths: &[CgroupPath]) -> MemoryFacts {
    let mut memory = MemoryFacts::default();
    if let Some(limit) = controller_file(paths, "memory", "memory.limit_in_bytes", "memory.max") {
        memory.limit_bytes = read_limit(&limit);
        memory.usage_bytes = read_u64(&limit.with_file_name(if limit.ends_with("memory.max") {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        }));
        memory.source = Some(limit);
    }
    memory
}

fn cpu_facts(paths: &[CgroupPath]) -> CpuFacts {
    let mut cpu = CpuFacts::default();
    if let Some(file) = controller_file(paths, "cpu", "cpu.cfs_quota_us", "cpu.max") {
        if file.ends_with("cpu.max") {
            let text = fs::read_to_string(&file).unwrap_or_default();
            let mut it = text.split_whitespace();
            cpu.quota_us = it.next().and_then(|q| q.parse().ok());
            cpu.period_us = it.next().and_then(|p| p.parse().ok());
        } else {
            // -1 means no quota.
            cpu.quota_us = read_u64(&file);
            cpu.period_us = read_u64(&file.with_file_name("cpu.cfs_period_us"));
        }
        if let (Some(q), Some(p)) = (cpu.quota_us, cpu.period_us)
            && p > 0
        {
            cpu.cpus = Some(cpu_share(q, p));
        }
        cpu.source = Some(file);
    }
    cpu
}

/// CPUs' worth of time a quota allows per period.
#[allow(
    clippy::cast_precision_loss,
    reason = "a ratio shown to two decimals; microsecond counts far below 2^52"
)]
fn cpu_share(quota_us: u64, period_us: u64) -> f64 {
    quota_us as f64 / period_us as f64
}

fn pids_facts(paths: &[CgroupPath]) -> PidsFacts {
    let mut pids = PidsFacts::default();
    if let Some(file) = controller_file(paths, "pids", "pids.max", "pids.max") {
        pids.max = read_u64(&file);
        pids.current = read_u64(&file.with_file_name("pids.current"));
        pids.source = Some(file);
    }
    pids
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A memory limit; v1's "no limit" is a huge page-rounded number, v2's is "max".
fn read_limit(path: &Path) -> Option<u64> {
    read_u64(path).filter(|v| *v < (1u64 << 62))
}
