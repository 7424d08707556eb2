//! `berth build -f Containerfile -t NAME:TAG [--build-arg K=V] [--no-cache]
//! [--network host|none] CONTEXT`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use berth_images::Reference;
use berth_images::containerfile::{BuildNetwork, BuildReport, BuildRequest, StepReport, build};
use serde::Serialize;

use super::image::build::{created_time, parse_pair, source_date_epoch};
use super::image::open_store;
use super::image::summary::ImageDigests;
use crate::Context;
use crate::container::step::{Interrupts, RuntimeStepRunner, interrupted};
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Supported: FROM (an image in the store or scratch, AS name), RUN (shell and exec form), COPY \
and ADD of local files (--chown=UID:GID, --chmod=OCTAL, COPY --from=stage), ENV, ARG, WORKDIR, \
USER, CMD, ENTRYPOINT, EXPOSE, LABEL, VOLUME, and the context's .dockerignore.

RUN runs in a container of berth's runtime (own namespaces, the default seccomp profile and \
capabilities) on an overlay of the layers so far; what it changes becomes the step's layer. \
Its output goes to stderr. --network: the default gives the step its own namespace with NAT \
to the host's network (and the host's resolv.conf); host shares the host's; none has loopback \
only.

Each COPY/ADD/RUN layer is cached under the data dir by a key of the steps before it, the \
expanded instruction (for RUN: its command, env, user, workdir and network) and, for COPY/ADD, \
the sources' content and modes (not their mtimes). With SOURCE_DATE_EPOCH set, every file a \
step adds gets that mtime and the image that `created` time, so two builds of the same inputs \
give the same digest.")]
pub(crate) struct Args {
    /// The Containerfile; CONTEXT/Containerfile (or CONTEXT/Dockerfile) when not given.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// The name of the new image, NAME[:TAG].
    #[arg(short = 't', long)]
    tag: Reference,
    /// A value for an ARG of the file (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = parse_pair)]
    build_args: Vec<(String, String)>,
    /// Write every layer afresh instead of taking it from the cache.
    #[arg(long)]
    no_cache: bool,
    /// RUN steps' network: host, none, or (the default) a namespace of their own with NAT.
    #[arg(long, value_name = "host|none", default_value = "nat")]
    network: BuildNetwork,
    /// The directory COPY and ADD read from.
    #[arg(value_name = "CONTEXT")]
    context: PathBuf,
}

#[derive(Debug, Serialize)]
struct Built<'a> {
    #[serde(flatten)]
    image: ImageDigests,
    cache_hits: usize,
    layers_written: usize,
    steps: &'a [StepReport],
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let store = open_store(ctx)?;
    let containerfile = match args.file {
        Some(file) => file,
        None => ["Containerfile", "Dockerfile"]
            .iter()
            .map(|name| args.context.join(name))
            .find(|path| path.is_file())
            .with_context(|| {
                format!(
                    "no Containerfile or Dockerfile in {}; name one with -f",
                    args.context.display()
                )
            })?,
    };
    let request = BuildRequest {
        containerfile,
        context: args.context,
        tag: args.tag,
        build_args: args.build_args,
        no_cache: args.no_cache,
        source_date_epoch: source_date_epoch()?,
        created: created_time()?,
        network: args.network,
    };
    let progress = crate::progress::for_terminal();
    let interrupts = Interrupts::install()?;
    let report =
        build(&store, &request, &RuntimeStepRunner, progress.as_ref()).with_context(|| {
            format!(
                "building {} from {}",
                request.tag,
                request.containerfile.display()
            )
        })?;
    drop(interrupts);
    if interrupted() {
        bail!("the build of {} was interrupted", request.tag);
    }
    print(&report, ctx)
}

fn print(report: &BuildReport, ctx: &Context) -> anyhow::Result<()> {
    let built = Built {
        image: ImageDigests::of(&report.image),
        cache_hits: report.cache_hits(),
        layers_written: report.layers_written(),
        steps: &report.steps,
    };
    match ctx.output() {
        OutputFormat::Json => print_json(&built),
        OutputFormat::Table => {
            for step in &report.steps {
                let state = match (&step.layer, step.cached) {
                    (Some(_), true) => " (cached)",
                    (Some(_), false) => " (new layer)",
                    (None, _) => "",
                };
                println!("line {}: {}{state}", step.line, step.instruction);
            }
            println!(
                "Built {} {} ({} layers, {} from the cache, {} new)",
                built.image.name,
                built.image.digest,
                built.image.layers.len(),
                built.cache_hits,
                built.layers_written
            );
            Ok(())
        }
    }
}
