//! RUN steps: the command runs in a container on an overlay of the stage's layers so far with a
//! fresh upper directory, which then becomes the step's layer. The container itself is the
//! caller's [`StepRunner`] (the CLI runs it through berth's runtime), so that this crate does not
//! depend on how containers are made.

use std::fmt;
use std::fs;
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
}

/// The files the runtime may create in the root filesystem as mount points: when one did not
/// exist before the step and is still empty after it, it is not part of the step's layer.
const MOUNT_POINTS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "etc/resolv.conf",
    "etc/hosts",
    "etc/hostname",
];

/// A step's overlay: `DIR/upper`, `DIR/work`, `DIR/rootfs` (mounted), `DIR/scratch`.
/// Dropping it unmounts and removes everything, whatever state the step left.
pub(crate) struct Workspace {
    dir: TempDir,
    rootfs: PathBuf,
    mounted: bool,
    /// The mount points of [`MOUNT_POINTS`] the merged tree lacked before the step.
    missing: Vec<&'static str>,
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
        for name in ["upper", "work", "rootfs", "scratch", "empty"] {
            fs::create_dir(path(name)).map_err(io_err("create", path(name)))?;
        }
        let mut top_first: Vec<&PathBuf> = lowers.iter().rev().collect();
        top_first.dedup();
        // overlay needs a lower directory; FROM scratch has none.
        let empty = path("empty");
        if top_first.is_empty() {
            top_first.push(&empty);
        }
        // Renamed lower directories are copied, not redirected, and every copied-up file holds
        // its data: the upper directory alone is then a complete layer.
        let options = [("redirect_dir", "off"), ("metacopy", "off")];
        let rootfs = path("rootfs");
        mount_overlay(&top_first, &path("upper"), &path("work"), &rootfs, &options)
            .map_err(io_err("mount an overlay at", &rootfs))?;
        let missing = MOUNT_POINTS
            .iter()
            .copied()
            .filter(|p| fs::symlink_metadata(rootfs.join(p)).is_err())
            .collect();
        Ok(Self {
            dir,
            rootfs,
            mounted: true,
            missing,
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

    /// Unmounts the overlay and drops the mount points the runtime made from the upper
    /// directory, which is then the step's finished tree.
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.unmount()?;
        let upper = self.upper();
        for point in &self.missing {
            let path = upper.join(point);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                // Only an empty directory goes: remove_dir refuses anything else.
                let _ = fs::remove_dir(&path);
            } else if meta.is_file() && meta.len() == 0 {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(())
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
