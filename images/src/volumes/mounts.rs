//! What a container asks to mount (bind, named volume, tmpfs), checked and turned into OCI
//! runtime spec mounts. The callers parse their own syntax (`berth run` flags, later a
//! deployment spec) into [`MountRequest`]s; the rules on targets are the same for both.

use std::path::{Path, PathBuf};

use berth_proto::mount_paths::{self, reserved};

use oci_spec::runtime::Mount;

use super::{Result, VolumeError, VolumeStore};

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A host path, bind-mounted.
    Bind(PathBuf),
    /// A named volume, created on first use.
    Volume(String),
    /// A fresh tmpfs: its size limit in bytes and the mode of its root.
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
    },
}

/// One mount a container asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub target: PathBuf,
    pub read_only: bool,
    /// What the caller gave (`-v data:/d`, `volumes[0]`): errors name it.
    pub origin: String,
}

impl MountRequest {
    fn refuse(&self, reason: impl Into<String>) -> VolumeError {
        VolumeError::BadMount {
            origin: self.origin.clone(),
            reason: reason.into(),
        }
    }
}

/// The target with `.` and `..` resolved lexically (`..` stops at `/`); None if relative.
/// The rule lives in [`berth_proto::mount_paths`], shared with the scheduler.
pub fn clean_target(target: &Path) -> Option<PathBuf> {
    mount_paths::clean(target)
}

/// Checks every target (absolute, not `/`, not at or under /proc, /sys or /dev) and that no
/// two are the same or one inside the other; leaves each target cleaned.
pub fn check_targets(requests: &mut [MountRequest]) -> Result<()> {
    for req in requests.iter_mut() {
        req.target =
            mount_paths::check_target(&req.target).map_err(|e| req.refuse(e.to_string()))?;
    }
    let targets: Vec<&Path> = requests.iter().map(|r| r.target.as_path()).collect();
    if let Some((earlier, later)) = mount_paths::first_overlap(&targets) {
        let (a, b) = (&requests[earlier], &requests[later]);
        return Err(b.refuse(format!(
            "its target {} overlaps the target {} of {}",
            b.target.display(),
            a.target.display(),
            a.origin
        )));
    }
    Ok(())
}

/// A bind source for `berth run`: it must exist, and `/` or anything under /proc only with
/// `privileged`. Returns it with symlinks resolved (a link to `/` is `/`).
pub fn check_bind_source(req: &MountRequest, source: &Path, privileged: bool) -> Result<PathBuf> {
    if !source.is_absolute() {
        return Err(req.refuse(format!(
            "the bind source {} is not an absolute path",
            source.display()
        )));
    }
    let resolved = std::fs::canonicalize(source).map_err(|e| {
        req.refuse(format!(
            "the bind source {} does not exist or cannot be resolved: {e}",
            source.display()
        ))
    })?;
    let dangerous = resolved == Path::new("/") || resolved.starts_with("/proc");
    if dangerous && !privileged {
        return Err(req.refuse(format!(
            "binding the host's {} into a container is refused without --privileged",
            resolved.display()
        )));
    }
    Ok(resolved)
}

/// The OCI mounts for `requests` (already through [`check_targets`]) of container `user`,
/// whose root filesystem is `rootfs`. Named volumes are attached (created, seeded from the
/// image's content at the target, resolved with the runtime's confinement) as they go; on
/// error the caller releases `user` ([`VolumeStore::release`]).
pub fn oci_mounts(
    volumes: &VolumeStore,
    rootfs: &Path,
    user: &str,
    requests: &[MountRequest],
    privileged: bool,
) -> Result<Vec<Mount>> {
    let mut out = Vec::new();
    let mut resolved: Vec<(PathBuf, &MountRequest)> = Vec::new();
    for req in requests {
        // Where the runtime will mount it: a symlink in the image resolves inside the rootfs.
        let inside = berth_runtime::secure_join(rootfs, &req.target);
        let relative = inside.strip_prefix(rootfs).unwrap_or(Path::new(""));
        let in_image = Path::new("/").join(relative);
        if let Some(dir) = reserved(&in_image) {
            return Err(req.refuse(format!(
                "the target {} resolves in the image to {}, under {dir}",
                req.target.display(),
                in_image.display()
            )));
        }
        // Distinct targets can meet through the image's symlinks (/data -> /etc and /etc).
        if let Some((other, first)) = resolved
            .iter()
            .find(|(p, _)| mount_paths::overlaps(p, &in_image))
        {
            return Err(req.refuse(format!(
                "its target resolves in the image to {}, which overlaps {} of {}",
                in_image.display(),
                other.display(),
                first.origin
            )));
        }
        resolved.push((in_image, req));
        let mut options: Vec<String> = Vec::new();
        let (typ, source) = match &req.source {
            MountSource::Bind(path) => {
                options.push("rbind".into());
                ("bind", check_bind_source(req, path, privileged)?)
            }
            MountSource::Volume(name) => {
                options.extend(["rbind", "nosuid", "nodev"].map(String::from));
                ("bind", volumes.attach(name, user, Some(&inside))?)
            }
            MountSource::Tmpfs { size, mode } => {
                options.extend(["nosuid", "nodev"].map(String::from));
                options.extend(size.map(|s| format!("size={s}")));
                options.push(format!("mode={:o}", mode.unwrap_or(0o1777)));
                ("tmpfs", PathBuf::from("tmpfs"))
            }
        };
        if req.read_only {
            options.push("ro".into());
        }
        let mut mount = Mount::default();
        mount.set_destination(req.target.clone());
        mount.set_typ(Some(typ.to_string()));
        mount.set_source(Some(source));
        mount.set_options(Some(options));
        out.push(mount);
    }
    Ok(out)
}
