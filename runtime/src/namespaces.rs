//! Which namespaces a container gets new and which it joins by path, in the order the kernel
//! needs (user first), and the id maps the parent writes for a new user namespace.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

/// The namespace plan of a container.
#[derive(Debug)]
pub(crate) struct Namespaces {
    /// Namespaces created new.
    pub new: CloneFlags,
    /// Namespaces joined by path, user namespace first.
    pub join: Vec<(CloneFlags, PathBuf)>,
}

fn clone_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // The time namespace applies to children only; treated like pid.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

impl Namespaces {
    /// Reads `linux.namespaces`.
    pub(crate) fn from_spec(spec: &Spec) -> Self {
        let mut plan = Namespaces {
            new: CloneFlags::empty(),
            join: Vec::new(),
        };
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_deref())
            .unwrap_or_default();
        for ns in namespaces {
            let flag = clone_flag(ns.typ());
            match ns.path() {
                Some(path) if !path.as_os_str().is_empty() => {
                    plan.join.push((flag, path.clone()));
                }
                _ => plan.new |= flag,
            }
        }
        plan.join
            .sort_by_key(|(flag, _)| *flag != CloneFlags::CLONE_NEWUSER);
        plan
    }

    /// Whether the container runs in a user namespace, new or joined.
    pub(crate) fn has_user(&self) -> bool {
        self.new.contains(CloneFlags::CLONE_NEWUSER)
            || self
                .join
                .iter()
                .any(|(f, _)| *f == CloneFlags::CLONE_NEWUSER)
    }

    /// The flags for clone3: everything new when no user namespace is joined (the new ones are
    /// then owned by the new or the host user namespace, as they should); otherwise only the
    /// pid/time namespaces, and the rest are unshared after joining the user namespace.
    ///
    /// The cgroup namespace is never cloned: init unshares it once it is in its cgroup, so that
    /// the namespace's root is the container's cgroup.
    pub(crate) fn clone_flags(&self) -> CloneFlags {
        let joins_user = self
            .join
            .iter()
            .any(|(f, _)| *f == CloneFlags::CLONE_NEWUSER);
        let flags = if joins_user {
            self.new
                & (CloneFlags::CLONE_NEWPID | CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
        } else {
            self.new
        };
        flags - CloneFlags::CLONE_NEWCGROUP
    }

    /// Namespaces still to unshare in the child after joining.
    pub(crate) fn unshare_flags(&self) -> CloneFlags {
        self.new - self.clone_flags()
    }

    /// Opens the namespaces to join (before any of them is entered: later paths may be
    /// relative to the host's /proc).
    pub(crate) fn open_joins(&self) -> Result<Vec<(CloneFlags, OwnedFd)>> {
        self.join
            .iter()
            .map(|(flag, path)| {
                let fd = nix::fcntl::open(
                    path,
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| Error::sys("open namespace", path, e))?;
                // SAFETY: `open` just returned this descriptor and nothing else owns it.
                Ok((*flag, unsafe {
                    <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                }))
            })
            .collect()
    }
}

/// Removes the pid namespace from opened joins: setns on a pid namespace moves only the
/// caller's later children, so init cannot join it for itself; the runtime joins it around
/// the clone of init instead ([`PidForChildren`]).
pub(crate) fn take_pid_join(joins: &mut Vec<(CloneFlags, OwnedFd)>) -> Option<OwnedFd> {
    let at = joins
        .iter()
        .position(|(flag, _)| *flag == CloneFlags::CLONE_NEWPID)?;
    Some(joins.remove(at).1)
}

/// The caller's own pid namespace, kept while its children go to another one.
#[derive(Debug)]
pub(crate) struct PidForChildren {
    own: OwnedFd,
}

impl PidForChildren {
    /// Makes the children this process forks from now on start in pid namespace `target`.
    pub(crate) fn enter(target: &OwnedFd) -> Result<Self> {
        let own_path = "/proc/self/ns/pid";
        let own = nix::fcntl::open(
            own_path,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::sys("open namespace", own_path, e))?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let own = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(own) };
        nix::sched::setns(target, CloneFlags::CLONE_NEWPID)
            .map_err(|e| Error::sys("setns", "the spec's pid namespace", e))?;
        Ok(Self { own })
    }

    /// Children start in the caller's own pid namespace again (hooks the runtime runs must
    /// not land in the container's).
    pub(crate) fn leave(self) -> Result<()> {
        nix::sched::setns(&self.own, CloneFlags::CLONE_NEWPID)
            .map_err(|e| Error::sys("setns", "the runtime's own pid namespace", e))
    }
}

/// Enters the namespaces opened by [`Namespaces::open_joins`], then unshares `unshare`.
pub(crate) fn enter(joins: &[(CloneFlags, OwnedFd)], unshare: CloneFlags) -> Result<()> {
    for (flag, fd) in joins {
        nix::sched::setns(fd, *flag).map_err(|e| Error::sys("setns", format!("{flag:?}"), e))?;
    }
    if !unshare.is_empty() {
        nix::sched::unshare(unshare)
            .map_err(|e| Error::sys("unshare", format!("{unshare:?}"), e))?;
    }
    Ok(())
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Writes the uid and gid maps of `pid`'s new user namespace; only a process outside it may.
pub(crate) fn write_id_maps(pid: Pid, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let uids = linux
        .and_then(|l| l.uid_mappings().as_deref())
        .unwrap_or_default();
    let gids = linux
        .and_then(|l| l.gid_mappings().as_deref())
        .unwrap_or_default();
    if uids.is_empty() || gids.is_empty() {
        return Err(Error::field(
            "linux.uidMappings",
            "a new user namespace needs uidMappings and gidMappings",
        ));
    }
    for (file, text) in [("uid_map", map_text(uids)), ("gid_map", map_text(gids))] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(namespaces: serde_json::Value) -> Spec {
        let mut json = serde_json::to_value(crate::spec::default_spec()).unwrap();
        json["linux"]["namespaces"] = namespaces;
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn new_namespaces_go_to_clone() {
        let plan = Namespaces::from_spec(&spec_with(serde_json::json!([
            {"type": "pid"}, {"type": "mount"}, {"type": "user"}, {"type": "cgroup"},
            {"type": "network", "path": "/run/netns/x"}
        ])));
        assert_eq!(
            plan.clone_flags(),
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUSER
        );
        assert_eq!(plan.unshare_flags(), CloneFlags::CLONE_NEWCGROUP);
        assert_eq!(
            plan.join,
            [(CloneFlags::CLONE_NEWNET, PathBuf::from("/run/netns/x"))]
        );
        assert!(plan.has_user());
    }

    #[test]
    fn joined_user_namespace_comes_first_and_defers_the_rest() {
        let plan = Namespaces::from_spec(&spec_with(serde_json::json!([
            {"type": "network", "path": "/n"}, {"type": "mount"}, {"type": "pid"}, {"type": "user", "path": "/u"}
        ])));
        assert_eq!(plan.join[0].0, CloneFlags::CLONE_NEWUSER);
        assert_eq!(plan.clone_flags(), CloneFlags::CLONE_NEWPID);
        assert_eq!(plan.unshare_flags(), CloneFlags::CLONE_NEWNS);
    }

    #[test]
    fn maps_are_formatted_one_per_line() {
        let json = serde_json::json!([
            {"containerID": 0, "hostID": 100000, "size": 65536},
            {"containerID": 65536, "hostID": 5, "size": 1}
        ]);
        let maps: Vec<LinuxIdMapping> = serde_json::from_value(json).unwrap();
        assert_eq!(map_text(&maps), "0 100000 65536\n65536 5 1\n");
    }
}
