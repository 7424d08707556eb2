//! `berth compare IMAGE [-- CMD...]`: the same workload from the same image, run as a container
//! (through berth's runtime library, as `berth run` does) and as a VM (qemu with the host's
//! Debian kernel from /boot and the image's root filesystem as an initramfs), measured live.

use std::fs;
use std::os::fd::AsRawFd;

use anyhow::{Context as _, bail};
use berth_images::progress::NoProgress;
use berth_images::unpack::{UnpackOptions, unpack_flat_report};

use crate::Context;
use crate::compare::vm::{self, VM_DEADLINE_SECONDS};
use crate::compare::{accel, container, probe_wrapped, report, wrapped};
use crate::output::{OutputFormat, print_json};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The image (a busybox-like image: /bin/sh, mount, uname, poweroff applets).
    image: String,
    /// How many times each side runs; figures are the median and range.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// The workload (default: `echo hello`).
    #[arg(last = true)]
    command: Vec<String>,
}

pub(crate) fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let command = if args.command.is_empty() {
        vec!["echo".to_string(), "hello".to_string()]
    } else {
        args.command.clone()
    };
    let host_kernel = fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_string();
    let store = berth_images::Store::open(&ctx.data_dir)
        .with_context(|| format!("opening the image store in {}", ctx.data_dir.display()))?;
    let image = store.image(&args.image)?;
    let layer_bytes: u64 = image.manifest.layers().iter().map(|l| l.size()).sum();

    // Container input is stdin from /dev/null, as `berth run` without -i.
    let devnull = fs::File::open("/dev/null")?;
    nix::unistd::dup2(devnull.as_raw_fd(), 0).context("dup2")?;

    // ---- container side ----
    let argv = wrapped(&command);
    let mut container_samples = Vec::new();
    for n in 0..args.runs {
        container_samples.push(container::run(ctx, &image.name, &argv, n, false)?);
    }
    let probe = container::run(ctx, &image.name, &probe_wrapped(), args.runs, true)?;
    let container_visible = probe.visible.unwrap_or(false);
    let host_memtotal = host_memtotal()?;

    // ---- VM side ----
    berth_vm::find_tool(berth_vm::QEMU, "qemu-system-x86")?;
    let kernel = berth_vm::kernel::newest()?.path;
    let work = vm::WorkDir::new(&ctx.data_dir)?;
    let root = work.path.join("root");
    unpack_flat_report(
        &store,
        &image,
        &root,
        &UnpackOptions::default(),
        &NoProgress,
    )
    .with_context(|| format!("unpacking {} into {}", image.name, root.display()))?;
    let initramfs = vm::build_initramfs(&root, &work.path, &command)?;
    let accel = accel::accelerator(ctx, &kernel, &initramfs)?;
    let mut vm_samples = Vec::new();
    for _ in 0..args.runs {
        let sample = vm::run(&kernel, &initramfs, accel, false, VM_DEADLINE_SECONDS)?;
        if sample.to_output.is_none() {
            bail!(
                "the VM printed no workload output; its console said:\n{}",
                sample.lines.join("\n")
            );
        }
        vm_samples.push(sample);
    }
    let vm_probe = vm::run(&kernel, &initramfs, accel, true, VM_DEADLINE_SECONDS)?;
    let vm_visible = vm_probe.visible.unwrap_or(true);
    let vm_limits = report::vm_limits(&vm_probe);
    let kernel_bytes = fs::metadata(&kernel)?.len();
    let initramfs_bytes = fs::metadata(&initramfs)?.len();
    drop(work);

    let container_limits = report::container_limits(&probe, host_memtotal);
    let container = report::container_side(
        &container_samples,
        container_visible,
        layer_bytes,
        container_limits,
    );
    let vm = report::vm_side(
        &vm_samples,
        vm_visible,
        kernel_bytes,
        initramfs_bytes,
        accel.as_str(),
        vm_limits,
    );
    let report = report::Report {
        image: image.name.clone(),
        command,
        runs: args.runs,
        accelerator: accel.as_str().to_string(),
        host_kernel,
        guest_kernel_image: kernel,
        vm_over_container: report::ratios(&vm, &container),
        container,
        vm,
    };
    match ctx.output() {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Table => {
            report::print(&report);
            Ok(())
        }
    }
}

/// The host's MemTotal in bytes, to show that a container sees the host's figure.
fn host_memtotal() -> anyhow::Result<u64> {
    let text = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .context("no MemTotal in /proc/meminfo")
}
