//! The process's command line and environment, combined from image config and overrides.

use super::BundleError;

/// argv as docker builds it: an overridden entrypoint drops the image's cmd; args replace cmd.
pub fn command_line(
    image_entrypoint: Option<&[String]>,
    image_cmd: Option<&[String]>,
    entrypoint: Option<&[String]>,
    args: Option<&[String]>,
) -> Result<Vec<String>, BundleError> {
    let (entry, cmd) = match entrypoint {
        Some(entry) => (entry, args.unwrap_or_default()),
        None => (
            image_entrypoint.unwrap_or_default(),
            args.or(image_cmd).unwrap_or_default(),
        ),
    };
    let argv: Vec<String> = entry.iter().chain(cmd).cloned().collect();
    if argv.is_empty() {
        return Err(BundleError::NoCommand);
    }
    Ok(argv)
}

/// The image's env, then each override in order; an override replaces a variable of the same
/// name where it stood. Without a PATH anywhere, the usual default is added.
pub fn merge_env(
    image_env: &[String],
    overrides: &[(String, String)],
) -> Result<Vec<String>, BundleError> {
    let mut env: Vec<String> = Vec::with_capacity(image_env.len() + overrides.len() + 1);
    let set = |env: &mut Vec<String>, key: &str, entry: String| {
        let prefix = format!("{key}=");
        match env.iter_mut().find(|e| e.starts_with(&prefix) || *e == key) {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    };
    for entry in image_env {
        let key = entry.split('=').next().unwrap_or_default();
        set(&mut env, key, entry.clone());
    }
    for (key, value) in overrides {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(BundleError::BadEnv(format!("{key}={value}")));
        }
        set(&mut env, key, format!("{key}={value}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        );
    }
    Ok(env)
}
