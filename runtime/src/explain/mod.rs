//! What isolates a running container, read from /proc and /sys: the namespaces of its first
//! process against the reader's own, its cgroups with their limits and usage, the mounts it
//! sees, its capability sets, seccomp mode and uid/gid maps. `berth explain` prints it; the
//! agent gathers it for containers on its node.

mod cgroup;
mod mounts;
mod report;

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use report::{binary_bytes, report};

/// Why a container could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("process {pid} of container {id} is gone")]
    Gone { pid: i32, id: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Malformed { path: PathBuf, what: String },
}

fn read(path: &Path) -> Result<String, ExplainError> {
    fs::read_to_string(path).map_err(|source| ExplainError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Everything `explain` reports about one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    pub id: String,
    pub name: String,
    /// Whose /proc the facts were read from: "this host" (berth itself) or "node NAME" (that
    /// node's agent); "host" namespaces below are that reader's own.
    pub source: String,
    /// The container's first process, as this machine's /proc numbers it.
    pub pid: i32,
    pub namespaces: Vec<Namespace>,
    pub cgroup: Cgroup,
    pub mounts: Mounts,
    pub capabilities: Capabilities,
    pub seccomp: Seccomp,
    pub user: UserMapping,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Namespace {
    /// mnt, uts, ipc, pid, net, cgroup, user or time.
    pub kind: String,
    /// The namespace's inode as the container sees it (None: the kernel lacks this namespace).
    pub inode: Option<u64>,
    /// The same namespace of the host (of `berth` itself).
    pub host_inode: Option<u64>,
    /// True when the container shares the host's namespace.
    pub shared: bool,
    pub meaning: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cgroup {
    /// "v1", "v2" or "hybrid" (v1 controllers with a v2 hierarchy beside them).
    pub version: String,
    pub paths: Vec<CgroupPath>,
    pub memory: MemoryFacts,
    pub cpu: CpuFacts,
    pub pids: PidsFacts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CgroupPath {
    /// The hierarchy id from /proc/PID/cgroup (0 for v2).
    pub hierarchy: u32,
    /// The controllers of that hierarchy (empty for v2).
    pub controllers: Vec<String>,
    pub path: String,
    /// Where that cgroup's files are on this machine, when found.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryFacts {
    /// The limit in bytes (None: unlimited or unknown).
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    /// The file the limit came from.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuFacts {
    /// Microseconds of CPU time per period (None: no quota).
    pub quota_us: Option<u64>,
    pub period_us: Option<u64>,
    /// quota / period: how many CPUs' worth of time it may use.
    pub cpus: Option<f64>,
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PidsFacts {
    /// The most tasks it may have (None: no limit or unknown).
    pub max: Option<u64>,
    pub current: Option<u64>,
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mounts {
    pub count: usize,
    pub root_fs_type: String,
    pub root_read_only: bool,
    /// Paths hidden from it: a /dev/null bind over a file, an empty read-only tmpfs over a dir.
    pub masked: Vec<String>,
    /// Other mount points it can read but not write.
    pub read_only: Vec<String>,
    pub all: Vec<Mount>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mount {
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capabilities {
    pub inheritable: CapSet,
    pub permitted: CapSet,
    pub effective: CapSet,
    pub bounding: CapSet,
    pub ambient: CapSet,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapSet {
    /// The mask as /proc/PID/status prints it.
    pub hex: String,
    /// The capabilities in it, lower case (cap_chown, ...).
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seccomp {
    /// 0 disabled, 1 strict, 2 filter.
    pub mode: u8,
    pub mode_name: String,
    /// BPF programs installed (`Seccomp_filters`): berth installs one per distinct action of
    /// the profile (allow-list plus one per errno), so this is not a rule count.
    pub filters: Option<u64>,
    pub no_new_privs: bool,
    /// The profile in the container's config.json, when the explainer could read it.
    #[serde(default)]
    pub profile: Option<SeccompProfile>,
}

/// What the spec's seccomp profile says (the filter itself cannot be read back from /proc).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeccompProfile {
    /// The action for any syscall without a rule (SCMP_ACT_ERRNO for an allow-list).
    pub default_action: String,
    /// Rule entries in linux.seccomp.syscalls.
    pub rules: usize,
    /// Distinct syscall names those rules cover.
    pub syscalls: usize,
}

/// The seccomp profile of the bundle config at `config`; None when it cannot be read or the
/// container has no profile.
pub fn seccomp_profile(config: &Path) -> Option<SeccompProfile> {
    let spec: oci_spec::runtime::Spec =
        serde_json::from_str(&fs::read_to_string(config).ok()?).ok()?;
    let seccomp = spec.linux().as_ref()?.seccomp().clone()?;
    let rules = seccomp.syscalls().clone().unwrap_or_default();
    let names: std::collections::BTreeSet<&String> = rules.iter().flat_map(|r| r.names()).collect();
    let default_action = serde_json::to_value(seccomp.default_action())
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Some(SeccompProfile {
        default_action,
        rules: rules.len(),
        syscalls: names.len(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserMapping {
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
    /// True when both maps are the identity (0 0 4294967295): ids inside are the host's ids.
    pub identity: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdRange {
    pub inside: u64,
    pub outside: u64,
    pub count: u64,
}

/// Only the cgroup facts of the process `pid`: its limits and usage, where they live.
pub fn cgroup_of(pid: i32) -> Result<Cgroup, ExplainError> {
    cgroup::cgroup(&PathBuf::from(format!("/proc/{pid}")))
}

/// Gathers every fact about the process `pid`.
pub fn explain(
    id: String,
    name: String,
    pid: i32,
    source: String,
) -> Result<Explanation, ExplainError> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !proc_dir.exists() {
        return Err(ExplainError::Gone { pid, id });
    }
    let status = read(&proc_dir.join("status"))?;
    Ok(Explanation {
        namespaces: namespaces(&proc_dir),
        cgroup: cgroup::cgroup(&proc_dir)?,
        mounts: mounts::mounts(&proc_dir)?,
        capabilities: capabilities(&status)?,
        seccomp: seccomp(&status),
        user: user_mapping(&proc_dir)?,
        id,
        name,
        pid,
        source,
    })
}

const NAMESPACES: [(&str, &str, &str); 8] = [
    (
        "mnt",
        "its own mount table: it sees its own filesystem tree",
        "it sees the host's mounts",
    ),
    (
        "uts",
        "its own hostname and domain name",
        "it has the host's hostname",
    ),
    (
        "ipc",
        "its own System V IPC objects and POSIX message queues",
        "it can reach the host's shared memory and message queues",
    ),
    (
        "pid",
        "its own process numbers: its first process is pid 1 and it cannot see host processes",
        "it sees every process of the host",
    ),
    (
        "net",
        "its own network stack: interfaces, addresses, routes and ports",
        "it uses the host's interfaces and ports",
    ),
    (
        "cgroup",
        "its own view of the cgroup tree: its cgroup looks like the root",
        "it sees the host's cgroup paths",
    ),
    (
        "user",
        "its own user and group ids, mapped to host ids (see the uid map)",
        "its user ids are the host's: root inside is root outside",
    ),
    (
        "time",
        "its own boot and monotonic clock offsets",
        "it has the host's clocks",
    ),
];

fn ns_inode(path: &Path) -> Option<u64> {
    let link = fs::read_link(path).ok()?;
    let text = link.to_string_lossy();
    let start = text.find('[')?;
    text[start + 1..].trim_end_matches(']').parse().ok()
}

fn namespaces(proc_dir: &Path) -> Vec<Namespace> {
    NAMESPACES
        .iter()
        .map(|(kind, own, shared_meaning)| {
            let inode = ns_inode(&proc_dir.join("ns").join(kind));
            let host_inode = ns_inode(&Path::new("/proc/self/ns").join(kind));
            let shared = inode.is_some() && inode == host_inode;
            let meaning = match (inode, shared) {
                (None, _) => "this kernel has no such namespace".to_string(),
                (Some(_), true) => format!("shared with the host: {shared_meaning}"),
                (Some(_), false) => format!("isolated: {own}"),
            };
            Namespace {
                kind: kind.to_string(),
                inode,
                host_inode,
                shared,
                meaning,
            }
        })
        .collect()
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

fn cap_set(status: &str, key: &str) -> Result<CapSet, ExplainError> {
    let malformed = |what: String| ExplainError::Malformed {
        path: PathBuf::from("/proc/PID/status"),
        what,
    };
    let hex = status_field(status, key)
        .ok_or_else(|| malformed(format!("no {key} line")))?
        .to_string();
    let mask =
        u64::from_str_radix(&hex, 16).map_err(|_| malformed(format!("bad {key} {hex:?}")))?;
    Ok(CapSet {
        names: cap_names(mask),
        hex,
    })
}

/// The names of the capabilities in `mask`, by number; unknown bits as cap_N.
pub fn cap_names(mask: u64) -> Vec<String> {
    let mut known: Vec<caps::Capability> = caps::all().into_iter().collect();
    known.sort_by_key(|c| c.index());
    let mut names = Vec::new();
    for bit in 0..64u8 {
        if mask & (1u64 << bit) == 0 {
            continue;
        }
        match known.iter().find(|c| c.index() == bit) {
            Some(c) => names.push(c.to_string().to_lowercase()),
            None => names.push(format!("cap_{bit}")),
        }
    }
    names
}

fn capabilities(status: &str) -> Result<Capabilities, ExplainError> {
    Ok(Capabilities {
        inheritable: cap_set(status, "CapInh")?,
        permitted: cap_set(status, "CapPrm")?,
        effective: cap_set(status, "CapEff")?,
        bounding: cap_set(status, "CapBnd")?,
        ambient: cap_set(status, "CapAmb")?,
    })
}

fn seccomp(status: &str) -> Seccomp {
    let mode: u8 = status_field(status, "Seccomp")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Seccomp {
        mode,
        mode_name: match mode {
            0 => "disabled",
            1 => "strict",
            2 => "filter",
            _ => "unknown",
        }
        .to_string(),
        filters: status_field(status, "Seccomp_filters").and_then(|v| v.parse().ok()),
        no_new_privs: status_field(status, "NoNewPrivs") == Some("1"),
        profile: None,
    }
}

fn id_map(path: &Path) -> Result<Vec<IdRange>, ExplainError> {
    let text = read(path)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|v| v.parse::<u64>());
            Some(IdRange {
                inside: it.next()?.ok()?,
                outside: it.next()?.ok()?,
                count: it.next()?.ok()?,
            })
        })
        .collect())
}

fn is_identity(map: &[IdRange]) -> bool {
    matches!(map, [r] if r.inside == 0 && r.outside == 0 && r.count == u64::from(u32::MAX))
}

fn user_mapping(proc_dir: &Path) -> Result<UserMapping, ExplainError> {
    let uid_map = id_map(&proc_dir.join("uid_map"))?;
    let gid_map = id_map(&proc_dir.join("gid_map"))?;
    Ok(UserMapping {
        identity: is_identity(&uid_map) && is_identity(&gid_map),
        uid_map,
        gid_map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_names_decodes_bits() {
        assert_eq!(cap_names(0), Vec::<String>::new());
        assert_eq!(cap_names(1 | (1 << 21)), ["cap_chown", "cap_sys_admin"]);
        assert_eq!(cap_names(1 << 63), ["cap_63"]);
    }

    #[test]
    fn seccomp_profile_counts_rules_and_syscalls() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(
            &config,
            serde_json::to_string(&crate::spec::default_spec()).unwrap(),
        )
        .unwrap();
        let p = seccomp_profile(&config).unwrap();
        assert_eq!(p.default_action, "SCMP_ACT_ERRNO");
        assert!(p.syscalls > 300 && p.rules > 1, "{p:?}");
        assert!(seccomp_profile(&dir.path().join("missing.json")).is_none());
    }

    #[test]
    fn identity_map() {
        let id = [IdRange {
            inside: 0,
            outside: 0,
            count: 4294967295,
        }];
        assert!(is_identity(&id));
        let other = [IdRange {
            inside: 0,
            outside: 100000,
            count: 65536,
        }];
        assert!(!is_identity(&other));
    }

    #[test]
    fn this_process_is_explained_and_shares_every_namespace_with_itself() {
        let me = nix::unistd::getpid().as_raw();
        let e = explain("self".into(), "self".into(), me, "test".into()).unwrap();
        assert!(e.namespaces.iter().all(|n| n.shared || n.inode.is_none()));
        assert!(e.mounts.count > 0);
        let gone = explain("x".into(), "x".into(), i32::MAX, "test".into()).unwrap_err();
        assert!(matches!(gone, ExplainError::Gone { .. }), "{gone}");
    }
}
