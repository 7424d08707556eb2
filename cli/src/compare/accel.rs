//! Which accelerator the VM side uses: the guest harness's cached KVM probe (berth-vm), booted
//! with the workload's own initramfs and cached in the data dir beside compare's other files.

use std::path::Path;

use berth_vm::Accel;

use crate::Context;

/// KVM if a probe boot under it works, else TCG; cached per kernel and qemu.
pub(crate) fn accelerator(ctx: &Context, kernel: &Path, initramfs: &Path) -> anyhow::Result<Accel> {
    Ok(berth_vm::accel::choose(
        &ctx.data_dir.join("compare"),
        kernel,
        initramfs,
    )?)
}
