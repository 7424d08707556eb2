//! podman's security options applied to a runtime spec: `--privileged`, `--cap-add`,
//! `--cap-drop`, `--security-opt seccomp=…` and `--security-opt no-new-privileges`, with the
//! default seccomp profile for every container that does not opt out.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, LinuxCapabilities, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, Spec,
};

use crate::error::{Error, Result};
use crate::seccomp_profile;

/// Which seccomp profile a container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SeccompChoice {
    /// berth's default profile (`seccomp_profile::DEFAULT_PROFILE_JSON`).
    #[default]
    Default,
    /// No filter at all.
    Unconfined,
    /// A Docker or OCI profile's JSON text.
    Profile(String),
}

/// The security options of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOptions {
    /// Every capability, no seccomp, every host device, nothing masked or read-only.
    pub privileged: bool,
    pub seccomp: SeccompChoice,
    /// None keeps the spec's value (on in berth's specs), except that `privileged` turns it off.
    pub no_new_privileges: Option<bool>,
    /// Capability names (`NET_ADMIN`, `CAP_NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
}

fn bad(option: &str, reason: impl Into<String>) -> Error {
    Error::Security {
        option: option.to_string(),
        reason: reason.into(),
    }
}

impl SecurityOptions {
    /// Takes one `--security-opt` value: `seccomp=unconfined`, `seccomp=PATH` (the file is
    /// read and checked now), `no-new-privileges`, `no-new-privileges=true|false`.
    pub fn add_security_opt(&mut self, text: &str) -> Result<()> {
        let (key, value) = match text.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (text, None),
        };
        match (key, value) {
            ("seccomp", Some("unconfined")) => self.seccomp = SeccompChoice::Unconfined,
            ("seccomp", Some(path)) if !path.is_empty() => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| bad(text, format!("reading {path}: {e}")))?;
                seccomp_profile::parse(&text)
                    .map_err(|e| bad(&format!("seccomp={path}"), e.to_string()))?;
                self.seccomp = SeccompChoice::Profile(text);
            }
            ("no-new-privileges", None) => self.no_new_privileges = Some(true),
            ("no-new-privileges", Some(v)) => {
                self.no_new_privileges = Some(
                    v.parse()
                        .map_err(|_| bad(text, "expected no-new-privileges, =true or =false"))?,
                )
            }
            _ => {
                return Err(bad(
                    text,
                    "expected seccomp=unconfined, seccomp=PATH or no-new-privileges[=true|false]",
                ));
            }
        }
        Ok(())
    }

    /// Checks capability names and the profile without a spec (for specs sent elsewhere).
    pub fn validate(&self) -> Result<()> {
        self.capabilities(&HashSet::new()).map(|_| ())?;
        if let SeccompChoice::Profile(text) = &self.seccomp {
            seccomp_profile::parse(text).map_err(|e| bad("seccomp", e.to_string()))?;
        }
        Ok(())
    }

    /// `defaults` changed as podman changes them: privileged or `ALL` added gives every
    /// capability, `ALL` dropped none; named drops, then named adds.
    fn capabilities(&self, defaults: &Capabilities) -> Result<Capabilities> {
        let is_all = |c: &String| c.eq_ignore_ascii_case("all");
        let parse = |option: &str, names: &[String]| -> Result<Capabilities> {
            names
                .iter()
                .filter(|c| !is_all(c))
                .map(|c| seccomp_profile::capability(c).map_err(|e| bad(option, e)))
                .collect()
        };
        let add = parse("--cap-add", &self.cap_add)?;
        let drop = parse("--cap-drop", &self.cap_drop)?;
        if let Some(both) = add.intersection(&drop).next() {
            let name = serde_json::to_value(both).unwrap_or_default();
            return Err(bad(
                "--cap-add",
                format!("{} is both added and dropped", name.as_str().unwrap_or("?")),
            ));
        }
        let add_all = self.privileged || self.cap_add.iter().any(is_all);
        let mut caps = if add_all {
            all_capabilities()
        } else if self.cap_drop.iter().any(is_all) {
            HashSet::new()
        } else {
            defaults.clone()
        };
        caps.retain(|c| !drop.contains(c));
        caps.extend(add);
        Ok(caps)
    }
}

/// Every capability this process may hand on: its bounding set (root here may lack some, such
/// as CAP_SYS_RESOURCE, and asking for one it lacks makes capset fail).
pub fn all_capabilities() -> Capabilities {
    caps::read(None, caps::CapSet::Bounding)
        .unwrap_or_else(|_| caps::runtime::thread_all_supported())
        .iter()
        .filter_map(|c| seccomp_profile::capability(&c.to_string()).ok())
        .collect()
}

/// Applies `opts` to `spec`: capabilities, then the seccomp profile resolved against the new
/// bounding set, no_new_privileges, and for `privileged` the host's devices and an unmasked,
/// writable /proc and /sys.
pub fn apply(spec: &mut Spec, opts: &SecurityOptions) -> Result<()> {
    let mut process = spec.process().clone().unwrap_or_default();
    let mut caps = process.capabilities().clone().unwrap_or_default();
    let bounding = opts.capabilities(caps.bounding().as_ref().unwrap_or(&HashSet::new()))?;
    set_capabilities(&mut caps, &bounding);
    process.set_capabilities(Some(caps));
    let nnp = opts
        .no_new_privileges
        .unwrap_or(!opts.privileged && process.no_new_privileges().unwrap_or(false));
    process.set_no_new_privileges(Some(nnp));
    spec.set_process(Some(process));
    let seccomp = match (&opts.seccomp, opts.privileged) {
        (_, true) | (SeccompChoice::Unconfined, _) => None,
        (SeccompChoice::Default, false) => Some(seccomp_profile::default_profile(&bounding)),
        (SeccompChoice::Profile(text), false) => {
            let profile =
                seccomp_profile::parse(text).map_err(|e| bad("seccomp", e.to_string()))?;
            Some(seccomp_profile::resolve(&profile, &bounding)?)
        }
    };
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_seccomp(seccomp);
    if opts.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
        let mut allow_all = LinuxDeviceCgroup::default();
        allow_all.set_allow(true);
        allow_all.set_access(Some("rwm".to_string()));
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_devices(Some(vec![allow_all]));
        linux.set_resources(Some(resources));
        linux.set_devices(Some(host_devices(Path::new("/dev"))));
        if let Some(mounts) = spec.mounts_mut() {
            for m in mounts.iter_mut().filter(|m| {
                matches!(
                    m.typ().as_deref(),
                    Some("sysfs") | Some("cgroup") | Some("proc")
                )
            }) {
                let options = m.options().clone().unwrap_or_default();
                m.set_options(Some(options.into_iter().filter(|o| o != "ro").collect()));
            }
        }
    }
    spec.set_linux(Some(linux));
    Ok(())
}

/// The bounding, effective and permitted sets become `caps`; the inheritable and ambient
/// sets keep only what is still in it.
fn set_capabilities(sets: &mut LinuxCapabilities, caps: &Capabilities) {
    sets.set_bounding(Some(caps.clone()));
    sets.set_effective(Some(caps.clone()));
    sets.set_permitted(Some(caps.clone()));
    let keep = |set: &Option<Capabilities>| {
        set.as_ref()
            .map(|s| s.intersection(caps).copied().collect::<Capabilities>())
    };
    let inheritable = keep(sets.inheritable());
    let ambient = keep(sets.ambient());
    sets.set_inheritable(inheritable);
    sets.set_ambient(ambient);
}

/// The host's device nodes under `dir` as podman's `--privileged` passes them: char and block
/// devices, not the pty, shm and mqueue trees (the container gets its own).
fn host_devices(dir: &Path) -> Vec<LinuxDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let skip = ["pts", "shm", "mqueue"].map(|d| Path::new("/dev").join(d));
                if !skip.contains(&path) {
                    stack.push(path);
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            if path == Path::new("/dev/console") || path == Path::new("/dev/ptmx") {
                continue;
            }
            let rdev = meta.rdev();
            let mut dev = LinuxDevice::default();
            dev.set_path(path);
            dev.set_typ(typ);
            dev.set_major(i64::from(libc::major(rdev)));
            dev.set_minor(i64::from(libc::minor(rdev)));
            dev.set_file_mode(Some(meta.mode() & 0o7777));
            dev.set_uid(Some(meta.uid()));
            dev.set_gid(Some(meta.gid()));
            out.push(dev);
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    fn spec_with(opts: &SecurityOptions) -> Result<Spec> {
        let mut spec = Spec::default();
        apply(&mut spec, opts)?;
        Ok(spec)
    }

    fn effective(spec: &Spec) -> Capabilities {
        let process = spec.process().as_ref().unwrap();
        let caps = process.capabilities().as_ref().unwrap();
        caps.effective().clone().unwrap()
    }

    #[test]
    fn default_gets_the_default_profile_and_keeps_no_new_privileges() {
        let spec = spec_with(&SecurityOptions::default()).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_some());
        assert_eq!(
            spec.process().as_ref().unwrap().no_new_privileges(),
            Some(true)
        );
    }

    #[test]
    fn cap_drop_all_then_add_one() {
        let opts = SecurityOptions {
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["net_admin".into()],
            ..Default::default()
        };
        let spec = spec_with(&opts).unwrap();
        assert_eq!(effective(&spec), [Capability::NetAdmin].into());
        let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        let allowed = seccomp.syscalls().clone().unwrap();
        assert!(
            !allowed
                .iter()
                .any(|s| s.names().contains(&"mount".to_string()))
        );
    }

    #[test]
    fn privileged_is_unconfined_with_every_capability_and_device() {
        let opts = SecurityOptions {
            privileged: true,
            ..Default::default()
        };
        let spec = spec_with(&opts).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().is_none());
        assert!(effective(&spec).contains(&Capability::SysAdmin));
        assert!(
            linux
                .devices()
                .as_ref()
                .unwrap()
                .iter()
                .any(|d| d.path() == Path::new("/dev/null"))
        );
        assert_eq!(
            spec.process().as_ref().unwrap().no_new_privileges(),
            Some(false)
        );
    }

    #[test]
    fn bad_options_name_what_was_wrong() {
        let mut opts = SecurityOptions::default();
        let err = opts.add_security_opt("apparmor=x").unwrap_err().to_string();
        assert!(err.contains("apparmor=x"), "{err}");
        let err = opts
            .add_security_opt("seccomp=/no/such/file.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/file.json"), "{err}");
        let err = opts
            .add_security_opt("no-new-privileges=maybe")
            .unwrap_err()
            .to_string();
        assert!(err.contains("maybe"), "{err}");
        opts.add_security_opt("no-new-privileges=false").unwrap();
        assert_eq!(opts.no_new_privileges, Some(false));
        opts.cap_add = vec!["CAP_FLY".into()];
        let err = opts.validate().unwrap_err().to_string();
        assert!(err.contains("CAP_FLY"), "{err}");
        let both = SecurityOptions {
            cap_add: vec!["KILL".into()],
            cap_drop: vec!["CAP_KILL".into()],
            ..Default::default()
        };
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .contains("CAP_KILL")
        );
    }
}
