//! The container side of `berth compare`: the workload run through berth's runtime library, as
//! `berth run` does, with its output timed and its memory cgroup's peak read.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use berth_images::bundle::RunOverrides;
use berth_vm::console::read_lines;

use super::{CPUS, KERNEL_PREFIX, MEMORY_MB, Sample, cmdline, probe_argv};
use crate::Context;
use crate::container::layout::Paths;
use crate::container::setup;

/// Runs `argv` once as container number `n` of this process; with `probe`, also checks whether
/// the workload's pid shows on the host.
pub(crate) fn run(
    ctx: &Context,
    image: &str,
    argv: &[String],
    n: u32,
    probe: bool,
) -> anyhow::Result<Sample> {
    let id = format!("compare-{}-{n}", std::process::id());
    let started = Instant::now();
    let overrides = RunOverrides {
        args: Some(argv.to_vec()),
        entrypoint: Some(vec![]),
        hostname: Some(id.clone()),
        cgroups_path: Some(PathBuf::from(format!("/berth/{id}"))),
        // The VM's size, as limits: the same machine both ways.
        memory_bytes: Some(i64::from(MEMORY_MB) << 20),
        cpus: Some(f64::from(CPUS)),
        ..RunOverrides::default()
    };
    let security = berth_runtime::security::SecurityOptions::default();
    let request = setup::Request {
        id: &id,
        name: &id,
        image,
        remove: true,
        detached: false,
        security: &security,
        mounts: &[],
    };
    let (guard, _meta) = setup::prepare(&ctx.data_dir, &request, &overrides)?;
    let paths = Paths::new(&ctx.data_dir, &id);
    // The container's stdout goes into a pipe we read: fd 1 points at it while the runtime
    // creates the container, which inherits it.
    let (read_end, write_end) = nix::unistd::pipe().context("pipe")?;
    let saved = nix::unistd::dup(1).context("dup")?;
    nix::unistd::dup2(write_end.as_raw_fd(), 1).context("dup2")?;
    let created = berth_runtime::create(&berth_runtime::CreateOptions {
        root: paths.runtime_root.clone(),
        id: id.clone(),
        bundle: paths.dir.clone(),
        pid_file: None,
        console_socket: None,
        no_pivot: false,
        preserve_fds: 0,
        systemd_cgroup: false,
    });
    nix::unistd::dup2(saved, 1).context("dup2")?;
    let _ = nix::unistd::close(saved);
    drop(write_end);
    let created = created?;
    let lines = read_lines(fs::File::from(read_end));
    berth_runtime::start(&paths.runtime_root, &id)?;
    let mut got = Vec::new();
    let mut to_output = None;
    let mut visible = None;
    let mut cgroup = None;
    let pid = created.pid.as_raw();
    if probe {
        // Wait for the workload's first line, then for its pid's cmdline to become the probe's.
        if let Ok((_, line)) = lines.recv_timeout(Duration::from_secs(10)) {
            got.push(line);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut seen = false;
        while Instant::now() < deadline {
            if cmdline(pid).as_deref() == Some(&probe_argv()[..]) {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        visible = Some(seen);
        // Read the limits back from the cgroup files while the workload is alive.
        cgroup = berth_runtime::explain::cgroup_of(pid).ok();
    }
    let code = loop {
        match nix::sys::wait::waitpid(created.pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(status) => break berth_runtime::container::exit_code(status),
            Err(e) => return Err(e).context("waiting for the container"),
        }
    };
    let to_exit = started.elapsed();
    let memory = cgroup_peak(&id);
    berth_runtime::delete(&paths.runtime_root, &id, true)?;
    drop(guard);
    while let Ok((at, line)) = lines.recv_timeout(Duration::from_secs(2)) {
        if to_output.is_none() && line.starts_with(KERNEL_PREFIX) {
            to_output = Some(at.duration_since(started));
        }
        got.push(line);
    }
    if !probe && to_output.is_none() {
        bail!("the container printed no workload output: {got:?}");
    }
    Ok(Sample {
        to_output,
        to_exit,
        memory,
        lines: got,
        exit_code: code,
        visible,
        cgroup,
    })
}

fn cgroup_peak(id: &str) -> u64 {
    let candidates = [
        format!("/sys/fs/cgroup/memory/berth/{id}/memory.max_usage_in_bytes"),
        format!("/sys/fs/cgroup/berth/{id}/memory.peak"),
    ];
    candidates
        .iter()
        .find_map(|p| fs::read_to_string(p).ok()?.trim().parse().ok())
        .unwrap_or(0)
}
