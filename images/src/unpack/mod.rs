//! Layer unpacking: every layer of an image once into its own directory (the lowerdirs of an
//! overlay mount), or all layers flattened into one root filesystem.
//!
//! Both verify each blob's digest and its uncompressed diff_id while extracting, confine every
//! entry to the target directory (see `resolve`), and never leave a partial layer behind.

mod error;
mod extract;
mod layer;
mod links;
mod media;
mod merge;
mod resolve;
mod stream;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::Serialize;
use tempfile::TempDir;

pub use error::UnpackError;
pub use extract::OPAQUE_XATTR;
pub use media::Compression;

use error::{LayerCtx, image_io};
use extract::WhiteoutMode;
use layer::{Extracted, LayerJob, extract_layer};
use links::{LayerView, resolve_links};
use merge::{StagedLayer, merge_down};

use crate::progress::Progress;
use crate::store::{Image, Store};

/// A layer's uncompressed size is capped by default at this (real layers are far smaller; the
/// cap stops a decompression bomb from filling the disk).
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 32 << 30;

/// How unpacking behaves.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Uncompressed size limit per layer.
    pub max_layer_bytes: u64,
    /// Layers extracted at once; 0 means the number of CPUs.
    pub max_parallel_layers: usize,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
            max_parallel_layers: 0,
        }
    }
}

/// What a flattened unpack wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnpackReport {
    pub layers: usize,
    /// Tar entries applied, over all layers.
    pub entries: u64,
    /// Uncompressed layer bytes read.
    pub bytes: u64,
}

/// Where the unpacked layer with this diff_id hex lives.
pub fn layer_dir(store: &Store, diff_id_hex: &str) -> PathBuf {
    store.layers_dir().join("sha256").join(diff_id_hex)
}

/// The image's layers with their diff_ids and compression, bottom first.
fn layer_jobs(image: &Image) -> Result<Vec<LayerJob>, UnpackError> {
    let layers = image.manifest.layers();
    let diff_ids = image.config.rootfs().diff_ids();
    if layers.len() != diff_ids.len() {
        return Err(UnpackError::LayerCountMismatch {
            image: image.name.clone(),
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    layers
        .iter()
        .zip(diff_ids)
        .map(|(descriptor, diff_id)| {
            let ctx = LayerCtx {
                image: image.name.clone(),
                layer: descriptor.digest().to_string(),
            };
            let media_type = descriptor.media_type().to_string();
            let compression = Compression::from_media_type(&media_type).ok_or_else(|| {
                UnpackError::UnsupportedMediaType {
                    image: ctx.image.clone(),
                    layer: ctx.layer.clone(),
                    media_type,
                }
            })?;
            let hex = diff_id.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(
                    ctx.unsafe_entry("-", format!("diff_id {diff_id:?} is not a sha256 digest"))
                );
            }
            Ok(LayerJob {
                ctx,
                descriptor: descriptor.clone(),
                diff_id: diff_id.clone(),
                compression,
            })
        })
        .collect()
}

fn worker_count(opts: &UnpackOptions, jobs: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit = if opts.max_parallel_layers == 0 {
        cpus
    } else {
        opts.max_parallel_layers
    };
    limit.min(jobs).max(1)
}

/// Runs `work` for indices 0..count on up to `threads` threads; after a failure no new work
/// starts (indices never started stay None).
fn run_parallel<T: Send>(
    count: usize,
    threads: usize,
    work: impl Fn(usize) -> Result<T, UnpackError> + Sync,
) -> Vec<Option<Result<T, UnpackError>>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<T, UnpackError>>>> =
        Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let result = work(i);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Takes the results in order, or the first error (dropping, and so removing, everything the
/// other layers made).
fn collect_in_order<T>(
    results: Vec<Option<Result<T, UnpackError>>>,
) -> Result<Vec<T>, UnpackError> {
    let mut done = Vec::with_capacity(results.len());
    let mut first_error = None;
    for result in results {
        match result {
            Some(Ok(value)) => done.push(value),
            Some(Err(e)) if first_error.is_none() => first_error = Some(e),
            _ => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// Extracts every layer of `image` not yet unpacked into `layers_dir()/sha256/<diff_id hex>`
/// (missing ones in parallel, each into a temp dir renamed into place once complete and
/// verified) and returns the layer directories, bottom first.
pub fn ensure_layers(
    store: &Store,
    image: &Image,
    opts: &UnpackOptions,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>, UnpackError> {
    let store_err = |source| UnpackError::Store {
        image: image.name.clone(),
        source,
    };
    let jobs = layer_jobs(image)?;
    let dirs: Vec<PathBuf> = jobs
        .iter()
        .map(|j| layer_dir(store, j.diff_id_hex()))
        .collect();
    let mut seen = HashSet::new();
    let missing: Vec<usize> = (0..jobs.len())
        .filter(|&i| !dirs[i].is_dir() && seen.insert(jobs[i].diff_id_hex().to_string()))
        .collect();
    if missing.is_empty() {
        return Ok(dirs);
    }
    // Shared with other writers, exclusive with prune: no layer directory disappears under us.
    let _guard = store.write_guard().map_err(store_err)?;
    let parent = store.layers_dir().join("sha256");
    fs::create_dir_all(&parent).map_err(image_io(&image.name, "create directory", &parent))?;
    let threads = worker_count(opts, missing.len());
    let results = run_parallel(missing.len(), threads, |k| {
        let job = &jobs[missing[k]];
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{}-", &job.diff_id_hex()[..12]))
            .tempdir_in(store.layers_dir())
            .map_err(|e| {
                job.ctx
                    .layer_io("create temp dir in", store.layers_dir(), e)
            })?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(|e| job.ctx.layer_io("chmod", tmp.path(), e))?;
        let extracted = extract_layer(
            store,
            job,
            tmp.path(),
            WhiteoutMode::Overlay,
            opts.max_layer_bytes,
            progress,
        )?;
        Ok((tmp, extracted))
    });
    let extracted: Vec<(TempDir, Extracted)> = collect_in_order(results)?;
    // Hard links into lower layers, bottom layer first (a link may target a file that a lower
    // layer itself got by such a link).
    for (k, (_, layer)) in extracted.iter().enumerate() {
        let index = missing[k];
        if layer.facts.deferred_links.is_empty() {
            continue;
        }
        let views: Vec<LayerView<'_>> = (0..=index)
            .map(|j| match missing.iter().position(|&m| m == j) {
                Some(pos) => LayerView::Overlay(extracted[pos].0.path()),
                None => LayerView::Overlay(dirs[j].as_path()),
            })
            .collect();
        resolve_links(&views, index, &layer.facts.deferred_links, &jobs[index].ctx)?;
    }
    let mut extracted = extracted;
    for (k, (tmp, _)) in extracted.drain(..).enumerate() {
        let job = &jobs[missing[k]];
        let target = &dirs[missing[k]];
        let tmp_path = tmp.keep();
        match fs::rename(&tmp_path, target) {
            Ok(()) => {
                tracing::debug!(layer = %job.ctx.layer, dir = %target.display(), "layer unpacked")
            }
            // Another process unpacked the same layer meanwhile: keep theirs.
            Err(e) if target.is_dir() => {
                tracing::debug!(layer = %job.ctx.layer, error = %e, "layer appeared meanwhile; dropping this copy");
                crate::fsutil::remove_tree(&tmp_path).map_err(|e| store_err(e.into()))?;
            }
            Err(e) => {
                let _ = crate::fsutil::remove_tree(&tmp_path);
                return Err(job.ctx.layer_io("rename into place", target, e));
            }
        }
    }
    crate::store::sync_dir(&parent).map_err(store_err)?;
    Ok(dirs)
}

/// Unpacks the image flattened into `dest` (absent or an empty directory), with OCI whiteout
/// semantics applied.
pub fn unpack_flat(
    store: &Store,
    image: &Image,
    dest: &Path,
    opts: &UnpackOptions,
    progress: &dyn Progress,
) -> Result<(), UnpackError> {
    unpack_flat_report(store, image, dest, opts, progress).map(|_| ())
}

/// Removes what a failed flat unpack left in the destination.
struct DestGuard<'a> {
    dest: &'a Path,
    created: bool,
    armed: bool,
}

impl Drop for DestGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.created {
            let _ = fs::remove_dir_all(self.dest);
        } else if let Ok(entries) = fs::read_dir(self.dest) {
            for entry in entries.flatten() {
                let _ = match entry.file_type() {
                    Ok(t) if t.is_dir() => fs::remove_dir_all(entry.path()),
                    _ => fs::remove_file(entry.path()),
                };
            }
        }
    }
}

/// `unpack_flat`, saying how much it unpacked.
///
/// Design: the top layer is extracted straight into `dest` while each lower layer is
/// extracted, in parallel, into a staging directory inside `dest` (same filesystem); then the
/// lower layers are merged in top-down by rename(2), and what stays in staging (deleted or
/// shadowed content) is removed.
pub fn unpack_flat_report(
    store: &Store,
    image: &Image,
    dest: &Path,
    opts: &UnpackOptions,
    progress: &dyn Progress,
) -> Result<UnpackReport, UnpackError> {
    let jobs = layer_jobs(image)?;
    let created = match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(UnpackError::DestinationNotEmpty {
                    image: image.name.clone(),
                    path: dest.to_path_buf(),
                });
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(image_io(&image.name, "create directory", dest))?;
            true
        }
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(UnpackError::DestinationNotEmpty {
                image: image.name.clone(),
                path: dest.to_path_buf(),
            });
        }
        Err(e) => return Err(image_io(&image.name, "open", dest)(e)),
    };
    let mut guard = DestGuard {
        dest,
        created,
        armed: true,
    };
    let mut report = UnpackReport {
        layers: jobs.len(),
        ..UnpackReport::default()
    };
    let Some(top) = jobs.len().checked_sub(1) else {
        guard.armed = false;
        return Ok(report);
    };
    let staging: Vec<TempDir> = (0..top)
        .map(|_| {
            tempfile::Builder::new()
                .prefix(".berth-unpack-")
                .tempdir_in(dest)
                .map_err(image_io(&image.name, "create staging directory in", dest))
        })
        .collect::<Result<_, _>>()?;
    let targets: Vec<&Path> = (0..jobs.len())
        .map(|i| if i == top { dest } else { staging[i].path() })
        .collect();
    let threads = worker_count(opts, jobs.len());
    let results = run_parallel(jobs.len(), threads, |i| {
        extract_layer(
            store,
            &jobs[i],
            targets[i],
            WhiteoutMode::Record,
            opts.max_layer_bytes,
            progress,
        )
    });
    let extracted = collect_in_order(results)?;
    for (index, layer) in extracted.iter().enumerate() {
        let views: Vec<LayerView<'_>> = (0..=index)
            .map(|j| LayerView::Recorded(targets[j], &extracted[j].facts))
            .collect();
        resolve_links(&views, index, &layer.facts.deferred_links, &jobs[index].ctx)?;
        report.entries += layer.facts.entries;
        report.bytes += layer.uncompressed_bytes;
    }
    let staged: Vec<StagedLayer<'_>> = extracted
        .iter()
        .zip(&targets)
        .map(|(layer, dir)| StagedLayer {
            dir,
            facts: &layer.facts,
        })
        .collect();
    merge_down(dest, &staged, &image.name)?;
    // What is left in staging is deleted or shadowed content; remove it on as many threads.
    let removed: Vec<io::Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = staging
            .into_iter()
            .map(|dir| scope.spawn(move || dir.close()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    for result in removed {
        result.map_err(image_io(&image.name, "remove staging directory in", dest))?;
    }
    guard.armed = false;
    Ok(report)
}
