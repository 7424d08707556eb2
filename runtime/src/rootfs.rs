//! Builds the container's root filesystem in its mount namespace: propagation, the spec's
//! mounts, devices, pivot_root (or chroot), masked and read-only paths, a read-only root.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag, makedev};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::error::{Error, Result};
use crate::syscall::Syscall;

/// What the rootfs code needs besides the spec.
#[derive(Debug)]
pub(crate) struct RootfsContext<'a> {
    /// Absolute path of the rootfs on the host.
    pub rootfs: &'a Path,
    /// mknod is not permitted in a user namespace: host devices are bind-mounted instead.
    pub in_user_ns: bool,
    /// The container's cgroup directories on the host, one per hierarchy, named like the
    /// hierarchy's mount point (`memory`, `cpu,cpuacct`); empty on cgroup v2.
    pub cgroup_dirs: &'a [(String, PathBuf)],
    /// The container's cgroup on the unified hierarchy (v2 only).
    pub unified_cgroup_dir: Option<&'a Path>,
}

/// Devices every container gets, as runc creates them.
const DEFAULT_DEVICES: &[(&str, i64, i64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

const DEFAULT_SYMLINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
];

/// Joins `unsafe_path` to `root`, resolving symlinks as if `root` were `/`, so that no mount
/// target can escape the rootfs through a symlink or `..`. Public so that callers which
/// prepare a mount (seeding a volume from the image's content at its target) resolve the
/// target exactly as the mount will.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> PathBuf {
    let mut resolved = PathBuf::new();
    let mut pending: VecDeque<OsString> = unsafe_path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        match std::fs::read_link(&candidate) {
            Ok(target) if links < 255 => {
                links += 1;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, c) in target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .enumerate()
                {
                    pending.insert(i, c);
                }
            }
            _ => resolved.push(part),
        }
    }
    root.join(resolved)
}

/// Like [`secure_join`] for the parent, with the last component kept as is: the path of a
/// node about to be created (a symlink or device already there must not be followed).
pub(crate) fn secure_join_leaf(root: &Path, unsafe_path: &Path) -> PathBuf {
    match (unsafe_path.parent(), unsafe_path.file_name()) {
        (Some(parent), Some(name)) => secure_join(root, parent).join(name),
        _ => secure_join(root, unsafe_path),
    }
}

/// Mount flags and fs-specific data parsed from a mount's options.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MountOptions {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: String,
    pub bind: bool,
}

/// Splits OCI mount options into flags, propagation flags and data, as mount(8) reads them.
pub(crate) fn parse_options(options: &[String]) -> MountOptions {
    let mut parsed = MountOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: String::new(),
        bind: false,
    };
    for opt in options {
        let (set, flag) = match opt.as_str() {
            "defaults" | "rw" => (false, MsFlags::MS_RDONLY),
            "ro" => (true, MsFlags::MS_RDONLY),
            "nosuid" => (true, MsFlags::MS_NOSUID),
            "suid" => (false, MsFlags::MS_NOSUID),
            "nodev" => (true, MsFlags::MS_NODEV),
            "dev" => (false, MsFlags::MS_NODEV),
            "noexec" => (true, MsFlags::MS_NOEXEC),
            "exec" => (false, MsFlags::MS_NOEXEC),
            "sync" => (true, MsFlags::MS_SYNCHRONOUS),
            "async" => (false, MsFlags::MS_SYNCHRONOUS),
            "noatime" => (true, MsFlags::MS_NOATIME),
            "atime" => (false, MsFlags::MS_NOATIME),
            "nodiratime" => (true, MsFlags::MS_NODIRATIME),
            "relatime" => (true, MsFlags::MS_RELATIME),
            "strictatime" => (true, MsFlags::MS_STRICTATIME),
            "mand" => (true, MsFlags::MS_MANDLOCK),
            "remount" => (true, MsFlags::MS_REMOUNT),
            "bind" => {
                parsed.bind = true;
                (true, MsFlags::MS_BIND)
            }
            "rbind" => {
                parsed.bind = true;
                (true, MsFlags::MS_BIND | MsFlags::MS_REC)
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                parsed.propagation |= propagation_flags(opt).unwrap_or(MsFlags::empty());
                continue;
            }
            // Mount-id mapping and similar options need newer mount APIs; not data either.
            "idmap" | "ridmap" | "tmpcopyup" => continue,
            data => {
                if !parsed.data.is_empty() {
                    parsed.data.push(',');
                }
                parsed.data.push_str(data);
                continue;
            }
        };
        if set {
            parsed.flags |= flag;
        } else {
            parsed.flags &= !flag;
        }
    }
    parsed
}

/// The propagation flags of a `rootfsPropagation` or mount option value.
pub(crate) fn propagation_flags(value: &str) -> Option<MsFlags> {
    Some(match value {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

fn rootfs_propagation(spec: &Spec) -> Result<MsFlags> {
    match spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
    {
        None | Some("") => Ok(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        Some(value) => propagation_flags(value).ok_or_else(|| {
            Error::field(
                "linux.rootfsPropagation",
                format!("unknown value {value:?}"),
            )
        }),
    }
}

/// Everything before pivot_root: makes the host's mounts invisible to the host side
/// (propagation), binds the rootfs onto itself, mounts the spec's mounts and creates devices.
pub(crate) fn prepare(sys: &dyn Syscall, spec: &Spec, ctx: &RootfsContext) -> Result<()> {
    let propagation = rootfs_propagation(spec)?;
    // Shared propagation is applied after pivot_root: pivot_root refuses a shared parent.
    let initial = if propagation.contains(MsFlags::MS_SHARED) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        propagation | MsFlags::MS_REC
    };
    sys.mount(None, Path::new("/"), None, initial, None)?;
    sys.mount(
        Some(ctx.rootfs),
        ctx.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    for m in mounts {
        mount_one(sys, m, ctx)?;
    }
    let dev_bound = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && parse_options(m.options().as_deref().unwrap_or_default()).bind
    });
    if !dev_bound {
        create_devices(sys, spec, ctx)?;
    }
    Ok(())
}

fn mount_one(sys: &dyn Syscall, m: &Mount, ctx: &RootfsContext) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let dest = secure_join(ctx.rootfs, m.destination());
    let typ = m
        .typ()
        .as_deref()
        .unwrap_or(if opts.bind { "bind" } else { "" });
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(sys, &dest, &opts, ctx);
    }
    if opts.bind || typ == "bind" {
        let source = m.source().as_deref().ok_or_else(|| {
            Error::field(
                "mounts.source",
                format!("bind mount on {} has none", m.destination().display()),
            )
        })?;
        if source.is_dir() {
            sys.mkdir_all(&dest)?;
        } else {
            sys.touch(&dest)?;
        }
        let rec = opts.flags & MsFlags::MS_REC;
        sys.mount(Some(source), &dest, None, MsFlags::MS_BIND | rec, None)?;
        // A bind mount ignores other flags until it is remounted.
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            sys.mount(
                None,
                &dest,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                None,
            )?;
        }
    } else {
        sys.mkdir_all(&dest)?;
        let source = m.source().as_deref().unwrap_or(Path::new(typ));
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        match sys.mount(Some(source), &dest, Some(typ), opts.flags, data) {
            // sysfs cannot be mounted in a user namespace without its own network namespace:
            // runc falls back to binding the host's /sys.
            Err(Error::Sys {
                errno: nix::errno::Errno::EPERM,
                ..
            }) if typ == "sysfs" && ctx.in_user_ns => {
                sys.mount(
                    Some(Path::new("/sys")),
                    &dest,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                sys.mount(
                    None,
                    &dest,
                    None,
                    MsFlags::MS_BIND
                        | MsFlags::MS_REMOUNT
                        | MsFlags::MS_RDONLY
                        | (opts.flags
                            & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC)),
                    None,
                )?;
            }
            r => r?,
        }
    }
    if !opts.propagation.is_empty() {
        sys.mount(None, &dest, None, opts.propagation, None)?;
    }
    Ok(())
}

/// On cgroup v1 a tmpfs holding a bind of the container's own directory of each hierarchy (as
/// runc does without a cgroup namespace); on v2 the container's directory of the unified tree.
fn mount_cgroup(
    sys: &dyn Syscall,
    dest: &Path,
    opts: &MountOptions,
    ctx: &RootfsContext,
) -> Result<()> {
    let locked = opts.flags
        & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    sys.mkdir_all(dest)?;
    if let Some(unified) = ctx.unified_cgroup_dir {
        sys.mount(
            Some(unified),
            dest,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        return sys.mount(
            None,
            dest,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | locked,
            None,
        );
    }
    let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    sys.mount(
        Some(Path::new("tmpfs")),
        dest,
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )?;
    for (name, host_dir) in ctx.cgroup_dirs {
        let sub = dest.join(name);
        sys.mkdir_all(&sub)?;
        sys.mount(
            Some(host_dir),
            &sub,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        sys.mount(
            None,
            &sub,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | locked,
            None,
        )?;
        if name.contains(',') {
            for part in name.split(',') {
                sys.symlink(Path::new(name), &dest.join(part))?;
            }
        }
    }
    if locked.contains(MsFlags::MS_RDONLY) {
        sys.mount(
            None,
            dest,
            None,
            MsFlags::MS_REMOUNT | tmpfs_flags | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

fn create_devices(sys: &dyn Syscall, spec: &Spec, ctx: &RootfsContext) -> Result<()> {
    let spec_devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_deref())
        .unwrap_or_default();
    // The mode bits must land as given: clear the umask while devices are made.
    let old_umask = nix::sys::stat::umask(Mode::empty());
    let result = (|| {
        for &(path, major, minor) in DEFAULT_DEVICES {
            if spec_devices.iter().any(|d| d.path() == Path::new(path)) {
                continue;
            }
            let dev = LinuxDevice::default();
            let mut dev = dev;
            dev.set_path(PathBuf::from(path));
            dev.set_typ(LinuxDeviceType::C);
            dev.set_major(major);
            dev.set_minor(minor);
            dev.set_file_mode(Some(0o666));
            dev.set_uid(Some(0));
            dev.set_gid(Some(0));
            create_device(sys, &dev, ctx)?;
        }
        for dev in spec_devices {
            create_device(sys, dev, ctx)?;
        }
        for (target, link) in DEFAULT_SYMLINKS {
            sys.symlink(
                Path::new(target),
                &secure_join_leaf(ctx.rootfs, Path::new(link)),
            )?;
        }
        let has_devpts = spec
            .mounts()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|m| m.destination() == Path::new("/dev/pts"));
        if has_devpts {
            let ptmx = secure_join_leaf(ctx.rootfs, Path::new("/dev/ptmx"));
            let _ = std::fs::remove_file(&ptmx);
            sys.symlink(Path::new("pts/ptmx"), &ptmx)?;
        }
        Ok(())
    })();
    nix::sys::stat::umask(old_umask);
    result
}

fn create_device(sys: &dyn Syscall, dev: &LinuxDevice, ctx: &RootfsContext) -> Result<()> {
    let dest = secure_join_leaf(ctx.rootfs, dev.path());
    if let Some(parent) = dest.parent() {
        sys.mkdir_all(parent)?;
    }
    let kind = match dev.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::field(
                "linux.devices.type",
                format!("{}: type a is not a device", dev.path().display()),
            ));
        }
    };
    let perm = Mode::from_bits_truncate(dev.file_mode().unwrap_or(0o666));
    // A FIFO has no device number (the spec's major:minor mean nothing for it), and making
    // one needs no privilege, in a user namespace too.
    let fifo = kind == SFlag::S_IFIFO;
    let number = if fifo {
        0
    } else {
        let part = |field: &'static str, n: i64| {
            u64::try_from(n).map_err(|_| {
                Error::field(field, format!("{}: {n} is negative", dev.path().display()))
            })
        };
        makedev(
            part("linux.devices.major", dev.major())?,
            part("linux.devices.minor", dev.minor())?,
        )
    };
    let made = if ctx.in_user_ns && !fifo {
        Err(Error::sys("mknod", &dest, nix::errno::Errno::EPERM))
    } else {
        sys.mknod(&dest, kind, perm, number)
    };
    match made {
        Ok(()) => sys.chown(
            &dest,
            dev.uid().map(Uid::from_raw),
            dev.gid().map(Gid::from_raw),
        ),
        // No mknod in a user namespace: bind the host's node onto an empty file.
        Err(Error::Sys {
            errno: nix::errno::Errno::EPERM,
            ..
        }) if !fifo => {
            sys.touch(&dest)?;
            sys.mount(Some(dev.path()), &dest, None, MsFlags::MS_BIND, None)
        }
        Err(Error::Sys {
            errno: nix::errno::Errno::EEXIST,
            ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes `rootfs` the root: pivot_root with the old root detached, or with `no_pivot` a move
/// mount and chroot (for ramfs roots, where pivot_root is impossible).
pub(crate) fn pivot(sys: &dyn Syscall, rootfs: &Path, no_pivot: bool) -> Result<()> {
    sys.chdir(rootfs)?;
    if no_pivot {
        sys.mount(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
        sys.chroot(Path::new("."))?;
    } else {
        // pivot_root(".", ".") stacks the old root on the new one; detaching "." then drops it
        // (pivot_root(2), NOTES). Making it a slave first keeps the unmount off the host.
        sys.pivot_root(Path::new("."), Path::new("."))?;
        sys.mount(
            None,
            Path::new("."),
            None,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None,
        )?;
        sys.umount2(Path::new("."), MntFlags::MNT_DETACH)?;
    }
    sys.chdir(Path::new("/"))
}

/// After pivot_root: masked paths, read-only paths, a read-only root and shared propagation.
pub(crate) fn finish(sys: &dyn Syscall, spec: &Spec) -> Result<()> {
    if let Some(linux) = spec.linux() {
        for path in linux.masked_paths().as_deref().unwrap_or_default() {
            mask(sys, Path::new(path))?;
        }
        for path in linux.readonly_paths().as_deref().unwrap_or_default() {
            readonly(sys, Path::new(path))?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | locked_flags(Path::new("/"));
        sys.mount(None, Path::new("/"), None, flags, None)?;
    }
    let propagation = rootfs_propagation(spec)?;
    if propagation.contains(MsFlags::MS_SHARED) {
        sys.mount(None, Path::new("/"), None, propagation, None)?;
    }
    Ok(())
}

/// The flags of the mount at `path` that a bind remount must keep (the kernel refuses to clear
/// them in a user namespace).
fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(st) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut flags = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            flags |= ms;
        }
    }
    flags
}

fn mask(sys: &dyn Syscall, path: &Path) -> Result<()> {
    // Absent paths (/proc/kcore on some kernels) are skipped, as runc does.
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if meta.is_dir() {
        sys.mount(
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None,
        )
    } else {
        sys.mount(
            Some(Path::new("/dev/null")),
            path,
            None,
            MsFlags::MS_BIND,
            None,
        )
    }
}

fn readonly(sys: &dyn Syscall, path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    sys.mount(
        Some(path),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_REC
        | locked_flags(path);
    sys.mount(None, path, None, flags, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::RecordingSyscall;

    fn spec_json(extra: serde_json::Value) -> Spec {
        let mut json = serde_json::to_value(crate::spec::default_spec()).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            json[k] = v.clone();
        }
        serde_json::from_value(json).unwrap()
    }

    fn position(lines: &[String], needle: &str) -> usize {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in {lines:#?}"))
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = [
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
            "rslave",
            "ro",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let parsed = parse_options(&opts);
        assert_eq!(
            parsed.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | MsFlags::MS_RDONLY
        );
        assert_eq!(parsed.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(parsed.data, "mode=755,size=65536k");
        assert!(!parsed.bind);
        let parsed = parse_options(&["rbind".to_string(), "ro".to_string(), "rw".to_string()]);
        assert!(parsed.bind);
        assert_eq!(parsed.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
    }

    #[test]
    fn secure_join_stays_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.path().join("up")).unwrap();
        assert_eq!(
            secure_join(root.path(), Path::new("/abs/x")),
            root.path().join("etc/x")
        );
        assert_eq!(
            secure_join(root.path(), Path::new("/up/etc")),
            root.path().join("etc")
        );
        assert_eq!(
            secure_join(root.path(), Path::new("/../../tmp")),
            root.path().join("tmp")
        );
    }

    #[test]
    fn default_spec_mounts_in_order_with_devices_after_dev() {
        let root = tempfile::tempdir().unwrap();
        let sys = RecordingSyscall::default();
        let spec = spec_json(serde_json::json!({}));
        let ctx = RootfsContext {
            rootfs: root.path(),
            in_user_ns: false,
            cgroup_dirs: &[],
            unified_cgroup_dir: None,
        };
        prepare(&sys, &spec, &ctx).unwrap();
        let lines = sys.lines();
        let r = root.path().display().to_string();
        assert!(
            lines[0].starts_with("mount - / - MS_REC | MS_SLAVE"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with(&format!("mount {r} {r} - MS_BIND | MS_REC")),
            "{}",
            lines[1]
        );
        let proc_at = position(&lines, &format!("mount proc {r}/proc proc"));
        let dev_at = position(&lines, &format!("mount tmpfs {r}/dev tmpfs"));
        let pts_at = position(&lines, &format!("mount devpts {r}/dev/pts devpts"));
        let null_at = position(&lines, &format!("mknod {r}/dev/null 666 1:3"));
        let tty_at = position(&lines, &format!("mknod {r}/dev/tty 666 5:0"));
        let ptmx_at = position(&lines, &format!("symlink pts/ptmx {r}/dev/ptmx"));
        assert!(
            proc_at < dev_at
                && dev_at < pts_at
                && pts_at < null_at
                && null_at < tty_at
                && tty_at < ptmx_at
        );
        position(&lines, &format!("symlink /proc/self/fd {r}/dev/fd"));
    }

    #[test]
    fn user_namespace_binds_host_devices() {
        let (lines, r) = prepare_lines(&spec_json(serde_json::json!({})), true);
        assert!(!lines.iter().any(|l| l.starts_with("mknod")), "{lines:#?}");
        let touch = position(&lines, &format!("touch {r}/dev/zero"));
        let bind = position(&lines, &format!("mount /dev/zero {r}/dev/zero - MS_BIND "));
        assert!(touch < bind);
    }

    /// The calls `prepare` makes for `spec`, and the rootfs path they name.
    fn prepare_lines(spec: &Spec, in_user_ns: bool) -> (Vec<String>, String) {
        let root = tempfile::tempdir().unwrap();
        let sys = RecordingSyscall::default();
        let ctx = RootfsContext {
            rootfs: root.path(),
            in_user_ns,
            cgroup_dirs: &[],
            unified_cgroup_dir: None,
        };
        prepare(&sys, spec, &ctx).unwrap();
        (sys.lines(), root.path().display().to_string())
    }

    #[test]
    fn a_fifo_is_made_even_in_a_user_namespace_and_without_a_device_number() {
        let mut spec = spec_json(serde_json::json!({}));
        let fifo: LinuxDevice = serde_json::from_value(serde_json::json!(
            {"path": "/dev/myfifo", "type": "p", "major": 8, "minor": 666, "fileMode": 0o640}
        ))
        .unwrap();
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .set_devices(Some(vec![fifo]));
        let (lines, r) = prepare_lines(&spec, true);
        position(&lines, &format!("mknod {r}/dev/myfifo 640 0:0"));
        assert!(
            !lines.iter().any(|l| l.contains("/dev/myfifo - MS_BIND")),
            "{lines:#?}"
        );
    }

    #[test]
    fn bind_mount_with_ro_is_remounted() {
        let root = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        let sys = RecordingSyscall::default();
        let spec = spec_json(serde_json::json!({"mounts": [
            {"destination": "/data", "type": "bind", "source": src.path(), "options": ["rbind", "ro", "nosuid"]}
        ]}));
        let ctx = RootfsContext {
            rootfs: root.path(),
            in_user_ns: false,
            cgroup_dirs: &[],
            unified_cgroup_dir: None,
        };
        prepare(&sys, &spec, &ctx).unwrap();
        let lines = sys.lines();
        let r = root.path().display().to_string();
        let bind = position(
            &lines,
            &format!(
                "mount {} {r}/data - MS_BIND | MS_REC -",
                src.path().display()
            ),
        );
        let remount = position(
            &lines,
            &format!("mount - {r}/data - MS_RDONLY | MS_NOSUID | MS_REMOUNT | MS_BIND"),
        );
        assert!(position(&lines, &format!("mkdir {r}/data")) < bind && bind < remount);
    }

    #[test]
    fn v1_cgroup_mount_binds_each_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let sys = RecordingSyscall::default();
        let spec = spec_json(serde_json::json!({"mounts": [
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid"]}
        ]}));
        let dirs = vec![(
            "cpu,cpuacct".to_string(),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/berth/x"),
        )];
        let ctx = RootfsContext {
            rootfs: root.path(),
            in_user_ns: false,
            cgroup_dirs: &dirs,
            unified_cgroup_dir: None,
        };
        prepare(&sys, &spec, &ctx).unwrap();
        let lines = sys.lines();
        let r = root.path().display().to_string();
        let tmpfs = position(&lines, &format!("mount tmpfs {r}/sys/fs/cgroup tmpfs"));
        let bind = position(
            &lines,
            &format!("mount /sys/fs/cgroup/cpu,cpuacct/berth/x {r}/sys/fs/cgroup/cpu,cpuacct"),
        );
        let link = position(
            &lines,
            &format!("symlink cpu,cpuacct {r}/sys/fs/cgroup/cpuacct"),
        );
        let ro = position(&lines, &format!("mount - {r}/sys/fs/cgroup - MS_RDONLY"));
        assert!(tmpfs < bind && bind < link && link < ro);
    }

    #[test]
    fn pivot_detaches_the_old_root_and_no_pivot_chroots() {
        let sys = RecordingSyscall::default();
        pivot(&sys, Path::new("/r"), false).unwrap();
        assert_eq!(
            sys.lines(),
            [
                "chdir /r",
                "pivot_root . .",
                "mount - . - MS_REC | MS_SLAVE -",
                "umount .",
                "chdir /"
            ]
        );
        let sys = RecordingSyscall::default();
        pivot(&sys, Path::new("/r"), true).unwrap();
        assert_eq!(
            sys.lines(),
            ["chdir /r", "mount /r / - MS_MOVE -", "chroot .", "chdir /"]
        );
    }

    #[test]
    fn masking_skips_absent_paths() {
        let present = tempfile::tempdir().unwrap();
        let file = present.path().join("f");
        std::fs::write(&file, "secret").unwrap();
        let spec = spec_json(serde_json::json!({"linux": {
            "namespaces": [{"type": "mount"}],
            "maskedPaths": ["/proc/berth-no-such-file", present.path(), file],
            "readonlyPaths": ["/proc/berth-no-such-dir"]
        }}));
        let sys = RecordingSyscall::default();
        finish(&sys, &spec).unwrap();
        let lines = sys.lines();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].starts_with(&format!(
            "mount tmpfs {} tmpfs MS_RDONLY",
            present.path().display()
        )));
        assert!(lines[1].starts_with(&format!("mount /dev/null {} - MS_BIND", file.display())));
        // The default spec's root is read-only: "/" is remounted so, keeping its other flags.
        assert!(
            lines[2].starts_with("mount - / - MS_RDONLY | MS_REMOUNT | MS_BIND"),
            "{}",
            lines[2]
        );
    }
}
