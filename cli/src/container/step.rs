//! `berth build`'s RUN steps as containers: the step's command on the overlay the build
//! mounted, run through berth's runtime library with `berth run`'s isolation (own mount, pid,
//! ipc, uts and network namespaces, the default seccomp profile) and the capabilities builds
//! get from Docker and buildah, its output
//! streamed to stderr (stdout stays for `-o json`) and its end kept for the error.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::{Context as _, bail};
use berth_images::bundle::{Network, ProcessSpec, RunOverrides, spec_for, write_bundle};
use berth_images::containerfile::{BuildNetwork, RunOutcome, RunSpec, StepRunner};
use berth_runtime::security::SecurityOptions;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use super::nat;

/// How much of a failed step's output its error repeats.
const TAIL_BYTES: usize = 4096;

/// Capabilities a RUN step gets on top of the runtime's defaults: the set Docker and buildah
/// give builds, without which package managers fail (apt chowns, drops to _apt, chroots).
const BUILD_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Runs RUN steps through berth's runtime library.
#[derive(Debug, Default)]
pub(crate) struct RuntimeStepRunner;

impl StepRunner for RuntimeStepRunner {
    fn run(
        &self,
        step: &RunSpec<'_>,
    ) -> Result<RunOutcome, Box<dyn std::error::Error + Send + Sync>> {
        Ok(run_step(step)?)
    }

    fn cancelled(&self) -> bool {
        interrupted()
    }
}

fn run_step(step: &RunSpec<'_>) -> anyhow::Result<RunOutcome> {
    if interrupted() {
        bail!("the build was interrupted");
    }
    eprintln!("{}", step.title);
    let id = format!("build-{}", &crate::commands::run::random_id()?[..16]);
    // NAT and none both get a namespace made here (loopback up); host shares the host's.
    let network = match step.network {
        BuildNetwork::Host => None,
        mode => Some(nat::StepNetwork::up(&id, step.scratch, mode)?),
    };
    let cwd = berth_runtime::secure_join(step.rootfs, Path::new(step.cwd));
    std::fs::create_dir_all(&cwd).with_context(|| format!("creating WORKDIR {}", step.cwd))?;
    let overrides = RunOverrides {
        hostname: Some("berth-build".into()),
        network: match &network {
            Some(net) => Network::Path(net.netns_path().to_path_buf()),
            None => Network::Host,
        },
        cgroups_path: Some(PathBuf::from(format!("/berth-build/{id}"))),
        ..Default::default()
    };
    let process = ProcessSpec {
        args: step.argv.to_vec(),
        env: step.env.to_vec(),
        workdir: step.cwd.to_string(),
        user: step.user.to_string(),
    };
    let mut spec = spec_for(step.rootfs, &process, &overrides)?;
    let security = SecurityOptions {
        cap_add: BUILD_CAPS.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    berth_runtime::security::apply(&mut spec, &security)?;
    if step.network != BuildNetwork::None {
        nat::bind_resolv_conf(&mut spec, step.scratch)?;
    }
    let bundle = step.scratch.join("bundle");
    write_bundle(&bundle, &spec, step.rootfs)?;
    let outcome = run_container(&step.scratch.join("state"), &id, &bundle);
    if let Some(network) = network {
        network.down()?;
    }
    outcome
}

/// Deletes the container (killing what still runs) however the step ends.
struct Delete<'a> {
    root: &'a Path,
    id: &'a str,
}

impl Drop for Delete<'_> {
    fn drop(&mut self) {
        if self.root.join(self.id).exists()
            && let Err(e) = berth_runtime::delete(self.root, self.id, true)
        {
            eprintln!("berth: removing the RUN step's container {}: {e}", self.id);
        }
    }
}

fn run_container(root: &Path, id: &str, bundle: &Path) -> anyhow::Result<RunOutcome> {
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let _delete = Delete { root, id };
    let created = with_stdio(&writer, || {
        berth_runtime::create(&berth_runtime::CreateOptions {
            root: root.to_path_buf(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            pid_file: None,
            console_socket: None,
            no_pivot: false,
            preserve_fds: 0,
            systemd_cgroup: false,
        })
    })??;
    // Only the container holds the write end now: its end of output is EOF here.
    drop(writer);
    let _step = RunningStep::new(created.pid);
    berth_runtime::start(root, id)?;
    let output_tail = stream(File::from(reader))?;
    let code = loop {
        match nix::sys::wait::waitpid(created.pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(status) => break berth_runtime::container::exit_code(status),
            Err(e) => return Err(e).context("waiting for the RUN step"),
        }
    };
    Ok(RunOutcome {
        exit_code: code,
        output_tail,
    })
}

/// The running step's init, which an interrupt kills; 0 when no step runs.
static STEP_PID: AtomicI32 = AtomicI32::new(0);
/// Set by the first interrupt: no further step starts.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
const INTERRUPTS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
    let pid = STEP_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes plain integers.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Whether Ctrl-C (or SIGTERM, SIGHUP) came while [`Interrupts`] was installed.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// For the length of a build, an interrupt kills the running step (its init, pid 1 of its
/// namespace, would ignore SIGINT) and stops further steps, instead of killing berth: the
/// build then fails normally and removes its mounts, namespaces and directories. Dropping it
/// puts the previous handlers back.
pub(crate) struct Interrupts {
    previous: Vec<(Signal, SigAction)>,
}

impl Interrupts {
    pub(crate) fn install() -> anyhow::Result<Self> {
        let action = SigAction::new(
            SigHandler::Handler(on_interrupt),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut installed = Self {
            previous: Vec::new(),
        };
        for signal in INTERRUPTS {
            // SAFETY: the handler only touches atomics and calls kill, all async-signal-safe.
            let old = unsafe { sigaction(signal, &action) }
                .with_context(|| format!("handling {signal}"))?;
            installed.previous.push((signal, old));
        }
        Ok(installed)
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        for (signal, old) in self.previous.drain(..) {
            // SAFETY: puts back the action this process had before; no handler state is shared.
            let _ = unsafe { sigaction(signal, &old) };
        }
    }
}

/// Marks `pid` as the step an interrupt kills, until dropped.
struct RunningStep;

impl RunningStep {
    fn new(pid: nix::unistd::Pid) -> Self {
        STEP_PID.store(pid.as_raw(), Ordering::Relaxed);
        // An interrupt that came between the check and now still ends the step.
        if interrupted() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        Self
    }
}

impl Drop for RunningStep {
    fn drop(&mut self) {
        STEP_PID.store(0, Ordering::Relaxed);
    }
}

/// Runs `f` (which forks the container's init) with stdin from /dev/null and stdout and stderr
/// on `out`, then puts this process's own stdio back.
fn with_stdio<T>(out: &OwnedFd, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let devnull = File::open("/dev/null").context("open /dev/null")?;
    let saved: Vec<OwnedFd> = (0..3)
        .map(|fd| {
            // SAFETY: 0, 1 and 2 are open for the whole life of the process.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            fd.try_clone_to_owned().context("saving stdio")
        })
        .collect::<anyhow::Result<_>>()?;
    let redirect = |from: i32, to: i32| nix::unistd::dup2(from, to).context("redirecting stdio");
    redirect(devnull.as_raw_fd(), 0)?;
    redirect(out.as_raw_fd(), 1)?;
    redirect(out.as_raw_fd(), 2)?;
    let result = f();
    for (fd, saved) in (0..3).zip(&saved) {
        redirect(saved.as_raw_fd(), fd)?;
    }
    Ok(result)
}

/// Copies the step's output to stderr until every writer is gone; returns its last
/// [`TAIL_BYTES`], from a line start.
fn stream(mut reader: File) -> anyhow::Result<String> {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let mut stderr = std::io::stderr();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the RUN step's output"),
        };
        let _ = stderr.write_all(&buf[..n]);
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * TAIL_BYTES {
            tail.drain(..tail.len() - TAIL_BYTES);
        }
    }
    if tail.len() > TAIL_BYTES {
        let cut = tail.len() - TAIL_BYTES;
        let start = tail[cut..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(cut, |at| cut + at + 1);
        tail.drain(..start);
    }
    Ok(String::from_utf8_lossy(&tail).into_owned())
}
