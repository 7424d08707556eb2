//! The VM side of `berth compare`: the image's root filesystem packed as an initramfs and
//! booted with the host's kernel through the guest harness (berth-vm), its console timed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_vm::{Accel, BootSpec, Builder};

use super::{
    CPUS, EXIT_MARKER, KERNEL_PREFIX, MEMORY_MB, Sample, cmdline, probe_argv, probe_wrapped,
    wrapped,
};

pub(crate) const VM_DEADLINE_SECONDS: u64 = 180;

/// A scratch directory under the data dir, removed on drop.
#[derive(Debug)]
pub(crate) struct WorkDir {
    pub path: PathBuf,
}

impl WorkDir {
    pub(crate) fn new(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir
            .join("compare")
            .join(format!("work-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// The image's root filesystem `root` with an /init that runs the workload (or, with
/// `berth.probe` on the kernel command line, the probe), packed into `work`; returns its path.
pub(crate) fn build_initramfs(
    root: &Path,
    work: &Path,
    command: &[String],
) -> anyhow::Result<PathBuf> {
    let workload: Vec<String> = wrapped(command).iter().map(|a| shell_quote(a)).collect();
    let probe: Vec<String> = probe_wrapped().iter().map(|a| shell_quote(a)).collect();
    let mut builder = Builder::new();
    builder.tree("/", root)?;
    for dir in ["/proc", "/sys", "/dev"] {
        builder.dir(dir, 0o755);
    }
    builder.init(&format!(
        "{prelude}cd /\n\
         case \"$(cat /proc/cmdline)\" in\n\
         *berth.probe*) {probe} ;;\n\
         *) {workload} ;;\n\
         esac\n\
         echo {EXIT_MARKER}$?\n\
         /bin/busybox poweroff -f\n",
        prelude = builder.prelude(false),
        probe = probe.join(" "),
        workload = workload.join(" "),
    ));
    let out = work.join("initramfs.cpio");
    builder.pack(&out)?;
    Ok(out)
}

/// Any host process whose cmdline is exactly `argv`.
fn host_process_with(argv: &[String]) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .and_then(cmdline)
            .is_some_and(|c| c == argv)
    })
}

/// The firmware's last words share a line with the workload's first ("Booting from
/// ROM..berth-kernel=..."): the workload's line starts at its prefix.
fn from_kernel_line(text: String) -> String {
    match text.find(KERNEL_PREFIX) {
        Some(i) if i > 0 => text[i..].to_string(),
        _ => text,
    }
}

/// Boots the VM once; a run that passes `deadline_secs` is killed and returned as it stood
/// (an error only if qemu cannot start).
pub(crate) fn run(
    kernel: &Path,
    initramfs: &Path,
    accel: Accel,
    probe: bool,
    deadline_secs: u64,
) -> anyhow::Result<Sample> {
    let mut spec = BootSpec::new(kernel, initramfs);
    if probe {
        spec.append.push_str(" berth.probe=1");
    }
    spec.memory_mb = MEMORY_MB;
    spec.cpus = CPUS;
    spec.accel = accel;
    spec.deadline = Duration::from_secs(deadline_secs);
    let mut visible = None;
    let outcome = berth_vm::boot_observed(&spec, &mut |line, pid| {
        if probe && visible.is_none() && line.text.contains(KERNEL_PREFIX) {
            // The guest's `sleep 2` runs now; look for it on the host for a second.
            let until = Instant::now() + Duration::from_secs(1);
            let mut seen = false;
            while Instant::now() < until && !seen {
                seen = host_process_with(&probe_argv());
                std::thread::sleep(Duration::from_millis(20));
            }
            let qemu_seen = fs::metadata(format!("/proc/{pid}")).is_ok();
            visible = Some(seen || !qemu_seen);
        }
    })?;
    Ok(Sample {
        to_output: outcome
            .console
            .iter()
            .find(|l| l.text.contains(KERNEL_PREFIX))
            .map(|l| l.at),
        to_exit: outcome.elapsed,
        memory: outcome.peak_rss_bytes,
        exit_code: outcome.exit_code.unwrap_or(-1),
        lines: outcome
            .console
            .into_iter()
            .map(|l| from_kernel_line(l.text))
            .collect(),
        visible,
        cgroup: None,
    })
}
