//! The container lifecycle: create, start, state, kill, delete, pause/resume, stats, pids and
//! the list of containers under a root. `create` unwinds everything it made when it fails.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::cgroup_driver::CgroupDriver;
use crate::cgroups::Cgroup;
use crate::error::{Error, Result};
use crate::init::InitArgs;
use crate::namespaces::Namespaces;
use crate::state::{ContainerState, EXEC_FIFO, OciState, Status, container_dir};
use crate::sync::{Channel, Message};

/// Inputs of `create`.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    /// Descriptors 3..3+N of the caller pass to the container's process (conmon's
    /// `--preserve-fds`); every other inherited descriptor is closed at exec.
    pub preserve_fds: u32,
    /// Place the cgroup through systemd (`--systemd-cgroup`): the cgroupsPath is then
    /// `slice:prefix:name`; later commands read the driver from the state.
    pub systemd_cgroup: bool,
}

/// A created container, waiting for `start`.
#[derive(Debug)]
pub struct Created {
    pub pid: Pid,
    pub state: ContainerState,
}

/// Undoes a half-made container on drop: kills init, removes the cgroup and the state dir.
/// Mounts need no undo: they live in init's mount namespace and vanish with it.
struct Unwind {
    state_dir: Option<PathBuf>,
    cgroup: Option<(PathBuf, CgroupDriver)>,
    child: Option<Pid>,
}

impl Unwind {
    fn disarm(mut self) {
        self.state_dir = None;
        self.cgroup = None;
        self.child = None;
    }
}

impl Drop for Unwind {
    fn drop(&mut self) {
        if let Some(pid) = self.child.take() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if let Some((path, driver)) = self.cgroup.take() {
            // Init is reaped: the directories are empty unless a hook's process lingers, and
            // then libcgroups kills it.
            if let Err(e) = crate::cgroups::remove_stopped(&path, &driver) {
                tracing::warn!("unwinding create: {e}");
            }
        }
        if let Some(dir) = self.state_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// fork() with namespace flags: the child starts inside the new namespaces (pid 1 of a new
/// pid namespace) without an intermediate process.
pub(crate) fn clone3(flags: nix::sched::CloneFlags) -> Result<Option<Pid>> {
    let mut args = CloneArgs {
        // A bit set: reinterpreted as unsigned, never sign-extended.
        flags: u64::from(flags.bits().cast_unsigned()),
        // With CLONE_PARENT the kernel wants 0 and uses the caller's own exit signal.
        exit_signal: if flags.contains(nix::sched::CloneFlags::CLONE_PARENT) {
            0
        } else {
            libc::SIGCHLD as u64
        },
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork: the child gets a
    // copy of this single-threaded process's memory and continues from here.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        -1 => Err(Error::sys(
            "clone3",
            format!("{flags:?}"),
            nix::errno::Errno::last(),
        )),
        0 => Ok(None),
        pid => i32::try_from(pid)
            .map(|pid| Some(Pid::from_raw(pid)))
            .map_err(|_| Error::Init(format!("clone3 returned {pid}, which is not a pid"))),
    }
}

/// [`clone3`] for init, inside the pid namespace `pid_join` when the spec joins one by path:
/// setns on a pid namespace moves only later children, so the runtime joins it around the
/// clone and goes back to its own (its hooks must not start in the container's).
fn clone_init(flags: nix::sched::CloneFlags, pid_join: Option<&OwnedFd>) -> Result<Option<Pid>> {
    let Some(target) = pid_join else {
        return clone3(flags);
    };
    let pid_ns = crate::namespaces::PidForChildren::enter(target)?;
    let cloned = clone3(flags);
    if let Ok(None) = cloned {
        return cloned;
    }
    if let Err(e) = pid_ns.leave() {
        if let Ok(Some(pid)) = cloned {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        return Err(e);
    }
    cloned
}

fn state_json(state: &OciState) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

/// What `create` checked in the spec before it made anything.
struct Checked<'a> {
    process: &'a oci_spec::runtime::Process,
    caps: crate::process::CapabilitySets,
    seccomp: Option<crate::seccomp::CompiledSeccomp>,
}

/// The spec's prestart and createRuntime hooks, which the runtime runs when init asks.
struct RuntimeHooks {
    prestart: Vec<oci_spec::runtime::Hook>,
    create_runtime: Vec<oci_spec::runtime::Hook>,
}

impl RuntimeHooks {
    fn from_spec(hooks: Option<&oci_spec::runtime::Hooks>) -> Self {
        #[allow(deprecated)]
        let prestart = hooks.and_then(|h| h.prestart().clone()).unwrap_or_default();
        let create_runtime = hooks
            .and_then(|h| h.create_runtime().clone())
            .unwrap_or_default();
        RuntimeHooks {
            prestart,
            create_runtime,
        }
    }

    fn is_empty(&self) -> bool {
        self.prestart.is_empty() && self.create_runtime.is_empty()
    }

    fn run(&self, state_json: &[u8]) -> Result<()> {
        crate::hooks::run_all("prestart", &self.prestart, state_json)
            .and_then(|()| crate::hooks::run_all("createRuntime", &self.create_runtime, state_json))
    }
}

/// Creates the container: init is set up completely and blocks until [`start`].
///
/// The stages, each unwound by [`Unwind`] when a later one fails: check the spec, make the
/// state dir, spawn init, put it in its cgroup, let it build the container until it is ready,
/// write the state.
///
/// Forks: the calling process must be single-threaded (as the `berth-runtime` binary is).
pub fn create(opts: &CreateOptions) -> Result<Created> {
    tracing::debug!("create: begin");
    let dir = container_dir(&opts.root, &opts.id)?;
    let bundle = crate::spec::load_bundle(&opts.bundle)?;
    let spec = &bundle.spec;
    let checked = check_spec(opts, spec)?;
    tracing::debug!("create: spec loaded");
    let namespaces = Namespaces::from_spec(spec);
    let mut joins = namespaces.open_joins()?;
    let pid_join = crate::namespaces::take_pid_join(&mut joins);
    let (cgroup_path, cgroup_driver) =
        crate::cgroups::placement(spec, &opts.id, opts.systemd_cgroup)?;
    let mut unwind = make_state_dir(opts, &dir)?;
    let (cgroup_dirs, unified_cgroup_dir) = crate::cgroups::container_dirs(&cgroup_path);
    tracing::debug!("create: state dir made");
    let exec_fifo = open_exec_fifo(&dir)?;
    let console = match (
        &opts.console_socket,
        checked.process.terminal().unwrap_or(false),
    ) {
        (Some(socket), true) => Some(crate::console::connect(socket)?),
        _ => None,
    };
    let hooks = spec.hooks().as_ref();
    let runtime_hooks = RuntimeHooks::from_spec(hooks);
    let (runtime_end, init_end) = crate::sync::pair()?;
    let new_user_ns = namespaces
        .new
        .contains(nix::sched::CloneFlags::CLONE_NEWUSER);
    unwind.cgroup = Some((cgroup_path.clone(), cgroup_driver.clone()));
    // On v1 init makes its cgroup and moves itself in, unless it starts in a new user
    // namespace, where it cannot write the host's cgroup files. The limits are applied
    // (in `place_in_cgroup`) while init builds its root filesystem; it runs nothing of the
    // container's before they are.
    let join_cgroup_itself =
        !new_user_ns && unified_cgroup_dir.is_none() && !cgroup_dirs.is_empty();
    tracing::debug!("create: cgroup dirs made");
    let init_args = InitArgs {
        spec,
        rootfs: &bundle.rootfs,
        channel: init_end,
        exec_fifo,
        joins,
        unshare: namespaces.unshare_flags(),
        new_user_ns,
        in_user_ns: namespaces.has_user(),
        cgroup_dirs,
        unified_cgroup_dir,
        no_pivot: opts.no_pivot,
        seccomp: checked.seccomp,
        caps: checked.caps,
        console,
        runtime_hooks: !runtime_hooks.is_empty(),
        join_cgroup_itself,
        cgroup_path: cgroup_path.clone(),
        preserve_fds: opts.preserve_fds,
    };
    let (pid, runtime_end) = spawn_init(
        namespaces.clone_flags(),
        pid_join.as_ref(),
        runtime_end,
        init_args,
    )?;
    unwind.child = Some(pid);
    // The state is built while init works, off the path to Go.
    let mut state = initial_state(opts, &bundle, pid, (&cgroup_path, &cgroup_driver))?;
    let creating_json = state_json(&state.oci);
    let cgroup = Cgroup::open(&cgroup_path, &cgroup_driver)?;
    if join_cgroup_itself {
        expect_cgroup_ready(&runtime_end)?;
        cgroup.apply(spec)?;
    } else {
        cgroup.enter_and_apply(pid, spec)?;
    }
    if new_user_ns {
        crate::namespaces::write_id_maps(pid, spec)?;
    }
    if let Some(score) = checked.process.oom_score_adj() {
        let path = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&path, score.to_string()).map_err(|e| Error::io(path, e))?;
    }
    wait_ready(
        &runtime_end,
        pid,
        &creating_json,
        &runtime_hooks,
        &mut unwind,
    )?;
    tracing::debug!("create: init ready");
    state.oci.status = Status::Created;
    state.save(&dir)?;
    if let Some(pid_file) = &opts.pid_file {
        write_pid_file(pid_file, pid)?;
    }
    unwind.disarm();
    Ok(Created { pid, state })
}

/// The checks made before anything exists: a process, a console socket for a terminal, the
/// capability sets and the seccomp profile.
fn check_spec<'a>(opts: &CreateOptions, spec: &'a oci_spec::runtime::Spec) -> Result<Checked<'a>> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::field("process", "missing"))?;
    if process.terminal().unwrap_or(false) && opts.console_socket.is_none() {
        return Err(Error::field(
            "process.terminal",
            "a terminal needs --console-socket",
        ));
    }
    if process.apparmor_profile().is_some() || process.selinux_label().is_some() {
        tracing::warn!("apparmor/selinux labels are ignored: this host enforces neither");
    }
    let caps = crate::process::CapabilitySets::from_spec(process.capabilities().as_ref())?;
    caps.warn_unraisable_ambient();
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => Some(crate::seccomp::compile(profile)?),
        None => None,
    };
    Ok(Checked {
        process,
        caps,
        seccomp,
    })
}

/// Makes the container's state dir, which names it (a second create of the id fails here),
/// and the [`Unwind`] that removes it again.
fn make_state_dir(opts: &CreateOptions, dir: &Path) -> Result<Unwind> {
    std::fs::create_dir_all(&opts.root).map_err(|e| Error::io(&opts.root, e))?;
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::AlreadyExists(opts.id.clone()));
        }
        Err(e) => return Err(Error::io(dir, e)),
    }
    Ok(Unwind {
        state_dir: Some(dir.to_path_buf()),
        cgroup: None,
        child: None,
    })
}

/// Makes the exec FIFO in the state dir, which init blocks on until `start` writes to it.
fn open_exec_fifo(dir: &Path) -> Result<OwnedFd> {
    let fifo_path = dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::sys("mkfifo", &fifo_path, e))?;
    // Read-write: init's reads block (a writer exists) instead of seeing EOF, and a user
    // namespace's root, which may not open files in the state dir, needs no path.
    let fifo_fd = nix::fcntl::open(
        &fifo_path,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("open", &fifo_path, e))?;
    // SAFETY: `open` just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fifo_fd) })
}

/// Clones init, which runs [`crate::init::run`] and never comes back here. The runtime keeps
/// its end of the channel and closes its copies of what it handed to init.
fn spawn_init(
    flags: nix::sched::CloneFlags,
    pid_join: Option<&OwnedFd>,
    runtime_end: Channel,
    args: InitArgs<'_>,
) -> Result<(Pid, Channel)> {
    let Some(pid) = clone_init(flags, pid_join)? else {
        drop(runtime_end);
        crate::init::run(args);
    };
    tracing::debug!("create: cloned");
    drop(args);
    Ok((pid, runtime_end))
}

/// The state `create` records, with status Creating until init is ready.
fn initial_state(
    opts: &CreateOptions,
    bundle: &crate::spec::Bundle,
    pid: Pid,
    (cgroup_path, cgroup_driver): (&Path, &CgroupDriver),
) -> Result<ContainerState> {
    let spec = &bundle.spec;
    let pid_start_time = crate::sys::proc_stat::read(pid.as_raw())
        .map(|s| s.start_time)
        .ok_or_else(|| Error::Init("init exited before it was set up".into()))?;
    Ok(ContainerState {
        oci: OciState {
            oci_version: spec.version().clone(),
            id: opts.id.clone(),
            pid: pid.as_raw(),
            status: Status::Creating,
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: crate::state::rfc3339_now(),
            owner: String::new(),
            annotations: spec.annotations().clone().unwrap_or_default(),
        },
        pid_start_time,
        cgroup_path: cgroup_path.to_path_buf(),
        cgroup_driver: cgroup_driver.clone(),
        hooks: spec
            .hooks()
            .as_ref()
            .filter(|h| h.poststart().is_some() || h.poststop().is_some())
            .map(|h| {
                let mut kept = oci_spec::runtime::Hooks::default();
                kept.set_poststart(h.poststart().clone());
                kept.set_poststop(h.poststop().clone());
                kept
            }),
    })
}

/// Waits for init to have made its cgroup v1 directories and moved in.
fn expect_cgroup_ready(runtime_end: &Channel) -> Result<()> {
    match runtime_end.recv()? {
        Some(Message::CgroupReady) => Ok(()),
        Some(Message::Failed(reason)) => Err(Error::Init(reason)),
        Some(other) => Err(Error::Init(format!("unexpected message {other:?}"))),
        None => Err(Error::Init("init exited during setup".into())),
    }
}

/// Tells init to go on, runs the runtime's hooks when it asks, and returns once it is ready.
fn wait_ready(
    runtime_end: &Channel,
    pid: Pid,
    creating_json: &[u8],
    hooks: &RuntimeHooks,
    unwind: &mut Unwind,
) -> Result<()> {
    if let Err(send_err) = runtime_end.send(&Message::Go(creating_json.to_vec())) {
        // Init does not wait for Go before building its root: it may have failed already,
        // and its reason is queued on the socket.
        return Err(match runtime_end.recv() {
            Ok(Some(Message::Failed(reason))) => Error::Init(reason),
            _ => send_err,
        });
    }
    loop {
        match runtime_end.recv()? {
            Some(Message::RunHooks) => {
                if let Err(e) = hooks.run(creating_json) {
                    let _ = runtime_end.send(&Message::Failed(e.to_string()));
                    return Err(e);
                }
                runtime_end.send(&Message::HooksDone)?;
            }
            Some(Message::Ready) => return Ok(()),
            Some(Message::Failed(reason)) => return Err(Error::Init(reason)),
            Some(other) => return Err(Error::Init(format!("unexpected message {other:?}"))),
            None => {
                let status = waitpid(pid, None).ok();
                unwind.child = None;
                return Err(Error::Init(format!(
                    "init exited during setup ({status:?})"
                )));
            }
        }
    }
}

pub(crate) fn write_pid_file(path: &Path, pid: Pid) -> Result<()> {
    // Through a rename: conmon reads the file as soon as it appears. Not fsynced: it means
    // nothing after a reboot.
    let bytes = pid.to_string();
    crate::sys::fs::atomic_write_with(path, bytes.as_bytes(), crate::sys::fs::VOLATILE)
        .map_err(|e| Error::io(path, e))
}

/// The state of `id` with its live status.
pub fn state(root: &Path, id: &str) -> Result<ContainerState> {
    let mut state = ContainerState::load(root, id)?;
    state.refresh_status(&container_dir(root, id)?);
    Ok(state)
}

/// The poststart or poststop hooks recorded at create.
fn recorded_hooks(
    state: &ContainerState,
    pick: fn(&oci_spec::runtime::Hooks) -> &Option<Vec<oci_spec::runtime::Hook>>,
) -> Option<Vec<oci_spec::runtime::Hook>> {
    state.hooks.as_ref().and_then(|h| pick(h).clone())
}

/// Releases a created container's init to exec the process, then runs poststart hooks.
pub fn start(root: &Path, id: &str) -> Result<ContainerState> {
    let mut st = state(root, id)?;
    if st.oci.status != Status::Created {
        return Err(Error::WrongState {
            id: id.to_string(),
            status: st.oci.status.to_string(),
            action: "start",
        });
    }
    let fifo = container_dir(root, id)?.join(EXEC_FIFO);
    let fd = nix::fcntl::open(
        &fifo,
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("open", &fifo, e))?;
    // SAFETY: `open` just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::unistd::write(&fd, b"0").map_err(|e| Error::sys("write", &fifo, e))?;
    drop(fd);
    std::fs::remove_file(&fifo).map_err(|e| Error::io(&fifo, e))?;
    st.oci.status = Status::Running;
    if let Some(hooks) = recorded_hooks(&st, |h| h.poststart()) {
        // The spec: a failing poststart hook is logged, the container keeps running.
        if let Err(e) = crate::hooks::run_all("poststart", &hooks, &state_json(&st.oci)) {
            tracing::warn!("{e}");
        }
    }
    Ok(st)
}

/// Parses `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(text: &str) -> Result<Signal> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::UnknownSignal(text.to_string()));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse()
        .map_err(|_| Error::UnknownSignal(text.to_string()))
}

/// Sends `signal` to init (or, with `all`, to every process of the cgroup).
pub fn kill(root: &Path, id: &str, signal: Signal, all: bool) -> Result<()> {
    let st = state(root, id)?;
    if st.oci.status == Status::Stopped {
        return Err(Error::WrongState {
            id: id.to_string(),
            status: st.oci.status.to_string(),
            action: "kill",
        });
    }
    if all {
        for pid in Cgroup::open(&st.cgroup_path, &st.cgroup_driver)?.pids()? {
            let _ = nix::sys::signal::kill(pid, signal);
        }
        return Ok(());
    }
    nix::sys::signal::kill(Pid::from_raw(st.oci.pid), signal)
        .map_err(|e| Error::sys("kill", format!("pid {}", st.oci.pid), e))
}

/// Deletes a container: a stopped or created one always, a running or paused one only with
/// `force` (SIGKILL first). Removes its cgroup and state dir and runs poststop hooks.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    let st = state(root, id)?;
    let dir = container_dir(root, id)?;
    match st.oci.status {
        Status::Stopped => {}
        Status::Created | Status::Creating => {
            let _ = nix::sys::signal::kill(Pid::from_raw(st.oci.pid), Signal::SIGKILL);
            crate::sys::pidfd::wait_exit(st.oci.pid, Duration::from_secs(10));
        }
        Status::Running | Status::Paused if force => {
            let cgroup = Cgroup::open(&st.cgroup_path, &st.cgroup_driver)?;
            let _ = nix::sys::signal::kill(Pid::from_raw(st.oci.pid), Signal::SIGKILL);
            if st.oci.status == Status::Paused {
                // A frozen task cannot die until it is thawed.
                cgroup.freeze(false)?;
            }
            crate::sys::pidfd::wait_exit(st.oci.pid, Duration::from_secs(10));
        }
        status => {
            return Err(Error::WrongState {
                id: id.to_string(),
                status: status.to_string(),
                action: "delete without --force",
            });
        }
    }
    crate::cgroups::remove_stopped(&st.cgroup_path, &st.cgroup_driver)?;
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    if let Some(hooks) = recorded_hooks(&st, |h| h.poststop()) {
        let mut stopped = st.oci.clone();
        stopped.status = Status::Stopped;
        if let Err(e) = crate::hooks::run_all("poststop", &hooks, &state_json(&stopped)) {
            tracing::warn!("{e}");
        }
    }
    Ok(())
}

/// Freezes (`pause`) or thaws (`resume`) the container's processes.
pub fn set_paused(root: &Path, id: &str, paused: bool) -> Result<()> {
    let st = state(root, id)?;
    let allowed = if paused {
        matches!(st.oci.status, Status::Running | Status::Created)
    } else {
        st.oci.status == Status::Paused
    };
    if !allowed {
        return Err(Error::WrongState {
            id: id.to_string(),
            status: st.oci.status.to_string(),
            action: if paused { "pause" } else { "resume" },
        });
    }
    Cgroup::open(&st.cgroup_path, &st.cgroup_driver)?.freeze(paused)
}

/// `events --stats`: runc's `{"type":"stats","id":…,"data":…}` with libcgroups' usage.
pub fn stats(root: &Path, id: &str) -> Result<serde_json::Value> {
    let st = state(root, id)?;
    let data = Cgroup::open(&st.cgroup_path, &st.cgroup_driver)?.stats_json()?;
    Ok(serde_json::json!({"type": "stats", "id": id, "data": data}))
}

/// The host pids of the container's processes.
pub fn pids(root: &Path, id: &str) -> Result<Vec<Pid>> {
    let st = state(root, id)?;
    Cgroup::open(&st.cgroup_path, &st.cgroup_driver)?.pids()
}

/// Every container under `root` with its live status, sorted by id.
pub fn list(root: &Path) -> Result<Vec<ContainerState>> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(root, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str() else { continue };
        // A directory without state.json is a create in progress: not a container yet.
        if let Ok(st) = state(root, id) {
            out.push(st);
        }
    }
    out.sort_by(|a, b| a.oci.id.cmp(&b.oci.id));
    Ok(out)
}

/// How a waited-for process ended, as a shell reports it: its code, or 128 + the signal.
pub fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 255,
    }
}

/// `run`: create, start, wait for the process (it is this process's child; signals sent to
/// this process are passed on to it), delete. Returns the exit code.
pub fn run(opts: &CreateOptions) -> Result<i32> {
    let created = create(opts)?;
    if let Err(e) =
        crate::forward::forward_to(created.pid).and_then(|()| start(&opts.root, &opts.id))
    {
        let _ = delete(&opts.root, &opts.id, true);
        return Err(e);
    }
    let status = loop {
        match waitpid(created.pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    let code = match status {
        Ok(s) => exit_code(s),
        Err(e) => {
            let _ = delete(&opts.root, &opts.id, true);
            return Err(Error::sys("waitpid", format!("pid {}", created.pid), e));
        }
    };
    tracing::debug!("run: process exited");
    delete(&opts.root, &opts.id, true)?;
    tracing::debug!("run: deleted");
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let pid = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), 3);
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            137
        );
    }
}
