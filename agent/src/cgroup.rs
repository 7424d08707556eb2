//! Where this node's containers get their cgroups: with the cgroupfs driver under
//! `/berth-agent/<node>/<container>` in every hierarchy; with the systemd driver (a host with
//! systemd as PID 1 on cgroup v2) as the scope `berth-<container>.scope` in the node's slice,
//! made and removed by systemd through berth-runtime's `--systemd-cgroup`.

use std::path::{Path, PathBuf};

use berth_runtime::cgroup_driver::{SystemdUnit, check_systemd_host};

/// Which driver places containers (`--cgroup-driver`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    /// `auto` (systemd where the host can use it, else cgroupfs), `systemd` (refused, with the
    /// reason, on a host without systemd as PID 1 on cgroup v2) or `cgroupfs`.
    pub fn choose(flag: &str) -> Result<Self, String> {
        match flag {
            "cgroupfs" => Ok(CgroupDriver::Cgroupfs),
            "systemd" => check_systemd_host()
                .map(|()| CgroupDriver::Systemd)
                .map_err(|e| e.to_string()),
            "auto" => Ok(if check_systemd_host().is_ok() {
                CgroupDriver::Systemd
            } else {
                CgroupDriver::Cgroupfs
            }),
            other => Err(format!(
                "{other:?} is not a cgroup driver: expected auto, systemd or cgroupfs"
            )),
        }
    }
}

/// The per-node parent cgroup of the cgroupfs driver (relative to each hierarchy's root), so
/// that several agents on one host keep their containers apart.
pub(crate) fn node_cgroup(node_name: &str) -> PathBuf {
    PathBuf::from("/berth-agent").join(node_name)
}

/// The node's slice with the systemd driver: `berth-<node>.slice`, the node name's dashes
/// made underscores (systemd reads a dash in a slice name as one more level of nesting).
pub(crate) fn node_slice(node_name: &str) -> String {
    let name: String = node_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("berth-{name}.slice")
}

/// A container's cgroup as the agent names it in the spec, and where it lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerCgroup {
    /// `linux.cgroupsPath`: a path (cgroupfs) or `slice:prefix:name` (systemd).
    pub cgroups_path: PathBuf,
    /// The cgroup's directory relative to the hierarchy roots.
    pub dir: PathBuf,
}

/// Where container `id` of node `node_name` goes with `driver`.
pub(crate) fn container_cgroup(driver: CgroupDriver, node_name: &str, id: &str) -> ContainerCgroup {
    match driver {
        CgroupDriver::Cgroupfs => {
            let path = node_cgroup(node_name).join(id);
            ContainerCgroup {
                cgroups_path: path.clone(),
                dir: path,
            }
        }
        CgroupDriver::Systemd => {
            let unit = SystemdUnit {
                slice: node_slice(node_name),
                prefix: "berth".to_string(),
                name: id.to_string(),
            };
            // The slice is made of checked characters and the id is a valid container id,
            // so the path always expands; the fallback only keeps this total.
            let dir = unit
                .cgroup_path()
                .unwrap_or_else(|_| PathBuf::from("/").join(unit.unit()));
            ContainerCgroup {
                cgroups_path: unit.cgroups_path(),
                dir,
            }
        }
    }
}

/// Removes the node's cgroupfs parents once nothing runs under them (rmdir only removes empty
/// ones), so that a stopped agent leaves no directories behind. With the systemd driver
/// systemd removes each scope at delete and keeps the (empty, cheap) slice.
pub(crate) fn remove_node_cgroups(driver: CgroupDriver, node: &str) {
    if driver == CgroupDriver::Systemd {
        return;
    }
    let root = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(root) {
        hierarchies.extend(entries.flatten().map(|e| e.path()));
    }
    let relative = node_cgroup(node);
    let relative = relative.strip_prefix("/").unwrap_or(Path::new(""));
    for h in hierarchies {
        let parent = h.join(relative);
        if std::fs::remove_dir(&parent).is_ok() {
            // The shared /berth-agent too, once the last node on this host is gone.
            let _ = parent.parent().map(std::fs::remove_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_places_under_the_node() {
        let c = container_cgroup(CgroupDriver::Cgroupfs, "n1", "web-1");
        assert_eq!(c.cgroups_path, Path::new("/berth-agent/n1/web-1"));
        assert_eq!(c.dir, c.cgroups_path);
    }

    #[test]
    fn systemd_places_a_scope_in_the_node_slice() {
        let c = container_cgroup(CgroupDriver::Systemd, "node-a.1", "web-1");
        assert_eq!(
            c.cgroups_path,
            Path::new("berth-node_a_1.slice:berth:web-1")
        );
        assert_eq!(
            c.dir,
            Path::new("/berth.slice/berth-node_a_1.slice/berth-web-1.scope")
        );
        // The runtime reads the spec's form back to the same unit and directory.
        let unit =
            SystemdUnit::from_cgroups_path(c.cgroups_path.to_str().unwrap(), "web-1").unwrap();
        assert_eq!(unit.cgroup_path().unwrap(), c.dir);
    }

    #[test]
    fn a_driver_flag_is_checked() {
        assert_eq!(CgroupDriver::choose("cgroupfs"), Ok(CgroupDriver::Cgroupfs));
        let bad = CgroupDriver::choose("systemdd").unwrap_err();
        assert!(bad.contains("expected auto, systemd or cgroupfs"), "{bad}");
        if !berth_runtime::cgroup_driver::systemd_is_init() {
            let refused = CgroupDriver::choose("systemd").unwrap_err();
            assert!(refused.contains("systemd as PID 1"), "{refused}");
            assert_eq!(CgroupDriver::choose("auto"), Ok(CgroupDriver::Cgroupfs));
        }
    }
}
