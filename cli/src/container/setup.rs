//! Making a container's files (directory, root filesystem, bundle, metadata) and taking them
//! down again, whatever state a failure left them in.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, bail};
use berth_images::bundle::{RunOverrides, build_spec, write_bundle};
use berth_images::progress::NoProgress;
use berth_images::snapshot::{Rootfs, prepare_rootfs, snapshots_dir};
use berth_images::volumes::{MountRequest, VolumeStore, oci_mounts};

use super::layout::{Meta, Paths, write_json};

/// Takes everything of a container down unless disarmed (a failed `run` leaves nothing).
#[derive(Debug)]
pub(crate) struct Guard {
    paths: Option<Paths>,
}

impl Guard {
    pub(crate) fn disarm(mut self) -> Paths {
        self.paths.take().expect("an armed guard holds its paths")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(paths) = self.paths.take()
            && let Err(e) = teardown(&paths)
        {
            eprintln!("berth: cleaning up {}: {e:#}", paths.id);
        }
    }
}

/// What `prepare` needs besides the overrides.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub image: &'a str,
    pub remove: bool,
    pub detached: bool,
    /// Capabilities, seccomp, no_new_privileges, privileged.
    pub security: &'a berth_runtime::security::SecurityOptions,
    /// Bind mounts, named volumes and tmpfs, targets already checked
    /// ([`super::mounts::parse_all`]).
    pub mounts: &'a [MountRequest],
}

/// Makes the container directory, its overlay root filesystem and bundle. On error nothing
/// is left behind; on success the guard owns the cleanup until disarmed.
pub(crate) fn prepare(
    data_dir: &Path,
    req: &Request<'_>,
    overrides: &RunOverrides,
) -> anyhow::Result<(Guard, Meta)> {
    let store = berth_images::Store::open(data_dir)
        .with_context(|| format!("opening the image store in {}", data_dir.display()))?;
    let image = store.image(req.image)?;
    let paths = Paths::new(data_dir, req.id);
    debug_assert_eq!(paths.snapshot, snapshots_dir(&store).join(req.id));
    fs::create_dir_all(paths.dir.parent().expect("containers dir"))?;
    match fs::create_dir(&paths.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("the container name {} is already in use", req.id)
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", paths.dir.display())),
    }
    let guard = Guard {
        paths: Some(paths.clone()),
    };
    if paths.snapshot.exists() {
        bail!("a root filesystem for {} already exists", req.id);
    }
    let rootfs = prepare_rootfs(&store, &image, &paths.snapshot, &NoProgress)?;
    let mut spec = build_spec(&image, rootfs.path(), overrides)?;
    if !req.mounts.is_empty() {
        // Named volumes are attached (made, seeded) here; teardown releases them.
        let volumes = VolumeStore::open(data_dir)?;
        let privileged = req.security.privileged;
        let extra = oci_mounts(&volumes, rootfs.path(), req.id, req.mounts, privileged)?;
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        mounts.extend(extra);
        spec.set_mounts(Some(mounts));
    }
    berth_runtime::security::apply(&mut spec, req.security)?;
    write_bundle(&paths.dir, &spec, rootfs.path())?;
    let command = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    let meta = Meta {
        id: req.id.to_string(),
        name: req.name.to_string(),
        image: image.name.clone(),
        command,
        created: berth_runtime::state::rfc3339_now(),
        owner_pid: nix::unistd::getpid().as_raw(),
        remove: req.remove,
        detached: req.detached,
    };
    write_json(&paths.meta(), &meta)?;
    Ok((guard, meta))
}

/// Deletes the runtime state (killing what still runs), unmounts and removes the root
/// filesystem, ends its use of volumes, then removes the container directory. Each step
/// tolerates a missing part.
pub(crate) fn teardown(paths: &Paths) -> anyhow::Result<()> {
    if paths.runtime_root.join(&paths.id).exists() {
        berth_runtime::delete(&paths.runtime_root, &paths.id, true)
            .with_context(|| format!("deleting the runtime state of {}", paths.id))?;
    }
    // After delete: the container is gone, so no volume is in use by it any more.
    if paths.data_dir.join("volumes").is_dir() {
        VolumeStore::open(&paths.data_dir)?.release(&paths.id)?;
    }
    if paths.snapshot.exists() {
        match Rootfs::open(&paths.snapshot) {
            Ok(rootfs) => rootfs.remove()?,
            // No record: prepare failed before writing it; nothing is mounted.
            Err(_) => fs::remove_dir_all(&paths.snapshot)
                .with_context(|| format!("removing {}", paths.snapshot.display()))?,
        }
    }
    match fs::remove_dir_all(&paths.dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", paths.dir.display())),
    }
}
