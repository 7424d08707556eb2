//! The VM side of `berth compare`: the image's root filesystem packed as an initramfs, booted
//! under qemu with the host's kernel from /boot, its console timed and qemu's memory sampled.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::lines::read_lines;
use super::{
    CPUS, EXIT_MARKER, KERNEL_PREFIX, MEMORY_MB, Sample, cmdline, probe_argv, probe_wrapped,
    wrapped,
};

pub(crate) const QEMU: &str = "qemu-system-x86_64";
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

pub(crate) fn find_tool(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not installed (Debian: qemu-system-x86)"))
}

/// The newest /boot/vmlinuz-*, by version.
pub(crate) fn newest_kernel() -> anyhow::Result<PathBuf> {
    let mut kernels: Vec<(Vec<u64>, PathBuf)> = fs::read_dir("/boot")
        .context("reading /boot")?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            let key = version
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|p| p.parse().ok())
                .collect();
            Some((key, e.path()))
        })
        .collect();
    kernels.sort();
    kernels
        .pop()
        .map(|(_, p)| p)
        .context("no /boot/vmlinuz-* (Debian: linux-image-amd64)")
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Writes /init into `root` and packs it as a newc initramfs; returns its path.
pub(crate) fn build_initramfs(
    root: &Path,
    work: &Path,
    command: &[String],
) -> anyhow::Result<PathBuf> {
    for dir in ["proc", "sys", "dev"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let workload: Vec<String> = wrapped(command).iter().map(|a| shell_quote(a)).collect();
    let probe: Vec<String> = probe_wrapped().iter().map(|a| shell_quote(a)).collect();
    let init = format!(
        "#!/bin/sh\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev 2>/dev/null\n\
         cd /\n\
         case \"$(cat /proc/cmdline)\" in\n\
         *berth.probe*) {probe} ;;\n\
         *) {workload} ;;\n\
         esac\n\
         echo {EXIT_MARKER}$?\n\
         /bin/busybox poweroff -f\n",
        probe = probe.join(" "),
        workload = workload.join(" "),
    );
    let init_path = root.join("init");
    fs::write(&init_path, init)?;
    fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755))?;
    let out = work.join("initramfs.cpio");
    let file = fs::File::create(&out)?;
    let status = Command::new("sh")
        .args(["-c", "find . | cpio -o -H newc -R 0:0 --quiet"])
        .current_dir(root)
        .stdout(file)
        .status()
        .context("running cpio (Debian: cpio)")?;
    if !status.success() {
        bail!("find | cpio failed: {status}");
    }
    Ok(out)
}

fn vm_hwm(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
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

/// Boots the VM once; a run that passes `deadline_secs` is killed and returned as it stood
/// (an error only if qemu cannot start).
pub(crate) fn run(
    qemu: &Path,
    kernel: &Path,
    initramfs: &Path,
    accel: &str,
    probe: bool,
    deadline_secs: u64,
) -> anyhow::Result<Sample> {
    let mut append = "console=ttyS0 quiet panic=-1".to_string();
    if probe {
        append.push_str(" berth.probe=1");
    }
    let mut cmd = Command::new(qemu);
    cmd.args(["-m", &MEMORY_MB.to_string(), "-smp", &CPUS.to_string()])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append]);
    if accel == "kvm" {
        cmd.arg("-enable-kvm");
    } else {
        cmd.args(["-accel", "tcg"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let pid = i32::try_from(child.id()).context("qemu's pid")?;
    let lines = read_lines(child.stdout.take().expect("piped stdout"));
    let deadline = started + Duration::from_secs(deadline_secs);
    let mut got = Vec::new();
    let mut to_output = None;
    let mut hwm = 0u64;
    let mut visible = None;
    let (to_exit, status, maxrss) = loop {
        while let Ok((at, line)) = lines.try_recv() {
            if to_output.is_none() && line.starts_with(KERNEL_PREFIX) {
                to_output = Some(at.duration_since(started));
            }
            if probe && visible.is_none() && line.starts_with(KERNEL_PREFIX) {
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
            got.push(line);
        }
        if let Some(m) = vm_hwm(pid) {
            hwm = hwm.max(m);
        }
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our child, status and usage point at live locals.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (
                started.elapsed(),
                status,
                u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
            );
        }
        if r < 0 {
            bail!("waiting for qemu: {}", std::io::Error::last_os_error());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            // SAFETY: as above.
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            break (started.elapsed(), status, 0);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    while let Ok((at, line)) = lines.recv_timeout(Duration::from_millis(500)) {
        if to_output.is_none() && line.starts_with(KERNEL_PREFIX) {
            to_output = Some(at.duration_since(started));
        }
        got.push(line);
    }
    let exit_code = got
        .iter()
        .find_map(|l| l.strip_prefix(EXIT_MARKER)?.trim().parse().ok())
        .unwrap_or(if libc::WIFEXITED(status) {
            -libc::WEXITSTATUS(status).max(1)
        } else {
            -1
        });
    Ok(Sample {
        to_output,
        to_exit,
        memory: hwm.max(maxrss),
        lines: got,
        exit_code,
        visible,
        cgroup: None,
    })
}
