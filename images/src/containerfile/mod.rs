//! `berth build`: an image from a Containerfile and a context directory, with a layer per
//! COPY/ADD/RUN, metadata steps in the config, and a layer cache keyed by each step's inputs.
//!
//! RUN runs through the caller's [`StepRunner`] on an overlay of the stage's layers; the
//! overlay's upper directory, its whiteouts made OCI `.wh.` entries, is the step's layer.

mod cache;
mod context;
mod copy;
mod diff;
mod error;
mod execute;
mod parse;
mod run;
mod steps;
mod words;

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

pub use error::ContainerfileError;
pub use run::{BuildNetwork, RunOutcome, RunSpec, StepRunner};

use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{Image, Store};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The Containerfile (Dockerfile syntax).
    pub containerfile: PathBuf,
    /// The directory COPY and ADD read from (with its `.dockerignore`).
    pub context: PathBuf,
    pub tag: Reference,
    /// `--build-arg K=V`: values for the ARGs the file declares.
    pub build_args: Vec<(String, String)>,
    /// Make every layer afresh (the new layers are still recorded for later builds).
    pub no_cache: bool,
    /// SOURCE_DATE_EPOCH: the mtime of every file a step adds, for reproducible layers.
    pub source_date_epoch: Option<u64>,
    /// The image's `created` time and its history entries'.
    pub created: SystemTime,
    /// The network RUN steps get (part of their cache key).
    pub network: BuildNetwork,
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The stage's index (0-based) and its `AS` name.
    pub stage: usize,
    pub line: usize,
    /// The instruction after ARG/ENV expansion.
    pub instruction: String,
    pub key: String,
    /// The step's layer came from the cache (COPY/ADD/RUN: a cached RUN did not run).
    pub cached: bool,
    /// The layer's digest, for steps that make one.
    pub layer: Option<String>,
}

/// The built image and what each step did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub image: Image,
    pub steps: Vec<StepReport>,
}

impl BuildReport {
    /// Layer steps whose layer came from the cache.
    pub fn cache_hits(&self) -> usize {
        self.steps.iter().filter(|s| s.cached).count()
    }

    /// Layer steps that wrote a new layer.
    pub fn layers_written(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.layer.is_some() && !s.cached)
            .count()
    }
}

/// Builds the image and names it `request.tag`; `runner` runs the RUN steps.
pub fn build(
    store: &Store,
    request: &BuildRequest,
    runner: &dyn StepRunner,
    progress: &dyn Progress,
) -> Result<BuildReport, ContainerfileError> {
    execute::build(store, request, runner, progress)
}
