//! Apply's part for configs and secrets: every one a spec names must exist (the error names the field), versions are pinned (0: the newest), and defaults are filled in.

use std::path::{Component, Path};

use berth_proto::v1::DeploymentSpec;

use super::record::{parse_key, versions_prefix};
use super::{Files, Kind, NO_KEY};
use crate::error::SchedError;

/// Where secrets live in a container: its own tmpfs.
pub(crate) const SECRETS_DIR: &str = "/run/secrets";
/// A config file's mode when the spec gives none.
pub(crate) const DEFAULT_CONFIG_MODE: u32 = 0o444;

impl Files {
    /// `spec` with every config and secret version pinned and defaults filled in; refused,
    /// naming the field, when one does not exist, a given version does not, a secret path is
    /// outside /run/secrets, or a secret is used and the scheduler has no key.
    pub(crate) async fn pin(&self, mut spec: DeploymentSpec) -> Result<DeploymentSpec, SchedError> {
        for (i, c) in spec.configs.iter_mut().enumerate() {
            let field = format!("spec.configs[{i}]");
            c.version = self
                .pinned(Kind::Config, &field, &c.name, c.version)
                .await?;
            if c.mode == 0 {
                c.mode = DEFAULT_CONFIG_MODE;
            } else if c.mode > 0o777 {
                return Err(SchedError::invalid(
                    format!("{field}.mode"),
                    format!("{:o} is not a file mode (0 to 0777)", c.mode),
                ));
            }
        }
        let uses_secrets = !spec.secrets.is_empty() || !spec.env_from_secret.is_empty();
        if uses_secrets && self.key.read().await.is_none() {
            let field = if spec.secrets.is_empty() {
                "spec.env_from_secret[0]"
            } else {
                "spec.secrets[0]"
            };
            return Err(SchedError::FailedPrecondition(format!(
                "{field}: {NO_KEY}, so it keeps and delivers no secrets"
            )));
        }
        for (i, s) in spec.secrets.iter_mut().enumerate() {
            let field = format!("spec.secrets[{i}]");
            s.version = self
                .pinned(Kind::Secret, &field, &s.name, s.version)
                .await?;
            if s.path.is_empty() {
                s.path = format!("{SECRETS_DIR}/{}", s.name);
            }
            check_secret_path(&format!("{field}.path"), &s.path)?;
        }
        for (i, e) in spec.env_from_secret.iter_mut().enumerate() {
            let field = format!("spec.env_from_secret[{i}]");
            check_env_name(&format!("{field}.env"), &e.env)?;
            e.version = self
                .pinned(Kind::Secret, &field, &e.secret, e.version)
                .await?;
        }
        Ok(spec)
    }

    /// The version to pin: `asked`, which must exist, or (0) the newest.
    async fn pinned(
        &self,
        kind: Kind,
        field: &str,
        name: &str,
        asked: u64,
    ) -> Result<u64, SchedError> {
        let name_field = match kind {
            Kind::Secret if field.starts_with("spec.env_from_secret") => format!("{field}.secret"),
            _ => format!("{field}.name"),
        };
        crate::spec::validate_lookup_name(&name_field, name)?;
        let (kvs, _) = self.store.list(&versions_prefix(kind, name)).await?;
        let versions: Vec<u64> = kvs
            .iter()
            .filter_map(|kv| parse_key(kind, &kv.key).map(|(_, v)| v))
            .collect();
        let Some(&newest) = versions.last() else {
            return Err(SchedError::invalid(
                name_field,
                format!("no {} {name:?}", kind.noun()),
            ));
        };
        if asked == 0 {
            return Ok(newest);
        }
        if versions.contains(&asked) {
            return Ok(asked);
        }
        Err(SchedError::invalid(
            format!("{field}.version"),
            format!(
                "{} {name:?} has no version {asked} (it has {})",
                kind.noun(),
                versions
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }
}

/// A secret's file must be on the container's secrets tmpfs: an absolute, normal path
/// strictly under /run/secrets.
pub(crate) fn check_secret_path(field: &str, path: &str) -> Result<(), SchedError> {
    let p = Path::new(path);
    let normal = p
        .components()
        .skip(1)
        .all(|c| matches!(c, Component::Normal(_)));
    let under = p
        .strip_prefix(SECRETS_DIR)
        .is_ok_and(|rest| !rest.as_os_str().is_empty());
    if p.is_absolute() && normal && under && !path.ends_with('/') {
        return Ok(());
    }
    Err(SchedError::invalid(
        field,
        format!(
            "{path:?} is not a file under {SECRETS_DIR}: secrets live on the container's own tmpfs there"
        ),
    ))
}

/// An environment variable's name: not empty, no '=' or NUL.
fn check_env_name(field: &str, name: &str) -> Result<(), SchedError> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(SchedError::invalid(
            field,
            format!("{name:?} is not an environment variable name"),
        ));
    }
    Ok(())
}
