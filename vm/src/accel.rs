//! KVM or TCG: KVM only if a real probe boot under `-enable-kvm` reaches its end (on nested
//! hypervisors such as this project's PVM host, a stock kernel hangs after decompression),
//! remembered per kernel and qemu in a cache dir so the probe boot is paid once.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};
use crate::guest::{BootSpec, boot};

/// How long a KVM probe boot may take before KVM is judged not to work.
const KVM_PROBE: Duration = Duration::from_secs(20);

/// The accelerator a guest runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// qemu's software emulation.
    Tcg,
}

impl Accel {
    /// "kvm" or "tcg".
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    kernel: PathBuf,
    qemu: PathBuf,
    accelerator: Accel,
}

/// KVM if /dev/kvm exists and `probe_initrd` (an initramfs whose init prints
/// [`crate::initramfs::EXIT_MARKER`] and powers off) boots to its end under it within 20 s,
/// else TCG. The answer is kept in `cache_dir/accelerator.json`, per kernel and qemu.
pub fn choose(cache_dir: &Path, kernel: &Path, probe_initrd: &Path) -> Result<Accel> {
    let qemu = crate::find_tool(crate::QEMU, "qemu-system-x86")?;
    let cache = cache_dir.join("accelerator.json");
    if let Ok(text) = fs::read_to_string(&cache)
        && let Ok(c) = serde_json::from_str::<Cached>(&text)
        && c.kernel == kernel
        && c.qemu == qemu
    {
        return Ok(c.accelerator);
    }
    let kvm_ok = Path::new("/dev/kvm").exists() && {
        let mut spec = BootSpec::new(kernel, probe_initrd);
        spec.accel = Accel::Kvm;
        spec.deadline = KVM_PROBE;
        boot(&spec).is_ok_and(|o| o.exit_code.is_some())
    };
    let accelerator = if kvm_ok { Accel::Kvm } else { Accel::Tcg };
    let json = serde_json::to_vec_pretty(&Cached {
        kernel: kernel.to_path_buf(),
        qemu,
        accelerator,
    })
    .map_err(|e| crate::Error::Failed(format!("encoding the accelerator cache: {e}")))?;
    crate::cache::write_atomic(&cache, |f| {
        use std::io::Write as _;
        f.write_all(&json)
            .ctx(|| format!("writing {}", cache.display()))
    })?;
    Ok(accelerator)
}
