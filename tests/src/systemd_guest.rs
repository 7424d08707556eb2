//! The systemd guest: Debian bookworm with systemd as PID 1 on the unified cgroup v2
//! hierarchy, dbus, podman, crun and conmon. Its root is debootstrapped once into an ext4
//! image cached under the tests' cache dir, keyed by the recipe (package list, configure
//! script, kernel version); each run boots it (berth-vm: the host's Debian kernel and initrd,
//! `-snapshot` so the cached image never changes) with a second, per-run disk holding the
//! inputs and `run.sh`, whose results come back over the results port.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_vm::cache::{Key, get_or_make};
use berth_vm::initramfs::EXIT_MARKER;
use berth_vm::{Accel, BootSpec, Kernel, Outcome};
use nix::fcntl::{Flock, FlockArg};

use crate::tools::{require_root, require_tool};

const SUITE: &str = "bookworm";
/// What the guest needs for podman with its defaults (cgroup_manager = systemd): podman pulls
/// in conmon and a network stack (containernetworking-plugins is the smaller one; the tests
/// run with `--network none`); crun is the reference runtime, runc the reference for where a
/// container goes under systemd; kmod loads the modules the configure script copies in;
/// berth-agent's node needs ip, nft, conntrack and kill, and its test image busybox-static.
pub const PACKAGES: &str = "systemd,systemd-sysv,dbus,podman,crun,runc,conmon,\
    containernetworking-plugins,kmod,iproute2,nftables,conntrack,procps,busybox-static";
/// Run on the host against the debootstrapped tree: hostname, modules, the test unit.
const CONFIGURE: &str = include_str!("../vm/systemd-guest-configure.sh");
/// The root image's size (sparse: it takes what the tree takes, about 450 MB); the rest is
/// room for podman's storage during a run (written to qemu's snapshot file, not the image).
const IMAGE_BYTES: u64 = 3 << 30;
/// Guest memory: systemd, podman and two runtimes' containers.
const MEMORY_MB: u32 = 1024;

/// The tests' cache dir (`BERTH_TEST_CACHE`, default /var/cache/berth-tests).
fn cache_dir() -> PathBuf {
    std::env::var_os("BERTH_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/berth-tests"))
        .join("vm")
}

fn mirror() -> String {
    std::env::var("DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

/// The cached root image, built first if no image for this recipe exists. Parallel tests
/// wait on a lock for one build; a build that fails leaves nothing behind.
pub fn root_image(kernel: &Kernel) -> PathBuf {
    require_root();
    require_tool("debootstrap");
    require_tool("mkfs.ext4");
    let dir = cache_dir();
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let lock = fs::File::create(dir.join("systemd-guest.lock")).expect("the image lock file");
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking the systemd guest image: {e}"));
    let key = Key::new()
        .text(SUITE)
        .text(PACKAGES)
        .text(CONFIGURE)
        .text(&kernel.version)
        .finish();
    get_or_make(&dir, "systemd-guest", "img", &key, |out| {
        build_image(&dir, &kernel.version, out);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("the systemd guest image: {e}"))
}

/// debootstrap, the configure script, then `mkfs.ext4 -d` into `out` (through a temporary
/// name). Takes a few minutes (debootstrap from Debian's mirror; no guest time).
fn build_image(dir: &Path, kernel_version: &str, out: &Path) {
    let tree = tempfile::Builder::new()
        .prefix("systemd-guest-root-")
        .tempdir_in(dir)
        .expect("a temp dir for the guest root");
    let root = tree.path().join("root");
    let log = dir.join("systemd-guest-debootstrap.log");
    eprintln!(
        "building the systemd guest image (debootstrap, a few minutes; log {})",
        log.display()
    );
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
        .arg(&root)
        .arg(mirror())
        .stdout(fs::File::create(&log).expect("the debootstrap log"))
        .stderr(std::process::Stdio::inherit())
        .status()
        .expect("run debootstrap");
    assert!(
        status.success(),
        "debootstrap failed ({status}); see {}",
        log.display()
    );
    let configure = tree.path().join("configure.sh");
    fs::write(&configure, CONFIGURE).expect("write the configure script");
    let out_status = Command::new("sh")
        .arg(&configure)
        .env("ROOT", &root)
        .env("KVER", kernel_version)
        .status()
        .expect("run the configure script");
    assert!(out_status.success(), "configuring the guest root failed");
    let partial = out.with_extension("partial");
    make_ext4(&root, &partial, IMAGE_BYTES);
    fs::rename(&partial, out).expect("move the image into place");
}

/// A sparse `bytes`-sized ext4 image at `image` holding `tree` (`mkfs.ext4 -d`).
fn make_ext4(tree: &Path, image: &Path, bytes: u64) {
    let file = fs::File::create(image).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    file.set_len(bytes).expect("size the image");
    drop(file);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(tree)
        .arg(image)
        .output()
        .expect("run mkfs.ext4");
    if !out.status.success() {
        let _ = fs::remove_file(image);
        panic!("mkfs.ext4 -d {}: {out:?}", tree.display());
    }
}

/// KVM if berth-vm's cached probe says a guest boots under it here, else TCG. The probe boots
/// a busybox initramfs (made once) that prints the exit marker; the answer is cached beside
/// the images, per kernel and qemu.
fn accelerator(kernel: &Kernel) -> Accel {
    let dir = cache_dir();
    let probe = (|| {
        let mut b = berth_vm::Builder::new();
        b.busybox()?;
        let script = format!("{}echo {EXIT_MARKER}0\npoweroff -f\n", b.prelude(false));
        b.init(&script);
        let initrd = b.pack_cached(&dir, "systemd-guest-kvm-probe")?;
        berth_vm::accel::choose(&dir, &kernel.path, &initrd)
    })();
    probe.unwrap_or_else(|e| panic!("choosing KVM or TCG: {e}"))
}

/// The per-run inputs: files staged in a temp dir, made into the guest's second disk
/// (/dev/vdb, mounted read-only at /mnt/inputs) by [`Inputs::boot`].
#[derive(Debug)]
pub struct Inputs {
    dir: tempfile::TempDir,
}

impl Default for Inputs {
    fn default() -> Self {
        Self::new()
    }
}

impl Inputs {
    /// An empty staging dir.
    pub fn new() -> Self {
        Inputs {
            dir: tempfile::Builder::new()
                .prefix("berth-guest-inputs-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// The staging dir (as /mnt/inputs in the guest).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies the host file `src` in as `name` (executable).
    pub fn file(&self, name: &str, src: &Path) -> &Self {
        let dst = self.dir.path().join(name);
        fs::copy(src, &dst).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).expect("chmod");
        self
    }

    /// `run.sh`: what the guest's test unit runs. `$BERTH_RESULTS` is the results port's
    /// device; the script's exit status is printed as berth-vm's exit marker, and the guest
    /// powers off either way.
    pub fn script(&self, body: &str) -> &Self {
        let port = berth_vm::initramfs::RESULTS_PORT;
        let marker = berth_vm::initramfs::EXIT_MARKER;
        let text = format!(
            "for p in /sys/class/virtio-ports/*; do\n\
             [ \"$(cat $p/name 2>/dev/null)\" = {port} ] && BERTH_RESULTS=/dev/${{p##*/}}\n\
             done\n\
             export BERTH_RESULTS\n\
             echo \"guest up after $(cut -d' ' -f1 /proc/uptime) s\"\n\
             ( set -e\n{body}\n)\n\
             echo \"{marker}$?\"\n"
        );
        fs::write(self.dir.path().join("run.sh"), text).expect("write run.sh");
        self
    }

    /// Boots the systemd guest with these inputs, at most `deadline`.
    pub fn boot(&self, deadline: Duration) -> Outcome {
        let kernel = berth_vm::kernel::newest().unwrap_or_else(|e| panic!("{e}"));
        let initrd = kernel.initrd.clone().unwrap_or_else(|| {
            panic!(
                "no /boot/initrd.img-{}: the systemd guest boots with Debian's initrd \
                 (it has virtio_blk and ext4)",
                kernel.version
            )
        });
        let root = root_image(&kernel);
        let disk = tempfile::Builder::new()
            .prefix("berth-guest-inputs-")
            .suffix(".img")
            .tempfile()
            .expect("temp file");
        let bytes: u64 = fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        make_ext4(self.dir.path(), disk.path(), bytes * 3 / 2 + (32 << 20));
        let mut spec = BootSpec::new(&kernel.path, &initrd);
        spec.disks = vec![root, disk.path().to_path_buf()];
        spec.append =
            "console=ttyS0 root=/dev/vda rw panic=-1 systemd.unit=berth-test.target".to_string();
        spec.memory_mb = MEMORY_MB;
        spec.cpus = 2;
        spec.accel = accelerator(&kernel);
        spec.deadline = deadline;
        spec.results = true;
        // Writes go to a temporary overlay: the cached image stays as built.
        spec.qemu_args = vec!["-snapshot".into()];
        berth_vm::boot(&spec).unwrap_or_else(|e| panic!("booting the systemd guest: {e}"))
    }
}
