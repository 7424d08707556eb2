//! Loads a bundle's config.json (OCI runtime spec) and checks what the runtime relies on.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

/// The newest OCI runtime-spec version this runtime implements (`--version`, `features`).
pub const OCI_VERSION: &str = "1.2.0";

/// A loaded, validated bundle: its directory, its spec and the absolute rootfs path.
#[derive(Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

/// Reads `bundle/config.json` and validates it for `create`.
pub fn load_bundle(bundle: &Path) -> Result<Bundle> {
    let dir = std::path::absolute(bundle).map_err(|e| Error::io(bundle, e))?;
    let config = dir.join("config.json");
    let text = std::fs::read(&config).map_err(|e| Error::io(&config, e))?;
    let spec: Spec = serde_json::from_slice(&text).map_err(|e| Error::InvalidSpec {
        path: config.clone(),
        reason: e.to_string(),
    })?;
    let rootfs = validate(&spec, &dir)?;
    Ok(Bundle { dir, spec, rootfs })
}

/// Checks the fields `create` needs and returns the absolute rootfs path.
pub fn validate(spec: &Spec, bundle_dir: &Path) -> Result<PathBuf> {
    let version = spec.version();
    let major = version.split('.').next().unwrap_or("");
    if major != "1" {
        return Err(Error::field(
            "ociVersion",
            format!("{version:?} is not supported (major version must be 1)"),
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::field("root", "missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle_dir.join(root.path())
    };
    if !rootfs.is_dir() {
        return Err(Error::field(
            "root.path",
            format!("{} is not a directory", rootfs.display()),
        ));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::field("process", "missing"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::field("process.args", "must name the program to run"));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::field("process.cwd", "must be an absolute path"));
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::field("linux", "missing"))?;
    let namespaces = linux.namespaces().as_deref().unwrap_or_default();
    // Without a mount namespace of its own the container's mounts would land on the host and
    // could not be unwound by the kernel when init dies.
    if !namespaces
        .iter()
        .any(|ns| ns.typ() == LinuxNamespaceType::Mount)
    {
        return Err(Error::field(
            "linux.namespaces",
            "a mount namespace is required",
        ));
    }
    for (i, ns) in namespaces.iter().enumerate() {
        if namespaces[..i].iter().any(|other| other.typ() == ns.typ()) {
            return Err(Error::field(
                "linux.namespaces",
                format!("namespace {} listed twice", ns.typ()),
            ));
        }
    }
    if let Some(mounts) = spec.mounts() {
        for m in mounts {
            if !m.destination().is_absolute() {
                return Err(Error::field(
                    "mounts.destination",
                    format!("{} is not absolute", m.destination().display()),
                ));
            }
        }
    }
    Ok(rootfs)
}

/// The default config.json `spec` writes: runc's defaults, running `sh`, with berth's default
/// seccomp profile.
pub fn default_spec() -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(Some("berth".to_string()));
    // runc's default: every device denied, then the runtime's standard set allowed.
    if let Some(linux) = spec.linux_mut() {
        let mut deny_all = oci_spec::runtime::LinuxDeviceCgroup::default();
        deny_all.set_allow(false);
        deny_all.set_access(Some("rwm".to_string()));
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_devices(Some(vec![deny_all]));
        linux.set_resources(Some(resources));
    }
    if let Some(process) = spec.process_mut() {
        process.set_args(Some(vec!["sh".to_string()]));
        process.set_terminal(Some(true));
    }
    crate::security::apply(&mut spec, &crate::security::SecurityOptions::default())
        .expect("the default security options apply to the default spec");
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        dir
    }

    fn default_json() -> serde_json::Value {
        serde_json::to_value(default_spec()).unwrap()
    }

    #[test]
    fn default_spec_validates() {
        let dir = bundle_with(&default_json().to_string());
        let bundle = load_bundle(dir.path()).unwrap();
        assert_eq!(bundle.rootfs, dir.path().join("rootfs"));
    }

    #[test]
    fn missing_config_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_bundle(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }

    #[test]
    fn invalid_json_names_the_field() {
        let mut json = default_json();
        json["process"]["user"]["uid"] = serde_json::json!("root");
        let dir = bundle_with(&json.to_string());
        let err = load_bundle(dir.path()).unwrap_err().to_string();
        assert!(err.contains("invalid type"), "{err}");
        let json = serde_json::json!({"root": {"path": "rootfs"}});
        let dir = bundle_with(&json.to_string());
        let err = load_bundle(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ociVersion"), "{err}");
    }

    #[test]
    fn rejects_major_version_2() {
        let mut json = default_json();
        json["ociVersion"] = serde_json::json!("2.0.0");
        let dir = bundle_with(&json.to_string());
        let err = load_bundle(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ociVersion") && err.contains("2.0.0"), "{err}");
    }

    #[test]
    fn rejects_missing_rootfs_and_process() {
        let mut json = default_json();
        json["root"]["path"] = serde_json::json!("nope");
        let dir = bundle_with(&json.to_string());
        let err = load_bundle(dir.path()).unwrap_err().to_string();
        assert!(err.contains("root.path"), "{err}");

        let mut json = default_json();
        json.as_object_mut().unwrap().remove("process");
        let dir = bundle_with(&json.to_string());
        let err = load_bundle(dir.path()).unwrap_err().to_string();
        assert!(err.contains("field process"), "{err}");
    }
}
