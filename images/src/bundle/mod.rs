//! A runtime bundle for an image: an OCI runtime spec made from the image config plus the
//! caller's overrides (as `docker run` maps them), and config.json written beside it.

mod process;
mod resources;
mod user;

use crate::fsutil::io_err;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxNamespaceType, Root, Spec};

use crate::store::Image;

pub use process::{command_line, merge_env};
pub use resources::{cpus_to_cfs, parse_memory};
pub use user::{ResolvedUser, resolve_user};

/// The container's network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// A network namespace of its own with only a loopback device.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// The network namespace bound at this path (made and wired by the caller, as a CNI
    /// plugin would).
    Path(PathBuf),
}

/// What `berth run` flags change relative to the image config.
#[derive(Debug, Clone, Default)]
pub struct RunOverrides {
    /// Replaces the image's cmd (`IMAGE CMD...`).
    pub args: Option<Vec<String>>,
    /// Replaces the image's entrypoint and drops its cmd (`--entrypoint`); empty clears it.
    pub entrypoint: Option<Vec<String>>,
    /// Added after the image's env, replacing same-named variables.
    pub env: Vec<(String, String)>,
    /// `uid[:gid]` or `name[:group]`, resolved against the root filesystem.
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub memory_bytes: Option<i64>,
    /// CPUs as a fraction (0.5 = half a CPU), mapped to a CFS quota over a 100 ms period.
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub read_only: bool,
    pub network: Network,
    pub tty: bool,
    /// The cgroup path for the runtime (absolute: relative to each hierarchy's root).
    pub cgroups_path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("no command: the image has neither entrypoint nor cmd, and none was given")]
    NoCommand,
    #[error("invalid memory size {0:?} (expected a number with an optional b, k, m or g suffix)")]
    BadMemory(String),
    #[error("invalid CPU count {0} (must be above 0 and at most 1024)")]
    BadCpus(f64),
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("working directory {0:?} is not an absolute path")]
    RelativeWorkdir(String),
    #[error("invalid environment variable {0:?}")]
    BadEnv(String),
    #[error(transparent)]
    Io(#[from] crate::fsutil::IoError),
    #[error("serialising the runtime spec: {0}")]
    Json(#[from] serde_json::Error),
}

/// The runtime spec for running `image` on `rootfs` (needed to resolve user names).
pub fn build_spec(
    image: &Image,
    rootfs: &Path,
    overrides: &RunOverrides,
) -> Result<Spec, BundleError> {
    let config = image.config.config().clone().unwrap_or_default();
    let args = command_line(
        config.entrypoint().as_deref(),
        config.cmd().as_deref(),
        overrides.entrypoint.as_deref(),
        overrides.args.as_deref(),
    )?;
    let mut env = merge_env(config.env().as_deref().unwrap_or_default(), &overrides.env)?;
    if overrides.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    let workdir = overrides
        .workdir
        .clone()
        .or_else(|| config.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let user_text = overrides
        .user
        .clone()
        .or_else(|| config.user().clone())
        .unwrap_or_default();
    let process = ProcessSpec {
        args,
        env,
        workdir,
        user: user_text,
    };
    spec_for(rootfs, &process, overrides)
}

/// A container's process, settled: what runs, with which variables, where and as whom.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    /// Absolute.
    pub workdir: String,
    /// `uid[:gid]` or `name[:group]`, resolved against the root filesystem; empty for root.
    pub user: String,
}

/// The runtime spec for running `process` on `rootfs` with the rest of `overrides` (network,
/// resources, hostname, cgroup, tty); its `args`, `env`, `user` and `workdir` are not read.
pub fn spec_for(
    rootfs: &Path,
    wanted: &ProcessSpec,
    overrides: &RunOverrides,
) -> Result<Spec, BundleError> {
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(wanted.args.clone()));
    process.set_env(Some(wanted.env.clone()));
    if !wanted.workdir.starts_with('/') {
        return Err(BundleError::RelativeWorkdir(wanted.workdir.clone()));
    }
    process.set_cwd(PathBuf::from(&wanted.workdir));
    let user = resolve_user(rootfs, &wanted.user)?;
    let mut spec_user = oci_spec::runtime::User::default();
    spec_user.set_uid(user.uid);
    spec_user.set_gid(user.gid);
    if !user.additional_gids.is_empty() {
        spec_user.set_additional_gids(Some(user.additional_gids.clone()));
    }
    process.set_user(spec_user);
    process.set_terminal(Some(overrides.tty));
    spec.set_process(Some(process));

    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf());
    root.set_readonly(Some(overrides.read_only));
    spec.set_root(Some(root));
    if let Some(hostname) = &overrides.hostname {
        spec.set_hostname(Some(hostname.clone()));
    }
    if let Some(linux) = spec.linux_mut() {
        let namespaces = linux.namespaces().clone().unwrap_or_default();
        let namespaces: Vec<_> = match &overrides.network {
            Network::None => namespaces,
            Network::Host => namespaces
                .into_iter()
                .filter(|ns| ns.typ() != LinuxNamespaceType::Network)
                .collect(),
            Network::Path(path) => namespaces
                .into_iter()
                .map(|mut ns| {
                    if ns.typ() == LinuxNamespaceType::Network {
                        ns.set_path(Some(path.clone()));
                    }
                    ns
                })
                .collect(),
        };
        linux.set_namespaces(Some(namespaces));
        linux.set_cgroups_path(overrides.cgroups_path.clone());
        let mut res = linux.resources().clone().unwrap_or_default();
        // runc's default: every device denied, the runtime's standard set allowed.
        let mut deny_all = LinuxDeviceCgroup::default();
        deny_all.set_allow(false);
        deny_all.set_access(Some("rwm".to_string()));
        res.set_devices(Some(vec![deny_all]));
        resources::apply(&mut res, overrides)?;
        linux.set_resources(Some(res));
    }
    Ok(spec)
}

/// Writes `spec` as `dir/config.json` with `root.path` set to `rootfs` (absolute).
pub fn write_bundle(dir: &Path, spec: &Spec, rootfs: &Path) -> Result<PathBuf, BundleError> {
    let mut spec = spec.clone();
    let rootfs = std::path::absolute(rootfs).map_err(io_err("resolve", rootfs.to_path_buf()))?;
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(rootfs);
    spec.set_root(Some(root));
    fs::create_dir_all(dir).map_err(io_err("create directory", dir.to_path_buf()))?;
    let path = dir.join("config.json");
    berth_runtime::sys::fs::atomic_write(&path, &serde_json::to_vec_pretty(&spec)?)
        .map_err(io_err("write", path.clone()))?;
    Ok(path)
}

#[cfg(test)]
mod tests;
