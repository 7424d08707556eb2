//! Which accelerator the VM side uses: KVM if a probe boot under it works, else TCG, remembered
//! in the data dir so the probe boot is paid once per kernel and qemu.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{EXIT_MARKER, vm};
use crate::Context;

const KVM_PROBE_SECONDS: u64 = 20;

#[derive(Debug, Serialize, Deserialize)]
struct AccelCache {
    kernel: PathBuf,
    qemu: PathBuf,
    accelerator: String,
}

/// KVM if a real boot under -enable-kvm reaches the workload's end within the probe deadline,
/// else TCG; the answer is cached in the data dir per kernel and qemu.
pub(crate) fn accelerator(
    ctx: &Context,
    qemu: &Path,
    kernel: &Path,
    initramfs: &Path,
) -> anyhow::Result<String> {
    let cache = ctx.data_dir.join("compare").join("accelerator.json");
    if let Ok(text) = fs::read_to_string(&cache)
        && let Ok(c) = serde_json::from_str::<AccelCache>(&text)
        && c.kernel == kernel
        && c.qemu == qemu
    {
        return Ok(c.accelerator);
    }
    let kvm_ok = Path::new("/dev/kvm").exists()
        && vm::run(qemu, kernel, initramfs, "kvm", false, KVM_PROBE_SECONDS)
            .map(|s| s.lines.iter().any(|l| l.starts_with(EXIT_MARKER)))
            .unwrap_or(false);
    let accelerator = if kvm_ok { "kvm" } else { "tcg" }.to_string();
    fs::create_dir_all(cache.parent().expect("cache dir"))?;
    fs::write(
        &cache,
        serde_json::to_string_pretty(&AccelCache {
            kernel: kernel.to_path_buf(),
            qemu: qemu.to_path_buf(),
            accelerator: accelerator.clone(),
        })?,
    )?;
    Ok(accelerator)
}
