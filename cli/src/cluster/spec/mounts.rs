//! The spec file's storage fields (named volumes, tmpfs, host binds, configs, secrets and
//! secrets as environment variables) and their proto messages. Each field checks what it can
//! alone (absolute paths, names, octal modes, sizes); overlaps, the allow-list and whether a
//! config or secret exists are the scheduler's to judge on Apply.
//!
//! ```toml
//! volumes = [{ name = "data", path = "/var/lib/redis", read_only = false }]
//! tmpfs = [{ path = "/tmp", size = "64m", mode = "1777" }]
//! binds = [{ source = "/srv/x", path = "/x", read_only = true }]
//! configs = [{ name = "app-conf", path = "/etc/app/app.conf", mode = "0444" }]
//! secrets = [{ name = "db-password" }]          # at /run/secrets/db-password
//! env_from_secret = { DB_PASSWORD = "db-password" }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use berth_proto::v1::{BindMount, ConfigMount, SecretEnv, SecretMount, TmpfsMount, VolumeMount};
use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::{Scalar, parse_memory};

/// Where every secret file lives in the container (the agent's per-container tmpfs).
pub(crate) const SECRETS_DIR: &str = "/run/secrets";

/// A named volume, node-local: the replica stays on the node that holds its data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VolumeSpec {
    #[serde(deserialize_with = "volume_name")]
    name: String,
    #[serde(deserialize_with = "container_path")]
    path: String,
    #[serde(default)]
    read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TmpfsSpec {
    #[serde(deserialize_with = "container_path")]
    path: String,
    /// Bytes; absent: the kernel's default.
    #[serde(default, deserialize_with = "size_opt")]
    size: Option<u64>,
    #[serde(default, deserialize_with = "mode_opt")]
    mode: Option<u32>,
}

/// A host path, allowed only under a node's `--allow-bind` paths.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BindSpec {
    #[serde(deserialize_with = "host_path")]
    source: String,
    #[serde(deserialize_with = "container_path")]
    path: String,
    #[serde(default)]
    read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigSpec {
    #[serde(deserialize_with = "object_name")]
    name: String,
    #[serde(deserialize_with = "container_path")]
    path: String,
    /// Absent: the scheduler's default, 0444.
    #[serde(default, deserialize_with = "mode_opt")]
    mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretSpec {
    #[serde(deserialize_with = "object_name")]
    name: String,
    /// Absent: /run/secrets/NAME.
    #[serde(default, deserialize_with = "secret_path_opt")]
    path: Option<String>,
}

/// A secret variable that `env` sets too: which one wins would be a guess.
pub(super) fn check_env(
    env_from_secret: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    match env_from_secret.keys().find(|k| env.contains_key(*k)) {
        Some(key) => Err(format!(
            "env_from_secret.{key}: {key} is also set in env; set it in one place"
        )),
        None => Ok(()),
    }
}

/// Variable name -> secret name, as SecretEnv messages. Versions stay 0, here and in every
/// mount: the scheduler pins the newest on Apply.
pub(super) fn secret_envs(map: &BTreeMap<String, String>) -> Vec<SecretEnv> {
    map.iter()
        .map(|(env, secret)| SecretEnv {
            env: env.clone(),
            secret: secret.clone(),
            version: 0,
        })
        .collect()
}

impl From<&VolumeSpec> for VolumeMount {
    fn from(v: &VolumeSpec) -> Self {
        VolumeMount {
            name: v.name.clone(),
            path: v.path.clone(),
            read_only: v.read_only,
        }
    }
}

impl From<&TmpfsSpec> for TmpfsMount {
    fn from(t: &TmpfsSpec) -> Self {
        TmpfsMount {
            path: t.path.clone(),
            size_bytes: t.size.unwrap_or(0),
            mode: t.mode.unwrap_or(0),
        }
    }
}

impl From<&BindSpec> for BindMount {
    fn from(b: &BindSpec) -> Self {
        BindMount {
            source: b.source.clone(),
            path: b.path.clone(),
            read_only: b.read_only,
        }
    }
}

impl From<&ConfigSpec> for ConfigMount {
    fn from(c: &ConfigSpec) -> Self {
        ConfigMount {
            name: c.name.clone(),
            path: c.path.clone(),
            mode: c.mode.unwrap_or(0),
            version: 0,
        }
    }
}

impl From<&SecretSpec> for SecretMount {
    fn from(s: &SecretSpec) -> Self {
        SecretMount {
            name: s.name.clone(),
            path: s.path.clone().unwrap_or_default(),
            version: 0,
        }
    }
}

/// An absolute path, as written (the scheduler cleans and compares them).
fn absolute(text: &str, what: &str) -> Result<String, String> {
    if text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not an absolute {what} path (it must start with '/')"
        ))
    }
}

fn container_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    absolute(&String::deserialize(d)?, "container").map_err(de::Error::custom)
}

fn host_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    absolute(&String::deserialize(d)?, "host").map_err(de::Error::custom)
}

/// A secret's file: under /run/secrets (the container's secrets tmpfs), never the directory.
pub(crate) fn check_secret_path(text: &str) -> Result<String, String> {
    let clean = berth_images::volumes::clean_target(Path::new(text));
    match clean {
        Some(p) if p.starts_with(SECRETS_DIR) && p != Path::new(SECRETS_DIR) => {
            Ok(text.to_string())
        }
        _ => Err(format!(
            "{text:?} is not under {SECRETS_DIR}/ (secrets live on the container's own tmpfs there)"
        )),
    }
}

fn secret_path_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check_secret_path(&String::deserialize(d)?)
        .map(Some)
        .map_err(de::Error::custom)
}

fn volume_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    berth_images::volumes::validate_name(&name).map_err(de::Error::custom)?;
    Ok(name)
}

/// A config or secret name: what `berth config|secret create` takes (see [`check_name`]).
fn object_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    check_name(&name).map_err(de::Error::custom)?;
    Ok(name)
}

/// A config or secret name: non-empty, without '/' or control characters, since it becomes
/// a store key and a file name on the node.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 253 || name.chars().any(|c| c == '/' || c.is_control()) || name == ".." {
        return Err(format!(
            "{name:?} is not a valid name (at most 253 characters, no '/' or control characters)"
        ));
    }
    Ok(())
}

pub(super) fn env_from_secret<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    for (env, secret) in &map {
        if env.is_empty() || env.contains('=') || env.contains('\0') {
            return Err(de::Error::custom(format!(
                "{env:?} is not an environment variable name"
            )));
        }
        check_name(secret).map_err(|e| de::Error::custom(format!("{env}: {e}")))?;
    }
    Ok(map)
}

/// A size: a string like "64m" or a number of bytes; never zero.
fn size_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let parsed = match Scalar::deserialize(d)? {
        Scalar::Str(s) => parse_memory(&s),
        Scalar::Int(i) if i > 0 => Ok(i.unsigned_abs()),
        other => Err(format!(
            "{other} is not a size (bytes, or a string like \"64m\")"
        )),
    };
    parsed.map(Some).map_err(de::Error::custom)
}

/// Permission bits as an octal string ("0444", "1777"). A TOML number is refused: 1777 and
/// 0o1777 are both plausible readings of it, and a wrong guess is a wrong mode.
pub(crate) fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "{text:?} is not a mode: expected octal permission bits like \"0444\" or \"1777\""
        )),
    }
}

fn mode_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let parsed = match Scalar::deserialize(d)? {
        // 0 on the wire means "the default", so a written 0 would silently become 0444.
        Scalar::Str(s) => parse_mode(&s).and_then(|m| match m {
            0 => Err(format!(
                "{s:?} gives no one access: a mode must have a bit set"
            )),
            m => Ok(m),
        }),
        other => Err(format!(
            "{other} is not a mode: write it as an octal string like \"0444\""
        )),
    };
    parsed.map(Some).map_err(de::Error::custom)
}

#[cfg(test)]
#[path = "mounts_tests.rs"]
mod tests;
