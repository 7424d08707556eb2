//! Which cgroup driver places a container (runc's fs driver or, with `--systemd-cgroup`, its
//! systemd driver) and where: the `slice:prefix:name` cgroupsPath, runc's defaults and
//! wording, the unit it names and the cgroup directory systemd gives that unit.
//!
//! The driver and the unit are recorded in state.json at create, so later commands use the
//! same manager without being told again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The slice a unit goes in when the cgroupsPath names none (runc's, for root).
pub const DEFAULT_SLICE: &str = "system.slice";
/// The unit prefix when there is no cgroupsPath (runc uses `runc`): `berth-<id>.scope`.
pub const DEFAULT_UNIT_PREFIX: &str = "berth";

/// How a container's cgroup is managed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum CgroupDriver {
    /// The runtime writes the cgroup files itself.
    #[default]
    Cgroupfs,
    /// systemd owns a transient unit holding the container; limits are unit properties.
    Systemd(SystemdUnit),
}

/// A systemd cgroupsPath, `slice:prefix:name`, with runc's default slice filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemdUnit {
    pub slice: String,
    pub prefix: String,
    pub name: String,
}

impl SystemdUnit {
    /// The unit for `cgroups_path` as runc reads it: empty means `:berth:<id>`, anything else
    /// must have exactly three `:`-separated parts.
    pub fn from_cgroups_path(cgroups_path: &str, id: &str) -> Result<Self> {
        if cgroups_path.is_empty() {
            return Ok(SystemdUnit {
                slice: DEFAULT_SLICE.to_string(),
                prefix: DEFAULT_UNIT_PREFIX.to_string(),
                name: id.to_string(),
            });
        }
        let parts: Vec<&str> = cgroups_path.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            // runc's own words (libcontainer/specconv), so callers that match on them work.
            return Err(Error::field(
                "linux.cgroupsPath",
                format!(
                    "expected cgroupsPath to be of format \"slice:prefix:name\" for systemd \
                     cgroups, got {cgroups_path:?} instead"
                ),
            ));
        };
        let unit = SystemdUnit {
            slice: if slice.is_empty() {
                DEFAULT_SLICE.to_string()
            } else {
                slice.to_string()
            },
            prefix: prefix.to_string(),
            name: name.to_string(),
        };
        // Checked now, before anything is made, rather than by systemd halfway through.
        unit.cgroup_path()?;
        if unit.name.is_empty() || unit.name.contains('/') || unit.prefix.contains('/') {
            return Err(Error::field(
                "linux.cgroupsPath",
                format!("invalid unit name {:?} in {cgroups_path:?}", unit.unit()),
            ));
        }
        Ok(unit)
    }

    /// The unit's name: `<prefix>-<name>.scope`, or the name itself when it is a slice.
    pub fn unit(&self) -> String {
        if self.name.ends_with(".slice") {
            self.name.clone()
        } else {
            format!("{}-{}.scope", self.prefix, self.name)
        }
    }

    /// The `slice:prefix:name` form libcgroups' systemd manager takes.
    pub fn cgroups_path(&self) -> PathBuf {
        PathBuf::from(format!("{}:{}:{}", self.slice, self.prefix, self.name))
    }

    /// The unit's cgroup relative to the root of the unified hierarchy, as runc and
    /// libcgroups compute it for the system instance: the expanded slice, then the unit.
    pub fn cgroup_path(&self) -> Result<PathBuf> {
        Ok(expand_slice(&self.slice)?.join(self.unit()))
    }
}

/// `a-b.slice` -> `/a.slice/a-b.slice` (systemd nests slices by their dashes; `-.slice` is the
/// root). runc's rules and message (`invalid slice name`).
pub fn expand_slice(slice: &str) -> Result<PathBuf> {
    let invalid = || Error::field("linux.cgroupsPath", format!("invalid slice name: {slice}"));
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(invalid());
    };
    if stem.is_empty() || slice.contains('/') {
        return Err(invalid());
    }
    if stem == "-" {
        return Ok(PathBuf::from("/"));
    }
    let mut path = PathBuf::from("/");
    let mut prefix = String::new();
    for component in stem.split('-') {
        if component.is_empty() {
            return Err(invalid());
        }
        path.push(format!("{prefix}{component}.slice"));
        prefix.push_str(component);
        prefix.push('-');
    }
    Ok(path)
}

/// Refuses a systemd-form cgroupsPath (`slice:prefix:name`: relative, no `/`, three parts)
/// when the fs driver is in use. runc has no such check (it would make a directory named
/// `system.slice:x:y` under its own cgroup); the words mirror its systemd-driver message.
pub fn check_cgroupfs_path(cgroups_path: &Path) -> Result<()> {
    let Some(text) = cgroups_path.to_str() else {
        return Ok(());
    };
    if !text.starts_with('/') && !text.contains('/') && text.split(':').count() == 3 {
        return Err(Error::field(
            "linux.cgroupsPath",
            format!(
                "expected cgroupsPath to be a path for cgroupfs cgroups, got {text:?} instead \
                 (the \"slice:prefix:name\" form needs --systemd-cgroup)"
            ),
        ));
    }
    Ok(())
}

/// Whether systemd runs as PID 1 (its runtime directory exists only then; libcgroups and
/// sd_booted(3) test the same).
pub fn systemd_is_init() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Whether the host can use the systemd driver: systemd as PID 1 and the unified hierarchy
/// (libcgroups' systemd manager drives cgroup v2 only).
pub fn check_systemd_host() -> Result<()> {
    if !systemd_is_init() {
        return Err(Error::SystemdCgroup(
            "--systemd-cgroup needs systemd as PID 1, which this host does not run \
             (/run/systemd/system is missing); use the cgroupfs driver (podman \
             --cgroup-manager cgroupfs)"
                .to_string(),
        ));
    }
    match libcgroups::common::get_cgroup_setup() {
        Ok(libcgroups::common::CgroupSetup::Unified) => Ok(()),
        Ok(setup) => Err(Error::SystemdCgroup(format!(
            "--systemd-cgroup needs the unified cgroup v2 hierarchy; this host mounts \
             {setup:?} cgroups (boot with systemd.unified_cgroup_hierarchy=1, or use the \
             cgroupfs driver)"
        ))),
        Err(e) => Err(Error::SystemdCgroup(format!(
            "--systemd-cgroup: cannot tell which cgroup hierarchy this host mounts: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(path: &str) -> SystemdUnit {
        SystemdUnit::from_cgroups_path(path, "c1").unwrap()
    }

    #[test]
    fn runc_defaults_and_forms() {
        let empty = unit("");
        assert_eq!(empty.unit(), "berth-c1.scope");
        assert_eq!(
            empty.cgroup_path().unwrap(),
            Path::new("/system.slice/berth-c1.scope")
        );
        assert_eq!(empty.cgroups_path(), Path::new("system.slice:berth:c1"));
        let podman = unit("machine.slice:libpod:abc");
        assert_eq!(
            podman.cgroup_path().unwrap(),
            Path::new("/machine.slice/libpod-abc.scope")
        );
        assert_eq!(
            unit(":docker:x").cgroup_path().unwrap(),
            Path::new("/system.slice/docker-x.scope")
        );
        let nested = unit("test-a-b.slice:p:n");
        assert_eq!(
            nested.cgroup_path().unwrap(),
            Path::new("/test.slice/test-a.slice/test-a-b.slice/p-n.scope")
        );
        let slice = unit("system.slice:ignored:mine.slice");
        assert_eq!(slice.unit(), "mine.slice");
        assert_eq!(
            unit("-.slice:p:n").cgroup_path().unwrap(),
            Path::new("/p-n.scope")
        );
    }

    #[test]
    fn malformed_paths_get_runcs_words() {
        for bad in ["/a/b", "a:b", "a:b:c:d", "relative"] {
            let err = SystemdUnit::from_cgroups_path(bad, "c1")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!(
                    "expected cgroupsPath to be of format \"slice:prefix:name\" for systemd \
                     cgroups, got {bad:?} instead"
                )),
                "{err}"
            );
        }
        for bad in [
            "system:p:n",
            "a/b.slice:p:n",
            "a--b.slice:p:n",
            ".slice:p:n",
        ] {
            let err = SystemdUnit::from_cgroups_path(bad, "c1")
                .unwrap_err()
                .to_string();
            assert!(err.contains("invalid slice name"), "{bad}: {err}");
        }
        assert!(SystemdUnit::from_cgroups_path("system.slice:p:", "c1").is_err());
    }

    #[test]
    fn cgroupfs_refuses_the_systemd_form() {
        let err = check_cgroupfs_path(Path::new("machine.slice:libpod:abc"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs --systemd-cgroup"), "{err}");
        assert!(err.contains("\"machine.slice:libpod:abc\""), "{err}");
        for good in ["/a/b", "a/b", "/x:y:z", "plain", "a:b"] {
            check_cgroupfs_path(Path::new(good)).unwrap();
        }
    }

    #[test]
    fn the_driver_round_trips_through_state_json() {
        let driver = CgroupDriver::Systemd(unit("machine.slice:libpod:abc"));
        let json = serde_json::to_value(&driver).unwrap();
        assert_eq!(json["driver"], "systemd");
        assert_eq!(json["slice"], "machine.slice");
        let back: CgroupDriver = serde_json::from_value(json).unwrap();
        assert_eq!(back, driver);
        let fs: CgroupDriver = serde_json::from_str(r#"{"driver":"cgroupfs"}"#).unwrap();
        assert_eq!(fs, CgroupDriver::Cgroupfs);
    }

    #[test]
    fn this_host_has_no_systemd_and_says_so() {
        // This machine runs without systemd (see NOTES.md); the guest test covers the rest.
        let err = check_systemd_host().unwrap_err().to_string();
        assert!(err.contains("needs systemd as PID 1"), "{err}");
    }
}
