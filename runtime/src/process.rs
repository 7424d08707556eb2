//! Turns init into the container's process: rlimits, oom score, user and groups, capabilities
//! (all five sets), no_new_privs, umask, cwd, and the execve of the resolved program.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxCapabilities, PosixRlimit, PosixRlimitType, Process};

use crate::error::{Error, Result};

/// The tracing target of the warnings about ambient capabilities that cannot be raised: the
/// runtime's logger keeps them out of stderr unless a log file or `--debug` asks for them.
pub const AMBIENT_LOG_TARGET: &str = "berth_runtime::ambient";

/// The program and environment to exec, prepared before the process blocks on start so a
/// missing binary fails `create`.
#[derive(Debug)]
pub struct Exec {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

fn cstring(field: &'static str, s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| Error::field(field, "contains a NUL byte"))
}

/// Resolves `args[0]` against the process's PATH inside the (already pivoted) root.
pub fn prepare_exec(process: &Process) -> Result<Exec> {
    let args = process.args().as_deref().unwrap_or_default();
    let env = process.env().as_deref().unwrap_or_default();
    let program = args
        .first()
        .ok_or_else(|| Error::field("process.args", "empty"))?;
    let path = if program.contains('/') {
        let p = PathBuf::from(program);
        // Relative to cwd, which init entered already.
        if !is_executable(&p) {
            return Err(Error::field(
                "process.args",
                format!("{program}: no such executable in the container"),
            ));
        }
        p
    } else {
        let search = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        search
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(program))
            .find(|p| is_executable(p))
            .ok_or_else(|| {
                Error::field(
                    "process.args",
                    format!("{program}: executable file not found in $PATH"),
                )
            })?
    };
    Ok(Exec {
        path: cstring("process.args", path.as_os_str().as_bytes())?,
        argv: args
            .iter()
            .map(|a| cstring("process.args", a.as_bytes()))
            .collect::<Result<_>>()?,
        envp: env
            .iter()
            .map(|e| cstring("process.env", e.as_bytes()))
            .collect::<Result<_>>()?,
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Sets the spec's rlimits. Raising a hard limit needs CAP_SYS_RESOURCE, which fails with
/// EPERM and names the limit.
pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for rl in rlimits {
        let resource = match rl.typ() {
            PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
            PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
            PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
            PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
            PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
            PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
            PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
            PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
            PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
            PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
            PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
            PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
            PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
            PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
            PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
            PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
        };
        let limit = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(Error::sys(
                "setrlimit",
                format!("process.rlimits {:?} {}:{}", rl.typ(), rl.soft(), rl.hard()),
                nix::errno::Errno::last(),
            ));
        }
    }
    Ok(())
}

fn caps_set(
    field: &'static str,
    caps: Option<&HashSet<oci_spec::runtime::Capability>>,
) -> Result<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for cap in caps.into_iter().flatten() {
        let name = format!("CAP_{cap}");
        match Capability::from_str(&name) {
            Ok(c) => {
                out.insert(c);
            }
            Err(_) => return Err(Error::field(field, format!("unknown capability {name}"))),
        }
    }
    Ok(out)
}

/// The five capability sets, parsed before anything is dropped.
#[derive(Debug, Default)]
pub struct CapabilitySets {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    permitted: CapsHashSet,
    inheritable: CapsHashSet,
    ambient: CapsHashSet,
}

impl CapabilitySets {
    pub fn from_spec(caps: Option<&LinuxCapabilities>) -> Result<Self> {
        let Some(c) = caps else {
            return Ok(Self::default());
        };
        Ok(Self {
            bounding: caps_set("process.capabilities.bounding", c.bounding().as_ref())?,
            effective: caps_set("process.capabilities.effective", c.effective().as_ref())?,
            permitted: caps_set("process.capabilities.permitted", c.permitted().as_ref())?,
            inheritable: caps_set("process.capabilities.inheritable", c.inheritable().as_ref())?,
            ambient: caps_set("process.capabilities.ambient", c.ambient().as_ref())?,
        })
    }

    /// The ambient set split into what the kernel will raise and what it refuses, each sorted:
    /// PR_CAP_AMBIENT_RAISE takes only a capability that is both permitted and inheritable.
    /// Like runc, berth raises the first and warns about the second instead of failing the
    /// container (buildah writes ambient sets wider than its inheritable sets).
    pub fn ambient_split(&self) -> (Vec<Capability>, Vec<Capability>) {
        let mut ambient: Vec<Capability> = self.ambient.iter().copied().collect();
        ambient.sort_by_key(|c| c.index());
        ambient
            .into_iter()
            .partition(|c| self.permitted.contains(c) && self.inheritable.contains(c))
    }

    /// Logs a warning for each ambient capability that cannot be raised. Called by the
    /// runtime before it forks, so the warning lands in its log (`--log`).
    pub fn warn_unraisable_ambient(&self) {
        for cap in self.ambient_split().1 {
            let missing = match (
                self.permitted.contains(&cap),
                self.inheritable.contains(&cap),
            ) {
                (false, false) => "permitted and inheritable sets",
                (false, true) => "permitted set",
                _ => "inheritable set",
            };
            tracing::warn!(
                target: AMBIENT_LOG_TARGET,
                "can't raise ambient capability {cap}: not in the {missing}"
            );
        }
    }

    /// Whether the process ends without CAP_SYS_ADMIN in its effective set: then a seccomp
    /// filter installed without no_new_privs needs it held until the filter is in.
    pub fn lacks_sys_admin(&self) -> bool {
        !self.effective.contains(&Capability::CAP_SYS_ADMIN)
    }
}

fn caps_err(what: &'static str) -> impl Fn(caps::errors::CapsError) -> Error {
    move |e| Error::field("process.capabilities", format!("{what}: {e}"))
}

/// Whether CAP_SYS_ADMIN must be held past the spec's sets until a seccomp filter is in:
/// without no_new_privs the kernel installs a filter only for a holder of it.
pub fn must_hold_sys_admin(process: &Process, caps: &CapabilitySets, seccomp: bool) -> bool {
    seccomp && !process.no_new_privileges().unwrap_or(false) && caps.lacks_sys_admin()
}

/// Drops to the spec's user with the spec's capabilities: the bounding set first (needs
/// CAP_SETPCAP), then groups, gid and uid with PR_SET_KEEPCAPS so permitted capabilities
/// survive the uid change, then the effective, permitted, inheritable and ambient sets.
///
/// With `hold_sys_admin`, CAP_SYS_ADMIN stays effective and permitted beyond the spec's sets,
/// so that a seccomp filter can still be installed later without no_new_privs;
/// [`release_held`] then sets the spec's sets exactly.
pub fn become_user(process: &Process, caps: &CapabilitySets, hold_sys_admin: bool) -> Result<()> {
    for cap in caps::all() {
        if !caps.bounding.contains(&cap) {
            // Capabilities the running kernel does not know are not in the set to begin with.
            match caps::drop(None, CapSet::Bounding, cap) {
                Ok(()) => {}
                Err(_) if !caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) => {}
                Err(e) => return Err(caps_err("dropping bounding")(e)),
            }
        }
    }
    let user = process.user();
    let uid = Uid::from_raw(user.uid());
    let gid = Gid::from_raw(user.gid());
    let mut groups: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    groups.dedup();
    // setgroups is refused in a user namespace whose setgroups file says deny; an empty list
    // there is the only possible outcome anyway.
    if let Err(e) = nix::unistd::setgroups(&groups)
        && !(groups.is_empty() && e == nix::errno::Errno::EPERM)
    {
        return Err(Error::sys("setgroups", "process.user.additionalGids", e));
    }
    // SAFETY: prctl with PR_SET_KEEPCAPS takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(Error::sys(
            "prctl(PR_SET_KEEPCAPS)",
            "",
            nix::errno::Errno::last(),
        ));
    }
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| Error::sys("setresgid", "process.user.gid", e))?;
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| Error::sys("setresuid", "process.user.uid", e))?;
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) } != 0 {
        return Err(Error::sys(
            "prctl(PR_SET_KEEPCAPS)",
            "",
            nix::errno::Errno::last(),
        ));
    }
    // capset checks each call against the sets as they are: inheritable first (CAP_SETPCAP
    // is still effective), then effective (within the old permitted), then permitted, which
    // must still hold the new effective; ambient last, within permitted and inheritable.
    let held = |set: &CapsHashSet| {
        let mut set = set.clone();
        if hold_sys_admin {
            set.insert(Capability::CAP_SYS_ADMIN);
        }
        set
    };
    caps::set(None, CapSet::Inheritable, &caps.inheritable).map_err(caps_err("inheritable"))?;
    caps::set(None, CapSet::Effective, &held(&caps.effective)).map_err(caps_err("effective"))?;
    caps::set(None, CapSet::Permitted, &held(&caps.permitted)).map_err(caps_err("permitted"))?;
    // The ones the kernel would refuse were warned about by the runtime before it forked.
    caps::clear(None, CapSet::Ambient).map_err(caps_err("ambient"))?;
    for cap in caps.ambient_split().0 {
        caps::raise(None, CapSet::Ambient, cap).map_err(caps_err("ambient"))?;
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets to the spec's exactly, dropping what
/// [`become_user`] held. One capset call: it runs after the seccomp filter is installed, so
/// it is judged by the container's profile (every profile that lets a container start
/// allows capset).
pub fn release_held(caps: &CapabilitySets) -> Result<()> {
    // struct __user_cap_header_struct and __user_cap_data_struct, version 3 (two data
    // structs: capabilities 0-31, then 32-63).
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mask = |set: &CapsHashSet| set.iter().fold(0u64, |m, c| m | c.bitmask());
    let (e, p, i) = (
        mask(&caps.effective),
        mask(&caps.permitted),
        mask(&caps.inheritable),
    );
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    #[allow(
        clippy::cast_possible_truncation,
        reason = "splitting each 64-bit mask into the kernel's two 32-bit words"
    )]
    let data = [0, 32].map(|shift| Data {
        effective: (e >> shift) as u32,
        permitted: (p >> shift) as u32,
        inheritable: (i >> shift) as u32,
    });
    // SAFETY: capset reads one header and, for version 3, two data structs; both live
    // across the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(Error::sys(
            "capset",
            "dropping CAP_SYS_ADMIN held for seccomp (the profile must allow capset, or set noNewPrivileges)",
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// Sets no_new_privs: no exec can gain privileges (setuid bits, file capabilities).
pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::sys(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            "",
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// Replaces the process with the container's program; returns only on failure.
pub fn exec(exec: &Exec) -> Error {
    match nix::unistd::execve(&exec.path, &exec.argv, &exec.envp) {
        Err(e) => Error::sys("execve", exec.path.to_string_lossy().into_owned(), e),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: serde_json::Value) -> Process {
        let mut base =
            serde_json::to_value(crate::spec::default_spec()).unwrap()["process"].clone();
        for (k, v) in json.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn program_is_found_on_the_spec_path() {
        let p = process(
            serde_json::json!({"args": ["sh", "-c", "true"], "env": ["PATH=/nonexistent:/bin"]}),
        );
        let exec = prepare_exec(&p).unwrap();
        assert_eq!(exec.path.to_str().unwrap(), "/bin/sh");
        assert_eq!(exec.argv.len(), 3);
        assert_eq!(exec.envp[0].to_str().unwrap(), "PATH=/nonexistent:/bin");
    }

    #[test]
    fn missing_program_names_it() {
        let p = process(serde_json::json!({"args": ["berth-no-such-binary"]}));
        let err = prepare_exec(&p).unwrap_err().to_string();
        assert!(
            err.contains("berth-no-such-binary") && err.contains("not found"),
            "{err}"
        );
        let p = process(serde_json::json!({"args": ["/berth/no/such"]}));
        assert!(prepare_exec(&p).is_err());
    }

    #[test]
    fn default_capabilities_parse() {
        let spec = crate::spec::default_spec();
        let sets =
            CapabilitySets::from_spec(spec.process().as_ref().unwrap().capabilities().as_ref())
                .unwrap();
        assert!(sets.bounding.contains(&Capability::CAP_KILL));
        assert!(!sets.bounding.contains(&Capability::CAP_SYS_ADMIN));
    }

    fn sets(json: serde_json::Value) -> CapabilitySets {
        let caps: LinuxCapabilities = serde_json::from_value(json).unwrap();
        CapabilitySets::from_spec(Some(&caps)).unwrap()
    }

    #[test]
    fn only_permitted_and_inheritable_ambient_caps_are_raised() {
        // buildah's shape: ambient lists capabilities the inheritable set lacks.
        let caps = sets(serde_json::json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"],
            "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            "inheritable": ["CAP_KILL", "CAP_SETUID"],
            "ambient": ["CAP_NET_RAW", "CAP_KILL", "CAP_CHOWN", "CAP_SETUID"]
        }));
        let (raised, refused) = caps.ambient_split();
        assert_eq!(raised, [Capability::CAP_KILL]);
        assert_eq!(
            refused,
            [
                Capability::CAP_CHOWN,
                Capability::CAP_SETUID,
                Capability::CAP_NET_RAW
            ]
        );
    }

    #[test]
    fn an_ambient_subset_is_raised_whole() {
        let caps = sets(serde_json::json!({
            "permitted": ["CAP_KILL", "CAP_CHOWN"],
            "inheritable": ["CAP_KILL", "CAP_CHOWN"],
            "ambient": ["CAP_CHOWN", "CAP_KILL"]
        }));
        assert_eq!(
            caps.ambient_split(),
            (vec![Capability::CAP_CHOWN, Capability::CAP_KILL], vec![])
        );
        assert!(caps.lacks_sys_admin());
    }
}
