//! The container's init, run in the cloned child: namespaces, root filesystem, hooks, the
//! process's identity, then a wait on the exec FIFO until `start`, and the exec.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Spec;

use crate::error::{Error, Result};
use crate::process::CapabilitySets;
use crate::rootfs::RootfsContext;
use crate::seccomp::CompiledSeccomp;
use crate::sync::{Channel, Message};
use crate::syscall::LinuxSyscall;

/// Everything init needs, prepared by the runtime before the clone.
#[derive(Debug)]
pub(crate) struct InitArgs<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub channel: Channel,
    /// The exec FIFO opened read-write: reading blocks until `start` writes.
    pub exec_fifo: OwnedFd,
    pub joins: Vec<(CloneFlags, OwnedFd)>,
    pub unshare: CloneFlags,
    pub new_user_ns: bool,
    pub in_user_ns: bool,
    pub cgroup_dirs: Vec<(String, PathBuf)>,
    pub unified_cgroup_dir: Option<PathBuf>,
    pub no_pivot: bool,
    pub seccomp: Option<CompiledSeccomp>,
    pub caps: CapabilitySets,
    /// Connected `--console-socket`, when process.terminal is set.
    pub console: Option<OwnedFd>,
    /// Whether the runtime has prestart/createRuntime hooks to run mid-way.
    pub runtime_hooks: bool,
    /// Init makes its cgroup v1 directories and moves in by itself (not when it starts in a
    /// new user namespace, where it may not write the host's cgroup files).
    pub join_cgroup_itself: bool,
    pub cgroup_path: PathBuf,
    /// Inherited descriptors 3..3+N stay open across the exec.
    pub preserve_fds: u32,
}

/// Runs init; never returns. Every failure reaches the caller named by its step: over the
/// channel until init reports Ready, on stderr (the container's) after.
pub(crate) fn run(args: InitArgs) -> ! {
    let (exec, state_json) = match setup(&args) {
        Ok(ready) => ready,
        Err(e) => {
            // The runtime reports the reason as create's error; should it be gone already,
            // stderr is all that is left, unless its going is the reason: then the runtime
            // said why itself (its own failure), or was killed.
            if args.channel.send(&Message::Failed(e.to_string())).is_err() && !e.is_runtime_gone() {
                eprintln!("berth-runtime init: {e}");
            }
            // SAFETY: _exit ends the process without running destructors or atexit handlers
            // inherited from the runtime.
            unsafe { libc::_exit(1) }
        }
    };
    // `create` returns as soon as it reads Ready: from here on only stderr reaches anyone.
    let (err, code) = match after_start(&args, &state_json) {
        Ok(()) => (crate::process::exec(&exec), 127),
        Err(e) => (e, 1),
    };
    eprintln!("berth-runtime init: {err}");
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

fn wait_for(channel: &Channel, want: &'static str) -> Result<Message> {
    match channel.recv()? {
        Some(Message::Failed(reason)) => Err(Error::Init(reason)),
        Some(msg) => Ok(msg),
        None => Err(Error::RuntimeGone(want)),
    }
}

/// Everything up to Ready: the container's namespaces, root and process identity. Returns
/// the program to exec and the state JSON for the startContainer hooks.
fn setup(args: &InitArgs) -> Result<(crate::process::Exec, Vec<u8>)> {
    // Die with the runtime while it still supervises creation.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    tracing::debug!("init: started");
    if args.join_cgroup_itself {
        crate::cgroups::create_and_join(&args.cgroup_path, &args.cgroup_dirs)
            .map_err(Error::in_step("joining the cgroup"))?;
        args.channel.send(&Message::CgroupReady)?;
    }
    tracing::debug!("init: in its cgroup");
    // Go says the runtime put init in its cgroup (when init did not join by itself), wrote
    // the id maps and applied the limits; it carries the state for the hooks. Without a
    // reason to wait, init builds its root filesystem meanwhile.
    let mut state_json = None;
    if !args.join_cgroup_itself {
        state_json = Some(wait_for_go(&args.channel)?);
    }
    enter_namespaces(args).map_err(Error::in_step("entering namespaces"))?;
    build_root(args, &mut state_json)?;
    let exec = prepare_process(args, &mut state_json)?;
    let state_json = go_once(&args.channel, &mut state_json)?.clone();
    // The runtime exits as soon as it reads Ready: init must outlive it from before then.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    args.channel.send(&Message::Ready)?;
    Ok((exec, state_json))
}

/// Becomes root of a new user namespace, joins and unshares the rest, names the host.
fn enter_namespaces(args: &InitArgs) -> Result<()> {
    if args.new_user_ns {
        // The maps are written: become the namespace's root.
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| Error::sys("setresgid", "user namespace root (is 0 mapped?)", e))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| Error::sys("setresuid", "user namespace root (is 0 mapped?)", e))?;
    }
    crate::namespaces::enter(&args.joins, args.unshare)?;
    if let Some(hostname) = args.spec.hostname() {
        nix::unistd::sethostname(hostname).map_err(|e| Error::sys("sethostname", hostname, e))?;
    }
    if let Some(domain) = args.spec.domainname() {
        set_domainname(domain)?;
    }
    tracing::debug!("init: namespaces entered");
    Ok(())
}

/// Mounts and devices, the hooks that run before the pivot, the pivot, sysctls, masking.
fn build_root(args: &InitArgs, state_json: &mut Option<Vec<u8>>) -> Result<()> {
    let spec = args.spec;
    let sys = LinuxSyscall;
    let ctx = RootfsContext {
        rootfs: args.rootfs,
        in_user_ns: args.in_user_ns,
        cgroup_dirs: &args.cgroup_dirs,
        unified_cgroup_dir: args.unified_cgroup_dir.as_deref(),
    };
    crate::rootfs::prepare(&sys, spec, &ctx).map_err(Error::in_step("preparing the rootfs"))?;
    if args.join_cgroup_itself {
        crate::cgroups::join_devices(&args.cgroup_dirs)
            .map_err(Error::in_step("joining the devices cgroup"))?;
    }
    tracing::debug!("init: mounts and devices made");
    let hooks = spec.hooks().as_ref();
    let container_hooks = hooks.and_then(|h| h.create_container().as_deref());
    if args.runtime_hooks || container_hooks.is_some() {
        go_once(&args.channel, state_json)?;
    }
    if args.runtime_hooks {
        args.channel.send(&Message::RunHooks)?;
        wait_for(&args.channel, "the runtime's hooks")?;
    }
    if let Some(h) = container_hooks {
        crate::hooks::run_all("createContainer", h, go_once(&args.channel, state_json)?)?;
    }
    crate::rootfs::pivot(&sys, args.rootfs, args.no_pivot)
        .map_err(Error::in_step("pivoting to the rootfs"))?;
    if let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        for (key, value) in sysctls {
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            std::fs::write(&path, value)
                .map_err(|e| Error::io(path, e))
                .map_err(Error::in_step("setting sysctls"))?;
        }
    }
    crate::rootfs::finish(&sys, spec).map_err(Error::in_step("masking paths"))?;
    tracing::debug!("init: root pivoted, paths masked");
    Ok(())
}

fn holds_sys_admin(args: &InitArgs) -> bool {
    args.spec
        .process()
        .as_ref()
        .is_some_and(|p| crate::process::must_hold_sys_admin(p, &args.caps, args.seccomp.is_some()))
}

/// The console, rlimits, user, capabilities, umask, cwd and the program to exec: everything
/// that can fail for the process's sake fails `create`, not `start`.
fn prepare_process(
    args: &InitArgs,
    state_json: &mut Option<Vec<u8>>,
) -> Result<crate::process::Exec> {
    let process = args
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::field("process", "missing"))?;
    if let Some(console) = &args.console {
        // Opening /dev/ptmx goes through the devices cgroup, whose rules the runtime may still
        // be rewriting (deny all, then the allow list): wait until the limits are in.
        go_once(&args.channel, state_json)?;
        crate::console::attach_pty(console).map_err(Error::in_step("attaching the console"))?;
    }
    if let Some(rlimits) = process.rlimits() {
        crate::process::set_rlimits(rlimits).map_err(Error::in_step("setting rlimits"))?;
    }
    crate::process::become_user(process, &args.caps, holds_sys_admin(args))
        .map_err(Error::in_step("setting the user and capabilities"))?;
    if let Some(umask) = process.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    nix::unistd::chdir(process.cwd())
        .map_err(|e| Error::sys("chdir", process.cwd(), e))
        .map_err(Error::in_step("entering the cwd"))?;
    let exec =
        crate::process::prepare_exec(process).map_err(Error::in_step("resolving the program"))?;
    tracing::debug!("init: user and capabilities set");
    if process.no_new_privileges().unwrap_or(false) {
        crate::process::set_no_new_privs().map_err(Error::in_step("setting no_new_privs"))?;
    }
    Ok(exec)
}

/// After `start`: the startContainer hooks, closing what must not leak, and the seccomp
/// filter last.
fn after_start(args: &InitArgs, state_json: &[u8]) -> Result<()> {
    wait_for_start(&args.exec_fifo).map_err(Error::in_step("waiting for start"))?;
    let hooks = args.spec.hooks().as_ref();
    if let Some(h) = hooks.and_then(|h| h.start_container().as_deref()) {
        crate::hooks::run_all("startContainer", h, state_json)?;
    }
    close_inherited_fds(3 + args.preserve_fds)
        .map_err(Error::in_step("closing inherited descriptors"))?;
    install_seccomp_last(args.seccomp.as_ref(), &args.caps, holds_sys_admin(args))
}

/// Installs the filter as the very last step before execve, so that nothing the runtime does
/// itself is judged by the container's profile (older allow-lists lack close_range, clone3
/// and the like). Only a capset, when CAP_SYS_ADMIN was `held` for the install, and the
/// execve follow it.
pub(crate) fn install_seccomp_last(
    filters: Option<&CompiledSeccomp>,
    caps: &CapabilitySets,
    held: bool,
) -> Result<()> {
    let Some(filters) = filters else {
        return Ok(());
    };
    crate::seccomp::install(filters).map_err(Error::in_step("installing seccomp"))?;
    if held {
        crate::process::release_held(caps)
            .map_err(Error::in_step("dropping capabilities after seccomp"))?;
    }
    Ok(())
}

/// Marks every descriptor from `first` on close-on-exec: whatever the caller left open must
/// not reach the container unless passed on purpose.
pub(crate) fn close_inherited_fds(first: u32) -> Result<()> {
    crate::sys::fd::close_range(first, crate::sys::fd::CloseMode::Cloexec).map_err(|e| {
        Error::sys(
            "close_range",
            "inherited descriptors",
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })
}

fn wait_for_go(channel: &Channel) -> Result<Vec<u8>> {
    match wait_for(channel, "the cgroup")? {
        Message::Go(state) => Ok(state),
        other => Err(Error::Init(format!("expected go, got {other:?}"))),
    }
}

/// The state JSON from Go, waiting for it the first time.
fn go_once<'a>(channel: &Channel, state: &'a mut Option<Vec<u8>>) -> Result<&'a Vec<u8>> {
    if state.is_none() {
        *state = Some(wait_for_go(channel)?);
    }
    state
        .as_ref()
        .ok_or_else(|| Error::Init("no state from the runtime".into()))
}

fn set_domainname(domain: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `domain`, which outlives the call.
    let rc = unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) };
    if rc != 0 {
        return Err(Error::sys(
            "setdomainname",
            domain,
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// Blocks until `start` writes a byte into the exec FIFO.
fn wait_for_start(fifo: &OwnedFd) -> Result<()> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(fifo.as_raw_fd(), &mut byte) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(Error::Init("exec fifo closed without a start".into())),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("read", crate::state::EXEC_FIFO, e)),
        }
    }
}
