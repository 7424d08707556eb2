//! The plain-words report of an [`Explanation`](super::Explanation), for people.

use super::{
    CapSet, Capabilities, Cgroup, Explanation, IdRange, Mounts, Namespace, Seccomp, UserMapping,
};

/// Bytes in binary units, as limits are usually given: 64.0 MiB, 236.0 KiB.
#[allow(
    clippy::cast_precision_loss,
    reason = "shown to one decimal: the bits f64 drops are far below it"
)]
pub fn binary_bytes(bytes: u64) -> String {
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
        "Container {}{name}: first process pid {} on {}\n",
        e.id, e.pid, e.source
    ));

    namespaces(&mut out, &e.namespaces);
    cgroup(&mut out, &e.cgroup);
    mounts(&mut out, &e.mounts);
    capabilities(&mut out, &e.capabilities);
    seccomp(&mut out, &e.seccomp);
    user(&mut out, &e.user);
    out
}

/// What it has a private copy of.
fn namespaces(out: &mut String, namespaces: &[Namespace]) {
    out.push_str("\nNamespaces: what it has a private copy of\n");
    for ns in namespaces {
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
    let isolated = namespaces.iter().filter(|n| !n.shared).count();
    out.push_str(&format!(
        "  {isolated} of {} namespaces are its own; the others it shares with the host.\n",
        namespaces.len()
    ));
}

/// How much of the machine it may use.
fn cgroup(out: &mut String, cg: &Cgroup) {
    let version = match cg.version.as_str() {
        "v2" => "v2, the one unified cgroup2 hierarchy",
        "hybrid" => "hybrid, v1 controllers beside a cgroup2 hierarchy",
        other => other,
    };
    out.push_str(&format!(
        "\nCgroups ({version}): how much of the machine it may use\n"
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
}

/// The filesystem it sees.
fn mounts(out: &mut String, m: &Mounts) {
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
}

/// Which root powers its process holds.
fn capabilities(out: &mut String, c: &Capabilities) {
    out.push_str("\nCapabilities: which root powers its process holds\n");
    caps_line(out, "effective", &c.effective, "what it may do now");
    caps_line(out, "permitted", &c.permitted, "what it may turn on");
    caps_line(
        out,
        "bounding",
        &c.bounding,
        "the most it or its children can ever get",
    );
    caps_line(
        out,
        "inheritable",
        &c.inheritable,
        "kept across exec for capable files",
    );
    caps_line(out, "ambient", &c.ambient, "kept across exec of any file");
    if !c.effective.names.iter().any(|n| n == "cap_sys_admin") {
        out.push_str("  without cap_sys_admin it cannot mount, or undo the masks above\n");
    }
}

/// Which system calls it may make.
fn seccomp(out: &mut String, s: &Seccomp) {
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
    if let Some(n) = s.filters.filter(|_| s.mode == 2) {
        out.push_str(&format!(
            "  {n} BPF program(s) installed (berth installs one per action of the profile)\n"
        ));
    }
    match &s.profile {
        Some(p) => out.push_str(&format!(
            "  profile in config.json: {} rules over {} syscalls, anything else {}\n",
            p.rules, p.syscalls, p.default_action
        )),
        None if s.mode == 0 => out.push_str("  config.json has no seccomp profile\n"),
        None => {}
    }
    out.push_str(&format!(
        "  no_new_privs {}: {}\n",
        u8::from(s.no_new_privs),
        if s.no_new_privs {
            "setuid files cannot raise its privileges"
        } else {
            "setuid files may raise its privileges"
        }
    ));
}

/// Who it is on the host.
fn user(out: &mut String, u: &UserMapping) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units() {
        assert_eq!(binary_bytes(64 << 20), "64.0 MiB");
        assert_eq!(binary_bytes(512), "512 B");
    }
}
