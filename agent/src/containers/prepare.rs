//! Turning an assignment into what the runtime needs: the image in the node's store, an
//! overlay root filesystem and a bundle whose config carries the limits, the netns and the
//! resolv.conf that points at the node's DNS server.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use berth_images::bundle::{Network, RunOverrides, build_spec, write_bundle};
use berth_images::import::{ImportOptions, import};
use berth_images::progress::NoProgress;
use berth_images::registry::{Credentials, PullOptions, pull};
use berth_images::snapshot::{Rootfs, prepare_rootfs};
use berth_images::{Image, Reference, Store, StoreError};
use berth_proto::v1::{Assignment, image_source::Fetch};
use berth_runtime::security::{SeccompChoice, SecurityOptions};

use super::storage;
use crate::error::AgentError;
use crate::layout::ContainerPaths;

/// Finds the assignment's image in the store, pulling or importing it first when the
/// assignment says so and it is missing.
pub(super) async fn ensure_image(
    store: &Store,
    assignment: &Assignment,
) -> Result<Image, AgentError> {
    let source = assignment
        .image
        .as_ref()
        .ok_or_else(|| AgentError::InvalidArgument {
            field: "image",
            reason: format!("assignment {} names no image", assignment.container_id),
        })?;
    let reference = source.reference.clone();
    if reference.is_empty() {
        return Err(AgentError::InvalidArgument {
            field: "image.reference",
            reason: "empty".into(),
        });
    }
    if let Ok(image) = store.image(&reference) {
        return Ok(image);
    }
    match &source.fetch {
        None | Some(Fetch::Present(_)) => Err(AgentError::ImageNotPresent { reference }),
        Some(Fetch::Pull(pull_opts)) => {
            let parsed = Reference::parse(&reference)
                .map_err(StoreError::from)
                .map_err(store_err(&reference))?;
            let credentials = (!pull_opts.username.is_empty()).then(|| Credentials {
                username: pull_opts.username.clone(),
                password: pull_opts.password.clone(),
            });
            let options = PullOptions {
                plain_http: pull_opts.plain_http,
                credentials,
                ..Default::default()
            };
            pull(store, &parsed, &options, &NoProgress)
                .await
                .map_err(|source| AgentError::Pull {
                    reference: reference.clone(),
                    source: Box::new(source),
                })?;
            store.image(&reference).map_err(store_err(&reference))
        }
        Some(Fetch::ImportPath(path)) => import_image(store, reference, path).await,
    }
}

/// Imports the archive or layout at `path` into the store under `reference`, off the async
/// workers (import is blocking file I/O).
async fn import_image(store: &Store, reference: String, path: &str) -> Result<Image, AgentError> {
    let store = store.clone();
    let path = std::path::PathBuf::from(path);
    let tag = Reference::parse(&reference)
        .map_err(StoreError::from)
        .map_err(store_err(&reference))?;
    let named = reference.clone();
    tokio::task::spawn_blocking(move || {
        let options = ImportOptions {
            tag: Some(tag),
            ..Default::default()
        };
        import(&store, &path, &options, &NoProgress).map_err(|source| AgentError::Import {
            reference: reference.clone(),
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
        store.image(&reference).map_err(store_err(&reference))
    })
    .await
    .map_err(AgentError::internal(format!("image {named}: import task")))?
}

/// For `map_err`: a store failure about the image `reference`.
fn store_err(reference: &str) -> impl FnOnce(StoreError) -> AgentError {
    let reference = reference.to_string();
    move |source| AgentError::ImageStore {
        reference,
        source: Box::new(source),
    }
}

/// The runtime spec's overrides for an assignment: command, env, user, limits, netns, cgroup
/// (`cgroups_path`, by the node's driver), read-only root.
pub(super) fn overrides(
    assignment: &Assignment,
    cgroups_path: PathBuf,
    netns: &Path,
) -> RunOverrides {
    let res = assignment.resources.unwrap_or_default();
    let mut env: Vec<(String, String)> = assignment
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.sort();
    let security = assignment.security.clone().unwrap_or_default();
    RunOverrides {
        args: (!assignment.args.is_empty()).then(|| assignment.args.clone()),
        entrypoint: (!assignment.command.is_empty()).then(|| assignment.command.clone()),
        env,
        hostname: Some(assignment.container_id.chars().take(63).collect()),
        // Limits past i64 (or u32 millicores) mean "no practical limit": saturate.
        memory_bytes: (res.memory_bytes > 0)
            .then(|| i64::try_from(res.memory_bytes).unwrap_or(i64::MAX)),
        cpus: (res.cpu_millis > 0)
            .then(|| f64::from(u32::try_from(res.cpu_millis).unwrap_or(u32::MAX)) / 1000.0),
        pids_limit: (assignment.pids_limit > 0)
            .then(|| i64::try_from(assignment.pids_limit).unwrap_or(i64::MAX)),
        network: Network::Path(netns.to_path_buf()),
        cgroups_path: Some(cgroups_path),
        user: (!security.run_as.is_empty()).then_some(security.run_as),
        read_only: security.read_only,
        ..Default::default()
    }
}

/// The assignment's capabilities, seccomp profile, no_new_privileges and privileged flag
/// (checked when the bundle is made: a bad name fails the container with the reason).
pub(super) fn security(assignment: &Assignment) -> SecurityOptions {
    let s = assignment.security.clone().unwrap_or_default();
    SecurityOptions {
        privileged: s.privileged,
        seccomp: if s.seccomp_unconfined {
            SeccompChoice::Unconfined
        } else if !s.seccomp_profile.is_empty() {
            SeccompChoice::Profile(s.seccomp_profile)
        } else {
            SeccompChoice::Default
        },
        no_new_privileges: s.no_new_privileges,
        cap_add: s.cap_add,
        cap_drop: s.cap_drop,
    }
}

/// Makes the overlay root filesystem (unless it exists from an earlier run of the agent) and
/// writes the bundle, with `/etc/resolv.conf` naming `nameserver` (the node DNS on the
/// gateway) and the assignment's volumes, configs and secrets (see [`storage`]). Blocking:
/// call from a blocking task.
pub(super) fn rootfs_and_bundle(
    store: &Store,
    image: &Image,
    paths: &ContainerPaths,
    overrides: &RunOverrides,
    security: &SecurityOptions,
    nameserver: Ipv4Addr,
    storage: &storage::Inputs,
) -> Result<(), AgentError> {
    let container_err = |reason: String| AgentError::Container {
        id: paths.id.clone(),
        reason,
    };
    let rootfs = match Rootfs::open(&paths.rootfs) {
        Ok(rootfs) => rootfs,
        Err(_) => {
            if paths.rootfs.exists() {
                // A half-made one from a crash: nothing mounted without a record.
                std::fs::remove_dir_all(&paths.rootfs).map_err(AgentError::io(format!(
                    "removing {}",
                    paths.rootfs.display()
                )))?;
            }
            prepare_rootfs(store, image, &paths.rootfs, &NoProgress)
                .map_err(|e| container_err(format!("root filesystem: {e}")))?
        }
    };
    let mut spec = build_spec(image, rootfs.path(), overrides)
        .map_err(|e| container_err(format!("runtime spec: {e}")))?;
    // After build_spec: secret files belong to the user it resolved.
    let started = std::time::Instant::now();
    let holds_secret = storage::apply(&mut spec, rootfs.path(), paths, storage)?;
    tracing::debug!(
        container = %paths.id,
        storage_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "storage ready"
    );
    berth_runtime::security::apply(&mut spec, security)
        .map_err(|e| container_err(format!("runtime spec: {e}")))?;
    let environment = &storage.assignment.environment;
    mount_resolv_conf(&mut spec, paths, nameserver, environment)?;
    if holds_secret {
        // An env var from a secret: the spec stays on the container's tmpfs, as containerd
        // keeps bundles under /run; the bundle's config.json only points there.
        write_bundle(&paths.private(), &spec, rootfs.path())
            .map_err(|e| container_err(format!("bundle: {e}")))?;
        let link = paths.dir.join("config.json");
        std::os::unix::fs::symlink("private/config.json", &link)
            .map_err(AgentError::io(format!("linking {}", link.display())))?;
    } else {
        write_bundle(&paths.dir, &spec, rootfs.path())
            .map_err(|e| container_err(format!("bundle: {e}")))?;
    }
    Ok(())
}

/// The resolv.conf every container gets. `search berth` makes a bare service name resolve;
/// in an environment other than the default, `search ENV.berth berth` makes it resolve to the
/// same environment's service first. `ndots:1` sends any dotted name (example.com) upstream
/// first, so that names outside the cluster cost one query rather than one per search domain
/// (Kubernetes' ndots:5 costs more).
pub(crate) fn resolv_conf(nameserver: Ipv4Addr, environment: &str) -> String {
    let domain = crate::dns::DOMAIN;
    let search = match environment {
        "" | "default" => domain.to_string(),
        env => format!("{env}.{domain} {domain}"),
    };
    format!(
        "# berth: the node DNS answers services as NAME and NAME.{domain}\n\
         nameserver {nameserver}\n\
         search {search}\n\
         options ndots:1\n"
    )
}

/// Writes the container's resolv.conf into its directory and bind-mounts it (read-only) on
/// /etc/resolv.conf, over whatever the image has, as podman and Docker do.
fn mount_resolv_conf(
    spec: &mut oci_spec::runtime::Spec,
    paths: &ContainerPaths,
    nameserver: Ipv4Addr,
    environment: &str,
) -> Result<(), AgentError> {
    let file = paths.dir.join("resolv.conf");
    let text = resolv_conf(nameserver, environment);
    crate::containers::record::write_atomic(&file, text.as_bytes())?;
    let mount = oci_spec::runtime::MountBuilder::default()
        .destination("/etc/resolv.conf")
        .typ("bind")
        .source(&file)
        .options(
            ["rbind", "ro", "nosuid", "nodev", "noexec"]
                .map(String::from)
                .to_vec(),
        )
        .build()
        .map_err(|e| AgentError::Container {
            id: paths.id.clone(),
            reason: format!("resolv.conf mount: {e}"),
        })?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| m.destination() != Path::new("/etc/resolv.conf"));
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Unmounts and removes the root filesystem; tolerates a missing or half-made one.
pub(super) fn remove_rootfs(paths: &ContainerPaths) -> Result<(), AgentError> {
    if !paths.rootfs.exists() {
        return Ok(());
    }
    match Rootfs::open(&paths.rootfs) {
        Ok(rootfs) => rootfs.remove().map_err(|e| AgentError::Container {
            id: paths.id.clone(),
            reason: format!("removing the root filesystem: {e}"),
        }),
        Err(_) => std::fs::remove_dir_all(&paths.rootfs).map_err(AgentError::io(format!(
            "removing {}",
            paths.rootfs.display()
        ))),
    }
}
