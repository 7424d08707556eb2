//! Network namespaces: code run on a short-lived thread inside one, the bind-mounted netns file
//! of a container, and the sysctls of a namespace.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::NetError;

/// Joins the netns at `ns` (None: stays where it is). Only ever called on a thread spawned for
/// the purpose: setns moves the calling thread alone, and a pool thread would carry the foreign
/// namespace into whatever task it runs next.
fn enter(ns: Option<&Path>) -> Result<(), NetError> {
    let Some(path) = ns else { return Ok(()) };
    let file = File::open(path).map_err(|e| NetError::io("open netns", path, e))?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetError::io("setns into", path, e.into()))
}

fn spawn_failed(ns: Option<&Path>, e: io::Error) -> NetError {
    NetError::io(
        "spawn a thread for netns",
        ns.unwrap_or(Path::new("(own)")),
        e,
    )
}

fn panicked(ns: Option<&Path>) -> NetError {
    spawn_failed(ns, io::Error::other("the netns thread panicked"))
}

/// Runs `f` on a fresh OS thread inside the netns at `ns`, waiting for it synchronously.
pub(crate) fn run_in<T, F>(ns: Option<&Path>, f: F) -> Result<T, NetError>
where
    F: FnOnce() -> Result<T, NetError> + Send + 'static,
    T: Send + 'static,
{
    let target = ns.map(Path::to_path_buf);
    let thread = std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || enter(target.as_deref()).and_then(|()| f()))
        .map_err(|e| spawn_failed(ns, e))?;
    thread.join().map_err(|_| panicked(ns))?
}

/// Runs `f` on a fresh OS thread inside the netns at `ns`; the async caller's worker thread
/// never changes namespace and is not blocked while `f` runs.
pub(crate) async fn run_in_async<T, F>(ns: Option<&Path>, f: F) -> Result<T, NetError>
where
    F: FnOnce() -> Result<T, NetError> + Send + 'static,
    T: Send + 'static,
{
    let target = ns.map(Path::to_path_buf);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let result = enter(target.as_deref()).and_then(|()| f());
            // The receiver is gone only if the caller was cancelled; nothing to report then.
            let _ = tx.send(result);
        })
        .map_err(|e| spawn_failed(ns, e))?;
    rx.await.map_err(|_| panicked(ns))?
}

/// The path of system tool `name` (`nft`, `conntrack`): the sbin directories first, since
/// the agent may run with a PATH that lacks them; else the bare name, for PATH to resolve.
pub(crate) fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs `program args` inside the netns at `ns` (None: the agent's own) with `input` on its
/// stdin, and returns its output whatever its exit status. Blocking. The child joins the
/// netns between fork and exec, so no thread of the agent ever changes namespace.
pub(crate) fn command_output(
    ns: Option<&Path>,
    program: &Path,
    args: &[&str],
    input: &[u8],
) -> Result<std::process::Output, NetError> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Kept open until spawn returns: the child joins the netns through this descriptor.
    let ns_file = ns
        .map(|p| File::open(p).map_err(|e| NetError::io("open netns", p, e)))
        .transpose()?;
    if let Some(f) = &ns_file {
        let fd = f.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls setns(2),
        // which is async-signal-safe; `fd` stays open in the parent until spawn returns
        // (it is CLOEXEC, so it is still valid in the child until the exec).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| NetError::io("run", program, e))?;
    drop(ns_file);
    // Written from a thread: a large input (thousands of services) would otherwise deadlock
    // against a child that fills its stdout pipe before reading all of stdin.
    let stdin = child.stdin.take();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || match stdin {
        Some(mut s) => s.write_all(&input),
        None => Ok(()),
    });
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::io("wait for", program, e))?;
    let written = writer
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("stdin writer panicked")));
    if let Err(e) = written
        && out.status.success()
    {
        return Err(NetError::io("write the input of", program, e));
    }
    Ok(out)
}

/// Writes `value` to `/proc/sys/<key>` of the calling thread's netns. Returns false, writing
/// nothing, when the key does not exist (e.g. `net/bridge/...` without br_netfilter loaded).
/// Must run on a thread inside the target netns: /proc/sys/net follows the opener's netns.
pub(crate) fn write_sysctl(key: &str, value: &str) -> Result<bool, NetError> {
    let path = Path::new("/proc/sys").join(key);
    match std::fs::write(&path, value) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(NetError::io("write sysctl", path, e)),
    }
}

/// Whether `path` is a mounted namespace file (false when missing or a plain file).
pub(crate) fn is_netns_mount(path: &Path) -> Result<bool, NetError> {
    match nix::sys::statfs::statfs(path) {
        // nsfs is what a bind-mounted namespace file shows.
        Ok(st) => Ok(st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(NetError::io("statfs", path, e.into())),
    }
}

/// Makes `path` a new, empty network namespace that lives as long as the bind mount does.
/// Returns false when it already was one (idempotent attach).
pub(crate) fn create_netns_file(path: &Path) -> Result<bool, NetError> {
    if is_netns_mount(path)? {
        return Ok(false);
    }
    // A plain file may be left by a crash between create and mount; it is reused as the target.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o444)
        .open(path)
        .map_err(|e| NetError::io("create netns file", path, e))?;
    let target = path.to_path_buf();
    // The namespace is created by a thread that exits right after: unshare moves only that
    // thread, and the bind mount (made in the agent's shared mount namespace) keeps it alive.
    run_in(None, move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetError::io("unshare netns for", &target, e.into()))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| NetError::io("bind mount netns onto", &target, e.into()))
    })
    .inspect_err(|_| {
        let _ = std::fs::remove_file(path);
    })?;
    Ok(true)
}

/// Unmounts and removes a container's netns file; missing or unmounted pieces are fine.
pub(crate) fn remove_netns_file(path: &Path) -> Result<(), NetError> {
    // A file may carry more than one mount after an odd crash; a handful of rounds clears it.
    for _ in 0..8 {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(NetError::io("unmount netns", path, e.into())),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io("remove netns file", path, e)),
    }
}

/// The netns file of container `id` under `dir`.
pub(crate) fn netns_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(id)
}
