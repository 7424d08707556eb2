//! `exec`: runs another process in a running container: joins its cgroup and namespaces,
//! takes the process's user, capabilities, rlimits, no_new_privs and the container's seccomp
//! profile, and execs; the process is this caller's child (as runc makes it).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::Process;

use crate::error::{Error, Result};
use crate::state::Status;
use crate::sync::{Channel, Message};

/// Inputs of [`exec`].
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub root: PathBuf,
    pub id: String,
    /// The process to run (args, env, cwd, user, capabilities, rlimits, terminal...).
    pub process: Process,
    /// Receives the pty master when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
    /// Gets the host pid of the process.
    pub pid_file: Option<PathBuf>,
    /// Descriptors 3..3+N of the caller stay open in the process.
    pub preserve_fds: u32,
}

/// A started exec'd process: the caller's child.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub pid: Pid,
}

/// Namespaces joined, in order: user first (it grants the rights for the others), mount last
/// (it changes root, and the paths opened before it are the host's).
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Opens init's namespaces that differ from this process's own.
fn open_namespaces(pid: i32) -> Result<Vec<(CloneFlags, OwnedFd)>> {
    let mut out = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let ours = format!("/proc/self/ns/{name}");
        let their_ino = std::fs::metadata(&theirs)
            .map_err(|e| Error::io(&theirs, e))?
            .ino();
        if std::fs::metadata(&ours).is_ok_and(|m| m.ino() == their_ino) {
            continue;
        }
        let fd = nix::fcntl::open(
            &theirs,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::sys("open namespace", &theirs, e))?;
        // SAFETY: `open` just returned this descriptor; nothing else owns it.
        out.push((flag, unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    Ok(out)
}

/// Starts the process in container `opts.id`; returns once it exec'd (or fails with the
/// reason it could not). Forks: the caller must be single-threaded.
pub fn exec(opts: &ExecOptions) -> Result<Started> {
    let st = crate::container::state(&opts.root, &opts.id)?;
    if !matches!(st.oci.status, Status::Running | Status::Created) {
        return Err(Error::WrongState {
            id: opts.id.clone(),
            status: st.oci.status.to_string(),
            action: "exec",
        });
    }
    let process = &opts.process;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::field("process.args", "empty"));
    }
    let terminal = process.terminal().unwrap_or(false);
    let console = match (&opts.console_socket, terminal) {
        (Some(socket), true) => Some(crate::console::connect(socket)?),
        (None, true) => {
            return Err(Error::field(
                "process.terminal",
                "a terminal needs --console-socket",
            ));
        }
        _ => None,
    };
    let caps = crate::process::CapabilitySets::from_spec(process.capabilities().as_ref())?;
    caps.warn_unraisable_ambient();
    let spec = crate::spec::load_bundle(&st.oci.bundle)?.spec;
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => Some(crate::seccomp::compile(profile)?),
        None => None,
    };
    let joins = open_namespaces(st.oci.pid)?;
    let (runtime_end, child_end) = crate::sync::pair()?;
    let setup = ChildSetup {
        cgroup_path: &st.cgroup_path,
        joins: &joins,
        process,
        caps: &caps,
        seccomp: seccomp.as_ref(),
        console: console.as_ref(),
        preserve_fds: opts.preserve_fds,
    };
    let Some(helper) = crate::container::clone3(CloneFlags::empty())? else {
        drop(runtime_end);
        helper_main(&child_end, &setup);
    };
    drop(child_end);
    drop(console);
    drop(joins);
    let started = collect(&runtime_end, helper);
    let _ = waitpid(helper, None);
    let pid = started?;
    if let Some(pid_file) = &opts.pid_file {
        crate::container::write_pid_file(pid_file, pid)?;
    }
    Ok(Started { pid })
}

/// Reads the helper's report: the process's pid, then EOF once it exec'd (the channel is
/// close-on-exec) or its failure.
fn collect(channel: &Channel, helper: Pid) -> Result<Pid> {
    let pid = match channel.recv()? {
        Some(Message::Pid(pid)) => Pid::from_raw(pid),
        Some(Message::Failed(reason)) => return Err(Error::Init(reason)),
        Some(other) => return Err(Error::Init(format!("unexpected message {other:?}"))),
        None => {
            return Err(Error::Init(format!(
                "exec helper {helper} exited before starting the process"
            )));
        }
    };
    match channel.recv()? {
        None => Ok(pid),
        Some(Message::Failed(reason)) => {
            let _ = waitpid(pid, None);
            Err(Error::Init(reason))
        }
        Some(other) => Err(Error::Init(format!("unexpected message {other:?}"))),
    }
}

struct ChildSetup<'a> {
    cgroup_path: &'a std::path::Path,
    joins: &'a [(CloneFlags, OwnedFd)],
    process: &'a Process,
    caps: &'a crate::process::CapabilitySets,
    seccomp: Option<&'a crate::seccomp::CompiledSeccomp>,
    console: Option<&'a OwnedFd>,
    preserve_fds: u32,
}

/// The helper: joins the cgroup and the namespaces, then clones the process as a sibling
/// (CLONE_PARENT: the runtime's child, in the container's pid namespace) and exits.
fn helper_main(channel: &Channel, setup: &ChildSetup) -> ! {
    let result = crate::cgroups::join_existing(setup.cgroup_path)
        .and_then(|()| crate::namespaces::enter(setup.joins, CloneFlags::empty()))
        .and_then(|()| crate::container::clone3(CloneFlags::CLONE_PARENT));
    let code = match result {
        Ok(None) => process_main(channel, setup),
        Ok(Some(pid)) => match channel.send(&Message::Pid(pid.as_raw())) {
            Ok(()) => 0,
            Err(_) => 1,
        },
        Err(e) => {
            let _ = channel.send(&Message::Failed(e.to_string()));
            1
        }
    };
    // SAFETY: _exit ends the forked helper without running the runtime's destructors.
    unsafe { libc::_exit(code) }
}

/// The process: identity, limits and seccomp, then the exec. Returns only on failure.
fn process_main(channel: &Channel, setup: &ChildSetup) -> i32 {
    let err = match prepare(setup) {
        Ok(exec) => crate::process::exec(&exec),
        Err(e) => e,
    };
    let _ = channel.send(&Message::Failed(err.to_string()));
    127
}

fn prepare(setup: &ChildSetup) -> Result<crate::process::Exec> {
    let process = setup.process;
    if let Some(console) = setup.console {
        crate::console::attach_pty(console)?;
    }
    if let Some(rlimits) = process.rlimits() {
        crate::process::set_rlimits(rlimits)?;
    }
    let held = crate::process::must_hold_sys_admin(process, setup.caps, setup.seccomp.is_some());
    crate::process::become_user(process, setup.caps, held)?;
    if let Some(umask) = process.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    nix::unistd::chdir(process.cwd()).map_err(|e| Error::sys("chdir", process.cwd(), e))?;
    let exec = crate::process::prepare_exec(process)?;
    if process.no_new_privileges().unwrap_or(false) {
        crate::process::set_no_new_privs()?;
    }
    crate::init::close_inherited_fds(3 + setup.preserve_fds)?;
    crate::init::install_seccomp_last(setup.seccomp, setup.caps, held)?;
    Ok(exec)
}

/// `exec` without `--detach`: waits for the process (signals to the caller are passed on)
/// and returns its exit code as a shell reports it.
pub fn wait(started: Started) -> Result<i32> {
    crate::forward::forward_to(started.pid)?;
    loop {
        match waitpid(started.pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(status) => return Ok(crate::container::exit_code(status)),
            Err(e) => return Err(Error::sys("waitpid", format!("pid {}", started.pid), e)),
        }
    }
}
