//! The new image's config: the base image's (or an empty linux/amd64 one) with the build's
//! settings applied, the new layer's diff_id and a history entry added.

use std::collections::HashMap;

use oci_spec::image::{Arch, Config, HistoryBuilder, ImageConfiguration, Os};

use super::BuildOptions;
use super::error::{BuildError, Result};

/// An empty linux/amd64 config with no layers.
pub(crate) fn empty_config() -> ImageConfiguration {
    let mut config = ImageConfiguration::default();
    config.set_architecture(Arch::Amd64);
    config.set_os(Os::Linux);
    config
}

/// Merges `K=V` pairs into an env list: a key already there gets the new value in place; new
/// keys are appended in the order given.
pub(crate) fn merge_env(existing: &[String], updates: &[(String, String)]) -> Vec<String> {
    let mut merged: Vec<String> = existing.to_vec();
    for (key, value) in updates {
        let entry = format!("{key}={value}");
        match merged
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => merged.push(entry),
        }
    }
    merged
}

/// Refuses settings that cannot go into a config, before any blob is written.
pub(crate) fn validate(options: &BuildOptions) -> Result<()> {
    for (key, _) in &options.env {
        if key.is_empty() || key.contains('=') {
            return Err(BuildError::InvalidOption {
                option: format!("--env {key}"),
                reason: "a variable name must be non-empty and contain no '='".into(),
            });
        }
    }
    Ok(())
}

/// Applies the build's settings and the new layer to `config`.
pub(crate) fn apply(
    config: &mut ImageConfiguration,
    options: &BuildOptions,
    diff_id: &str,
    created: &str,
) {
    let mut runtime: Config = config.config().clone().unwrap_or_default();
    apply_settings(&mut runtime, options);
    config.set_config(Some(runtime));
    add_history(
        config,
        Some(diff_id),
        created,
        &options.created_by,
        "berth image build",
    );
}

/// Applies the settings of `options` (cmd, entrypoint, env, workdir, user, labels, ports) to
/// a runtime config; unset ones leave it as it was.
pub(crate) fn apply_settings(runtime: &mut Config, options: &BuildOptions) {
    if let Some(entrypoint) = &options.entrypoint {
        runtime.set_entrypoint(Some(entrypoint.clone()));
        // As docker does: a new entrypoint makes the base's cmd (its arguments) meaningless.
        if options.cmd.is_none() {
            runtime.set_cmd(None);
        }
    }
    if let Some(cmd) = &options.cmd {
        runtime.set_cmd(Some(cmd.clone()));
    }
    if !options.env.is_empty() {
        let existing = runtime.env().clone().unwrap_or_default();
        runtime.set_env(Some(merge_env(&existing, &options.env)));
    }
    if let Some(workdir) = &options.workdir {
        runtime.set_working_dir(Some(workdir.clone()));
    }
    if let Some(user) = &options.user {
        runtime.set_user(Some(user.clone()));
    }
    if !options.labels.is_empty() {
        let mut labels: HashMap<String, String> = runtime.labels().clone().unwrap_or_default();
        labels.extend(options.labels.iter().cloned());
        runtime.set_labels(Some(labels));
    }
    if !options.exposed_ports.is_empty() {
        let mut ports = runtime.exposed_ports().clone().unwrap_or_default();
        for port in &options.exposed_ports {
            if !ports.contains(port) {
                ports.push(port.clone());
            }
        }
        ports.sort();
        runtime.set_exposed_ports(Some(ports));
    }
}

/// Appends a history entry (and, for a step that made a layer, its diff_id) and stamps the
/// config's `created`.
pub(crate) fn add_history(
    config: &mut ImageConfiguration,
    diff_id: Option<&str>,
    created: &str,
    created_by: &str,
    comment: &str,
) {
    if let Some(diff_id) = diff_id {
        config.rootfs_mut().diff_ids_mut().push(diff_id.to_string());
    }
    let mut history = HistoryBuilder::default()
        .created(created.to_string())
        .created_by(created_by.to_string())
        .comment(comment.to_string())
        .build()
        .expect("a history entry has no required fields");
    // Only metadata steps say so; a layer's entry stays as `berth image build` always wrote it.
    if diff_id.is_none() {
        history.set_empty_layer(Some(true));
    }
    config
        .history_mut()
        .get_or_insert_with(Vec::new)
        .push(history);
    config.set_created(Some(created.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merges_by_key_in_place() {
        let merged = merge_env(
            &["PATH=/bin".into(), "A=1".into()],
            &[("A".into(), "2".into()), ("B".into(), "x=y".into())],
        );
        assert_eq!(merged, ["PATH=/bin", "A=2", "B=x=y"]);
    }
}
