//! `berth logs`: a detached container's output, optionally followed until it exits.

use std::fs::File;
use std::io::Read as _;
use std::time::Duration;

use crate::Context;
use crate::container::layout::{self, Status};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines (0: all); with --agent or --scheduler.
    #[arg(long, default_value_t = 0)]
    tail: u32,
    /// Container id or name (with --scheduler also a deployment: its first replica).
    container: String,
    #[command(flatten)]
    agent: crate::remote::AgentArg,
}

/// How often `-f` looks for new output.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

fn copy_rest(file: &mut File, out: &mut impl std::io::Write) -> anyhow::Result<usize> {
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    out.write_all(&buf)?;
    out.flush()?;
    Ok(buf.len())
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    if let Some(agent) = &args.agent.agent {
        return remote(agent, &args);
    }
    if let Some(scheduler) = &ctx.scheduler {
        return cluster(scheduler, &args);
    }
    let (paths, meta) = layout::find(&ctx.data_dir, &args.container)?;
    if !meta.detached {
        anyhow::bail!(
            "{} ran in the foreground: its output was not kept",
            args.container
        );
    }
    let files = paths.shim();
    let mut out = std::io::stdout().lock();
    // The shim's older parts, oldest (highest number) first.
    let oldest = (1..).take_while(|&n| files.old_log(n).exists()).last();
    for n in (1..=oldest.unwrap_or(0)).rev() {
        if let Ok(mut old) = File::open(files.old_log(n)) {
            copy_rest(&mut old, &mut out)?;
        }
    }
    let mut log = match File::open(files.log()) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(f) = log.as_mut() {
        copy_rest(f, &mut out)?;
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        let done = !matches!(
            layout::status(&paths, &meta),
            Status::Running | Status::Created
        );
        if log.is_none() {
            log = File::open(files.log()).ok();
        }
        if let Some(f) = log.as_mut() {
            copy_rest(f, &mut out)?;
            // Rotated: the current file was renamed to ctr.log.1; reopen the new one.
            let current = std::fs::metadata(files.log()).ok();
            let ours = f.metadata().ok();
            if let (Some(c), Some(o)) = (current, ours)
                && std::os::unix::fs::MetadataExt::ino(&c)
                    != std::os::unix::fs::MetadataExt::ino(&o)
            {
                copy_rest(f, &mut out)?;
                log = File::open(files.log()).ok();
                continue;
            }
        }
        if done {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}

fn remote(agent: &str, args: &Args) -> anyhow::Result<()> {
    use std::io::Write as _;
    crate::remote::block_on(async {
        let mut client = crate::remote::connect(agent).await?;
        let mut stream = client
            .logs(berth_proto::v1::LogsRequest {
                container_id: args.container.clone(),
                follow: args.follow,
                tail_lines: args.tail,
            })
            .await
            .map_err(crate::remote::status_error)?
            .into_inner();
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(crate::remote::status_error)?
        {
            out.write_all(&chunk.data)?;
            out.flush()?;
        }
        Ok(())
    })
}

/// `--scheduler`: a container anywhere in the cluster, proxied by the scheduler.
fn cluster(scheduler: &str, args: &Args) -> anyhow::Result<()> {
    use std::io::Write as _;
    crate::cluster::with_client(scheduler, async |mut client| {
        let mut stream = client
            .logs(berth_proto::v1::ClusterLogsRequest {
                target: args.container.clone(),
                follow: args.follow,
                tail_lines: args.tail,
                environment: crate::cluster::environment(),
            })
            .await
            .map_err(crate::cluster::status_error)?
            .into_inner();
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(crate::cluster::status_error)?
        {
            out.write_all(&chunk.data)?;
            out.flush()?;
        }
        Ok(())
    })
}
