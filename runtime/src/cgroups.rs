//! The container's cgroup through libcgroups: where it goes, applying the spec's resources,
//! freezing, usage statistics and removal (leaf and the runtime's own empty parents).
//!
//! Path conventions (runc's): an absolute `cgroupsPath` is used as is, relative to the root of
//! every hierarchy; a relative one goes under the cgroup of the runtime process itself (its
//! `memory` hierarchy entry on v1, the unified entry on v2); a missing one becomes
//! `/berth-<id>` at the root of every hierarchy (where crun puts `/<id>`): one level, so there
//! is no shared parent to create before and clean up after every container.
//!
//! With the systemd driver ([`crate::cgroup_driver`]) systemd makes and removes the cgroup (a
//! transient unit) and takes the limits as unit properties, through libcgroups' systemd
//! manager over D-Bus; reading (pids, stats, freezer) goes to the unit's directory as before.

use std::path::{Path, PathBuf};

use libcgroups::common::{
    AnyCgroupManager, CgroupConfig, CgroupManager, CgroupSetup, ControllerOpt, FreezerState,
};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxDeviceType, LinuxResources, Spec};

use crate::cgroup_driver::{CgroupDriver, SystemdUnit};
use crate::error::{Error, Result};

mod v2_controllers;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Prefix of the default cgroup name, `/berth-<id>`.
pub(crate) const DEFAULT_PREFIX: &str = "/berth-";

/// The container's cgroup path relative to each hierarchy's root (always absolute).
pub(crate) fn cgroup_path(spec: &Spec, id: &str) -> PathBuf {
    match spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
    {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) if !p.as_os_str().is_empty() => own_cgroup().join(p),
        _ => PathBuf::from(format!("{DEFAULT_PREFIX}{id}")),
    }
}

/// Where the container's cgroup goes (relative to the hierarchy roots) and which driver
/// manages it: the systemd driver when `systemd` (`--systemd-cgroup`), else the fs driver,
/// which refuses a cgroupsPath in systemd's form.
pub(crate) fn placement(spec: &Spec, id: &str, systemd: bool) -> Result<(PathBuf, CgroupDriver)> {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref());
    if !systemd {
        if let Some(path) = given {
            crate::cgroup_driver::check_cgroupfs_path(path)?;
        }
        return Ok((cgroup_path(spec, id), CgroupDriver::Cgroupfs));
    }
    crate::cgroup_driver::check_systemd_host()?;
    let text = match given {
        Some(path) => path
            .to_str()
            .ok_or_else(|| Error::field("linux.cgroupsPath", format!("{path:?} is not UTF-8")))?,
        None => "",
    };
    let unit = SystemdUnit::from_cgroups_path(text, id)?;
    Ok((unit.cgroup_path()?, CgroupDriver::Systemd(unit)))
}

/// The runtime process's own cgroup (memory hierarchy on v1, unified on v2).
fn own_cgroup() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        match (controllers, path) {
            (Some(c), Some(p)) if c.split(',').any(|c| c == "memory") => return PathBuf::from(p),
            (Some(""), Some(p)) => unified = Some(PathBuf::from(p)),
            _ => {}
        }
    }
    unified.unwrap_or_else(|| PathBuf::from("/"))
}

fn cgroup_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Cgroup {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// A container's cgroup.
pub(crate) struct Cgroup {
    pub path: PathBuf,
    /// The systemd unit holding the cgroup, with the systemd driver.
    unit: Option<String>,
    manager: AnyCgroupManager,
}

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroup").field("path", &self.path).finish()
    }
}

impl Cgroup {
    /// A manager for `path` through `driver` (the systemd one connects to systemd's bus);
    /// creates nothing yet.
    pub(crate) fn open(path: &Path, driver: &CgroupDriver) -> Result<Self> {
        let (config, unit) = match driver {
            CgroupDriver::Cgroupfs => (
                CgroupConfig {
                    cgroup_path: path.to_path_buf(),
                    systemd_cgroup: false,
                    container_name: String::new(),
                },
                None,
            ),
            CgroupDriver::Systemd(unit) => (
                CgroupConfig {
                    cgroup_path: unit.cgroups_path(),
                    systemd_cgroup: true,
                    container_name: unit.name.clone(),
                },
                Some(unit.unit()),
            ),
        };
        let manager =
            libcgroups::common::create_cgroup_manager(config).map_err(|e| cgroup_err(path, e))?;
        Ok(Cgroup {
            path: path.to_path_buf(),
            unit,
            manager,
        })
    }

    /// Moves `pid` into the cgroup (creating it, or with systemd starting the unit) and
    /// applies the spec's resources.
    pub(crate) fn enter_and_apply(&self, pid: Pid, spec: &Spec) -> Result<()> {
        if matches!(self.manager, AnyCgroupManager::V2(_))
            && let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().as_ref())
        {
            // Before anything is made: libcgroups would create the path and fail later on a
            // missing file, or on a child of a cgroup that holds processes.
            v2_controllers::path_can_give(Path::new(CGROUP_ROOT), &self.path, resources)?;
        }
        self.manager
            .add_task(pid)
            .map_err(|e| cgroup_err(&self.path, e))?;
        if let Some(unit) = &self.unit {
            self.check_placed(pid, unit)?;
            enable_hugetlb_down_to(&self.path)?;
        }
        self.apply(spec)
    }

    /// Checks that systemd put `pid` where [`placement`] said (the state records that path,
    /// and init mounts it): systemd's own cgroup root could differ, e.g. inside a container.
    fn check_placed(&self, pid: Pid, unit: &str) -> Result<()> {
        let file = format!("/proc/{pid}/cgroup");
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let actual = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("");
        if Path::new(actual) != self.path {
            return Err(cgroup_err(
                &self.path,
                format!("systemd placed unit {unit} in cgroup {actual:?}, not here"),
            ));
        }
        Ok(())
    }

    /// Applies the spec's resources to the (existing) cgroup. The devices of `linux.devices`
    /// are added to the allow list, as runc does: a node made for the container must open.
    /// FIFOs are not devices to the devices cgroup (it takes only a, b and c rules).
    pub(crate) fn apply(&self, spec: &Spec) -> Result<()> {
        let linux = spec.linux().as_ref();
        let mut resources = linux
            .and_then(|l| l.resources().clone())
            .unwrap_or_default();
        let spec_devices = linux
            .and_then(|l| l.devices().as_deref())
            .unwrap_or_default();
        if !spec_devices.is_empty() {
            let mut rules = resources.devices().clone().unwrap_or_default();
            for dev in spec_devices
                .iter()
                .filter(|d| d.typ() != LinuxDeviceType::P)
            {
                let mut rule = oci_spec::runtime::LinuxDeviceCgroup::default();
                rule.set_allow(true);
                rule.set_typ(Some(dev.typ()));
                rule.set_major(Some(dev.major()));
                rule.set_minor(Some(dev.minor()));
                rule.set_access(Some("rwm".to_string()));
                rules.push(rule);
            }
            resources.set_devices(Some(rules));
        }
        self.check_v2_controllers(&resources)?;
        let opts = ControllerOpt {
            resources: &resources,
            disable_oom_killer: resources
                .memory()
                .as_ref()
                .and_then(|m| m.disable_oom_killer())
                .unwrap_or(false),
            oom_score_adj: spec.process().as_ref().and_then(|p| p.oom_score_adj()),
            freezer_state: None,
        };
        self.manager
            .apply(&opts)
            .map_err(|e| cgroup_err(&self.path, e))?;
        if self.unit.is_some() {
            self.apply_devices_under_systemd(&resources)?;
        }
        Ok(())
    }

    /// libcgroups' systemd manager sets no device rules (systemd's DeviceAllow has no place
    /// for them all), so, as runc's systemd driver does after systemd made the unit, the
    /// cgroup v2 eBPF device program goes on the unit's cgroup directly; systemd attaches
    /// its own programs beside others, never in their place.
    fn apply_devices_under_systemd(
        &self,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        let dir = Path::new(CGROUP_ROOT).join(self.path.strip_prefix("/").unwrap_or(&self.path));
        libcgroups::v2::devices::controller::Devices::apply_devices(&dir, resources.devices())
            .map_err(|e| cgroup_err(&self.path, format!("device rules: {e}")))
    }

    /// Applies `resources` alone (`update`): the limits given change, the others stay.
    pub(crate) fn apply_resources(
        &self,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        self.check_v2_controllers(resources)?;
        let opts = ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        self.manager
            .apply(&opts)
            .map_err(|e| cgroup_err(&self.path, e))
    }

    /// On v2, fails naming the first controller `resources` need that the cgroup was not
    /// given: libcgroups enables every controller down the path where the kernel allows it
    /// and goes on where it does not, and then a limit would fail on a missing file.
    fn check_v2_controllers(&self, resources: &LinuxResources) -> Result<()> {
        if !matches!(self.manager, AnyCgroupManager::V2(_)) {
            return Ok(());
        }
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        v2_controllers::missing(&Path::new(CGROUP_ROOT).join(rel), resources)
    }

    /// Freezes or thaws every process in the cgroup.
    pub(crate) fn freeze(&self, frozen: bool) -> Result<()> {
        let state = if frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Thawed
        };
        self.manager
            .freeze(state)
            .map_err(|e| cgroup_err(&self.path, e))
    }

    /// The pids in the cgroup.
    pub(crate) fn pids(&self) -> Result<Vec<Pid>> {
        self.manager
            .get_all_pids()
            .map_err(|e| cgroup_err(&self.path, e))
    }

    /// Usage statistics as JSON (libcgroups' stats plus the OOM kill count).
    pub(crate) fn stats_json(&self) -> Result<serde_json::Value> {
        let stats = self
            .manager
            .stats()
            .map_err(|e| cgroup_err(&self.path, e))?;
        let mut json = serde_json::to_value(&stats).map_err(|e| cgroup_err(&self.path, e))?;
        json["memory"]["oom_kill"] = serde_json::json!(crate::sys::oom::oom_kills(&self.path));
        Ok(json)
    }

    /// Kills what is left and removes the cgroup; with systemd, stops the unit and waits
    /// for systemd to remove its directory.
    pub(crate) fn remove(&self) -> Result<()> {
        self.manager
            .remove()
            .map_err(|e| cgroup_err(&self.path, e))?;
        if let Some(unit) = &self.unit {
            wait_unit_gone(&self.path, unit)?;
        }
        Ok(())
    }
}

/// Enables hugetlb in the subtree_control of every ancestor of the unit's cgroup `path`, when
/// the hierarchy offers it. systemd does not manage hugetlb and never enables it, while
/// libcgroups' v2 stats (`events --stats`) read its files unconditionally and fail without
/// them. The ancestors are slices, which hold no processes, so the kernel allows it.
fn enable_hugetlb_down_to(path: &Path) -> Result<()> {
    let root = Path::new(CGROUP_ROOT);
    let offered = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if !offered.split_whitespace().any(|c| c == "hugetlb") {
        return Ok(());
    }
    let rel = path.strip_prefix("/").unwrap_or(path);
    let mut dirs = vec![root.to_path_buf()];
    for part in rel.parent().map(Path::components).into_iter().flatten() {
        let next = dirs[dirs.len() - 1].join(part);
        dirs.push(next);
    }
    for dir in dirs {
        let control = dir.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control).map_err(|e| cgroup_err(&dir, e))?;
        if !enabled.split_whitespace().any(|c| c == "hugetlb") {
            std::fs::write(&control, "+hugetlb").map_err(|e| cgroup_err(&control, e))?;
        }
    }
    Ok(())
}

/// After a StopUnit (which returns once the job is queued): waits until systemd has removed
/// the unit's directory, then removes what it left (systemd 239 left sub-cgroups, as runc
/// notes), so that delete leaves no cgroup behind.
fn wait_unit_gone(path: &Path, unit: &str) -> Result<()> {
    let dir = Path::new(CGROUP_ROOT).join(path.strip_prefix("/").unwrap_or(path));
    for _ in 0..250 {
        if !dir.exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if remove_empty(path)? {
        return Ok(());
    }
    Err(cgroup_err(
        path,
        format!("unit {unit} was stopped but its cgroup still holds processes"),
    ))
}

/// Removes the cgroup of a container whose init is gone: the fs driver rmdirs it (falling
/// back to libcgroups, which kills what lingers); the systemd driver stops the unit (a scope
/// whose processes all exited may be gone already: systemd collects empty scopes).
pub(crate) fn remove_stopped(path: &Path, driver: &CgroupDriver) -> Result<()> {
    if *driver == CgroupDriver::Cgroupfs && remove_empty(path)? {
        return Ok(());
    }
    Cgroup::open(path, driver)?.remove()
}

/// On cgroup v1, creates the container's directory in each hierarchy of `dirs` (as
/// [`container_dirs`] lists them) and moves the calling process in by writing 0 to each
/// `tasks` file. Init does this itself, in parallel with the runtime's other work.
///
/// Why: moving another process (a pid into cgroup.procs) takes the kernel's global
/// threadgroup lock for writing, an RCU grace period of 5 to 15 ms here; a single thread
/// moving itself through `tasks` skips that lock.
///
/// The devices hierarchy is made but not joined: the runtime applies the device rules
/// meanwhile, and init creates the container's device nodes before [`join_devices`], so that
/// no half-written rule set can refuse a mknod.
pub(crate) fn create_and_join(path: &Path, dirs: &[(String, PathBuf)]) -> Result<()> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    for (name, dir) in dirs {
        std::fs::create_dir_all(dir).map_err(|e| cgroup_err(dir, e))?;
        if name.split(',').any(|c| c == "cpuset") {
            // A new cpuset has no cpus or mems, and no task may join it until it has: inherit
            // them down from the hierarchy's root, as libcgroups does on add_task.
            let mut current = dir.clone();
            for _ in rel.components() {
                current.pop();
            }
            for part in rel.components() {
                let parent = current.clone();
                current.push(part);
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let own = std::fs::read_to_string(current.join(file)).unwrap_or_default();
                    if own.trim().is_empty() {
                        let inherited = std::fs::read_to_string(parent.join(file))
                            .map_err(|e| cgroup_err(&parent, e))?;
                        std::fs::write(current.join(file), inherited.trim())
                            .map_err(|e| cgroup_err(&current.join(file), e))?;
                    }
                }
            }
        }
        if !is_devices(name) {
            join(dir)?;
        }
    }
    Ok(())
}

fn is_devices(hierarchy: &str) -> bool {
    hierarchy.split(',').any(|c| c == "devices")
}

fn join(dir: &Path) -> Result<()> {
    let tasks = dir.join("tasks");
    std::fs::write(&tasks, "0").map_err(|e| cgroup_err(&tasks, e))
}

/// Moves the calling process into the devices hierarchy of `dirs` (see [`create_and_join`]).
pub(crate) fn join_devices(dirs: &[(String, PathBuf)]) -> Result<()> {
    for (name, dir) in dirs {
        if is_devices(name) {
            join(dir)?;
        }
    }
    Ok(())
}

/// Removes the cgroup of a stopped container without a libcgroups manager (building one
/// reads mountinfo and /proc/self/cgroup once per controller): rmdir of each hierarchy's
/// directory, then of the default parent. `Ok(false)` when a directory still holds processes,
/// so the caller falls back to [`Cgroup::remove`], which kills them.
pub(crate) fn remove_empty(path: &Path) -> Result<bool> {
    for dir in hierarchy_dirs(path) {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(false),
            Err(e) => return Err(cgroup_err(&dir, e)),
        }
    }
    Ok(true)
}

/// Moves the calling (single-threaded) process into the cgroup at `path` in every hierarchy:
/// how an exec'd process joins its container's cgroup.
pub(crate) fn join_existing(path: &Path) -> Result<()> {
    for dir in hierarchy_dirs(path) {
        let procs = dir.join("cgroup.procs");
        if !dir.is_dir() {
            // A hierarchy the container's cgroup was not made in (one libcgroups skips).
            continue;
        }
        std::fs::write(&procs, "0").map_err(|e| cgroup_err(&procs, e))?;
    }
    Ok(())
}

/// Whether the freezer holds the cgroup at `path` (v1 freezer.state or v2 cgroup.freeze).
pub(crate) fn is_frozen(path: &Path) -> bool {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let root = Path::new(CGROUP_ROOT);
    if let Ok(state) = std::fs::read_to_string(root.join("freezer").join(rel).join("freezer.state"))
    {
        return state.trim() != "THAWED";
    }
    std::fs::read_to_string(root.join(rel).join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
}

/// Mount points of the cgroup v1 hierarchies (with controllers), from /proc/self/mountinfo.
fn v1_mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split(' ');
            if right.next()? != "cgroup" {
                return None;
            }
            let super_opts = right.nth(1)?;
            // The named systemd hierarchy has no controllers and holds no container cgroup.
            if super_opts.split(',').any(|o| o.starts_with("name=")) {
                return None;
            }
            Some(PathBuf::from(left.split(' ').nth(4)?))
        })
        .collect()
}

/// `path` in every v1 hierarchy with controllers, plus the unified one on v2.
pub(crate) fn hierarchy_dirs(path: &Path) -> Vec<PathBuf> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let mut dirs: Vec<PathBuf> = v1_mount_points().iter().map(|m| m.join(rel)).collect();
    if dirs.is_empty() {
        dirs.push(Path::new(CGROUP_ROOT).join(rel));
    }
    dirs
}

/// For cgroup mounts inside the container: on v1 `(hierarchy name, host dir of the container's
/// cgroup)` per hierarchy; on v2 the unified directory.
pub(crate) fn container_dirs(path: &Path) -> (Vec<(String, PathBuf)>, Option<PathBuf>) {
    let rel = path.strip_prefix("/").unwrap_or(path);
    match libcgroups::common::get_cgroup_setup() {
        Ok(CgroupSetup::Unified) => (Vec::new(), Some(Path::new(CGROUP_ROOT).join(rel))),
        _ => {
            let dirs = v1_mount_points()
                .into_iter()
                .filter_map(|m| {
                    let name = m.file_name()?.to_string_lossy().into_owned();
                    Some((name, m.join(rel)))
                })
                .collect();
            (dirs, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_path(path: Option<&str>) -> Spec {
        let mut json = serde_json::to_value(crate::spec::default_spec()).unwrap();
        if let Some(p) = path {
            json["linux"]["cgroupsPath"] = serde_json::json!(p);
        }
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn path_conventions() {
        assert_eq!(
            cgroup_path(&spec_with_path(None), "c1"),
            Path::new("/berth-c1")
        );
        assert_eq!(
            cgroup_path(&spec_with_path(Some("/a/b")), "c1"),
            Path::new("/a/b")
        );
        let relative = cgroup_path(&spec_with_path(Some("a/b")), "c1");
        assert!(
            relative.is_absolute() && relative.ends_with("a/b"),
            "{relative:?}"
        );
        assert_eq!(relative.parent().unwrap().parent().unwrap(), own_cgroup());
    }

    #[test]
    fn hierarchies_are_found_here() {
        let points = v1_mount_points();
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            // The pure v2 guest (tests/tests/guest_cgroup_v2.rs): one unified directory.
            assert!(points.is_empty(), "{points:?}");
            assert_eq!(
                hierarchy_dirs(Path::new("/berth-x")),
                [Path::new("/sys/fs/cgroup/berth-x")]
            );
            let (v1, unified) = container_dirs(Path::new("/berth-x"));
            assert!(v1.is_empty(), "{v1:?}");
            assert_eq!(
                unified.as_deref(),
                Some(Path::new("/sys/fs/cgroup/berth-x"))
            );
        } else {
            // This project's VM runs cgroup v1 hybrid (see NOTES.md): memory is a v1 hierarchy.
            assert!(points.iter().any(|p| p.ends_with("memory")), "{points:?}");
            assert!(!points.iter().any(|p| p.ends_with("systemd")), "{points:?}");
        }
    }
}
