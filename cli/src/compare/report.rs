//! What `berth compare` reports: per-side figures (median and range over the runs), the VM over
//! container ratios, as a JSON object or a table.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use berth_runtime::explain::binary_bytes;

use super::{CPUS, MEMORY_MB, Sample};
use crate::output::{human_bytes, print_table};

#[derive(Debug, Clone, Serialize)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
    samples: Vec<f64>,
}

impl Stat {
    fn of(mut samples: Vec<f64>) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n == 0 {
            0.0
        } else if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        samples.shrink_to_fit();
        Self {
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            samples,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Side {
    time_to_output_ms: Stat,
    time_to_exit_ms: Stat,
    memory_bytes: Stat,
    memory_source: String,
    kernel: String,
    /// The workload's output (last run), without the kernel line.
    output: String,
    exit_code: i32,
    workload_visible_on_host: bool,
    visibility_check: String,
    limits: Limits,
    disk_bytes: u64,
    disk: String,
    isolation: String,
}

/// Where each side's memory and CPU limits live, read back where they are applied, and what the
/// workload itself sees of its machine.
#[derive(Debug, Serialize)]
pub(crate) struct Limits {
    /// Where the limits are set.
    set_in: String,
    /// The memory limit in effect, read back (cgroup file) or given (qemu -m).
    memory_limit_bytes: Option<u64>,
    /// CPUs' worth of time (cgroup quota / period) or vCPUs (qemu -smp).
    cpus_limit: Option<f64>,
    /// The file or flag each figure came from.
    source: String,
    /// MemTotal in the workload's /proc/meminfo.
    seen_memory_bytes: Option<u64>,
    /// Processors in the workload's /proc/cpuinfo.
    seen_cpus: Option<u32>,
    /// The host's MemTotal (container side: what a cgroup limit leaves /proc/meminfo showing).
    host_memory_bytes: Option<u64>,
}

/// The container's limits from its cgroup files, and what its probe saw.
pub(crate) fn container_limits(probe: &Sample, host_memory: u64) -> Limits {
    let (seen_memory_bytes, seen_cpus) = probe.seen();
    let cgroup = probe.cgroup.as_ref();
    let sources: Vec<String> = cgroup
        .map(|c| {
            [&c.memory.source, &c.cpu.source]
                .into_iter()
                .flatten()
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    Limits {
        set_in: "cgroup files of the host kernel".into(),
        memory_limit_bytes: cgroup.and_then(|c| c.memory.limit_bytes),
        cpus_limit: cgroup.and_then(|c| c.cpu.cpus),
        source: sources.join(", "),
        seen_memory_bytes,
        seen_cpus,
        host_memory_bytes: Some(host_memory),
    }
}

/// The VM's size from qemu's flags, and what its guest saw.
pub(crate) fn vm_limits(probe: &Sample) -> Limits {
    let (seen_memory_bytes, seen_cpus) = probe.seen();
    Limits {
        set_in: "the VM's size (qemu flags)".into(),
        memory_limit_bytes: Some(u64::from(MEMORY_MB) << 20),
        cpus_limit: Some(f64::from(CPUS)),
        source: format!("qemu -m {MEMORY_MB} -smp {CPUS}"),
        seen_memory_bytes,
        seen_cpus,
        host_memory_bytes: None,
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Ratios {
    time_to_output: f64,
    time_to_exit: f64,
    memory: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub image: String,
    pub command: Vec<String>,
    pub runs: u32,
    pub accelerator: String,
    pub host_kernel: String,
    pub guest_kernel_image: PathBuf,
    pub container: Side,
    pub vm: Side,
    /// VM figure / container figure (medians).
    pub vm_over_container: Ratios,
}

/// The container side's figures, with where each comes from.
pub(crate) fn container_side(
    samples: &[Sample],
    visible: bool,
    layer_bytes: u64,
    limits: Limits,
) -> Side {
    side(
        samples,
        "memory cgroup peak usage (memory.max_usage_in_bytes / memory.peak) of the container",
        visible,
        "probe `sleep 2`: the container's pid on the host has /proc/PID/cmdline `sleep 2`",
        limits,
        layer_bytes,
        format!(
            "image layers {} (stored once, shared by every container of the image)",
            human_bytes(layer_bytes)
        ),
        "namespaces (pid, mount, uts, ipc, net) + cgroups on the host's one kernel",
    )
}

/// The VM side's figures, with where each comes from.
pub(crate) fn vm_side(
    samples: &[Sample],
    visible: bool,
    kernel_bytes: u64,
    initramfs_bytes: u64,
    accel: &str,
    limits: Limits,
) -> Side {
    side(
        samples,
        "qemu's peak RSS (VmHWM sampled, and getrusage ru_maxrss)",
        visible,
        "probe `sleep 2` in the guest: no host process has cmdline `sleep 2`; only qemu is visible",
        limits,
        kernel_bytes + initramfs_bytes,
        format!(
            "kernel {} + initramfs {} (per VM image, not shared)",
            human_bytes(kernel_bytes),
            human_bytes(initramfs_bytes)
        ),
        &format!("hypervisor (qemu, {accel}) + the guest's own kernel"),
    )
}

/// VM medians over container medians; 0 where the container's median is 0.
pub(crate) fn ratios(vm: &Side, container: &Side) -> Ratios {
    let ratio = |a: &Stat, b: &Stat| {
        if b.median > 0.0 {
            a.median / b.median
        } else {
            0.0
        }
    };
    Ratios {
        time_to_output: ratio(&vm.time_to_output_ms, &container.time_to_output_ms),
        time_to_exit: ratio(&vm.time_to_exit_ms, &container.time_to_exit_ms),
        memory: ratio(&vm.memory_bytes, &container.memory_bytes),
    }
}

/// A byte count as a statistic.
#[allow(
    clippy::cast_precision_loss,
    reason = "memory figures stay far below 2^52 bytes, where f64 is exact"
)]
fn bytes_f64(bytes: u64) -> f64 {
    bytes as f64
}

/// A byte statistic (a median may be fractional) back as whole bytes for display.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a non-negative figure rounded for display; float-to-int casts saturate"
)]
fn whole_bytes(bytes: f64) -> u64 {
    bytes as u64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[allow(clippy::too_many_arguments)]
fn side(
    samples: &[Sample],
    memory_source: &str,
    visible: bool,
    visibility_check: &str,
    limits: Limits,
    disk_bytes: u64,
    disk: String,
    isolation: &str,
) -> Side {
    let last = samples.last().expect("at least one run");
    Side {
        time_to_output_ms: Stat::of(
            samples
                .iter()
                .map(|s| s.to_output.map(ms).unwrap_or(f64::NAN))
                .collect(),
        ),
        time_to_exit_ms: Stat::of(samples.iter().map(|s| ms(s.to_exit)).collect()),
        memory_bytes: Stat::of(samples.iter().map(|s| bytes_f64(s.memory)).collect()),
        memory_source: memory_source.to_string(),
        kernel: last.kernel(),
        output: last.output(),
        exit_code: last.exit_code,
        workload_visible_on_host: visible,
        visibility_check: visibility_check.to_string(),
        limits,
        disk_bytes,
        disk,
        isolation: isolation.to_string(),
    }
}

/// Prints the report as a table with a closing note on where the limits live.
pub(crate) fn print(r: &Report) {
    let c = &r.container;
    let rows = [measured_rows(r), isolation_rows(r)].concat();
    println!(
        "{} `{}`, {} run(s); VM accelerator: {}",
        r.image,
        r.command.join(" "),
        r.runs,
        r.accelerator
    );
    print_table(
        &[
            "",
            "container",
            &format!("VM (qemu {})", r.accelerator),
            "VM/container",
        ],
        &rows,
    );
    println!(
        "The container's limits are cgroup files the host kernel enforces ({}); its /proc/meminfo \
         and /proc/cpuinfo still show the host. The VM's limits are its size: its own kernel \
         sees only what qemu gives it.",
        if c.limits.source.is_empty() {
            "not found"
        } else {
            c.limits.source.as_str()
        }
    );
}

/// The rows of figures measured on both sides, with their ratios.
fn measured_rows(r: &Report) -> Vec<Vec<String>> {
    let (c, v) = (&r.container, &r.vm);
    vec![
        vec![
            "time to first output".into(),
            time_cell(&c.time_to_output_ms),
            time_cell(&v.time_to_output_ms),
            format!("{:.1}x", r.vm_over_container.time_to_output),
        ],
        vec![
            "time to exit".into(),
            time_cell(&c.time_to_exit_ms),
            time_cell(&v.time_to_exit_ms),
            format!("{:.1}x", r.vm_over_container.time_to_exit),
        ],
        vec![
            "host memory (peak)".into(),
            memory_cell(&c.memory_bytes),
            memory_cell(&v.memory_bytes),
            format!("{:.1}x", r.vm_over_container.memory),
        ],
    ]
}

/// The rows on what isolates each side: kernel, visibility, limits, disk and boundary.
fn isolation_rows(r: &Report) -> Vec<Vec<String>> {
    let (c, v) = (&r.container, &r.vm);
    let yes = |b: bool| if b { "yes" } else { "no (only qemu)" }.to_string();
    vec![
        vec![
            format!("kernel seen (host {})", r.host_kernel),
            c.kernel.clone(),
            v.kernel.clone(),
            String::new(),
        ],
        vec![
            "workload in host process table".into(),
            if c.workload_visible_on_host {
                "yes".into()
            } else {
                "no".into()
            },
            yes(v.workload_visible_on_host),
            String::new(),
        ],
        vec![
            "limits set in".into(),
            "cgroup files".into(),
            "the VM's size".into(),
            String::new(),
        ],
        vec![
            "memory / CPU limit (read back)".into(),
            limit_cell(&c.limits),
            limit_cell(&v.limits),
            String::new(),
        ],
        vec![
            "memory / CPUs the workload sees".into(),
            seen_cell(&c.limits),
            seen_cell(&v.limits),
            String::new(),
        ],
        vec![
            "bytes on disk".into(),
            format!("{} shared layers", human_bytes(c.disk_bytes)),
            format!("{} kernel+initramfs", human_bytes(v.disk_bytes)),
            String::new(),
        ],
        vec![
            "isolation boundary".into(),
            "namespaces + cgroups, one kernel".into(),
            "hypervisor + own kernel".into(),
            String::new(),
        ],
    ]
}

fn time_cell(s: &Stat) -> String {
    format!("{:.0} ms ({:.0}-{:.0})", s.median, s.min, s.max)
}

fn memory_cell(s: &Stat) -> String {
    format!(
        "{} ({}-{})",
        human_bytes(whole_bytes(s.median)),
        human_bytes(whole_bytes(s.min)),
        human_bytes(whole_bytes(s.max))
    )
}

fn limit_cell(l: &Limits) -> String {
    format!(
        "{} / {}",
        l.memory_limit_bytes.map_or("none".into(), binary_bytes),
        l.cpus_limit
            .map_or("none".into(), |c| format!("{c:.2} CPU"))
    )
}

fn seen_cell(l: &Limits) -> String {
    let text = format!(
        "{} / {}",
        l.seen_memory_bytes.map_or("?".into(), binary_bytes),
        l.seen_cpus.map_or("?".into(), |c| c.to_string())
    );
    if l.host_memory_bytes.is_some() && l.seen_memory_bytes == l.host_memory_bytes {
        format!("{text} (the host's)")
    } else {
        text
    }
}
