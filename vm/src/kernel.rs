//! The host's Debian kernel in /boot, its version, the matching /lib/modules tree and initrd,
//! and kernel modules resolved with their dependencies from that tree's modules.dep.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// A kernel image from /boot with what belongs to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// /boot/vmlinuz-VERSION.
    pub path: PathBuf,
    /// VERSION, as `uname -r` prints it in the guest.
    pub version: String,
    /// /lib/modules/VERSION, if it exists.
    pub modules: Option<PathBuf>,
    /// /boot/initrd.img-VERSION, if it exists.
    pub initrd: Option<PathBuf>,
}

/// The newest /boot/vmlinuz-*, by version.
pub fn newest() -> Result<Kernel> {
    newest_in(Path::new("/boot"), Path::new("/lib/modules"))
}

fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn newest_in(boot: &Path, modules_root: &Path) -> Result<Kernel> {
    let mut versions: Vec<String> = fs::read_dir(boot)
        .ctx(|| format!("reading {}", boot.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some(name.strip_prefix("vmlinuz-")?.to_string())
        })
        .collect();
    versions.sort_by_key(|v| version_key(v));
    let version = versions.pop().ok_or_else(|| {
        Error::Missing(format!(
            "no {}/vmlinuz-* (Debian: linux-image-amd64)",
            boot.display()
        ))
    })?;
    let modules = modules_root.join(&version);
    let initrd = boot.join(format!("initrd.img-{version}"));
    Ok(Kernel {
        path: boot.join(format!("vmlinuz-{version}")),
        modules: modules.is_dir().then_some(modules),
        initrd: initrd.is_file().then_some(initrd),
        version,
    })
}

/// A module's name as modprobe compares it: the file name without `.ko[.xz|.zst|.gz]`, with
/// dashes as underscores.
fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

impl Kernel {
    /// The files of module `name` and of every module it needs, in load order (dependencies
    /// first), as absolute paths in this kernel's /lib/modules tree.
    pub fn module_with_deps(&self, name: &str) -> Result<Vec<PathBuf>> {
        let dir = self.modules.as_ref().ok_or_else(|| {
            Error::Missing(format!(
                "no /lib/modules/{} for module {name} (Debian: linux-image-{})",
                self.version, self.version
            ))
        })?;
        let dep_file = dir.join("modules.dep");
        let text =
            fs::read_to_string(&dep_file).ctx(|| format!("reading {}", dep_file.display()))?;
        let wanted = module_name(name);
        let line = text
            .lines()
            .find(|l| {
                l.split(':')
                    .next()
                    .is_some_and(|f| module_name(f) == wanted)
            })
            .ok_or_else(|| {
                Error::Missing(format!(
                    "kernel module {name} is not in {} (built in, or not built?)",
                    dep_file.display()
                ))
            })?;
        let (file, deps) = line.split_once(':').unwrap_or((line, ""));
        // modules.dep lists the whole closure, each module before the ones it needs: modprobe
        // loads the list backwards.
        let mut out: Vec<PathBuf> = deps.split_whitespace().rev().map(|d| dir.join(d)).collect();
        out.push(dir.join(file));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_by_version_and_modules_in_load_order() {
        let tmp = tempfile::tempdir().unwrap();
        let boot = tmp.path().join("boot");
        let mods = tmp.path().join("modules");
        fs::create_dir_all(&boot).unwrap();
        for v in ["6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64"] {
            fs::write(boot.join(format!("vmlinuz-{v}")), "k").unwrap();
        }
        fs::create_dir_all(mods.join("6.1.0-10-amd64")).unwrap();
        fs::write(
            mods.join("6.1.0-10-amd64/modules.dep"),
            "kernel/a/virtio-pci.ko.xz: kernel/a/modern.ko kernel/a/virtio.ko kernel/a/ring.ko\n\
             kernel/a/ring.ko:\n",
        )
        .unwrap();
        let k = newest_in(&boot, &mods).unwrap();
        assert_eq!(k.version, "6.1.0-10-amd64");
        assert!(k.initrd.is_none());
        let list = k.module_with_deps("virtio_pci").unwrap();
        let names: Vec<String> = list
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["ring.ko", "virtio.ko", "modern.ko", "virtio-pci.ko.xz"]
        );
        let err = k.module_with_deps("nosuch").unwrap_err().to_string();
        assert!(err.contains("nosuch"), "{err}");
        let empty = tmp.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        assert!(
            newest_in(&empty, &mods)
                .unwrap_err()
                .to_string()
                .contains("linux-image")
        );
    }
}
