//! `--user` resolution against the root filesystem's /etc/passwd and /etc/group, as docker
//! does: names or numbers, the primary group from passwd, supplementary groups from group.

use crate::fsutil::{IoError, io_err};
use std::fs;
use std::io;
use std::path::Path;

use super::BundleError;

/// Numeric ids for the container's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Reads `rootfs/etc/NAME`, refusing symlinks at `etc` and at the file (a symlink would
/// resolve against the host's root, not the container's). Absent: empty.
fn read_etc(rootfs: &Path, name: &str) -> Result<String, BundleError> {
    for path in [rootfs.join("etc"), rootfs.join("etc").join(name)] {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Ok(String::new()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
            Err(source) => {
                return Err(BundleError::Io(IoError {
                    op: "stat",
                    path,
                    source,
                }));
            }
        }
    }
    let path = rootfs.join("etc").join(name);
    let bytes = fs::read(&path).map_err(io_err("read", path))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn groups(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| m.split(',').filter(|s| !s.is_empty()).map(String::from))
                    .into_iter()
                    .flatten()
                    .collect(),
            })
        })
        .collect()
}

/// Resolves `user[:group]` (empty: root). Numeric ids need no entry; names must have one.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, BundleError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = passwd(&read_etc(rootfs, "passwd")?);
    let all_groups = groups(&read_etc(rootfs, "group")?);
    let (uid, mut gid, name) = if user.is_empty() {
        let root = users.iter().find(|e| e.uid == 0);
        (0, root.map_or(0, |e| e.gid), root.map(|e| e.name.clone()))
    } else if let Ok(uid) = user.parse::<u32>() {
        let entry = users.iter().find(|e| e.uid == uid);
        (
            uid,
            entry.map_or(0, |e| e.gid),
            entry.map(|e| e.name.clone()),
        )
    } else {
        let entry = users
            .iter()
            .find(|e| e.name == user)
            .ok_or_else(|| BundleError::UnknownUser(user.to_string()))?;
        (entry.uid, entry.gid, Some(entry.name.clone()))
    };
    if let Some(group) = group.filter(|g| !g.is_empty()) {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                all_groups
                    .iter()
                    .find(|g| g.name == group)
                    .ok_or_else(|| BundleError::UnknownGroup(group.to_string()))?
                    .gid
            }
        };
    }
    let mut additional_gids: Vec<u32> = match (&name, group) {
        // An explicit group replaces the supplementary ones, as docker does.
        (Some(name), None) => all_groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == name) && g.gid != gid)
            .map(|g| g.gid)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}
