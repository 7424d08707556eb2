//! Compiles the spec's seccomp profile to classic BPF with `seccompiler` (pure Rust: no
//! libseccomp to link or install, and nothing loaded at run time) and installs it.
//!
//! seccompiler gives every rule of one filter the same action, while an OCI profile mixes
//! actions. The kernel runs every installed filter and keeps the most severe verdict, so the
//! profile becomes one filter per distinct action (its syscalls -> that action, else allow)
//! plus a base filter (every syscall with a rule -> allow, else the default action): a call
//! that matches a rule gets that rule's action, any other call the default action.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// A compiled profile: filters to install in order.
#[derive(Debug, Default)]
pub(crate) struct CompiledSeccomp {
    pub filters: Vec<BpfProgram>,
}

/// The seccompiler JSON action for an OCI action; `errno_ret` defaults to EPERM like runc.
fn action_json(action: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<Value> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => json!("allow"),
        LinuxSeccompAction::ScmpActErrno => {
            json!({"errno": errno_ret.unwrap_or(libc::EPERM as u32)})
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            json!("kill_thread")
        }
        LinuxSeccompAction::ScmpActKillProcess => json!("kill_process"),
        LinuxSeccompAction::ScmpActTrap => json!("trap"),
        LinuxSeccompAction::ScmpActLog => json!("log"),
        LinuxSeccompAction::ScmpActTrace => {
            json!({"trace": errno_ret.unwrap_or(libc::EPERM as u32)})
        }
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp(
                "SCMP_ACT_NOTIFY needs a listener, which is not supported".into(),
            ));
        }
    })
}

fn op_json(op: LinuxSeccompOperator, value_two: u64) -> Value {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => json!("ne"),
        LinuxSeccompOperator::ScmpCmpLt => json!("lt"),
        LinuxSeccompOperator::ScmpCmpLe => json!("le"),
        LinuxSeccompOperator::ScmpCmpEq => json!("eq"),
        LinuxSeccompOperator::ScmpCmpGe => json!("ge"),
        LinuxSeccompOperator::ScmpCmpGt => json!("gt"),
        LinuxSeccompOperator::ScmpCmpMaskedEq => json!({"masked_eq": value_two}),
    }
}

/// Compiles `profile` for x86_64/aarch64. Syscall names this architecture lacks are skipped,
/// as runc skips them.
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<CompiledSeccomp> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| Error::Seccomp(format!("architecture {}: {e:?}", std::env::consts::ARCH)))?;
    let default = action_json(profile.default_action(), profile.default_errno_ret())?;
    // action JSON (as text, to key on it) -> rules of that action
    let mut by_action: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut base_rules = Vec::new();
    for syscall in profile.syscalls().as_deref().unwrap_or_default() {
        let action = action_json(syscall.action(), syscall.errno_ret())?;
        let args: Option<Vec<Value>> =
            syscall
                .args()
                .as_ref()
                .filter(|a| !a.is_empty())
                .map(|args| {
                    args.iter()
                        .map(|a| {
                            // MASKED_EQ: `value` is the mask and `valueTwo` the value it must equal.
                            let (val, op) = if a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                                (a.value_two().unwrap_or(0), op_json(a.op(), a.value()))
                            } else {
                                (a.value(), op_json(a.op(), 0))
                            };
                            json!({"index": a.index(), "type": "qword", "op": op, "val": val})
                        })
                        .collect()
                });
        for name in syscall.names() {
            let rule = match &args {
                Some(args) => json!({"syscall": name, "args": args}),
                None => json!({"syscall": name}),
            };
            if action != default {
                base_rules.push(rule.clone());
            }
            if action != json!("allow") && action != default {
                by_action.entry(action.to_string()).or_default().push(rule);
            }
        }
    }
    let mut filters = Vec::new();
    for (action, rules) in by_action {
        let action: Value =
            serde_json::from_str(&action).map_err(|e| Error::Seccomp(e.to_string()))?;
        filters.push(build(arch, &json!("allow"), &action, rules)?);
    }
    // The base filter goes in last: installed, it judges the calls that install the next
    // filters, which an allow-list may not list.
    if default != json!("allow") {
        filters.push(build(arch, &default, &json!("allow"), base_rules)?);
    }
    Ok(CompiledSeccomp { filters })
}

/// Compiles one filter; rules naming a syscall this architecture lacks are dropped and the
/// filter is compiled again.
fn build(
    arch: TargetArch,
    mismatch: &Value,
    matched: &Value,
    mut rules: Vec<Value>,
) -> Result<BpfProgram> {
    // A syscall with one unconditional rule matches always: its conditional rules are moot
    // (seccompiler reads an entry without args as "always").
    let unconditional: std::collections::HashSet<String> = rules
        .iter()
        .filter(|r| r.get("args").is_none())
        .filter_map(|r| r["syscall"].as_str().map(str::to_string))
        .collect();
    rules.retain(|r| {
        r.get("args").is_none()
            || !r["syscall"]
                .as_str()
                .is_some_and(|s| unconditional.contains(s))
    });
    // Profiles such as podman's list syscalls of every architecture. Drop the ones this one
    // lacks before compiling: each unknown name would otherwise cost a whole compile (the loop
    // below stays as the fallback for names the two tables disagree on).
    rules.retain(|r| {
        let known = r["syscall"]
            .as_str()
            .is_some_and(|name| name.parse::<syscalls::Sysno>().is_ok());
        if !known {
            tracing::debug!(
                "seccomp: skipping {}, unknown on this architecture",
                r["syscall"]
            );
        }
        known
    });
    loop {
        let doc =
            json!({"f": {"mismatch_action": mismatch, "match_action": matched, "filter": rules}});
        let text = doc.to_string();
        match seccompiler::compile_from_json(text.as_bytes(), arch) {
            Ok(mut map) => {
                return map
                    .remove("f")
                    .ok_or_else(|| Error::Seccomp("filter missing after compile".into()));
            }
            Err(e) => {
                // seccompiler keeps its syscall table and this error variant private; its
                // message names the syscall ("Invalid syscall name: NAME for given arch").
                let message = e.to_string();
                let unknown = message
                    .split_once("Invalid syscall name: ")
                    .and_then(|(_, rest)| rest.split_once(" for given arch"))
                    .map(|(name, _)| name.to_string());
                let Some(name) = unknown else {
                    return Err(Error::Seccomp(message));
                };
                let before = rules.len();
                rules.retain(|r| r["syscall"].as_str() != Some(name.as_str()));
                if rules.len() == before {
                    return Err(Error::Seccomp(message));
                }
                tracing::debug!("seccomp: skipping syscall {name}, unknown on this architecture");
            }
        }
    }
}

/// Installs the filters in the calling thread; needs no_new_privs or CAP_SYS_ADMIN.
///
/// Through seccomp(2) itself: seccompiler's `apply_filter` sets no_new_privs first, which a
/// spec with `noNewPrivileges: false` (Docker's) must not get.
pub(crate) fn install(compiled: &CompiledSeccomp) -> Result<()> {
    for (i, filter) in compiled.filters.iter().enumerate() {
        let len = u16::try_from(filter.len())
            .ok()
            .filter(|&len| len > 0)
            .ok_or_else(|| {
                Error::Seccomp(format!("filter {i} has {} instructions", filter.len()))
            })?;
        let prog = libc::sock_fprog {
            len,
            // seccompiler's sock_filter is #[repr(C)] with the kernel's layout, as libc's is.
            filter: filter.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        // SAFETY: the kernel only reads `prog` and the `len` instructions it points to, which
        // `filter` holds for the duration of the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(Error::Seccomp(format!(
                "installing filter {} of {}: {}",
                i + 1,
                compiled.filters.len(),
                nix::errno::Errno::last()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn allow_list_with_errno_rules_gives_two_filters() {
        let compiled = compile(&profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "no_such_syscall_anywhere"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        })))
        .unwrap();
        assert_eq!(compiled.filters.len(), 2);
        assert!(compiled.filters.iter().all(|f| !f.is_empty()));
    }

    #[test]
    fn default_allow_with_one_denied_call_gives_one_filter() {
        let compiled = compile(&profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        })))
        .unwrap();
        assert_eq!(compiled.filters.len(), 1);
    }

    #[test]
    fn other_architectures_syscalls_are_dropped_without_changing_the_filter() {
        let foreign = [
            "arm_fadvise64_64",
            "breakpoint",
            "cacheflush",
            "set_tls",
            "s390_pci_mmio_read",
        ];
        let with_foreign = compile(&profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": foreign.iter().chain(&["mkdir"]).collect::<Vec<_>>(),
                          "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        })))
        .unwrap();
        let plain = compile(&profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        })))
        .unwrap();
        assert_eq!(with_foreign.filters, plain.filters);
    }

    #[test]
    fn notify_is_refused() {
        let err = compile(&profile(json!({"defaultAction": "SCMP_ACT_NOTIFY"}))).unwrap_err();
        assert!(err.to_string().contains("NOTIFY"), "{err}");
    }
}
