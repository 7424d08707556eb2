//! Booting a guest once under qemu: kernel, initramfs, raw virtio-blk disks and an optional
//! results port, with a deadline. The console is kept line by line with arrival times, the
//! results port's bytes are read back, qemu's peak memory is sampled.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::accel::Accel;
use crate::console::read_lines;
use crate::error::{Error, IoContext, Result};
use crate::initramfs::{EXIT_MARKER, RESULTS_PORT};

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// The kernel image (/boot/vmlinuz-*).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// Raw disk images, attached as virtio-blk in order (/dev/vda, /dev/vdb...).
    pub disks: Vec<PathBuf>,
    /// The kernel command line.
    pub append: String,
    /// Guest RAM.
    pub memory_mb: u32,
    /// vCPUs.
    pub cpus: u32,
    /// KVM or TCG (see [`crate::accel::choose`]).
    pub accel: Accel,
    /// qemu is killed when the guest runs longer; the outcome says `timed_out`.
    pub deadline: Duration,
    /// Attach the results port (a virtio-serial port named [`RESULTS_PORT`]).
    pub results: bool,
    /// More qemu arguments (a network, a 9p share).
    pub qemu_args: Vec<String>,
}

impl BootSpec {
    /// `kernel` and `initrd` with a serial console, 256 MiB, one vCPU, TCG, three minutes, no
    /// disks and no results port.
    pub fn new(kernel: &Path, initrd: &Path) -> Self {
        Self {
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            disks: Vec::new(),
            append: "console=ttyS0 quiet panic=-1".to_string(),
            memory_mb: 256,
            cpus: 1,
            accel: Accel::Tcg,
            deadline: Duration::from_secs(180),
            results: false,
            qemu_args: Vec::new(),
        }
    }
}

/// A console line and when it arrived, counted from qemu's start.
#[derive(Debug, Clone)]
pub struct ConsoleLine {
    /// Time since qemu started.
    pub at: Duration,
    /// The line, without terminal control sequences.
    pub text: String,
}

/// How a boot went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Every console line.
    pub console: Vec<ConsoleLine>,
    /// What the guest wrote to the results port.
    pub results: Vec<u8>,
    /// The status the guest's init printed after [`EXIT_MARKER`], if it got there.
    pub exit_code: Option<i32>,
    /// From qemu's start to the first byte on the results port.
    pub first_result: Option<Duration>,
    /// From qemu's start to its exit.
    pub elapsed: Duration,
    /// The deadline passed and qemu was killed.
    pub timed_out: bool,
    /// qemu's peak resident memory (VmHWM sampled, and getrusage's ru_maxrss).
    pub peak_rss_bytes: u64,
    /// What qemu itself printed on stderr.
    pub qemu_stderr: String,
}

impl Outcome {
    /// The console as text, one line each, for a failing test to print.
    pub fn console_text(&self) -> String {
        self.console
            .iter()
            .map(|l| format!("{}\n", l.text))
            .collect()
    }
}

/// Boots `spec` once (see [`boot_observed`]).
pub fn boot(spec: &BootSpec) -> Result<Outcome> {
    boot_observed(spec, &mut |_, _| {})
}

fn command(spec: &BootSpec, results: Option<&Path>) -> Result<Command> {
    let qemu = crate::find_tool(crate::QEMU, "qemu-system-x86")?;
    let mut cmd = Command::new(qemu);
    cmd.args(["-m", &spec.memory_mb.to_string()])
        .args(["-smp", &spec.cpus.to_string()])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&spec.kernel)
        .arg("-initrd")
        .arg(&spec.initrd)
        .args(["-append", &spec.append]);
    match spec.accel {
        Accel::Kvm => cmd.arg("-enable-kvm"),
        Accel::Tcg => cmd.args(["-accel", "tcg"]),
    };
    for disk in &spec.disks {
        let d = disk.to_string_lossy();
        if d.contains(',') {
            return Err(Error::Failed(format!("a disk path with a comma: {d}")));
        }
        cmd.args(["-drive", &format!("file={d},format=raw,if=virtio")]);
    }
    if let Some(path) = results {
        cmd.args(["-device", "virtio-serial"])
            .args(["-chardev", &format!("file,id=res,path={}", path.display())])
            .args([
                "-device",
                &format!("virtserialport,chardev=res,name={RESULTS_PORT}"),
            ]);
    }
    cmd.args(&spec.qemu_args);
    Ok(cmd)
}

/// Boots `spec` once, calling `observe` with each console line as it arrives and qemu's pid.
/// A guest that passes the deadline is killed and its outcome returned as it stood; an error
/// only if qemu cannot be started or waited for.
pub fn boot_observed(
    spec: &BootSpec,
    observe: &mut dyn FnMut(&ConsoleLine, i32),
) -> Result<Outcome> {
    let results = spec
        .results
        .then(tempfile::NamedTempFile::new)
        .transpose()
        .ctx(|| "creating the results file".to_string())?;
    let stderr = tempfile::tempfile().ctx(|| "creating qemu's stderr file".to_string())?;
    let mut cmd = command(spec, results.as_ref().map(tempfile::NamedTempFile::path))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr.try_clone().ctx(|| "qemu's stderr".to_string())?);
    let started = Instant::now();
    let mut child = cmd.spawn().ctx(|| format!("starting {cmd:?}"))?;
    let pid = i32::try_from(child.id()).map_err(|_| Error::Failed("qemu's pid".into()))?;
    let lines = read_lines(child.stdout.take().expect("piped stdout"));
    let mut out = Outcome {
        console: Vec::new(),
        results: Vec::new(),
        exit_code: None,
        first_result: None,
        elapsed: Duration::ZERO,
        timed_out: false,
        peak_rss_bytes: 0,
        qemu_stderr: String::new(),
    };
    let mut take = |out: &mut Outcome, at: Instant, text: String| {
        let line = ConsoleLine {
            at: at.duration_since(started),
            text,
        };
        observe(&line, pid);
        out.console.push(line);
    };
    loop {
        while let Ok((at, text)) = lines.try_recv() {
            take(&mut out, at, text);
        }
        out.peak_rss_bytes = out.peak_rss_bytes.max(vm_hwm(pid).unwrap_or(0));
        if out.first_result.is_none()
            && let Some(r) = &results
            && r.as_file().metadata().is_ok_and(|m| m.len() > 0)
        {
            out.first_result = Some(started.elapsed());
        }
        let deadline_passed = started.elapsed() >= spec.deadline;
        if deadline_passed {
            let _ = child.kill();
            out.timed_out = true;
        }
        if let Some(maxrss) = reap(pid, deadline_passed)? {
            out.elapsed = started.elapsed();
            out.peak_rss_bytes = out.peak_rss_bytes.max(maxrss);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    while let Ok((at, text)) = lines.recv_timeout(Duration::from_millis(500)) {
        take(&mut out, at, text);
    }
    if let Some(r) = &results {
        out.results = fs::read(r.path()).ctx(|| "reading the results file".to_string())?;
    }
    let mut stderr = stderr;
    if stderr.seek(SeekFrom::Start(0)).is_ok() {
        let _ = stderr.read_to_string(&mut out.qemu_stderr);
    }
    out.exit_code = out.console.iter().find_map(|l| {
        let (_, rest) = l.text.split_once(EXIT_MARKER)?;
        rest.split_whitespace().next()?.parse().ok()
    });
    Ok(out)
}

/// Waits for qemu (blocking if `block`); its peak RSS in bytes once it has exited.
fn reap(pid: i32, block: bool) -> Result<Option<u64>> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: pid is our child; status and usage point at live locals.
    let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
    if r == pid {
        return Ok(Some(u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024));
    }
    if r < 0 {
        return Err(Error::Failed(format!(
            "waiting for qemu: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(None)
}

/// VmHWM of `pid` in bytes, from /proc/PID/status.
fn vm_hwm(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
