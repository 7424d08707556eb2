//! `berth explain`: what isolates a running container, in plain words and real values.
//!
//! Every fact is read from /proc and /sys on this machine: the namespaces of the container's
//! first process against this process's own, its cgroups with their limits and usage, the
//! mounts it sees, its capability sets, seccomp mode and uid/gid maps.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::Context;
use crate::container::layout;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// table (a plain-words report) for people, json for programs.
    #[arg(long, short, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    agent: crate::remote::AgentArg,
    /// Container id or name (with --agent: the container id on that node).
    container: String,
}

/// Everything `explain` reports about one container.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub id: String,
    pub name: String,
    /// Where the container was found: "local" or "agent".
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

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
pub struct Cgroup {
    /// "v1", "v2" or "hybrid" (v1 controllers with a v2 hierarchy beside them).
    pub version: String,
    pub paths: Vec<CgroupPath>,
    pub memory: MemoryFacts,
    pub cpu: CpuFacts,
    pub pids: PidsFacts,
}

#[derive(Debug, Serialize)]
pub struct CgroupPath {
    /// The hierarchy id from /proc/PID/cgroup (0 for v2).
    pub hierarchy: u32,
    /// The controllers of that hierarchy (empty for v2).
    pub controllers: Vec<String>,
    pub path: String,
    /// Where that cgroup's files are on this machine, when found.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
pub struct MemoryFacts {
    /// The limit in bytes (None: unlimited or unknown).
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    /// The file the limit came from.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
pub struct CpuFacts {
    /// Microseconds of CPU time per period (None: no quota).
    pub quota_us: Option<u64>,
    pub period_us: Option<u64>,
    /// quota / period: how many CPUs' worth of time it may use.
    pub cpus: Option<f64>,
    pub source: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
pub struct PidsFacts {
    /// The most tasks it may have (None: no limit or unknown).
    pub max: Option<u64>,
    pub current: Option<u64>,
    pub source: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
pub struct Mount {
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    pub read_only: bool,
}

#[derive(Debug, Serialize)]
pub struct Capabilities {
    pub inheritable: CapSet,
    pub permitted: CapSet,
    pub effective: CapSet,
    pub bounding: CapSet,
    pub ambient: CapSet,
}

#[derive(Debug, Serialize)]
pub struct CapSet {
    /// The mask as /proc/PID/status prints it.
    pub hex: String,
    /// The capabilities in it, lower case (cap_chown, ...).
    pub names: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Seccomp {
    /// 0 disabled, 1 strict, 2 filter.
    pub mode: u8,
    pub mode_name: String,
    pub filters: Option<u64>,
    pub no_new_privs: bool,
}

#[derive(Debug, Serialize)]
pub struct UserMapping {
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
    /// True when both maps are the identity (0 0 4294967295): ids inside are the host's ids.
    pub identity: bool,
}

#[derive(Debug, Serialize)]
pub struct IdRange {
    pub inside: u64,
    pub outside: u64,
    pub count: u64,
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let (id, name, pid, source) = match &args.agent.agent {
        Some(agent) => remote_pid(agent, &args.container)?,
        None => local_pid(&args.container, ctx)?,
    };
    let explanation = explain(id, name, pid, source)?;
    match args.output {
        OutputFormat::Json => print_json(&explanation),
        OutputFormat::Table => {
            print!("{}", report(&explanation));
            Ok(())
        }
    }
}

fn local_pid(key: &str, ctx: &Context) -> anyhow::Result<(String, String, i32, String)> {
    let (paths, meta) = layout::find(&ctx.data_dir, key)?;
    let state = berth_runtime::state(&paths.runtime_root, &paths.id)
        .with_context(|| format!("container {key} is not running"))?;
    use berth_runtime::state::Status;
    if !matches!(state.oci.status, Status::Running | Status::Created) || state.oci.pid <= 0 {
        bail!(
            "container {key} is not running ({}): only a live container has namespaces to explain",
            state.oci.status
        );
    }
    Ok((meta.id, meta.name, state.oci.pid, "local".into()))
}

fn remote_pid(agent: &str, key: &str) -> anyhow::Result<(String, String, i32, String)> {
    let listed = crate::remote::list_containers(agent)?;
    let found: Vec<_> = listed
        .containers
        .iter()
        .filter(|c| c.container_id == key || c.container_id.starts_with(key))
        .collect();
    let c = match found.as_slice() {
        [one] => *one,
        [] => bail!("no such container on node {}: {key}", listed.node_name),
        many => match many.iter().find(|c| c.container_id == key) {
            Some(exact) => *exact,
            None => bail!("container id prefix {key} is ambiguous"),
        },
    };
    if c.pid == 0 {
        bail!("container {} is not running", c.container_id);
    }
    let pid = i32::try_from(c.pid).context("pid out of range")?;
    // The pid is the agent's host's: it means something here only when the agent runs here.
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    if !cgroup.contains(&c.container_id) {
        bail!(
            "pid {pid} of container {} is not that container on this machine: \
             explain --agent reads /proc, so it needs the agent to run on this host",
            c.container_id
        );
    }
    Ok((
        c.container_id.clone(),
        c.deployment.clone(),
        pid,
        "agent".into(),
    ))
}

/// Gathers every fact about the process `pid`.
pub fn explain(id: String, name: String, pid: i32, source: String) -> anyhow::Result<Explanation> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !proc_dir.exists() {
        bail!("process {pid} of container {id} is gone");
    }
    let status = fs::read_to_string(proc_dir.join("status"))
        .with_context(|| format!("reading {}/status", proc_dir.display()))?;
    Ok(Explanation {
        namespaces: namespaces(&proc_dir),
        cgroup: cgroup(&proc_dir)?,
        mounts: mounts(&proc_dir)?,
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

fn cgroup(proc_dir: &Path) -> anyhow::Result<Cgroup> {
    let text = fs::read_to_string(proc_dir.join("cgroup"))
        .with_context(|| format!("reading {}/cgroup", proc_dir.display()))?;
    let mounts = cgroup_mounts();
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
    let v1_dir = |c: &str| {
        paths
            .iter()
            .find(|p| p.controllers.iter().any(|x| x == c))
            .and_then(|p| p.dir.clone())
    };
    let v2_dir = paths
        .iter()
        .find(|p| p.controllers.is_empty() && p.hierarchy == 0)
        .and_then(|p| p.dir.clone());
    // A controller's files: in its v1 hierarchy, or else in the v2 one if it has them.
    let pick = |controller: &str, v1_file: &str, v2_file: &str| -> Option<PathBuf> {
        if let Some(dir) = v1_dir(controller) {
            return Some(dir.join(v1_file));
        }
        let file = v2_dir.as_ref()?.join(v2_file);
        file.exists().then_some(file)
    };

    let mut memory = MemoryFacts::default();
    if let Some(limit) = pick("memory", "memory.limit_in_bytes", "memory.max") {
        memory.limit_bytes = read_limit(&limit);
        memory.usage_bytes = read_u64(&limit.with_file_name(if limit.ends_with("memory.max") {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        }));
        memory.source = Some(limit);
    }
    let mut cpu = CpuFacts::default();
    if let Some(file) = pick("cpu", "cpu.cfs_quota_us", "cpu.max") {
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
            cpu.cpus = Some(q as f64 / p as f64);
        }
        cpu.source = Some(file);
    }
    let mut pids = PidsFacts::default();
    if let Some(file) = pick("pids", "pids.max", "pids.max") {
        pids.max = read_u64(&file);
        pids.current = read_u64(&file.with_file_name("pids.current"));
        pids.source = Some(file);
    }
    Ok(Cgroup {
        version,
        paths,
        memory,
        cpu,
        pids,
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A memory limit; v1's "no limit" is a huge page-rounded number, v2's is "max".
fn read_limit(path: &Path) -> Option<u64> {
    read_u64(path).filter(|v| *v < (1u64 << 62))
}

/// One line of /proc/PID/mountinfo.
struct MountInfo {
    root: String,
    mount_point: String,
    options: String,
    fs_type: String,
    source: String,
    super_options: String,
}

impl MountInfo {
    fn parse(line: &str) -> Option<Self> {
        let (before, after) = line.split_once(" - ")?;
        let fields: Vec<&str> = before.split(' ').collect();
        let tail: Vec<&str> = after.split(' ').collect();
        Some(Self {
            root: unescape(fields.get(3)?),
            mount_point: unescape(fields.get(4)?),
            options: fields.get(5)?.to_string(),
            fs_type: tail.first()?.to_string(),
            source: unescape(tail.get(1).copied().unwrap_or("")),
            super_options: tail.get(2).copied().unwrap_or("").to_string(),
        })
    }

    fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// mountinfo writes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let digit = |k: usize| u32::from(bytes[i + k] - b'0');
            match u8::try_from(digit(1) * 64 + digit(2) * 8 + digit(3)) {
                Ok(v) => {
                    out.push(v);
                    i += 4;
                }
                Err(_) => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mounts(proc_dir: &Path) -> anyhow::Result<Mounts> {
    let text = fs::read_to_string(proc_dir.join("mountinfo"))
        .with_context(|| format!("reading {}/mountinfo", proc_dir.display()))?;
    let infos: Vec<MountInfo> = text.lines().filter_map(MountInfo::parse).collect();
    // The last mount on "/" is the one it sees.
    let root = infos.iter().rev().find(|m| m.mount_point == "/");
    let mut masked = Vec::new();
    let mut read_only = Vec::new();
    for m in &infos {
        if m.mount_point == "/" {
            continue;
        }
        let null_bind = m.root.ends_with("/null") && m.mount_point != "/dev/null";
        let empty_ro_tmpfs = m.fs_type == "tmpfs"
            && m.read_only()
            && (m.mount_point.starts_with("/proc/") || m.mount_point.starts_with("/sys/"))
            && fs::read_dir(
                proc_dir
                    .join("root")
                    .join(m.mount_point.trim_start_matches('/')),
            )
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        if null_bind || empty_ro_tmpfs {
            if !masked.contains(&m.mount_point) {
                masked.push(m.mount_point.clone());
            }
        } else if m.read_only() && !read_only.contains(&m.mount_point) {
            read_only.push(m.mount_point.clone());
        }
    }
    Ok(Mounts {
        count: infos.len(),
        root_fs_type: root.map(|m| m.fs_type.clone()).unwrap_or_default(),
        root_read_only: root.is_some_and(MountInfo::read_only),
        masked,
        read_only,
        all: infos
            .iter()
            .map(|m| Mount {
                mount_point: m.mount_point.clone(),
                fs_type: m.fs_type.clone(),
                source: m.source.clone(),
                read_only: m.read_only(),
            })
            .collect(),
    })
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

fn cap_set(status: &str, key: &str) -> anyhow::Result<CapSet> {
    let hex = status_field(status, key)
        .with_context(|| format!("no {key} in /proc/PID/status"))?
        .to_string();
    let mask = u64::from_str_radix(&hex, 16).with_context(|| format!("bad {key} {hex:?}"))?;
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

fn capabilities(status: &str) -> anyhow::Result<Capabilities> {
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
    }
}

fn id_map(path: &Path) -> anyhow::Result<Vec<IdRange>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
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

fn user_mapping(proc_dir: &Path) -> anyhow::Result<UserMapping> {
    let uid_map = id_map(&proc_dir.join("uid_map"))?;
    let gid_map = id_map(&proc_dir.join("gid_map"))?;
    Ok(UserMapping {
        identity: is_identity(&uid_map) && is_identity(&gid_map),
        uid_map,
        gid_map,
    })
}

/// Bytes in binary units, as limits are usually given: 64.0 MiB, 236.0 KiB.
fn binary_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn caps_line(out: &mut String, label: &str, set: &CapSet, meaning: &str) {
    let names = if set.names.is_empty() {
        "none".to_string()
    } else {
        set.names.join(" ")
    };
    out.push_str(&format!(
        "  {label:<12} {} caps  {meaning}\n    {names}\n",
        set.names.len()
    ));
}

/// The plain-words report.
pub fn report(e: &Explanation) -> String {
    let mut out = String::new();
    let name = if e.name.is_empty() || e.name == e.id {
        String::new()
    } else {
        format!(" ({})", e.name)
    };
    out.push_str(&format!(
        "Container {}{name}: first process pid {} on this host ({} container)\n",
        e.id, e.pid, e.source
    ));

    out.push_str("\nNamespaces: what it has a private copy of\n");
    for ns in &e.namespaces {
        let inode = ns.inode.map_or("-".to_string(), |i| i.to_string());
        let host = ns.host_inode.map_or("-".to_string(), |i| i.to_string());
        if ns.shared {
            out.push_str(&format!("  {:<7}{inode:<12} {}\n", ns.kind, ns.meaning));
        } else {
            out.push_str(&format!(
                "  {:<7}{inode:<12} {} (host: {host})\n",
                ns.kind, ns.meaning
            ));
        }
    }
    let isolated = e.namespaces.iter().filter(|n| !n.shared).count();
    out.push_str(&format!(
        "  {isolated} of {} namespaces are its own; the others it shares with the host.\n",
        e.namespaces.len()
    ));

    let cg = &e.cgroup;
    out.push_str(&format!(
        "\nCgroups ({}): how much of the machine it may use\n",
        cg.version
    ));
    let mut shown = std::collections::BTreeSet::new();
    for p in &cg.paths {
        let ctrl = if p.controllers.is_empty() {
            "unified".to_string()
        } else {
            p.controllers.join(",")
        };
        if ["memory", "cpu", "pids", "unified"]
            .iter()
            .any(|c| ctrl.split(',').any(|x| x == *c))
            && shown.insert(ctrl.clone())
        {
            out.push_str(&format!("  {ctrl:<14} {}\n", p.path));
        }
    }
    let usage = |v: Option<u64>| v.map_or("unknown".to_string(), binary_bytes);
    match cg.memory.limit_bytes {
        Some(l) => out.push_str(&format!(
            "  memory   limit {} ({l} bytes), using {}: past the limit the kernel reclaims, then kills\n",
            binary_bytes(l),
            usage(cg.memory.usage_bytes)
        )),
        None => out.push_str(&format!(
            "  memory   no limit, using {}: it may take all the host's memory\n",
            usage(cg.memory.usage_bytes)
        )),
    }
    match (cg.cpu.quota_us, cg.cpu.period_us, cg.cpu.cpus) {
        (Some(q), Some(p), Some(c)) => out.push_str(&format!(
            "  cpu      quota {q} us per {p} us: at most {c:.2} CPUs' worth of time\n"
        )),
        _ => out.push_str("  cpu      no quota: it may use every CPU fully\n"),
    }
    let current = cg.pids.current.map_or("unknown".into(), |c| c.to_string());
    match cg.pids.max {
        Some(m) => out.push_str(&format!(
            "  pids     at most {m} tasks, {current} now: fork fails beyond that\n"
        )),
        None => out.push_str(&format!("  pids     no limit on tasks, {current} now\n")),
    }

    let m = &e.mounts;
    out.push_str("\nMounts: the filesystem it sees\n");
    out.push_str(&format!(
        "  {} mounts; its root is {}{}\n",
        m.count,
        m.root_fs_type,
        if m.root_read_only {
            ", read-only"
        } else {
            ", writable"
        }
    ));
    if m.masked.is_empty() {
        out.push_str("  masked: none\n");
    } else {
        out.push_str("  masked (hidden behind /dev/null or an empty read-only tmpfs):\n");
        out.push_str(&format!("    {}\n", m.masked.join(" ")));
    }
    if m.read_only.is_empty() {
        out.push_str("  read-only: none besides the above\n");
    } else {
        out.push_str("  read-only (it can read but not change):\n");
        out.push_str(&format!("    {}\n", m.read_only.join(" ")));
    }

    let c = &e.capabilities;
    out.push_str("\nCapabilities: which root powers its process holds\n");
    caps_line(&mut out, "effective", &c.effective, "what it may do now");
    caps_line(&mut out, "permitted", &c.permitted, "what it may turn on");
    caps_line(
        &mut out,
        "bounding",
        &c.bounding,
        "the most it or its children can ever get",
    );
    caps_line(
        &mut out,
        "inheritable",
        &c.inheritable,
        "kept across exec for capable files",
    );
    caps_line(
        &mut out,
        "ambient",
        &c.ambient,
        "kept across exec of any file",
    );
    if !c.effective.names.iter().any(|n| n == "cap_sys_admin") {
        out.push_str("  without cap_sys_admin it cannot mount, or undo the masks above\n");
    }

    let s = &e.seccomp;
    out.push_str("\nSeccomp: which system calls it may make\n");
    out.push_str(&format!(
        "  mode {} ({}): {}\n",
        s.mode,
        s.mode_name,
        match s.mode {
            0 => "every system call is allowed",
            1 => "only read, write, _exit and sigreturn",
            _ => "a filter decides each system call",
        }
    ));
    out.push_str(&format!(
        "  no_new_privs {}: {}\n",
        u8::from(s.no_new_privs),
        if s.no_new_privs {
            "setuid files cannot raise its privileges"
        } else {
            "setuid files may raise its privileges"
        }
    ));

    let u = &e.user;
    out.push_str("\nUser ids: who it is on the host\n");
    let fmt_map = |map: &[IdRange]| {
        map.iter()
            .map(|r| format!("{}->{} x{}", r.inside, r.outside, r.count))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!("  uid map {}\n", fmt_map(&u.uid_map)));
    out.push_str(&format!("  gid map {}\n", fmt_map(&u.gid_map)));
    if u.identity {
        out.push_str(
            "  identity: no user namespace remapping, so uid 0 inside is root on the host\n",
        );
    } else {
        out.push_str("  remapped: ids inside are other, unprivileged ids on the host\n");
    }
    out
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
    fn mountinfo_lines_parse() {
        let line = "612 600 0:5 /null /proc/kcore rw,nosuid - devtmpfs udev rw,size=10k";
        let m = MountInfo::parse(line).unwrap();
        assert_eq!(m.root, "/null");
        assert_eq!(m.mount_point, "/proc/kcore");
        assert_eq!(m.fs_type, "devtmpfs");
        assert!(!m.read_only());
        let line = r"1 0 0:1 / /a\040b ro,relatime shared:1 - tmpfs tmpfs ro";
        let m = MountInfo::parse(line).unwrap();
        assert_eq!(m.mount_point, "/a b");
        assert!(m.read_only());
    }

    #[test]
    fn octal_escapes_and_binary_units() {
        assert_eq!(unescape(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape(r"/x\777"), r"/x\777");
        assert_eq!(binary_bytes(64 << 20), "64.0 MiB");
        assert_eq!(binary_bytes(512), "512 B");
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
}
