//! An initramfs built up in memory (files from the host, bytes, directories, symlinks, whole
//! trees, a binary with its `ldd` libraries, busybox with its applets, kernel modules with
//! their dependencies) and packed as a newc cpio, optionally cached by a hash of its inputs.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cpio::{self, S_IFDIR, S_IFLNK};
use crate::error::{Error, IoContext, Result};
use crate::kernel::Kernel;

/// What the guest's init prints on the console, followed by its exit code, before it powers
/// off: [`crate::Outcome::exit_code`] is read from it.
pub const EXIT_MARKER: &str = "BERTH-GUEST-EXIT=";
/// The name of the results port; the guest writes its results to the device the prelude
/// finds for it (`$BERTH_RESULTS`).
pub const RESULTS_PORT: &str = "berth.results";

#[derive(Debug, Clone)]
enum Entry {
    Dir(u32),
    Symlink(String),
    Host { src: PathBuf, mode: u32 },
    Bytes { data: Vec<u8>, mode: u32 },
}

/// An initramfs being put together. Paths in the guest are absolute (`/bin/sh`); parents are
/// made as needed; a later entry for the same path replaces the earlier one.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    entries: BTreeMap<String, Entry>,
    /// Guest paths of the kernel modules added, in load order.
    modules: Vec<String>,
}

fn rel(guest: &str) -> String {
    guest
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl Builder {
    /// An empty initramfs.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, guest: &str, entry: Entry) {
        let path = rel(guest);
        if path.is_empty() {
            // The archive's root is the guest's /, made by the kernel.
            return;
        }
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir(0o755));
            parent = p.parent();
        }
        self.entries.insert(path, entry);
    }

    /// A directory with `mode` (permission bits).
    pub fn dir(&mut self, guest: &str, mode: u32) -> &mut Self {
        self.insert(guest, Entry::Dir(mode));
        self
    }

    /// A symlink at `guest` pointing at `target`.
    pub fn symlink(&mut self, guest: &str, target: &str) -> &mut Self {
        self.insert(guest, Entry::Symlink(target.to_string()));
        self
    }

    /// A file with the given contents and mode.
    pub fn bytes(&mut self, guest: &str, data: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        let data = data.into();
        self.insert(guest, Entry::Bytes { data, mode });
        self
    }

    /// The host file `src` (followed if a symlink) at `guest`, with its mode.
    pub fn file(&mut self, guest: &str, src: &Path) -> Result<&mut Self> {
        let meta = fs::metadata(src).ctx(|| format!("reading {}", src.display()))?;
        if !meta.is_file() {
            return Err(Error::Missing(format!("{} is not a file", src.display())));
        }
        let mode = meta.permissions().mode() & 0o7777;
        self.insert(
            guest,
            Entry::Host {
                src: src.to_path_buf(),
                mode,
            },
        );
        Ok(self)
    }

    /// The host directory `src` and everything under it at `guest` (files, directories and
    /// symlinks; device nodes, sockets and FIFOs are left out).
    pub fn tree(&mut self, guest: &str, src: &Path) -> Result<&mut Self> {
        let meta = fs::symlink_metadata(src).ctx(|| format!("reading {}", src.display()))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            self.dir(guest, meta.permissions().mode() & 0o7777);
            for e in fs::read_dir(src).ctx(|| format!("reading {}", src.display()))? {
                let e = e.ctx(|| format!("reading {}", src.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                self.tree(
                    &format!("{}/{name}", guest.trim_end_matches('/')),
                    &e.path(),
                )?;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(src).ctx(|| format!("reading {}", src.display()))?;
            self.symlink(guest, &target.to_string_lossy());
        } else if ft.is_file() {
            self.file(guest, src)?;
        }
        Ok(self)
    }

    /// The host binary `src` at `guest`, and the shared libraries `ldd` lists for it at their
    /// host paths (with the dynamic loader), so a dynamically linked program runs in the guest.
    pub fn binary_with_libs(&mut self, guest: &str, src: &Path) -> Result<&mut Self> {
        self.file(guest, src)?;
        for lib in ldd(src)? {
            self.file(&lib.to_string_lossy(), &lib)?;
        }
        Ok(self)
    }

    /// Debian's static busybox (busybox-static) at /bin/busybox, with a symlink for each of
    /// its applets where `busybox --list-full` puts it.
    pub fn busybox(&mut self) -> Result<&mut Self> {
        let src = Path::new("/bin/busybox");
        let out = Command::new(src)
            .arg("--list-full")
            .output()
            .ctx(|| "running /bin/busybox --list-full (Debian: busybox-static)".to_string())?;
        if !out.status.success() {
            return Err(Error::Failed(format!(
                "/bin/busybox --list-full failed: {}",
                out.status
            )));
        }
        if !ldd(src)?.is_empty() {
            return Err(Error::Failed(
                "/bin/busybox is dynamically linked: install busybox-static".to_string(),
            ));
        }
        self.file("/bin/busybox", src)?;
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            if !applet.is_empty() && applet != "bin/busybox" {
                self.symlink(applet, "/bin/busybox");
            }
        }
        Ok(self)
    }

    /// Kernel module `name` of `kernel` and the modules it needs, stored uncompressed (busybox
    /// insmod reads only plain .ko files) and loaded in order by [`Builder::prelude`].
    pub fn module(&mut self, kernel: &Kernel, name: &str) -> Result<&mut Self> {
        for file in kernel.module_with_deps(name)? {
            let base = file.file_name().unwrap_or_default().to_string_lossy();
            let stem = base.split(".ko").next().unwrap_or(&base).to_string();
            let guest = format!("/lib/modules/{}/{stem}.ko", kernel.version);
            if self.modules.contains(&guest) {
                continue;
            }
            let data = read_module(&file)?;
            self.bytes(&guest, data, 0o644);
            self.modules.push(guest);
        }
        Ok(self)
    }

    /// Shell lines for the start of /init: PATH, proc, sysfs and devtmpfs, the modules added
    /// (in load order), and `$BERTH_RESULTS` set to the results port's device. With
    /// `tmpfs_root`, the script first copies the initramfs onto a tmpfs and `switch_root`s
    /// into it, running itself again there (pivot_root, which containers need, refuses the
    /// initramfs root).
    pub fn prelude(&self, tmpfs_root: bool) -> String {
        let mut s = String::from(
            "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        );
        if tmpfs_root {
            s.push_str(
                "if [ ! -e /.berth-tmpfs ]; then\n\
                 mount -t tmpfs -o mode=0755 tmpfs /mnt\n\
                 for f in /*; do case $f in /mnt|/proc|/sys|/dev) ;; *) cp -a $f /mnt/ ;; esac; done\n\
                 mkdir -p /mnt/proc /mnt/sys /mnt/dev /mnt/mnt && touch /mnt/.berth-tmpfs\n\
                 exec switch_root /mnt /init\n\
                 fi\n",
            );
        }
        s.push_str(
            "mount -t proc proc /proc\n\
             mount -t sysfs sysfs /sys\n\
             mount -t devtmpfs devtmpfs /dev 2>/dev/null\n",
        );
        for m in &self.modules {
            s.push_str(&format!(
                "insmod {m} || echo 'berth-vm: insmod {m} failed'\n"
            ));
        }
        s.push_str(&format!(
            "BERTH_RESULTS=/dev/virtio-ports/{RESULTS_PORT}\n\
             for p in /sys/class/virtio-ports/*; do\n\
             [ \"$(cat $p/name 2>/dev/null)\" = {RESULTS_PORT} ] && BERTH_RESULTS=/dev/${{p##*/}}\n\
             done\n\
             export BERTH_RESULTS\n"
        ));
        s
    }

    /// /init: `#!/bin/sh`, then `script` (which should end by printing [`EXIT_MARKER`] and
    /// its status and running `poweroff -f`).
    pub fn init(&mut self, script: &str) -> &mut Self {
        self.bytes("/init", format!("#!/bin/sh\n{script}"), 0o755)
    }

    /// A hash of everything that goes in: paths, modes, bytes, and each host file's path,
    /// size, modification time and inode (cheaper than its contents, and changed by any
    /// rebuild or reinstall).
    pub fn fingerprint(&self) -> Result<String> {
        let mut h = Sha256::new();
        for (path, entry) in &self.entries {
            h.update(path.as_bytes());
            h.update([0]);
            match entry {
                Entry::Dir(mode) => h.update(format!("d{mode}")),
                Entry::Symlink(t) => h.update(format!("l{t}")),
                Entry::Bytes { data, mode } => {
                    h.update(format!("b{mode}:{}:", data.len()));
                    h.update(data);
                }
                Entry::Host { src, mode } => {
                    let m = fs::metadata(src).ctx(|| format!("reading {}", src.display()))?;
                    h.update(format!(
                        "f{mode}:{}:{}:{}.{}:{}",
                        src.display(),
                        m.len(),
                        m.mtime(),
                        m.mtime_nsec(),
                        m.ino()
                    ));
                }
            }
            h.update([0]);
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Writes the newc cpio to `out` (through a temporary file renamed into place).
    pub fn pack(&self, out: &Path) -> Result<()> {
        crate::cache::write_atomic(out, |file| self.write_to(file))
    }

    /// The packed initramfs in `cache_dir` as `NAME-HASH.cpio`, packed only when no file for
    /// these inputs exists; older packs of the same name are removed.
    pub fn pack_cached(&self, cache_dir: &Path, name: &str) -> Result<PathBuf> {
        let key = self.fingerprint()?;
        crate::cache::get_or_make(cache_dir, name, "cpio", &key, |out| self.pack(out))
    }

    fn write_to(&self, file: &mut fs::File) -> Result<()> {
        let out = std::io::BufWriter::new(file);
        let mut w = cpio::Writer::new(out);
        for (path, entry) in &self.entries {
            let r = match entry {
                Entry::Dir(mode) => w.entry(path, S_IFDIR | mode, &[]),
                Entry::Symlink(t) => w.entry(path, S_IFLNK | 0o777, t.as_bytes()),
                Entry::Bytes { data, mode } => w.entry(path, cpio::S_IFREG | mode, data),
                Entry::Host { src, mode } => fs::File::open(src).and_then(|mut f| {
                    let size = f.metadata()?.len();
                    w.file_from(path, *mode, size, &mut f)
                }),
            };
            r.ctx(|| format!("packing /{path}"))?;
        }
        w.finish().ctx(|| "finishing the cpio".to_string())?;
        Ok(())
    }
}

/// A module file's bytes, decompressed if it is .ko.xz (with xz) or .ko.zst (with zstd).
fn read_module(file: &Path) -> Result<Vec<u8>> {
    let name = file.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some(("xz", "xz-utils"))
    } else if name.ends_with(".zst") {
        Some(("zstd", "zstd"))
    } else {
        None
    };
    let Some((tool, package)) = tool else {
        return fs::read(file).ctx(|| format!("reading {name}"));
    };
    let out = Command::new(tool)
        .args(["-dc"])
        .arg(file)
        .output()
        .ctx(|| format!("running {tool} -dc {name} (Debian: {package})"))?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "{tool} -dc {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// The shared libraries (and loader) `ldd` lists for `binary`; none for a static one.
fn ldd(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .ctx(|| format!("running ldd {} (Debian: libc-bin)", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(Error::Failed(format!(
            "ldd {} failed: {}",
            binary.display(),
            err.trim()
        )));
    }
    Ok(parse_ldd(&text))
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
                    \tstatically linked\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn parents_are_made_and_the_fingerprint_follows_the_inputs() {
        let mut b = Builder::new();
        b.bytes("/a/b/c", "x", 0o644).symlink("/a/l", "b/c");
        assert!(matches!(b.entries.get("a"), Some(Entry::Dir(0o755))));
        assert!(matches!(b.entries.get("a/b"), Some(Entry::Dir(0o755))));
        let before = b.fingerprint().unwrap();
        b.bytes("/a/b/c", "y", 0o644);
        assert_ne!(before, b.fingerprint().unwrap());
        let err = b.file("/x", Path::new("/nonexistent-berth")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-berth"), "{err}");
    }
}
