//! A spec's mounts: named volumes, tmpfs, binds, and where configs and secrets appear.
//! Defaults, validation naming the field at fault (the path rules are
//! [`berth_proto::mount_paths`], shared with `berth run`), and the bind allow-lists.

use std::path::{Path, PathBuf};

use berth_proto::mount_paths::{self, MAX_VOLUME_NAME_LEN};
use berth_proto::v1::DeploymentSpec;

use crate::error::SchedError;

/// Where a container's secrets tmpfs is mounted; every secret file is below it.
pub(crate) const SECRETS_DIR: &str = "/run/secrets";
/// A tmpfs's mode when the spec gives none (sticky and writable by all, as /tmp).
pub(crate) const DEFAULT_TMPFS_MODE: u32 = 0o1777;
/// The largest tmpfs a spec may ask for: tmpfs is memory, and a node has a few GiB of it.
pub(crate) const MAX_TMPFS_BYTES: u64 = 16 << 30;
/// Permission bits (with setuid, setgid and sticky), the most a mode may carry.
const MODE_BITS: u32 = 0o7777;

/// Fills tmpfs modes and cleans every absolute mount path (`/data/` and `/data` are one
/// intent); relative ones are left for [`validate`] to refuse.
pub(crate) fn with_defaults(spec: &mut DeploymentSpec) {
    let tidy = |p: &mut String| {
        if let Some(clean) = mount_paths::clean(Path::new(p.as_str())) {
            *p = clean.display().to_string();
        }
    };
    for t in &mut spec.tmpfs {
        if t.mode == 0 {
            t.mode = DEFAULT_TMPFS_MODE;
        }
        tidy(&mut t.path);
    }
    spec.volumes.iter_mut().for_each(|v| tidy(&mut v.path));
    for b in &mut spec.binds {
        tidy(&mut b.path);
        tidy(&mut b.source);
    }
    spec.configs.iter_mut().for_each(|c| tidy(&mut c.path));
    spec.secrets
        .iter_mut()
        .filter(|s| !s.path.is_empty())
        .for_each(|s| tidy(&mut s.path));
}

/// `path` as a mount target, or an error naming `field`.
fn target(field: &str, path: &str) -> Result<PathBuf, SchedError> {
    mount_paths::check_target(Path::new(path))
        .map_err(|e| SchedError::invalid(field, e.to_string()))
}

fn check_mode(field: String, mode: u32) -> Result<(), SchedError> {
    if mode > MODE_BITS {
        return Err(SchedError::invalid(
            field,
            format!("{mode:#o} is not a file mode (at most 0o7777)"),
        ));
    }
    Ok(())
}

/// Every mount of the spec is well formed, and no two targets are equal or nested across
/// volumes, tmpfs, binds, configs and the secrets tmpfs (secret files are inside that
/// tmpfs, so they are checked against each other only).
pub(crate) fn validate(spec: &DeploymentSpec) -> Result<(), SchedError> {
    // (field, clean target) of every mount the runtime makes; the secrets tmpfs first, so
    // that a clash names the user's field.
    let mut targets: Vec<(String, PathBuf)> = Vec::new();
    if !spec.secrets.is_empty() {
        targets.push((
            format!("the secrets tmpfs ({SECRETS_DIR})"),
            SECRETS_DIR.into(),
        ));
        validate_secret_paths(spec)?;
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        if !mount_paths::valid_volume_name(&v.name) {
            return Err(SchedError::invalid(
                format!("spec.volumes[{i}].name"),
                format!(
                    "{:?} is not a volume name: it starts with a letter or digit and has only \
                     letters, digits, '_', '.' and '-' (at most {MAX_VOLUME_NAME_LEN})",
                    v.name
                ),
            ));
        }
        let field = format!("spec.volumes[{i}].path");
        targets.push((field.clone(), target(&field, &v.path)?));
    }
    for (i, t) in spec.tmpfs.iter().enumerate() {
        let field = format!("spec.tmpfs[{i}].path");
        targets.push((field.clone(), target(&field, &t.path)?));
        if t.size_bytes > MAX_TMPFS_BYTES {
            return Err(SchedError::invalid(
                format!("spec.tmpfs[{i}].size_bytes"),
                format!(
                    "{} bytes is above the limit of {MAX_TMPFS_BYTES} (16 GiB)",
                    t.size_bytes
                ),
            ));
        }
        check_mode(format!("spec.tmpfs[{i}].mode"), t.mode)?;
    }
    for (i, b) in spec.binds.iter().enumerate() {
        bind_source(i, &b.source)?;
        let field = format!("spec.binds[{i}].path");
        targets.push((field.clone(), target(&field, &b.path)?));
    }
    for (i, c) in spec.configs.iter().enumerate() {
        let field = format!("spec.configs[{i}].path");
        targets.push((field.clone(), target(&field, &c.path)?));
        check_mode(format!("spec.configs[{i}].mode"), c.mode)?;
    }
    let paths: Vec<&Path> = targets.iter().map(|(_, p)| p.as_path()).collect();
    if let Some((earlier, later)) = mount_paths::first_overlap(&paths) {
        let ((a_field, a), (b_field, b)) = (&targets[earlier], &targets[later]);
        return Err(SchedError::invalid(
            b_field,
            format!(
                "{} overlaps {} of {a_field}: no two mounts may be at the same path or one inside the other",
                b.display(),
                a.display()
            ),
        ));
    }
    Ok(())
}

/// Secret files: each strictly under /run/secrets (empty: /run/secrets/NAME), none at or
/// inside another.
fn validate_secret_paths(spec: &DeploymentSpec) -> Result<(), SchedError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for (i, s) in spec.secrets.iter().enumerate() {
        let field = format!("spec.secrets[{i}].path");
        let given = if s.path.is_empty() {
            format!("{SECRETS_DIR}/{}", s.name)
        } else {
            s.path.clone()
        };
        let clean = mount_paths::clean(Path::new(&given)).ok_or_else(|| {
            SchedError::invalid(
                &field,
                format!("{given} is relative: give an absolute path under {SECRETS_DIR}"),
            )
        })?;
        if clean == Path::new(SECRETS_DIR) || !clean.starts_with(SECRETS_DIR) {
            return Err(SchedError::invalid(
                field,
                format!(
                    "{} is not under {SECRETS_DIR}: secrets live only on the container's own tmpfs there",
                    clean.display()
                ),
            ));
        }
        files.push(clean);
    }
    if let Some((earlier, later)) = mount_paths::first_overlap(&files) {
        return Err(SchedError::invalid(
            format!("spec.secrets[{later}].path"),
            format!(
                "{} overlaps {} of spec.secrets[{earlier}]",
                files[later].display(),
                files[earlier].display()
            ),
        ));
    }
    Ok(())
}

/// A bind's source, cleaned: an absolute host path, never the host's root.
fn bind_source(i: usize, source: &str) -> Result<PathBuf, SchedError> {
    let field = format!("spec.binds[{i}].source");
    let clean = mount_paths::clean(Path::new(source)).ok_or_else(|| {
        SchedError::invalid(
            &field,
            format!("{source:?} is not an absolute path on the node"),
        )
    })?;
    if clean == Path::new("/") {
        return Err(SchedError::invalid(
            field,
            "the node's root directory cannot be bound into a container",
        ));
    }
    Ok(clean)
}

/// Whether `source` (clean, absolute) is at or under one of `allowed` (a node's canonical
/// `--allow-bind` paths).
pub(crate) fn bind_allowed(source: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| Path::new(source).starts_with(a))
}

/// Refuses, at Apply, a bind whose source no registered node allows (`allowed`: each node's
/// allow-list), naming the field; with no node registered, every bind is refused.
pub(crate) fn check_binds_allowed(
    spec: &DeploymentSpec,
    allowed: &[(String, Vec<String>)],
) -> Result<(), SchedError> {
    for (i, b) in spec.binds.iter().enumerate() {
        let source = bind_source(i, &b.source)?;
        let source = source.display().to_string();
        if allowed.iter().any(|(_, list)| bind_allowed(&source, list)) {
            continue;
        }
        let why = if allowed.iter().all(|(_, list)| list.is_empty()) {
            format!(
                "{source} is not allowed: no registered node allows binds (start an agent with --allow-bind DIR)"
            )
        } else {
            format!(
                "{source} is under no registered node's --allow-bind paths ({})",
                allow_lists(allowed)
            )
        };
        return Err(SchedError::invalid(format!("spec.binds[{i}].source"), why));
    }
    Ok(())
}

/// `n1: /srv, /data; n2: /srv` for an error message.
fn allow_lists(allowed: &[(String, Vec<String>)]) -> String {
    allowed
        .iter()
        .filter(|(_, list)| !list.is_empty())
        .map(|(node, list)| format!("{node}: {}", list.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The spec's distinct named volumes, in the order it lists them.
pub(crate) fn volume_names(spec: &DeploymentSpec) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for v in &spec.volumes {
        if !names.contains(&v.name.as_str()) {
            names.push(&v.name);
        }
    }
    names
}

/// The spec's bind sources (clean, as [`with_defaults`] leaves them).
pub(crate) fn bind_sources(spec: &DeploymentSpec) -> Vec<String> {
    spec.binds.iter().map(|b| b.source.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::{BindMount, ConfigMount, SecretMount, TmpfsMount, VolumeMount};

    fn spec() -> DeploymentSpec {
        DeploymentSpec {
            name: "db".into(),
            image: "redis:7".into(),
            replicas: 1,
            ..Default::default()
        }
    }

    fn volume(name: &str, path: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            path: path.into(),
            read_only: false,
        }
    }

    fn tmpfs(path: &str) -> TmpfsMount {
        TmpfsMount {
            path: path.into(),
            ..Default::default()
        }
    }

    fn bind(source: &str, path: &str) -> BindMount {
        BindMount {
            source: source.into(),
            path: path.into(),
            read_only: true,
        }
    }

    fn config(path: &str) -> ConfigMount {
        ConfigMount {
            name: "app-conf".into(),
            path: path.into(),
            ..Default::default()
        }
    }

    fn secret(name: &str, path: &str) -> SecretMount {
        SecretMount {
            name: name.into(),
            path: path.into(),
            version: 0,
        }
    }

    /// Validates `s` after the defaults, as Apply does.
    fn check(mut s: DeploymentSpec) -> Result<(), String> {
        with_defaults(&mut s);
        validate(&s).map_err(|e| e.to_string())
    }

    fn refused(s: DeploymentSpec, needles: &[&str]) {
        let e = check(s).expect_err("refused");
        for n in needles {
            assert!(e.contains(n), "{e:?} lacks {n:?}");
        }
    }

    #[test]
    fn good_mounts_pass_and_are_cleaned() {
        let mut s = spec();
        s.volumes = vec![volume("data", "/var/lib/redis/"), volume("data", "/backup")];
        s.tmpfs = vec![tmpfs("/tmp")];
        s.binds = vec![bind("/srv/./shared/", "/shared")];
        s.configs = vec![config("/etc/app/app.conf")];
        s.secrets = vec![
            secret("db-password", ""),
            secret("tls", "/run/secrets/x/tls.key"),
        ];
        let mut filled = s.clone();
        with_defaults(&mut filled);
        assert_eq!(filled.volumes[0].path, "/var/lib/redis");
        assert_eq!(filled.binds[0].source, "/srv/shared");
        assert_eq!(filled.tmpfs[0].mode, 0o1777);
        assert_eq!(
            filled.secrets[0].path, "",
            "the secret path default is not ours"
        );
        assert_eq!(check(s), Ok(()));
        // Siblings sharing a prefix do not overlap.
        let mut s = spec();
        s.volumes = vec![volume("a", "/data"), volume("b", "/database")];
        assert_eq!(check(s), Ok(()));
    }

    #[test]
    fn bad_paths_name_the_field() {
        let mut s = spec();
        s.volumes = vec![volume("a", "/data"), volume("b", "/proc/x")];
        refused(s, &["spec.volumes[1].path", "/proc/x", "under /proc"]);
        let mut s = spec();
        s.tmpfs = vec![tmpfs("run/x")];
        refused(s, &["spec.tmpfs[0].path", "relative"]);
        let mut s = spec();
        s.binds = vec![bind("/srv", "/a/../")];
        refused(s, &["spec.binds[0].path", "root"]);
        let mut s = spec();
        s.configs = vec![config("/sys/kernel/x")];
        refused(s, &["spec.configs[0].path", "/sys"]);
        let mut s = spec();
        s.configs = vec![config("")];
        refused(s, &["spec.configs[0].path", "relative"]);
        let mut s = spec();
        s.tmpfs = vec![tmpfs("/x/../dev/shm")];
        refused(s, &["spec.tmpfs[0].path", "/dev/shm", "under /dev"]);
    }

    #[test]
    fn overlaps_across_kinds_name_the_later_field() {
        let mut s = spec();
        s.volumes = vec![volume("a", "/data")];
        s.binds = vec![bind("/srv", "/data/sub")];
        refused(
            s,
            &[
                "spec.binds[0].path",
                "/data/sub overlaps /data of spec.volumes[0].path",
            ],
        );
        let mut s = spec();
        s.tmpfs = vec![tmpfs("/etc/app")];
        s.configs = vec![config("/etc/app/app.conf")];
        refused(s, &["spec.configs[0].path", "spec.tmpfs[0].path"]);
        let mut s = spec();
        s.volumes = vec![volume("a", "/x/")];
        s.tmpfs = vec![tmpfs("/x")];
        refused(s, &["spec.tmpfs[0].path", "overlaps"]);
        // Anything on or under /run/secrets clashes with the secrets tmpfs.
        let mut s = spec();
        s.secrets = vec![secret("pw", "")];
        s.volumes = vec![volume("a", "/run")];
        refused(
            s,
            &[
                "spec.volumes[0].path",
                "/run overlaps /run/secrets of the secrets tmpfs",
            ],
        );
        // Without secrets, /run/secrets is an ordinary path.
        let mut s = spec();
        s.volumes = vec![volume("a", "/run/secrets")];
        assert_eq!(check(s), Ok(()));
    }

    #[test]
    fn secret_paths_stay_under_run_secrets() {
        for bad in ["/etc/pw", "/run/secrets", "/run/secrets/../pw", "pw"] {
            let mut s = spec();
            s.secrets = vec![secret("pw", bad)];
            refused(s, &["spec.secrets[0].path"]);
        }
        let mut s = spec();
        s.secrets = vec![secret("a", "/run/secrets/a"), secret("a", "")];
        refused(s, &["spec.secrets[1].path", "overlaps", "spec.secrets[0]"]);
        let mut s = spec();
        s.secrets = vec![secret("a", ""), secret("b", "/run/secrets/a/b")];
        refused(s, &["spec.secrets[1].path", "overlaps"]);
    }

    #[test]
    fn names_sizes_modes_and_sources() {
        let mut s = spec();
        s.volumes = vec![volume("bad!name", "/d")];
        refused(
            s,
            &["spec.volumes[0].name", "bad!name", "not a volume name"],
        );
        let mut s = spec();
        s.tmpfs = vec![TmpfsMount {
            size_bytes: MAX_TMPFS_BYTES + 1,
            ..tmpfs("/t")
        }];
        refused(s, &["spec.tmpfs[0].size_bytes", "above the limit"]);
        let mut s = spec();
        s.tmpfs = vec![TmpfsMount {
            mode: 0o17777,
            ..tmpfs("/t")
        }];
        refused(s, &["spec.tmpfs[0].mode", "not a file mode"]);
        let mut s = spec();
        s.configs = vec![ConfigMount {
            mode: 0o10000,
            ..config("/c")
        }];
        refused(s, &["spec.configs[0].mode"]);
        let mut s = spec();
        s.binds = vec![bind("srv", "/s")];
        refused(s, &["spec.binds[0].source", "not an absolute path"]);
        let mut s = spec();
        s.binds = vec![bind("/srv/..", "/s")];
        refused(s, &["spec.binds[0].source", "root directory"]);
    }

    #[test]
    fn binds_must_be_under_some_node_allow_list() {
        let mut s = spec();
        s.binds = vec![bind("/srv/data", "/d"), bind("/etc", "/e")];
        with_defaults(&mut s);
        let lists = vec![
            ("n1".to_string(), vec!["/srv".to_string()]),
            ("n2".to_string(), vec![]),
        ];
        let e = check_binds_allowed(&s, &lists).unwrap_err().to_string();
        assert!(
            e.contains("spec.binds[1].source") && e.contains("/etc") && e.contains("n1: /srv"),
            "{e}"
        );
        s.binds.truncate(1);
        assert!(check_binds_allowed(&s, &lists).is_ok());
        let e = check_binds_allowed(&s, &[]).unwrap_err().to_string();
        assert!(
            e.contains("spec.binds[0].source") && e.contains("no registered node allows binds"),
            "{e}"
        );
        // A prefix that is not a parent directory does not allow.
        assert!(!bind_allowed("/srvx", &["/srv".into()]));
        assert!(bind_allowed("/srv", &["/srv".into()]));
    }
}
