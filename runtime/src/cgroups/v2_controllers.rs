//! cgroup v2 controllers a container's limits need, checked along its path before the cgroup
//! is made and on the cgroup itself before limits are written, so that a controller the
//! hierarchy cannot give is refused by name instead of failing on a missing file.
//!
//! libcgroups enables every controller in each ancestor's cgroup.subtree_control where the
//! kernel allows it and goes on where it does not. The kernel refuses when the ancestor itself
//! lacks the controller (its parent does not give it) and, for domain controllers, when the
//! ancestor holds processes (v2's no-internal-process rule; threaded ones are allowed but make
//! it a thread root whose domain children accept no process).

use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::cgroup_err;
use crate::error::Result;

/// The v2 controllers the limits in `resources` are written through.
pub(super) fn needed(r: &LinuxResources) -> Vec<&'static str> {
    let mut out = Vec::new();
    if r.memory().is_some() {
        out.push("memory");
    }
    if let Some(c) = r.cpu() {
        if c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.idle().is_some()
            || c.burst().is_some()
        {
            out.push("cpu");
        }
        if c.cpus().is_some() || c.mems().is_some() {
            out.push("cpuset");
        }
    }
    if r.pids().is_some() {
        out.push("pids");
    }
    if r.block_io().is_some() {
        out.push("io");
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        out.push("hugetlb");
    }
    out
}

fn words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Refuses, naming the controller, when an existing ancestor of `cgroup` (a path from the
/// root of the v2 hierarchy mounted at `root`) cannot give a controller `resources` need:
/// it does not have it, or it would have to enable it while holding processes.
pub(super) fn path_can_give(root: &Path, cgroup: &Path, resources: &LinuxResources) -> Result<()> {
    let needed = needed(resources);
    if needed.is_empty() {
        return Ok(());
    }
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let mut dir = root.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for (depth, part) in std::iter::once(None)
        .chain(
            parents
                .iter()
                .take(parents.len().saturating_sub(1))
                .map(Some),
        )
        .enumerate()
    {
        if let Some(part) = part {
            dir.push(part);
        }
        if !dir.is_dir() {
            // Made by libcgroups, empty: it may enable whatever it has.
            return Ok(());
        }
        let has = words(&dir.join("cgroup.controllers"));
        let enabled = words(&dir.join("cgroup.subtree_control"));
        let busy = depth > 0 && !words(&dir.join("cgroup.procs")).is_empty();
        for c in &needed {
            if !has.iter().any(|h| h == c) {
                return Err(cgroup_err(
                    cgroup,
                    format!(
                        "the limits need the cgroup v2 controller {c}, which {} does not have \
                         (its cgroup.controllers: {:?}; its parent's cgroup.subtree_control \
                         does not give it)",
                        dir.display(),
                        has.join(" ")
                    ),
                ));
            }
            if busy && !enabled.iter().any(|e| e == c) {
                return Err(cgroup_err(
                    cgroup,
                    format!(
                        "the limits need the cgroup v2 controller {c}, which {} cannot give its \
                         children: it holds processes, and cgroup v2 enables controllers only \
                         in cgroups without them (move them to a leaf, or enable {c} in its \
                         cgroup.subtree_control first)",
                        dir.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses, naming the first controller `resources` need that the v2 cgroup `dir` lacks in
/// its cgroup.controllers (what its parent's subtree_control gives it).
pub(super) fn missing(dir: &Path, resources: &LinuxResources) -> Result<()> {
    let file = dir.join("cgroup.controllers");
    let have = std::fs::read_to_string(&file).map_err(|e| cgroup_err(&file, e))?;
    let have: Vec<&str> = have.split_whitespace().collect();
    let Some(missing) = needed(resources).into_iter().find(|c| !have.contains(c)) else {
        return Ok(());
    };
    let parent = dir.parent().unwrap_or(dir);
    let offered = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    Err(cgroup_err(
        dir,
        format!(
            "the limits need the cgroup v2 controller {missing}, which the parent {} does not \
             give (its cgroup.subtree_control lacks it and it could not be enabled there; the \
             parent's cgroup.controllers: {:?})",
            parent.display(),
            offered.trim()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn resources(json: serde_json::Value) -> LinuxResources {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_controller_the_cgroup_lacks_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        fs::create_dir(&dir).unwrap();
        fs::write(
            tmp.path().join("cgroup.controllers"),
            "cpu memory pids hugetlb\n",
        )
        .unwrap();
        fs::write(dir.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let ok =
            resources(serde_json::json!({"memory": {"limit": 1048576}, "cpu": {"quota": 1000}}));
        missing(&dir, &ok).unwrap();
        let pids =
            resources(serde_json::json!({"memory": {"limit": 1048576}, "pids": {"limit": 5}}));
        let err = missing(&dir, &pids).unwrap_err().to_string();
        assert!(err.contains("controller pids"), "{err}");
        assert!(err.contains("cpu memory pids hugetlb"), "{err}");
        assert!(needed(&LinuxResources::default()).is_empty());
    }

    #[test]
    fn ancestors_that_cannot_give_a_controller_are_named() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::write(r.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        fs::create_dir_all(r.join("p")).unwrap();
        fs::write(r.join("p/cgroup.controllers"), "cpu memory\n").unwrap();
        fs::write(r.join("p/cgroup.subtree_control"), "").unwrap();
        fs::write(r.join("p/cgroup.procs"), "").unwrap();
        let mem = resources(serde_json::json!({"memory": {"limit": 1048576}}));
        let pids = resources(serde_json::json!({"pids": {"limit": 5}}));
        // An empty parent may enable what it has; a path not made yet is left to libcgroups.
        path_can_give(r, Path::new("/p/c"), &mem).unwrap();
        path_can_give(r, Path::new("/q/r/c"), &pids).unwrap();
        let err = path_can_give(r, Path::new("/p/c"), &pids)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("controller pids") && err.contains("does not have"),
            "{err}"
        );
        // A parent holding a process cannot enable memory for its children.
        fs::write(r.join("p/cgroup.procs"), "42\n").unwrap();
        let err = path_can_give(r, Path::new("/p/c"), &mem)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("controller memory") && err.contains("holds processes"),
            "{err}"
        );
        fs::write(r.join("p/cgroup.subtree_control"), "memory\n").unwrap();
        path_can_give(r, Path::new("/p/c"), &mem).unwrap();
    }
}
