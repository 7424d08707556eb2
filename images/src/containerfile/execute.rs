//! Running a parsed Containerfile: stage after stage, step after step, each COPY/ADD/RUN layer
//! taken from the cache when its key matches; the last stage is tagged.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, MediaType};
use tempfile::TempDir;

use super::cache::{CachedLayer, LayerCache, base_key, step_key};
use super::context::Ignore;
use super::copy::{self, CopySpec};
use super::diff::upper_entries;
use super::error::{ContainerfileError, Result, store_err};
use super::parse::{self, CommandForm, CopyStep, Stage, StepKind};
use super::run::{RunSpec, StepRunner, Workspace, failed};
use super::steps::{self, Scope, StageState, in_workdir};
use super::words;
use super::{BuildReport, BuildRequest, StepReport};
use crate::build::config::{add_history, empty_config};
use crate::build::put_image;
use crate::build::tarball::write_layer;
use crate::fsutil::io_err;
use crate::progress::Progress;
use crate::store::{Store, descriptor};
use crate::unpack::{UnpackOptions, ensure_layers, unpack_flat};

const HISTORY_COMMENT: &str = "berth build";
/// PATH for a RUN step whose stage sets none (as Docker and buildah give one).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A finished stage: its image, stored but not tagged.
#[derive(Debug)]
struct Finished {
    name: Option<String>,
    state: StageState,
    manifest: Descriptor,
}

/// One build in progress.
struct Run<'a> {
    store: &'a Store,
    request: &'a BuildRequest,
    runner: &'a dyn StepRunner,
    progress: &'a dyn Progress,
    context: PathBuf,
    ignore: Ignore,
    cache: LayerCache,
    build_args: BTreeMap<String, String>,
    globals: BTreeMap<String, String>,
    created: String,
    stages: Vec<Finished>,
    /// Stages and images unpacked for COPY --from, by the name used.
    unpacked: HashMap<String, (TempDir, PathBuf)>,
    steps: Vec<StepReport>,
}

pub(super) fn build(
    store: &Store,
    request: &BuildRequest,
    runner: &dyn StepRunner,
    progress: &dyn Progress,
) -> Result<BuildReport> {
    if request.tag.digest.is_some() {
        return Err(ContainerfileError::InvalidOption {
            option: format!("-t {}", request.tag),
            reason: "an image is named NAME:TAG; a digest cannot be part of its name".into(),
        });
    }
    let path = &request.containerfile;
    let text = std::fs::read_to_string(path).map_err(io_err("read", path))?;
    let file = parse::parse(&path.display().to_string(), &text)?;
    let context = request
        .context
        .canonicalize()
        .ok()
        .filter(|c| c.is_dir())
        .ok_or_else(|| ContainerfileError::InvalidOption {
            option: format!("context {}", request.context.display()),
            reason: "not a directory".into(),
        })?;
    let build_args: BTreeMap<String, String> = request.build_args.iter().cloned().collect();
    let globals = global_args(&file.global_args, &build_args, &request.tag)?;
    // Held until the tag is written, so that prune cannot take the new blobs in between.
    let _guard = store
        .write_guard()
        .map_err(store_err("locking the image store for writing"))?;
    let mut run = Run {
        store,
        request,
        runner,
        progress,
        ignore: Ignore::load(&context)?,
        context,
        cache: LayerCache::new(store),
        build_args,
        globals,
        created: humantime::format_rfc3339_seconds(request.created).to_string(),
        stages: Vec::new(),
        unpacked: HashMap::new(),
        steps: Vec::new(),
    };
    for (index, stage) in file.stages.iter().enumerate() {
        let finished = run.stage(index, stage)?;
        run.stages.push(finished);
    }
    let last = run
        .stages
        .last()
        .expect("parse refuses a file without FROM");
    let tag = &request.tag;
    store
        .tag(tag, &last.manifest)
        .map_err(store_err(format!("naming the image {tag}")))?;
    let image = store
        .load_image(tag.to_string(), last.manifest.clone())
        .map_err(store_err(format!("reading back {tag}")))?;
    Ok(BuildReport {
        image,
        steps: run.steps,
    })
}

/// The values of the ARGs before the first FROM (for FROM lines and later `ARG NAME`).
fn global_args(
    args: &[(usize, String)],
    build_args: &BTreeMap<String, String>,
    tag: &crate::reference::Reference,
) -> Result<BTreeMap<String, String>> {
    let mut state = StageState {
        config: empty_config(),
        layers: Vec::new(),
        key: String::new(),
        args: BTreeMap::new(),
    };
    let none = BTreeMap::new();
    let scope = Scope {
        build_args,
        globals: &none,
        tag,
    };
    for (line, text) in args {
        steps::declare_args(&mut state, text, &scope).map_err(|reason| {
            ContainerfileError::Instruction {
                line: *line,
                instruction: "ARG".into(),
                reason,
            }
        })?;
    }
    Ok(state.args)
}

impl Run<'_> {
    fn stage(&mut self, index: usize, stage: &Stage) -> Result<Finished> {
        let base = words::expand(&stage.base, &|n: &str| self.globals.get(n).cloned()).map_err(
            |reason| ContainerfileError::Instruction {
                line: stage.line,
                instruction: "FROM".into(),
                reason,
            },
        )?;
        let mut state = self.start(stage.line, &base)?;
        for step in &stage.steps {
            if self.runner.cancelled() {
                return Err(ContainerfileError::Interrupted { line: step.line });
            }
            let report = match &step.kind {
                StepKind::Copy(copy) => self.copy(step.line, copy, &mut state)?,
                StepKind::Run(form) => self.run(step.line, form, &mut state)?,
                other => self.metadata(step.line, other, &mut state)?,
            };
            self.steps.push(StepReport {
                stage: index,
                ..report
            });
        }
        let manifest = put_image(self.store, &state.config, state.layers.clone())
            .map_err(store_err(format!("storing stage {index}")))?;
        Ok(Finished {
            name: stage.name.clone(),
            state,
            manifest,
        })
    }

    /// The state a stage starts from: nothing, an earlier stage, or an image in the store.
    fn start(&self, line: usize, base: &str) -> Result<StageState> {
        if base == "scratch" {
            return Ok(StageState {
                config: empty_config(),
                layers: Vec::new(),
                key: base_key("scratch"),
                args: BTreeMap::new(),
            });
        }
        if let Some(stage) = self.stages.iter().find(|s| s.name.as_deref() == Some(base)) {
            return Ok(StageState {
                args: BTreeMap::new(),
                ..stage.state.clone()
            });
        }
        let image = self
            .store
            .image(base)
            .map_err(|source| ContainerfileError::Base {
                line,
                base: base.to_string(),
                source: Box::new(source),
            })?;
        Ok(StageState {
            key: base_key(image.digest().as_ref()),
            layers: image.manifest.layers().clone(),
            config: image.config,
            args: BTreeMap::new(),
        })
    }

    fn metadata(&self, line: usize, kind: &StepKind, state: &mut StageState) -> Result<StepReport> {
        let scope = Scope {
            build_args: &self.build_args,
            globals: &self.globals,
            tag: &self.request.tag,
        };
        let applied = steps::apply(state, kind, line, &scope)?;
        if let Some(history) = &applied.history {
            add_history(
                &mut state.config,
                None,
                &self.created,
                history,
                HISTORY_COMMENT,
            );
        }
        state.key = step_key(&state.key, &applied.key_text, None);
        Ok(StepReport {
            stage: 0,
            line,
            instruction: applied.history.unwrap_or_else(|| kind.name().to_string()),
            key: state.key.clone(),
            cached: false,
            layer: None,
        })
    }

    fn copy(&mut self, line: usize, copy: &CopyStep, state: &mut StageState) -> Result<StepReport> {
        let instruction = if copy.add { "ADD" } else { "COPY" };
        let snapshot = state.clone();
        let vars = |n: &str| snapshot.lookup(n);
        let expand = |s: &str| {
            words::expand(s, &vars).map_err(|reason| ContainerfileError::Instruction {
                line,
                instruction: instruction.into(),
                reason,
            })
        };
        let sources = copy
            .sources
            .iter()
            .map(|s| expand(s))
            .collect::<Result<Vec<_>>>()?;
        let from = copy.from.as_deref().map(expand).transpose()?;
        let spec = CopySpec {
            line,
            instruction,
            dest: in_workdir(&state.workdir(), &expand(&copy.dest)?),
            owner: copy
                .chown
                .as_deref()
                .map(|c| parse_chown(&expand(c)?, line, instruction))
                .transpose()?,
            mode: copy
                .chmod
                .as_deref()
                .map(|m| parse_chmod(&expand(m)?, line, instruction))
                .transpose()?,
            epoch: self.request.source_date_epoch,
            sources,
        };
        let no_ignore = Ignore::default();
        let (root, ignore) = match &from {
            None => (self.context.clone(), &self.ignore),
            Some(name) => (self.stage_root(name, line)?, &no_ignore),
        };
        // Directories the layer re-states keep the mode and owner they have below (/tmp
        // stays 1777), as buildah writes them.
        let lowers = self.lowers(state, line)?;
        let existing = |path: &str| existing_dir(&lowers, path);
        let entries = copy::entries(&root, ignore, &spec, &existing)?;
        let digest = copy::content_digest(&entries)?;
        let text = format!(
            "{instruction} --from={} --chown={:?} --chmod={:?} epoch={:?} {:?} {}",
            from.as_deref().unwrap_or("context"),
            spec.owner,
            spec.mode,
            spec.epoch,
            spec.sources,
            spec.dest
        );
        let key = step_key(&state.key, &text, Some(&digest));
        let cached = (!self.request.no_cache)
            .then(|| self.cache.get(self.store, &key))
            .flatten();
        let hit = cached.is_some();
        let layer = match cached {
            Some(layer) => layer,
            None => self.write_cached(line, &key, &entries)?,
        };
        let from_text = from.map(|f| format!("--from={f} ")).unwrap_or_default();
        let history = format!(
            "{instruction} {from_text}{} {}",
            spec.sources.join(" "),
            spec.dest
        );
        Ok(self.add_layer(state, line, key, &layer, history, hit))
    }

    /// A RUN step: its layer from the cache, or the command run on an overlay of the stage's
    /// layers, its upper directory written as the layer. A failed command leaves no layer,
    /// cache entry, mount or directory.
    fn run(
        &mut self,
        line: usize,
        form: &CommandForm,
        state: &mut StageState,
    ) -> Result<StepReport> {
        let argv = form.argv();
        let history = format!("RUN {}", argv.join(" "));
        let env = step_env(state);
        let user = state
            .config
            .config()
            .as_ref()
            .and_then(|c| c.user().clone())
            .unwrap_or_default();
        let cwd = state.workdir();
        let network = self.request.network;
        // The command is not expanded (its shell does that); the variables it sees are part
        // of the key instead, with everything else that changes what it does.
        let text = format!("RUN {argv:?} network={network} user={user:?} cwd={cwd:?} env={env:?}");
        let key = step_key(&state.key, &text, None);
        let cached = (!self.request.no_cache)
            .then(|| self.cache.get(self.store, &key))
            .flatten();
        if let Some(layer) = cached {
            return Ok(self.add_layer(state, line, key, &layer, history, true));
        }
        let lowers = self.lowers(state, line)?;
        let mut workspace = Workspace::mount(&self.store.tmp_dir(), &lowers)?;
        let title = format!("line {line}: {history}");
        let scratch = workspace.scratch();
        let spec = RunSpec {
            title: &title,
            rootfs: workspace.rootfs(),
            scratch: &scratch,
            argv: &argv,
            env: &env,
            user: &user,
            cwd: &cwd,
            network,
        };
        let outcome = self
            .runner
            .run(&spec)
            .map_err(|e| ContainerfileError::Runner {
                line,
                instruction: history.clone(),
                reason: e.to_string(),
            })?;
        if outcome.exit_code != 0 {
            return Err(failed(line, &history, &outcome));
        }
        workspace.finish()?;
        let entries = upper_entries(&workspace.upper(), self.request.source_date_epoch).map_err(
            |source| ContainerfileError::Layer {
                line,
                source: Box::new(source),
            },
        )?;
        let layer = self.write_cached(line, &key, &entries)?;
        drop(workspace);
        Ok(self.add_layer(state, line, key, &layer, history, false))
    }

    /// Writes a step's layer and records it in the cache under `key`.
    fn write_cached(
        &self,
        line: usize,
        key: &str,
        entries: &[crate::build::walk::LayerEntry],
    ) -> Result<CachedLayer> {
        let blob = write_layer(self.store, entries, self.progress).map_err(|source| {
            ContainerfileError::Layer {
                line,
                source: Box::new(source),
            }
        })?;
        let layer = CachedLayer {
            digest: blob.digest,
            size: blob.size,
            diff_id: blob.diff_id,
        };
        self.cache.put(key, &layer)?;
        Ok(layer)
    }

    /// Puts a step's layer on the stage, with its history entry, and reports the step.
    fn add_layer(
        &self,
        state: &mut StageState,
        line: usize,
        key: String,
        layer: &CachedLayer,
        history: String,
        cached: bool,
    ) -> StepReport {
        state.layers.push(descriptor(
            MediaType::ImageLayerGzip,
            layer.digest.clone(),
            layer.size,
        ));
        add_history(
            &mut state.config,
            Some(layer.diff_id.as_ref()),
            &self.created,
            &history,
            HISTORY_COMMENT,
        );
        state.key = key.clone();
        StepReport {
            stage: 0,
            line,
            instruction: history,
            key,
            cached,
            layer: Some(layer.digest.to_string()),
        }
    }

    /// The stage's layers so far, unpacked (once each, into the store's layer directory and
    /// reused by later steps and builds), bottom first.
    fn lowers(&self, state: &StageState, line: usize) -> Result<Vec<PathBuf>> {
        if state.layers.is_empty() {
            return Ok(Vec::new());
        }
        let manifest = put_image(self.store, &state.config, state.layers.clone())
            .map_err(store_err(format!("storing the stage before line {line}")))?;
        let image = self
            .store
            .load_image(format!("the stage before line {line}"), manifest)
            .map_err(store_err(format!("reading the stage before line {line}")))?;
        ensure_layers(self.store, &image, &UnpackOptions::default(), self.progress).map_err(
            |source| ContainerfileError::Lowers {
                line,
                source: Box::new(source),
            },
        )
    }

    /// The root filesystem COPY --from reads: an earlier stage (by name or index) or an image
    /// in the store, unpacked once per build into the store's temp dir.
    fn stage_root(&mut self, name: &str, line: usize) -> Result<PathBuf> {
        if let Some((_, root)) = self.unpacked.get(name) {
            return Ok(root.clone());
        }
        let stage = self.stages.iter().enumerate().find(|(index, stage)| {
            stage.name.as_deref() == Some(name) || index.to_string() == name
        });
        let image = match stage {
            Some((_, stage)) => self
                .store
                .load_image(format!("stage {name}"), stage.manifest.clone())
                .map_err(store_err(format!("reading stage {name}")))?,
            None => self
                .store
                .image(name)
                .map_err(|source| ContainerfileError::Base {
                    line,
                    base: format!("--from={name}"),
                    source: Box::new(source),
                })?,
        };
        let tmp = tempfile::Builder::new()
            .prefix("build-from-")
            .tempdir_in(self.store.tmp_dir())
            .map_err(io_err("create a temp dir in", &self.store.tmp_dir()))?;
        let rootfs = tmp.path().join("rootfs");
        unpack_flat(
            self.store,
            &image,
            &rootfs,
            &UnpackOptions::default(),
            self.progress,
        )
        .map_err(|source| ContainerfileError::Unpack {
            stage: name.to_string(),
            source: Box::new(source),
        })?;
        let root = rootfs.canonicalize().map_err(io_err("resolve", &rootfs))?;
        self.unpacked.insert(name.to_string(), (tmp, root.clone()));
        Ok(root)
    }
}

/// A RUN step's environment: the stage's ENV (with a default PATH), then its ARGs that no ENV
/// shadows (as buildah passes them).
fn step_env(state: &StageState) -> Vec<String> {
    let mut env: Vec<String> = state
        .config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    let names: Vec<String> = env
        .iter()
        .map(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n).to_string())
        .collect();
    if !names.iter().any(|n| n == "PATH") {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    for (name, value) in &state.args {
        if !names.contains(name) {
            env.push(format!("{name}={value}"));
        }
    }
    env
}

/// The mode, owner and group of the directory at `path` (relative) in the stage's layers,
/// the topmost layer that has the path deciding; `None` when it is not a directory there.
fn existing_dir(lowers: &[PathBuf], path: &str) -> Option<(u32, u64, u64)> {
    for layer in lowers.iter().rev() {
        match std::fs::symlink_metadata(Path::new(layer).join(path)) {
            Ok(meta) if meta.is_dir() => {
                return Some((meta.mode() & 0o7777, meta.uid().into(), meta.gid().into()));
            }
            // A file, a symlink or a whiteout hides whatever lies below.
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

/// `--chown=UID[:GID]` (numbers: names would need the image's /etc/passwd).
fn parse_chown(value: &str, line: usize, instruction: &str) -> Result<(u64, u64)> {
    let (user, group) = value.split_once(':').unwrap_or((value, value));
    match (user.parse(), group.parse()) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(ContainerfileError::Instruction {
            line,
            instruction: instruction.into(),
            reason: format!(
                "--chown={value}: give numeric UID[:GID]; user and group names are not supported yet"
            ),
        }),
    }
}

/// `--chmod=OCTAL`, at most 7777.
fn parse_chmod(value: &str, line: usize, instruction: &str) -> Result<u32> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| ContainerfileError::Instruction {
            line,
            instruction: instruction.into(),
            reason: format!("--chmod={value}: give an octal mode such as 0644"),
        })
}
