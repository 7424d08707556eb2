//! The default seccomp profile and the Docker/OCI profile format it is written in.
//!
//! `default.json` is generated (see `generate.rs`: the `syscalls` crate's x86_64 and x86
//! tables plus berth's policy) and embedded here. Like Docker's profiles it may hold
//! capability-, architecture- and kernel-conditional entries (`includes` / `excludes`), so a
//! profile is resolved against the container's bounding capability set into the plain OCI
//! `LinuxSeccomp` the runtime compiles. A plain OCI profile (no conditions) resolves to itself.

#[cfg(test)]
mod generate;

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSyscall,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The generated default profile, as committed.
pub(crate) const DEFAULT_PROFILE_JSON: &str = include_str!("default.json");

/// A seccomp profile in Docker's format (a superset of the OCI `linux.seccomp` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<Arch>,
    /// Docker's form: an architecture and the ones it can also run (x86_64: x86, x32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arch_map: Vec<ArchMap>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ArchMap {
    pub architecture: Arch,
    #[serde(default)]
    pub sub_architectures: Vec<Arch>,
}

/// One entry: syscall names, the action for them, optional argument conditions and the
/// conditions under which the entry applies at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rule {
    #[serde(default)]
    pub names: Vec<String>,
    /// Docker's older single-name form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: LinuxSeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<LinuxSeccompArg>,
    #[serde(default, skip_serializing_if = "Condition::is_empty")]
    pub includes: Condition,
    #[serde(default, skip_serializing_if = "Condition::is_empty")]
    pub excludes: Condition,
    /// Why the entry exists (the generator writes one; ignored when resolving).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// Docker's entry condition: `includes` applies the entry only if every listed capability is
/// in the bounding set (and the architecture and kernel match); `excludes` drops it if any is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Condition {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arches: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

impl Condition {
    pub(crate) fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.arches.is_empty() && self.min_kernel.is_none()
    }
}

/// Parses a profile's JSON text (Docker's or OCI's format), naming what was wrong.
pub(crate) fn parse(text: &str) -> Result<Profile> {
    serde_json::from_str(text).map_err(|e| Error::Seccomp(format!("invalid seccomp profile: {e}")))
}

/// The default profile resolved for a container whose bounding set is `bounding`.
pub(crate) fn default_profile(bounding: &HashSet<Capability>) -> LinuxSeccomp {
    // Parsed once per process: an agent resolves it for every container it starts.
    static PARSED: std::sync::OnceLock<Profile> = std::sync::OnceLock::new();
    let profile = PARSED
        .get_or_init(|| parse(DEFAULT_PROFILE_JSON).expect("the embedded default profile parses"));
    resolve(profile, bounding).expect("the embedded default profile resolves")
}

/// Resolves `profile`'s conditional entries for `bounding`, this machine's architecture and
/// its kernel into a plain OCI profile.
pub(crate) fn resolve(profile: &Profile, bounding: &HashSet<Capability>) -> Result<LinuxSeccomp> {
    let kernel = kernel_version();
    let mut syscalls = Vec::new();
    for (i, rule) in profile.syscalls.iter().enumerate() {
        let applies = |cond: &Condition, include: bool| -> Result<bool> {
            let caps = cond
                .caps
                .iter()
                .map(|c| capability(c).map(|c| bounding.contains(&c)))
                .collect::<std::result::Result<Vec<bool>, String>>()
                .map_err(|e| Error::Seccomp(format!("syscalls[{i}]: {e}")))?;
            let arch = cond.arches.iter().any(|a| native_arch_named(a));
            let newer = match &cond.min_kernel {
                Some(min) => {
                    kernel
                        >= parse_version(min).ok_or_else(|| {
                            Error::Seccomp(format!(
                                "syscalls[{i}].minKernel {min:?} is not a version"
                            ))
                        })?
                }
                None => include,
            };
            Ok(if include {
                caps.iter().all(|c| *c) && (cond.arches.is_empty() || arch) && newer
            } else {
                caps.iter().any(|c| *c) || arch || (cond.min_kernel.is_some() && newer)
            })
        };
        if !applies(&rule.includes, true)? || applies(&rule.excludes, false)? {
            continue;
        }
        let mut names = rule.names.clone();
        names.extend(rule.name.clone());
        if names.is_empty() {
            return Err(Error::Seccomp(format!("syscalls[{i}] names no syscall")));
        }
        let mut out = LinuxSyscall::default();
        out.set_names(names);
        out.set_action(rule.action);
        out.set_errno_ret(rule.errno_ret);
        out.set_args((!rule.args.is_empty()).then(|| rule.args.clone()));
        syscalls.push(out);
    }
    let mut architectures = profile.architectures.clone();
    for map in &profile.arch_map {
        architectures.push(map.architecture);
        architectures.extend(&map.sub_architectures);
    }
    let mut out = LinuxSeccomp::default();
    out.set_default_action(profile.default_action);
    out.set_default_errno_ret(profile.default_errno_ret);
    out.set_architectures((!architectures.is_empty()).then_some(architectures));
    out.set_flags((!profile.flags.is_empty()).then(|| profile.flags.clone()));
    out.set_syscalls(Some(syscalls));
    Ok(out)
}

/// A capability from its name, with or without `CAP_`, in either case.
pub(crate) fn capability(name: &str) -> std::result::Result<Capability, String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full.clone()))
        .map_err(|_| format!("unknown capability {name:?}"))
}

/// Whether `name` (Go's, libseccomp's or Rust's spelling) is the architecture we run on.
fn native_arch_named(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let name = name.trim_start_matches("scmp_arch_");
    match std::env::consts::ARCH {
        "x86_64" => matches!(name, "amd64" | "x86_64"),
        "aarch64" => matches!(name, "arm64" | "aarch64"),
        other => name == other,
    }
}

/// `major.minor` of the running kernel (0.0 if unreadable, so minKernel entries drop out).
fn kernel_version() -> (u32, u32) {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| parse_version(&u.release().to_string_lossy()))
        .unwrap_or((0, 0))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_with(profile: &LinuxSeccomp, action: LinuxSeccompAction) -> HashSet<String> {
        profile
            .syscalls()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|s| s.action() == action && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn default_profile_allows_new_syscalls_and_denies_dangerous_ones() {
        let caps: HashSet<Capability> = [Capability::Kill, Capability::NetBindService].into();
        let profile = default_profile(&caps);
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        let allowed = names_with(&profile, LinuxSeccompAction::ScmpActAllow);
        for name in [
            "close_range",
            "faccessat2",
            "openat2",
            "pidfd_open",
            "epoll_pwait2",
        ] {
            assert!(allowed.contains(name), "{name} should be allowed");
        }
        for name in [
            "kexec_load",
            "init_module",
            "mount",
            "ptrace",
            "bpf",
            "keyctl",
            "unshare",
        ] {
            assert!(!allowed.contains(name), "{name} should not be allowed");
        }
        let enosys = names_with(&profile, LinuxSeccompAction::ScmpActErrno);
        assert!(
            enosys.contains("clone3"),
            "clone3 gets ENOSYS so glibc falls back"
        );
        assert!(crate::seccomp::compile(&profile).is_ok());
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let caps: HashSet<Capability> = [Capability::SysAdmin, Capability::SysPtrace].into();
        let allowed = names_with(&default_profile(&caps), LinuxSeccompAction::ScmpActAllow);
        for name in ["mount", "unshare", "setns", "clone", "clone3", "ptrace"] {
            assert!(
                allowed.contains(name),
                "{name} should be allowed with its capability"
            );
        }
        assert!(!allowed.contains("kexec_load"));
    }

    #[test]
    fn docker_conditions_and_bad_input() {
        let profile = parse(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
                "syscalls": [
                  {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_CHOWN"]}},
                  {"name": "rmdir", "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "99.0"}},
                  {"names": ["chdir"], "action": "SCMP_ACT_ERRNO", "includes": {"arches": ["amd64", "arm64"]}}
                ]}"#,
        )
        .unwrap();
        let out = resolve(&profile, &HashSet::new()).unwrap();
        let names: Vec<_> = out
            .syscalls()
            .as_deref()
            .unwrap()
            .iter()
            .flat_map(|s| s.names().clone())
            .collect();
        assert_eq!(names, ["mkdir", "chdir"]);
        assert_eq!(out.architectures().as_ref().unwrap().len(), 2);
        let err = parse(r#"{"syscalls": []}"#).unwrap_err().to_string();
        assert!(err.contains("defaultAction"), "{err}");
        let bad_cap = parse(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_NOPE"]}}]}"#,
        )
        .unwrap();
        let err = resolve(&bad_cap, &HashSet::new()).unwrap_err().to_string();
        assert!(err.contains("CAP_NOPE"), "{err}");
    }
}
