//! Generates `default.json` from the `syscalls` crate's x86_64 and x86 tables (the kernel's
//! `syscall_64.tbl` / `syscall_32.tbl`, pinned by Cargo.lock) and berth's policy below, and
//! checks that the committed file matches. After changing the policy or updating the crate:
//! `BERTH_WRITE_SECCOMP_PROFILE=1 cargo nextest run -p berth-runtime --lib seccomp_profile`.
//!
//! The policy follows Docker's reasoning: allow what an unprivileged process may do anyway;
//! tie calls whose harm is what a capability guards to that capability (so `--cap-add`
//! unlocks them); deny outright what is not namespaced (kernel modules, kexec, keyrings, swap)
//! or obsolete. Every syscall in the tables must be judged: a syscall numbered above
//! `REVIEWED_THROUGH` that the policy does not name fails generation until someone decides.

use std::collections::BTreeSet;

use oci_spec::runtime::{Arch, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator};

use super::{Condition, Profile, Rule};

/// The highest syscall number (both tables) whose syscalls were reviewed (Linux 6.17:
/// file_setattr).
const REVIEWED_THROUGH: i32 = 469;

/// Never allowed: not namespaced, obsolete, or too much kernel surface for a container.
const DENY: &[(&str, &[&str])] = &[
    (
        "kernel code and boot: modules without CAP_SYS_MODULE are below; these load a new kernel",
        &["kexec_load", "kexec_file_load"],
    ),
    (
        "the kernel keyring is not namespaced: a container could read or fill the host's keys",
        &["keyctl", "add_key", "request_key"],
    ),
    ("swap is a host-wide setting", &["swapon", "swapoff"]),
    (
        "io_uring bypasses per-syscall filtering and has a long record of kernel bugs",
        &["io_uring_setup", "io_uring_enter", "io_uring_register"],
    ),
    (
        "obsolete or unimplemented (the kernel answers ENOSYS anyway)",
        &[
            "_sysctl",
            "afs_syscall",
            "bdflush",
            "break",
            "create_module",
            "epoll_ctl_old",
            "epoll_wait_old",
            "ftime",
            "get_kernel_syms",
            "getpmsg",
            "gtty",
            "idle",
            "lock",
            "lookup_dcookie",
            "mpx",
            "nfsservctl",
            "prof",
            "profil",
            "putpmsg",
            "query_module",
            "security",
            "stty",
            "sysfs",
            "tuxcall",
            "ulimit",
            "uselib",
            "ustat",
            "vserver",
        ],
    ),
    ("virtual 8086 mode (x86 only)", &["vm86", "vm86old"]),
];

/// Allowed only when the bounding set holds the capability (entries: capability, comment,
/// syscalls). A syscall may appear under several capabilities (any one unlocks it).
const BY_CAPABILITY: &[(&str, &str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        "mounts, namespaces, host names, quotas, fanotify: the kernel asks for CAP_SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "listmount",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "open_tree_attr",
            "perf_event_open",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "statmount",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_BPF", "eBPF programs and maps", &["bpf"]),
    (
        "CAP_PERFMON",
        "performance counters expose other processes' behaviour",
        &["perf_event_open"],
    ),
    ("CAP_SYSLOG", "the kernel log", &["syslog"]),
    (
        "CAP_SYS_BOOT",
        "reboot (of the pid namespace, or of the host)",
        &["reboot"],
    ),
    ("CAP_SYS_CHROOT", "chroot", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        "loading kernel modules runs code in the host kernel",
        &["delete_module", "finit_module", "init_module"],
    ),
    (
        "CAP_SYS_PACCT",
        "process accounting is host-wide",
        &["acct"],
    ),
    (
        "CAP_SYS_PTRACE",
        "reading or changing other processes (ptrace could bypass seccomp before 4.8)",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
            "userfaultfd",
        ],
    ),
    ("CAP_SYS_RAWIO", "raw I/O port access", &["ioperm", "iopl"]),
    (
        "CAP_SYS_TIME",
        "the clock is not namespaced",
        &[
            "clock_adjtime",
            "clock_adjtime64",
            "clock_settime",
            "clock_settime64",
            "settimeofday",
            "stime",
        ],
    ),
    (
        "CAP_SYS_TTY_CONFIG",
        "hanging up the terminal",
        &["vhangup"],
    ),
    (
        "CAP_DAC_READ_SEARCH",
        "file handles bypass path permission checks",
        &["name_to_handle_at", "open_by_handle_at"],
    ),
    (
        "CAP_SYS_NICE",
        "NUMA memory policy affects the host's memory placement",
        &[
            "get_mempolicy",
            "mbind",
            "migrate_pages",
            "move_pages",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
];

/// clone's namespace flags (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID |
/// NEWNET): without CAP_SYS_ADMIN, clone is allowed only with none of them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// personality(2) values that only select an execution domain or ADDR_NO_RANDOMIZE-free
/// behaviour: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query 0xffffffff.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn table() -> BTreeSet<(String, i32)> {
    // Rust keywords (`break`) are raw identifiers in the crate: the kernel's name has no r#.
    let name = |n: &str| n.trim_start_matches("r#").to_string();
    let mut all: BTreeSet<(String, i32)> = BTreeSet::new();
    for s in syscalls::x86_64::Sysno::iter() {
        all.insert((name(s.name()), s.id()));
    }
    for s in syscalls::x86::Sysno::iter() {
        all.insert((name(s.name()), s.id()));
    }
    all
}

fn rule(names: Vec<String>, action: LinuxSeccompAction, comment: &str) -> Rule {
    Rule {
        names,
        name: None,
        action,
        errno_ret: None,
        args: Vec::new(),
        includes: Condition::default(),
        excludes: Condition::default(),
        comment: comment.to_string(),
    }
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let mut json = serde_json::json!({"index": index, "value": value, "op": op});
    if let Some(two) = value_two {
        json["valueTwo"] = two.into();
    }
    serde_json::from_value(json).expect("a valid seccomp argument")
}

/// Syscalls with argument or capability conditions of their own (not in `BY_CAPABILITY`).
const SPECIAL: &[&str] = &["clone", "clone3", "personality"];

fn special_rules() -> Vec<Rule> {
    let sys_admin = || Condition {
        caps: vec!["CAP_SYS_ADMIN".into()],
        ..Default::default()
    };
    let mut personality = rule(
        vec!["personality".into()],
        LinuxSeccompAction::ScmpActAllow,
        "",
    );
    let mut rules = Vec::new();
    for &p in PERSONALITIES {
        personality.args = vec![arg(0, p, None, LinuxSeccompOperator::ScmpCmpEq)];
        personality.comment =
            format!("personality {p:#x} only: no ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC");
        rules.push(personality.clone());
    }
    let mut clone = rule(
        vec!["clone".into()],
        LinuxSeccompAction::ScmpActAllow,
        "threads and processes, but no new namespaces without CAP_SYS_ADMIN",
    );
    clone.args = vec![arg(
        0,
        CLONE_NAMESPACE_FLAGS,
        Some(0),
        LinuxSeccompOperator::ScmpCmpMaskedEq,
    )];
    clone.excludes = sys_admin();
    rules.push(clone);
    let mut clone3 = rule(
        vec!["clone3".into()],
        LinuxSeccompAction::ScmpActErrno,
        "its flags live in memory seccomp cannot read: ENOSYS makes glibc fall back to clone",
    );
    clone3.errno_ret = Some(libc::ENOSYS as u32);
    clone3.excludes = sys_admin();
    rules.push(clone3);
    let mut admin = rule(
        vec!["clone".into(), "clone3".into()],
        LinuxSeccompAction::ScmpActAllow,
        "any clone with CAP_SYS_ADMIN",
    );
    admin.includes = sys_admin();
    rules.push(admin);
    rules
}

/// The default profile: everything not denied or conditional is allowed.
pub(super) fn generate() -> Result<Profile, String> {
    let denied: BTreeSet<&str> = DENY.iter().flat_map(|(_, n)| n.iter().copied()).collect();
    let conditional: BTreeSet<&str> = BY_CAPABILITY
        .iter()
        .flat_map(|(_, _, n)| n.iter().copied())
        .chain(SPECIAL.iter().copied())
        .collect();
    let table = table();
    let known: BTreeSet<&str> = table.iter().map(|(n, _)| n.as_str()).collect();
    for name in denied.iter().chain(&conditional) {
        if !known.contains(name) {
            return Err(format!("the policy names {name}, which neither table has"));
        }
    }
    let mut allowed = BTreeSet::new();
    for (name, nr) in &table {
        let judged = denied.contains(name.as_str()) || conditional.contains(name.as_str());
        if !judged && *nr > REVIEWED_THROUGH {
            return Err(format!(
                "syscall {name} ({nr}) is newer than the reviewed table: add it to the policy"
            ));
        }
        if !judged {
            allowed.insert(name.clone());
        }
    }
    let mut syscalls = vec![rule(
        allowed.into_iter().collect(),
        LinuxSeccompAction::ScmpActAllow,
        "everything an unprivileged process may do",
    )];
    syscalls.extend(special_rules());
    for (cap, comment, names) in BY_CAPABILITY {
        let mut r = rule(
            names.iter().map(|n| n.to_string()).collect(),
            LinuxSeccompAction::ScmpActAllow,
            comment,
        );
        r.includes.caps = vec![cap.to_string()];
        syscalls.push(r);
    }
    Ok(Profile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno_ret: Some(libc::EPERM as u32),
        architectures: Vec::new(),
        arch_map: vec![super::ArchMap {
            architecture: Arch::ScmpArchX86_64,
            sub_architectures: vec![Arch::ScmpArchX86, Arch::ScmpArchX32],
        }],
        flags: Vec::new(),
        syscalls,
    })
}

#[test]
fn committed_default_profile_matches_the_generator() {
    let text = serde_json::to_string_pretty(&generate().unwrap()).unwrap() + "\n";
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/seccomp_profile/default.json"
    );
    if std::env::var_os("BERTH_WRITE_SECCOMP_PROFILE").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    assert!(
        text == super::DEFAULT_PROFILE_JSON,
        "{path} is stale: run BERTH_WRITE_SECCOMP_PROFILE=1 cargo nextest run -p berth-runtime --lib seccomp_profile"
    );
}

#[test]
fn every_policy_name_is_a_real_syscall() {
    assert!(generate().is_ok(), "{:?}", generate().err());
}
