//! RUN steps: the command runs in a container on an overlay of the stage's layers so far with a
//! fresh upper directory, which then becomes the step's layer. The container itself is the
//! caller's [`StepRunner`] (the CLI runs it through berth's runtime), so that this crate does not
//! depend on how containers are made.

use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};
use tempfile::TempDir;

use super::error::{ContainerfileError, Result};
use crate::fsutil::io_err;
use crate::snapshot::mount_overlay;

/// A RUN step's network (`berth build --network`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BuildNetwork {
    /// A network namespace of the step's own, reaching out through NAT on the host (so that
    /// apt, pip and npm work).
    #[default]
    Nat,
    /// The host's network namespace.
    Host,
    /// A network namespace with only loopback.
    None,
}

impl fmt::Display for BuildNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nat => "nat",
            Self::Host => "host",
            Self::None => "none",
        })
    }
}

impl FromStr for BuildNetwork {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "nat" | "default" => Ok(Self::Nat),
            "host" => Ok(Self::Host),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown network mode {other:?}: use host, none or nat (the default)"
            )),
        }
    }
}

/// What a RUN step's container runs, and where.
#[derive(Debug)]
pub struct RunSpec<'a> {
    /// `line N: RUN ...`, for announcing the step.
    pub title: &'a str,
    /// The merged root filesystem (mounted; the runner must not unmount it).
    pub rootfs: &'a Path,
    /// An empty directory of the step's own for the runner's files (bundle, state); removed
    /// with everything in it after the step.
    pub scratch: &'a Path,
    pub argv: &'a [String],
    /// `KEY=VALUE`: the stage's ENV, then its ARGs not shadowed by an ENV.
    pub env: &'a [String],
    /// USER as the stage has it (`uid[:gid]` or names), empty for root.
    pub user: &'a str,
    /// WORKDIR (absolute).
    pub cwd: &'a str,
    pub network: BuildNetwork,
}

/// How a RUN step's process ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The exit code (128 + N for a signal).
    pub exit_code: i32,
    /// The end of what it wrote (stdout and stderr), for the error when it failed.
    pub output_tail: String,
}

/// Runs a RUN step's command in an isolated container and streams its output to the user.
pub trait StepRunner {
    fn run(
        &self,
        spec: &RunSpec<'_>,
    ) -> std::result::Result<RunOutcome, Box<dyn std::error::Error + Send + Sync>>;

    /// Whether the build should stop (the user interrupted it): checked before every step, so
    /// that an interrupted build tags nothing.
    fn cancelled(&self) -> bool {
        false
    }
}

/// The mount points the runtime may need in the root filesystem (directories, then files).
/// Those the stage lacks are made in a lower directory of the step's own, so that the runtime
/// never creates them in the upper directory, where they would become part of the layer (with
/// a copy of their parent directory).
const MOUNT_DIRS: &[&str] = &["proc", "sys", "dev"];
const MOUNT_FILES: &[&str] = &["etc/resolv.conf", "etc/hosts", "etc/hostname"];

/// A step's overlay: `DIR/upper`, `DIR/work`, `DIR/rootfs` (mounted), `DIR/scratch`, and
/// `DIR/mounts` (the missing mount points, the top lower directory).
/// Dropping it unmounts and removes everything, whatever state the step left.
pub(crate) struct Workspace {
    dir: TempDir,
    rootfs: PathBuf,
    mounted: bool,
}

impl Workspace {
    /// Makes the directories under the store's `tmp` and mounts the overlay; `lowers` are the
    /// unpacked layers, bottom first.
    pub(crate) fn mount(tmp: &Path, lowers: &[PathBuf]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("build-run-")
            .tempdir_in(tmp)
            .map_err(io_err("create a temp dir in", tmp))?;
        let path = |name: &str| dir.path().join(name);
        for name in ["upper", "work", "rootfs", "scratch", "empty", "mounts"] {
            fs::create_dir(path(name)).map_err(io_err("create", path(name)))?;
        }
        let mut top_first: Vec<&PathBuf> = lowers.iter().rev().collect();
        top_first.dedup();
        // overlay needs a lower directory; FROM scratch has none.
        let empty = path("empty");
        if top_first.is_empty() {
            top_first.push(&empty);
        }
        let mounts = path("mounts");
        if mount_points(&top_first, &mounts)? {
            top_first.insert(0, &mounts);
        }
        // Renamed lower directories are copied, not redirected, and every copied-up file holds
        // its data: the upper directory alone is then a complete layer.
        let options = [("redirect_dir", "off"), ("metacopy", "off")];
        let rootfs = path("rootfs");
        mount_overlay(&top_first, &path("upper"), &path("work"), &rootfs, &options)
            .map_err(io_err("mount an overlay at", &rootfs))?;
        Ok(Self {
            dir,
            rootfs,
            mounted: true,
        })
    }

    pub(crate) fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    pub(crate) fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    pub(crate) fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// Unmounts the overlay: the upper directory is then the step's finished tree.
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.unmount()
    }

    fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        match umount2(&self.rootfs, MntFlags::empty()) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            // A process of the step still holds it: detach; the kernel frees it later.
            Err(Errno::EBUSY) => umount2(&self.rootfs, MntFlags::MNT_DETACH)
                .map_err(|e| io_err("detach mount", &self.rootfs)(e.into()))?,
            Err(e) => return Err(io_err("unmount", &self.rootfs)(e.into()).into()),
        }
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            tracing::warn!(error = %e, "unmounting a RUN step's overlay");
        }
        // TempDir's own drop removes the directories next.
    }
}

/// What `path` (relative) is in the layers `top_first`: the topmost layer having it decides;
/// a whiteout (or a file where a directory was asked for) hides what lies below.
fn lookup(top_first: &[&PathBuf], path: &str) -> Option<fs::Metadata> {
    top_first
        .iter()
        .find_map(|layer| fs::symlink_metadata(layer.join(path)).ok())
        .filter(|meta| !(meta.file_type().is_char_device() && meta.rdev() == 0))
}

/// Makes under `dir` the mount points the layers lack (their parent directories with the
/// layers' mode and owner, so that the merged tree looks the same). Returns whether it made any.
fn mount_points(top_first: &[&PathBuf], dir: &Path) -> Result<bool> {
    let mut made = false;
    for (point, is_dir) in MOUNT_DIRS
        .iter()
        .map(|p| (*p, true))
        .chain(MOUNT_FILES.iter().map(|p| (*p, false)))
    {
        if lookup(top_first, point).is_some() {
            continue;
        }
        if let Some((parent, _)) = point.rsplit_once('/') {
            match lookup(top_first, parent) {
                Some(meta) if meta.is_dir() => {
                    let target = dir.join(parent);
                    fs::create_dir_all(&target).map_err(io_err("create", &target))?;
                    fs::set_permissions(&target, fs::Permissions::from_mode(meta.mode() & 0o7777))
                        .map_err(io_err("chmod", &target))?;
                    std::os::unix::fs::lchown(&target, Some(meta.uid()), Some(meta.gid()))
                        .map_err(io_err("chown", &target))?;
                }
                // No directory to put it in (or a symlink there): the runtime copes, as with
                // any image.
                Some(_) => continue,
                None => {
                    let target = dir.join(parent);
                    fs::create_dir_all(&target).map_err(io_err("create", &target))?;
                }
            }
        }
        let target = dir.join(point);
        if is_dir {
            fs::create_dir(&target).map_err(io_err("create", &target))?;
        } else {
            fs::File::create(&target).map_err(io_err("create", &target))?;
        }
        made = true;
    }
    Ok(made)
}

/// The error for a RUN whose process exited non-zero.
pub(crate) fn failed(line: usize, instruction: &str, outcome: &RunOutcome) -> ContainerfileError {
    ContainerfileError::RunFailed {
        line,
        instruction: instruction.to_string(),
        exit_code: outcome.exit_code,
        output: outcome.output_tail.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes_parse_and_unknown_ones_are_named() {
        assert_eq!("host".parse::<BuildNetwork>().unwrap(), BuildNetwork::Host);
        assert_eq!("none".parse::<BuildNetwork>().unwrap(), BuildNetwork::None);
        assert_eq!("nat".parse::<BuildNetwork>().unwrap(), BuildNetwork::Nat);
        let err = "bridge".parse::<BuildNetwork>().unwrap_err();
        assert!(err.contains("\"bridge\""), "{err}");
    }
}
