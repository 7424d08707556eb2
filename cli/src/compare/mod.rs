//! `berth compare`'s machinery: one workload run as a container and as a qemu VM, measured the
//! same way on both sides.
//!
//! Both sides run `/bin/sh -c 'echo berth-kernel=$(uname -r); exec "$@"' sh CMD...`, so the
//! workload's first line is the kernel it sees; "time to output" is the time to that line.

use std::fs;
use std::time::Duration;

pub(crate) mod accel;
pub(crate) mod container;
pub(crate) mod report;
pub(crate) mod vm;

const KERNEL_PREFIX: &str = "berth-kernel=";
/// The probe run's view of its machine: /proc/meminfo's MemTotal line and the CPUs listed in
/// /proc/cpuinfo, which a cgroup limit does not change and a VM's size does.
const MEMTOTAL_PREFIX: &str = "berth-memtotal=";
const CPUS_PREFIX: &str = "berth-cpus=";
/// The size both sides get: the VM's RAM and vCPUs, the container's memory limit and CPU quota.
pub(crate) const MEMORY_MB: u32 = 128;
pub(crate) const CPUS: u32 = 1;
/// What the VM's init prints before its exit status (the guest harness reads it back).
const EXIT_MARKER: &str = berth_vm::initramfs::EXIT_MARKER;
/// The probe workload both sides run to see whether the workload's process shows on the host.
const PROBE_ARGV: [&str; 2] = ["sleep", "2"];

/// One measured run of either side.
#[derive(Debug)]
pub(crate) struct Sample {
    pub to_output: Option<Duration>,
    pub to_exit: Duration,
    pub memory: u64,
    pub lines: Vec<String>,
    pub exit_code: i32,
    pub visible: Option<bool>,
    /// The limits as read back from the host's cgroup files (container probe run only).
    pub cgroup: Option<berth_runtime::explain::Cgroup>,
}

impl Sample {
    fn kernel(&self) -> String {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(KERNEL_PREFIX))
            .unwrap_or("")
            .trim()
            .to_string()
    }
    /// MemTotal in bytes and the CPU count the probe workload saw.
    fn seen(&self) -> (Option<u64>, Option<u32>) {
        let find = |prefix: &str| self.lines.iter().find_map(|l| l.strip_prefix(prefix));
        // "MemTotal:       24576000 kB"
        let memtotal = find(MEMTOTAL_PREFIX).and_then(|l| {
            let kb: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        });
        let cpus = find(CPUS_PREFIX).and_then(|l| l.trim().parse().ok());
        (memtotal, cpus)
    }
    fn output(&self) -> String {
        let after = self
            .lines
            .iter()
            .skip_while(|l| !l.starts_with(KERNEL_PREFIX))
            .skip(1)
            .take_while(|l| !l.starts_with(EXIT_MARKER));
        after.map(|l| format!("{l}\n")).collect()
    }
}

/// `command` behind the shell line that prints the kernel first.
pub(crate) fn wrapped(command: &[String]) -> Vec<String> {
    behind_shell_line(&format!("echo {KERNEL_PREFIX}$(uname -r)"), command)
}

pub(crate) fn probe_argv() -> Vec<String> {
    PROBE_ARGV.iter().map(|s| s.to_string()).collect()
}

/// The probe workload behind a shell line that prints the kernel, then the memory and CPUs the
/// workload sees, then becomes the probe.
pub(crate) fn probe_wrapped() -> Vec<String> {
    behind_shell_line(
        &format!(
            "echo {KERNEL_PREFIX}$(uname -r); \
             echo {MEMTOTAL_PREFIX}$(grep MemTotal /proc/meminfo); \
             echo {CPUS_PREFIX}$(grep -c ^processor /proc/cpuinfo)"
        ),
        &probe_argv(),
    )
}

/// `sh -c 'PRELUDE; exec "$@"' sh COMMAND...`: the prelude's lines, then the command as the
/// same process (so its pid is the one the host sees).
fn behind_shell_line(prelude: &str, command: &[String]) -> Vec<String> {
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("{prelude}; exec \"$@\""),
        "sh".to_string(),
    ];
    argv.extend(command.iter().cloned());
    argv
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}
