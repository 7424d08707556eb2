//! A container's storage: the assignment's named volumes, tmpfs and binds (binds only under
//! the node's `--allow-bind` paths), configs written per container and bound read-only, and
//! secrets on a tmpfs of the container's own (mounted on the host, bound at /run/secrets) or
//! in its environment. Every mount goes through the images crate's `oci_mounts`, so a
//! symlink in the image cannot move one out of the root filesystem.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_images::volumes::{
    MountRequest, MountSource, VolumeError, VolumeStore, check_targets, clean_target, oci_mounts,
};
use berth_proto::v1::{Assignment, SecretMount};
use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::Spec;

use crate::error::AgentError;
use crate::files::Resolved;
use crate::layout::ContainerPaths;

/// Where a container sees its secrets.
pub(crate) const SECRETS_DIR: &str = "/run/secrets";

/// Room on the private tmpfs besides the secrets themselves (the bundle's config.json when
/// the environment carries a secret, directories).
const TMPFS_BASE_BYTES: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// What [`apply`] needs besides the spec.
pub(super) struct Inputs {
    pub assignment: Arc<Assignment>,
    pub resolved: Resolved,
    /// The node's `--allow-bind` paths, canonical.
    pub allow_bind: Vec<PathBuf>,
    pub volumes: VolumeStore,
}

/// Adds the assignment's mounts and secret env vars to `spec` (whose process user is already
/// resolved: secret files are owned by it). Returns whether the spec now holds a secret value
/// (an env var), in which case the bundle must be written to the private tmpfs.
pub(super) fn apply(
    spec: &mut Spec,
    rootfs: &Path,
    paths: &ContainerPaths,
    inputs: &Inputs,
) -> Result<bool, AgentError> {
    let a = &*inputs.assignment;
    let needs_private = !a.secrets.is_empty() || !a.env_from_secret.is_empty();
    if needs_private {
        mount_private(paths, &inputs.resolved)?;
    }
    let user = spec
        .process()
        .as_ref()
        .map(|p| (p.user().uid(), p.user().gid()))
        .unwrap_or_default();
    let mut requests = plain_requests(a, &inputs.allow_bind)?;
    requests.extend(config_requests(a, paths, &inputs.resolved, user)?);
    if !a.secrets.is_empty() {
        requests.push(write_secrets(a, paths, &inputs.resolved, user)?);
    }
    if requests.is_empty() && a.env_from_secret.is_empty() {
        return Ok(false);
    }
    check_targets(&mut requests).map_err(|e| mount_err(paths, e))?;
    let privileged = a.security.as_ref().is_some_and(|s| s.privileged);
    let mut extra = oci_mounts(&inputs.volumes, rootfs, &paths.id, &requests, privileged)
        .map_err(|e| mount_err(paths, e))?;
    for m in &mut extra {
        // The agent's own files (configs, secrets): nothing in them runs or is a device.
        if m.source()
            .as_deref()
            .is_some_and(|s| s.starts_with(&paths.dir))
        {
            let mut options = m.options().clone().unwrap_or_default();
            options.extend(["nosuid", "nodev", "noexec"].map(String::from));
            m.set_options(Some(options));
        }
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.extend(extra);
    spec.set_mounts(Some(mounts));
    set_secret_env(spec, a, &inputs.resolved)?;
    Ok(!a.env_from_secret.is_empty())
}

/// The assignment's named volumes, tmpfs and binds; a bind whose source is under no
/// `--allow-bind` path is refused, naming it.
fn plain_requests(a: &Assignment, allow: &[PathBuf]) -> Result<Vec<MountRequest>, AgentError> {
    let mut out = Vec::new();
    for (i, v) in a.volumes.iter().enumerate() {
        out.push(MountRequest {
            source: MountSource::Volume(v.name.clone()),
            target: PathBuf::from(&v.path),
            read_only: v.read_only,
            origin: format!("volumes[{i}] ({})", v.name),
        });
    }
    for (i, t) in a.tmpfs.iter().enumerate() {
        out.push(MountRequest {
            source: MountSource::Tmpfs {
                size: (t.size_bytes > 0).then_some(t.size_bytes),
                mode: (t.mode != 0).then_some(t.mode),
            },
            target: PathBuf::from(&t.path),
            read_only: false,
            origin: format!("tmpfs[{i}]"),
        });
    }
    for (i, b) in a.binds.iter().enumerate() {
        let source = allowed_bind(&format!("binds[{i}].source"), &b.source, allow)?;
        out.push(MountRequest {
            source: MountSource::Bind(source),
            target: PathBuf::from(&b.path),
            read_only: b.read_only,
            origin: format!("binds[{i}]"),
        });
    }
    Ok(out)
}

/// `source` resolved (it must exist), if it is at or under one of `allow` (canonical paths).
pub(crate) fn allowed_bind(
    field: &str,
    source: &str,
    allow: &[PathBuf],
) -> Result<PathBuf, AgentError> {
    let refuse = |reason: String| AgentError::InvalidArgument {
        field: "binds",
        reason: format!("{field} {source}: {reason}"),
    };
    if !Path::new(source).is_absolute() {
        return Err(refuse("not an absolute path".into()));
    }
    let resolved = fs::canonicalize(source).map_err(|e| {
        refuse(format!(
            "does not exist on this node or cannot be resolved: {e}"
        ))
    })?;
    if allow.iter().any(|dir| resolved.starts_with(dir)) {
        return Ok(resolved);
    }
    let allowed: Vec<String> = allow.iter().map(|p| p.display().to_string()).collect();
    Err(refuse(format!(
        "{} is under no --allow-bind path of this node (allowed: {})",
        resolved.display(),
        if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        }
    )))
}

/// Writes each config to the container's files directory with its mode, owned by the process
/// user (so that a mode such as 0400 means "the service only", as for secrets), and asks for
/// it to be bound read-only at its path.
fn config_requests(
    a: &Assignment,
    paths: &ContainerPaths,
    resolved: &Resolved,
    (uid, gid): (u32, u32),
) -> Result<Vec<MountRequest>, AgentError> {
    let mut out = Vec::new();
    if a.configs.is_empty() {
        return Ok(out);
    }
    let dir = paths.files();
    fs::create_dir_all(&dir).map_err(AgentError::io(format!("creating {}", dir.display())))?;
    for (i, (c, data)) in a.configs.iter().zip(&resolved.configs).enumerate() {
        let file = dir.join(format!("config-{i}"));
        let mode = if c.mode == 0 { 0o444 } else { c.mode & 0o7777 };
        write_owned(&file, data, mode, (uid, gid))?;
        out.push(MountRequest {
            source: MountSource::Bind(file),
            target: PathBuf::from(&c.path),
            read_only: true,
            origin: format!("configs[{i}] ({})", c.name),
        });
    }
    Ok(out)
}

/// Writes a new file owned by `uid`/`gid` with `mode`. No fsync: the container's files
/// matter only while the host is up (its secrets tmpfs does not survive a reboot either), and
/// fsyncs are what a start would spend most of its time on here.
fn write_owned(
    file: &Path,
    data: &[u8],
    mode: u32,
    (uid, gid): (u32, u32),
) -> Result<(), AgentError> {
    let what = |verb: &str| format!("{verb} {}", file.display());
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(AgentError::io(what("creating")))?;
    f.write_all(data).map_err(AgentError::io(what("writing")))?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(AgentError::io(what("chown")))?;
    // After chown, which clears set-id bits.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(AgentError::io(what("chmod")))
}

/// Mounts the container's private tmpfs on the host (mode 0700, root's, sized for its
/// secrets): secrets and a bundle holding secret env vars live there, never on disk.
fn mount_private(paths: &ContainerPaths, resolved: &Resolved) -> Result<(), AgentError> {
    let dir = paths.private();
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(AgentError::io(format!("creating {}", dir.display())))?;
    let size = TMPFS_BASE_BYTES
        + resolved
            .secrets
            .iter()
            .map(|s| (s.len() as u64).div_ceil(PAGE) * PAGE + PAGE)
            .sum::<u64>();
    let data = format!("mode=0700,size={size}");
    nix::mount::mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|e| AgentError::Container {
        id: paths.id.clone(),
        reason: format!("mounting the secrets tmpfs on {}: {e}", dir.display()),
    })
}

/// Before each start: a container with secrets needs its tmpfs, which a host reboot takes
/// away (secrets never touch the disk, so they cannot come back from it).
pub(super) fn check_private(a: &Assignment, paths: &ContainerPaths) -> Result<(), AgentError> {
    use std::os::unix::fs::MetadataExt as _;
    if a.secrets.is_empty() && a.env_from_secret.is_empty() {
        return Ok(());
    }
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    let private = paths.private();
    match (dev(&private), dev(&paths.dir)) {
        (Some(inner), Some(outer)) if inner != outer => Ok(()),
        _ => Err(AgentError::Container {
            id: paths.id.clone(),
            reason: format!(
                "its secrets tmpfs {} is gone (did the host restart?); secrets are never kept \
                 on disk, so it needs a new container",
                private.display()
            ),
        }),
    }
}

/// Unmounts the private tmpfs (lazily when something still holds it); nothing mounted is fine.
pub(super) fn unmount_private(paths: &ContainerPaths) -> Result<(), AgentError> {
    let dir = paths.private();
    let result = match nix::mount::umount2(&dir, MntFlags::empty()) {
        Err(nix::errno::Errno::EBUSY) => nix::mount::umount2(&dir, MntFlags::MNT_DETACH),
        other => other,
    };
    match result {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(AgentError::Container {
            id: paths.id.clone(),
            reason: format!("unmounting the secrets tmpfs {}: {e}", dir.display()),
        }),
    }
}

/// Writes every secret under the private tmpfs's `secrets` directory (owned by the process
/// user, 0700; files 0400) and asks for that directory at /run/secrets, read-only.
fn write_secrets(
    a: &Assignment,
    paths: &ContainerPaths,
    resolved: &Resolved,
    (uid, gid): (u32, u32),
) -> Result<MountRequest, AgentError> {
    let root = paths.private().join("secrets");
    let owned_dir = |dir: &Path| -> Result<(), AgentError> {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(AgentError::io(format!("creating {}", dir.display()))(e)),
        }
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(AgentError::io(format!("chown {}", dir.display())))
    };
    owned_dir(&root)?;
    for (i, (m, value)) in a.secrets.iter().zip(&resolved.secrets).enumerate() {
        let relative = secret_file(i, m)?;
        let file = root.join(&relative);
        let mut dir = root.clone();
        for part in relative.parent().into_iter().flat_map(Path::components) {
            dir.push(part);
            owned_dir(&dir)?;
        }
        if fs::symlink_metadata(&file).is_ok() {
            return Err(AgentError::InvalidArgument {
                field: "secrets",
                reason: format!(
                    "secrets[{i}] ({}): {SECRETS_DIR}/{} is already used by another secret",
                    m.name,
                    relative.display()
                ),
            });
        }
        write_owned(&file, value, 0o400, (uid, gid))?;
    }
    Ok(MountRequest {
        source: MountSource::Bind(root),
        target: PathBuf::from(SECRETS_DIR),
        read_only: true,
        origin: "secrets".into(),
    })
}

/// The secret's file relative to /run/secrets: its path (default /run/secrets/NAME) must be
/// under it.
pub(crate) fn secret_file(i: usize, m: &SecretMount) -> Result<PathBuf, AgentError> {
    let given = if m.path.is_empty() {
        format!("{SECRETS_DIR}/{}", m.name)
    } else {
        m.path.clone()
    };
    let relative = clean_target(Path::new(&given))
        .and_then(|p| p.strip_prefix(SECRETS_DIR).ok().map(Path::to_path_buf))
        .filter(|r| !r.as_os_str().is_empty());
    relative.ok_or_else(|| AgentError::InvalidArgument {
        field: "secrets",
        reason: format!("secrets[{i}].path {given} is not a file under {SECRETS_DIR}"),
    })
}

/// Sets each `env_from_secret` variable from its secret (which must be UTF-8 text).
fn set_secret_env(spec: &mut Spec, a: &Assignment, resolved: &Resolved) -> Result<(), AgentError> {
    if a.env_from_secret.is_empty() {
        return Ok(());
    }
    let mut process = spec.process().clone().unwrap_or_default();
    let mut env = process.env().clone().unwrap_or_default();
    for (i, (e, value)) in a.env_from_secret.iter().zip(&resolved.env).enumerate() {
        let text = std::str::from_utf8(value).map_err(|_| AgentError::InvalidArgument {
            field: "env_from_secret",
            reason: format!(
                "env_from_secret[{i}]: secret {} is not UTF-8 text, so it cannot be the \
                 environment variable {}",
                e.secret, e.env
            ),
        })?;
        if e.env.is_empty() || e.env.contains('=') {
            return Err(AgentError::InvalidArgument {
                field: "env_from_secret",
                reason: format!(
                    "env_from_secret[{i}].env {:?} is not a variable name",
                    e.env
                ),
            });
        }
        let prefix = format!("{}=", e.env);
        env.retain(|v| !v.starts_with(&prefix));
        env.push(format!("{prefix}{text}"));
    }
    process.set_env(Some(env));
    spec.set_process(Some(process));
    Ok(())
}

fn mount_err(paths: &ContainerPaths, e: VolumeError) -> AgentError {
    match e {
        VolumeError::BadMount { origin, reason } => AgentError::InvalidArgument {
            field: "mounts",
            reason: format!("{origin}: {reason}"),
        },
        other => AgentError::Container {
            id: paths.id.clone(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_paths_stay_under_run_secrets() {
        let m = |name: &str, path: &str| SecretMount {
            name: name.into(),
            path: path.into(),
            version: 1,
        };
        assert_eq!(secret_file(0, &m("db", "")).unwrap(), Path::new("db"));
        assert_eq!(
            secret_file(0, &m("db", "/run/secrets/app/pw")).unwrap(),
            Path::new("app/pw")
        );
        for bad in [
            "/run/secrets",
            "/etc/pw",
            "/run/secrets/../x",
            "run/secrets/x",
        ] {
            let e = secret_file(3, &m("db", bad)).unwrap_err().to_string();
            assert!(
                e.contains("secrets[3].path") && e.contains("/run/secrets"),
                "{e}"
            );
        }
    }

    #[test]
    fn env_from_secret_replaces_the_variable_and_refuses_binary_values() {
        use berth_proto::v1::SecretEnv;
        use zeroize::Zeroizing;
        let a = Assignment {
            env_from_secret: vec![SecretEnv {
                env: "PW".into(),
                secret: "db".into(),
                version: 2,
            }],
            ..Default::default()
        };
        let resolved = |value: &[u8]| Resolved {
            env: vec![Arc::new(Zeroizing::new(value.to_vec()))],
            ..Default::default()
        };
        let mut spec = Spec::default();
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_env(Some(vec!["PW=image-default".into(), "A=1".into()]));
        spec.set_process(Some(process));
        set_secret_env(&mut spec, &a, &resolved(b"hunter2")).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, ["A=1", "PW=hunter2"]);
        let e = set_secret_env(&mut spec, &a, &resolved(&[0xff, 0xfe]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("env_from_secret[0]") && e.contains("not UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn a_container_with_secrets_needs_its_tmpfs_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::layout::Layout::new(dir.path()).container("c1");
        fs::create_dir_all(paths.private()).unwrap();
        let mut a = Assignment::default();
        check_private(&a, &paths).unwrap();
        a.secrets.push(SecretMount {
            name: "db".into(),
            ..Default::default()
        });
        let e = check_private(&a, &paths).unwrap_err().to_string();
        assert!(
            e.contains("c1") && e.contains("tmpfs") && e.contains("gone"),
            "{e}"
        );
    }

    #[test]
    fn binds_outside_the_allow_list_are_refused_naming_the_field() {
        let allowed = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let inside = allowed.path().join("data");
        fs::create_dir(&inside).unwrap();
        let allow = vec![fs::canonicalize(allowed.path()).unwrap()];
        let ok = allowed_bind("binds[0].source", inside.to_str().unwrap(), &allow).unwrap();
        assert!(ok.starts_with(&allow[0]));
        let e = allowed_bind("binds[1].source", other.path().to_str().unwrap(), &allow)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("binds[1].source") && e.contains("--allow-bind"),
            "{e}"
        );
        // A symlink inside the allowed dir pointing out is judged by where it leads.
        let link = allowed.path().join("out");
        std::os::unix::fs::symlink(other.path(), &link).unwrap();
        assert!(allowed_bind("binds[2].source", link.to_str().unwrap(), &allow).is_err());
        let e = allowed_bind("binds[3].source", "/no/such/dir", &allow)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = allowed_bind("binds[4].source", "rel", &allow)
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute"), "{e}");
    }
}
